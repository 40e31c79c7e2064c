//! The payment sandbox: an HTTP server that answers like Stripe's
//! PaymentIntents API for the calls sagaflow makes, so the embedded profile
//! always exercises the real HTTP adapter, and a standalone one
//! (`sagaflow sandbox`) several workers share as they would share a real
//! provider.
//!
//! It serves, with form-encoded bodies and Stripe-shaped JSON:
//! `POST /v1/payment_intents` (manual capture, confirm=true; the test cards
//! `pm_card_chargeDeclined`, `pm_card_chargeDeclinedInsufficientFunds` and
//! `pm_card_chargeDeclinedFraudulent` decline with a 402, any other `pm_`
//! succeeds), `POST /v1/payment_intents/{id}/capture`
//! (the sandbox-only test card [`CAPTURE_EXPIRES_CARD`] authorizes, but
//! its capture fails as a real one does after the authorization window:
//! 400 `charge_expired_for_capture`, stored),
//! `POST /v1/payment_intents/{id}/cancel`, `POST /v1/refunds`,
//! `GET /v1/payment_intents/{id}`, `GET /v1/refunds?payment_intent=..` and
//! `GET /v1/payment_intents/search?query=metadata['KEY']:'VALUE'`. Every
//! request needs `Authorization: Bearer sk_test_...`. The admin calls under
//! `/_sandbox/` change the [`Knobs`] while it serves. It speaks HTTP/1.1
//! and, to a client that opens with HTTP/2's preface, HTTP/2 without TLS
//! (h2c, up to 1,000 concurrent streams per connection).
//!
//! Modules, one concern each: `server` (binding, the handler, the
//! [`Sandbox`] handle), `knobs` and `faults` (what can go wrong and
//! when), `admin` (changing knobs over HTTP), `wire` (forms, routes,
//! Stripe-shaped answers), `idempotency` (stored answers, one
//! transaction per POST), `intents`, `refunds`, `search`, `ledger`
//! (reads for invariant checks) and `store` (the SQLite file).
//!
//! Invariants:
//! - one SQLite connection behind a mutex serves every request, so requests
//!   are applied one at a time; two requests under the same
//!   `Idempotency-Key` never both apply;
//! - a POST's effect and the response stored under its idempotency key
//!   commit in one transaction: after a SIGKILL either both are there or
//!   neither is;
//! - an intent is captured only from `requires_capture`; `capture_count`
//!   counts applied captures and [`read_ledger`] reports any intent above 1;
//! - faults never break the rules above: an injected 500 "before" and an
//!   outage's 503 apply nothing and store nothing; an injected 500 "after"
//!   applies and stores the 500 under the key (`Stripe-Should-Retry:
//!   false`), so a client must reconcile with GETs; a held request is
//!   applied, only its answer is late.
//!
//! Not a payment provider: there are no charges, customers or webhooks,
//! idempotency keys never expire, amount limits are not enforced, and the
//! request log grows with every POST (it is a test tool).

mod admin;
mod faults;
mod idempotency;
mod intents;
mod knobs;
mod ledger;
mod refunds;
mod search;
mod server;
mod store;
pub mod testing;
mod wire;

pub use intents::CAPTURE_EXPIRES_CARD;
pub use knobs::{ErrorSide, Knobs, KnobsPatch};
pub use ledger::{read_ledger, read_requests, PaymentLedger, RequestRecord};
pub use server::{Sandbox, SandboxConfig, Traced, TurnedAway, TURNED_AWAY_KEPT};

use std::net::SocketAddr;
use std::path::PathBuf;

/// Why the sandbox could not start or its ledger could not be read. None of
/// these is retryable as is: each names what to fix.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// `error_rate` is not a fraction.
    #[error(
        "sandbox error_rate {0} is not between 0 and 1; set [sandbox] error_rate to a fraction such as 0.05"
    )]
    InvalidErrorRate(f64),
    /// Another rate knob is not a fraction.
    #[error("sandbox {name} {rate} is not between 0 and 1; set it to a fraction such as 0.05")]
    InvalidRate {
        /// The knob.
        name: &'static str,
        /// The value given.
        rate: f64,
    },
    /// The store file could not be opened or its schema created.
    #[error(
        "cannot open the payment sandbox store {}: {source}; check that the data directory exists and is writable",
        path.display()
    )]
    Store {
        /// The store file.
        path: PathBuf,
        /// What SQLite said.
        source: rusqlite::Error,
    },
    /// The listening socket could not be bound.
    #[error("cannot bind the payment sandbox to {addr}: {source}; pick a free port or use port 0")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// What the OS said.
        source: std::io::Error,
    },
    /// [`read_ledger`] was given a path with no file.
    #[error(
        "no payment sandbox ledger at {}; start the sandbox with this db_path first (it creates the file)",
        path.display()
    )]
    NoLedger {
        /// The path given.
        path: PathBuf,
    },
    /// [`read_ledger`] could not query the file.
    #[error(
        "cannot read the payment sandbox ledger {}: {source}; check that the path names the sandbox's database",
        path.display()
    )]
    Ledger {
        /// The path given.
        path: PathBuf,
        /// What SQLite said.
        source: rusqlite::Error,
    },
}
