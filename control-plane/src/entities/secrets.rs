//! Finds the secret values of an entity by its schema (and, for plugins,
//! the plugin's config schema), to seal them on export and unseal them on
//! import. Only fields marked secret are touched: a sealed blob pasted into
//! an ordinary field stays a blob, so it cannot be turned back into
//! plaintext that reads would show.

use crate::entities::EntityDef;
use crate::schema::{Field, Record, Ty};
use serde_json::Value;

/// Calls `f(path, value)` for every secret string of an entity.
pub(crate) fn for_each_secret<E>(
    d: &EntityDef,
    v: &mut Value,
    f: &mut dyn FnMut(&str, &mut Value) -> Result<(), E>,
) -> Result<(), E> {
    record(&d.schema, v, "", f)?;
    if d.name == "plugins" {
        let name = v.get("name").and_then(Value::as_str).map(str::to_string);
        if let (Some(s), Some(cfg)) = (
            name.as_deref().and_then(crate::plugins::config_schema),
            v.get_mut("config"),
        ) {
            record(s, cfg, "config.", f)?;
        }
    }
    Ok(())
}

fn record<E>(
    schema: &Record,
    v: &mut Value,
    prefix: &str,
    f: &mut dyn FnMut(&str, &mut Value) -> Result<(), E>,
) -> Result<(), E> {
    let Value::Object(obj) = v else { return Ok(()) };
    for (name, field) in &schema.fields {
        if let Some(fv) = obj.get_mut(*name) {
            walk(field, fv, &format!("{prefix}{name}"), f)?;
        }
    }
    Ok(())
}

fn walk<E>(
    field: &Field,
    v: &mut Value,
    path: &str,
    f: &mut dyn FnMut(&str, &mut Value) -> Result<(), E>,
) -> Result<(), E> {
    if field.secret {
        return match v {
            Value::String(_) => f(path, v),
            // A secret list: each string in it is a secret.
            Value::Array(items) => items
                .iter_mut()
                .filter(|i| i.is_string())
                .try_for_each(|i| f(path, i)),
            _ => Ok(()),
        };
    }
    match (&field.ty, v) {
        (Ty::Record(r), v) => record(r, v, &format!("{path}."), f),
        (Ty::Array(e) | Ty::Set(e), Value::Array(items)) => {
            items.iter_mut().try_for_each(|i| walk(e, i, path, f))
        }
        (Ty::Map(e), Value::Object(m)) => m.values_mut().try_for_each(|i| walk(e, i, path, f)),
        _ => Ok(()),
    }
}
