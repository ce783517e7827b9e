//! Kong Enterprise's RBAC endpoints: `/rbac/users`, their roles, and
//! `/rbac/roles` with endpoint and entity permissions. These rows are not
//! proxy configuration: writes make no config revision; they are logged
//! with the acting user instead.

use super::auth::Authed;
use super::body::Body;
use super::error::ApiError;
use crate::rbac::perm::{Action, Actions, normalize};
use crate::rbac::store::{NewUser, Rbac, RolePatch, Rule, UserPatch};
use crate::rbac::token;
use crate::schema::FieldErrors;
use axum::Json;
use axum::extract::Path;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

/// Longest name, comment or tag accepted.
const MAX_TEXT: usize = 1024;

/// Shortest token a user may choose (generated ones are 43 characters).
pub const TOKEN_MIN: usize = 16;

/// Reads fields of a JSON or form body, collecting Kong-style field errors.
/// What it accepts is what `openapi/rbac.rs` documents.
struct Fields<'a> {
    body: &'a Map<String, Value>,
    /// Form bodies carry booleans as `true`/`false` strings; JSON must not.
    form: bool,
    errors: FieldErrors,
}

fn ok_char(c: char) -> bool {
    !c.is_control()
}

impl<'a> Fields<'a> {
    fn new(body: &'a Body) -> Result<Fields<'a>, ApiError> {
        static EMPTY: std::sync::OnceLock<Map<String, Value>> = std::sync::OnceLock::new();
        let form = matches!(body.mode, crate::schema::Input::Form);
        match &body.value {
            Value::Object(m) => Ok(Fields {
                body: m,
                form,
                errors: Map::new(),
            }),
            Value::Null => Ok(Fields {
                body: EMPTY.get_or_init(Map::new),
                form,
                errors: Map::new(),
            }),
            _ => Err(ApiError::bad_request("the body must be an object")),
        }
    }

    fn err(&mut self, field: &str, m: &str) {
        self.errors
            .insert(field.to_string(), Value::String(m.to_string()));
    }

    /// A non-empty string without control characters.
    fn text(&mut self, field: &str, required: bool) -> Option<String> {
        match self.body.get(field) {
            None => {
                if required {
                    self.err(field, "required field missing");
                }
                None
            }
            Some(Value::String(s))
                if !s.is_empty() && s.chars().count() <= MAX_TEXT && s.chars().all(ok_char) =>
            {
                Some(s.clone())
            }
            Some(Value::String(_)) => {
                self.err(
                    field,
                    &format!("expected a non-empty string of at most {MAX_TEXT} characters without control characters"),
                );
                None
            }
            Some(_) => {
                self.err(field, "expected a string");
                None
            }
        }
    }

    /// A comment: a string, or null to clear it.
    fn comment(&mut self) -> Option<Option<String>> {
        match self.body.get("comment") {
            None => None,
            Some(Value::Null) => Some(None),
            Some(_) => self.text("comment", false).map(Some),
        }
    }

    fn boolean(&mut self, field: &str) -> Option<bool> {
        match self.body.get(field) {
            None => None,
            Some(Value::Bool(b)) => Some(*b),
            Some(Value::String(s)) if self.form && s == "true" => Some(true),
            Some(Value::String(s)) if self.form && s == "false" => Some(false),
            Some(_) => {
                self.err(field, "expected a boolean");
                None
            }
        }
    }

    /// A list: a JSON array of strings, or Kong's comma-separated string.
    /// Items lose surrounding spaces; none may be empty or hold control
    /// characters or (in the string form) commas.
    fn list(&mut self, field: &str) -> Option<Vec<String>> {
        let raw: Vec<&str> = match self.body.get(field) {
            None => return None,
            // Only a role's tags may be cleared with null.
            Some(Value::Null) if field == "tags" => return None,
            Some(Value::String(s)) => s.split(',').collect(),
            Some(Value::Array(a)) if !a.is_empty() && a.iter().all(Value::is_string) => {
                a.iter().filter_map(Value::as_str).collect()
            }
            Some(_) => {
                self.err(field, "expected a non-empty list of strings");
                return None;
            }
        };
        let items: Vec<String> = raw
            .iter()
            .map(|i| i.trim_matches(' ').to_string())
            .collect();
        if items
            .iter()
            .any(|i| i.is_empty() || i.chars().count() > MAX_TEXT || !i.chars().all(ok_char))
        {
            self.err(field, "invalid list item");
            return None;
        }
        Some(items)
    }

    fn actions(&mut self, required: bool) -> Option<Actions> {
        let list = self.list("actions");
        let Some(list) = list else {
            if required && !self.errors.contains_key("actions") {
                self.err("actions", "required field missing");
            }
            return None;
        };
        let mut parsed = Vec::new();
        for a in &list {
            let a = a.as_str();
            match Action::parse(a) {
                Some(x) => parsed.push(x),
                None => {
                    self.err(
                        "actions",
                        &format!("unknown action '{a}' (read, create, update, delete)"),
                    );
                    return None;
                }
            }
        }
        Some(Actions::from_list(&parsed))
    }

    /// Refuses fields this endpoint does not know, as Kong's schemas do.
    fn known(&mut self, allowed: &[&str]) {
        let unknown: Vec<String> = self
            .body
            .keys()
            .filter(|k| !allowed.contains(&k.as_str()))
            .cloned()
            .collect();
        for k in unknown {
            self.err(&k, "unknown field");
        }
    }

    fn finish(self) -> Result<(), ApiError> {
        if self.errors.is_empty() {
            Ok(())
        } else {
            Err(ApiError::Schema(self.errors))
        }
    }
}

/// A chosen token: long enough that its SHA-256 cannot be reversed by
/// guessing.
fn token_field(f: &mut Fields) -> Option<String> {
    let t = f.text("user_token", false)?;
    if t.chars().count() < TOKEN_MIN {
        f.err(
            "user_token",
            &format!("must be at least {TOKEN_MIN} characters long"),
        );
        return None;
    }
    Some(t)
}

fn page(data: Vec<Value>) -> Response {
    Json(json!({ "data": data, "next": null })).into_response()
}

fn logged(actor: &str, what: &str, name: &str) {
    tracing::info!(actor, change = what, target_name = name, "rbac change");
}

// Users.

pub async fn list_users(Authed(app): Authed) -> Result<Response, ApiError> {
    Ok(page(Rbac::new(&app.store).users().await?))
}

pub async fn create_user(Authed(app): Authed, body: Body) -> Result<Response, ApiError> {
    let mut f = Fields::new(&body)?;
    f.known(&["name", "user_token", "enabled", "comment"]);
    let name = f.text("name", true);
    let given = token_field(&mut f);
    let enabled = f.boolean("enabled").unwrap_or(true);
    let comment = f.comment().flatten();
    f.finish()?;
    let name = name.unwrap_or_default();
    let token = given.unwrap_or_else(token::generate);
    let mut user = Rbac::new(&app.store)
        .create_user(NewUser {
            name: name.clone(),
            token: token.clone(),
            enabled,
            comment,
        })
        .await?;
    logged(&app.actor, "create user", &name);
    // The only time the token is shown: it is stored as a digest.
    user["user_token"] = Value::String(token);
    Ok((StatusCode::CREATED, Json(user)).into_response())
}

pub async fn get_user(Authed(app): Authed, Path(user): Path<String>) -> Result<Response, ApiError> {
    Ok(Json(Rbac::new(&app.store).user(&user).await?).into_response())
}

pub async fn update_user(
    Authed(app): Authed,
    Path(user): Path<String>,
    body: Body,
) -> Result<Response, ApiError> {
    let mut f = Fields::new(&body)?;
    f.known(&["name", "user_token", "enabled", "comment"]);
    let patch = UserPatch {
        name: f.text("name", false),
        token: token_field(&mut f),
        enabled: f.boolean("enabled"),
        comment: f.comment(),
    };
    f.finish()?;
    let v = Rbac::new(&app.store).update_user(&user, patch).await?;
    logged(
        &app.actor,
        "update user",
        v["name"].as_str().unwrap_or_default(),
    );
    Ok(Json(v).into_response())
}

pub async fn delete_user(
    Authed(app): Authed,
    Path(user): Path<String>,
) -> Result<Response, ApiError> {
    Rbac::new(&app.store).delete_user(&user).await?;
    logged(&app.actor, "delete user", &user);
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn roles_of(rbac: &Rbac<'_>, user: &str) -> Result<(Value, Vec<Value>), ApiError> {
    let u = rbac.user(user).await?;
    let id = u["id"].as_str().unwrap_or_default().to_string();
    Ok((u, rbac.user_roles(&id).await?))
}

pub async fn user_roles(
    Authed(app): Authed,
    Path(user): Path<String>,
) -> Result<Response, ApiError> {
    let (u, roles) = roles_of(&Rbac::new(&app.store), &user).await?;
    Ok(Json(json!({ "user": u, "roles": roles })).into_response())
}

fn role_names(body: &Body) -> Result<Vec<String>, ApiError> {
    let mut f = Fields::new(body)?;
    f.known(&["roles"]);
    let roles = f.list("roles");
    if roles.is_none() && !f.errors.contains_key("roles") {
        f.err("roles", "required field missing");
    }
    f.finish()?;
    Ok(roles.unwrap_or_default())
}

async fn known_roles(rbac: &Rbac<'_>, names: &[String]) -> Result<(), ApiError> {
    for n in names {
        if let Err(crate::rbac::RbacError::NotFound) = rbac.role(n).await {
            return Err(ApiError::bad_request(format!(
                "role not found with name '{n}'"
            )));
        }
    }
    Ok(())
}

pub async fn add_user_roles(
    Authed(app): Authed,
    Path(user): Path<String>,
    body: Body,
) -> Result<Response, ApiError> {
    let names = role_names(&body)?;
    let rbac = Rbac::new(&app.store);
    let u = rbac.user(&user).await?;
    known_roles(&rbac, &names).await?;
    let id = u["id"].as_str().unwrap_or_default();
    rbac.add_roles(id, &names).await?;
    logged(
        &app.actor,
        "add user roles",
        u["name"].as_str().unwrap_or_default(),
    );
    let roles = rbac.user_roles(id).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "user": u, "roles": roles })),
    )
        .into_response())
}

pub async fn remove_user_roles(
    Authed(app): Authed,
    Path(user): Path<String>,
    body: Body,
) -> Result<Response, ApiError> {
    let names = role_names(&body)?;
    let rbac = Rbac::new(&app.store);
    let u = rbac.user(&user).await?;
    known_roles(&rbac, &names).await?;
    rbac.remove_roles(u["id"].as_str().unwrap_or_default(), &names)
        .await?;
    logged(
        &app.actor,
        "remove user roles",
        u["name"].as_str().unwrap_or_default(),
    );
    Ok(StatusCode::NO_CONTENT.into_response())
}

// Roles.

pub async fn list_roles(Authed(app): Authed) -> Result<Response, ApiError> {
    Ok(page(Rbac::new(&app.store).roles().await?))
}

fn tags(f: &mut Fields) -> Option<Vec<String>> {
    let t = f.list("tags")?;
    if t.iter()
        .any(|x| !crate::schema::matches(crate::entities::checks::TAG, x))
    {
        f.err("tags", "invalid tag");
        return None;
    }
    Some(t)
}

pub async fn create_role(Authed(app): Authed, body: Body) -> Result<Response, ApiError> {
    let mut f = Fields::new(&body)?;
    f.known(&["name", "comment", "tags"]);
    let name = f.text("name", true);
    let comment = f.comment().flatten();
    let tags = tags(&mut f).unwrap_or_default();
    f.finish()?;
    let name = name.unwrap_or_default();
    let v = Rbac::new(&app.store)
        .create_role(&name, comment, tags)
        .await?;
    logged(&app.actor, "create role", &name);
    Ok((StatusCode::CREATED, Json(v)).into_response())
}

pub async fn get_role(Authed(app): Authed, Path(role): Path<String>) -> Result<Response, ApiError> {
    Ok(Json(Rbac::new(&app.store).role(&role).await?).into_response())
}

pub async fn update_role(
    Authed(app): Authed,
    Path(role): Path<String>,
    body: Body,
) -> Result<Response, ApiError> {
    let mut f = Fields::new(&body)?;
    f.known(&["name", "comment", "tags"]);
    let clear_tags = matches!(f.body.get("tags"), Some(Value::Null));
    let patch = RolePatch {
        name: f.text("name", false),
        comment: f.comment(),
        tags: if clear_tags {
            Some(Vec::new())
        } else {
            tags(&mut f)
        },
    };
    f.finish()?;
    let v = Rbac::new(&app.store).update_role(&role, patch).await?;
    logged(
        &app.actor,
        "update role",
        v["name"].as_str().unwrap_or_default(),
    );
    Ok(Json(v).into_response())
}

pub async fn delete_role(
    Authed(app): Authed,
    Path(role): Path<String>,
) -> Result<Response, ApiError> {
    Rbac::new(&app.store).delete_role(&role).await?;
    logged(&app.actor, "delete role", &role);
    Ok(StatusCode::NO_CONTENT.into_response())
}

// Endpoint permissions.

/// Rules name `*` or a path; paths are kept in one form (`/services`).
fn endpoint_key(e: &str) -> String {
    if e == "*" {
        e.to_string()
    } else {
        normalize(e)
    }
}

fn workspace_ok(f: &mut Fields, ws: &str) -> bool {
    if ws == "*" || ws == crate::rbac::perm::WORKSPACE {
        return true;
    }
    f.err(
        "workspace",
        "unknown workspace (Gantry has 'default', or '*')",
    );
    false
}

pub async fn list_endpoints(
    Authed(app): Authed,
    Path(role): Path<String>,
) -> Result<Response, ApiError> {
    let rbac = Rbac::new(&app.store);
    let id = rbac.role_id(&role).await?;
    Ok(page(rbac.endpoints(&id).await?))
}

pub async fn create_endpoint(
    Authed(app): Authed,
    Path(role): Path<String>,
    body: Body,
) -> Result<Response, ApiError> {
    let rbac = Rbac::new(&app.store);
    let id = rbac.role_id(&role).await?;
    let mut f = Fields::new(&body)?;
    f.known(&["endpoint", "workspace", "actions", "negative", "comment"]);
    let endpoint = f.text("endpoint", true);
    let ws = f
        .text("workspace", false)
        .unwrap_or_else(|| crate::rbac::perm::WORKSPACE.to_string());
    workspace_ok(&mut f, &ws);
    let actions = f.actions(true);
    let negative = f.boolean("negative").unwrap_or(false);
    let comment = f.comment().flatten();
    f.finish()?;
    let (Some(endpoint), Some(actions)) = (endpoint, actions) else {
        return Err(ApiError::bad_request("endpoint and actions are required"));
    };
    let rule = Rule {
        actions,
        negative,
        comment,
    };
    let v = rbac
        .put_endpoint(&id, &ws, &endpoint_key(&endpoint), rule, false)
        .await?;
    logged(&app.actor, "add endpoint permission", &role);
    Ok((StatusCode::CREATED, Json(v)).into_response())
}

pub async fn get_endpoint(
    Authed(app): Authed,
    Path((role, ws, endpoint)): Path<(String, String, String)>,
) -> Result<Response, ApiError> {
    let rbac = Rbac::new(&app.store);
    let id = rbac.role_id(&role).await?;
    Ok(Json(rbac.endpoint(&id, &ws, &endpoint_key(&endpoint)).await?).into_response())
}

pub async fn update_endpoint(
    Authed(app): Authed,
    Path((role, ws, endpoint)): Path<(String, String, String)>,
    body: Body,
) -> Result<Response, ApiError> {
    let rbac = Rbac::new(&app.store);
    let id = rbac.role_id(&role).await?;
    let key = endpoint_key(&endpoint);
    let old = rbac.endpoint(&id, &ws, &key).await?;
    let mut f = Fields::new(&body)?;
    f.known(&["actions", "negative", "comment"]);
    let actions = f.actions(false);
    let negative = f.boolean("negative");
    let comment = f.comment();
    f.finish()?;
    let rule = merged(&old, actions, negative, comment);
    let v = rbac.put_endpoint(&id, &ws, &key, rule, true).await?;
    logged(&app.actor, "update endpoint permission", &role);
    Ok(Json(v).into_response())
}

/// A PATCH over a stored permission.
fn merged(
    old: &Value,
    actions: Option<Actions>,
    negative: Option<bool>,
    comment: Option<Option<String>>,
) -> Rule {
    let old_actions = old["actions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| a.as_str().and_then(Action::parse))
        .collect::<Vec<_>>();
    Rule {
        actions: actions.unwrap_or_else(|| Actions::from_list(&old_actions)),
        negative: negative.unwrap_or(old["negative"].as_bool().unwrap_or(false)),
        comment: comment.unwrap_or_else(|| old["comment"].as_str().map(str::to_string)),
    }
}

pub async fn delete_endpoint(
    Authed(app): Authed,
    Path((role, ws, endpoint)): Path<(String, String, String)>,
) -> Result<Response, ApiError> {
    let rbac = Rbac::new(&app.store);
    let id = rbac.role_id(&role).await?;
    rbac.delete_endpoint(&id, &ws, &endpoint_key(&endpoint))
        .await?;
    logged(&app.actor, "delete endpoint permission", &role);
    Ok(StatusCode::NO_CONTENT.into_response())
}

// Entity permissions.

pub async fn list_entities(
    Authed(app): Authed,
    Path(role): Path<String>,
) -> Result<Response, ApiError> {
    let rbac = Rbac::new(&app.store);
    let id = rbac.role_id(&role).await?;
    Ok(page(rbac.entities(&id).await?))
}

pub async fn create_entity(
    Authed(app): Authed,
    Path(role): Path<String>,
    body: Body,
) -> Result<Response, ApiError> {
    let rbac = Rbac::new(&app.store);
    let id = rbac.role_id(&role).await?;
    let mut f = Fields::new(&body)?;
    f.known(&["entity_id", "entity_type", "actions", "negative", "comment"]);
    let entity_id = f.text("entity_id", true);
    let entity_type = f.text("entity_type", false);
    if let Some(t) = &entity_type
        && t != "*"
        && !crate::entities::ALL.iter().any(|d| d.name == t)
    {
        f.err("entity_type", "unknown entity type");
    }
    let actions = f.actions(true);
    let negative = f.boolean("negative").unwrap_or(false);
    let comment = f.comment().flatten();
    f.finish()?;
    let (Some(entity_id), Some(actions)) = (entity_id, actions) else {
        return Err(ApiError::bad_request("entity_id and actions are required"));
    };
    let rule = Rule {
        actions,
        negative,
        comment,
    };
    let ty = entity_type.unwrap_or_else(|| "*".into());
    let v = rbac.put_entity(&id, &entity_id, &ty, rule, false).await?;
    logged(&app.actor, "add entity permission", &role);
    Ok((StatusCode::CREATED, Json(v)).into_response())
}

pub async fn get_entity(
    Authed(app): Authed,
    Path((role, entity)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let rbac = Rbac::new(&app.store);
    let id = rbac.role_id(&role).await?;
    Ok(Json(rbac.entity(&id, &entity).await?).into_response())
}

pub async fn update_entity(
    Authed(app): Authed,
    Path((role, entity)): Path<(String, String)>,
    body: Body,
) -> Result<Response, ApiError> {
    let rbac = Rbac::new(&app.store);
    let id = rbac.role_id(&role).await?;
    let old = rbac.entity(&id, &entity).await?;
    let mut f = Fields::new(&body)?;
    f.known(&["actions", "negative", "comment"]);
    let actions = f.actions(false);
    let negative = f.boolean("negative");
    let comment = f.comment();
    f.finish()?;
    let rule = merged(&old, actions, negative, comment);
    let ty = old["entity_type"].as_str().unwrap_or("*").to_string();
    let v = rbac.put_entity(&id, &entity, &ty, rule, true).await?;
    logged(&app.actor, "update entity permission", &role);
    Ok(Json(v).into_response())
}

pub async fn delete_entity(
    Authed(app): Authed,
    Path((role, entity)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let rbac = Rbac::new(&app.store);
    let id = rbac.role_id(&role).await?;
    rbac.delete_entity(&id, &entity).await?;
    logged(&app.actor, "delete entity permission", &role);
    Ok(StatusCode::NO_CONTENT.into_response())
}
