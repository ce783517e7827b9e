//! What CSDS shows of a resource: the resource as sent, with its secrets
//! replaced by `[redacted]`, as Envoy's own `/config_dump` does. A node
//! needs its private keys, HMAC secrets and Redis passwords; a tool
//! reading the fleet's status does not.

use crate::schema;
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
use gantry_shared::proto::plugins as pb;
use prost::Message;

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

/// Gantry's plugin filter: jwt secrets, and every plugin config field its
/// schema marks secret. Key-auth keys are digests already.
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
        let Some(s) = crate::plugins::config_schema(&p.name) else {
            p.config_json = "{}".into();
            continue;
        };
        match serde_json::from_str(&p.config_json) {
            Ok(mut v) => {
                schema::redact(s, &mut v);
                p.config_json = v.to_string();
            }
            Err(_) => p.config_json = "{}".into(),
        }
    }
    g.encode_to_vec()
}
