//! Value checks shared by entity schemas (Kong's typedefs).

use crate::schema::{FieldErrors, entity_error, field_error};
use serde_json::{Map, Value};

fn s(v: &Value) -> &str {
    v.as_str().unwrap_or_default()
}

/// Kong's `name` typedef: letters, digits, `.`, `-`, `_` and `~`.
pub fn name(v: &Value) -> Result<(), String> {
    let n = s(v);
    if !n.is_empty()
        && n.chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '.' | '-' | '_' | '~'))
    {
        Ok(())
    } else {
        Err(format!(
            "invalid value '{n}': it must only contain alphanumeric and '., -, _, ~' characters"
        ))
    }
}

/// A value gantry-proxy sends upstream in a header (a consumer's username
/// in `X-Consumer-Username`): no control characters such as CR or LF.
/// Stricter than Kong, which stores any string; see docs/admin-api.md.
pub fn header_safe(v: &Value) -> Result<(), String> {
    if gantry_proxy::plugins::is_header_safe(s(v)) {
        Ok(())
    } else {
        Err("must not contain control characters (it is sent upstream in a header)".into())
    }
}

pub fn uuid(v: &Value) -> Result<(), String> {
    uuid::Uuid::parse_str(s(v))
        .map(|_| ())
        .map_err(|_| "expected a valid UUID".into())
}

/// A tag: printable ASCII without `,` or `/` (they separate tag queries).
pub fn tag(v: &Value) -> Result<(), String> {
    let t = s(v);
    if !t.is_empty()
        && t.chars()
            .all(|c| c.is_ascii_graphic() && c != ',' && c != '/')
    {
        Ok(())
    } else {
        Err("invalid tag: must be printable ASCII (except `,` and `/`) or valid UTF-8".into())
    }
}

fn is_label(l: &str) -> bool {
    !l.is_empty()
        && l.len() <= 63
        && l.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        && !l.starts_with('-')
        && !l.ends_with('-')
}

fn is_hostname(h: &str) -> bool {
    !h.is_empty() && h.len() <= 253 && h.trim_end_matches('.').split('.').all(is_label)
}

fn is_ip(h: &str) -> bool {
    let h = h
        .strip_prefix('[')
        .and_then(|x| x.strip_suffix(']'))
        .unwrap_or(h);
    h.parse::<std::net::IpAddr>().is_ok()
}

/// A host: a hostname or an IP address, no port.
pub fn host(v: &Value) -> Result<(), String> {
    let h = s(v);
    if is_hostname(h) || is_ip(h) {
        Ok(())
    } else {
        Err(format!("invalid value: {h}"))
    }
}

/// A route host: a hostname with at most one `*` as its first or last
/// label, optionally with a port.
pub fn wildcard_host(v: &Value) -> Result<(), String> {
    let raw = s(v);
    let h = match raw.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') && p.parse::<u16>().is_ok() => h,
        _ => raw,
    };
    let stars = h.matches('*').count();
    let ok = match stars {
        0 => is_hostname(h) || is_ip(h),
        1 if h.starts_with("*.") => is_hostname(&h[2..]),
        1 if h.ends_with(".*") => is_hostname(&h[..h.len() - 2]),
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid wildcard: '{raw}': wildcard must be leftmost or rightmost character"
        ))
    }
}

/// An SNI: a hostname, or one with a leading `*.`.
pub fn sni(v: &Value) -> Result<(), String> {
    let h = s(v);
    if is_ip(h) {
        return Err("must not be an IP".into());
    }
    let base = h.strip_prefix("*.").unwrap_or(h);
    if h.contains(':') {
        return Err("must not have a port".into());
    }
    if is_hostname(base) {
        Ok(())
    } else {
        Err(format!("invalid value: {h}"))
    }
}

/// A route path: `/...` for a prefix, `~/...` for a regex that must compile.
pub fn route_path(v: &Value) -> Result<(), String> {
    let p = s(v);
    if let Some(re) = p.strip_prefix('~') {
        let invalid = |reason: &str| format!("invalid regex: '{re}' ({reason})");
        // RE2's syntax errors are about the user's regex; Envoy's size
        // limit is about the regex it is given, which wraps it. Both with
        // gantry-proxy's own RE2 compiler.
        gantry_proxy::config::check_re2_syntax(re).map_err(|e| invalid(&e))?;
        return gantry_proxy::config::Re2::new(&crate::translator::path_regex(re))
            .map(drop)
            .map_err(|e| invalid(e.split_once("\": ").map_or(e.as_str(), |(_, r)| r)));
    }
    if !p.starts_with('/') {
        return Err("should start with: / (fixed path) or ~/ (regex path)".into());
    }
    if p.contains("//") {
        return Err("must not have empty segments".into());
    }
    if p.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "invalid path: '{p}' (characters outside reserved list)"
        ));
    }
    Ok(())
}

/// A service path: absolute, no query or fragment.
pub fn service_path(v: &Value) -> Result<(), String> {
    let p = s(v);
    if !p.starts_with('/') {
        return Err("should start with: /".into());
    }
    if p.contains('?') || p.contains('#') || p.chars().any(|c| c.is_whitespace()) {
        return Err(format!("invalid path: '{p}'"));
    }
    Ok(())
}

/// An HTTP method token: upper-case letters.
pub fn method(v: &Value) -> Result<(), String> {
    let m = s(v);
    if !m.is_empty() && m.chars().all(|c| c.is_ascii_uppercase()) {
        Ok(())
    } else {
        Err(format!("invalid value: {m}"))
    }
}

/// A header name as a token.
pub fn header_name(v: &Value) -> Result<(), String> {
    let h = s(v);
    if !h.is_empty()
        && h.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
    {
        Ok(())
    } else {
        Err(format!(
            "bad header name '{h}', allowed characters are A-Z, a-z, 0-9, '_', and '-'"
        ))
    }
}

/// `host:port` or `host` (the port then defaults to 8000, as Kong's targets).
pub fn target(v: &Value) -> Result<(), String> {
    let t = s(v);
    let (h, port) = split_host_port(t);
    if let Some(p) = port
        && p.parse::<u16>().map(|p| p == 0).unwrap_or(true)
    {
        return Err(format!("invalid port number: {p}"));
    }
    if is_hostname(h) || is_ip(h) {
        Ok(())
    } else {
        Err(format!(
            "Invalid target ('{t}'); not a valid hostname or ip address"
        ))
    }
}

/// Splits `host:port`, `[v6]:port`, `v6` into host and optional port.
pub fn split_host_port(t: &str) -> (&str, Option<&str>) {
    if let Some(rest) = t.strip_prefix('[')
        && let Some((h, tail)) = rest.split_once(']')
    {
        return (h, tail.strip_prefix(':'));
    }
    if t.matches(':').count() == 1 {
        let (h, p) = t.split_once(':').unwrap_or((t, ""));
        return (h, Some(p));
    }
    (t, None)
}

/// A PEM document holding at least one certificate.
pub fn pem_cert(v: &Value) -> Result<(), String> {
    let p = s(v);
    if p.contains("-----BEGIN CERTIFICATE-----") && p.contains("-----END CERTIFICATE-----") {
        pem_body_ok(p, "CERTIFICATE")
    } else {
        Err("invalid certificate: could not parse PEM certificate".into())
    }
}

/// A PEM private key (PKCS#8, PKCS#1 or SEC1).
pub fn pem_key(v: &Value) -> Result<(), String> {
    let p = s(v);
    for label in ["PRIVATE KEY", "RSA PRIVATE KEY", "EC PRIVATE KEY"] {
        if p.contains(&format!("-----BEGIN {label}-----")) {
            return pem_body_ok(p, label)
                .map_err(|_| "invalid key: could not parse PEM key".into());
        }
    }
    Err("invalid key: could not parse PEM key".into())
}

/// A PEM document whose first certificate parses as X.509 (Kong's
/// `typedefs.certificate`, which ca_certificates uses).
pub fn x509_cert(v: &Value) -> Result<(), String> {
    super::x509::inspect(s(v))
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Kong's ca_certificates entity check, in Kong's order and words: one
/// certificate, not expired, a CA. Kong reports these on the entity, not
/// on `cert`.
pub fn ca_certificate(v: &Map<String, Value>) -> Result<(), FieldErrors> {
    let pem = v.get("cert").and_then(Value::as_str).unwrap_or_default();
    let facts = super::x509::inspect(pem).map_err(|e| field_error("cert", e.to_string()))?;
    if facts.count > 1 {
        return Err(entity_error("please submit only one certificate at a time"));
    }
    if facts.not_after < chrono::Utc::now().timestamp() {
        return Err(entity_error(
            "certificate expired, \"Not After\" time is in the past",
        ));
    }
    if !facts.ca {
        return Err(entity_error(
            "certificate does not appear to be a CA because it is missing the \"CA\" basic constraint",
        ));
    }
    Ok(())
}

fn pem_body_ok(pem: &str, label: &str) -> Result<(), String> {
    use base64::Engine;
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let start = pem.find(&begin).ok_or("missing PEM header")? + begin.len();
    let stop = pem[start..].find(&end).ok_or("missing PEM footer")? + start;
    let body: String = pem[start..stop]
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    match base64::engine::general_purpose::STANDARD.decode(body) {
        Ok(der) if !der.is_empty() => Ok(()),
        _ => Err(format!(
            "invalid {}: could not parse PEM",
            label.to_lowercase()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn hosts_and_paths() {
        assert!(wildcard_host(&json!("*.example.com")).is_ok());
        assert!(wildcard_host(&json!("example.*")).is_ok());
        assert!(wildcard_host(&json!("api.example.com:8080")).is_ok());
        assert!(wildcard_host(&json!("a.*.com")).is_err());
        assert!(route_path(&json!("/a/b")).is_ok());
        assert!(route_path(&json!("~/users/\\d+$")).is_ok());
        assert!(route_path(&json!("~/users/(")).is_err());
        // The size Envoy checks is that of the emitted `(?:<path>).*`,
        // against the fleet's limit (4096).
        assert!(route_path(&json!("~/a{1000}b{1000}c{1000}d{1000}e{89}")).is_ok());
        let e = route_path(&json!("~/a{1000}b{1000}c{1000}d{1000}e{90}")).unwrap_err();
        assert!(
            e.contains("RE2 program size of 4097 > max program size of 4096"),
            "{e}"
        );
        assert!(route_path(&json!("users")).is_err());
        assert!(target(&json!("10.0.0.1:80")).is_ok());
        assert!(target(&json!("example.com")).is_ok());
        assert!(target(&json!("example.com:0")).is_err());
        assert!(target(&json!("[::1]:8080")).is_ok());
        assert!(name(&json!("my-svc_1.v2~x")).is_ok());
        assert!(name(&json!("bad name")).is_err());
    }
}
