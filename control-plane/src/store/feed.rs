//! The change feed: every process learns of every committed revision,
//! its own through a direct publish, other replicas' through Postgres
//! LISTEN/NOTIFY, and anything missed (a dropped LISTEN connection, a
//! second process on one SQLite file) through a slow poll of the head row.

use super::{Backend, Store, StoreConfig, StoreError, now_ms};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The newest revision this process knows of, and when it learned it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct FeedState {
    pub revision: i64,
    /// Unix milliseconds.
    pub learned_at: i64,
}

#[derive(Clone)]
pub struct ChangeFeed {
    inner: Arc<Inner>,
}

struct Inner {
    tx: watch::Sender<FeedState>,
    channel: String,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

/// NOTIFY channels are per database, so the schema is part of the name:
/// two Gantry installs in one database must not hear each other.
pub(crate) fn channel_name(schema: Option<&str>) -> String {
    let mut name = format!("gantry_config_{}", schema.unwrap_or("public"));
    name.truncate(63);
    name
}

impl ChangeFeed {
    pub(crate) fn new(channel: String) -> Self {
        let (tx, _) = watch::channel(FeedState {
            revision: -1,
            learned_at: now_ms(),
        });
        ChangeFeed {
            inner: Arc::new(Inner {
                tx,
                channel,
                tasks: Mutex::new(Vec::new()),
            }),
        }
    }

    pub(crate) fn channel(&self) -> &str {
        &self.inner.channel
    }

    pub fn current(&self) -> FeedState {
        *self.inner.tx.borrow()
    }

    /// A receiver that wakes on every new revision.
    pub fn subscribe(&self) -> watch::Receiver<FeedState> {
        self.inner.tx.subscribe()
    }

    /// Records `rev` if it is newer than what is known.
    pub(crate) fn publish(&self, rev: i64) {
        self.inner.tx.send_if_modified(|s| {
            if rev > s.revision {
                *s = FeedState {
                    revision: rev,
                    learned_at: now_ms(),
                };
                true
            } else {
                false
            }
        });
    }

    pub(crate) async fn start(&self, store: &Store, cfg: &StoreConfig) -> Result<(), StoreError> {
        self.publish(store.current_revision().await?);
        let mut tasks = self.inner.tasks.lock().unwrap_or_else(|e| e.into_inner());
        if store.backend() == Backend::Postgres {
            let listener = listen(cfg.url.clone(), self.clone(), store.clone());
            tasks.push(tokio::spawn(listener));
        }
        if !cfg.feed_poll.is_zero() {
            tasks.push(tokio::spawn(poll(
                self.clone(),
                store.clone(),
                cfg.feed_poll,
            )));
        }
        Ok(())
    }

    /// A task of the store's that ends with the feed's (see `stop`).
    pub(crate) fn adopt(&self, task: JoinHandle<()>) {
        self.inner
            .tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(task);
    }

    pub(crate) fn stop(&self) {
        let mut tasks = self.inner.tasks.lock().unwrap_or_else(|e| e.into_inner());
        for t in tasks.drain(..) {
            t.abort();
        }
    }
}

async fn poll(feed: ChangeFeed, store: Store, every: Duration) {
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        match store.current_revision().await {
            Ok(rev) => feed.publish(rev),
            Err(e) => tracing::warn!(error = %e, "change feed poll failed"),
        }
    }
}

async fn listen(url: String, feed: ChangeFeed, store: Store) {
    loop {
        let mut listener = match sqlx::postgres::PgListener::connect(&url).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "change feed: cannot connect to LISTEN; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if let Err(e) = listener.listen(feed.channel()).await {
            tracing::warn!(error = %e, "change feed: LISTEN failed; retrying");
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        tracing::debug!(channel = feed.channel(), "change feed listening");
        // Whatever committed while we were not listening.
        if let Ok(rev) = store.current_revision().await {
            feed.publish(rev);
        }
        loop {
            match listener.try_recv().await {
                Ok(Some(n)) => match n.payload().parse::<i64>() {
                    Ok(rev) => feed.publish(rev),
                    Err(_) => {
                        tracing::warn!(payload = n.payload(), "change feed: unexpected payload")
                    }
                },
                Ok(None) => {
                    // The connection dropped; the next try_recv reconnects,
                    // and notifications sent meanwhile are lost: re-read.
                    if let Ok(rev) = store.current_revision().await {
                        feed.publish(rev);
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "change feed: listener failed; reconnecting");
                    break;
                }
            }
        }
    }
}
