//! A small schema language for Kong-shaped entities and plugin configs.
//!
//! One description per entity or plugin drives validation (with Kong's
//! nested field-error tree), default filling, the coercion of form-encoded
//! strings, secret redaction and the OpenAPI document, so the four can
//! never disagree.

use serde_json::{Map, Value};

/// Kong's error tree: field name to message, nested object, or array of
/// per-element messages. Entity-wide messages sit under `@entity`.
pub type FieldErrors = Map<String, Value>;

/// A check over a whole record after its fields validated.
pub type Check = fn(&Map<String, Value>) -> Result<(), FieldErrors>;

/// A check over one value after its type validated; returns the message.
pub type Custom = fn(&Value) -> Result<(), String>;

#[derive(Clone)]
pub enum Ty {
    String,
    Integer,
    Number,
    Boolean,
    /// Ordered list.
    Array(Box<Field>),
    /// List whose elements must be distinct.
    Set(Box<Field>),
    /// String keys to values of one schema.
    Map(Box<Field>),
    Record(Record),
    /// A reference to another entity: `{"id": "..."}` (a bare id or name
    /// string is accepted and normalised by the entity layer).
    Foreign(&'static str),
    /// Any JSON value, checked only by `custom`.
    Json,
}

#[derive(Clone)]
pub struct Field {
    pub ty: Ty,
    pub required: bool,
    pub default: Option<Value>,
    pub one_of: Option<Vec<Value>>,
    pub between: Option<(f64, f64)>,
    pub len_min: Option<usize>,
    /// At most this many characters (strings) or items (arrays, sets,
    /// maps); unset means [`STRING_MAX`] or [`ITEMS_MAX`].
    pub len_max: Option<usize>,
    pub custom: Option<Custom>,
    /// A pattern every key of a map must match.
    pub keys: Option<&'static str>,
    /// A regular expression the string must match (searched, so anchored
    /// with `^...$`); published in the OpenAPI document as it is.
    pub pattern: Option<&'static str>,
    pub secret: bool,
    /// May hold a vault reference (`{vault://env/NAME}`) instead of a
    /// value, as Kong's `referenceable` fields.
    pub referenceable: bool,
    pub description: &'static str,
}

#[derive(Clone, Default)]
pub struct Record {
    pub fields: Vec<(&'static str, Field)>,
    pub checks: Vec<Check>,
}

impl Record {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn field(mut self, name: &'static str, f: Field) -> Self {
        self.fields.push((name, f));
        self
    }
    pub fn check(mut self, c: Check) -> Self {
        self.checks.push(c);
        self
    }
    pub fn get(&self, name: &str) -> Option<&Field> {
        self.fields.iter().find(|(n, _)| *n == name).map(|(_, f)| f)
    }
}

impl Field {
    fn of(ty: Ty) -> Self {
        Field {
            ty,
            required: false,
            default: None,
            one_of: None,
            between: None,
            len_min: None,
            len_max: None,
            custom: None,
            pattern: None,
            keys: None,
            secret: false,
            referenceable: false,
            description: "",
        }
    }
    pub fn string() -> Self {
        Self::of(Ty::String)
    }
    pub fn integer() -> Self {
        Self::of(Ty::Integer)
    }
    pub fn number() -> Self {
        Self::of(Ty::Number)
    }
    pub fn boolean() -> Self {
        Self::of(Ty::Boolean)
    }
    pub fn json() -> Self {
        Self::of(Ty::Json)
    }
    pub fn array(elem: Field) -> Self {
        Self::of(Ty::Array(Box::new(elem)))
    }
    pub fn set(elem: Field) -> Self {
        Self::of(Ty::Set(Box::new(elem)))
    }
    pub fn map(values: Field) -> Self {
        Self::of(Ty::Map(Box::new(values)))
    }
    pub fn record(r: Record) -> Self {
        Self::of(Ty::Record(r))
    }
    pub fn foreign(kind: &'static str) -> Self {
        Self::of(Ty::Foreign(kind))
    }
    pub fn required(mut self) -> Self {
        self.required = true;
        self
    }
    pub fn default(mut self, v: Value) -> Self {
        self.default = Some(v);
        self
    }
    pub fn one_of(mut self, vals: &[&str]) -> Self {
        self.one_of = Some(vals.iter().map(|s| Value::String(s.to_string())).collect());
        self
    }
    pub fn one_of_ints(mut self, vals: &[i64]) -> Self {
        self.one_of = Some(vals.iter().map(|n| Value::from(*n)).collect());
        self
    }
    pub fn between(mut self, lo: f64, hi: f64) -> Self {
        self.between = Some((lo, hi));
        self
    }
    pub fn len_min(mut self, n: usize) -> Self {
        self.len_min = Some(n);
        self
    }
    pub fn len_max(mut self, n: usize) -> Self {
        self.len_max = Some(n);
        self
    }
    /// Kong's `referenceable`: a vault reference is taken in place of a
    /// value, and checked as a reference rather than as the value.
    pub fn referenceable(mut self) -> Self {
        self.referenceable = true;
        self
    }
    pub fn custom(mut self, c: Custom) -> Self {
        self.custom = Some(c);
        self
    }
    /// A pattern the string must match; when it does not, the error is
    /// the `custom` check's message, if it has one.
    pub fn pattern(mut self, p: &'static str) -> Self {
        self.pattern = Some(p);
        self
    }
    pub fn keys(mut self, p: &'static str) -> Self {
        self.keys = Some(p);
        self
    }
    pub fn secret(mut self) -> Self {
        self.secret = true;
        self
    }
    pub fn describe(mut self, d: &'static str) -> Self {
        self.description = d;
        self
    }
}

/// The longest string a field takes unless its schema says otherwise.
/// Kong sets no limit; Gantry pushes every value to every proxy, and no
/// request header (Envoy's limit is 60 KiB for all of them) could match a
/// longer one.
pub const STRING_MAX: usize = 8 * 1024;
/// The most items an array, set or map takes unless its schema says otherwise.
pub const ITEMS_MAX: usize = 1000;
/// Integers without their own range are within ±(2^53 - 1): what a JSON
/// number carries exactly everywhere (Kong's Lua numbers are doubles).
pub const INT_MAX: i64 = (1 << 53) - 1;

/// Whether `s` matches `pattern` (compiled once per pattern).
pub fn matches(pattern: &'static str, s: &str) -> bool {
    use std::collections::HashMap;
    use std::sync::{LazyLock, RwLock};
    static CACHE: LazyLock<RwLock<HashMap<&'static str, regex::Regex>>> =
        LazyLock::new(Default::default);
    if let Some(re) = CACHE.read().ok().and_then(|c| c.get(pattern).cloned()) {
        return re.is_match(s);
    }
    let re = regex::Regex::new(pattern).expect("schema patterns compile");
    let hit = re.is_match(s);
    if let Ok(mut c) = CACHE.write() {
        c.insert(pattern, re);
    }
    hit
}

/// How input arrived: JSON keeps its types; form-encoded input is all
/// strings and is coerced by the schema, as Kong does.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Input {
    Json,
    Form,
}

/// Validates `input` against `schema`, returning the normalised record:
/// every field present (null where unset), defaults filled, in schema order.
pub fn validate(schema: &Record, input: &Value, mode: Input) -> Result<Value, FieldErrors> {
    match validate_record(schema, input, mode) {
        Ok(v) => Ok(v),
        Err(Value::Object(m)) => Err(m),
        Err(other) => {
            let mut m = Map::new();
            m.insert("@entity".into(), Value::Array(vec![other]));
            Err(m)
        }
    }
}

fn validate_record(schema: &Record, input: &Value, mode: Input) -> Result<Value, Value> {
    let obj = match input {
        Value::Object(o) => o,
        _ => return Err(Value::String("expected a record".into())),
    };
    let mut errors = Map::new();
    for key in obj.keys() {
        if schema.get(key).is_none() {
            errors.insert(key.clone(), Value::String("unknown field".into()));
        }
    }
    let mut out = Map::new();
    for (name, field) in &schema.fields {
        match validate_field(field, obj.get(*name), mode) {
            Ok(v) => {
                out.insert((*name).to_string(), v);
            }
            Err(e) => {
                errors.insert((*name).to_string(), e);
            }
        }
    }
    if errors.is_empty() {
        for check in &schema.checks {
            if let Err(e) = check(&out) {
                merge_errors(&mut errors, e);
            }
        }
    }
    if errors.is_empty() {
        Ok(Value::Object(out))
    } else {
        Err(Value::Object(errors))
    }
}

/// Merges `more` into `into`, concatenating `@entity` lists.
pub fn merge_errors(into: &mut FieldErrors, more: FieldErrors) {
    for (k, v) in more {
        match (into.get_mut(&k), v) {
            (Some(Value::Array(a)), Value::Array(b)) if k == "@entity" => a.extend(b),
            (_, v) => {
                into.insert(k, v);
            }
        }
    }
}

/// Checks one value against one field, as a record's validation would.
pub fn check_value(field: &Field, value: &Value, mode: Input) -> Result<(), Value> {
    validate_field(field, Some(value), mode).map(drop)
}

fn validate_field(field: &Field, value: Option<&Value>, mode: Input) -> Result<Value, Value> {
    let value = match value {
        None => {
            if let Some(d) = &field.default {
                return Ok(d.clone());
            }
            // A record without an explicit default defaults to its own
            // defaults, as Kong fills nested records such as healthchecks.
            if let Ty::Record(r) = &field.ty
                && let Ok(v) = validate_record(r, &Value::Object(Map::new()), mode)
            {
                return Ok(v);
            }
            if field.required {
                return Err(Value::String("required field missing".into()));
            }
            return Ok(Value::Null);
        }
        Some(Value::Null) => {
            if field.required {
                return Err(Value::String("required field missing".into()));
            }
            return Ok(Value::Null);
        }
        // Form input sends "" to clear an optional field.
        Some(Value::String(s))
            if s.is_empty() && mode == Input::Form && !matches!(field.ty, Ty::String) =>
        {
            if field.required {
                return Err(Value::String("required field missing".into()));
            }
            return Ok(Value::Null);
        }
        Some(v) => v,
    };
    let v = check_type(field, value, mode)?;
    if field.referenceable
        && let Value::String(st) = &v
        && gantry_shared::vault::is_reference(st)
    {
        gantry_shared::vault::Reference::parse(st).map_err(Value::String)?;
        return Ok(v);
    }
    if let Some(allowed) = &field.one_of
        && !allowed.contains(&v)
    {
        let list: Vec<String> = allowed
            .iter()
            .map(|a| match a {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .collect();
        return Err(Value::String(format!(
            "expected one of: {}",
            list.join(", ")
        )));
    }
    if let Some((lo, hi)) = field.between
        && let Some(n) = v.as_f64()
        && (n < lo || n > hi)
    {
        return Err(Value::String(format!(
            "value should be between {lo} and {hi}"
        )));
    }
    // Kong: strings are at least one character unless a schema says otherwise.
    let len_min = field
        .len_min
        .or(matches!(field.ty, Ty::String).then_some(1));
    if let Some(min) = len_min {
        let len = match &v {
            Value::String(s) => s.chars().count(),
            Value::Array(a) => a.len(),
            _ => min,
        };
        if len < min {
            return Err(Value::String(format!("length must be at least {min}")));
        }
    }
    if let Value::String(st) = &v {
        let max = field.len_max.unwrap_or(STRING_MAX);
        // Bytes bound characters from above: count only when it may matter.
        if st.len() > max && st.chars().count() > max {
            return Err(Value::String(format!("length must be at most {max}")));
        }
    }
    if let (Some(p), Value::String(st)) = (field.pattern, &v)
        && !matches(p, st)
    {
        let msg = field
            .custom
            .and_then(|c| c(&v).err())
            .unwrap_or_else(|| format!("invalid value: {st}"));
        return Err(Value::String(msg));
    }
    if let Some(c) = field.custom {
        c(&v).map_err(Value::String)?;
    }
    if matches!(field.ty, Ty::Integer)
        && field.between.is_none()
        && v.as_i64()
            .is_none_or(|n| !(-INT_MAX..=INT_MAX).contains(&n))
    {
        return Err(Value::String(format!(
            "value should be between -{INT_MAX} and {INT_MAX}"
        )));
    }
    Ok(v)
}

/// An array, set or map with more items than `field` takes.
fn too_many(field: &Field, n: usize) -> Option<Value> {
    let max = field.len_max.unwrap_or(ITEMS_MAX);
    (n > max).then(|| Value::String(format!("length must be at most {max}")))
}

fn check_type(field: &Field, value: &Value, mode: Input) -> Result<Value, Value> {
    let form = mode == Input::Form;
    let err = |s: &str| Err(Value::String(s.into()));
    match &field.ty {
        Ty::String => match value {
            // Postgres cannot store NUL in text, and no header carries it.
            Value::String(s) if s.contains('\0') => err("must not contain NUL characters"),
            Value::String(_) => Ok(value.clone()),
            _ => err("expected a string"),
        },
        Ty::Integer => match value {
            Value::Number(n) if n.is_i64() || n.is_u64() => Ok(value.clone()),
            Value::Number(n)
                if n.as_f64()
                    .is_some_and(|f| f.fract() == 0.0 && f.abs() <= INT_MAX as f64) =>
            {
                Ok(Value::from(n.as_f64().unwrap_or_default() as i64))
            }
            Value::String(s) if form => s
                .trim()
                .parse::<i64>()
                .map(Value::from)
                .or_else(|_| err("expected an integer")),
            _ => err("expected an integer"),
        },
        Ty::Number => match value {
            Value::Number(_) => Ok(value.clone()),
            Value::String(s) if form => {
                let s = s.trim();
                // Keep integers integral: `100` stays 100, not 100.0, so a
                // form re-post of the same value is no change.
                if let Ok(i) = s.parse::<i64>() {
                    return Ok(Value::from(i));
                }
                match s.parse::<f64>().ok().and_then(serde_json::Number::from_f64) {
                    Some(n) => Ok(Value::Number(n)),
                    None => err("expected a number"),
                }
            }
            _ => err("expected a number"),
        },
        Ty::Boolean => match value {
            Value::Bool(_) => Ok(value.clone()),
            Value::String(s) if form => match s.as_str() {
                "true" => Ok(Value::Bool(true)),
                "false" => Ok(Value::Bool(false)),
                _ => err("expected a boolean"),
            },
            _ => err("expected a boolean"),
        },
        Ty::Array(elem) | Ty::Set(elem) => {
            let is_set = matches!(field.ty, Ty::Set(_));
            let items: Vec<Value> = match value {
                Value::Array(a) => {
                    if let Some(e) = too_many(field, a.len()) {
                        return Err(e);
                    }
                    a.clone()
                }
                // Form posts of one element (`methods=GET`) and Kong's
                // indexed form (`paths[1]=/a`) arrive as a string or an
                // object keyed by index.
                Value::String(_) if form => vec![value.clone()],
                Value::Object(o) if form && o.keys().all(|k| k.parse::<usize>().is_ok()) => {
                    let mut pairs: Vec<(usize, Value)> = o
                        .iter()
                        .map(|(k, v)| (k.parse().unwrap_or(0), v.clone()))
                        .collect();
                    pairs.sort_by_key(|(i, _)| *i);
                    pairs.into_iter().map(|(_, v)| v).collect()
                }
                _ => {
                    return err(if is_set {
                        "expected a set"
                    } else {
                        "expected an array"
                    });
                }
            };
            let mut out = Vec::with_capacity(items.len());
            let mut errs = vec![Value::Null; items.len()];
            let mut any_err = false;
            let mut seen = std::collections::HashSet::new();
            for (i, item) in items.iter().enumerate() {
                if item.is_null() {
                    errs[i] = Value::String("expected a value, not null".into());
                    any_err = true;
                    continue;
                }
                match validate_field(elem, Some(item), mode) {
                    Ok(v) => {
                        if is_set && !seen.insert(v.to_string()) {
                            errs[i] = Value::String("duplicate value".into());
                            any_err = true;
                        } else {
                            out.push(v);
                        }
                    }
                    Err(e) => {
                        errs[i] = e;
                        any_err = true;
                    }
                }
            }
            if any_err {
                Err(Value::Array(errs))
            } else {
                Ok(Value::Array(out))
            }
        }
        Ty::Map(values) => {
            let Value::Object(o) = value else {
                return err("expected a map");
            };
            if let Some(e) = too_many(field, o.len()) {
                return Err(e);
            }
            let mut out = Map::new();
            let mut errs = Map::new();
            for (k, v) in o {
                if let Some(p) = field.keys
                    && !matches(p, k)
                {
                    errs.insert(k.clone(), Value::String(format!("invalid key: {k}")));
                    continue;
                }
                if v.is_null() {
                    errs.insert(
                        k.clone(),
                        Value::String("expected a value, not null".into()),
                    );
                    continue;
                }
                match validate_field(values, Some(v), mode) {
                    Ok(v) => {
                        out.insert(k.clone(), v);
                    }
                    Err(e) => {
                        errs.insert(k.clone(), e);
                    }
                }
            }
            if errs.is_empty() {
                Ok(Value::Object(out))
            } else {
                Err(Value::Object(errs))
            }
        }
        Ty::Record(r) => validate_record(r, value, mode),
        Ty::Foreign(_) => match value {
            // One key names the entity: a second would be ignored.
            Value::Object(o) if o.len() > 1 => {
                err("expected a reference with one key: {\"id\": \"...\"}")
            }
            Value::Object(o)
                if o.values()
                    .any(|v| v.as_str().is_some_and(|s| s.contains('\0'))) =>
            {
                err("must not contain NUL characters")
            }
            Value::String(s) if s.contains('\0') => err("must not contain NUL characters"),
            Value::Object(o) => {
                let mut errs = Map::new();
                for k in o.keys() {
                    if k != "id" && k != "name" && k != "username" {
                        errs.insert(k.clone(), Value::String("unknown field".into()));
                    }
                }
                match o
                    .get("id")
                    .or_else(|| o.get("name"))
                    .or_else(|| o.get("username"))
                {
                    Some(Value::String(_)) if errs.is_empty() => Ok(value.clone()),
                    Some(Value::String(_)) => Err(Value::Object(errs)),
                    _ => err("expected a reference: {\"id\": \"...\"}"),
                }
            }
            // A bare id or name; the entity layer resolves it.
            Value::String(s) => Ok(serde_json::json!({ "id": s })),
            _ => err("expected a reference: {\"id\": \"...\"}"),
        },
        Ty::Json => Ok(value.clone()),
    }
}

/// The text placed where a secret would be shown.
pub const REDACTED: &str = "<redacted>";

/// Replaces every secret field of a normalised record with [`REDACTED`].
pub fn redact(schema: &Record, value: &mut Value) {
    let Value::Object(obj) = value else { return };
    for (name, field) in &schema.fields {
        let Some(v) = obj.get_mut(*name) else {
            continue;
        };
        redact_field(field, v);
    }
}

fn redact_field(field: &Field, v: &mut Value) {
    if v.is_null() {
        return;
    }
    if field.secret {
        // A vault reference names where the secret is, as Kong shows it.
        let reference =
            field.referenceable && v.as_str().is_some_and(gantry_shared::vault::is_reference);
        if !reference {
            *v = Value::String(REDACTED.into());
        }
        return;
    }
    match (&field.ty, v) {
        (Ty::Record(r), v) => redact(r, v),
        (Ty::Array(e) | Ty::Set(e), Value::Array(items)) => {
            items.iter_mut().for_each(|i| redact_field(e, i))
        }
        (Ty::Map(e), Value::Object(m)) => m.values_mut().for_each(|i| redact_field(e, i)),
        _ => {}
    }
}

/// Where a record of `schema` holds secrets, as JSON pointers (`*` for
/// every element of an array, set or map): what a node's copy of the
/// record marks for redaction (`gantry_shared::redact`).
pub fn secret_pointers(schema: &Record) -> Vec<String> {
    let mut out = Vec::new();
    for (name, field) in &schema.fields {
        pointers_of(field, format!("/{name}"), &mut out);
    }
    out
}

fn pointers_of(field: &Field, at: String, out: &mut Vec<String>) {
    if field.secret {
        out.push(at);
        return;
    }
    match &field.ty {
        Ty::Record(r) => {
            for (name, f) in &r.fields {
                pointers_of(f, format!("{at}/{name}"), out);
            }
        }
        Ty::Array(e) | Ty::Set(e) | Ty::Map(e) => pointers_of(e, format!("{at}/*"), out),
        _ => {}
    }
}

/// Kong's one-line summary of a field-error tree:
/// `2 schema violations (host: required field missing; port: ...)`.
pub fn summarize(errors: &FieldErrors) -> String {
    let mut parts = Vec::new();
    flatten("", &Value::Object(errors.clone()), &mut parts);
    let head = if parts.len() == 1 {
        "schema violation".to_string()
    } else {
        format!("{} schema violations", parts.len())
    };
    format!("{head} ({})", parts.join("; "))
}

fn flatten(prefix: &str, v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                let p = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&p, v, out);
            }
        }
        Value::Array(a) => {
            for (i, v) in a.iter().enumerate() {
                if prefix.ends_with("@entity") {
                    flatten(prefix, v, out);
                } else {
                    flatten(&format!("{prefix}.{}", i + 1), v, out);
                }
            }
        }
        Value::Null => {}
        Value::String(s) => out.push(if prefix == "@entity" {
            s.clone()
        } else {
            format!("{prefix}: {s}")
        }),
        other => out.push(format!("{prefix}: {other}")),
    }
}

/// One entity-level error, as Kong reports checks like `at_least_one_of`.
pub fn entity_error(msg: impl Into<String>) -> FieldErrors {
    let mut m = Map::new();
    m.insert(
        "@entity".into(),
        Value::Array(vec![Value::String(msg.into())]),
    );
    m
}

/// One error on one field.
pub fn field_error(field: &str, msg: impl Into<String>) -> FieldErrors {
    let mut m = Map::new();
    m.insert(field.into(), Value::String(msg.into()));
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sample() -> Record {
        Record::new()
            .field("name", Field::string())
            .field(
                "port",
                Field::integer().default(json!(80)).between(0.0, 65535.0),
            )
            .field("on", Field::boolean().default(json!(true)))
            .field("paths", Field::array(Field::string()))
            .field(
                "mode",
                Field::string().one_of(&["a", "b"]).default(json!("a")),
            )
            .field(
                "nested",
                Field::record(Record::new().field("x", Field::integer().default(json!(1)))),
            )
            .field("pw", Field::string().secret())
    }

    #[test]
    fn defaults_fill_and_order_follows_schema() {
        let v = validate(&sample(), &json!({"name": "s"}), Input::Json).unwrap();
        assert_eq!(
            v,
            json!({"name":"s","port":80,"on":true,"paths":null,"mode":"a","nested":{"x":1},"pw":null})
        );
        let keys: Vec<_> = v.as_object().unwrap().keys().cloned().collect();
        assert_eq!(
            keys,
            ["name", "port", "on", "paths", "mode", "nested", "pw"]
        );
    }

    #[test]
    fn json_types_are_strict_and_errors_nest() {
        let e = validate(
            &sample(),
            &json!({"port": "80", "nested": {"x": "y"}, "zzz": 1}),
            Input::Json,
        )
        .unwrap_err();
        assert_eq!(e["port"], "expected an integer");
        assert_eq!(e["nested"]["x"], "expected an integer");
        assert_eq!(e["zzz"], "unknown field");
        assert!(summarize(&e).starts_with("3 schema violations ("));
    }

    #[test]
    fn form_strings_are_coerced() {
        let v = validate(
            &sample(),
            &json!({"port": "8080", "on": "false", "paths": {"2": "/b", "1": "/a"}}),
            Input::Form,
        )
        .unwrap();
        assert_eq!(v["port"], 8080);
        assert_eq!(v["on"], false);
        assert_eq!(v["paths"], json!(["/a", "/b"]));
        let v = validate(&sample(), &json!({"paths": "/one"}), Input::Form).unwrap();
        assert_eq!(v["paths"], json!(["/one"]));
    }

    #[test]
    fn ranges_enums_and_array_positions() {
        let s = Record::new().field("p", Field::array(Field::integer().between(1.0, 5.0)));
        let e = validate(&s, &json!({"p": [1, 9]}), Input::Json).unwrap_err();
        assert_eq!(e["p"], json!([null, "value should be between 1 and 5"]));
        let e = validate(&sample(), &json!({"mode": "c"}), Input::Json).unwrap_err();
        assert_eq!(e["mode"], "expected one of: a, b");
    }

    #[test]
    fn nul_null_items_and_big_integers_are_refused() {
        let s = Record::new()
            .field("n", Field::integer())
            .field("s", Field::string())
            .field("a", Field::array(Field::string()));
        assert!(validate(&s, &json!({"n": INT_MAX, "s": "ok"}), Input::Json).is_ok());
        assert!(validate(&s, &json!({"n": 9007199254740990.0}), Input::Json).is_ok());
        let e = validate(&s, &json!({"n": INT_MAX + 1}), Input::Json).unwrap_err();
        assert!(
            e["n"]
                .as_str()
                .unwrap()
                .starts_with("value should be between")
        );
        let e = validate(&s, &json!({"s": "a\u{0}b"}), Input::Json).unwrap_err();
        assert_eq!(e["s"], "must not contain NUL characters");
        let e = validate(&s, &json!({"a": ["x", null]}), Input::Json).unwrap_err();
        assert_eq!(e["a"], json!([null, "expected a value, not null"]));
    }

    #[test]
    fn patterns_are_enforced() {
        let s = Record::new().field("p", Field::string().pattern("^[a-z]+$"));
        assert!(validate(&s, &json!({"p": "abc"}), Input::Json).is_ok());
        let e = validate(&s, &json!({"p": "aBc"}), Input::Json).unwrap_err();
        assert_eq!(e["p"], "invalid value: aBc");
    }

    #[test]
    fn secrets_are_redacted() {
        let mut v = validate(&sample(), &json!({"pw": "hunter2"}), Input::Json).unwrap();
        redact(&sample(), &mut v);
        assert_eq!(v["pw"], REDACTED);
    }
}
