//! Bounded waits on a condition: poll every 20 ms until it holds or the limit
//! passes, then panic naming what was awaited. Sleeping is only the poll
//! interval, never the synchronisation itself.

use std::future::Future;
use std::time::{Duration, Instant};

/// Poll interval of every wait here.
pub const POLL: Duration = Duration::from_millis(20);

/// Poll `f` until it returns `Some`, for at most `limit` (blocking).
pub fn wait_for<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(POLL);
    }
}

/// Poll `f` until it returns `true`, for at most `limit` (blocking).
pub fn wait_until(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    wait_for(what, limit, || f().then_some(()))
}

/// Poll the future `f()` until it yields `Some`, for at most `limit` (async,
/// on tokio's timer).
pub async fn wait_for_async<T, F, Fut>(what: &str, limit: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(POLL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn returns_once_the_condition_holds() {
        let mut n = 0;
        let v = wait_for("n to reach 3", Duration::from_secs(5), || {
            n += 1;
            (n >= 3).then_some(n)
        });
        assert_eq!(v, 3);
    }

    #[test]
    #[should_panic(expected = "waiting for the impossible")]
    fn panics_naming_what_was_awaited() {
        wait_until("the impossible", Duration::from_millis(50), || false);
    }
}
