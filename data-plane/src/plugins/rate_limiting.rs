//! `rate-limiting`: Kong's windows (second to year), limit_by, headers and
//! 429, counted locally here, or in Redis (`redis.rs`) so several proxies
//! share one limit.
//!
//! Windows are sliding by default: the previous window's count is
//! weighted by how much of it still overlaps the last `size` seconds, so
//! a client cannot send a full limit at the end of one window and another
//! at the start of the next. `window_type: fixed` counts per window as
//! Kong does. Windows are aligned to the Unix epoch; month and year are
//! Kong's 30 and 365 days.

use super::Identity;
use super::reject::Reject;
use http::{HeaderMap, HeaderName, HeaderValue};
use serde::Deserialize;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, Hasher, RandomState};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Period {
    Second,
    Minute,
    Hour,
    Day,
    Month,
    Year,
}

pub const PERIODS: [Period; 6] = [
    Period::Second,
    Period::Minute,
    Period::Hour,
    Period::Day,
    Period::Month,
    Period::Year,
];

impl Period {
    pub fn seconds(self) -> u64 {
        match self {
            Period::Second => 1,
            Period::Minute => 60,
            Period::Hour => 3600,
            Period::Day => 86_400,
            Period::Month => 2_592_000,
            Period::Year => 31_536_000,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Period::Second => "second",
            Period::Minute => "minute",
            Period::Hour => "hour",
            Period::Day => "day",
            Period::Month => "month",
            Period::Year => "year",
        }
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }

    fn headers(self) -> (&'static HeaderName, &'static HeaderName) {
        let i = self.index();
        (&LIMIT_HEADERS[i], &REMAINING_HEADERS[i])
    }
}

static LIMIT_HEADERS: [HeaderName; 6] = [
    HeaderName::from_static("x-ratelimit-limit-second"),
    HeaderName::from_static("x-ratelimit-limit-minute"),
    HeaderName::from_static("x-ratelimit-limit-hour"),
    HeaderName::from_static("x-ratelimit-limit-day"),
    HeaderName::from_static("x-ratelimit-limit-month"),
    HeaderName::from_static("x-ratelimit-limit-year"),
];
static REMAINING_HEADERS: [HeaderName; 6] = [
    HeaderName::from_static("x-ratelimit-remaining-second"),
    HeaderName::from_static("x-ratelimit-remaining-minute"),
    HeaderName::from_static("x-ratelimit-remaining-hour"),
    HeaderName::from_static("x-ratelimit-remaining-day"),
    HeaderName::from_static("x-ratelimit-remaining-month"),
    HeaderName::from_static("x-ratelimit-remaining-year"),
];
static RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("ratelimit-limit");
static RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("ratelimit-remaining");
static RATELIMIT_RESET: HeaderName = HeaderName::from_static("ratelimit-reset");

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LimitBy {
    Consumer,
    Credential,
    Ip,
    Service,
    Header,
    Path,
}

#[derive(Debug)]
pub struct RateLimiting {
    /// (period, limit), shortest period first.
    pub limits: Vec<(Period, u64)>,
    limit_by: LimitBy,
    header_name: Option<HeaderName>,
    path: Option<String>,
    pub sliding: bool,
    hide_client_headers: bool,
    error_code: u16,
    error_message: String,
    pub backend: Backend,
    fault_tolerant: bool,
}

#[derive(Debug)]
pub enum Backend {
    Local,
    /// Counted in Redis on every request, or, with `sync`, counted here
    /// and reconciled with Redis at that interval (`redis_sync.rs`).
    Redis {
        target: super::redis::Target,
        sync: Option<std::time::Duration>,
    },
}

/// At most this many instances apply to one request: one per Kong scope
/// (global, service, route, consumer and their combinations).
pub const MAX_STACKED: usize = 8;

/// The rate-limiting instances that apply to one request, most specific
/// first; all of them must admit it.
#[derive(Clone, Copy, Default)]
pub struct Stack<'a> {
    items: [Option<(&'a str, &'a RateLimiting)>; MAX_STACKED],
    len: usize,
}

impl<'a> Stack<'a> {
    /// False when full (the config check keeps that from happening).
    pub fn push(&mut self, id: &'a str, rl: &'a RateLimiting) -> bool {
        if self.len == MAX_STACKED {
            return false;
        }
        self.items[self.len] = Some((id, rl));
        self.len += 1;
        true
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn iter(&self) -> impl Iterator<Item = (&'a str, &'a RateLimiting)> + '_ {
        self.items[..self.len].iter().flatten().copied()
    }
}

#[derive(Deserialize)]
struct Config {
    second: Option<f64>,
    minute: Option<f64>,
    hour: Option<f64>,
    day: Option<f64>,
    month: Option<f64>,
    year: Option<f64>,
    #[serde(default)]
    limit_by: Option<String>,
    #[serde(default)]
    header_name: Option<String>,
    #[serde(default)]
    path: Option<String>,
    #[serde(default)]
    policy: Option<String>,
    #[serde(default)]
    fault_tolerant: Option<bool>,
    #[serde(default)]
    hide_client_headers: bool,
    #[serde(default)]
    error_code: Option<f64>,
    #[serde(default)]
    error_message: Option<String>,
    #[serde(default)]
    window_type: Option<String>,
    #[serde(default)]
    redis: Option<serde_json::Value>,
    #[serde(default)]
    sync_rate: Option<f64>,
}

impl RateLimiting {
    pub fn compile(v: &serde_json::Value) -> Result<RateLimiting, String> {
        let c = Config::deserialize(v).map_err(|e| e.to_string())?;
        let mut limits = Vec::new();
        for (p, l) in PERIODS
            .iter()
            .zip([c.second, c.minute, c.hour, c.day, c.month, c.year])
        {
            if let Some(l) = l {
                if l.is_nan() || l <= 0.0 {
                    return Err(format!("{} must be greater than 0", p.name()));
                }
                // Kong compares usage with the configured number; a fraction
                // admits as many requests as its floor.
                limits.push((*p, l.floor() as u64));
            }
        }
        if limits.is_empty() {
            return Err(
                "at least one of second, minute, hour, day, month or year is required".into(),
            );
        }
        let limit_by = match c.limit_by.as_deref().unwrap_or("consumer") {
            "consumer" => LimitBy::Consumer,
            "credential" => LimitBy::Credential,
            "ip" => LimitBy::Ip,
            "service" => LimitBy::Service,
            "header" => LimitBy::Header,
            "path" => LimitBy::Path,
            other => return Err(format!("limit_by {other:?} is not supported")),
        };
        let header_name = match (limit_by, c.header_name) {
            (LimitBy::Header, Some(h)) => Some(
                HeaderName::from_bytes(h.to_ascii_lowercase().as_bytes())
                    .map_err(|_| format!("header_name {h:?} is not a header name"))?,
            ),
            (LimitBy::Header, None) => return Err("limit_by header needs header_name".into()),
            _ => None,
        };
        if limit_by == LimitBy::Path && c.path.is_none() {
            return Err("limit_by path needs path".into());
        }
        let backend = match c.policy.as_deref().unwrap_or("local") {
            "local" => Backend::Local,
            "redis" => Backend::Redis {
                target: super::redis::Target::compile(
                    c.redis.as_ref().unwrap_or(&serde_json::Value::Null),
                )?,
                // Kong: -1 (the default) counts in Redis on every request.
                sync: match c.sync_rate {
                    Some(r) if r > 0.0 && r.is_finite() => {
                        Some(std::time::Duration::from_secs_f64(r.max(0.02)))
                    }
                    _ => None,
                },
            },
            other => return Err(format!("policy {other:?} is not supported")),
        };
        let error_code = c.error_code.unwrap_or(429.0);
        if !(100.0..=599.0).contains(&error_code) {
            return Err(format!("error_code {error_code} is not an HTTP status"));
        }
        Ok(RateLimiting {
            limits,
            limit_by,
            header_name,
            path: c.path,
            sliding: c.window_type.as_deref() != Some("fixed"),
            hide_client_headers: c.hide_client_headers,
            error_code: error_code as u16,
            error_message: c
                .error_message
                .unwrap_or_else(|| "API rate limit exceeded".into()),
            backend,
            fault_tolerant: c.fault_tolerant.unwrap_or(true),
        })
    }

    /// Checks the request against every window and counts it when none
    /// is full. `None`: Redis could not be asked and `fault_tolerant` lets
    /// the request through uncounted.
    async fn hit(
        &self,
        plugin_id: &str,
        state: &super::State,
        ctx: &Ctx<'_>,
        now: f64,
    ) -> Result<Option<Usage>, Reject> {
        let id = self.identifier(ctx);
        let got = match &self.backend {
            Backend::Local => {
                let key = state.limits.key(plugin_id, &id);
                return Ok(Some(state.limits.hit(key, self, now)));
            }
            Backend::Redis { target, sync: None } => {
                state.redis.hit(target, plugin_id, &id, self, now).await
            }
            Backend::Redis {
                target,
                sync: Some(every),
            } => {
                state
                    .synced
                    .hit(&state.redis, target, *every, plugin_id, &id, self, now)
                    .await
            }
        };
        match got {
            Ok(u) => Ok(Some(u)),
            Err(e) => {
                // Never the Redis password: the error is the client's.
                tracing::warn!(plugin = plugin_id, error = %e, "rate-limiting: Redis unavailable");
                if self.fault_tolerant {
                    Ok(None)
                } else {
                    Err(Reject::new(500, "An unexpected error occurred"))
                }
            }
        }
    }

    /// Takes back a request `hit` counted, when another instance refused it.
    async fn undo(&self, plugin_id: &str, state: &super::State, ctx: &Ctx<'_>, now: f64) {
        let id = self.identifier(ctx);
        match &self.backend {
            Backend::Local => state
                .limits
                .undo(state.limits.key(plugin_id, &id), self, now),
            Backend::Redis { target, sync: None } => {
                if let Err(e) = state.redis.undo(target, plugin_id, &id, self, now).await {
                    tracing::warn!(plugin = plugin_id, error = %e, "rate-limiting: could not take back a refused request's count");
                }
            }
            Backend::Redis { sync: Some(_), .. } => state.synced.undo(plugin_id, &id, self, now),
        }
    }

    /// Per window, what a client is told: the limit and what remains
    /// after this request.
    fn windows<'u>(
        &'u self,
        u: &'u Usage,
        admitted: bool,
    ) -> impl Iterator<Item = (Period, u64, u64, u64)> + 'u {
        self.limits.iter().enumerate().map(move |(i, (p, limit))| {
            let w = &u.windows[i];
            let mut remaining = limit.saturating_sub(w.used);
            // The request counts against every window when admitted, and
            // only against the one that stopped it otherwise (Kong).
            if admitted || u.stop == Some(i) {
                remaining = remaining.saturating_sub(1);
            }
            (*p, *limit, remaining, w.reset)
        })
    }

    fn refusal(&self, u: &Usage, stop: usize, report: &Report) -> Reject {
        let mut r = Reject::new(self.error_code, self.error_message.clone());
        report.headers(&mut r.headers);
        // Always, so a client knows when to come back, even with the
        // other headers hidden.
        r.headers.push((
            http::header::RETRY_AFTER,
            HeaderValue::from(u.windows[stop].retry_after),
        ));
        r
    }

    fn identifier<'a>(&self, ctx: &Ctx<'a>) -> Identifier<'a> {
        let ip = Identifier::Ip(ctx.client);
        match self.limit_by {
            LimitBy::Consumer => ctx
                .identity
                .consumer
                .map(|c| Identifier::Str(&c.id))
                .or(ctx.identity.credential.map(Identifier::Str))
                .unwrap_or(ip),
            LimitBy::Credential => ctx.identity.credential.map(Identifier::Str).unwrap_or(ip),
            LimitBy::Ip => ip,
            LimitBy::Service => Identifier::Str(ctx.service_id),
            LimitBy::Header => self
                .header_name
                .as_ref()
                .and_then(|h| ctx.headers.get(h))
                .map(|v| Identifier::Bytes(v.as_bytes()))
                .unwrap_or(ip),
            LimitBy::Path => match &self.path {
                Some(p) if p == ctx.path => Identifier::Str(ctx.path),
                _ => ip,
            },
        }
    }
}

/// What a request is counted by.
#[derive(Clone, Copy, Debug, Hash)]
pub enum Identifier<'a> {
    Str(&'a str),
    Bytes(&'a [u8]),
    Ip(IpAddr),
}

impl std::fmt::Display for Identifier<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Identifier::Str(s) => f.write_str(s),
            Identifier::Bytes(b) => f.write_str(&String::from_utf8_lossy(b)),
            Identifier::Ip(ip) => write!(f, "{ip}"),
        }
    }
}

pub struct Ctx<'a> {
    pub identity: Identity<'a>,
    pub client: IpAddr,
    pub service_id: &'a str,
    pub headers: &'a HeaderMap,
    pub path: &'a str,
}

/// Runs every instance of the stack; the request passes only when all
/// admit it. A refused request is taken back from the instances that had
/// counted it, so only admitted requests count, across instances as
/// across windows. Kong's headers go to `out` (the response's), one per
/// window, from the instance with the least remaining.
pub async fn apply(
    stack: &Stack<'_>,
    state: &super::State,
    ctx: &Ctx<'_>,
    out: &mut Vec<(HeaderName, HeaderValue)>,
) -> Result<(), Reject> {
    let now = now_secs();
    let mut usages: [Option<Usage>; MAX_STACKED] = Default::default();
    let mut refused: Option<(usize, Result<usize, Reject>)> = None;
    for (i, (id, rl)) in stack.iter().enumerate() {
        match rl.hit(id, state, ctx, now).await {
            Ok(Some(u)) => {
                let stop = u.stop;
                usages[i] = Some(u);
                if let Some(w) = stop {
                    refused = Some((i, Ok(w)));
                    break;
                }
            }
            Ok(None) => {}
            Err(r) => {
                refused = Some((i, Err(r)));
                break;
            }
        }
    }
    let mut report = Report::default();
    let Some((at, why)) = refused else {
        for ((_, rl), u) in stack.iter().zip(&usages) {
            if let Some(u) = u {
                report.add(rl, u, true);
            }
        }
        report.headers(out);
        return Ok(());
    };
    for ((id, rl), u) in stack.iter().zip(&usages).take(at) {
        if let Some(u) = u {
            rl.undo(id, state, ctx, now).await;
            report.add(rl, u, false);
        }
    }
    let (_, rl) = stack.iter().nth(at).expect("the refusing instance");
    match (why, &usages[at]) {
        (Ok(stop), Some(u)) => {
            report.add(rl, u, false);
            Err(rl.refusal(u, stop, &report))
        }
        (Err(r), _) => Err(r),
        (Ok(_), None) => Err(Reject::new(500, "An unexpected error occurred")),
    }
}

/// The headers of several instances merged: per window the least
/// remaining, and the binding window for `RateLimit-*`.
#[derive(Default)]
struct Report {
    /// Per period: (limit, remaining).
    windows: [Option<(u64, u64)>; 6],
    /// (remaining, period seconds, limit, reset) of the window that binds:
    /// least remaining, then the longest.
    binding: Option<(u64, u64, u64, u64)>,
}

impl Report {
    fn add(&mut self, rl: &RateLimiting, u: &Usage, admitted: bool) {
        if rl.hide_client_headers {
            return;
        }
        for (p, limit, remaining, reset) in rl.windows(u, admitted) {
            let slot = &mut self.windows[p.index()];
            if slot.is_none_or(|(_, r)| remaining < r) {
                *slot = Some((limit, remaining));
            }
            let better = match self.binding {
                None => true,
                Some((r, secs, _, _)) => remaining < r || (remaining == r && p.seconds() > secs),
            };
            if better {
                self.binding = Some((remaining, p.seconds(), limit, reset));
            }
        }
    }

    fn headers(&self, out: &mut Vec<(HeaderName, HeaderValue)>) {
        let Some((remaining, _, limit, reset)) = self.binding else {
            return;
        };
        for (p, w) in PERIODS.iter().zip(&self.windows) {
            if let Some((limit, remaining)) = w {
                let (lh, rh) = p.headers();
                out.push((lh.clone(), HeaderValue::from(*limit)));
                out.push((rh.clone(), HeaderValue::from(*remaining)));
            }
        }
        out.push((RATELIMIT_LIMIT.clone(), HeaderValue::from(limit)));
        out.push((RATELIMIT_REMAINING.clone(), HeaderValue::from(remaining)));
        out.push((RATELIMIT_RESET.clone(), HeaderValue::from(reset)));
    }
}

/// One window's state as the check saw it.
#[derive(Clone, Copy, Debug, Default)]
pub struct WindowUsage {
    /// Requests counted in the last window (weighted when sliding), before this one.
    pub used: u64,
    /// Seconds until the current window ends (Kong's `RateLimit-Reset`).
    pub reset: u64,
    /// Seconds until one more request would be admitted.
    pub retry_after: u64,
}

#[derive(Debug, Default)]
pub struct Usage {
    /// In the order of `RateLimiting::limits`.
    pub windows: Vec<WindowUsage>,
    /// The first full window, if any (then nothing was counted).
    pub stop: Option<usize>,
}

/// Seconds since the epoch, with fractions.
pub fn now_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// The sliding estimate and the times that go with it, for a window of
/// `size` seconds starting at `start` holding `cur`, after one of `prev`.
pub fn usage(
    size: u64,
    start: u64,
    cur: u64,
    prev: u64,
    limit: u64,
    sliding: bool,
    now: f64,
) -> WindowUsage {
    let w = size as f64;
    let elapsed = (now - start as f64).clamp(0.0, w);
    // prev * (w - e) / w, in that order: exact where the result is whole.
    let carried = if sliding {
        prev as f64 * (w - elapsed) / w
    } else {
        0.0
    };
    // Rounded up: a request is admitted only while the estimate plus it
    // stays within the limit.
    let used = (carried + cur as f64 - 1e-9).ceil().max(0.0) as u64;
    let reset = ((w - elapsed).ceil() as u64).max(1);
    let retry_after = if used < limit {
        0
    } else if sliding && prev > 0 && cur < limit {
        // Still in this window: the previous window's weight must fall far
        // enough, i.e. prev * (1 - (e + t) / w) + cur <= limit - 1.
        let need = w * (1.0 - (limit as f64 - 1.0 - cur as f64) / prev as f64) - elapsed;
        need.min(w - elapsed).max(0.0).ceil() as u64
    } else if sliding && cur > 0 {
        // In the next window, where this one's count is the previous.
        let into_next = (w * (1.0 - (limit as f64 - 1.0) / cur as f64)).max(0.0);
        (w - elapsed + into_next).ceil() as u64
    } else {
        reset
    };
    WindowUsage {
        used,
        reset,
        retry_after: retry_after.max(1),
    }
}

/// Local counters, sharded by key; they outlive config swaps.
pub struct Counters {
    shards: Box<[Mutex<HashMap<u64, Slot>>]>,
    hasher: RandomState,
}

const SHARDS: usize = 64;

#[derive(Default, Clone, Copy)]
struct Window {
    start: u64,
    cur: u64,
    prev: u64,
}

#[derive(Default)]
struct Slot {
    windows: [Window; 6],
    /// The last second this slot was used, and how long it matters after.
    touched: u64,
    ttl: u64,
}

impl Default for Counters {
    fn default() -> Self {
        Counters {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: RandomState::new(),
        }
    }
}

impl Counters {
    /// A 64-bit key for (instance, identifier): no string is built per
    /// request. A collision would merge two clients' counts; at 64 bits
    /// with a per-process random key it is not a practical concern.
    pub fn key(&self, plugin_id: &str, id: &Identifier<'_>) -> u64 {
        let mut h = self.hasher.build_hasher();
        plugin_id.hash(&mut h);
        id.hash(&mut h);
        h.finish()
    }

    pub fn hit(&self, key: u64, rl: &RateLimiting, now: f64) -> Usage {
        let shard = &self.shards[(key as usize) % SHARDS];
        let mut map = shard.lock().unwrap_or_else(|e| e.into_inner());
        let secs = now as u64;
        if map.len() >= 4096 && !map.contains_key(&key) {
            // Forget clients idle for longer than their longest window.
            map.retain(|_, s| s.touched + s.ttl > secs);
        }
        let slot = map.entry(key).or_default();
        slot.touched = secs;
        slot.ttl = idle_limit(rl);
        let mut u = Usage {
            windows: Vec::with_capacity(rl.limits.len()),
            stop: None,
        };
        for (i, (p, limit)) in rl.limits.iter().enumerate() {
            let size = p.seconds();
            let start = secs - secs % size;
            let w = &mut slot.windows[p.index()];
            roll(w, start, size);
            let wu = usage(size, start, w.cur, w.prev, *limit, rl.sliding, now);
            if wu.used >= *limit && u.stop.is_none() {
                u.stop = Some(i);
            }
            u.windows.push(wu);
        }
        if u.stop.is_none() {
            for (p, _) in &rl.limits {
                slot.windows[p.index()].cur += 1;
            }
        }
        u
    }
}

impl Counters {
    /// Takes back one request counted at `now` (windows since rolled over
    /// are left alone).
    pub fn undo(&self, key: u64, rl: &RateLimiting, now: f64) {
        let shard = &self.shards[(key as usize) % SHARDS];
        let mut map = shard.lock().unwrap_or_else(|e| e.into_inner());
        let secs = now as u64;
        if let Some(slot) = map.get_mut(&key) {
            for (p, _) in &rl.limits {
                let w = &mut slot.windows[p.index()];
                if w.start == secs - secs % p.seconds() {
                    w.cur = w.cur.saturating_sub(1);
                }
            }
        }
    }
}

/// Moves a window to the one starting at `start`.
fn roll(w: &mut Window, start: u64, size: u64) {
    if w.start == start {
        return;
    }
    w.prev = if w.start + size == start { w.cur } else { 0 };
    w.cur = 0;
    w.start = start;
}

/// The longest window of an instance, past which an idle client's slot
/// says nothing (its previous window no longer overlaps).
fn idle_limit(rl: &RateLimiting) -> u64 {
    rl.limits
        .iter()
        .map(|(p, _)| 2 * p.seconds())
        .max()
        .unwrap_or(2)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rl(json: serde_json::Value) -> RateLimiting {
        RateLimiting::compile(&json).unwrap()
    }

    #[test]
    fn fixed_windows_count_exactly_and_reset_at_the_boundary() {
        let r = rl(serde_json::json!({"minute": 3, "window_type": "fixed"}));
        let c = Counters::default();
        let t0 = 60.0 * 1000.0 + 10.0;
        for i in 0..3 {
            let u = c.hit(1, &r, t0 + i as f64);
            assert_eq!(u.stop, None, "request {i}");
            assert_eq!(u.windows[0].used, i);
        }
        let u = c.hit(1, &r, t0 + 5.0);
        assert_eq!(u.stop, Some(0));
        assert_eq!(u.windows[0].reset, 45);
        assert_eq!(u.windows[0].retry_after, 45);
        // A full limit again right after the boundary: what fixed windows allow.
        for _ in 0..3 {
            assert_eq!(c.hit(1, &r, t0 + 50.5).stop, None);
        }
        assert_eq!(c.hit(1, &r, t0 + 50.5).stop, Some(0));
    }

    #[test]
    fn sliding_windows_carry_the_previous_count_over_the_boundary() {
        let r = rl(serde_json::json!({"minute": 10}));
        let c = Counters::default();
        let t0 = 60.0 * 1000.0;
        for _ in 0..10 {
            assert_eq!(c.hit(7, &r, t0 + 59.0).stop, None);
        }
        // One second into the next window, 59/60 of the previous still counts.
        let u = c.hit(7, &r, t0 + 61.0);
        assert_eq!(u.stop, Some(0));
        assert_eq!(u.windows[0].used, 10);
        // Admitted again once prev * (1 - e/60) <= 9, i.e. at e = 6 s.
        assert_eq!(u.windows[0].retry_after, 5);
        assert_eq!(c.hit(7, &r, t0 + 65.5).stop, Some(0));
        assert_eq!(c.hit(7, &r, t0 + 66.0).stop, None);
        // Half-way through, half the previous window remains.
        let u = c.hit(7, &r, t0 + 90.0);
        assert_eq!(u.windows[0].used, 5 + 1);
    }

    #[test]
    fn windows_stack_and_only_an_admitted_request_counts() {
        let r = rl(serde_json::json!({"second": 2, "minute": 3, "window_type": "fixed"}));
        let c = Counters::default();
        let t = 120.0;
        assert_eq!(c.hit(1, &r, t).stop, None);
        assert_eq!(c.hit(1, &r, t).stop, None);
        // The second is full: nothing is counted, the minute keeps 2.
        assert_eq!(c.hit(1, &r, t + 0.5).stop, Some(0));
        let u = c.hit(1, &r, t + 1.0);
        assert_eq!(u.stop, None);
        assert_eq!(u.windows[1].used, 2);
        assert_eq!(c.hit(1, &r, t + 2.0).stop, Some(1));
    }

    #[test]
    fn headers_follow_kong() {
        let r = rl(serde_json::json!({"second": 5, "minute": 3, "window_type": "fixed"}));
        let u = Usage {
            windows: vec![
                WindowUsage {
                    used: 1,
                    reset: 1,
                    retry_after: 1,
                },
                WindowUsage {
                    used: 1,
                    reset: 30,
                    retry_after: 30,
                },
            ],
            stop: None,
        };
        let mut out = Vec::new();
        let mut report = Report::default();
        report.add(&r, &u, true);
        report.headers(&mut out);
        let get = |n: &str| {
            out.iter()
                .find(|(k, _)| k == n)
                .map(|(_, v)| v.to_str().unwrap().to_string())
        };
        assert_eq!(get("x-ratelimit-limit-second").as_deref(), Some("5"));
        assert_eq!(get("x-ratelimit-remaining-second").as_deref(), Some("3"));
        assert_eq!(get("x-ratelimit-remaining-minute").as_deref(), Some("1"));
        assert_eq!(get("ratelimit-limit").as_deref(), Some("3"));
        assert_eq!(get("ratelimit-remaining").as_deref(), Some("1"));
        assert_eq!(get("ratelimit-reset").as_deref(), Some("30"));
        let stop = Usage { stop: Some(1), ..u };
        let mut report = Report::default();
        report.add(&r, &stop, false);
        let e = r.refusal(&stop, 1, &report);
        assert_eq!(e.status, 429);
        assert_eq!(e.message, "API rate limit exceeded");
        assert!(
            e.headers
                .iter()
                .any(|(k, v)| k == "retry-after" && v == "30")
        );
    }

    fn ctx(headers: &HeaderMap) -> Ctx<'_> {
        Ctx {
            identity: Identity::default(),
            client: IpAddr::from([10, 0, 0, 1]),
            service_id: "s",
            headers,
            path: "/",
        }
    }

    fn header(out: &[(HeaderName, HeaderValue)], n: &str) -> Option<String> {
        out.iter()
            .find(|(k, _)| k == n)
            .map(|(_, v)| v.to_str().unwrap().to_string())
    }

    #[tokio::test]
    async fn stacked_limits_all_apply_and_a_refusal_is_taken_back() {
        let global = rl(serde_json::json!({"hour": 5, "window_type": "fixed"}));
        let tight = rl(serde_json::json!({"hour": 2, "window_type": "fixed"}));
        let state = super::super::State::default();
        let headers = HeaderMap::new();
        let mut stack = Stack::default();
        assert!(stack.push("tight", &tight));
        assert!(stack.push("global", &global));
        let mut admitted = 0;
        let mut last = Vec::new();
        for _ in 0..4 {
            let mut out = Vec::new();
            match apply(&stack, &state, &ctx(&headers), &mut out).await {
                Ok(()) => admitted += 1,
                Err(r) => {
                    assert_eq!(r.status, 429);
                    last = r.headers;
                }
            }
            if admitted == 1 {
                // The tighter instance's remaining is what the client sees.
                assert_eq!(
                    header(&out, "x-ratelimit-remaining-hour").as_deref(),
                    Some("1")
                );
                assert_eq!(header(&out, "x-ratelimit-limit-hour").as_deref(), Some("2"));
            }
        }
        assert_eq!(admitted, 2, "the tighter of the two binds");
        assert!(header(&last, "retry-after").is_some());
        // Only the first instance refused; the global one never counted
        // the refusals, so 3 remain there.
        let mut alone = Stack::default();
        alone.push("global", &global);
        let mut out = Vec::new();
        apply(&alone, &state, &ctx(&headers), &mut out)
            .await
            .unwrap();
        assert_eq!(
            header(&out, "x-ratelimit-remaining-hour").as_deref(),
            Some("2")
        );

        // A refusal by the second instance is taken back from the first.
        let loose = rl(serde_json::json!({"hour": 100, "window_type": "fixed"}));
        let one = rl(serde_json::json!({"hour": 1, "window_type": "fixed"}));
        let mut stack = Stack::default();
        stack.push("loose", &loose);
        stack.push("one", &one);
        apply(&stack, &state, &ctx(&headers), &mut Vec::new())
            .await
            .unwrap();
        for _ in 0..3 {
            assert!(
                apply(&stack, &state, &ctx(&headers), &mut Vec::new())
                    .await
                    .is_err()
            );
        }
        let mut alone = Stack::default();
        alone.push("loose", &loose);
        let mut out = Vec::new();
        apply(&alone, &state, &ctx(&headers), &mut out)
            .await
            .unwrap();
        assert_eq!(
            header(&out, "x-ratelimit-remaining-hour").as_deref(),
            Some("98"),
            "two admitted requests counted, none of the refused"
        );
    }

    #[test]
    fn bad_configs_are_refused() {
        assert!(RateLimiting::compile(&serde_json::json!({})).is_err());
        assert!(RateLimiting::compile(&serde_json::json!({"hour": 0})).is_err());
        assert!(
            RateLimiting::compile(&serde_json::json!({"hour": 1, "limit_by": "header"})).is_err()
        );
        assert!(
            RateLimiting::compile(&serde_json::json!({"hour": 1, "policy": "cluster"})).is_err()
        );
    }
}
