//! Passive health (Envoy's outlier detection, the consecutive-error
//! detectors): every upstream result is reported against its endpoint; an
//! endpoint that reaches `consecutive_5xx` (or gateway-failure, or local-
//! origin) errors in a row is ejected for `base_ejection_time x ejections`,
//! capped by `max_ejection_time`, unless ejecting it would exceed
//! `max_ejection_percent` of the cluster.
//!
//! Envoy returns an ejected host at the first `interval` tick after its
//! time is up; gantry-proxy returns it the moment its time is up (checked
//! lazily when the balancer looks at it), so a host is never out longer
//! than configured. The ejection multiplier decays by one per `interval`
//! spent uneject, as Envoy's does.

use crate::config::Outlier;
use std::sync::LazyLock;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);

/// Milliseconds on a process-local monotonic clock; never 0.
pub fn now_ms() -> u64 {
    EPOCH.elapsed().as_millis() as u64 + 1
}

/// What happened to one upstream attempt, as outlier detection sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Result {
    Status(u16),
    ConnectFailure,
    Timeout,
    Reset,
}

impl Result {
    /// With `split_external_local_origin_errors` off, Envoy maps local
    /// errors to the status it answers with: 503 for connect failures and
    /// resets, 504 for timeouts.
    fn as_status(self) -> u16 {
        match self {
            Result::Status(s) => s,
            Result::ConnectFailure | Result::Reset => 503,
            Result::Timeout => 504,
        }
    }
    fn local_origin(self) -> bool {
        !matches!(self, Result::Status(_))
    }
}

/// Per-endpoint counters; shared across config swaps with the endpoint.
#[derive(Default, Debug)]
pub struct OutlierState {
    consecutive_5xx: AtomicU32,
    consecutive_gateway: AtomicU32,
    consecutive_local: AtomicU32,
    /// 0: not ejected.
    ejected_until: AtomicU64,
    /// Ejections so far, after decay (the ejection-time multiplier).
    ejections: AtomicU32,
    /// When the last ejection ended or was cleared, for the decay.
    returned_at: AtomicU64,
}

/// Why an endpoint was ejected, for logs and stats.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Detector {
    Consecutive5xx,
    ConsecutiveGatewayFailure,
    ConsecutiveLocalOriginFailure,
}

impl Detector {
    pub fn as_str(self) -> &'static str {
        match self {
            Detector::Consecutive5xx => "consecutive_5xx",
            Detector::ConsecutiveGatewayFailure => "consecutive_gateway_failure",
            Detector::ConsecutiveLocalOriginFailure => "consecutive_local_origin_failure",
        }
    }
}

impl OutlierState {
    /// A copy for an endpoint rebuilt by a config swap (its weight changed):
    /// what was learned carries over.
    pub fn carry(&self) -> OutlierState {
        let l = |a: &AtomicU32| AtomicU32::new(a.load(Ordering::Relaxed));
        OutlierState {
            consecutive_5xx: l(&self.consecutive_5xx),
            consecutive_gateway: l(&self.consecutive_gateway),
            consecutive_local: l(&self.consecutive_local),
            ejected_until: AtomicU64::new(self.ejected_until.load(Ordering::Relaxed)),
            ejections: l(&self.ejections),
            returned_at: AtomicU64::new(self.returned_at.load(Ordering::Relaxed)),
        }
    }

    pub fn is_ejected(&self, now: u64) -> bool {
        let until = self.ejected_until.load(Ordering::Relaxed);
        until != 0 && now < until
    }

    /// A successful active health check returns the host at once
    /// (`successful_active_health_check_uneject_host`).
    pub fn uneject(&self, now: u64) {
        if self.ejected_until.swap(0, Ordering::Relaxed) != 0 {
            self.returned_at.store(now, Ordering::Relaxed);
        }
    }

    /// Records one result; returns the detector that fired when the
    /// endpoint crossed a threshold (the caller decides whether ejecting it
    /// is allowed and then calls `eject`).
    pub fn record(&self, cfg: &Outlier, r: Result) -> Option<Detector> {
        let bump = |a: &AtomicU32| a.fetch_add(1, Ordering::Relaxed) + 1;
        let clear = |a: &AtomicU32| a.store(0, Ordering::Relaxed);
        if cfg.split_external_local_origin_errors && r.local_origin() {
            let n = bump(&self.consecutive_local);
            if n >= cfg.consecutive_local_origin_failure.max(1) {
                clear(&self.consecutive_local);
                return enforced(cfg.enforcing_consecutive_local_origin_failure)
                    .then_some(Detector::ConsecutiveLocalOriginFailure);
            }
            return None;
        }
        if cfg.split_external_local_origin_errors {
            // A response arrived: the connection itself worked.
            clear(&self.consecutive_local);
        }
        let status = r.as_status();
        if !(500..600).contains(&status) {
            clear(&self.consecutive_5xx);
            clear(&self.consecutive_gateway);
            return None;
        }
        let mut fired = None;
        if matches!(status, 502..=504) {
            let n = bump(&self.consecutive_gateway);
            if n >= cfg.consecutive_gateway_failure.max(1) {
                clear(&self.consecutive_gateway);
                if enforced(cfg.enforcing_consecutive_gateway_failure) {
                    fired = Some(Detector::ConsecutiveGatewayFailure);
                }
            }
        } else {
            clear(&self.consecutive_gateway);
        }
        let n = bump(&self.consecutive_5xx);
        if n >= cfg.consecutive_5xx.max(1) {
            clear(&self.consecutive_5xx);
            if fired.is_none() && enforced(cfg.enforcing_consecutive_5xx) {
                fired = Some(Detector::Consecutive5xx);
            }
        }
        fired
    }

    /// Ejects the endpoint; returns for how long.
    pub fn eject(&self, cfg: &Outlier, now: u64) -> Duration {
        // Decay: one ejection forgiven per interval spent in service.
        let returned = self.returned_at.load(Ordering::Relaxed);
        let interval = cfg.interval.as_millis().max(1) as u64;
        let forgiven = if returned == 0 {
            0
        } else {
            (now.saturating_sub(returned) / interval) as u32
        };
        let n = self
            .ejections
            .load(Ordering::Relaxed)
            .saturating_sub(forgiven)
            + 1;
        self.ejections.store(n, Ordering::Relaxed);
        let mut time = cfg
            .base_ejection_time
            .saturating_mul(n)
            .min(cfg.max_ejection_time.max(cfg.base_ejection_time));
        if !cfg.max_ejection_time_jitter.is_zero() {
            time += cfg.max_ejection_time_jitter.mul_f64(rand::random::<f64>());
        }
        let until = now + time.as_millis() as u64;
        self.ejected_until
            .store(until.max(now + 1), Ordering::Relaxed);
        // The decay clock restarts when this ejection ends.
        self.returned_at.store(until, Ordering::Relaxed);
        time
    }
}

/// `enforcing_*` is a percentage chance that a detection is acted on.
fn enforced(percent: u32) -> bool {
    percent >= 100 || (percent > 0 && rand::random::<u32>() % 100 < percent)
}

/// Whether one more ejection keeps the cluster within
/// `max_ejection_percent` (Envoy: `(ejected + 1) / hosts <= max%`, or
/// `always_eject_one_host` when none is ejected).
pub fn may_eject(cfg: &Outlier, ejected: usize, hosts: usize) -> bool {
    if hosts == 0 {
        return false;
    }
    if cfg.always_eject_one_host && ejected == 0 {
        return true;
    }
    (ejected + 1) as f64 * 100.0 / hosts as f64 <= f64::from(cfg.max_ejection_percent)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> Outlier {
        Outlier {
            consecutive_5xx: 3,
            enforcing_consecutive_5xx: 100,
            consecutive_gateway_failure: 2,
            enforcing_consecutive_gateway_failure: 0,
            split_external_local_origin_errors: false,
            consecutive_local_origin_failure: 5,
            enforcing_consecutive_local_origin_failure: 100,
            interval: Duration::from_secs(10),
            base_ejection_time: Duration::from_secs(30),
            max_ejection_time: Duration::from_secs(300),
            max_ejection_time_jitter: Duration::ZERO,
            max_ejection_percent: 100,
            enforcing_success_rate: 0,
            success_rate_minimum_hosts: 5,
            success_rate_request_volume: 100,
            success_rate_stdev_factor: 1900,
            enforcing_local_origin_success_rate: 0,
            failure_percentage_threshold: 85,
            enforcing_failure_percentage: 0,
            enforcing_failure_percentage_local_origin: 0,
            failure_percentage_minimum_hosts: 5,
            failure_percentage_request_volume: 50,
            successful_active_health_check_uneject_host: true,
            always_eject_one_host: false,
        }
    }

    #[test]
    fn consecutive_5xx_fires_at_the_threshold_and_a_success_resets() {
        let c = cfg();
        let s = OutlierState::default();
        assert_eq!(s.record(&c, Result::Status(500)), None);
        assert_eq!(s.record(&c, Result::Status(500)), None);
        assert_eq!(s.record(&c, Result::Status(200)), None);
        assert_eq!(s.record(&c, Result::Status(500)), None);
        assert_eq!(s.record(&c, Result::ConnectFailure), None);
        // Local errors count as 503 when not split.
        assert_eq!(
            s.record(&c, Result::Timeout),
            Some(Detector::Consecutive5xx)
        );
        // The counter starts again after firing.
        assert_eq!(s.record(&c, Result::Status(500)), None);
    }

    #[test]
    fn gateway_failures_fire_only_when_enforced() {
        let mut c = cfg();
        c.consecutive_5xx = 100;
        let s = OutlierState::default();
        assert_eq!(s.record(&c, Result::Status(502)), None);
        assert_eq!(s.record(&c, Result::Status(503)), None);
        c.enforcing_consecutive_gateway_failure = 100;
        assert_eq!(s.record(&c, Result::Status(502)), None);
        assert_eq!(
            s.record(&c, Result::Status(504)),
            Some(Detector::ConsecutiveGatewayFailure)
        );
        // A 500 breaks a run of gateway failures.
        assert_eq!(s.record(&c, Result::Status(502)), None);
        assert_eq!(s.record(&c, Result::Status(500)), None);
        assert_eq!(s.record(&c, Result::Status(502)), None);
    }

    #[test]
    fn split_local_origin_errors_count_apart() {
        let mut c = cfg();
        c.split_external_local_origin_errors = true;
        c.consecutive_local_origin_failure = 2;
        let s = OutlierState::default();
        assert_eq!(s.record(&c, Result::ConnectFailure), None);
        // A response means the connection worked: the local run ends, and
        // the 5xx counts apart.
        assert_eq!(s.record(&c, Result::Status(500)), None);
        assert_eq!(s.record(&c, Result::Status(500)), None);
        assert_eq!(s.record(&c, Result::Reset), None);
        assert_eq!(
            s.record(&c, Result::Timeout),
            Some(Detector::ConsecutiveLocalOriginFailure)
        );
        assert_eq!(
            s.record(&c, Result::Status(500)),
            Some(Detector::Consecutive5xx)
        );
    }

    #[test]
    fn ejection_time_grows_with_ejections_and_decays() {
        let c = cfg();
        let s = OutlierState::default();
        let t0 = 1_000;
        assert_eq!(s.eject(&c, t0), Duration::from_secs(30));
        assert!(s.is_ejected(t0 + 29_999));
        assert!(!s.is_ejected(t0 + 30_000));
        // Ejected again right after returning: twice as long.
        let t1 = t0 + 30_000;
        assert_eq!(s.eject(&c, t1), Duration::from_secs(60));
        // After 3 intervals in service, two of the three ejections are forgiven.
        let t2 = t1 + 60_000 + 30_000;
        assert_eq!(s.eject(&c, t2), Duration::from_secs(30));
        // Capped by max_ejection_time.
        let mut capped = cfg();
        capped.max_ejection_time = Duration::from_secs(45);
        let s = OutlierState::default();
        s.eject(&capped, 1);
        assert_eq!(s.eject(&capped, 30_001), Duration::from_secs(45));
        s.uneject(40_000);
        assert!(!s.is_ejected(40_001));
    }

    #[test]
    fn max_ejection_percent_caps_the_share_ejected() {
        let mut c = cfg();
        c.max_ejection_percent = 50;
        assert!(may_eject(&c, 0, 2));
        assert!(!may_eject(&c, 1, 2));
        c.max_ejection_percent = 10;
        assert!(!may_eject(&c, 0, 3));
        c.always_eject_one_host = true;
        assert!(may_eject(&c, 0, 3));
        assert!(!may_eject(&c, 1, 3));
    }
}
