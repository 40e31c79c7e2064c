//! The saga half of `sagas.toml`, and the diagnostics every part of the file
//! is reported with.
//!
//! A `sagas.toml` holds two things. The saga definitions (`[sagas.NAME]` with
//! `[[sagas.NAME.steps]]`, their retry policies and pivot) are this crate's:
//! [`SagaTables`] is their raw form as written and
//! [`SagaTables::validate`] turns it into [`SagaDef`](crate::SagaDef)s. The
//! deployment profile (`[profile]`, `[embedded]`, `[temporal]`,
//! `[servicebus]`, `[redis]`, `[cosmos]`, `[payment]`, `[stock]`, `[sandbox]`)
//! belongs to the worker, which parses the whole file once, validates its
//! profile and hands the saga tables here. Every key is documented in the
//! shipped `sagas.toml`.
//!
//! Both halves report through one [`Diagnostics`], so every problem (unknown
//! keys, bad durations, unregistered activity names, a step before the pivot
//! without a compensation, a compensation on or after the pivot, duplicate
//! step names) names the file, the line and the step, and says what to
//! change, in file order. Nothing here reads the file: the worker's loader
//! does, and passes the text in.

mod diagnostics;
mod sagas;

pub use diagnostics::{parse_toml, ConfigError, ConfigErrors, Diagnostics};
pub use sagas::{parse_sagas, SagaTables};
