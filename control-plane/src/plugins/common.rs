//! Validators and entity checks shared by several plugin schemas, each
//! mirroring a Kong typedef or entity checker so the messages match Kong's.

use crate::schema::{FieldErrors, entity_error};
use serde_json::{Map, Value};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

// ---- entity checks -------------------------------------------------------

/// Kong's `is_nonempty`: null, absent, "", [] and {} are all empty.
pub fn is_nonempty(v: Option<&Value>) -> bool {
    match v {
        None | Some(Value::Null) => false,
        Some(Value::String(s)) => !s.is_empty(),
        Some(Value::Array(a)) => !a.is_empty(),
        Some(Value::Object(o)) => !o.is_empty(),
        Some(_) => true,
    }
}

/// Kong's `quoted_list`: `'a', 'b'`.
pub fn quoted(names: &[&str]) -> String {
    names
        .iter()
        .map(|n| format!("'{n}'"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Kong's `at_least_one_of` over config fields; names are reported with the
/// `config.` prefix because Kong runs these checks on the plugin entity.
pub fn at_least_one_of(cfg: &Map<String, Value>, names: &[&str]) -> Option<String> {
    if names.iter().any(|n| is_nonempty(cfg.get(*n))) {
        return None;
    }
    let full: Vec<String> = names.iter().map(|n| format!("config.{n}")).collect();
    let full: Vec<&str> = full.iter().map(String::as_str).collect();
    Some(format!(
        "at least one of these fields must be non-empty: {}",
        quoted(&full)
    ))
}

/// Kong's `only_one_of` message, with the `config.` prefix.
pub fn only_one_of_msg(names: &[&str]) -> String {
    let full: Vec<String> = names.iter().map(|n| format!("config.{n}")).collect();
    let full: Vec<&str> = full.iter().map(String::as_str).collect();
    format!(
        "exactly one of these fields must be non-empty: {}",
        quoted(&full)
    )
}

/// What Kong's `conditional` checker adds to `@entity` next to the error it
/// sets on the `then_field`.
pub fn conditional(if_field: &str, then_errors: FieldErrors) -> FieldErrors {
    let mut e = then_errors;
    let msg = format!("failed conditional validation given value of field 'config.{if_field}'");
    e.insert("@entity".into(), Value::Array(vec![Value::String(msg)]));
    e
}

/// Entity errors from a list of messages; `Ok` when the list is empty.
pub fn entity_errors(msgs: Vec<String>) -> Result<(), FieldErrors> {
    let mut it = msgs.into_iter();
    let Some(first) = it.next() else {
        return Ok(());
    };
    let mut e = entity_error(first);
    if let Some(Value::Array(list)) = e.get_mut("@entity") {
        list.extend(it.map(Value::String));
    }
    Err(e)
}

// ---- field validators (Kong typedefs) ------------------------------------

fn s(v: &Value) -> &str {
    v.as_str().unwrap_or_default()
}

/// Kong's `typedefs.header_name` (`kong.tools.http.validate_header_name`).
pub fn header_name(v: &Value) -> Result<(), String> {
    let name = s(v);
    if name.is_empty() {
        return Err("no header name provided".into());
    }
    if name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        Ok(())
    } else {
        Err(format!(
            "bad header name '{name}', allowed characters are A-Z, a-z, 0-9, '_', and '-'"
        ))
    }
}

/// True when `name` passes [`header_name`]; used on `name:value` pairs.
pub fn is_header_name(name: &str) -> bool {
    header_name(&Value::String(name.into())).is_ok()
}

/// Lua's `pair:match("^([^:]+):*(.-)$")` as the transformer plugins parse
/// `name:value`: the name up to the first colon, the value after the colons
/// that follow it.
pub fn split_pair(pair: &str) -> (&str, &str) {
    match pair.split_once(':') {
        Some((n, v)) => (n, v.trim_start_matches(':')),
        None => (pair, ""),
    }
}

/// Kong's `match = "^[^:]+:.*$"`.
pub fn colon_pair(v: &Value) -> Result<(), String> {
    let pair = s(v);
    if split_pair(pair).0.is_empty() || !pair.contains(':') {
        Err(format!("invalid value: {pair}"))
    } else {
        Ok(())
    }
}

/// The transformers' rename.headers: `old:new`, both valid header names.
pub fn header_rename(v: &Value) -> Result<(), String> {
    colon_pair(v)?;
    let (old, new) = split_pair(s(v));
    for name in [old, new] {
        if !is_header_name(name) {
            return Err(format!("'{name}' is not a valid header"));
        }
    }
    Ok(())
}

/// Kong's `gt = 0` validator.
pub fn gt_zero(v: &Value) -> Result<(), String> {
    match v.as_f64() {
        Some(n) if n > 0.0 => Ok(()),
        _ => Err("value must be greater than 0".into()),
    }
}

/// Kong's `typedefs.ip_or_cidr`, IPv4 and IPv6.
pub fn ip_or_cidr(v: &Value) -> Result<(), String> {
    let t = s(v);
    if t.parse::<IpAddr>().is_ok() || t.parse::<ipnet::IpNet>().is_ok() {
        Ok(())
    } else {
        Err(format!("invalid ip or cidr range: '{t}'"))
    }
}

enum HostKind {
    Ip,
    Name,
}

/// Kong's `tools.ip.normalize_ip`: classifies a host and says whether it
/// carried a port. `Err` means the text is no host at all.
fn parse_host(h: &str) -> Result<(HostKind, bool), ()> {
    let colons = h.matches(':').count();
    if colons > 1 {
        // IPv6, bare or as `[addr]` with an optional `:port`.
        if let Some(rest) = h.strip_prefix('[') {
            let (addr, tail) = rest.split_once(']').ok_or(())?;
            addr.parse::<Ipv6Addr>().map_err(|_| ())?;
            let is_port = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
            return match tail {
                "" => Ok((HostKind::Ip, false)),
                t if t.strip_prefix(':').is_some_and(is_port) => Ok((HostKind::Ip, true)),
                _ => Err(()),
            };
        }
        return h
            .parse::<Ipv6Addr>()
            .map(|_| (HostKind::Ip, false))
            .map_err(|_| ());
    }
    let (name, port) = match h.rsplit_once(':') {
        Some((n, p)) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => (n, true),
        Some(_) => return Err(()),
        None => (h, false),
    };
    if !name.is_empty() && name.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return name
            .parse::<Ipv4Addr>()
            .map(|_| (HostKind::Ip, port))
            .map_err(|_| ());
    }
    let ok_chars = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'));
    let segs: Vec<&str> = name.split('.').collect();
    // No segment may end in a dash; only the last (FQDN dot) may be empty.
    let ok_segs = segs
        .iter()
        .enumerate()
        .all(|(i, seg)| !seg.ends_with('-') && (!seg.is_empty() || i == segs.len() - 1));
    if ok_chars && ok_segs {
        Ok((HostKind::Name, port))
    } else {
        Err(())
    }
}

/// Kong's `typedefs.host`: a name or an IP, without a port.
pub fn host(v: &Value) -> Result<(), String> {
    match parse_host(s(v)) {
        Err(()) => Err(format!("invalid value: {}", s(v))),
        Ok((_, true)) => Err("must not have a port".into()),
        Ok(_) => Ok(()),
    }
}

/// Kong's `typedefs.sni`: a host name, not an IP, without a port.
pub fn sni(v: &Value) -> Result<(), String> {
    match parse_host(s(v)) {
        Err(()) => Err(format!("invalid value: {}", s(v))),
        Ok((HostKind::Ip, _)) => Err("must not be an IP".into()),
        Ok((_, true)) => Err("must not have a port".into()),
        Ok(_) => Ok(()),
    }
}

/// Kong's `typedefs.path`: starts with `/`, no empty segment, RFC 3986
/// characters only, and well-formed percent-encoding.
pub fn path(v: &Value) -> Result<(), String> {
    let p = s(v);
    if !p.starts_with('/') {
        return Err("should start with: /".into());
    }
    if p.contains("//") {
        return Err("must not have empty segments".into());
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || ".-_~/%:@!$&'()*+,;=".contains(c);
    if !p.chars().all(allowed) {
        return Err(format!(
            "invalid path: '{p}' (characters outside of the reserved list of RFC 3986 found)"
        ));
    }
    let b = p.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let ok =
                b.len() > i + 2 && b[i + 1].is_ascii_hexdigit() && b[i + 2].is_ascii_hexdigit();
            if !ok {
                let bad: String = p[i..].chars().take(3).collect();
                return Err(format!("invalid url-encoded value: '{bad}'"));
            }
            i += 3;
        } else {
            i += 1;
        }
    }
    Ok(())
}

/// An absolute `http`/`https` URL with a host (Kong's `typedefs.url`
/// messages, narrowed to the schemes a proxy can fetch).
pub fn http_url(v: &Value) -> Result<(), String> {
    let u = url::Url::parse(s(v)).map_err(|e| format!("could not parse url. {e}"))?;
    if !matches!(u.scheme(), "http" | "https") {
        return Err("scheme must be http or https".into());
    }
    if u.host_str().is_none_or(str::is_empty) {
        return Err("missing host in url".into());
    }
    Ok(())
}

/// Kong's `typedefs.queue`: how a log plugin batches and retries.
pub fn queue() -> crate::schema::Record {
    use crate::schema::{Field, Record};
    use serde_json::json;
    let seconds = || Field::number();
    Record::new()
        .field(
            "max_batch_size",
            Field::integer().default(json!(1)).between(1.0, 1_000_000.0),
        )
        .field(
            "max_coalescing_delay",
            seconds().default(json!(1)).between(0.0, 3600.0),
        )
        .field(
            "max_entries",
            Field::integer()
                .default(json!(10000))
                .between(1.0, 1_000_000.0),
        )
        .field("max_bytes", Field::integer())
        .field("max_retry_time", seconds().default(json!(60)))
        .field(
            "initial_retry_delay",
            seconds().default(json!(0.01)).between(0.001, 1_000_000.0),
        )
        .field(
            "max_retry_delay",
            seconds().default(json!(60)).between(0.001, 1_000_000.0),
        )
        .field(
            "concurrency_limit",
            Field::integer().default(json!(1)).one_of_ints(&[-1, 1]),
        )
}

/// Kong's `custom_fields_by_lua`: Lua run in the log phase. gantry-proxy
/// runs no Lua, so only an empty one is taken (refused rather than left
/// out: the operator's fields would silently be missing).
pub fn no_lua(v: &Value) -> Result<(), String> {
    match v {
        Value::Object(o) if o.is_empty() => Ok(()),
        _ => Err("custom_fields_by_lua is not supported: gantry-proxy runs no Lua".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn hosts_follow_kong() {
        for ok in [
            "example.com",
            "a_b.example.com.",
            "10.0.0.1",
            "::1",
            "[::1]",
        ] {
            assert!(host(&json!(ok)).is_ok(), "{ok}");
        }
        assert_eq!(
            host(&json!("example.com:80")).unwrap_err(),
            "must not have a port"
        );
        assert_eq!(
            host(&json!("bad-.com")).unwrap_err(),
            "invalid value: bad-.com"
        );
        assert_eq!(
            host(&json!("300.1.1.1")).unwrap_err(),
            "invalid value: 300.1.1.1"
        );
        assert_eq!(sni(&json!("10.0.0.1")).unwrap_err(), "must not be an IP");
        assert!(sni(&json!("redis.internal")).is_ok());
    }

    #[test]
    fn paths_and_headers_follow_kong() {
        assert!(path(&json!("/a/b%20c")).is_ok());
        assert_eq!(path(&json!("a")).unwrap_err(), "should start with: /");
        assert_eq!(
            path(&json!("/a//b")).unwrap_err(),
            "must not have empty segments"
        );
        assert_eq!(
            path(&json!("/a%zz")).unwrap_err(),
            "invalid url-encoded value: '%zz'"
        );
        assert!(
            path(&json!("/a b"))
                .unwrap_err()
                .starts_with("invalid path: '/a b'")
        );
        assert!(header_name(&json!("X-Api_Key1")).is_ok());
        assert_eq!(
            header_name(&json!("x y")).unwrap_err(),
            "bad header name 'x y', allowed characters are A-Z, a-z, 0-9, '_', and '-'"
        );
    }
}
