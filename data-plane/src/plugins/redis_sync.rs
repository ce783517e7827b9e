//! rate-limiting's `sync_rate`: counts kept in the proxy and reconciled
//! with Redis every `sync_rate` seconds, so Redis is off the request path.
//!
//! Each (instance, client) has a slot holding, per window, the totals
//! Redis had at the last sync (every proxy's), what this proxy counted
//! since, and what it is pushing now. A request is judged on their sum,
//! with the same sliding rule as the other backends. A background task
//! pushes the local counts with `INCRBY` and reads the totals back.
//!
//! The first request for a client this proxy has not seen reads the totals
//! from Redis before it is judged (the only time Redis is on the request
//! path), so a new proxy does not start from zero. After that, a proxy
//! does not see what the others admitted since their last push: N proxies
//! can admit up to what the other N-1 admitted in one interval beyond the
//! limit (docs/plugins.md has the bound).

use super::rate_limiting::{Identifier, Period, RateLimiting, Usage, usage};
use super::redis::{Clients, RedisError, Target, tag};
use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, Hasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The slots, by (instance, client); they outlive config swaps.
#[derive(Default)]
pub struct Synced {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    slots: Mutex<HashMap<u64, Arc<Mutex<Slot>>>>,
    hasher: RandomState,
    /// The flusher, started with the first slot.
    flusher: OnceLock<()>,
    /// The shortest `sync_rate` seen, in ms: how often the flusher looks.
    tick_ms: AtomicU64,
}

/// One window: counts as last read from Redis, counted here since, and
/// being pushed now. "prev" is the window before `start`.
#[derive(Default, Clone, Copy)]
struct Win {
    start: u64,
    base_cur: u64,
    base_prev: u64,
    local_cur: u64,
    local_prev: u64,
    flight_cur: u64,
    flight_prev: u64,
}

impl Win {
    fn cur(&self) -> u64 {
        self.base_cur + self.local_cur + self.flight_cur
    }

    fn prev(&self) -> u64 {
        self.base_prev + self.local_prev + self.flight_prev
    }

    /// Moves to the window starting at `start`: the current one becomes
    /// the previous, or both are forgotten after a gap.
    fn roll(&mut self, start: u64, size: u64) {
        if self.start == start {
            return;
        }
        if self.start + size == start {
            self.base_prev = self.base_cur;
            self.local_prev = self.local_cur;
            self.flight_prev = self.flight_cur;
        } else {
            // Pending counts for windows that no longer matter are dropped.
            self.base_prev = 0;
            self.local_prev = 0;
            self.flight_prev = 0;
        }
        self.base_cur = 0;
        self.local_cur = 0;
        self.flight_cur = 0;
        self.start = start;
    }
}

struct Slot {
    target: Target,
    /// The Redis key prefix, built once per client.
    tag: String,
    periods: Vec<Period>,
    windows: [Win; 6],
    every: Duration,
    next_sync: Instant,
    syncing: bool,
    /// A request used the slot since the last sync: its base is worth
    /// refreshing even when this proxy admitted nothing.
    asked: bool,
    /// When Redis's totals were last read; None: never.
    synced_at: Option<Instant>,
    /// The last sync failed (warned once per outage, not per interval).
    failing: bool,
    /// The last second a request used this slot, and how long it matters.
    touched: u64,
    ttl: u64,
}

impl Slot {
    fn pending(&self) -> bool {
        self.windows
            .iter()
            .any(|w| w.local_cur + w.local_prev + w.flight_cur + w.flight_prev > 0)
    }
}

impl Synced {
    fn key(&self, plugin_id: &str, id: &Identifier<'_>) -> u64 {
        let mut h = self.inner.hasher.build_hasher();
        plugin_id.hash(&mut h);
        id.hash(&mut h);
        h.finish()
    }

    /// Judges and counts one request against the local view.
    #[allow(clippy::too_many_arguments)]
    pub async fn hit(
        &self,
        clients: &Clients,
        target: &Target,
        every: Duration,
        plugin_id: &str,
        id: &Identifier<'_>,
        rl: &RateLimiting,
        now: f64,
    ) -> Result<Usage, RedisError> {
        let key = self.key(plugin_id, id);
        let existing = self.slots().get(&key).cloned();
        let (slot, first) = match existing {
            Some(s) => {
                // A client back after an idle spell is judged on fresh
                // totals: no view older than two intervals is trusted
                // while Redis answers. While it does not, the flusher
                // retries and requests are not held up.
                let stale = {
                    let g = s.lock().unwrap_or_else(|e| e.into_inner());
                    !g.syncing && !g.failing && g.synced_at.is_none_or(|t| t.elapsed() > 2 * every)
                };
                if stale {
                    sync_one(&s, clients).await;
                }
                (s, Ok(()))
            }
            None => {
                self.first_sight(clients, target, every, key, plugin_id, id, rl, now)
                    .await
            }
        };
        let secs = now as u64;
        let mut s = slot.lock().unwrap_or_else(|e| e.into_inner());
        s.touched = secs;
        s.asked = true;
        let mut u = Usage {
            windows: Vec::with_capacity(rl.limits.len()),
            stop: None,
        };
        for (i, (p, limit)) in rl.limits.iter().enumerate() {
            let size = p.seconds();
            let start = secs - secs % size;
            let w = &mut s.windows[p.index()];
            w.roll(start, size);
            let wu = usage(size, start, w.cur(), w.prev(), *limit, rl.sliding, now);
            if wu.used >= *limit && u.stop.is_none() {
                u.stop = Some(i);
            }
            u.windows.push(wu);
        }
        if u.stop.is_none() {
            for (p, _) in &rl.limits {
                s.windows[p.index()].local_cur += 1;
            }
        }
        // A Redis that could not be read on first sight is the caller's
        // to judge (fault_tolerant); the count above is kept either way
        // and pushed once Redis is back.
        first.map(|()| u)
    }

    /// Takes back one request counted at `now`.
    pub fn undo(&self, plugin_id: &str, id: &Identifier<'_>, rl: &RateLimiting, now: f64) {
        let key = self.key(plugin_id, id);
        let Some(slot) = self.slots().get(&key).cloned() else {
            return;
        };
        let secs = now as u64;
        let mut s = slot.lock().unwrap_or_else(|e| e.into_inner());
        for (p, _) in &rl.limits {
            let w = &mut s.windows[p.index()];
            if w.start == secs - secs % p.seconds() {
                w.local_cur = w.local_cur.saturating_sub(1);
            }
        }
    }

    fn slots(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<Mutex<Slot>>>> {
        self.inner.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A client this proxy has not counted: its totals are read from
    /// Redis first, so this proxy starts from what the others admitted.
    #[allow(clippy::too_many_arguments)]
    async fn first_sight(
        &self,
        clients: &Clients,
        target: &Target,
        every: Duration,
        key: u64,
        plugin_id: &str,
        id: &Identifier<'_>,
        rl: &RateLimiting,
        now: f64,
    ) -> (Arc<Mutex<Slot>>, Result<(), RedisError>) {
        let secs = now as u64;
        let tag = tag(plugin_id, id);
        let periods: Vec<Period> = rl.limits.iter().map(|(p, _)| *p).collect();
        let read: Vec<_> = periods
            .iter()
            .map(|p| (*p, secs - secs % p.seconds(), 0, 0))
            .collect();
        let totals = clients.sync(target, &tag, &read).await;
        let mut windows = [Win::default(); 6];
        if let Ok(t) = &totals {
            for ((p, start, _, _), (cur, prev)) in read.iter().zip(t) {
                windows[p.index()] = Win {
                    start: *start,
                    base_cur: *cur,
                    base_prev: *prev,
                    ..Win::default()
                };
            }
        }
        let slot = Slot {
            target: target.clone(),
            tag,
            periods,
            windows,
            every,
            next_sync: Instant::now() + every,
            syncing: false,
            asked: false,
            synced_at: totals.is_ok().then(Instant::now),
            failing: totals.is_err(),
            touched: secs,
            ttl: rl
                .limits
                .iter()
                .map(|(p, _)| 2 * p.seconds())
                .max()
                .unwrap_or(2),
        };
        let slot = {
            let mut m = self.slots();
            m.entry(key)
                .or_insert_with(|| Arc::new(Mutex::new(slot)))
                .clone()
        };
        self.start_flusher(clients, every);
        (slot, totals.map(|_| ()))
    }

    fn start_flusher(&self, clients: &Clients, every: Duration) {
        let ms = (every.as_millis() as u64).max(10);
        let tick = &self.inner.tick_ms;
        let mut cur = tick.load(Ordering::Relaxed);
        while cur == 0 || ms < cur {
            match tick.compare_exchange(cur, ms, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => break,
                Err(c) => cur = c,
            }
        }
        self.inner.flusher.get_or_init(|| {
            let inner = self.inner.clone();
            let clients = clients.clone();
            tokio::spawn(flush_loop(inner, clients));
        });
    }
}

/// Every tick: pushes each slot that is due and has counted, or been
/// asked about, since its last sync; forgets slots idle past their
/// longest window.
async fn flush_loop(inner: Arc<Inner>, clients: Clients) {
    loop {
        let tick = inner.tick_ms.load(Ordering::Relaxed).max(10) / 2;
        tokio::time::sleep(Duration::from_millis(tick.max(5))).await;
        let due: Vec<Arc<Mutex<Slot>>> = {
            let now = Instant::now();
            let secs = super::rate_limiting::now_secs() as u64;
            let mut m = inner.slots.lock().unwrap_or_else(|e| e.into_inner());
            m.retain(|_, s| {
                let s = s.lock().unwrap_or_else(|e| e.into_inner());
                s.pending() || s.syncing || s.touched + s.ttl > secs
            });
            m.values()
                .filter(|s| {
                    let s = s.lock().unwrap_or_else(|e| e.into_inner());
                    !s.syncing && s.next_sync <= now && (s.pending() || s.asked)
                })
                .cloned()
                .collect()
        };
        // A bounded number in flight at once.
        for chunk in due.chunks(64) {
            futures::future::join_all(chunk.iter().map(|s| sync_one(s, &clients))).await;
        }
    }
}

/// Pushes one slot's local counts and takes Redis's totals as its base.
async fn sync_one(slot: &Mutex<Slot>, clients: &Clients) {
    let (target, tag, push) = {
        let mut s = slot.lock().unwrap_or_else(|e| e.into_inner());
        if s.syncing {
            return;
        }
        let secs = super::rate_limiting::now_secs() as u64;
        let mut push = Vec::with_capacity(s.periods.len());
        for p in s.periods.clone() {
            let size = p.seconds();
            let w = &mut s.windows[p.index()];
            w.roll(secs - secs % size, size);
            w.flight_cur += std::mem::take(&mut w.local_cur);
            w.flight_prev += std::mem::take(&mut w.local_prev);
            push.push((p, w.start, w.flight_cur, w.flight_prev));
        }
        s.syncing = true;
        s.asked = false;
        (s.target.clone(), s.tag.clone(), push)
    };
    let got = clients.sync(&target, &tag, &push).await;
    let mut s = slot.lock().unwrap_or_else(|e| e.into_inner());
    s.syncing = false;
    s.next_sync = Instant::now() + s.every;
    match got {
        Ok(totals) => {
            s.synced_at = Some(Instant::now());
            s.failing = false;
            for ((p, start, _, _), (cur, prev)) in push.iter().zip(totals) {
                let w = &mut s.windows[p.index()];
                if w.start == *start {
                    w.base_cur = cur;
                    w.base_prev = prev;
                    w.flight_cur = 0;
                    w.flight_prev = 0;
                } else if w.start == start + p.seconds() {
                    // The window moved on meanwhile: what was current is
                    // now the previous one.
                    w.base_prev = cur;
                    w.flight_prev = 0;
                }
            }
        }
        Err(e) => {
            // Kept for the next try: nothing counted is lost while Redis
            // is away.
            if !s.failing {
                tracing::warn!(error = %e, "rate-limiting: sync with Redis failed; counting locally until it is back");
            }
            s.failing = true;
            for w in s.windows.iter_mut() {
                w.local_cur += std::mem::take(&mut w.flight_cur);
                w.local_prev += std::mem::take(&mut w.flight_prev);
            }
        }
    }
}
