//! Admin API authentication and roles (Kong Enterprise's RBAC shape), on
//! SQLite and Postgres: 401 without a token, 403 and no revision for a
//! write the roles do not allow, tag-scoped team roles, actors in audit
//! rows and revisions, tokens never shown twice nor stored.

mod common;

use common::{Backend, TestApp};
use reqwest::StatusCode;
use serde_json::{Value, json};

const BOOT: &str = "bootstrap-token-for-tests-0123456789";

/// Runs a test body on both backends, with the bootstrap token configured.
macro_rules! both_auth {
    ($name:ident, |$app:ident| $body:block) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                let $app = TestApp::start_with_admin_token(Backend::Sqlite, BOOT).await;
                $body
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                let $app = TestApp::start_with_admin_token(Backend::Postgres, BOOT).await;
                $body
            }
        }
    };
}

/// Creates an RBAC user with `roles` (as bootstrap); returns their token.
async fn user(app: &TestApp, name: &str, roles: &str) -> String {
    let (s, u) = app.post("/rbac/users", json!({ "name": name })).await;
    assert_eq!(s, StatusCode::CREATED, "{u}");
    let token = u["user_token"].as_str().expect("user_token").to_string();
    if !roles.is_empty() {
        let (s, r) = app
            .form(
                "POST",
                &format!("/rbac/users/{name}/roles"),
                &[("roles", roles)],
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{r}");
    }
    token
}

fn names(page: &Value) -> Vec<String> {
    let mut n: Vec<String> = page["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|v| v["name"].as_str().unwrap_or_default().to_string())
        .collect();
    n.sort();
    n
}

fn denied(body: &Value, user: &str, action: &str) {
    assert_eq!(
        body["message"],
        format!("{user}, you do not have permissions to {action} this resource"),
        "{body}"
    );
}

both!(
    without_a_token_configured_the_api_is_open_until_a_user_exists,
    |app| {
        let (s, _) = app
            .post("/services", json!({ "name": "s1", "url": "http://a.test" }))
            .await;
        assert_eq!(s, StatusCode::CREATED);
        let (_, audit) = app.get("/audit").await;
        assert_eq!(audit["data"][0]["actor"], "anonymous");
        // The first user turns authentication on.
        let (s, u) = app.post("/rbac/users", json!({ "name": "alice" })).await;
        assert_eq!(s, StatusCode::CREATED, "{u}");
        let token = u["user_token"].as_str().expect("token").to_string();
        let (s, body) = app.get("/services").await;
        assert_eq!(s, StatusCode::UNAUTHORIZED);
        assert_eq!(
            body,
            json!({ "message": "Invalid credentials. Token or User credentials required" })
        );
        let (s, _) = app.get("/status").await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "status is authenticated too");
        let alice = app.as_token(Some(&token));
        let (s, body) = alice.get("/services").await;
        assert_eq!(s, StatusCode::FORBIDDEN, "no roles yet");
        denied(&body, "alice", "read");
        let (s, _) = app.as_token(Some("not-a-token")).get("/services").await;
        assert_eq!(s, StatusCode::UNAUTHORIZED);
    }
);

both_auth!(
    read_only_is_refused_every_write_and_nothing_changes,
    |app| {
        let (_, svc) = app
            .post("/services", json!({ "name": "s1", "url": "http://a.test" }))
            .await;
        let sid = svc["id"].as_str().expect("id").to_string();
        let token = user(&app, "reader", "read-only").await;
        let ro = app.as_token(Some(&token));
        let rev = app.revision().await;
        let (s, page) = ro.get("/services").await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(names(&page), ["s1"]);
        let writes: Vec<(&str, String, Option<Value>)> = vec![
            (
                "POST",
                "/services".into(),
                Some(json!({ "name": "s2", "url": "http://b.test" })),
            ),
            (
                "PUT",
                "/services/s3".into(),
                Some(json!({ "url": "http://c.test" })),
            ),
            (
                "PATCH",
                format!("/services/{sid}"),
                Some(json!({ "retries": 1 })),
            ),
            ("DELETE", format!("/services/{sid}"), None),
            (
                "POST",
                format!("/services/{sid}/routes"),
                Some(json!({ "paths": ["/x"] })),
            ),
            (
                "POST",
                "/config".into(),
                Some(json!({ "_format_version": "3.0" })),
            ),
            (
                "POST",
                "/config/rollback".into(),
                Some(json!({ "revision": 0 })),
            ),
            (
                "POST",
                "/rbac/users".into(),
                Some(json!({ "name": "mallory" })),
            ),
            (
                "POST",
                "/rbac/users/reader/roles".into(),
                Some(json!({ "roles": "super-admin" })),
            ),
            ("DELETE", "/proxy-cache".into(), None),
        ];
        for (method, path, body) in writes {
            let (s, b) = ro.send(method, &path, body).await;
            assert_eq!(s, StatusCode::FORBIDDEN, "{method} {path}: {b}");
            let action = match method {
                "POST" => "create",
                "DELETE" => "delete",
                _ => "update",
            };
            denied(&b, "reader", action);
        }
        assert_eq!(app.revision().await, rev, "no write went through");
        let (_, roles) = app.get("/rbac/users/reader/roles").await;
        assert_eq!(roles["roles"].as_array().map(Vec::len), Some(1));
        let (_, svc) = app.get(&format!("/services/{sid}")).await;
        assert_eq!(svc["retries"], 5);
    }
);

both_auth!(admin_role_is_everything_but_rbac, |app| {
    let token = user(&app, "ops", "admin").await;
    let ops = app.as_token(Some(&token));
    let (s, b) = ops
        .post("/services", json!({ "name": "s1", "url": "http://a.test" }))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    let (s, b) = ops.get("/rbac/users").await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{b}");
    let (s, _) = ops.post("/rbac/roles", json!({ "name": "mine" })).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    // A super-admin user manages RBAC; Kong gives a user named after a
    // role that role.
    let token = user(&app, "super-admin", "").await;
    let sa = app.as_token(Some(&token));
    let (s, page) = sa.get("/rbac/users").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(names(&page), ["ops", "super-admin"]);
});

both_auth!(a_tag_scoped_role_sees_and_changes_only_its_tags, |app| {
    for (name, tag) in [("a1", "team-a"), ("b1", "team-b")] {
        let (s, _) = app
            .post(
                "/services",
                json!({ "name": name, "url": "http://x.test", "tags": [tag] }),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED);
    }
    let (s, role) = app
        .post(
            "/rbac/roles",
            json!({ "name": "team-a", "tags": ["team-a"] }),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{role}");
    assert_eq!(role["tags"], json!(["team-a"]));
    let (s, b) = app
        .form(
            "POST",
            "/rbac/roles/team-a/endpoints",
            &[("endpoint", "*"), ("actions", "read,create,update,delete")],
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    let token = user(&app, "alice", "team-a").await;
    let alice = app.as_token(Some(&token));

    let (s, page) = alice.get("/services").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(names(&page), ["a1"]);
    let (s, page) = alice.get("/services?tags=team-b").await;
    assert_eq!(s, StatusCode::OK);
    assert!(names(&page).is_empty(), "{page}");
    let (s, b) = alice.get("/services/b1").await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{b}");
    let (s, _) = alice.get("/services/a1").await;
    assert_eq!(s, StatusCode::OK);

    let rev = app.revision().await;
    let (s, b) = alice
        .post(
            "/services",
            json!({ "name": "untagged", "url": "http://x.test" }),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{b}");
    denied(&b, "alice", "create");
    let (s, _) = alice
        .post(
            "/services",
            json!({ "name": "b2", "url": "http://x.test", "tags": ["team-b"] }),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _) = alice
        .send("PATCH", "/services/b1", Some(json!({ "retries": 1 })))
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _) = alice.send("DELETE", "/services/b1", None).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    // Moving its own entity out of its scope is a write it cannot make.
    let (s, _) = alice
        .send("PATCH", "/services/a1", Some(json!({ "tags": ["team-b"] })))
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    // Nor may a team role touch what is not an entity collection.
    for (m, p, body) in [
        ("GET", "/config", None),
        ("POST", "/config", Some(json!({ "_format_version": "3.0" }))),
        ("GET", "/tags/team-b", None),
        ("GET", "/audit", None),
        ("GET", "/rbac/users", None),
    ] {
        let (s, b) = alice.send(m, p, body).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{m} {p}: {b}");
    }
    assert_eq!(app.revision().await, rev, "refused writes change nothing");

    let (s, b) = alice
        .post(
            "/services",
            json!({ "name": "a2", "url": "http://x.test", "tags": ["team-a"] }),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    let (s, b) = alice
        .post(
            "/services/a2/routes",
            json!({ "paths": ["/a2"], "tags": ["team-a"] }),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    let (s, _) = alice
        .send("PATCH", "/services/a1", Some(json!({ "retries": 2 })))
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = alice.send("DELETE", "/services/a1", None).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (_, all) = app.get("/services").await;
    assert_eq!(names(&all), ["a2", "b1"]);
});

both_auth!(audit_rows_and_revisions_name_the_user, |app| {
    let token = user(&app, "ops", "admin").await;
    let ops = app.as_token(Some(&token));
    let (s, _) = ops
        .post("/services", json!({ "name": "s1", "url": "http://a.test" }))
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let (_, audit) = app.get("/audit").await;
    assert_eq!(audit["data"][0]["actor"], "ops", "{audit}");
    let (_, revs) = app.get("/config/revisions").await;
    assert_eq!(revs["data"][0]["actor"], "ops", "{revs}");
    let (s, _) = app.post("/consumers", json!({ "username": "c" })).await;
    assert_eq!(s, StatusCode::CREATED);
    let (_, revs) = app.get("/config/revisions").await;
    assert_eq!(revs["data"][0]["actor"], "bootstrap");
});

both_auth!(tokens_are_shown_once_and_stored_hashed, |app| {
    let rev = app.revision().await;
    let (s, u) = app
        .post("/rbac/users", json!({ "name": "bob", "comment": "ci" }))
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let token = u["user_token"].as_str().expect("token").to_string();
    assert!(token.len() >= 43, "32 random bytes, base64url");
    assert_eq!(app.revision().await, rev, "RBAC rows are not config");
    let (_, one) = app.get("/rbac/users/bob").await;
    assert!(one.get("user_token").is_none(), "{one}");
    assert_eq!(one["comment"], "ci");
    for path in ["/rbac/users", "/rbac/users/bob", "/config", "/audit"] {
        let (_, b) = app.get(path).await;
        assert!(!b.to_string().contains(&token), "{path} shows the token");
    }
    let (s, b) = app
        .form("POST", "/rbac/users/bob/roles", &[("roles", "read-only")])
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    assert_eq!(b["roles"][0]["name"], "read-only");
    // `Authorization: Bearer` works as Kong-Admin-Token does.
    let resp = reqwest::Client::new()
        .get(format!("{}/services", app.base))
        .bearer_auth(&token)
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), StatusCode::OK);
    let bob = app.as_token(Some(&token));
    assert_eq!(bob.get("/services").await.0, StatusCode::OK);
    // A disabled user's token no longer works.
    let (s, _) = app
        .form("PATCH", "/rbac/users/bob", &[("enabled", "false")])
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(bob.get("/services").await.0, StatusCode::UNAUTHORIZED);
    // A user's own token given at creation works and is not echoed later.
    let (s, _) = app
        .post(
            "/rbac/users",
            json!({ "name": "carol", "user_token": "carol-chosen-token-123", "comment": null }),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let (_, page) = app.get("/rbac/users").await;
    assert!(!page.to_string().contains("carol-chosen-token-123"));
    // Unknown fields and roles are refused as Kong refuses them.
    let (s, b) = app
        .post("/rbac/users", json!({ "name": "d", "admin": true }))
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    let (s, _) = app.post("/rbac/users", json!({ "name": "bob" })).await;
    assert_eq!(s, StatusCode::CONFLICT);
    let (s, _) = app
        .post("/rbac/users/bob/roles", json!({ "roles": "no-such-role" }))
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    // A NUL names nothing (Postgres could not even be asked).
    assert_eq!(app.get("/rbac/users/a%00b").await.0, StatusCode::NOT_FOUND);
    assert_eq!(
        app.delete("/rbac/roles/a%00b").await.0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        app.delete("/rbac/roles/read-only/entities/a%00b").await.0,
        StatusCode::NO_CONTENT
    );
});

both_auth!(endpoint_and_entity_permissions_follow_kong, |app| {
    let (_, s1) = app
        .post("/services", json!({ "name": "s1", "url": "http://a.test" }))
        .await;
    let (_, s2) = app
        .post("/services", json!({ "name": "s2", "url": "http://a.test" }))
        .await;
    let s2_id = s2["id"].as_str().expect("id").to_string();
    let (s, _) = app.post("/rbac/roles", json!({ "name": "svc" })).await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, ep) = app
        .post(
            "/rbac/roles/svc/endpoints",
            json!({ "endpoint": "/services/*", "actions": ["read", "update"] }),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{ep}");
    assert_eq!(ep["workspace"], "default");
    assert_eq!(ep["negative"], false);
    let (s, _) = app
        .post(
            "/rbac/roles/svc/endpoints",
            json!({ "endpoint": "/services", "actions": "read" }),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, _) = app
        .post(
            "/rbac/roles/svc/endpoints",
            json!({ "endpoint": "/services", "actions": "read" }),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT);
    let (s, one) = app
        .get("/rbac/roles/svc/endpoints/default/%2Fservices%2F%2A")
        .await;
    assert_eq!(s, StatusCode::OK, "{one}");
    assert_eq!(one["actions"], json!(["read", "update"]));
    let (_, list) = app.get("/rbac/roles/svc/endpoints").await;
    assert_eq!(list["data"].as_array().map(Vec::len), Some(2));
    // A negative entity permission carves one service out.
    let (s, b) = app
        .post(
            "/rbac/roles/svc/entities",
            json!({ "entity_id": s2_id, "entity_type": "services", "actions": "update", "negative": true }),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    let token = user(&app, "svc-user", "svc").await;
    let u = app.as_token(Some(&token));
    let (s, _) = u
        .send(
            "PATCH",
            &format!("/services/{}", s1["id"].as_str().unwrap_or_default()),
            Some(json!({ "retries": 1 })),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = u
        .send(
            "PATCH",
            &format!("/services/{s2_id}"),
            Some(json!({ "retries": 1 })),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _) = u.get(&format!("/services/{s2_id}")).await;
    assert_eq!(s, StatusCode::OK, "the rule names update only");
    let (s, _) = u.get("/consumers").await;
    assert_eq!(s, StatusCode::FORBIDDEN, "no rule for /consumers");
    let (s, _) = u
        .post("/services", json!({ "name": "s3", "url": "http://a.test" }))
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    // Removing the rule lifts it.
    let (s, _) = app
        .delete(&format!("/rbac/roles/svc/entities/{s2_id}"))
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _) = u
        .send(
            "PATCH",
            &format!("/services/{s2_id}"),
            Some(json!({ "retries": 1 })),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, b) = app
        .post(
            "/rbac/roles/svc/endpoints",
            json!({ "endpoint": "/x", "actions": "fly" }),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    assert!(b["fields"]["actions"].is_string(), "{b}");
    // Default roles are listed; RBAC is not part of the exported config.
    let (_, roles) = app.get("/rbac/roles").await;
    let rn = names(&roles);
    for r in ["admin", "read-only", "super-admin", "svc"] {
        assert!(rn.contains(&r.to_string()), "{rn:?}");
    }
    let (_, cfg) = app.get("/config").await;
    assert!(!cfg.to_string().contains("svc-user"));
});
