//! Test helpers: entities built exactly as the admin API stores them
//! (validated and normalised by the entity schemas: every field present,
//! defaults filled, nulls for unset, foreign keys as `{"id": ...}`).

use super::{Flavour, ProxyOptions, Resources, translate};
use crate::entities::{check, def};
use crate::schema::Input;
use crate::store::Stored;
use serde_json::{Value, json};
use std::cell::Cell;

thread_local! {
    static CLOCK: Cell<i64> = const { Cell::new(1_700_000_000) };
}

fn tick() -> i64 {
    CLOCK.with(|c| {
        let t = c.get() + 1;
        c.set(t);
        t
    })
}

fn merge(into: &mut Value, extra: Value) {
    if let (Some(o), Value::Object(e)) = (into.as_object_mut(), extra) {
        for (k, v) in e {
            o.insert(k, v);
        }
    }
}

/// Normalises `input` as the admin API would and wraps it as stored.
pub fn stored(kind: &str, input: Value) -> Stored {
    let d = def(kind).expect("known kind");
    let mut v =
        check(d, &input, Input::Json).unwrap_or_else(|e| panic!("invalid {kind} {input}: {e:?}"));
    if v["id"].is_null() {
        v["id"] = json!(uuid::Uuid::new_v4().to_string());
    }
    if v["created_at"].is_null() {
        v["created_at"] = json!(tick());
    }
    if d.updated_at {
        v["updated_at"] = v["created_at"].clone();
    }
    if kind == "certificates" {
        v["snis"] = Value::Null;
    }
    Stored {
        kind: kind.into(),
        id: v["id"].as_str().unwrap().to_string(),
        data: v,
    }
}

pub fn service(name: &str, host: &str, port: u16) -> Stored {
    service_with(name, host, port, json!({}))
}

pub fn service_with(name: &str, host: &str, port: u16, extra: Value) -> Stored {
    let mut v = json!({"name": name, "host": host, "port": port});
    merge(&mut v, extra);
    stored("services", v)
}

pub fn route(name: &str, service: &Stored, extra: Value) -> Stored {
    let mut v = json!({"name": name, "service": {"id": service.id}});
    merge(&mut v, extra);
    stored("routes", v)
}

pub fn upstream(name: &str, extra: Value) -> Stored {
    let mut v = json!({"name": name});
    merge(&mut v, extra);
    stored("upstreams", v)
}

pub fn target(upstream_id: &str, target: &str, weight: u32) -> Stored {
    stored(
        "targets",
        json!({"upstream": {"id": upstream_id}, "target": target, "weight": weight}),
    )
}

/// A certificate (stored by hand: the schema would want real PEM) and its
/// SNI entities.
pub fn certificate(id: &str, snis: &[&str]) -> Vec<Stored> {
    let t = tick();
    let mut out = vec![Stored {
        kind: "certificates".into(),
        id: id.into(),
        data: json!({
            "id": id, "created_at": t, "updated_at": t,
            "cert": format!("-----BEGIN CERTIFICATE-----\n{id}\n-----END CERTIFICATE-----\n"),
            "key": format!("-----BEGIN PRIVATE KEY-----\n{id}\n-----END PRIVATE KEY-----\n"),
            "cert_alt": null, "key_alt": null, "tags": null, "snis": null
        }),
    }];
    for s in snis {
        out.push(stored(
            "snis",
            json!({"name": s, "certificate": {"id": id}}),
        ));
    }
    out
}

/// Real CA certificates (the schema parses them), from the test fixtures.
pub const CA_PEM: &str = include_str!("../../tests/fixtures/ca.pem");
pub const CA2_PEM: &str = include_str!("../../tests/fixtures/ca2.pem");

pub fn ca_certificate(pem: &str) -> Stored {
    stored("ca_certificates", json!({ "cert": pem }))
}

pub fn run(entities: &[Stored]) -> Resources {
    translate(entities, Flavour::Envoy, &ProxyOptions::default())
        .unwrap_or_else(|e| panic!("translate failed: {e}"))
}
