//! Rate-limit counters in Redis, so several proxies share one limit.
//!
//! One Lua script per request checks every window of the instance and
//! counts the request only when none is full, atomically: N proxies on one
//! Redis admit exactly the limit per window (see docs/plugins.md for the
//! error bounds). A client's keys share a hash tag, so the script also
//! runs on Redis Cluster. Windows come from the proxy's clock: proxies
//! should keep time with NTP.

use super::rate_limiting::{Identifier, RateLimiting, Usage, usage};
use redis::aio::ConnectionManager;
use redis::cluster_async::ClusterConnection;
use serde::Deserialize;
use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

/// Where the counters live; equal targets share one connection.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Target {
    nodes: Vec<(String, u16)>,
    cluster: bool,
    database: i64,
    username: Option<String>,
    password: Option<Password>,
    pub timeout: Duration,
}

/// Never printed.
#[derive(Clone, PartialEq, Eq, Hash)]
struct Password(String);

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

#[derive(Deserialize, Default)]
struct Config {
    host: Option<String>,
    port: Option<u16>,
    timeout: Option<u64>,
    username: Option<String>,
    password: Option<String>,
    database: Option<i64>,
    ssl: Option<bool>,
    cluster_nodes: Option<Vec<Node>>,
}

#[derive(Deserialize)]
struct Node {
    ip: String,
    port: Option<u16>,
}

impl Target {
    pub fn compile(v: &serde_json::Value) -> Result<Target, String> {
        let c = match v {
            serde_json::Value::Null => Config::default(),
            v => Config::deserialize(v).map_err(|e| format!("redis: {e}"))?,
        };
        if c.ssl == Some(true) {
            return Err("redis.ssl is not supported by gantry-proxy yet".into());
        }
        let (nodes, cluster) = match (c.cluster_nodes, c.host) {
            (Some(ns), _) if !ns.is_empty() => (
                ns.into_iter()
                    .map(|n| (n.ip, n.port.unwrap_or(6379)))
                    .collect(),
                true,
            ),
            (_, Some(h)) if !h.is_empty() => (vec![(h, c.port.unwrap_or(6379))], false),
            _ => return Err("policy redis needs redis.host or redis.cluster_nodes".into()),
        };
        Ok(Target {
            nodes,
            cluster,
            database: c.database.unwrap_or(0),
            // Vault references resolve here, on the node that connects.
            username: c
                .username
                .filter(|u| !u.is_empty())
                .map(|u| gantry_shared::vault::resolve(&u))
                .transpose()
                .map_err(|e| format!("redis.username: {e}"))?,
            password: c
                .password
                .filter(|p| !p.is_empty())
                .map(|p| gantry_shared::vault::resolve(&p))
                .transpose()
                .map_err(|e| format!("redis.password: {e}"))?
                .map(Password),
            timeout: Duration::from_millis(c.timeout.unwrap_or(2000).max(1)),
        })
    }

    fn url(&self, host: &str, port: u16) -> String {
        let auth = match (&self.username, &self.password) {
            (Some(u), Some(p)) => format!("{}:{}@", enc(u), enc(&p.0)),
            (None, Some(p)) => format!(":{}@", enc(&p.0)),
            _ => String::new(),
        };
        let host = if host.contains(':') {
            format!("[{host}]")
        } else {
            host.to_string()
        };
        format!("redis://{auth}{host}:{port}/{}", self.database)
    }
}

fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[derive(Clone)]
enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

/// Connections by target; they outlive config swaps. Clones share them
/// (the `sync_rate` flusher holds one).
#[derive(Default, Clone)]
pub struct Clients {
    conns: Arc<Mutex<HashMap<Target, Arc<tokio::sync::OnceCell<Conn>>>>>,
}

/// Errors say what failed, never with credentials (the redis crate's
/// errors do not carry the URL).
#[derive(Debug, thiserror::Error)]
pub enum RedisError {
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    #[error("{0}")]
    Redis(#[from] redis::RedisError),
    #[error("unexpected reply from the rate-limit script")]
    Reply,
}

static SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(LUA));
static UNDO: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(UNDO_LUA));
static SYNC: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(SYNC_LUA));

/// KEYS: the current window keys a request was counted in. Takes it
/// back, never below zero.
const UNDO_LUA: &str = r#"
for i = 1, #KEYS do
  if tonumber(redis.call('GET', KEYS[i]) or '0') > 0 then redis.call('DECR', KEYS[i]) end
end
return 0
"#;

/// KEYS: per window, its current then its previous key. ARGV: per window
/// what this proxy counted in each since its last sync, and the keys'
/// lifetime. Adds them, then returns per window both totals.
const SYNC_LUA: &str = r#"
local out = {}
for i = 1, #KEYS / 2 do
  local add_cur = tonumber(ARGV[3 * i - 2])
  local add_prev = tonumber(ARGV[3 * i - 1])
  local ttl = tonumber(ARGV[3 * i])
  if add_cur > 0 then
    redis.call('INCRBY', KEYS[2 * i - 1], add_cur)
    redis.call('EXPIRE', KEYS[2 * i - 1], ttl)
  end
  if add_prev > 0 then
    redis.call('INCRBY', KEYS[2 * i], add_prev)
    redis.call('EXPIRE', KEYS[2 * i], ttl)
  end
  out[2 * i - 1] = tonumber(redis.call('GET', KEYS[2 * i - 1]) or '0')
  out[2 * i] = tonumber(redis.call('GET', KEYS[2 * i]) or '0')
end
return out
"#;

/// The key prefix of one client's counters for one instance; the hash tag
/// keeps them in one Redis Cluster slot.
pub fn tag(plugin_id: &str, id: &Identifier<'_>) -> String {
    format!("gantry:rl:{{{plugin_id}:{id}}}")
}

/// One window's key.
pub fn window_key(tag: &str, period: &str, start: u64) -> String {
    format!("{tag}:{period}:{start}")
}

/// KEYS: per window, its current then its previous key. ARGV: now,
/// sliding (0/1), then per window size, start and limit. Returns the
/// 1-based index of the first full window (0 if none), then per window the
/// current and previous counts before this request. Counts only when no
/// window is full. Its admission rule is `usage` in rate_limiting.rs.
const LUA: &str = r#"
local now = tonumber(ARGV[1])
local sliding = ARGV[2] == '1'
local n = #KEYS / 2
local out = {0}
for i = 1, n do
  local size = tonumber(ARGV[3 * i])
  local start = tonumber(ARGV[3 * i + 1])
  local limit = tonumber(ARGV[3 * i + 2])
  local cur = tonumber(redis.call('GET', KEYS[2 * i - 1]) or '0')
  local prev = 0
  if sliding then prev = tonumber(redis.call('GET', KEYS[2 * i]) or '0') end
  local elapsed = math.min(math.max(now - start, 0), size)
  local carried = 0
  if sliding then carried = prev * (size - elapsed) / size end
  local used = math.max(math.ceil(carried + cur - 1e-9), 0)
  if used >= limit and out[1] == 0 then out[1] = i end
  out[2 * i] = cur
  out[2 * i + 1] = prev
end
if out[1] == 0 then
  for i = 1, n do
    local size = tonumber(ARGV[3 * i])
    redis.call('INCR', KEYS[2 * i - 1])
    redis.call('EXPIRE', KEYS[2 * i - 1], 2 * size + 1)
  end
end
return out
"#;

impl Clients {
    async fn conn(&self, t: &Target) -> Result<Conn, RedisError> {
        let cell = {
            let mut m = self.conns.lock().unwrap_or_else(|e| e.into_inner());
            m.entry(t.clone()).or_default().clone()
        };
        let c = cell
            .get_or_try_init(|| async {
                if t.cluster {
                    let urls: Vec<String> = t.nodes.iter().map(|(h, p)| t.url(h, *p)).collect();
                    let client = redis::cluster::ClusterClient::builder(urls)
                        .connection_timeout(t.timeout)
                        .response_timeout(t.timeout)
                        .build()?;
                    Ok::<_, RedisError>(Conn::Cluster(client.get_async_connection().await?))
                } else {
                    let (h, p) = &t.nodes[0];
                    let client = redis::Client::open(t.url(h, *p))?;
                    let cfg = redis::aio::ConnectionManagerConfig::new()
                        .set_connection_timeout(Some(t.timeout))
                        .set_response_timeout(Some(t.timeout))
                        .set_number_of_retries(1);
                    Ok(Conn::Single(
                        ConnectionManager::new_with_config(client, cfg).await?,
                    ))
                }
            })
            .await?;
        Ok(c.clone())
    }

    /// Checks and counts one request against every window of `rl`.
    pub async fn hit(
        &self,
        t: &Target,
        plugin_id: &str,
        id: &Identifier<'_>,
        rl: &RateLimiting,
        now: f64,
    ) -> Result<Usage, RedisError> {
        let fut = async {
            let mut conn = self.conn(t).await?;
            let secs = now as u64;
            let mut inv = SCRIPT.prepare_invoke();
            inv.arg(format!("{now:.3}"))
                .arg(if rl.sliding { "1" } else { "0" });
            let tag = tag(plugin_id, id);
            for (p, limit) in &rl.limits {
                let size = p.seconds();
                let start = secs - secs % size;
                inv.key(window_key(&tag, p.name(), start)).key(window_key(
                    &tag,
                    p.name(),
                    start.saturating_sub(size),
                ));
                inv.arg(size).arg(start).arg(*limit);
            }
            let reply: Vec<i64> = conn.invoke(&inv).await?;
            if reply.len() != 1 + 2 * rl.limits.len() {
                return Err(RedisError::Reply);
            }
            let stop = usize::try_from(reply[0])
                .ok()
                .filter(|i| *i > 0)
                .map(|i| i - 1);
            let windows = rl
                .limits
                .iter()
                .enumerate()
                .map(|(i, (p, limit))| {
                    let size = p.seconds();
                    let start = secs - secs % size;
                    let cur = reply[1 + 2 * i].max(0) as u64;
                    let prev = reply[2 + 2 * i].max(0) as u64;
                    usage(size, start, cur, prev, *limit, rl.sliding, now)
                })
                .collect();
            Ok(Usage { windows, stop })
        };
        tokio::time::timeout(t.timeout, fut)
            .await
            .map_err(|_| RedisError::Timeout(t.timeout))?
    }
}

impl Conn {
    async fn invoke<T: redis::FromRedisValue>(
        &mut self,
        inv: &redis::ScriptInvocation<'_>,
    ) -> Result<T, RedisError> {
        Ok(match self {
            Conn::Single(c) => inv.invoke_async(c).await?,
            Conn::Cluster(c) => inv.invoke_async(c).await?,
        })
    }
}

impl Clients {
    /// Takes back a request `hit` counted at `now`.
    pub async fn undo(
        &self,
        t: &Target,
        plugin_id: &str,
        id: &Identifier<'_>,
        rl: &RateLimiting,
        now: f64,
    ) -> Result<(), RedisError> {
        let fut = async {
            let mut conn = self.conn(t).await?;
            let secs = now as u64;
            let tag = tag(plugin_id, id);
            let mut inv = UNDO.prepare_invoke();
            for (p, _) in &rl.limits {
                inv.key(window_key(&tag, p.name(), secs - secs % p.seconds()));
            }
            conn.invoke::<i64>(&inv).await.map(|_| ())
        };
        tokio::time::timeout(t.timeout, fut)
            .await
            .map_err(|_| RedisError::Timeout(t.timeout))?
    }

    /// Adds what one proxy counted since its last sync and reads the
    /// totals back: per window `(period, start, add to current, add to
    /// previous)` in, `(current, previous)` totals out.
    pub async fn sync(
        &self,
        t: &Target,
        tag: &str,
        windows: &[(super::rate_limiting::Period, u64, u64, u64)],
    ) -> Result<Vec<(u64, u64)>, RedisError> {
        let fut = async {
            let mut conn = self.conn(t).await?;
            let mut inv = SYNC.prepare_invoke();
            for (p, start, add_cur, add_prev) in windows {
                let size = p.seconds();
                inv.key(window_key(tag, p.name(), *start)).key(window_key(
                    tag,
                    p.name(),
                    start.saturating_sub(size),
                ));
                inv.arg(*add_cur).arg(*add_prev).arg(2 * size + 1);
            }
            let reply: Vec<i64> = conn.invoke(&inv).await?;
            if reply.len() != 2 * windows.len() {
                return Err(RedisError::Reply);
            }
            Ok(reply
                .chunks(2)
                .map(|c| (c[0].max(0) as u64, c[1].max(0) as u64))
                .collect())
        };
        tokio::time::timeout(t.timeout, fut)
            .await
            .map_err(|_| RedisError::Timeout(t.timeout))?
    }
}
