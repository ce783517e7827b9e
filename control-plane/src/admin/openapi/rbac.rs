//! The RBAC operations of the OpenAPI document (`admin/rbac.rs`): what
//! the field readers there accept, stated as schemas.

use super::{json_response, op, page_of, path_param, responses, with_body};
use serde_json::{Value, json};

/// Characters `char::is_control` refuses.
const CTRL: &str = "\\u0000-\\u001f\\u007f-\\u009f";

fn name_pattern() -> String {
    format!("^[^{CTRL}]+$")
}

fn text(min: usize) -> Value {
    json!({ "type": "string", "minLength": min, "maxLength": 1024, "pattern": name_pattern() })
}

/// A list as a JSON array, or Kong's comma-separated string.
fn list(item_pattern: &str, array_item: Value) -> Value {
    json!({ "oneOf": [
        { "type": "string", "pattern": format!("^{item_pattern}(?:,{item_pattern})*$") },
        { "type": "array", "minItems": 1, "items": array_item },
    ] })
}

fn role_names() -> Value {
    let item = format!("[^,{CTRL}]*[^ ,{CTRL}][^,{CTRL}]*");
    list(
        &item,
        json!({ "type": "string", "maxLength": 1024, "pattern": format!("^[^{CTRL}]*[^ {CTRL}][^{CTRL}]*$") }),
    )
}

fn actions() -> Value {
    let a = " *(?:read|create|update|delete) *";
    let mut l = list(
        a,
        json!({ "type": "string", "enum": ["read", "create", "update", "delete"] }),
    );
    l["description"] = json!(
        "Kong's actions: `read` (GET), `create` (POST), `update` (PUT, PATCH), `delete` (DELETE)"
    );
    l
}

fn tags() -> Value {
    let t = "[\\x21-\\x2b\\x2d\\x2e\\x30-\\x7e]{1,128}";
    let mut l = list(
        &format!(" *{t} *"),
        json!({ "type": "string", "pattern": format!("^ *{t} *$") }),
    );
    l["description"] = json!(
        "Gantry's team scope: the role's permissions count only for entities carrying one of \
         these tags, and only on entity collection endpoints (docs/security.md)"
    );
    json!({ "anyOf": [l, { "type": "null" }] })
}

fn nullable_text() -> Value {
    json!({ "anyOf": [text(1), { "type": "null" }] })
}

fn object(required: &[&str], props: Value) -> Value {
    json!({ "type": "object", "required": required, "properties": props, "additionalProperties": false })
}

fn user() -> Value {
    json!({ "type": "object", "required": ["id", "name", "enabled", "created_at"], "properties": {
        "id": { "type": "string" }, "name": { "type": "string" }, "enabled": { "type": "boolean" },
        "comment": { "type": ["string", "null"] }, "created_at": { "type": "integer" } } })
}

fn created_user() -> Value {
    let mut u = user();
    u["required"] = json!(["id", "name", "enabled", "created_at", "user_token"]);
    u["properties"]["user_token"] = json!({ "type": "string",
        "description": "The token: shown in this response only, stored as its SHA-256" });
    u
}

fn role() -> Value {
    json!({ "type": "object", "required": ["id", "name", "created_at"], "properties": {
        "id": { "type": "string" }, "name": { "type": "string" },
        "comment": { "type": ["string", "null"] },
        "tags": { "type": ["array", "null"], "items": { "type": "string" } },
        "created_at": { "type": "integer" } } })
}

fn permission(keys: &[&str]) -> Value {
    let mut p = json!({ "type": "object", "required": ["role", "actions", "negative"], "properties": {
        "role": { "type": "object" }, "actions": { "type": "array", "items": { "type": "string" } },
        "negative": { "type": "boolean" }, "comment": { "type": ["string", "null"] },
        "created_at": { "type": "integer" } } });
    for k in keys {
        p["properties"][*k] = json!({ "type": "string" });
    }
    p
}

fn user_roles() -> Value {
    json!({ "type": "object", "required": ["user", "roles"], "properties": {
        "user": user(), "roles": { "type": "array", "items": role() } } })
}

fn key(name: &str, what: &str) -> Value {
    path_param(name, json!({ "type": "string" }), what)
}

fn user_body(required: &[&str]) -> Value {
    object(
        required,
        json!({
            "name": text(1),
            "user_token": {
                "type": "string", "minLength": 16, "maxLength": 1024, "pattern": name_pattern(),
                "description": "Generated (32 random bytes, base64url) when absent"
            },
            "enabled": { "type": "boolean" },
            "comment": nullable_text(),
        }),
    )
}

fn role_body(required: &[&str]) -> Value {
    object(
        required,
        json!({ "name": text(1), "comment": nullable_text(), "tags": tags() }),
    )
}

fn rule_props(extra: Value) -> Value {
    let mut p = json!({
        "actions": actions(),
        "negative": { "type": "boolean", "description": "Deny instead of allow" },
        "comment": nullable_text(),
    });
    if let (Some(o), Value::Object(e)) = (p.as_object_mut(), extra) {
        o.extend(e);
    }
    p
}

/// The operation of an RBAC path, or `None` for a path that is not one.
pub(super) fn op_of(path: &str, method: &str) -> Option<Value> {
    let summary = format!("{method} {path}");
    let u = || key("user", "An RBAC user's name or id");
    let r = || key("role", "An RBAC role's name or id");
    let list_of = |s: Value| responses(&[("200", json_response("All of them", page_of(s)))], &[]);
    let o = match (path, method) {
        ("/rbac/users", "GET") => op(summary, vec![], list_of(user())),
        ("/rbac/users", "POST") => with_body(
            op(
                summary,
                vec![],
                responses(
                    &[(
                        "201",
                        json_response("Created; its token shown once", created_user()),
                    )],
                    &[400, 409],
                ),
            ),
            user_body(&["name"]),
            true,
        ),
        ("/rbac/users/{user}", "GET") => op(
            summary,
            vec![u()],
            responses(
                &[("200", json_response("The user (never its token)", user()))],
                &[404],
            ),
        ),
        ("/rbac/users/{user}", "PATCH") => with_body(
            op(
                summary,
                vec![u()],
                responses(
                    &[("200", json_response("Updated", user()))],
                    &[400, 404, 409],
                ),
            ),
            user_body(&[]),
            false,
        ),
        ("/rbac/users/{user}" | "/rbac/roles/{role}", "DELETE") => op(
            summary,
            vec![if path.contains("{user}") { u() } else { r() }],
            responses(
                &[("204", json!({ "description": "Deleted, or was not there" }))],
                &[],
            ),
        ),
        ("/rbac/users/{user}/roles", "GET") => op(
            summary,
            vec![u()],
            responses(
                &[("200", json_response("The user's roles", user_roles()))],
                &[404],
            ),
        ),
        ("/rbac/users/{user}/roles", "POST" | "DELETE") => {
            let ok = if method == "POST" {
                ("201", json_response("The user's roles now", user_roles()))
            } else {
                ("204", json!({ "description": "Removed" }))
            };
            let mut body = object(&["roles"], json!({ "roles": role_names() }));
            body["description"] = json!("Roles by name; one that does not exist is 400");
            with_body(
                op(summary, vec![u()], responses(&[ok], &[400, 404])),
                body,
                true,
            )
        }
        ("/rbac/roles", "GET") => op(summary, vec![], list_of(role())),
        ("/rbac/roles", "POST") => with_body(
            op(
                summary,
                vec![],
                responses(&[("201", json_response("Created", role()))], &[400, 409]),
            ),
            role_body(&["name"]),
            true,
        ),
        ("/rbac/roles/{role}", "GET") => op(
            summary,
            vec![r()],
            responses(&[("200", json_response("The role", role()))], &[404]),
        ),
        ("/rbac/roles/{role}", "PATCH") => with_body(
            op(
                summary,
                vec![r()],
                responses(
                    &[("200", json_response("Updated", role()))],
                    &[400, 404, 409],
                ),
            ),
            role_body(&[]),
            false,
        ),
        ("/rbac/roles/{role}/endpoints", "GET") => op(
            summary,
            vec![r()],
            responses(
                &[(
                    "200",
                    json_response(
                        "The role's endpoint permissions",
                        page_of(permission(&["workspace", "endpoint"])),
                    ),
                )],
                &[404],
            ),
        ),
        ("/rbac/roles/{role}/endpoints", "POST") => with_body(
            op(
                summary,
                vec![r()],
                responses(
                    &[(
                        "201",
                        json_response("Created", permission(&["workspace", "endpoint"])),
                    )],
                    &[400, 404, 409],
                ),
            ),
            object(
                &["endpoint", "actions"],
                rule_props(json!({
                    "endpoint": { "type": "string", "minLength": 1, "maxLength": 1024, "pattern": name_pattern(),
                        "description": "`*`, a path (`/services`), or a pattern whose `*` segments stand for one segment (`/services/*`)" },
                    "workspace": { "type": "string", "enum": ["default", "*"], "default": "default" },
                })),
            ),
            true,
        ),
        ("/rbac/roles/{role}/endpoints/{workspace}/{endpoint}", _) => {
            let params = vec![
                r(),
                // Only two values are meaningful; an enum also keeps
                // generators from drowning in strings that are filtered.
                path_param(
                    "workspace",
                    json!({ "type": "string", "enum": ["default", "*"] }),
                    "`default` or `*`",
                ),
                key("endpoint", "The endpoint, `/` encoded as `%2F`"),
            ];
            let perm = permission(&["workspace", "endpoint"]);
            match method {
                "GET" => op(
                    summary,
                    params,
                    responses(&[("200", json_response("The permission", perm))], &[404]),
                ),
                "PATCH" => with_body(
                    op(
                        summary,
                        params,
                        responses(&[("200", json_response("Updated", perm))], &[400, 404]),
                    ),
                    object(&[], rule_props(json!({}))),
                    false,
                ),
                _ => op(
                    summary,
                    params,
                    responses(
                        &[("204", json!({ "description": "Deleted, or was not there" }))],
                        &[404],
                    ),
                ),
            }
        }
        ("/rbac/roles/{role}/entities", "GET") => op(
            summary,
            vec![r()],
            responses(
                &[(
                    "200",
                    json_response(
                        "The role's entity permissions",
                        page_of(permission(&["entity_id", "entity_type"])),
                    ),
                )],
                &[404],
            ),
        ),
        ("/rbac/roles/{role}/entities", "POST") => {
            let mut types: Vec<&str> = crate::entities::ALL.iter().map(|d| d.name).collect();
            types.push("*");
            with_body(
                op(
                    summary,
                    vec![r()],
                    responses(
                        &[(
                            "201",
                            json_response("Created", permission(&["entity_id", "entity_type"])),
                        )],
                        &[400, 404, 409],
                    ),
                ),
                object(
                    &["entity_id", "actions"],
                    rule_props(json!({
                        "entity_id": { "type": "string", "minLength": 1, "maxLength": 1024, "pattern": name_pattern(),
                            "description": "An entity's id, or `*` for every entity" },
                        "entity_type": { "type": "string", "enum": types, "default": "*",
                            "description": "The entity's collection (`services`); `*` matches by id alone" },
                    })),
                ),
                true,
            )
        }
        ("/rbac/roles/{role}/entities/{entity_id}", _) => {
            let params = vec![r(), key("entity_id", "The entity id the permission names")];
            let perm = permission(&["entity_id", "entity_type"]);
            match method {
                "GET" => op(
                    summary,
                    params,
                    responses(&[("200", json_response("The permission", perm))], &[404]),
                ),
                "PATCH" => with_body(
                    op(
                        summary,
                        params,
                        responses(&[("200", json_response("Updated", perm))], &[400, 404]),
                    ),
                    object(&[], rule_props(json!({}))),
                    false,
                ),
                _ => op(
                    summary,
                    params,
                    responses(
                        &[("204", json!({ "description": "Deleted, or was not there" }))],
                        &[404],
                    ),
                ),
            }
        }
        _ => return None,
    };
    Some(o)
}
