//! Header, string and query parameter matchers with Envoy's semantics
//! (`Http::HeaderUtility::HeaderData*`, `Matchers::StringMatcherImpl`,
//! `ConfigUtility::QueryParameterMatcher`).

use crate::re2::Re2;
use envoy_types::pb::envoy::config::route::v3::{
    HeaderMatcher as PbHeaderMatcher, QueryParameterMatcher as PbQueryMatcher,
    header_matcher::HeaderMatchSpecifier, query_parameter_matcher::QueryParameterMatchSpecifier,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{
    StringMatcher as PbStringMatcher, string_matcher::MatchPattern,
};
use http::{HeaderMap, HeaderName};
use std::borrow::Cow;

/// Where a header matcher reads its value. Envoy keeps the request line in
/// pseudo-headers; HTTP/1's `Host` becomes `:authority`, so a matcher on
/// `host` never finds a value in Envoy (it must name `:authority`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HeaderSource {
    Method,
    Authority,
    /// `:path`: the path with its query string.
    Path,
    Scheme,
    /// `:status` (response matchers, e.g. retriable_headers).
    Status,
    Named(HeaderName),
    /// A name that can never be present (`host`, unknown pseudo-headers).
    Absent,
}

impl HeaderSource {
    pub(crate) fn parse(name: &str, field: &str) -> Result<HeaderSource, String> {
        if name.is_empty() {
            return Err(format!("{field}: header name must not be empty"));
        }
        let lower = name.to_ascii_lowercase();
        Ok(match lower.as_str() {
            ":method" => HeaderSource::Method,
            ":authority" => HeaderSource::Authority,
            ":path" => HeaderSource::Path,
            ":scheme" => HeaderSource::Scheme,
            ":status" => HeaderSource::Status,
            "host" => HeaderSource::Absent,
            s if s.starts_with(':') => HeaderSource::Absent,
            _ => {
                if name.bytes().any(|b| matches!(b, 0 | b'\r' | b'\n')) {
                    return Err(format!("{field}: invalid header name {name:?}"));
                }
                // A name Envoy accepts but no request can carry here (not an
                // HTTP token) never matches.
                match http::HeaderName::from_bytes(lower.as_bytes()) {
                    Ok(n) => HeaderSource::Named(n),
                    Err(_) => HeaderSource::Absent,
                }
            }
        })
    }
}

/// What a matcher can look at: the request line and headers, or a response.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Ctx<'a> {
    pub method: Option<&'a str>,
    pub authority: Option<&'a str>,
    pub path: Option<&'a str>,
    pub scheme: Option<&'a str>,
    pub status: Option<u16>,
    pub headers: Option<&'a HeaderMap>,
}

impl<'a> Ctx<'a> {
    /// All values of a header joined with `,` (Envoy's
    /// `getAllOfHeaderAsString`); None when absent.
    pub fn value(&self, src: &HeaderSource) -> Option<Cow<'a, [u8]>> {
        let s = |v: Option<&'a str>| v.map(|v| Cow::Borrowed(v.as_bytes()));
        match src {
            HeaderSource::Method => s(self.method),
            HeaderSource::Authority => s(self.authority),
            HeaderSource::Path => s(self.path),
            HeaderSource::Scheme => s(self.scheme),
            HeaderSource::Status => self.status.map(|c| Cow::Owned(c.to_string().into_bytes())),
            HeaderSource::Absent => None,
            HeaderSource::Named(n) => {
                let h = self.headers?;
                let mut it = h.get_all(n).iter();
                let first = it.next()?;
                match it.next() {
                    None => Some(Cow::Borrowed(first.as_bytes())),
                    Some(second) => {
                        let mut v = first.as_bytes().to_vec();
                        v.push(b',');
                        v.extend_from_slice(second.as_bytes());
                        for more in it {
                            v.push(b',');
                            v.extend_from_slice(more.as_bytes());
                        }
                        Some(Cow::Owned(v))
                    }
                }
            }
        }
    }

    pub fn present(&self, src: &HeaderSource) -> bool {
        match src {
            HeaderSource::Named(n) => self.headers.is_some_and(|h| h.contains_key(n)),
            other => self.value(other).is_some(),
        }
    }
}

/// `envoy.type.matcher.v3.StringMatcher`.
#[derive(Clone, Debug)]
pub enum StringMatcher {
    Exact {
        value: String,
        ignore_case: bool,
    },
    Prefix {
        value: String,
        ignore_case: bool,
    },
    Suffix {
        value: String,
        ignore_case: bool,
    },
    /// With ignore_case the value is kept lower-cased.
    Contains {
        value: String,
        ignore_case: bool,
    },
    Regex(Re2),
}

impl StringMatcher {
    pub(crate) fn compile(m: &PbStringMatcher, field: &str) -> Result<StringMatcher, String> {
        let ignore_case = m.ignore_case;
        let nonempty = |v: &str, what: &str| {
            if v.is_empty() {
                Err(format!("{field}: {what} must not be empty"))
            } else {
                Ok(v.to_string())
            }
        };
        Ok(match &m.match_pattern {
            Some(MatchPattern::Exact(v)) => StringMatcher::Exact {
                value: v.clone(),
                ignore_case,
            },
            Some(MatchPattern::Prefix(v)) => StringMatcher::Prefix {
                value: nonempty(v, "prefix")?,
                ignore_case,
            },
            Some(MatchPattern::Suffix(v)) => StringMatcher::Suffix {
                value: nonempty(v, "suffix")?,
                ignore_case,
            },
            Some(MatchPattern::Contains(v)) => StringMatcher::Contains {
                value: if ignore_case {
                    nonempty(v, "contains")?.to_ascii_lowercase()
                } else {
                    nonempty(v, "contains")?
                },
                ignore_case,
            },
            Some(MatchPattern::SafeRegex(re)) => {
                if ignore_case {
                    return Err(format!(
                        "{field}: ignore_case has no effect for safe_regex."
                    ));
                }
                StringMatcher::Regex(Re2::new(&re.regex).map_err(|e| format!("{field}: {e}"))?)
            }
            Some(MatchPattern::Custom(c)) => {
                return Err(format!(
                    "{field}: custom string matcher {:?} is not supported",
                    c.name
                ));
            }
            None => return Err(format!("{field}: a match pattern is required")),
        })
    }

    pub fn matches(&self, v: &[u8]) -> bool {
        match self {
            StringMatcher::Exact { value, ignore_case } => {
                if *ignore_case {
                    v.eq_ignore_ascii_case(value.as_bytes())
                } else {
                    v == value.as_bytes()
                }
            }
            StringMatcher::Prefix { value, ignore_case } => {
                let p = value.as_bytes();
                v.len() >= p.len()
                    && if *ignore_case {
                        v[..p.len()].eq_ignore_ascii_case(p)
                    } else {
                        &v[..p.len()] == p
                    }
            }
            StringMatcher::Suffix { value, ignore_case } => {
                let s = value.as_bytes();
                v.len() >= s.len()
                    && if *ignore_case {
                        v[v.len() - s.len()..].eq_ignore_ascii_case(s)
                    } else {
                        &v[v.len() - s.len()..] == s
                    }
            }
            StringMatcher::Contains { value, ignore_case } => {
                let n = value.as_bytes();
                if n.len() > v.len() {
                    return false;
                }
                if *ignore_case {
                    v.windows(n.len()).any(|w| w.eq_ignore_ascii_case(n))
                } else {
                    v.windows(n.len()).any(|w| w == n)
                }
            }
            StringMatcher::Regex(re) => re.full_match(v),
        }
    }
}

/// What a header matcher checks the value against.
#[derive(Clone, Debug)]
pub enum HeaderMatch {
    /// An empty expected value matches any value (Envoy's legacy exact_match).
    Exact(String),
    Regex(Re2),
    /// `[start, end)` on the value parsed as an integer.
    Range(i64, i64),
    /// Whether the header is present (true) or absent (false).
    Present(bool),
    Prefix(String),
    Suffix(String),
    Contains(String),
    String(StringMatcher),
}

/// `envoy.config.route.v3.HeaderMatcher`.
#[derive(Clone, Debug)]
pub struct HeaderMatcher {
    pub source: HeaderSource,
    pub kind: HeaderMatch,
    pub invert: bool,
    pub treat_missing_as_empty: bool,
}

impl HeaderMatcher {
    pub(crate) fn compile(h: &PbHeaderMatcher, field: &str) -> Result<HeaderMatcher, String> {
        let field = format!("{field} (header {:?})", h.name);
        let source = HeaderSource::parse(&h.name, &field)?;
        let nonempty = |v: &str, what: &str| {
            if v.is_empty() {
                Err(format!("{field}: {what} must not be empty"))
            } else {
                Ok(v.to_string())
            }
        };
        #[allow(deprecated)]
        let kind = match &h.header_match_specifier {
            Some(HeaderMatchSpecifier::ExactMatch(v)) => HeaderMatch::Exact(v.clone()),
            Some(HeaderMatchSpecifier::SafeRegexMatch(re)) => {
                HeaderMatch::Regex(Re2::new(&re.regex).map_err(|e| format!("{field}: {e}"))?)
            }
            Some(HeaderMatchSpecifier::RangeMatch(r)) => HeaderMatch::Range(r.start, r.end),
            Some(HeaderMatchSpecifier::PresentMatch(p)) => HeaderMatch::Present(*p),
            Some(HeaderMatchSpecifier::PrefixMatch(v)) => {
                HeaderMatch::Prefix(nonempty(v, "prefix_match")?)
            }
            Some(HeaderMatchSpecifier::SuffixMatch(v)) => {
                HeaderMatch::Suffix(nonempty(v, "suffix_match")?)
            }
            Some(HeaderMatchSpecifier::ContainsMatch(v)) => {
                HeaderMatch::Contains(nonempty(v, "contains_match")?)
            }
            Some(HeaderMatchSpecifier::StringMatch(sm)) => {
                HeaderMatch::String(StringMatcher::compile(sm, &field)?)
            }
            // No specifier: a presence match.
            None => HeaderMatch::Present(true),
        };
        Ok(HeaderMatcher {
            source,
            kind,
            invert: h.invert_match,
            treat_missing_as_empty: h.treat_missing_header_as_empty,
        })
    }

    pub(crate) fn matches(&self, ctx: &Ctx<'_>) -> bool {
        if let HeaderMatch::Present(want) = self.kind {
            return (ctx.present(&self.source) == want) != self.invert;
        }
        let value = match ctx.value(&self.source) {
            Some(v) => v,
            // A missing header matches nothing, inverted or not, unless
            // it is to be treated as empty.
            None if !self.treat_missing_as_empty => return false,
            None => Cow::Borrowed(&b""[..]),
        };
        // The values joined with `,` match, or, for a header sent on several
        // lines, any one line does: both seen from Envoy 1.40.
        let lines = || match (&self.source, ctx.headers) {
            (HeaderSource::Named(n), Some(h)) => {
                let all = h.get_all(n);
                all.iter().nth(1).is_some() && all.iter().any(|v| self.value_matches(v.as_bytes()))
            }
            _ => false,
        };
        (self.value_matches(&value) || lines()) != self.invert
    }

    fn value_matches(&self, v: &[u8]) -> bool {
        match &self.kind {
            HeaderMatch::Exact(e) => e.is_empty() || v == e.as_bytes(),
            HeaderMatch::Regex(re) => re.full_match(v),
            HeaderMatch::Range(start, end) => parse_i64(v).is_some_and(|n| n >= *start && n < *end),
            HeaderMatch::Present(_) => false,
            HeaderMatch::Prefix(p) => v.starts_with(p.as_bytes()),
            HeaderMatch::Suffix(s) => v.ends_with(s.as_bytes()),
            HeaderMatch::Contains(c) => {
                let c = c.as_bytes();
                c.len() <= v.len() && v.windows(c.len()).any(|w| w == c)
            }
            HeaderMatch::String(sm) => sm.matches(v),
        }
    }

    /// Matches a response (status and headers), as `retriable_headers` do.
    pub fn matches_response(&self, status: u16, headers: &HeaderMap) -> bool {
        self.matches(&Ctx {
            status: Some(status),
            headers: Some(headers),
            ..Default::default()
        })
    }
}

/// `absl::SimpleAtoi` for int64: optional surrounding ASCII whitespace and
/// sign, decimal digits, no overflow.
fn parse_i64(v: &[u8]) -> Option<i64> {
    let s = std::str::from_utf8(v).ok()?;
    let s = s.trim_matches(|c: char| c.is_ascii_whitespace());
    s.parse::<i64>().ok()
}

/// `envoy.config.route.v3.QueryParameterMatcher`: the first value of the
/// named parameter (not percent-decoded) against a string matcher, or its
/// presence.
#[derive(Clone, Debug)]
pub struct QueryParamMatcher {
    pub name: String,
    pub matcher: Option<StringMatcher>,
}

impl QueryParamMatcher {
    pub(crate) fn compile(q: &PbQueryMatcher, field: &str) -> Result<QueryParamMatcher, String> {
        if q.name.is_empty() || q.name.len() > 1024 {
            return Err(format!(
                "{field}: query parameter name must be 1 to 1024 bytes"
            ));
        }
        let field = format!("{field} (query parameter {:?})", q.name);
        let matcher = match &q.query_parameter_match_specifier {
            Some(QueryParameterMatchSpecifier::StringMatch(sm)) => {
                Some(StringMatcher::compile(sm, &field)?)
            }
            Some(QueryParameterMatchSpecifier::PresentMatch(_)) | None => None,
        };
        Ok(QueryParamMatcher {
            name: q.name.clone(),
            matcher,
        })
    }

    pub(crate) fn matches(&self, path_and_query: &str) -> bool {
        match first_query_value(path_and_query, &self.name) {
            None => false,
            Some(v) => self
                .matcher
                .as_ref()
                .is_none_or(|m| m.matches(v.as_bytes())),
        }
    }
}

/// The first value of a query parameter (`QueryParamsMulti::parseQueryString`
/// then `getFirstValue`): everything after the first `?`, split on `&`, a
/// parameter without `=` has the empty value; nothing is decoded.
pub(crate) fn first_query_value<'a>(path_and_query: &'a str, name: &str) -> Option<&'a str> {
    let (_, q) = path_and_query.split_once('?')?;
    for param in q.split('&') {
        let (k, v) = param.split_once('=').unwrap_or((param, ""));
        if k == name {
            return Some(v);
        }
    }
    None
}
