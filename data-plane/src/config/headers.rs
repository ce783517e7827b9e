//! Header mutations (`request_headers_to_add/remove`,
//! `response_headers_to_add/remove`) with Envoy's `HeaderParser` semantics.
//!
//! Each level (route configuration, virtual host, route) is one stage;
//! a stage removes first, then evaluates every addition against the headers
//! as they are after the removals (so ADD_IF_ABSENT and OVERWRITE_IF_EXISTS
//! do not see this stage's own additions), then overwrites, then appends.
//! Stages run from the most specific level to the least specific, so the
//! route configuration's mutations win, unless the route configuration sets
//! `most_specific_header_mutations_wins`.

use envoy_types::pb::envoy::config::core::v3::{
    HeaderValueOption, header_value_option::HeaderAppendAction,
};
use http::{HeaderMap, HeaderName, HeaderValue};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AppendAction {
    /// Add a value (another one if the header exists).
    AppendIfExistsOrAdd,
    /// Add only if the header is absent.
    AddIfAbsent,
    /// Replace all values, or add.
    OverwriteIfExistsOrAdd,
    /// Replace all values only if the header exists.
    OverwriteIfExists,
}

#[derive(Clone, Debug)]
pub struct HeaderAdd {
    pub name: HeaderName,
    pub value: HeaderValue,
    pub action: AppendAction,
    /// An empty value is skipped unless this is set.
    pub keep_empty_value: bool,
}

/// The mutations of one level.
#[derive(Clone, Debug, Default)]
pub struct HeaderStage {
    pub remove: Vec<HeaderName>,
    pub add: Vec<HeaderAdd>,
}

/// All stages, in the order they apply.
#[derive(Clone, Debug, Default)]
pub struct HeaderMutations {
    pub stages: Vec<HeaderStage>,
}

impl HeaderMutations {
    pub fn is_empty(&self) -> bool {
        self.stages.is_empty()
    }

    pub fn apply(&self, h: &mut HeaderMap) {
        for s in &self.stages {
            s.apply(h);
        }
    }
}

impl HeaderStage {
    pub fn apply(&self, h: &mut HeaderMap) {
        for n in &self.remove {
            h.remove(n);
        }
        // Decide every entry against the headers as they are now.
        let decide = |a: &HeaderAdd, h: &HeaderMap| -> u8 {
            if a.value.is_empty() && !a.keep_empty_value {
                return 0;
            }
            match a.action {
                AppendAction::AppendIfExistsOrAdd => 1,
                AppendAction::AddIfAbsent if !h.contains_key(&a.name) => 1,
                AppendAction::AddIfAbsent => 0,
                AppendAction::OverwriteIfExists if !h.contains_key(&a.name) => 0,
                AppendAction::OverwriteIfExists | AppendAction::OverwriteIfExistsOrAdd => 2,
            }
        };
        let mut small = [0u8; 32];
        let mut big = Vec::new();
        let decisions: &mut [u8] = if self.add.len() <= small.len() {
            &mut small[..self.add.len()]
        } else {
            big.resize(self.add.len(), 0);
            &mut big
        };
        for (d, a) in decisions.iter_mut().zip(&self.add) {
            *d = decide(a, h);
        }
        for (d, a) in decisions.iter().zip(&self.add) {
            if *d == 2 {
                h.insert(a.name.clone(), a.value.clone());
            }
        }
        for (d, a) in decisions.iter().zip(&self.add) {
            if *d == 1 {
                h.append(a.name.clone(), a.value.clone());
            }
        }
    }
}

/// Compiles one level's lists; None when both are empty.
pub(crate) fn compile_stage(
    add: &[HeaderValueOption],
    remove: &[String],
    field: &str,
) -> Result<Option<HeaderStage>, String> {
    if add.is_empty() && remove.is_empty() {
        return Ok(None);
    }
    if add.len() > 1000 || remove.len() > 1000 {
        return Err(format!(
            "{field}: at most 1000 headers may be added or removed"
        ));
    }
    let mut stage = HeaderStage::default();
    for r in remove {
        if r.starts_with(':') || r.eq_ignore_ascii_case("host") {
            return Err(format!(
                "{field}: :-prefixed or host headers may not be removed ({r:?})"
            ));
        }
        stage.remove.push(super::header_name(r, field)?);
    }
    for o in add {
        stage.add.push(compile_add(o, field)?);
    }
    Ok(Some(stage))
}

pub(crate) fn compile_add(o: &HeaderValueOption, field: &str) -> Result<HeaderAdd, String> {
    let Some(hv) = &o.header else {
        return Err(format!("{field}: header is required"));
    };
    let key = &hv.key;
    if key.starts_with(':') || key.eq_ignore_ascii_case("host") {
        return Err(format!(
            "{field}: :-prefixed or host headers may not be modified ({key:?})"
        ));
    }
    let name = super::header_name(key, field)?;
    let action = match &o.append {
        Some(append) => {
            if o.append_action != HeaderAppendAction::AppendIfExistsOrAdd as i32 {
                return Err(format!(
                    "{field}: both append and append_action are set and it's not allowed"
                ));
            }
            if append.value {
                AppendAction::AppendIfExistsOrAdd
            } else {
                AppendAction::OverwriteIfExistsOrAdd
            }
        }
        None => match HeaderAppendAction::try_from(o.append_action) {
            Ok(HeaderAppendAction::AppendIfExistsOrAdd) => AppendAction::AppendIfExistsOrAdd,
            Ok(HeaderAppendAction::AddIfAbsent) => AppendAction::AddIfAbsent,
            Ok(HeaderAppendAction::OverwriteIfExistsOrAdd) => AppendAction::OverwriteIfExistsOrAdd,
            Ok(HeaderAppendAction::OverwriteIfExists) => AppendAction::OverwriteIfExists,
            Err(_) => {
                return Err(format!(
                    "{field}: unknown append_action {}",
                    o.append_action
                ));
            }
        },
    };
    let raw: &[u8] = if !hv.raw_value.is_empty() {
        &hv.raw_value
    } else {
        hv.value.as_bytes()
    };
    super::check_header_value(raw, field)?;
    let literal = unescape_format(raw).map_err(|e| format!("{field} (header {key:?}): {e}"))?;
    let value = HeaderValue::from_bytes(&literal)
        .map_err(|_| format!("{field}: invalid value for header {key:?}"))?;
    Ok(HeaderAdd {
        name,
        value,
        action,
        keep_empty_value: o.keep_empty_value,
    })
}

/// Header values are Envoy format strings: `%%` is a literal `%` and any
/// other `%` starts a command operator (`%REQ(x)%`, `%DOWNSTREAM_REMOTE_ADDRESS%`,
/// ...). Only literal values are supported.
fn unescape_format(v: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(v.len());
    let mut i = 0;
    while i < v.len() {
        if v[i] == b'%' {
            if v.get(i + 1) == Some(&b'%') {
                out.push(b'%');
                i += 2;
                continue;
            }
            let rest = String::from_utf8_lossy(&v[i..]);
            let cmd: String = rest.chars().take(40).collect();
            return Err(format!(
                "header value command operators are not supported (at {cmd:?}); write %% for a literal %"
            ));
        }
        out.push(v[i]);
        i += 1;
    }
    Ok(out)
}
