//! The config store: every entity version, the revision log and the audit
//! trail, on Postgres (production, shared by replicas) or SQLite (the
//! embedded default). Both backends run the same SQL through sqlx's `Any`
//! driver; only migrations and the change-feed transport differ.

mod feed;
mod health;
mod write;

pub use feed::ChangeFeed;
pub use health::Health;
pub use write::{Commit, Index, WriteTx};

use serde_json::Value;
// Every dynamic SQL string below is built from fixed fragments, validated
// names and numbers; values always travel as bind parameters.
use sqlx::AssertSqlSafe;
use sqlx::any::{AnyPoolOptions, install_default_drivers};
use sqlx::{AnyPool, Row};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Mutex;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("unsupported database url (expected postgres:// or sqlite:)")]
    UnsupportedUrl,
    #[error("invalid schema name {0:?} (letters, digits and _ only)")]
    InvalidSchema(String),
    /// The database did not answer recently; nothing was tried.
    #[error("the database is unreachable")]
    Unavailable,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    Sqlite,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Backend::Postgres => "postgres",
            Backend::Sqlite => "sqlite",
        }
    }
}

/// Where and how to connect.
#[derive(Clone, Debug)]
pub struct StoreConfig {
    pub url: String,
    /// Postgres schema to keep Gantry's tables in (created if missing).
    pub schema: Option<String>,
    pub max_connections: u32,
    /// How often the change feed re-reads the head revision, as a safety
    /// net under LISTEN/NOTIFY; zero turns the poll off.
    pub feed_poll: Duration,
}

impl StoreConfig {
    pub fn new(url: impl Into<String>) -> Self {
        StoreConfig {
            url: url.into(),
            schema: None,
            max_connections: 8,
            feed_poll: Duration::from_secs(1),
        }
    }
}

/// One entity as stored: its collection, id and normalised JSON.
#[derive(Clone, Debug, PartialEq)]
pub struct Stored {
    pub kind: String,
    pub id: String,
    pub data: Value,
}

/// A page of one collection.
#[derive(Debug)]
pub struct Page {
    pub items: Vec<Value>,
    /// The id after which the next page starts, when there is one.
    pub next: Option<String>,
}

/// How a listing is narrowed.
#[derive(Debug, Default, Clone)]
pub struct ListFilter {
    /// Only entities referencing this (kind, id), e.g. routes of a service.
    pub referencing: Option<(String, String)>,
    pub tags: Vec<String>,
    /// true: all tags must match (`a,b`); false: any (`a/b`).
    pub tags_all: bool,
    pub after: Option<String>,
    pub size: usize,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Revision {
    pub revision: i64,
    pub created_at: i64,
    pub actor: String,
    pub operation: String,
    pub summary: String,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct AuditEntry {
    pub id: i64,
    pub revision: i64,
    pub at: i64,
    pub actor: String,
    pub operation: String,
    pub entity_type: String,
    pub entity_id: String,
    pub before: Option<Value>,
    pub after: Option<Value>,
}

#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    /// One writer at a time in this process; the head row serialises
    /// writers across processes.
    write_lock: Arc<Mutex<()>>,
    feed: ChangeFeed,
    /// Encrypts secret fields on their way into the database and opens
    /// them on the way out (`crate::at_rest`); None stores them as given.
    secrets: Option<Arc<dyn SecretCodec>>,
    health: Arc<Health>,
    /// The health probe's own connection (see `store::Health`).
    probe: AnyPool,
}

/// What encrypts an entity's secret fields at rest. The store calls it on
/// every entity version it writes and reads, so nothing above the store
/// sees a ciphertext and nothing below it a secret.
pub trait SecretCodec: Send + Sync {
    fn seal(&self, kind: &str, data: &mut Value);
    fn open(&self, kind: &str, data: &mut Value) -> Result<(), StoreError>;
}

static MIGRATE_PG: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");
static MIGRATE_SQLITE: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

pub(crate) fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl Store {
    /// Connects and runs migrations.
    pub async fn open(cfg: &StoreConfig) -> Result<Store, StoreError> {
        let store = Self::connect(cfg).await?;
        store.migrate().await?;
        store.feed.start(&store, cfg).await?;
        store.feed.adopt(tokio::spawn(
            store.health.clone().watch(store.probe.clone()),
        ));
        Ok(store)
    }

    /// Connects without migrating or listening (for `gantry-cp migrate`).
    pub async fn connect(cfg: &StoreConfig) -> Result<Store, StoreError> {
        install_default_drivers();
        let backend = if cfg.url.starts_with("postgres://") || cfg.url.starts_with("postgresql://")
        {
            Backend::Postgres
        } else if cfg.url.starts_with("sqlite:") {
            Backend::Sqlite
        } else {
            return Err(StoreError::UnsupportedUrl);
        };
        let schema = match (&cfg.schema, backend) {
            (Some(s), Backend::Postgres) => {
                if s.is_empty() || !s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                    return Err(StoreError::InvalidSchema(s.clone()));
                }
                Some(s.clone())
            }
            _ => None,
        };
        if let Some(s) = &schema {
            // Create the schema on a throwaway connection before the pool
            // points its search_path at it.
            let bootstrap = AnyPoolOptions::new()
                .max_connections(1)
                .connect(&cfg.url)
                .await?;
            sqlx::query(AssertSqlSafe(format!(
                "CREATE SCHEMA IF NOT EXISTS \"{s}\""
            )))
            .execute(&bootstrap)
            .await?;
            bootstrap.close().await;
        }
        let mut opts = AnyPoolOptions::new()
            .max_connections(if backend == Backend::Sqlite {
                cfg.max_connections.min(4)
            } else {
                cfg.max_connections
            })
            // Connecting to a database that refuses is retried until this
            // deadline; `Health` keeps requests from queueing behind it.
            .acquire_timeout(Duration::from_secs(3));
        let setup: Option<String> = match backend {
            Backend::Postgres => schema.as_ref().map(|s| format!("SET search_path TO \"{s}\"")),
            Backend::Sqlite => Some(
                "PRAGMA journal_mode = WAL; PRAGMA busy_timeout = 10000; PRAGMA synchronous = NORMAL;".into(),
            ),
        };
        if let Some(sql) = setup {
            opts = opts.after_connect(move |conn, _| {
                let sql = sql.clone();
                Box::pin(async move {
                    sqlx::raw_sql(AssertSqlSafe(sql)).execute(conn).await?;
                    Ok(())
                })
            });
        }
        let url = if backend == Backend::Sqlite && !cfg.url.contains("mode=") {
            // Create the file on first start so a new user needs nothing.
            let sep = if cfg.url.contains('?') { '&' } else { '?' };
            format!("{}{sep}mode=rwc", cfg.url)
        } else {
            cfg.url.clone()
        };
        let pool = opts.connect(&url).await?;
        // The health probe has a connection of its own: a pool busy with
        // long requests must not read as a database that does not answer.
        let probe = AnyPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(2))
            .connect_lazy(&url)?;
        let channel = feed::channel_name(schema.as_deref());
        Ok(Store {
            pool,
            backend,
            write_lock: Arc::new(Mutex::new(())),
            feed: ChangeFeed::new(channel),
            secrets: None,
            health: Arc::new(Health::default()),
            probe,
        })
    }

    pub async fn migrate(&self) -> Result<(), StoreError> {
        match self.backend {
            Backend::Postgres => MIGRATE_PG.run(&self.pool).await?,
            Backend::Sqlite => MIGRATE_SQLITE.run(&self.pool).await?,
        }
        Ok(())
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub fn feed(&self) -> &ChangeFeed {
        &self.feed
    }

    pub async fn close(&self) {
        self.feed.stop();
        self.pool.close().await;
    }

    /// Begins a write: takes the writer lock and allocates the next
    /// revision. Dropping the transaction without `commit` changes nothing.
    /// While the database is unreachable this fails at once (see
    /// [`Health`]), also for writers that were queued for the lock.
    pub async fn begin_write(&self, actor: &str) -> Result<WriteTx, StoreError> {
        self.available()?;
        let guard = self.write_lock.clone().lock_owned().await;
        self.available()?;
        WriteTx::begin(self, guard, actor)
            .await
            .inspect_err(|e| self.health.observe(e))
    }

    /// Whether the database answers, as last seen.
    pub fn health(&self) -> &Arc<Health> {
        &self.health
    }

    fn available(&self) -> Result<(), StoreError> {
        match self.health.is_down() {
            true => Err(StoreError::Unavailable),
            false => Ok(()),
        }
    }

    /// Fails at once while the database is known to be unreachable.
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.available()?;
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// The newest committed revision; fails at once while the database is
    /// known to be unreachable (the probes and the feed's poll ask often).
    pub async fn current_revision(&self) -> Result<i64, StoreError> {
        self.available()?;
        let row = sqlx::query("SELECT rev FROM config_head WHERE id = 1")
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get::<i64, _>(0)?)
    }

    pub async fn get(&self, kind: &str, id: &str) -> Result<Option<Value>, StoreError> {
        let row = sqlx::query(
            "SELECT data FROM entity_versions WHERE kind = $1 AND id = $2 AND rev_to IS NULL",
        )
        .bind(kind)
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| self.decode(kind, &r.try_get::<String, _>(0)?))
            .transpose()
    }

    pub async fn find_key(&self, kind: &str, key: &str) -> Result<Option<String>, StoreError> {
        let row = sqlx::query("SELECT id FROM entity_keys WHERE kind = $1 AND key = $2")
            .bind(kind)
            .bind(write::index_value(key))
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.try_get::<String, _>(0)).transpose()?)
    }

    /// One page of a collection, ordered by id.
    pub async fn list(&self, kind: &str, f: &ListFilter) -> Result<Page, StoreError> {
        let mut sql = String::from(
            "SELECT v.id, v.data FROM entity_versions v WHERE v.kind = $1 AND v.rev_to IS NULL",
        );
        let mut binds: Vec<String> = vec![kind.to_string()];
        let next_param = |binds: &mut Vec<String>, v: String| {
            binds.push(v);
            format!("${}", binds.len())
        };
        if let Some((rk, rid)) = &f.referencing {
            let a = next_param(&mut binds, rk.clone());
            let b = next_param(&mut binds, rid.clone());
            sql.push_str(&format!(
                " AND v.id IN (SELECT id FROM entity_refs WHERE kind = $1 AND ref_kind = {a} AND ref_id = {b})"
            ));
        }
        if !f.tags.is_empty() {
            let ps: Vec<String> = f
                .tags
                .iter()
                .map(|t| next_param(&mut binds, write::index_value(t)))
                .collect();
            let mut sub = format!(
                "SELECT id FROM entity_tags WHERE kind = $1 AND tag IN ({})",
                ps.join(", ")
            );
            if f.tags_all {
                sub.push_str(&format!(
                    " GROUP BY id HAVING COUNT(DISTINCT tag) = {}",
                    f.tags.len()
                ));
            }
            sql.push_str(&format!(" AND v.id IN ({sub})"));
        }
        if let Some(after) = &f.after {
            let p = next_param(&mut binds, after.clone());
            sql.push_str(&format!(" AND v.id > {p}"));
        }
        sql.push_str(&format!(" ORDER BY v.id LIMIT {}", f.size + 1));
        let mut q = sqlx::query(AssertSqlSafe(sql.clone()));
        for b in &binds {
            q = q.bind(b.as_str());
        }
        let rows = q.fetch_all(&self.pool).await?;
        let mut items = Vec::with_capacity(rows.len());
        let mut last_id = None;
        for r in rows.iter().take(f.size) {
            last_id = Some(r.try_get::<String, _>(0)?);
            items.push(self.decode(kind, &r.try_get::<String, _>(1)?)?);
        }
        let next = if rows.len() > f.size { last_id } else { None };
        Ok(Page { items, next })
    }

    /// Every current entity of every kind with `tag`, after `after` (kind/id).
    pub async fn list_tag(
        &self,
        tag: &str,
        after: Option<(String, String)>,
        size: usize,
    ) -> Result<(Vec<(String, String)>, Option<(String, String)>), StoreError> {
        let (ak, aid) = after.unwrap_or_default();
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT kind, id FROM entity_tags WHERE tag = $1 AND (kind > $2 OR (kind = $2 AND id > $3)) \
             ORDER BY kind, id LIMIT {}",
            size + 1
        )))
        .bind(write::index_value(tag))
        .bind(ak)
        .bind(aid)
        .fetch_all(&self.pool)
        .await?;
        let mut out = Vec::new();
        for r in &rows {
            out.push((r.try_get::<String, _>(0)?, r.try_get::<String, _>(1)?));
        }
        let next = if out.len() > size {
            out.truncate(size);
            out.last().cloned()
        } else {
            None
        };
        Ok((out, next))
    }

    /// How many current entities each collection holds.
    pub async fn counts(&self) -> Result<Vec<(String, i64)>, StoreError> {
        let rows = sqlx::query("SELECT kind, COUNT(*) FROM entity_versions WHERE rev_to IS NULL GROUP BY kind ORDER BY kind")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect()
    }

    /// Every current entity (the whole configuration).
    pub async fn all_current(&self) -> Result<Vec<Stored>, StoreError> {
        self.state_at(None).await
    }

    /// The configuration as it was at revision `rev` (current when None).
    pub async fn state_at(&self, rev: Option<i64>) -> Result<Vec<Stored>, StoreError> {
        let rows =
            match rev {
                None => sqlx::query(
                    "SELECT kind, id, data FROM entity_versions WHERE rev_to IS NULL ORDER BY seq",
                )
                .fetch_all(&self.pool)
                .await?,
                Some(n) => {
                    sqlx::query(
                        "SELECT kind, id, data FROM entity_versions \
                     WHERE rev_from <= $1 AND (rev_to IS NULL OR rev_to > $1) ORDER BY seq",
                    )
                    .bind(n)
                    .fetch_all(&self.pool)
                    .await?
                }
            };
        rows.iter().map(|r| self.stored_from_row(r)).collect()
    }

    /// Entities whose content differs between revisions `from` and `to`:
    /// (kind, id, before, after), ordered by kind and id.
    pub async fn diff(
        &self,
        from: i64,
        to: i64,
    ) -> Result<Vec<(String, String, Option<Value>, Option<Value>)>, StoreError> {
        let (lo, hi) = if from <= to { (from, to) } else { (to, from) };
        // Only entities with a version boundary inside (lo, hi] can differ.
        let rows = sqlx::query(
            "SELECT DISTINCT kind, id FROM entity_versions \
             WHERE (rev_from > $1 AND rev_from <= $2) OR (rev_to > $1 AND rev_to <= $2) ORDER BY kind, id",
        )
        .bind(lo)
        .bind(hi)
        .fetch_all(&self.pool)
        .await?;
        let mut out = Vec::new();
        for r in &rows {
            let kind: String = r.try_get(0)?;
            let id: String = r.try_get(1)?;
            let a = self.version_at(&kind, &id, from).await?;
            let b = self.version_at(&kind, &id, to).await?;
            if a != b {
                out.push((kind, id, a, b));
            }
        }
        Ok(out)
    }

    async fn version_at(
        &self,
        kind: &str,
        id: &str,
        rev: i64,
    ) -> Result<Option<Value>, StoreError> {
        let row = sqlx::query(
            "SELECT data FROM entity_versions WHERE kind = $1 AND id = $2 \
             AND rev_from <= $3 AND (rev_to IS NULL OR rev_to > $3)",
        )
        .bind(kind)
        .bind(id)
        .bind(rev)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| self.decode(kind, &r.try_get::<String, _>(0)?))
            .transpose()
    }

    pub async fn revision(&self, rev: i64) -> Result<Option<Revision>, StoreError> {
        let row = sqlx::query(
            "SELECT rev, created_at, actor, operation, summary FROM revisions WHERE rev = $1",
        )
        .bind(rev)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(revision_from_row).transpose()
    }

    /// Revisions newest first, starting below `before` when given.
    pub async fn revisions(
        &self,
        before: Option<i64>,
        size: usize,
    ) -> Result<Vec<Revision>, StoreError> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT rev, created_at, actor, operation, summary FROM revisions WHERE rev < $1 ORDER BY rev DESC LIMIT {size}"
        )))
        .bind(before.unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(revision_from_row).collect()
    }

    /// Audit entries newest first, starting below `before` when given.
    pub async fn audit(
        &self,
        before: Option<i64>,
        size: usize,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT seq, rev, at, actor, operation, kind, entity_id, before, after FROM audit \
             WHERE seq < $1 ORDER BY seq DESC LIMIT {size}"
        )))
        .bind(before.unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await?;
        let opt_json = |s: Option<String>| s.map(|s| parse_data(&s)).transpose();
        rows.iter()
            .map(|r| {
                Ok(AuditEntry {
                    id: r.try_get(0)?,
                    revision: r.try_get(1)?,
                    at: r.try_get(2)?,
                    actor: r.try_get(3)?,
                    operation: r.try_get(4)?,
                    entity_type: r.try_get(5)?,
                    entity_id: r.try_get(6)?,
                    before: opt_json(r.try_get(7)?)?,
                    after: opt_json(r.try_get(8)?)?,
                })
            })
            .collect()
    }

    pub(crate) fn pool(&self) -> &AnyPool {
        &self.pool
    }
}

impl Store {
    /// Encrypts secrets at rest from now on (see [`SecretCodec`]).
    pub fn with_secrets(mut self, codec: Arc<dyn SecretCodec>) -> Self {
        self.secrets = Some(codec);
        self
    }

    pub(crate) fn secrets(&self) -> Option<Arc<dyn SecretCodec>> {
        self.secrets.clone()
    }

    /// An entity version as read from the database, secrets opened.
    pub(crate) fn decode(&self, kind: &str, s: &str) -> Result<Value, StoreError> {
        decode_with(self.secrets.as_deref(), kind, s)
    }

    fn stored_from_row(&self, r: &sqlx::any::AnyRow) -> Result<Stored, StoreError> {
        let kind: String = r.try_get(0)?;
        let data = self.decode(&kind, &r.try_get::<String, _>(2)?)?;
        Ok(Stored {
            kind,
            id: r.try_get(1)?,
            data,
        })
    }

    /// Every entity version ever stored, raw (secrets as stored), for
    /// re-encryption under a new key (`gantry-cp keyring rotate`).
    pub async fn raw_versions(&self) -> Result<Vec<(i64, String, String)>, StoreError> {
        let rows = sqlx::query("SELECT seq, kind, data FROM entity_versions ORDER BY seq")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
            .collect()
    }

    /// Replaces one stored version's data in place: the same content,
    /// encrypted differently. Not a revision: nothing changes.
    pub async fn rewrite_version(&self, seq: i64, data: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE entity_versions SET data = $1 WHERE seq = $2")
            .bind(data)
            .bind(seq)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

pub(crate) fn decode_with(
    codec: Option<&dyn SecretCodec>,
    kind: &str,
    s: &str,
) -> Result<Value, StoreError> {
    let mut v = parse_data(s)?;
    if let Some(c) = codec {
        c.open(kind, &mut v)?;
    }
    Ok(v)
}

/// An entity version as written to the database, secrets sealed.
pub(crate) fn encode_with(codec: Option<&dyn SecretCodec>, kind: &str, v: &Value) -> String {
    match codec {
        None => v.to_string(),
        Some(c) => {
            let mut v = v.clone();
            c.seal(kind, &mut v);
            v.to_string()
        }
    }
}

pub(crate) fn parse_data(s: &str) -> Result<Value, StoreError> {
    serde_json::from_str(s).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn revision_from_row(r: &sqlx::any::AnyRow) -> Result<Revision, StoreError> {
    Ok(Revision {
        revision: r.try_get(0)?,
        created_at: r.try_get(1)?,
        actor: r.try_get(2)?,
        operation: r.try_get(3)?,
        summary: r.try_get(4)?,
    })
}
