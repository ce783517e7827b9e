//! Many writers at once: no lost update, and revisions strictly
//! increasing with no gaps.

mod common;

use serde_json::json;
use std::sync::Arc;

both!(parallel_creates_get_gapless_revisions, |app| {
    let app = Arc::new(app);
    let start = app.revision().await;
    let mut tasks = Vec::new();
    for i in 0..40 {
        let app = app.clone();
        tasks.push(tokio::spawn(async move {
            let (s, _) = app
                .post("/consumers", json!({ "username": format!("c{i}") }))
                .await;
            assert_eq!(s, 201);
        }));
    }
    for t in tasks {
        t.await.expect("writer");
    }
    assert_eq!(app.revision().await, start + 40);
    let (_, revs) = app.get("/config/revisions?size=1000").await;
    let mut seen: Vec<i64> = revs["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|r| r["revision"].as_i64().expect("n"))
        .collect();
    seen.sort();
    let want: Vec<i64> = (0..=start + 40).collect();
    assert_eq!(seen, want, "revisions must be gapless");
    let (_, list) = app.get("/consumers?size=1000").await;
    assert_eq!(list["data"].as_array().map(Vec::len), Some(40));
});

// Four clients each PATCH their own field of one service, many times, at
// once. A PATCH merges into what it read; without serialised writes a
// stale read would put another client's field back to an older value.
both!(concurrent_patches_lose_nothing, |app| {
    let app = Arc::new(app);
    let (s, _) = app
        .post(
            "/services",
            json!({"name": "shared", "url": "http://a.test"}),
        )
        .await;
    assert_eq!(s, 201);
    let fields = [
        "retries",
        "connect_timeout",
        "write_timeout",
        "read_timeout",
    ];
    let mut tasks = Vec::new();
    for (k, field) in fields.iter().enumerate() {
        let app = app.clone();
        let field = field.to_string();
        tasks.push(tokio::spawn(async move {
            for n in 1..=12 {
                let value = (k as i64 + 1) * 100 + n;
                let (s, body) = app
                    .json("PATCH", "/services/shared", json!({ field.clone(): value }))
                    .await;
                assert_eq!(s, 200, "{body}");
            }
        }));
    }
    for t in tasks {
        t.await.expect("patcher");
    }
    let (_, svc) = app.get("/services/shared").await;
    for (k, field) in fields.iter().enumerate() {
        assert_eq!(
            svc[*field].as_i64(),
            Some((k as i64 + 1) * 100 + 12),
            "{field} lost an update: {svc}"
        );
    }
});
