//! A stop request that wakes a sleeping capture thread at once.
//!
//! Sources sleep: directory replay paces frames (at 0.1 fps that is 10 s), the camera wrapper
//! waits up to 30 s between reconnection attempts. A plain `AtomicBool` checked after the sleep
//! would make shutdown wait that long, and systemd's stop timeout would kill the daemon before
//! it publishes `stopped`. So sleeping goes through a condition variable that `stop()` signals.

use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// Cloneable handle: one clone for the daemon's shutdown path, one inside each source.
#[derive(Debug, Clone, Default)]
pub struct StopSignal {
    inner: Arc<(Mutex<bool>, Condvar)>,
}

impl StopSignal {
    pub fn new() -> StopSignal {
        StopSignal::default()
    }

    /// Requests a stop; every current and future [`StopSignal::sleep`] returns `false` at once.
    pub fn stop(&self) {
        let (lock, cond) = &*self.inner;
        *lock.lock().unwrap_or_else(|e| e.into_inner()) = true;
        cond.notify_all();
    }

    pub fn is_stopped(&self) -> bool {
        *self.inner.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sleeps for `d` unless a stop is requested first. Returns `true` when the full time
    /// elapsed, `false` when stopped (the caller should then end its stream).
    pub fn sleep(&self, d: Duration) -> bool {
        let (lock, cond) = &*self.inner;
        let start = Instant::now();
        let mut stopped = lock.lock().unwrap_or_else(|e| e.into_inner());
        // A loop, because condition variables wake spuriously.
        while !*stopped {
            let elapsed = start.elapsed();
            if elapsed >= d {
                return true;
            }
            stopped = match cond.wait_timeout(stopped, d - elapsed) {
                Ok((guard, _)) => guard,
                Err(e) => e.into_inner().0,
            };
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sleep_runs_its_course_without_stop() {
        let s = StopSignal::new();
        let t = Instant::now();
        assert!(s.sleep(Duration::from_millis(30)));
        assert!(t.elapsed() >= Duration::from_millis(30));
        assert!(!s.is_stopped());
    }

    #[test]
    fn stop_wakes_a_long_sleep() {
        let s = StopSignal::new();
        let s2 = s.clone();
        let t = Instant::now();
        let h = std::thread::spawn(move || s2.sleep(Duration::from_secs(60)));
        std::thread::sleep(Duration::from_millis(50));
        s.stop();
        assert_eq!(h.join().ok(), Some(false));
        assert!(t.elapsed() < Duration::from_secs(10));
        // Later sleeps return at once.
        assert!(!s.sleep(Duration::from_secs(60)));
    }
}
