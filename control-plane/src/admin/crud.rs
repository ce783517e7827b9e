//! The generic entity endpoints: `/{collection}`, `/{collection}/{id}`
//! and their nested forms `/{parent}/{pid}/{collection}[/{id}]`.

use super::auth::Authed;
use super::body::Body;
use super::error::ApiError;
use super::{Admin, Written, paging};
use crate::entities::{self, EntityDef, Parent, def_by_path, redacted, resolve_id, resolve_in};
use crate::rbac::{Action, EntityRef};
use crate::store::ListFilter;
use axum::Json;
use axum::extract::{Path, Query};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use std::collections::HashMap;

fn collection(seg: &str) -> Result<&'static EntityDef, ApiError> {
    def_by_path(seg).ok_or(ApiError::NotFound)
}

/// Resolves `/{parent}/{pid}/{child}`: the child def and the foreign key
/// the parent imposes.
async fn nested(
    app: &Admin,
    parent: &str,
    pid: &str,
    child: &str,
) -> Result<(&'static EntityDef, Parent), ApiError> {
    let pd = collection(parent)?;
    let cd = collection(child)?;
    let fk = cd.nesting_field(pd.name).ok_or(ApiError::NotFound)?;
    let mut store = &app.store;
    let (id, _) = resolve_id(&mut store, pd, pid)
        .await?
        .ok_or(ApiError::NotFound)?;
    Ok((
        cd,
        Parent {
            field: fk.field,
            id,
        },
    ))
}

/// RBAC on one entity: the caller's roles (tag scopes included) must
/// allow `action` on it.
fn permit(app: &Admin, action: Action, d: &EntityDef, v: &Value) -> Result<(), ApiError> {
    let c = &app.caller;
    if c.principal
        .may_touch(action, &c.path, &EntityRef::of(d.name, v))
    {
        Ok(())
    } else {
        Err(c.forbidden(action))
    }
}

/// RBAC on an entity as a write leaves it, with what it references (see
/// `Principal::may_write`). Called before the write commits, so a refusal
/// changes nothing.
async fn permit_written(
    app: &Admin,
    tx: &mut crate::store::WriteTx,
    action: Action,
    d: &EntityDef,
    v: &Value,
) -> Result<(), ApiError> {
    let c = &app.caller;
    if c.principal.unrestricted {
        return Ok(());
    }
    let mut refs = Vec::new();
    for f in d.foreign.iter() {
        let ids: Vec<&str> = if f.many {
            v[f.field]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect()
        } else {
            v[f.field]["id"].as_str().into_iter().collect()
        };
        for id in ids {
            if let Some(target) = tx.get(f.kind, id).await? {
                refs.push(EntityRef::of(f.kind, &target));
            }
        }
    }
    if c.principal
        .may_write(action, &c.path, &EntityRef::of(d.name, v), &refs)
    {
        Ok(())
    } else {
        Err(c.forbidden(action))
    }
}

/// The entity a write would change, as it is now.
/// Nothing to look up for a caller every entity is open to.
async fn current(
    app: &Admin,
    tx: &mut crate::store::WriteTx,
    d: &'static EntityDef,
    id: &str,
    parent: Option<&Parent>,
) -> Result<Option<Value>, ApiError> {
    if app.caller.principal.unrestricted {
        return Ok(None);
    }
    Ok(resolve_in(tx, d, id, parent).await?.map(|(_, v)| v))
}

/// What a read shows: secrets redacted; certificates list their SNIs.
async fn present(app: &Admin, d: &EntityDef, v: &Value) -> Result<Value, ApiError> {
    let mut out = redacted(d, v);
    if d.name == "certificates" {
        let id = v["id"].as_str().unwrap_or_default().to_string();
        let filter = ListFilter {
            referencing: Some(("certificates".into(), id)),
            size: 1000,
            ..Default::default()
        };
        let snis = app.store.list("snis", &filter).await?;
        let mut names: Vec<Value> = snis.items.iter().map(|s| s["name"].clone()).collect();
        names.sort_by(|a, b| a.as_str().cmp(&b.as_str()));
        out["snis"] = Value::Array(names);
    }
    Ok(out)
}

/// What a write echoes: like a read, except that the write that creates a
/// credential shows its key or secret, once, so a generated one can be
/// learned. Updates redact it, as reads do.
async fn present_write(
    app: &Admin,
    d: &EntityDef,
    v: &Value,
    created: bool,
) -> Result<Value, ApiError> {
    if created && matches!(d.name, "keyauth_credentials" | "jwt_secrets") {
        return Ok(v.clone());
    }
    present(app, d, v).await
}

async fn list_impl(
    app: &Admin,
    d: &'static EntityDef,
    parent: Option<&Parent>,
    q: &HashMap<String, String>,
    base: &str,
) -> Result<Response, ApiError> {
    let p = paging(q)?;
    let scope = app.caller.principal.list_scope(&app.caller.path);
    let (mut tags, mut tags_all) = match q.get("tags") {
        None => (Vec::new(), true),
        Some(t) if t.contains(',') && t.contains('/') => {
            return Err(ApiError::bad_request(
                "invalid option (tags: cannot mix 'or' and 'and' (',' and '/') in one query)",
            ));
        }
        Some(t) if t.contains('\0') => {
            return Err(ApiError::bad_request(
                "invalid option (tags: must not contain NUL)",
            ));
        }
        Some(t) if t.contains('/') => (t.split('/').map(str::to_string).collect(), false),
        Some(t) => (t.split(',').map(str::to_string).collect(), true),
    };
    // A tag-scoped reader sees its tags only: asked for nothing narrower,
    // the store filters (so pages stay full); else each item is checked below.
    if let Some(scope) = &scope
        && tags.is_empty()
    {
        if scope.is_empty() {
            return Err(app.caller.forbidden(Action::Read));
        }
        (tags, tags_all) = (scope.clone(), false);
    }
    let filter = ListFilter {
        referencing: parent.and_then(|p| {
            let kind = d.foreign.iter().find(|f| f.field == p.field)?.kind;
            Some((kind.to_string(), p.id.clone()))
        }),
        tags,
        tags_all,
        after: p.after,
        size: p.size,
    };
    let page = app.store.list(d.name, &filter).await?;
    let mut data = Vec::with_capacity(page.items.len());
    let caller = &app.caller;
    for v in &page.items {
        if caller
            .principal
            .may_touch(Action::Read, &caller.path, &EntityRef::of(d.name, v))
        {
            data.push(present(app, d, v).await?);
        }
    }
    let offset = page.next.as_deref().map(super::encode_offset);
    let next = offset.as_ref().map(|o| {
        let mut url = format!("{base}?offset={o}");
        if p.size != super::DEFAULT_PAGE {
            url.push_str(&format!("&size={}", p.size));
        }
        if let Some(t) = q.get("tags") {
            url.push_str(&format!(
                "&tags={}",
                form_urlencoded::byte_serialize(t.as_bytes()).collect::<String>()
            ));
        }
        url
    });
    let mut body = json!({ "data": data, "next": next });
    if let Some(o) = offset {
        body["offset"] = Value::String(o);
    }
    Ok(Json(body).into_response())
}

async fn get_impl(
    app: &Admin,
    d: &'static EntityDef,
    id: &str,
    parent: Option<&Parent>,
) -> Result<Response, ApiError> {
    let mut store = &app.store;
    let (_, v) = resolve_in(&mut store, d, id, parent)
        .await?
        .ok_or(ApiError::NotFound)?;
    if let Some(p) = parent
        && v[p.field]["id"].as_str() != Some(p.id.as_str())
    {
        return Err(ApiError::NotFound);
    }
    permit(app, Action::Read, d, &v)?;
    Ok(Json(present(app, d, &v).await?).into_response())
}

async fn create_impl(
    app: &Admin,
    d: &'static EntityDef,
    body: Body,
    parent: Option<Parent>,
) -> Result<Response, ApiError> {
    let mut tx = app.store.begin_write(&app.actor).await?;
    let v = entities::create(&mut tx, d, body.value, body.mode, parent.as_ref()).await?;
    permit_written(app, &mut tx, Action::Create, d, &v).await?;
    let id = v["id"].as_str().unwrap_or_default().to_string();
    crate::admission::check_written(&mut tx, &app.proxy).await?;
    let c = tx
        .commit("create", &format!("create {} {id}", d.name))
        .await?;
    Ok(Written(
        StatusCode::CREATED,
        c.revision,
        present_write(app, d, &v, true).await?,
    )
    .into_response())
}

async fn upsert_impl(
    app: &Admin,
    d: &'static EntityDef,
    id: &str,
    body: Body,
    parent: Option<Parent>,
) -> Result<Response, ApiError> {
    let mut tx = app.store.begin_write(&app.actor).await?;
    if let Some(before) = current(app, &mut tx, d, id, parent.as_ref()).await? {
        permit(app, Action::Update, d, &before)?;
    }
    let (v, created) =
        entities::upsert(&mut tx, d, id, body.value, body.mode, parent.as_ref()).await?;
    permit_written(app, &mut tx, Action::Update, d, &v).await?;
    let eid = v["id"].as_str().unwrap_or_default().to_string();
    crate::admission::check_written(&mut tx, &app.proxy).await?;
    let c = tx
        .commit("upsert", &format!("upsert {} {eid}", d.name))
        .await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(Written(
        status,
        c.revision,
        present_write(app, d, &v, created).await?,
    )
    .into_response())
}

async fn update_impl(
    app: &Admin,
    d: &'static EntityDef,
    id: &str,
    body: Body,
    parent: Option<Parent>,
) -> Result<Response, ApiError> {
    let mut tx = app.store.begin_write(&app.actor).await?;
    if let Some(before) = current(app, &mut tx, d, id, parent.as_ref()).await? {
        permit(app, Action::Update, d, &before)?;
    }
    let v = entities::update(&mut tx, d, id, body.value, body.mode, parent.as_ref()).await?;
    permit_written(app, &mut tx, Action::Update, d, &v).await?;
    let eid = v["id"].as_str().unwrap_or_default().to_string();
    crate::admission::check_written(&mut tx, &app.proxy).await?;
    let c = tx
        .commit("update", &format!("update {} {eid}", d.name))
        .await?;
    Ok(Written(
        StatusCode::OK,
        c.revision,
        present_write(app, d, &v, false).await?,
    )
    .into_response())
}

/// Whether `id` could name an entity of `d`: a UUID, or a value its
/// endpoint key takes.
fn well_formed(d: &EntityDef, id: &str) -> bool {
    crate::entities::checks::is_uuid(id)
        || d.endpoint_key
            .and_then(|k| d.schema.get(k))
            .is_some_and(|f| {
                crate::schema::check_value(
                    f,
                    &Value::String(id.to_string()),
                    crate::schema::Input::Json,
                )
                .is_ok()
            })
}

async fn delete_impl(
    app: &Admin,
    d: &'static EntityDef,
    id: &str,
    parent: Option<Parent>,
) -> Result<Response, ApiError> {
    // Deleting what does not exist is 204, as in Kong; what cannot exist
    // is not found (Kong refuses it as an invalid primary key).
    if !well_formed(d, id) {
        return Err(ApiError::NotFound);
    }
    let mut tx = app.store.begin_write(&app.actor).await?;
    if let Some(before) = current(app, &mut tx, d, id, parent.as_ref()).await? {
        permit(app, Action::Delete, d, &before)?;
    }
    entities::delete(&mut tx, d, id, parent.as_ref()).await?;
    let c = tx
        .commit("delete", &format!("delete {} {id}", d.name))
        .await?;
    Ok(Written(StatusCode::NO_CONTENT, c.revision, Value::Null).into_response())
}

// Handlers, one per method and path shape.

pub async fn list(
    Authed(app): Authed,
    Path(coll): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let d = collection(&coll)?;
    list_impl(&app, d, None, &q, &format!("/{coll}")).await
}

pub async fn create(
    Authed(app): Authed,
    Path(coll): Path<String>,
    body: Body,
) -> Result<Response, ApiError> {
    create_impl(&app, collection(&coll)?, body, None).await
}

pub async fn get(
    Authed(app): Authed,
    Path((coll, id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    get_impl(&app, collection(&coll)?, &id, None).await
}

pub async fn put(
    Authed(app): Authed,
    Path((coll, id)): Path<(String, String)>,
    body: Body,
) -> Result<Response, ApiError> {
    upsert_impl(&app, collection(&coll)?, &id, body, None).await
}

pub async fn patch(
    Authed(app): Authed,
    Path((coll, id)): Path<(String, String)>,
    body: Body,
) -> Result<Response, ApiError> {
    update_impl(&app, collection(&coll)?, &id, body, None).await
}

pub async fn delete(
    Authed(app): Authed,
    Path((coll, id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    delete_impl(&app, collection(&coll)?, &id, None).await
}

pub async fn nested_list(
    Authed(app): Authed,
    Path((parent, pid, child)): Path<(String, String, String)>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let (d, p) = nested(&app, &parent, &pid, &child).await?;
    list_impl(&app, d, Some(&p), &q, &format!("/{parent}/{pid}/{child}")).await
}

pub async fn nested_create(
    Authed(app): Authed,
    Path((parent, pid, child)): Path<(String, String, String)>,
    body: Body,
) -> Result<Response, ApiError> {
    let (d, p) = nested(&app, &parent, &pid, &child).await?;
    create_impl(&app, d, body, Some(p)).await
}

pub async fn nested_get(
    Authed(app): Authed,
    Path((parent, pid, child, id)): Path<(String, String, String, String)>,
) -> Result<Response, ApiError> {
    let (d, p) = nested(&app, &parent, &pid, &child).await?;
    get_impl(&app, d, &id, Some(&p)).await
}

pub async fn nested_put(
    Authed(app): Authed,
    Path((parent, pid, child, id)): Path<(String, String, String, String)>,
    body: Body,
) -> Result<Response, ApiError> {
    let (d, p) = nested(&app, &parent, &pid, &child).await?;
    upsert_impl(&app, d, &id, body, Some(p)).await
}

pub async fn nested_patch(
    Authed(app): Authed,
    Path((parent, pid, child, id)): Path<(String, String, String, String)>,
    body: Body,
) -> Result<Response, ApiError> {
    let (d, p) = nested(&app, &parent, &pid, &child).await?;
    update_impl(&app, d, &id, body, Some(p)).await
}

pub async fn nested_delete(
    Authed(app): Authed,
    Path((parent, pid, child, id)): Path<(String, String, String, String)>,
) -> Result<Response, ApiError> {
    let (d, p) = nested(&app, &parent, &pid, &child).await?;
    delete_impl(&app, d, &id, Some(p)).await
}

/// `GET /tags/{tag}`: every entity with the tag, across collections.
pub async fn by_tag(
    Authed(app): Authed,
    Path(tag): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    if tag.len() > crate::entities::TAG_MAX
        || !crate::schema::matches(crate::entities::checks::TAG, &tag)
    {
        return Err(ApiError::bad_request(format!(
            "invalid tag: '{}'",
            tag.escape_debug()
        )));
    }
    let p = paging(&q)?;
    let after = p
        .after
        .as_deref()
        .and_then(|a| a.split_once('/'))
        .map(|(k, i)| (k.to_string(), i.to_string()));
    let (rows, next) = app.store.list_tag(&tag, after, p.size).await?;
    let data: Vec<Value> = rows
        .iter()
        .map(|(k, id)| json!({ "entity_name": k, "entity_id": id, "tag": tag }))
        .collect();
    let offset = next.map(|(k, i)| super::encode_offset(&format!("{k}/{i}")));
    let next_url = offset.as_ref().map(|o| format!("/tags/{tag}?offset={o}"));
    let mut body = json!({ "data": data, "next": next_url });
    if let Some(o) = offset {
        body["offset"] = Value::String(o);
    }
    Ok(Json(body).into_response())
}
