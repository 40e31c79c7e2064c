//! Activities: the thin, stateless, idempotent functions a saga step calls.
//!
//! - [`registry`]: activity name -> async function, checked against
//!   `sagas.toml` at load;
//! - [`stock`]: `stock.reserve`, `stock.release`, `stock.commit` over the
//!   embedded SQLite ledger or the Redis adapter (Lua scripts), one
//!   [`stock::Stock`] with the same semantics;
//! - [`orders`]: `orders.create`, `orders.cancel` over the embedded SQLite
//!   store or the Cosmos DB adapter, one [`orders::Orders`];
//! - [`payment`]: the HTTP payment adapter (`payment.authorize`,
//!   `payment.capture`, `payment.void`, `payment.refund`); the provider it
//!   talks to in the embedded profile, the payment sandbox, is its own
//!   crate (`sagaflow-payment-sandbox`);
//! - [`queue`]: the embedded order queue (the embedded trigger's source);
//! - [`breaker`]: one dependency's circuit breaker, a pure state machine;
//!   [`attempt`]: one attempt as both engines run it (breaker, time limit,
//!   outcome back to the breaker).
//!
//! Architecture invariant: activities never see the journal or the engine;
//! they get an [`sagaflow_workflows::ActivityCall`] and return a result. Every
//! effect is keyed by the call's idempotency key (saga id + step), so running
//! an activity twice has the effect of running it once.

pub mod attempt;
pub mod breaker;
pub mod clock;
pub mod group_commit;
pub mod order;
pub mod orders;
pub mod payment;
pub mod queue;
pub mod registry;
pub mod sqlite;
pub mod stock;
pub mod trace;

pub use attempt::{run_attempt, Breakers};
pub use order::{Order, Rejection};
pub use registry::{ActivityFuture, AttemptObserver, AttemptRecorder, Registry};
