//! Failed authentication is rate-limited per source address: past [`MAX_FAILURES`] failures
//! within [`WINDOW`], an address gets 429 until the window ends, so guessing tokens over the
//! network is slow and costs the daemon little.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failures an address may have within a window.
pub const MAX_FAILURES: u32 = 20;
/// The window failures are counted in.
pub const WINDOW: Duration = Duration::from_secs(60);
/// Addresses tracked at most; past it, windows that ended are dropped first.
const MAX_TRACKED: usize = 65_536;

/// Failure counts per address.
#[derive(Debug, Default)]
pub struct FailureLimiter {
    seen: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

impl FailureLimiter {
    /// How long `addr` must wait before it may try again, or `None` when it may now.
    pub fn blocked(&self, addr: IpAddr, now: Instant) -> Option<Duration> {
        let seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let (start, n) = seen.get(&addr)?;
        let end = *start + WINDOW;
        (*n >= MAX_FAILURES && now < end).then(|| end - now)
    }

    /// Counts one failure of `addr`.
    pub fn failed(&self, addr: IpAddr, now: Instant) {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if seen.len() >= MAX_TRACKED {
            seen.retain(|_, (start, _)| now < *start + WINDOW);
        }
        let entry = seen.entry(addr).or_insert((now, 0));
        if now >= entry.0 + WINDOW {
            *entry = (now, 0);
        }
        entry.1 = entry.1.saturating_add(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_is_blocked_after_its_failures_until_the_window_ends() {
        let l = FailureLimiter::default();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let t0 = Instant::now();
        for _ in 0..MAX_FAILURES - 1 {
            l.failed(a, t0);
        }
        assert_eq!(l.blocked(a, t0), None);
        l.failed(a, t0);
        assert_eq!(
            l.blocked(a, t0 + Duration::from_secs(10)),
            Some(WINDOW - Duration::from_secs(10))
        );
        assert_eq!(l.blocked(b, t0), None, "another address is not held back");
        assert_eq!(l.blocked(a, t0 + WINDOW), None);
        l.failed(a, t0 + WINDOW);
        assert_eq!(
            l.blocked(a, t0 + WINDOW),
            None,
            "a new window starts from one failure"
        );
    }
}
