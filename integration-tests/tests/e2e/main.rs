//! End-to-end tests: each drives the real `sagaflow` binary (built by the
//! same `cargo test` run) against its own data directory.

/// Invariants read straight from the stores.
#[path = "../shared/books.rs"]
mod books;
/// The AMQP 1.0 broker the Service Bus tests use.
#[path = "../shared/broker.rs"]
mod broker;
/// Headless chromium through chromedriver, for the dashboard.
#[path = "../shared/browser.rs"]
mod browser;
#[path = "../shared/common.rs"]
mod common;
/// A minimal OTLP/HTTP receiver: the spans the worker exports.
#[path = "../shared/otlp.rs"]
mod otlp;
/// A redis-server of a test's own, which it can crash.
#[path = "../shared/redis_server.rs"]
mod redis_server;
/// The standalone payment sandbox several processes share.
#[path = "../shared/sandbox.rs"]
mod sandbox;

/// The worker's admin API: token rules, reads, commands, `--admin URL`.
mod admin;
/// No web page but the dashboard reaches the admin API: Host allow-list
/// without a token, same-origin `/api`, probes in the deployed shape.
mod admin_browser;
/// `sagaflow bench --provider separate`: both processes measured.
mod bench;
/// A bulk run acts on exactly its dry run's sagas; resumes are audited
/// under their own operator.
mod bulk_exact;
/// Bulk retry at scale: hundreds parked by a stock fault, and a run
/// killed half way and resumed.
mod bulk_scale;
/// A journal written by an earlier format still opens and recovers.
mod compat;
/// `check-config` exit codes and messages through the CLI.
mod config;
/// SIGKILL the worker at random instants; every invariant still holds.
mod crash;
/// The dashboard in a real headless browser, on both engines.
mod dashboard;
/// Malformed messages are dead-lettered with a reason; valid ones run.
mod dead_letter;
/// The flash-sale demo and the inspection commands on its data.
mod demo;
/// A Temporal deployment of several worker processes (sandbox, Redis).
mod deployment;
/// Parked sagas do not hold intake back (issue 13).
mod intake;
/// The worker's rooms import each other one way; the engines never each other.
mod layers;
/// `/metrics` agrees with `stats` and with the journal, attempt by attempt.
mod metrics;
/// Operator commands (cancel, resolve, retry) and their audit, on both
/// engines, against a running worker.
mod operator;
/// `sagaflow reconcile` finds drift planted in the stores, on both
/// engines, and `--fix` repairs only the safe kinds.
mod reconcile;
/// The Redis stock adapter survives a Redis restart mid-sale.
mod redis_fault;
/// Retention and `sagaflow archive` on the embedded journal.
mod retention;
/// The interpreter's scenarios on both engines (embedded and Temporal).
mod scenarios;
/// The Service Bus trigger against a real AMQP 1.0 broker.
mod servicebus;
/// Two workers share one standalone payment sandbox; one dies, the other
/// captures what the first authorized.
mod shared_sandbox;
/// A saga slower than the reservation TTL keeps its stock (defect 2).
mod slow_saga;
/// Step modes on Temporal: the history events each writes.
mod temporal_history;
/// A Temporal worker dies right after the capture; another takes over.
mod temporal_kill;
/// Each Temporal worker's intake limit counts its own sagas.
mod temporal_scale;
/// Two deployments on one namespace: queries, reads and commands stay
/// on their own task queue.
mod temporal_scope;
/// The repository itself: the code map's paths exist, the deterministic
/// core stays deterministic, the docs carry no stale phrase.
mod tidy;
