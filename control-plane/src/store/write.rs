//! One write transaction: the unit in which entities change and a new
//! revision, its audit rows and its notification are committed together.

use super::{Backend, ChangeFeed, Store, StoreError, Stored, decode_with, encode_with, now_ms};
use crate::metrics::METRICS;
use serde_json::Value;
use std::collections::HashMap;
// Every dynamic SQL string below is built from fixed fragments, validated
// names and numbers; values always travel as bind parameters.
use sqlx::AssertSqlSafe;
use sqlx::{Any, Row, Transaction};
use tokio::sync::OwnedMutexGuard;

pub struct WriteTx {
    tx: Transaction<'static, Any>,
    _guard: OwnedMutexGuard<()>,
    backend: Backend,
    feed: ChangeFeed,
    rev: i64,
    actor: String,
    at: i64,
    changes: usize,
    /// (kind, id) of every entity version written, in order.
    written: Vec<(String, String)>,
    secrets: Option<std::sync::Arc<dyn super::SecretCodec>>,
    health: std::sync::Arc<super::Health>,
    /// What this transaction read or wrote, by (kind, id) and by (kind,
    /// key): a write reads the same few entities several times (to
    /// resolve, to check, to admit), and writes hold the writer lock, so
    /// every round trip saved shortens the queue. Only this transaction
    /// writes these rows until it commits (the head row's lock), so what it
    /// saw stays true.
    seen: HashMap<(String, String), Option<Value>>,
    seen_keys: HashMap<(String, String), Option<String>>,
    /// When the writer lock was taken.
    started: std::time::Instant,
}

impl WriteTx {
    pub(super) async fn begin(
        store: &Store,
        guard: OwnedMutexGuard<()>,
        actor: &str,
    ) -> Result<Self, StoreError> {
        let started = std::time::Instant::now();
        // SQLite: take the write lock up front so a concurrent writer waits
        // on busy_timeout instead of failing a lock upgrade.
        let mut tx = match store.backend() {
            Backend::Sqlite => store.pool().begin_with("BEGIN IMMEDIATE").await?,
            Backend::Postgres => store.pool().begin().await?,
        };
        // Bumping the head row locks it until commit: writers queue here,
        // and a rollback leaves no gap.
        let row = sqlx::query("UPDATE config_head SET rev = rev + 1 WHERE id = 1 RETURNING rev")
            .fetch_one(&mut *tx)
            .await?;
        let rev: i64 = row.try_get(0)?;
        Ok(WriteTx {
            tx,
            _guard: guard,
            backend: store.backend(),
            feed: store.feed().clone(),
            rev,
            actor: actor.to_string(),
            at: now_ms(),
            changes: 0,
            written: Vec::new(),
            secrets: store.secrets(),
            health: store.health().clone(),
            seen: HashMap::new(),
            seen_keys: HashMap::new(),
            started,
        })
    }

    /// The revision this transaction will commit as.
    pub fn revision(&self) -> i64 {
        self.rev
    }

    pub fn changes(&self) -> usize {
        self.changes
    }

    /// (kind, id) of every entity created or changed so far (not deleted).
    pub fn written(&self) -> &[(String, String)] {
        &self.written
    }

    pub async fn get(&mut self, kind: &str, id: &str) -> Result<Option<Value>, StoreError> {
        let at = (kind.to_string(), id.to_string());
        if let Some(v) = self.seen.get(&at) {
            return Ok(v.clone());
        }
        let v = self.read(kind, id).await?;
        self.seen.insert(at, v.clone());
        Ok(v)
    }

    async fn read(&mut self, kind: &str, id: &str) -> Result<Option<Value>, StoreError> {
        let row = sqlx::query(
            "SELECT data FROM entity_versions WHERE kind = $1 AND id = $2 AND rev_to IS NULL",
        )
        .bind(kind)
        .bind(id)
        .fetch_optional(&mut *self.tx)
        .await?;
        row.map(|r| decode_with(self.secrets.as_deref(), kind, &r.try_get::<String, _>(0)?))
            .transpose()
    }

    pub async fn find_key(&mut self, kind: &str, key: &str) -> Result<Option<String>, StoreError> {
        let at = (kind.to_string(), key.to_string());
        if let Some(id) = self.seen_keys.get(&at) {
            return Ok(id.clone());
        }
        let row = sqlx::query("SELECT id FROM entity_keys WHERE kind = $1 AND key = $2")
            .bind(kind)
            .bind(index_value(key))
            .fetch_optional(&mut *self.tx)
            .await?;
        let id = row.map(|r| r.try_get::<String, _>(0)).transpose()?;
        self.seen_keys.insert(at, id.clone());
        Ok(id)
    }

    /// Keeps what the transaction saw true after it wrote (kind, id):
    /// the entity's old keys are gone, its new ones point at it.
    fn wrote(&mut self, kind: &str, id: &str, data: Option<&Value>, keys: &[String]) {
        self.seen
            .insert((kind.to_string(), id.to_string()), data.cloned());
        self.seen_keys
            .retain(|(k, _), v| !(k == kind && v.as_deref() == Some(id)));
        for key in keys {
            self.seen_keys
                .insert((kind.to_string(), key.clone()), Some(id.to_string()));
        }
    }

    /// Current entities that reference (kind, id).
    pub async fn referencing(
        &mut self,
        kind: &str,
        id: &str,
    ) -> Result<Vec<(String, String)>, StoreError> {
        let rows = sqlx::query("SELECT kind, id FROM entity_refs WHERE ref_kind = $1 AND ref_id = $2 ORDER BY kind, id")
            .bind(kind)
            .bind(id)
            .fetch_all(&mut *self.tx)
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect()
    }

    /// Every current entity, as seen inside this transaction.
    pub async fn all_current(&mut self) -> Result<Vec<Stored>, StoreError> {
        let rows = sqlx::query(
            "SELECT kind, id, data FROM entity_versions WHERE rev_to IS NULL ORDER BY seq",
        )
        .fetch_all(&mut *self.tx)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(Stored {
                    kind: r.try_get(0)?,
                    id: r.try_get(1)?,
                    data: decode_with(
                        self.secrets.as_deref(),
                        &r.try_get::<String, _>(0)?,
                        &r.try_get::<String, _>(2)?,
                    )?,
                })
            })
            .collect()
    }

    /// Writes a new version of an entity with its index rows and an audit
    /// row. `before`/`after` for the audit must already be redacted.
    #[allow(clippy::too_many_arguments)]
    pub async fn put(
        &mut self,
        kind: &str,
        id: &str,
        data: &Value,
        index: &Index,
        operation: &str,
        audit_before: Option<&Value>,
        audit_after: Option<&Value>,
    ) -> Result<(), StoreError> {
        self.written.push((kind.to_string(), id.to_string()));
        self.wrote(kind, id, Some(data), &index.keys);
        if self.backend == Backend::Postgres {
            return self
                .put_batched(kind, id, data, index, operation, audit_before, audit_after)
                .await;
        }
        self.close_version(kind, id).await?;
        sqlx::query(
            "INSERT INTO entity_versions (kind, id, data, rev_from) VALUES ($1, $2, $3, $4)",
        )
        .bind(kind)
        .bind(id)
        .bind(encode_with(self.secrets.as_deref(), kind, data))
        .bind(self.rev)
        .execute(&mut *self.tx)
        .await?;
        self.clear_index(kind, id).await?;
        for key in &index.keys {
            sqlx::query("INSERT INTO entity_keys (kind, key, id) VALUES ($1, $2, $3)")
                .bind(kind)
                .bind(index_value(key))
                .bind(id)
                .execute(&mut *self.tx)
                .await?;
        }
        for (rk, rid) in &index.refs {
            sqlx::query(
                "INSERT INTO entity_refs (kind, id, ref_kind, ref_id) VALUES ($1, $2, $3, $4)",
            )
            .bind(kind)
            .bind(id)
            .bind(rk.as_str())
            .bind(rid.as_str())
            .execute(&mut *self.tx)
            .await?;
        }
        for tag in &index.tags {
            sqlx::query("INSERT INTO entity_tags (kind, id, tag) VALUES ($1, $2, $3)")
                .bind(kind)
                .bind(id)
                .bind(index_value(tag))
                .execute(&mut *self.tx)
                .await?;
        }
        self.audit(operation, kind, id, audit_before, audit_after)
            .await
    }

    /// Deletes an entity; `before` for the audit must already be redacted.
    pub async fn delete(
        &mut self,
        kind: &str,
        id: &str,
        audit_before: Option<&Value>,
    ) -> Result<(), StoreError> {
        self.wrote(kind, id, None, &[]);
        if self.backend == Backend::Postgres {
            self.close_and_clear(kind, id).await?;
        } else {
            self.close_version(kind, id).await?;
            self.clear_index(kind, id).await?;
        }
        self.audit("delete", kind, id, audit_before, None).await
    }

    /// Postgres: the old version closed and its index rows dropped in one
    /// statement. Writes are serialized (the head row's lock), so every
    /// round trip saved is a shorter queue for the next writer.
    async fn close_and_clear(&mut self, kind: &str, id: &str) -> Result<(), StoreError> {
        sqlx::query(
            "WITH closed AS (UPDATE entity_versions SET rev_to = $1 \
                             WHERE kind = $2 AND id = $3 AND rev_to IS NULL), \
                  k AS (DELETE FROM entity_keys WHERE kind = $2 AND id = $3), \
                  r AS (DELETE FROM entity_refs WHERE kind = $2 AND id = $3) \
             DELETE FROM entity_tags WHERE kind = $2 AND id = $3",
        )
        .bind(self.rev)
        .bind(kind)
        .bind(id)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    /// Postgres: `put` in two statements instead of one per row: the old
    /// version closed with its index (one), then the new version, its
    /// index rows and the audit row (one, with data-modifying CTEs).
    #[allow(clippy::too_many_arguments)]
    async fn put_batched(
        &mut self,
        kind: &str,
        id: &str,
        data: &Value,
        index: &Index,
        operation: &str,
        audit_before: Option<&Value>,
        audit_after: Option<&Value>,
    ) -> Result<(), StoreError> {
        self.close_and_clear(kind, id).await?;
        // $1 kind, $2 id, $3 rev, $4 time; the rest numbered as they are
        // added. Values are always bound, so the text depends only on how
        // many index rows there are and prepared statements are reused.
        let mut params: Vec<Option<String>> = Vec::new();
        let mut next = |v: Option<String>| {
            params.push(v);
            format!("${}", params.len() + 4)
        };
        let mut sql = String::from("WITH ");
        let data_p = next(Some(encode_with(self.secrets.as_deref(), kind, data)));
        sql += &format!(
            "v AS (INSERT INTO entity_versions (kind, id, data, rev_from) VALUES ($1, $2, {data_p}, $3))"
        );
        let rows = |sql: &mut String, name: &str, head: &str, values: Vec<String>| {
            if !values.is_empty() {
                *sql += &format!(
                    ", {name} AS (INSERT INTO {head} VALUES {})",
                    values.join(", ")
                );
            }
        };
        let keys = index
            .keys
            .iter()
            .map(|k| format!("($1, {}, $2)", next(Some(index_value(k)))))
            .collect();
        rows(&mut sql, "k", "entity_keys (kind, key, id)", keys);
        let refs = index
            .refs
            .iter()
            .map(|(rk, rid)| {
                let (a, b) = (next(Some(rk.clone())), next(Some(rid.clone())));
                format!("($1, $2, {a}, {b})")
            })
            .collect();
        rows(
            &mut sql,
            "r",
            "entity_refs (kind, id, ref_kind, ref_id)",
            refs,
        );
        let tags = index
            .tags
            .iter()
            .map(|t| format!("($1, $2, {})", next(Some(index_value(t)))))
            .collect();
        rows(&mut sql, "t", "entity_tags (kind, id, tag)", tags);
        let (actor, op) = (next(Some(self.actor.clone())), next(Some(operation.into())));
        let (before, after) = (
            next(audit_before.map(|v| v.to_string())),
            next(audit_after.map(|v| v.to_string())),
        );
        sql += &format!(
            " INSERT INTO audit (rev, at, actor, operation, kind, entity_id, before, after) \
             VALUES ($3, $4, {actor}, {op}, $1, $2, {before}, {after})"
        );
        let mut q = sqlx::query(AssertSqlSafe(sql))
            .bind(kind)
            .bind(id)
            .bind(self.rev)
            .bind(self.at);
        for p in params {
            q = q.bind(p);
        }
        q.execute(&mut *self.tx).await?;
        self.changes += 1;
        Ok(())
    }

    async fn close_version(&mut self, kind: &str, id: &str) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE entity_versions SET rev_to = $1 WHERE kind = $2 AND id = $3 AND rev_to IS NULL",
        )
        .bind(self.rev)
        .bind(kind)
        .bind(id)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    async fn clear_index(&mut self, kind: &str, id: &str) -> Result<(), StoreError> {
        for table in ["entity_keys", "entity_refs", "entity_tags"] {
            sqlx::query(AssertSqlSafe(format!(
                "DELETE FROM {table} WHERE kind = $1 AND id = $2"
            )))
            .bind(kind)
            .bind(id)
            .execute(&mut *self.tx)
            .await?;
        }
        Ok(())
    }

    async fn audit(
        &mut self,
        operation: &str,
        kind: &str,
        id: &str,
        before: Option<&Value>,
        after: Option<&Value>,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO audit (rev, at, actor, operation, kind, entity_id, before, after) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(self.rev)
        .bind(self.at)
        .bind(self.actor.as_str())
        .bind(operation)
        .bind(kind)
        .bind(id)
        .bind(before.map(|v| v.to_string()))
        .bind(after.map(|v| v.to_string()))
        .execute(&mut *self.tx)
        .await?;
        self.changes += 1;
        Ok(())
    }

    /// Commits as a new revision and tells every replica. A transaction
    /// that changed nothing is rolled back and the revision stays as it was.
    pub async fn commit(mut self, operation: &str, summary: &str) -> Result<Commit, StoreError> {
        if self.changes == 0 {
            self.tx.rollback().await?;
            return Ok(Commit {
                revision: self.rev - 1,
                changed: false,
            });
        }
        const INSERT: &str = "INSERT INTO revisions (rev, created_at, actor, operation, summary) VALUES ($1, $2, $3, $4, $5)";
        let sql = if self.backend == Backend::Postgres {
            // The notification is delivered at commit, to every LISTENing
            // replica; sent in the same statement as the revision row.
            format!("WITH r AS ({INSERT}) SELECT pg_notify($6, $7)")
        } else {
            INSERT.to_string()
        };
        let mut q = sqlx::query(AssertSqlSafe(sql))
            .bind(self.rev)
            .bind(self.at)
            .bind(self.actor.as_str())
            .bind(operation)
            .bind(summary);
        if self.backend == Backend::Postgres {
            q = q.bind(self.feed.channel()).bind(self.rev.to_string());
        }
        let health = self.health.clone();
        let done = async {
            q.execute(&mut *self.tx).await?;
            self.tx.commit().await
        };
        done.await.map_err(StoreError::from).inspect_err(|e| {
            METRICS.store_write_failures.inc();
            health.observe(e)
        })?;
        METRICS
            .store_write
            .observe(self.started.elapsed().as_secs_f64());
        self.feed.publish(self.rev);
        Ok(Commit {
            revision: self.rev,
            changed: true,
        })
    }
}

/// An index value as stored: long ones by their digest, because a B-tree
/// entry has a size limit (about 2.7 kB on Postgres) and values are free text.
pub(crate) fn index_value(v: &str) -> String {
    const MAX: usize = 256;
    if v.len() <= MAX {
        return v.to_string();
    }
    use sha2::{Digest, Sha256};
    let hex: String = Sha256::digest(v.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sha256:{hex}")
}

/// The index rows kept for the current version of an entity.
#[derive(Debug, Default, Clone)]
pub struct Index {
    /// Unique keys within the kind ("name=x", "cache=...").
    pub keys: Vec<String>,
    /// (kind, id) of every entity this one references.
    pub refs: Vec<(String, String)>,
    pub tags: Vec<String>,
}

#[derive(Debug, Clone, Copy)]
pub struct Commit {
    pub revision: i64,
    pub changed: bool,
}
