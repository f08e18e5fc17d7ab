//! Time for the engine: a mockable [`Clock`] and memcached's exptime rules.
//!
//! Items store times as *server-relative seconds* (`u32`), like memcached's `rel_time_t`:
//! second 1 is the moment the store was created, so a `u32` lasts 136 years and an item
//! header spends 4 bytes per timestamp instead of 8. `0` in an exptime field means "never".

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Relative times at or below this many seconds are offsets from now; larger ones are
/// unix timestamps ("exptime over 30 days is a unix timestamp", protocol.txt, Expiration times).
pub const REALTIME_MAXDELTA: i64 = 60 * 60 * 24 * 30;

/// Source of the current unix time in whole seconds.
pub trait Clock: Send + Sync + 'static {
    fn unix_now(&self) -> u64;
}

/// The wall clock.
#[derive(Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    /// Read twice per request (the store's "now" and the connection's last-command time),
    /// so from the coarse clock: the vDSO returns the time of the last scheduler tick
    /// without reading the TSC, at a fraction of a precise read's cost. Whole seconds are
    /// all the engine keeps, and a tick (1-4 ms) is far inside memcached's own clock, which
    /// a timer moves once a second.
    fn unix_now(&self) -> u64 {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: clock_gettime writes one timespec, which lives for the call.
        if unsafe { libc::clock_gettime(libc::CLOCK_REALTIME_COARSE, &mut ts) } == 0 {
            return u64::try_from(ts.tv_sec).unwrap_or(0);
        }
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    }
}

/// A clock tests move by hand; nothing sleeps.
#[derive(Debug)]
pub struct ManualClock(AtomicU64);

impl ManualClock {
    pub fn new(unix_now: u64) -> Arc<Self> {
        Arc::new(Self(AtomicU64::new(unix_now)))
    }

    pub fn advance(&self, secs: u64) {
        self.0.fetch_add(secs, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn unix_now(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// Converts between unix time, client exptimes and server-relative seconds.
pub struct Timebase {
    clock: Arc<dyn Clock>,
    /// Unix time of relative second 0. Chosen one second before start so that the first
    /// relative "now" is 1 and a stored time of 0 can mean "never".
    started: u64,
}

impl Timebase {
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        let started = clock.unix_now().saturating_sub(1);
        Self { clock, started }
    }

    /// Current server-relative time in seconds (always >= 1).
    pub fn now(&self) -> u32 {
        let rel = self.clock.unix_now().saturating_sub(self.started);
        u32::try_from(rel).unwrap_or(u32::MAX).max(1)
    }

    /// Unix time of the store's relative second 0.
    pub fn started(&self) -> u64 {
        self.started
    }

    pub fn unix_now(&self) -> u64 {
        self.clock.unix_now()
    }

    /// Relative time to unix time.
    pub fn to_unix(&self, rel: u32) -> u64 {
        self.started + u64::from(rel)
    }

    /// memcached's `realtime()`: a client exptime to a relative deadline, `0` = never.
    /// Negative means "already expired"; so does an absolute time at or before start.
    pub fn deadline(&self, exptime: i64) -> u32 {
        let now = self.now();
        if exptime == 0 {
            0
        } else if exptime < 0 {
            // Any relative time not after `now` is expired; 1 is the earliest.
            1
        } else if exptime > REALTIME_MAXDELTA {
            let abs = exptime as u64;
            if abs <= self.started {
                1
            } else {
                u32::try_from(abs - self.started).unwrap_or(u32::MAX)
            }
        } else {
            now.saturating_add(exptime as u32)
        }
    }
}

/// Whether a deadline (`0` = never) has passed at `now`.
#[inline]
pub fn is_expired(deadline: u32, now: u32) -> bool {
    deadline != 0 && deadline <= now
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> (Arc<ManualClock>, Timebase) {
        let clock = ManualClock::new(1_700_000_000);
        let tb = Timebase::new(clock.clone());
        (clock, tb)
    }

    #[test]
    fn the_system_clock_reads_unix_seconds_within_a_tick() {
        let precise = |now: SystemTime| now.duration_since(UNIX_EPOCH).unwrap().as_secs();
        let before = precise(SystemTime::now());
        let coarse = SystemClock.unix_now();
        let after = precise(SystemTime::now());
        // The coarse clock may still show the second a tick before `before`.
        assert!(
            coarse + 1 >= before && coarse <= after,
            "{before} {coarse} {after}"
        );
    }

    #[test]
    fn relative_and_absolute_exptimes() {
        let (_, tb) = base();
        assert_eq!(tb.now(), 1);
        assert_eq!(tb.deadline(0), 0);
        assert_eq!(tb.deadline(10), 11);
        assert_eq!(tb.deadline(REALTIME_MAXDELTA), 1 + REALTIME_MAXDELTA as u32);
        // Over 30 days: a unix timestamp; one in 1970 is long past.
        assert!(is_expired(tb.deadline(REALTIME_MAXDELTA + 1), tb.now()));
        assert_eq!(tb.deadline(1_700_000_100), 101);
        assert!(is_expired(tb.deadline(1_700_000_000), tb.now()));
        assert!(is_expired(tb.deadline(-1), tb.now()));
    }

    #[test]
    fn deadlines_pass_with_the_clock() {
        let (clock, tb) = base();
        let d = tb.deadline(2);
        assert!(!is_expired(d, tb.now()));
        clock.advance(1);
        assert!(!is_expired(d, tb.now()));
        clock.advance(1);
        assert!(is_expired(d, tb.now()));
    }
}
