//! What a reader of the configuration is shown of a resource: the
//! resource as sent, with its secrets replaced by `[redacted]`, as Envoy's
//! own `/config_dump` does. A node needs its private keys, HMAC secrets and
//! Redis passwords; a tool reading CSDS or a proxy's `/config_dump` does
//! not. One set of rules for both planes.

use crate::proto::plugins as pb;
use crate::vault;
use envoy_types::pb::envoy::config::core::v3::{DataSource, data_source::Specifier};
use envoy_types::pb::envoy::config::listener::v3::{Listener, filter};
use envoy_types::pb::envoy::extensions::filters::http::api_key_auth::v3::ApiKeyAuth;
use envoy_types::pb::envoy::extensions::filters::http::jwt_authn::v3::{
    JwtAuthentication, jwt_provider::JwksSourceSpecifier,
};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, http_filter,
};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{Secret, secret};
use envoy_types::pb::google::protobuf::Any;
use prost::Message;
use serde_json::Value;

pub const REDACTED: &str = "[redacted]";
const SECRET: &str = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret";
const LISTENER: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
const HCM: &str = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager";
const API_KEY_AUTH: &str =
    "type.googleapis.com/envoy.extensions.filters.http.api_key_auth.v3.ApiKeyAuth";
const JWT_AUTHN: &str =
    "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication";

/// `any` with its secrets redacted; unchanged when it holds none. A
/// resource that does not decode is withheld whole rather than shown.
pub fn resource(any: &Any) -> Any {
    let out = match any.type_url.as_str() {
        SECRET => Secret::decode(any.value.as_slice()).map(|mut s| {
            if let Some(secret::Type::TlsCertificate(t)) = &mut s.r#type {
                t.private_key = t.private_key.as_ref().map(|_| redacted());
            }
            s.encode_to_vec()
        }),
        LISTENER => Listener::decode(any.value.as_slice()).map(|mut l| {
            for chain in &mut l.filter_chains {
                for f in &mut chain.filters {
                    if let Some(filter::ConfigType::TypedConfig(a)) = &mut f.config_type
                        && a.type_url == HCM
                    {
                        *a = hcm(a);
                    }
                }
            }
            l.encode_to_vec()
        }),
        _ => return any.clone(),
    };
    match out {
        Ok(value) => Any {
            type_url: any.type_url.clone(),
            value,
        },
        Err(_) => Any {
            type_url: any.type_url.clone(),
            value: Vec::new(),
        },
    }
}

fn redacted() -> DataSource {
    DataSource {
        specifier: Some(Specifier::InlineString(REDACTED.into())),
        ..Default::default()
    }
}

fn hcm(a: &Any) -> Any {
    let Ok(mut h) = HttpConnectionManager::decode(a.value.as_slice()) else {
        return Any {
            type_url: a.type_url.clone(),
            value: Vec::new(),
        };
    };
    for f in &mut h.http_filters {
        if let Some(http_filter::ConfigType::TypedConfig(c)) = &mut f.config_type {
            c.value = match c.type_url.as_str() {
                pb::GATEWAY_TYPE => gateway(&c.value),
                API_KEY_AUTH => ApiKeyAuth::decode(c.value.as_slice())
                    .map(|mut k| {
                        for cred in &mut k.credentials {
                            cred.key = REDACTED.into();
                        }
                        k.encode_to_vec()
                    })
                    .unwrap_or_default(),
                JWT_AUTHN => JwtAuthentication::decode(c.value.as_slice())
                    .map(|mut j| {
                        for p in j.providers.values_mut() {
                            if let Some(JwksSourceSpecifier::LocalJwks(d)) =
                                &mut p.jwks_source_specifier
                            {
                                *d = redacted();
                            }
                        }
                        j.encode_to_vec()
                    })
                    .unwrap_or_default(),
                _ => continue,
            };
        }
    }
    Any {
        type_url: a.type_url.clone(),
        value: h.encode_to_vec(),
    }
}

/// Gantry's plugin filter: jwt secrets, and every plugin config field the
/// control plane marked secret (by the plugin's schema). Key-auth keys are
/// digests already.
fn gateway(bytes: &[u8]) -> Vec<u8> {
    let Ok(mut g) = pb::Gateway::decode(bytes) else {
        return Vec::new();
    };
    for c in &mut g.consumers {
        for j in &mut c.jwt_secrets {
            if !j.secret.is_empty() {
                j.secret = REDACTED.into();
            }
        }
    }
    for p in &mut g.plugins {
        if p.secret_fields.is_empty() {
            continue;
        }
        p.config_json = match serde_json::from_str::<Value>(&p.config_json) {
            Ok(mut v) => {
                for f in &p.secret_fields {
                    let steps: Vec<&str> = f.split('/').skip(1).collect();
                    redact_at(&mut v, &steps);
                }
                v.to_string()
            }
            Err(_) => "{}".into(),
        };
    }
    g.encode_to_vec()
}

/// Replaces what `steps` (a JSON pointer's parts, `*` for every element)
/// reaches in `v`. Nulls stay null (nothing is set), and a vault reference
/// names where the secret is rather than the secret, so it stays as Kong
/// shows it.
fn redact_at(v: &mut Value, steps: &[&str]) {
    let Some((step, rest)) = steps.split_first() else {
        let reference = v.as_str().is_some_and(vault::is_reference);
        if !v.is_null() && !reference {
            *v = Value::String(REDACTED.into());
        }
        return;
    };
    match (v, *step) {
        (Value::Array(items), "*") => items.iter_mut().for_each(|i| redact_at(i, rest)),
        (Value::Object(m), "*") => m.values_mut().for_each(|i| redact_at(i, rest)),
        (Value::Object(m), name) => {
            if let Some(next) = m.get_mut(name) {
                redact_at(next, rest);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn plugin(config: Value, secret_fields: &[&str]) -> pb::Plugin {
        pb::Plugin {
            id: "p".into(),
            name: "rate-limiting".into(),
            config_json: config.to_string(),
            secret_fields: secret_fields.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn redacted_config(p: pb::Plugin) -> Value {
        let g = pb::Gateway {
            plugins: vec![p],
            ..Default::default()
        };
        let out = pb::Gateway::decode(gateway(&g.encode_to_vec()).as_slice()).unwrap();
        serde_json::from_str(&out.plugins[0].config_json).unwrap()
    }

    #[test]
    fn plugin_secrets_are_redacted_where_the_control_plane_marks_them() {
        let p = plugin(
            json!({"redis": {"password": "hunter2", "host": "r"}, "list": [{"k": "a"}, {"k": "b"}], "none": null}),
            &["/redis/password", "/list/*/k", "/none", "/absent/x"],
        );
        assert_eq!(
            redacted_config(p),
            json!({"redis": {"password": REDACTED, "host": "r"}, "list": [{"k": REDACTED}, {"k": REDACTED}], "none": null})
        );
    }

    #[test]
    fn a_vault_reference_is_shown_and_unmarked_fields_untouched() {
        let p = plugin(
            json!({"redis": {"password": "{vault://env/redis-pw}"}, "limit": 5}),
            &["/redis/password"],
        );
        assert_eq!(
            redacted_config(p),
            json!({"redis": {"password": "{vault://env/redis-pw}"}, "limit": 5})
        );
    }

    #[test]
    fn jwt_secrets_are_redacted() {
        let g = pb::Gateway {
            consumers: vec![pb::Consumer {
                jwt_secrets: vec![pb::JwtCredential {
                    key: "iss".into(),
                    secret: "s3cret".into(),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        };
        let out = pb::Gateway::decode(gateway(&g.encode_to_vec()).as_slice()).unwrap();
        assert_eq!(out.consumers[0].jwt_secrets[0].secret, REDACTED);
        assert_eq!(out.consumers[0].jwt_secrets[0].key, "iss");
    }
}
