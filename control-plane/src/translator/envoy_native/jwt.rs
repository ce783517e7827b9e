//! Kong's `jwt` for Envoy nodes, as `envoy.filters.http.jwt_authn`.
//!
//! Every consumer's jwt credential becomes a provider (issuer = the
//! credential's `key`, matched on `iss`, a local JWKS made from its secret
//! or public key), one set per plugin instance, since the token's places
//! (`header_names`, `uri_param_names`, `cookie_names`) are the instance's.
//! Each instance is a `requirement_map` entry (any of its providers), which
//! the routes it applies to name in their per-route config.
//!
//! An instance is expressed only when Envoy answers as gantry-proxy does
//! (see [`expressible`]); the rest is left to gantry-proxy.

use crate::translator::model::{JwtSecret, Model, PluginInst};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use envoy_types::pb::envoy::config::core::v3::{DataSource, data_source};
use envoy_types::pb::envoy::extensions::filters::http::jwt_authn::v3::{
    JwtAuthentication, JwtHeader, JwtProvider, JwtRequirement, JwtRequirementOrList,
    PerRouteConfig, jwt_provider, jwt_requirement, per_route_config,
};
use envoy_types::pb::google::protobuf::{Any, Duration};
use prost::{Message, Name};
use serde_json::{Value, json};
use std::collections::HashMap;

pub const JWT_AUTHN: &str = "envoy.filters.http.jwt_authn";

/// The algorithms both gantry-proxy and Envoy verify. ES512 is not one:
/// gantry-proxy refuses its tokens, Envoy would accept them.
const ALGORITHMS: &[&str] = &[
    "HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256",
    "ES384", "EdDSA",
];

/// Envoy's clock skew for `exp` and `nbf`. gantry-proxy allows none, and
/// Envoy reads 0 as its default of 60 s, so 1 s is the closest.
const CLOCK_SKEW_SECONDS: u32 = 1;

/// The providers and requirements of the instances expressed so far.
#[derive(Default)]
pub struct Jwt {
    providers: HashMap<String, JwtProvider>,
    requirements: HashMap<String, JwtRequirement>,
    /// Provider names per set of the settings providers carry: instances
    /// that look for tokens alike share providers.
    sets: HashMap<String, Vec<String>>,
}

impl Jwt {
    /// The route's per-route config for instance `p`, when Envoy can
    /// enforce it (its providers and requirement are added once).
    pub fn route(&mut self, m: &Model, p: &PluginInst) -> Option<PerRouteConfig> {
        if !self.requirements.contains_key(&p.id) {
            let c = &p.config;
            let settings = json!([
                c["header_names"],
                c["uri_param_names"],
                c["cookie_names"],
                c["forward"],
                c["maximum_expiration"],
                c["secret_is_base64"],
                c["providers"],
            ])
            .to_string();
            let mut names = match self.sets.get(&settings) {
                Some(names) if expressible(c) => names.clone(),
                _ => {
                    // Named after the first instance with these settings.
                    let providers = providers(m, p)?;
                    let mut names: Vec<String> = providers.keys().cloned().collect();
                    names.sort();
                    self.providers.extend(providers);
                    self.sets.insert(settings, names.clone());
                    names
                }
            };
            let one = |n: String| JwtRequirement {
                requires_type: Some(jwt_requirement::RequiresType::ProviderName(n)),
            };
            let requirement = if names.len() == 1 {
                one(names.remove(0))
            } else {
                JwtRequirement {
                    requires_type: Some(jwt_requirement::RequiresType::RequiresAny(
                        JwtRequirementOrList {
                            requirements: names.into_iter().map(one).collect(),
                        },
                    )),
                }
            };
            self.requirements.insert(p.id.clone(), requirement);
        }
        Some(PerRouteConfig {
            requirement_specifier: Some(per_route_config::RequirementSpecifier::RequirementName(
                p.id.clone(),
            )),
        })
    }

    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// The listener's filter config, its maps encoded in key order (prost
    /// writes a HashMap in its random order, and the snapshot cache hashes
    /// the bytes: the same config must encode the same).
    pub fn filter(self) -> Any {
        let mut providers: Vec<ProviderEntry> = self
            .providers
            .into_iter()
            .map(|(key, v)| ProviderEntry {
                key,
                value: Some(v),
            })
            .collect();
        providers.sort_by(|a, b| a.key.cmp(&b.key));
        let mut requirement_map: Vec<RequirementEntry> = self
            .requirements
            .into_iter()
            .map(|(key, v)| RequirementEntry {
                key,
                value: Some(v),
            })
            .collect();
        requirement_map.sort_by(|a, b| a.key.cmp(&b.key));
        Any {
            type_url: format!("type.googleapis.com/{}", JwtAuthentication::full_name()),
            value: SortedJwtAuthentication {
                providers,
                requirement_map,
            }
            .encode_to_vec(),
        }
    }
}

/// `JwtAuthentication`'s wire format with its two maps as the repeated
/// entries they are on the wire (fields 1 and 5), in a chosen order.
#[derive(Clone, PartialEq, prost::Message)]
struct SortedJwtAuthentication {
    #[prost(message, repeated, tag = "1")]
    providers: Vec<ProviderEntry>,
    #[prost(message, repeated, tag = "5")]
    requirement_map: Vec<RequirementEntry>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ProviderEntry {
    #[prost(string, tag = "1")]
    key: String,
    #[prost(message, optional, tag = "2")]
    value: Option<JwtProvider>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct RequirementEntry {
    #[prost(string, tag = "1")]
    key: String,
    #[prost(message, optional, tag = "2")]
    value: Option<JwtRequirement>,
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Whether Envoy's jwt_authn gives gantry-proxy's answers for this config:
/// no `anonymous` (Envoy has no anonymous consumer), preflights
/// authenticated, the issuer in `iss`, `exp` verified (Envoy always checks
/// a present `exp`; Kong only when asked: with `nbf` not asked for, Envoy
/// still refuses a token not valid yet), no claims copied to headers
/// (Envoy base64-encodes arrays), and some place to find the token (with
/// none Envoy would look in its own defaults).
fn expressible(c: &Value) -> bool {
    let claims = strings(&c["claims_to_verify"]);
    let places = ["header_names", "uri_param_names", "cookie_names"];
    c["anonymous"].as_str().is_none_or(str::is_empty)
        && c["run_on_preflight"].as_bool() != Some(false)
        && c["key_claim_name"].as_str().is_none_or(|k| k == "iss")
        && claims.iter().any(|x| x == "exp")
        && c["claims_to_headers"]
            .as_array()
            .is_none_or(|a| a.is_empty())
        && places.iter().any(|k| !strings(&c[*k]).is_empty())
}

/// The instance's providers, by name: one per consumer credential and one
/// per `providers` entry. None when any of them cannot be expressed (a
/// token it would verify must not be refused), or when there are none.
fn providers(m: &Model, p: &PluginInst) -> Option<HashMap<String, JwtProvider>> {
    let c = &p.config;
    if !expressible(c) {
        return None;
    }
    let max = c["maximum_expiration"].as_f64().unwrap_or(0.0);
    let base = JwtProvider {
        forward: c["forward"].as_bool().unwrap_or(true),
        from_headers: strings(&c["header_names"])
            .iter()
            .flat_map(|h| {
                // Kong's `[Bb]earer` prefix.
                ["Bearer ", "bearer "].map(|prefix| JwtHeader {
                    name: h.clone(),
                    value_prefix: prefix.into(),
                })
            })
            .collect(),
        from_params: strings(&c["uri_param_names"]),
        from_cookies: strings(&c["cookie_names"]),
        // `exp` is among the claims verified (see `expressible`): Kong
        // then refuses a token without one, as `require_expiration` does.
        require_expiration: true,
        max_lifetime: (max > 0.0).then_some(Duration {
            seconds: max as i64,
            nanos: 0,
        }),
        clock_skew_seconds: CLOCK_SKEW_SECONDS,
        ..Default::default()
    };
    let base64_secret = c["secret_is_base64"].as_bool() == Some(true);
    let mut out = HashMap::new();
    for consumer in m.consumers.values() {
        for cred in &consumer.jwt {
            let jwks = credential_jwks(cred, base64_secret)?;
            out.insert(
                format!("jwt.{}.{}", p.id, cred.id),
                JwtProvider {
                    issuer: cred.key.clone(),
                    jwks_source_specifier: Some(local(jwks)),
                    ..base.clone()
                },
            );
        }
    }
    for (i, prov) in c["providers"].as_array().into_iter().flatten().enumerate() {
        // A wrong audience is 401 on gantry-proxy, 403 on Envoy; a remote
        // JWKS needs an Envoy cluster.
        if prov["audiences"].as_array().is_some_and(|a| !a.is_empty()) {
            return None;
        }
        let jwks = prov["local_jwks"].as_str()?;
        out.insert(
            format!("jwt.{}.provider.{i}", p.id),
            JwtProvider {
                issuer: prov["issuer"].as_str().unwrap_or_default().to_string(),
                jwks_source_specifier: Some(local(jwks.to_string())),
                ..base.clone()
            },
        );
    }
    (!out.is_empty()).then_some(out)
}

fn local(jwks: String) -> jwt_provider::JwksSourceSpecifier {
    jwt_provider::JwksSourceSpecifier::LocalJwks(DataSource {
        specifier: Some(data_source::Specifier::InlineString(jwks)),
        ..Default::default()
    })
}

/// A credential as a one-key JWKS (Envoy's local_jwks takes no PEM): the
/// HMAC secret as an `oct` key, the public key's numbers otherwise. The
/// key's `alg` is the credential's algorithm, so a token signed with any
/// other is refused, as by Kong.
fn credential_jwks(cred: &JwtSecret, base64_secret: bool) -> Option<String> {
    let alg = cred.algorithm.as_str();
    if !ALGORITHMS.contains(&alg) {
        return None;
    }
    let key = if alg.starts_with("HS") {
        let secret = cred.secret.as_deref().filter(|s| !s.is_empty())?;
        let bytes = if base64_secret {
            STANDARD.decode(secret).ok()?
        } else {
            secret.as_bytes().to_vec()
        };
        json!({"kty": "oct", "k": URL_SAFE_NO_PAD.encode(bytes)})
    } else {
        public_jwk(cred.rsa_public_key.as_deref()?, alg)?
    };
    let mut key = key;
    key["alg"] = json!(alg);
    Some(json!({ "keys": [key] }).to_string())
}

/// A PEM public key (SubjectPublicKeyInfo, or PKCS#1 for RSA) as a JWK
/// for `alg`; None when the key does not fit the algorithm.
fn public_jwk(pem: &str, alg: &str) -> Option<Value> {
    use x509_parser::oid_registry::{OID_EC_P256, OID_NIST_EC_P384, OID_SIG_ED25519};
    use x509_parser::prelude::FromDer;
    use x509_parser::public_key::{PublicKey, RSAPublicKey};
    use x509_parser::x509::SubjectPublicKeyInfo;

    let (_, pem) = x509_parser::pem::parse_x509_pem(pem.trim().as_bytes()).ok()?;
    let b64 = |b: &[u8]| URL_SAFE_NO_PAD.encode(b);
    // DER integers carry a leading zero when the top bit is set.
    let unsigned = |b: &[u8]| {
        let skip = b.iter().take_while(|x| **x == 0).count();
        b64(&b[skip.min(b.len().saturating_sub(1))..])
    };
    let rsa = |k: &RSAPublicKey<'_>| {
        (alg.starts_with("RS") || alg.starts_with("PS"))
            .then(|| json!({"kty": "RSA", "n": unsigned(k.modulus), "e": unsigned(k.exponent)}))
    };
    if pem.label == "RSA PUBLIC KEY" {
        let (_, k) = RSAPublicKey::from_der(&pem.contents).ok()?;
        return rsa(&k);
    }
    if pem.label != "PUBLIC KEY" {
        return None;
    }
    let (_, spki) = SubjectPublicKeyInfo::from_der(&pem.contents).ok()?;
    if spki.algorithm.algorithm == OID_SIG_ED25519 {
        let raw = spki.subject_public_key.data.as_ref();
        return (alg == "EdDSA" && raw.len() == 32)
            .then(|| json!({"kty": "OKP", "crv": "Ed25519", "x": b64(raw)}));
    }
    match spki.parsed().ok()? {
        PublicKey::RSA(k) => rsa(&k),
        PublicKey::EC(point) => {
            let curve = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.as_oid().ok())?;
            let (crv, size) = if curve == OID_EC_P256 && alg == "ES256" {
                ("P-256", 32)
            } else if curve == OID_NIST_EC_P384 && alg == "ES384" {
                ("P-384", 48)
            } else {
                return None;
            };
            // Uncompressed points only: 0x04, x, y.
            match point.data() {
                [4, xy @ ..] if xy.len() == 2 * size => Some(json!({
                    "kty": "EC", "crv": crv, "x": b64(&xy[..size]), "y": b64(&xy[size..])
                })),
                _ => None,
            }
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::RSA_PUBLIC as RSA_SPKI;
    use super::*;

    /// Fixed test keys, generated with openssl.
    const EC_P256: &str = "-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEcbq//nhxFig1HG86ESPCsVuGFetz
8IVx48MkqplDThIPG+3rIVf3PoGhItX1QyOhVs7zruIhRHertJn4EMYOXw==
-----END PUBLIC KEY-----";
    const ED25519: &str = "-----BEGIN PUBLIC KEY-----
MCowBQYDK2VwAyEA0FuoFNWxDyk6muKx6/+TBK8Med/jzXjaLygS333kXmc=
-----END PUBLIC KEY-----";

    fn cred(alg: &str, secret: Option<&str>, pem: Option<&str>) -> JwtSecret {
        JwtSecret {
            id: "c1".into(),
            key: "iss-1".into(),
            algorithm: alg.into(),
            secret: secret.map(str::to_string),
            rsa_public_key: pem.map(str::to_string),
        }
    }

    fn key(jwks: &str) -> Value {
        let v: Value = serde_json::from_str(jwks).unwrap();
        v["keys"][0].clone()
    }

    #[test]
    fn hmac_secrets_are_oct_keys() {
        let k = key(&credential_jwks(&cred("HS384", Some("s3cret"), None), false).unwrap());
        assert_eq!(k, json!({"kty": "oct", "k": "czNjcmV0", "alg": "HS384"}));
        // secret_is_base64: the decoded bytes are the key.
        let k = key(&credential_jwks(&cred("HS256", Some("czNjcmV0"), None), true).unwrap());
        assert_eq!(k["k"], "czNjcmV0");
        assert!(credential_jwks(&cred("HS256", Some("not base64!"), None), true).is_none());
        assert!(credential_jwks(&cred("HS256", None, None), false).is_none());
    }

    #[test]
    fn public_keys_become_jwks() {
        let k = key(&credential_jwks(&cred("RS256", None, Some(RSA_SPKI)), false).unwrap());
        assert_eq!(k["kty"], "RSA");
        assert_eq!(k["alg"], "RS256");
        assert_eq!(k["e"], "AQAB");
        // 2048 bits, the DER sign byte dropped.
        assert_eq!(
            URL_SAFE_NO_PAD
                .decode(k["n"].as_str().unwrap())
                .unwrap()
                .len(),
            256
        );
        let k = key(&credential_jwks(&cred("PS512", None, Some(RSA_SPKI)), false).unwrap());
        assert_eq!(k["alg"], "PS512");

        let k = key(&credential_jwks(&cred("ES256", None, Some(EC_P256)), false).unwrap());
        assert_eq!((&k["kty"], &k["crv"]), (&json!("EC"), &json!("P-256")));
        assert_eq!(
            URL_SAFE_NO_PAD
                .decode(k["x"].as_str().unwrap())
                .unwrap()
                .len(),
            32
        );
        assert_eq!(
            URL_SAFE_NO_PAD
                .decode(k["y"].as_str().unwrap())
                .unwrap()
                .len(),
            32
        );

        let k = key(&credential_jwks(&cred("EdDSA", None, Some(ED25519)), false).unwrap());
        assert_eq!(
            k,
            json!({"kty": "OKP", "crv": "Ed25519", "alg": "EdDSA",
                   "x": "0FuoFNWxDyk6muKx6_-TBK8Med_jzXjaLygS333kXmc"})
        );

        // A key that does not fit the algorithm, ES512, junk: not expressed.
        assert!(credential_jwks(&cred("ES384", None, Some(EC_P256)), false).is_none());
        assert!(credential_jwks(&cred("RS256", None, Some(EC_P256)), false).is_none());
        assert!(credential_jwks(&cred("ES512", None, Some(EC_P256)), false).is_none());
        assert!(credential_jwks(&cred("RS256", None, Some("nope")), false).is_none());
    }

    #[test]
    fn what_is_expressible() {
        let ok = json!({"claims_to_verify": ["exp"], "header_names": ["authorization"],
                        "uri_param_names": ["jwt"], "cookie_names": [], "key_claim_name": "iss",
                        "run_on_preflight": true, "maximum_expiration": 0});
        assert!(expressible(&ok));
        let with = |k: &str, v: Value| {
            let mut c = ok.clone();
            c[k] = v;
            expressible(&c)
        };
        assert!(with("claims_to_verify", json!(["exp", "nbf"])));
        assert!(!with("claims_to_verify", json!(null)));
        assert!(!with("claims_to_verify", json!(["nbf"])));
        assert!(!with("anonymous", json!("guest")));
        assert!(with("anonymous", json!(null)));
        assert!(!with("run_on_preflight", json!(false)));
        assert!(!with("key_claim_name", json!("sub")));
        assert!(!with(
            "claims_to_headers",
            json!([{"claim": "a", "header": "x-a"}])
        ));
        let mut none = ok.clone();
        none["header_names"] = json!([]);
        none["uri_param_names"] = json!([]);
        assert!(!expressible(&none));
    }
}
