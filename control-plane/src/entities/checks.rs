//! Value checks shared by entity schemas (Kong's typedefs).

use crate::schema::{FieldErrors, entity_error, field_error};
use serde_json::{Map, Value};

fn s(v: &Value) -> &str {
    v.as_str().unwrap_or_default()
}

// The patterns below are the checks themselves (each check below runs its
// pattern through `schema::matches`) and are published as they are in the
// OpenAPI document, so the document and the validators cannot disagree.
// They use only what ECMA-262, Python's `re` and Rust's `regex` read alike:
// ASCII classes, groups, alternation, bounded repetition, `^` and `$`.

/// Kong's `utf8_name` typedef (services, routes, plugin instances): ASCII
/// letters, digits, `.`, `-`, `_` and `~`, and any character beyond ASCII.
pub const NAME: &str = "^(?:[A-Za-z0-9._~-]|[^\\x00-\\x7F])+$";
/// What `HeaderValue` takes: no control character but tab.
pub const HEADER_SAFE: &str = "^[^\\x00-\\x08\\x0a-\\x1f\\x7f]*$";
/// A UUID as Kong's `is_valid_uuid` reads it: hyphenated hex.
pub const UUID: &str =
    "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$";
/// A tag: printable ASCII but `,` and `/`.
pub const TAG: &str = "^[\\x21-\\x2b\\x2d\\x2e\\x30-\\x7e]+$";
/// An HTTP method token as routes take it.
pub const METHOD: &str = "^[A-Z]+$";
/// A header name: an RFC 9110 token.
pub const HEADER_NAME: &str = "^[A-Za-z0-9!#$%&'*+.^_`|~-]+$";

/// One DNS label (underscores allowed, no `-` at either end), a host name
/// of labels with an optional final dot, and an IPv6 address; an IPv4
/// address is a host name of digit labels. Composed into the patterns below.
macro_rules! label {
    () => {
        "[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
    };
}
macro_rules! hostname {
    () => {
        concat!(label!(), "(?:\\.", label!(), ")*\\.?")
    };
}
macro_rules! ipv6 {
    () => {
        concat!(
            "(?:(?:[0-9A-Fa-f]{1,4}:){7}[0-9A-Fa-f]{1,4}",
            "|(?:[0-9A-Fa-f]{1,4}:){1,7}:",
            "|(?:[0-9A-Fa-f]{1,4}:){1,6}:[0-9A-Fa-f]{1,4}",
            "|(?:[0-9A-Fa-f]{1,4}:){1,5}(?::[0-9A-Fa-f]{1,4}){1,2}",
            "|(?:[0-9A-Fa-f]{1,4}:){1,4}(?::[0-9A-Fa-f]{1,4}){1,3}",
            "|(?:[0-9A-Fa-f]{1,4}:){1,3}(?::[0-9A-Fa-f]{1,4}){1,4}",
            "|(?:[0-9A-Fa-f]{1,4}:){1,2}(?::[0-9A-Fa-f]{1,4}){1,5}",
            "|[0-9A-Fa-f]{1,4}:(?::[0-9A-Fa-f]{1,4}){1,6}",
            "|:(?:(?::[0-9A-Fa-f]{1,4}){1,7}|:))"
        )
    };
}
/// A port, 0 to 65535, without leading zeros beyond four digits.
macro_rules! port {
    () => {
        "(?:[0-9]{1,4}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])"
    };
}
/// A port from 1.
macro_rules! port1 {
    () => {
        "(?:[1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])"
    };
}

/// Hosts are at most this long (a DNS name's limit); with a `:port`, six more.
pub const HOST_MAX: usize = 253;
pub const HOST_PORT_MAX: usize = HOST_MAX + 6;
/// A host: a host name, an IPv4 or an IPv6 address (bare or in brackets), no port.
pub const HOST: &str = concat!("^(?:", hostname!(), "|", ipv6!(), "|\\[", ipv6!(), "\\])$");
/// A route host: a host, or a host name with `*` as its first or last
/// label; host names and bracketed IPv6 may carry a `:port`.
pub const WILDCARD_HOST: &str = concat!(
    "^(?:(?:\\*\\.",
    hostname!(),
    "|",
    hostname!(),
    "\\.\\*|",
    hostname!(),
    "|\\[",
    ipv6!(),
    "\\])(?::",
    port!(),
    ")?|",
    ipv6!(),
    ")$"
);
/// An SNI: a host name (optionally `*.`) whose last label is not all digits
/// (so no IPv4 address), no port.
pub const SNI: &str = concat!(
    "^(?:\\*\\.)?(?:",
    label!(),
    "\\.)*[A-Za-z0-9_-]*[A-Za-z_-][A-Za-z0-9_-]*\\.?$"
);
/// A target: a host with an optional port from 1 (IPv6 in brackets to carry one).
pub const TARGET: &str = concat!(
    "^(?:(?:",
    hostname!(),
    "|\\[",
    ipv6!(),
    "\\])(?::",
    port1!(),
    ")?|",
    ipv6!(),
    ")$"
);
/// One path character of RFC 3986 (`pchar`), percent-encoding well formed.
macro_rules! pchar {
    () => {
        "(?:[A-Za-z0-9._~!$&'()*+,;=:@-]|%[0-9A-Fa-f]{2})"
    };
}
/// A service path (Kong's `typedefs.path`): absolute, RFC 3986 characters,
/// no empty segment.
pub const SERVICE_PATH: &str = concat!("^/(?:", pchar!(), "+/)*", pchar!(), "*$");
/// A route path: a service path (a prefix), or `~/` and an RE2 expression.
/// The pattern cannot say that the expression must compile.
pub const ROUTE_PATH: &str = concat!("^(?:/(?:", pchar!(), "+/)*", pchar!(), "*|~/.*)$");

/// A host in a service's `url`: a host name whose last label is not all
/// digits (a URL parser reads such a name as an IPv4 number; `pool0` is a
/// name), a dotted IPv4 address or a bracketed IPv6 one. The last label
/// has a letter or `_` (at most 63 characters either side counted apart,
/// so a bounded pattern can say it), or an inner `-`.
macro_rules! url_host {
    () => {
        concat!(
            "(?:(?:",
            label!(),
            "\\.)*(?:[A-Za-z0-9_]{0,30}[A-Za-z_][A-Za-z0-9_]{0,32}",
            "|[A-Za-z0-9_][A-Za-z0-9_-]{0,30}-[A-Za-z0-9_-]{0,29}[A-Za-z0-9_])\\.?",
            "|(?:(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])\\.){3}(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])",
            "|\\[",
            ipv6!(),
            "\\])"
        )
    };
}
/// A service's `url` shorthand: a scheme among the service protocols, a
/// host, an optional port, and a path only for http and https. No user
/// info, query or fragment.
pub const URL: &str = concat!(
    "^(?:https?://",
    url_host!(),
    "(?::",
    port!(),
    ")?(?:/(?:",
    pchar!(),
    "+/)*",
    pchar!(),
    "*)?|(?:grpcs?|tcp|tls|udp|wss?)://",
    url_host!(),
    "(?::",
    port!(),
    ")?)$"
);

fn matches(pattern: &'static str, v: &Value) -> bool {
    crate::schema::matches(pattern, s(v))
}

/// Kong's `name` typedef.
pub fn name(v: &Value) -> Result<(), String> {
    if matches(NAME, v) {
        Ok(())
    } else {
        Err(format!(
            "invalid value '{}': the only accepted ascii characters are alphanumerics or ., -, _, and ~",
            s(v)
        ))
    }
}

/// A value gantry-proxy sends upstream in a header (a consumer's username
/// in `X-Consumer-Username`): no control characters such as CR or LF.
/// Stricter than Kong, which stores any string; see docs/admin-api.md.
pub fn header_safe(v: &Value) -> Result<(), String> {
    if matches(HEADER_SAFE, v) && gantry_proxy::plugins::is_header_safe(s(v)) {
        Ok(())
    } else {
        Err("must not contain control characters (it is sent upstream in a header)".into())
    }
}

/// Whether `s` is a UUID as ids are written (hyphenated hex).
pub fn is_uuid(s: &str) -> bool {
    crate::schema::matches(UUID, s)
}

pub fn uuid(v: &Value) -> Result<(), String> {
    if is_uuid(s(v)) {
        Ok(())
    } else {
        Err("expected a valid UUID".into())
    }
}

/// A tag: printable ASCII without `,` or `/` (they separate tag queries).
pub fn tag(v: &Value) -> Result<(), String> {
    if matches(TAG, v) {
        Ok(())
    } else {
        Err("invalid tag: must be printable ASCII (except `,` and `/`) or valid UTF-8".into())
    }
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
    if matches(HOST, v) {
        Ok(())
    } else {
        Err(format!("invalid value: {h}"))
    }
}

/// A route host: a hostname with at most one `*` as its first or last
/// label, optionally with a port.
pub fn wildcard_host(v: &Value) -> Result<(), String> {
    let raw = s(v);
    if matches(WILDCARD_HOST, v) {
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
    if h.contains(':') {
        return Err("must not have a port".into());
    }
    if matches(SNI, v) {
        Ok(())
    } else {
        Err(format!("invalid value: {h}"))
    }
}

/// A route path: `/...` for a prefix, `~/...` for a regex that must compile.
pub fn route_path(v: &Value) -> Result<(), String> {
    let p = s(v);
    if let Some(re) = p.strip_prefix('~') {
        if !re.starts_with('/') {
            return Err("should start with: / (fixed path) or ~/ (regex path)".into());
        }
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
    if !matches(ROUTE_PATH, v) {
        return Err(format!(
            "invalid path: '{p}' (characters outside of the reserved list of RFC 3986 found)"
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
    if p.contains("//") {
        return Err("must not have empty segments".into());
    }
    if !matches(SERVICE_PATH, v) {
        return Err(format!(
            "invalid path: '{p}' (characters outside of the reserved list of RFC 3986 found)"
        ));
    }
    Ok(())
}

/// An HTTP method token: upper-case letters.
pub fn method(v: &Value) -> Result<(), String> {
    if matches(METHOD, v) {
        Ok(())
    } else {
        Err(format!("invalid value: {}", s(v)))
    }
}

/// A header name as a token.
pub fn header_name(v: &Value) -> Result<(), String> {
    let h = s(v);
    if matches(HEADER_NAME, v) {
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
    let (_, port) = split_host_port(t);
    if let Some(p) = port
        && p.parse::<u16>().map(|p| p == 0).unwrap_or(true)
    {
        return Err(format!("invalid port number: {p}"));
    }
    if matches(TARGET, v) {
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
        // Kong's utf8_name: any character beyond ASCII.
        assert!(name(&json!("café-名前")).is_ok());
        assert!(name(&json!("a/b")).is_err());
        assert!(name(&json!("bad name")).is_err());
    }

    #[test]
    fn patterns_are_the_checks() {
        for ok in [
            "example.com",
            "a_b.example.com.",
            "10.0.0.1",
            "::1",
            "[::1]",
            "fe80::1:2",
        ] {
            assert!(host(&json!(ok)).is_ok(), "{ok}");
        }
        for bad in [
            "-a.com",
            "a..com",
            "ex ample",
            "a:80",
            "[::1]:80",
            "1:2:3:4:5:6:7:8:9",
        ] {
            assert!(host(&json!(bad)).is_err(), "{bad}");
        }
        assert!(wildcard_host(&json!("[::1]:8080")).is_ok());
        assert!(wildcard_host(&json!("a.com:+80")).is_err());
        assert!(sni(&json!("*.example.com")).is_ok());
        assert!(sni(&json!("1.2.3.999")).is_err());
        assert!(target(&json!("[::1]")).is_ok());
        assert!(uuid(&json!("{6f1c0a52-0b43-4e4f-9a39-5a7c1d1b8a9e}")).is_err());
        assert!(uuid(&json!("6f1c0a52-0b43-4e4f-9a39-5a7c1d1b8a9e")).is_ok());
        assert!(service_path(&json!("/a/b%2F;c=1")).is_ok());
        assert!(service_path(&json!("/a\\b")).is_err());
        assert!(
            route_path(&json!("~api")).is_err(),
            "a regex path starts ~/"
        );
        for ok in [
            "http://example.com/a",
            "https://[::1]:8443",
            "tcp://10.0.0.1:9000",
            "http://a.b",
            "http://pool0:8080",
            "http://orders-v2.svc-1:80/api",
            "http://1-2",
        ] {
            assert!(crate::schema::matches(URL, ok), "{ok}");
        }
        for bad in [
            "tcp://h/x",
            "http://u@h",
            "http://h/?q",
            "http://1.2.3.999",
            "http://123",
            "http://a.-b",
            "HTTP://h",
        ] {
            assert!(!crate::schema::matches(URL, bad), "{bad}");
        }
    }
}
