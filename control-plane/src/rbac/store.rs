//! RBAC users, roles and permissions in their own tables (migration
//! `0003_rbac.sql`): plain rows, no revisions, no audit of config.

use super::perm::{Actions, EndpointRule, EntityRule, Principal, RoleGrant};
use super::token;
use crate::store::{Store, StoreError};
use serde_json::{Value, json};
use sqlx::Row;
use sqlx::any::AnyRow;

#[derive(Debug, thiserror::Error)]
pub enum RbacError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Conflict(String),
    #[error("Not found")]
    NotFound,
}

impl From<sqlx::Error> for RbacError {
    fn from(e: sqlx::Error) -> Self {
        if let sqlx::Error::Database(d) = &e
            && d.is_unique_violation()
        {
            return RbacError::Conflict("already exists".into());
        }
        RbacError::Store(StoreError::Db(e))
    }
}

fn now_s() -> i64 {
    chrono::Utc::now().timestamp()
}

/// A user as the API shows it: never its token or digest.
fn user_json(r: &AnyRow) -> Result<Value, sqlx::Error> {
    Ok(json!({
        "id": r.try_get::<String, _>("id")?,
        "name": r.try_get::<String, _>("name")?,
        "enabled": r.try_get::<i64, _>("enabled")? != 0,
        "comment": r.try_get::<Option<String>, _>("comment")?,
        "created_at": r.try_get::<i64, _>("created_at")?,
    }))
}

fn tags_of(s: Option<String>) -> Vec<String> {
    s.and_then(|s| serde_json::from_str(&s).ok())
        .unwrap_or_default()
}

fn role_json(r: &AnyRow) -> Result<Value, sqlx::Error> {
    let tags = tags_of(r.try_get("tags")?);
    Ok(json!({
        "id": r.try_get::<String, _>("id")?,
        "name": r.try_get::<String, _>("name")?,
        "comment": r.try_get::<Option<String>, _>("comment")?,
        "tags": if tags.is_empty() { Value::Null } else { json!(tags) },
        "created_at": r.try_get::<i64, _>("created_at")?,
    }))
}

fn endpoint_json(r: &AnyRow) -> Result<Value, sqlx::Error> {
    Ok(json!({
        "role": { "id": r.try_get::<String, _>("role_id")? },
        "workspace": r.try_get::<String, _>("workspace")?,
        "endpoint": r.try_get::<String, _>("endpoint")?,
        "actions": Actions::from_csv(&r.try_get::<String, _>("actions")?).names(),
        "negative": r.try_get::<i64, _>("negative")? != 0,
        "comment": r.try_get::<Option<String>, _>("comment")?,
        "created_at": r.try_get::<i64, _>("created_at")?,
    }))
}

fn entity_json(r: &AnyRow) -> Result<Value, sqlx::Error> {
    Ok(json!({
        "role": { "id": r.try_get::<String, _>("role_id")? },
        "entity_id": r.try_get::<String, _>("entity_id")?,
        "entity_type": r.try_get::<String, _>("entity_type")?,
        "actions": Actions::from_csv(&r.try_get::<String, _>("actions")?).names(),
        "negative": r.try_get::<i64, _>("negative")? != 0,
        "comment": r.try_get::<Option<String>, _>("comment")?,
        "created_at": r.try_get::<i64, _>("created_at")?,
    }))
}

const USER_COLS: &str = "id, name, enabled, comment, created_at";
const ROLE_COLS: &str = "id, name, comment, tags, created_at";
const ENDPOINT_COLS: &str = "role_id, workspace, endpoint, actions, negative, comment, created_at";
const ENTITY_COLS: &str = "role_id, entity_id, entity_type, actions, negative, comment, created_at";

/// What a new user or role is made of.
pub struct NewUser {
    pub name: String,
    pub token: String,
    pub enabled: bool,
    pub comment: Option<String>,
}

/// Fields of a PATCH; `None` leaves a field as it is.
#[derive(Default)]
pub struct UserPatch {
    pub name: Option<String>,
    pub token: Option<String>,
    pub enabled: Option<bool>,
    pub comment: Option<Option<String>>,
}

#[derive(Default)]
pub struct RolePatch {
    pub name: Option<String>,
    pub comment: Option<Option<String>>,
    pub tags: Option<Vec<String>>,
}

/// An endpoint or entity permission being written.
pub struct Rule {
    pub actions: Actions,
    pub negative: bool,
    pub comment: Option<String>,
}

pub struct Rbac<'a> {
    store: &'a Store,
}

impl<'a> Rbac<'a> {
    pub fn new(store: &'a Store) -> Self {
        Rbac { store }
    }

    fn pool(&self) -> &sqlx::AnyPool {
        self.store.pool()
    }

    /// Whether any user exists: then every request needs a token.
    pub async fn has_users(&self) -> Result<bool, RbacError> {
        let row = sqlx::query("SELECT COUNT(*) FROM rbac_users")
            .fetch_one(self.pool())
            .await?;
        Ok(row.try_get::<i64, _>(0)? > 0)
    }

    /// The enabled user holding `presented`, with their roles' permissions.
    pub async fn authenticate(&self, presented: &str) -> Result<Option<Principal>, RbacError> {
        let digest = token::digest(presented);
        let row = sqlx::query(
            "SELECT id, name, token_hash, enabled FROM rbac_users WHERE token_hash = $1",
        )
        .bind(&digest)
        .fetch_optional(self.pool())
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let stored: String = row.try_get("token_hash")?;
        if !token::constant_time_eq(stored.as_bytes(), digest.as_bytes())
            || row.try_get::<i64, _>("enabled")? == 0
        {
            return Ok(None);
        }
        let id: String = row.try_get("id")?;
        Ok(Some(Principal {
            name: row.try_get("name")?,
            unrestricted: false,
            roles: self.grants_of(&id).await?,
        }))
    }

    async fn grants_of(&self, user_id: &str) -> Result<Vec<RoleGrant>, RbacError> {
        let roles = sqlx::query(
            "SELECT r.id, r.name, r.tags FROM rbac_roles r \
             JOIN rbac_user_roles ur ON ur.role_id = r.id WHERE ur.user_id = $1",
        )
        .bind(user_id)
        .fetch_all(self.pool())
        .await?;
        let mut out = Vec::with_capacity(roles.len());
        for r in &roles {
            let id: String = r.try_get("id")?;
            let endpoints = sqlx::query(
                "SELECT workspace, endpoint, actions, negative FROM rbac_role_endpoints WHERE role_id = $1",
            )
            .bind(&id)
            .fetch_all(self.pool())
            .await?
            .iter()
            .map(|e| {
                Ok(EndpointRule {
                    workspace: e.try_get("workspace")?,
                    endpoint: e.try_get("endpoint")?,
                    actions: Actions::from_csv(&e.try_get::<String, _>("actions")?),
                    negative: e.try_get::<i64, _>("negative")? != 0,
                })
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()?;
            let entities = sqlx::query(
                "SELECT entity_id, entity_type, actions, negative FROM rbac_role_entities WHERE role_id = $1",
            )
            .bind(&id)
            .fetch_all(self.pool())
            .await?
            .iter()
            .map(|e| {
                Ok(EntityRule {
                    entity_id: e.try_get("entity_id")?,
                    entity_type: e.try_get("entity_type")?,
                    actions: Actions::from_csv(&e.try_get::<String, _>("actions")?),
                    negative: e.try_get::<i64, _>("negative")? != 0,
                })
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()?;
            out.push(RoleGrant {
                name: r.try_get("name")?,
                tags: tags_of(r.try_get("tags")?),
                endpoints,
                entities,
            });
        }
        Ok(out)
    }

    // Users.

    pub async fn users(&self) -> Result<Vec<Value>, RbacError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {USER_COLS} FROM rbac_users ORDER BY name"
        )))
        .fetch_all(self.pool())
        .await?;
        Ok(rows.iter().map(user_json).collect::<Result<_, _>>()?)
    }

    /// A user by id or name.
    pub async fn user(&self, key: &str) -> Result<Value, RbacError> {
        nul_free(key)?;
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {USER_COLS} FROM rbac_users WHERE id = $1 OR name = $1"
        )))
        .bind(key)
        .fetch_optional(self.pool())
        .await?
        .ok_or(RbacError::NotFound)?;
        Ok(user_json(&row)?)
    }

    pub async fn create_user(&self, u: NewUser) -> Result<Value, RbacError> {
        self.name_free("rbac_users", &u.name, None).await?;
        let id = uuid::Uuid::new_v4().to_string();
        sqlx::query(
            "INSERT INTO rbac_users (id, name, token_hash, enabled, comment, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&id)
        .bind(&u.name)
        .bind(token::digest(&u.token))
        .bind(i64::from(u.enabled))
        .bind(u.comment)
        .bind(now_s())
        .execute(self.pool())
        .await?;
        // Kong: a user named after a role gets that role.
        if self.role_id(&u.name).await.is_ok() {
            self.add_roles(&id, std::slice::from_ref(&u.name)).await?;
        }
        self.user(&id).await
    }

    pub async fn update_user(&self, key: &str, p: UserPatch) -> Result<Value, RbacError> {
        let id = self.user(key).await?["id"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        if let Some(name) = &p.name {
            self.name_free("rbac_users", name, Some(&id)).await?;
            self.set(&id, "rbac_users", "name", name.clone()).await?;
        }
        if let Some(t) = &p.token {
            self.set(&id, "rbac_users", "token_hash", token::digest(t))
                .await?;
        }
        if let Some(e) = p.enabled {
            sqlx::query("UPDATE rbac_users SET enabled = $1 WHERE id = $2")
                .bind(i64::from(e))
                .bind(&id)
                .execute(self.pool())
                .await?;
        }
        if let Some(c) = p.comment {
            sqlx::query("UPDATE rbac_users SET comment = $1 WHERE id = $2")
                .bind(c)
                .bind(&id)
                .execute(self.pool())
                .await?;
        }
        self.user(&id).await
    }

    async fn set(&self, id: &str, table: &str, col: &str, v: String) -> Result<(), RbacError> {
        // `table` and `col` are fixed names from this module.
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE {table} SET {col} = $1 WHERE id = $2"
        )))
        .bind(v)
        .bind(id)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    async fn name_free(
        &self,
        table: &str,
        name: &str,
        except: Option<&str>,
    ) -> Result<(), RbacError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT id FROM {table} WHERE name = $1"
        )))
        .bind(name)
        .fetch_optional(self.pool())
        .await?;
        match row {
            Some(r) if Some(r.try_get::<String, _>(0)?.as_str()) != except => {
                Err(RbacError::Conflict(format!(
                    "UNIQUE violation detected on '{{name=\"{name}\"}}'"
                )))
            }
            _ => Ok(()),
        }
    }

    pub async fn delete_user(&self, key: &str) -> Result<(), RbacError> {
        let id = match self.user(key).await {
            Ok(u) => u["id"].as_str().unwrap_or_default().to_string(),
            Err(RbacError::NotFound) => return Ok(()),
            Err(e) => return Err(e),
        };
        let mut tx = self.pool().begin().await?;
        sqlx::query("DELETE FROM rbac_user_roles WHERE user_id = $1")
            .bind(&id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM rbac_users WHERE id = $1")
            .bind(&id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    // A user's roles.

    pub async fn user_roles(&self, user_id: &str) -> Result<Vec<Value>, RbacError> {
        let rows = sqlx::query(
            "SELECT r.id, r.name, r.comment, r.tags, r.created_at FROM rbac_roles r \
             JOIN rbac_user_roles ur ON ur.role_id = r.id WHERE ur.user_id = $1 ORDER BY r.name",
        )
        .bind(user_id)
        .fetch_all(self.pool())
        .await?;
        Ok(rows.iter().map(role_json).collect::<Result<_, _>>()?)
    }

    /// Resolves every role name first, so an unknown one changes nothing.
    pub async fn add_roles(&self, user_id: &str, names: &[String]) -> Result<(), RbacError> {
        let mut ids = Vec::new();
        for n in names {
            ids.push(self.role_id(n).await?);
        }
        for rid in ids {
            sqlx::query(
                "INSERT INTO rbac_user_roles (user_id, role_id) VALUES ($1, $2) \
                 ON CONFLICT (user_id, role_id) DO NOTHING",
            )
            .bind(user_id)
            .bind(rid)
            .execute(self.pool())
            .await?;
        }
        Ok(())
    }

    pub async fn remove_roles(&self, user_id: &str, names: &[String]) -> Result<(), RbacError> {
        let mut ids = Vec::new();
        for n in names {
            ids.push(self.role_id(n).await?);
        }
        for rid in ids {
            sqlx::query("DELETE FROM rbac_user_roles WHERE user_id = $1 AND role_id = $2")
                .bind(user_id)
                .bind(rid)
                .execute(self.pool())
                .await?;
        }
        Ok(())
    }

    // Roles.

    pub async fn roles(&self) -> Result<Vec<Value>, RbacError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {ROLE_COLS} FROM rbac_roles ORDER BY name"
        )))
        .fetch_all(self.pool())
        .await?;
        Ok(rows.iter().map(role_json).collect::<Result<_, _>>()?)
    }

    pub async fn role(&self, key: &str) -> Result<Value, RbacError> {
        nul_free(key)?;
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {ROLE_COLS} FROM rbac_roles WHERE id = $1 OR name = $1"
        )))
        .bind(key)
        .fetch_optional(self.pool())
        .await?
        .ok_or(RbacError::NotFound)?;
        Ok(role_json(&row)?)
    }

    pub async fn role_id(&self, key: &str) -> Result<String, RbacError> {
        Ok(self.role(key).await?["id"]
            .as_str()
            .unwrap_or_default()
            .to_string())
    }

    pub async fn create_role(
        &self,
        name: &str,
        comment: Option<String>,
        tags: Vec<String>,
    ) -> Result<Value, RbacError> {
        self.name_free("rbac_roles", name, None).await?;
        let id = uuid::Uuid::new_v4().to_string();
        sqlx::query(
            "INSERT INTO rbac_roles (id, name, comment, tags, created_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&id)
        .bind(name)
        .bind(comment)
        .bind(tags_column(&tags))
        .bind(now_s())
        .execute(self.pool())
        .await?;
        self.role(&id).await
    }

    pub async fn update_role(&self, key: &str, p: RolePatch) -> Result<Value, RbacError> {
        let id = self.role_id(key).await?;
        if let Some(name) = &p.name {
            self.name_free("rbac_roles", name, Some(&id)).await?;
            self.set(&id, "rbac_roles", "name", name.clone()).await?;
        }
        if let Some(c) = p.comment {
            sqlx::query("UPDATE rbac_roles SET comment = $1 WHERE id = $2")
                .bind(c)
                .bind(&id)
                .execute(self.pool())
                .await?;
        }
        if let Some(t) = p.tags {
            sqlx::query("UPDATE rbac_roles SET tags = $1 WHERE id = $2")
                .bind(tags_column(&t))
                .bind(&id)
                .execute(self.pool())
                .await?;
        }
        self.role(&id).await
    }

    pub async fn delete_role(&self, key: &str) -> Result<(), RbacError> {
        let id = match self.role_id(key).await {
            Ok(id) => id,
            Err(RbacError::NotFound) => return Ok(()),
            Err(e) => return Err(e),
        };
        let mut tx = self.pool().begin().await?;
        for table in [
            "rbac_user_roles",
            "rbac_role_endpoints",
            "rbac_role_entities",
        ] {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "DELETE FROM {table} WHERE role_id = $1"
            )))
            .bind(&id)
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query("DELETE FROM rbac_roles WHERE id = $1")
            .bind(&id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    // Endpoint permissions.

    pub async fn endpoints(&self, role_id: &str) -> Result<Vec<Value>, RbacError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {ENDPOINT_COLS} FROM rbac_role_endpoints WHERE role_id = $1 ORDER BY workspace, endpoint"
        )))
        .bind(role_id)
        .fetch_all(self.pool())
        .await?;
        Ok(rows.iter().map(endpoint_json).collect::<Result<_, _>>()?)
    }

    pub async fn endpoint(
        &self,
        role_id: &str,
        workspace: &str,
        endpoint: &str,
    ) -> Result<Value, RbacError> {
        nul_free(workspace)?;
        nul_free(endpoint)?;
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {ENDPOINT_COLS} FROM rbac_role_endpoints WHERE role_id = $1 AND workspace = $2 AND endpoint = $3"
        )))
        .bind(role_id)
        .bind(workspace)
        .bind(endpoint)
        .fetch_optional(self.pool())
        .await?
        .ok_or(RbacError::NotFound)?;
        Ok(endpoint_json(&row)?)
    }

    pub async fn put_endpoint(
        &self,
        role_id: &str,
        workspace: &str,
        endpoint: &str,
        rule: Rule,
        replace: bool,
    ) -> Result<Value, RbacError> {
        let exists = self.endpoint(role_id, workspace, endpoint).await.is_ok();
        if exists && !replace {
            return Err(RbacError::Conflict(format!(
                "UNIQUE violation detected on '{{role={{id=\"{role_id}\"}},workspace=\"{workspace}\",endpoint=\"{endpoint}\"}}'"
            )));
        }
        if exists {
            sqlx::query(
                "UPDATE rbac_role_endpoints SET actions = $1, negative = $2, comment = $3 \
                 WHERE role_id = $4 AND workspace = $5 AND endpoint = $6",
            )
            .bind(rule.actions.to_csv())
            .bind(i64::from(rule.negative))
            .bind(rule.comment)
            .bind(role_id)
            .bind(workspace)
            .bind(endpoint)
            .execute(self.pool())
            .await?;
        } else {
            sqlx::query(
                "INSERT INTO rbac_role_endpoints (role_id, workspace, endpoint, actions, negative, comment, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(role_id)
            .bind(workspace)
            .bind(endpoint)
            .bind(rule.actions.to_csv())
            .bind(i64::from(rule.negative))
            .bind(rule.comment)
            .bind(now_s())
            .execute(self.pool())
            .await?;
        }
        self.endpoint(role_id, workspace, endpoint).await
    }

    pub async fn delete_endpoint(
        &self,
        role_id: &str,
        workspace: &str,
        endpoint: &str,
    ) -> Result<(), RbacError> {
        if nul_free(workspace).and(nul_free(endpoint)).is_err() {
            return Ok(());
        }
        sqlx::query(
            "DELETE FROM rbac_role_endpoints WHERE role_id = $1 AND workspace = $2 AND endpoint = $3",
        )
        .bind(role_id)
        .bind(workspace)
        .bind(endpoint)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    // Entity permissions.

    pub async fn entities(&self, role_id: &str) -> Result<Vec<Value>, RbacError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {ENTITY_COLS} FROM rbac_role_entities WHERE role_id = $1 ORDER BY entity_id"
        )))
        .bind(role_id)
        .fetch_all(self.pool())
        .await?;
        Ok(rows.iter().map(entity_json).collect::<Result<_, _>>()?)
    }

    pub async fn entity(&self, role_id: &str, entity_id: &str) -> Result<Value, RbacError> {
        nul_free(entity_id)?;
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {ENTITY_COLS} FROM rbac_role_entities WHERE role_id = $1 AND entity_id = $2"
        )))
        .bind(role_id)
        .bind(entity_id)
        .fetch_optional(self.pool())
        .await?
        .ok_or(RbacError::NotFound)?;
        Ok(entity_json(&row)?)
    }

    pub async fn put_entity(
        &self,
        role_id: &str,
        entity_id: &str,
        entity_type: &str,
        rule: Rule,
        replace: bool,
    ) -> Result<Value, RbacError> {
        let exists = self.entity(role_id, entity_id).await.is_ok();
        if exists && !replace {
            return Err(RbacError::Conflict(format!(
                "UNIQUE violation detected on '{{role={{id=\"{role_id}\"}},entity_id=\"{entity_id}\"}}'"
            )));
        }
        if exists {
            sqlx::query(
                "UPDATE rbac_role_entities SET actions = $1, negative = $2, comment = $3 \
                 WHERE role_id = $4 AND entity_id = $5",
            )
            .bind(rule.actions.to_csv())
            .bind(i64::from(rule.negative))
            .bind(rule.comment)
            .bind(role_id)
            .bind(entity_id)
            .execute(self.pool())
            .await?;
        } else {
            sqlx::query(
                "INSERT INTO rbac_role_entities (role_id, entity_id, entity_type, actions, negative, comment, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(role_id)
            .bind(entity_id)
            .bind(entity_type)
            .bind(rule.actions.to_csv())
            .bind(i64::from(rule.negative))
            .bind(rule.comment)
            .bind(now_s())
            .execute(self.pool())
            .await?;
        }
        self.entity(role_id, entity_id).await
    }

    pub async fn delete_entity(&self, role_id: &str, entity_id: &str) -> Result<(), RbacError> {
        if nul_free(entity_id).is_err() {
            return Ok(());
        }
        sqlx::query("DELETE FROM rbac_role_entities WHERE role_id = $1 AND entity_id = $2")
            .bind(role_id)
            .bind(entity_id)
            .execute(self.pool())
            .await?;
        Ok(())
    }
}

/// No row holds NUL (names refuse control characters), and Postgres
/// could not even be asked: such a key names nothing.
fn nul_free(key: &str) -> Result<(), RbacError> {
    if key.contains('\0') {
        Err(RbacError::NotFound)
    } else {
        Ok(())
    }
}

fn tags_column(tags: &[String]) -> Option<String> {
    (!tags.is_empty()).then(|| Value::from(tags.to_vec()).to_string())
}
