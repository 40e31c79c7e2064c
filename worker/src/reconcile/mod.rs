//! `sagaflow reconcile`: do the books agree with the outside world?
//!
//! The engine says how each saga ended; the stock store, the payment
//! provider and the order store say what actually happened to the units,
//! the money and the order document. Reconcile reads all four
//! ([`books`]), decides where they disagree ([`drift`], pure), and with
//! `--fix` makes only the repairs that cannot hurt ([`repair`]): voiding
//! a hold no saga will capture and releasing a reservation no saga will
//! commit. Everything else (money kept for an order not sold, a completed
//! sale missing its capture) is reported with what an operator should do.

pub mod books;
pub mod drift;
pub mod guard;
pub mod repair;

use sagaflow_workflows::ActivityError;
use std::future::Future;
use std::time::Duration;

/// How many times a provider or store call is tried when it fails in a
/// way that may pass (a 5xx, a timeout, a dropped connection).
const ATTEMPTS: u32 = 8;

/// Runs `call` until it succeeds, fails for good, or has failed
/// retryably [`ATTEMPTS`] times (backing off from 100 ms, doubling, up to
/// 2 s between tries: about 8 s in all). Reconcile runs while the
/// provider may be degraded; one lost answer must not end the run.
pub(crate) async fn patiently<T, F, Fut>(mut call: F) -> Result<T, ActivityError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, ActivityError>>,
{
    let mut delay = Duration::from_millis(100);
    let mut attempt = 1;
    loop {
        match call().await {
            Err(e) if e.retryable && attempt < ATTEMPTS => {
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(2));
                attempt += 1;
            }
            done => return done,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    #[tokio::test]
    async fn a_transient_failure_is_tried_again_and_a_lasting_one_is_not() {
        let calls = Cell::new(0);
        let flaky = || {
            calls.set(calls.get() + 1);
            let n = calls.get();
            async move {
                if n < 3 {
                    Err(ActivityError::retryable("timeout", "no answer"))
                } else {
                    Ok(n)
                }
            }
        };
        assert_eq!(patiently(flaky).await.unwrap(), 3);

        calls.set(0);
        let refused = || {
            calls.set(calls.get() + 1);
            async { Err::<(), _>(ActivityError::business("invalid", "refused")) }
        };
        assert!(!patiently(refused).await.unwrap_err().retryable);
        assert_eq!(calls.get(), 1, "a business error is not retried");
    }
}
