//! The operator service: what an operator can read and do, on either
//! engine, behind one face ([`source::Source`]: the embedded journal, a
//! Temporal cluster, or a running worker's admin API).
//!
//! - [`source`]: list, show, history and stats as [`crate::engine::view`]
//!   rows; [`audit`]: every command and repair, oldest first;
//! - [`command`]: one command (retry, cancel, resolve) to one saga and its
//!   verdict; [`refund`]: a completed checkout's refund saga; [`bulk`]:
//!   the same over `--where`, planned, rate-limited and resumable;
//! - [`health`] and [`ready`]: a running worker's breakers, intake and
//!   readiness, which only its own admin server can read;
//! - [`remote`]: the client of another worker's admin API (`--admin`).
//!
//! The CLI ([`crate::cli`]) parses flags and prints; the admin server
//! ([`crate::admin`]) answers HTTP; both call these same functions, so
//! they never disagree.

pub(crate) mod audit;
pub(crate) mod bulk;
pub(crate) mod command;
pub(crate) mod health;
pub(crate) mod ready;
pub(crate) mod refund;
pub(crate) mod remote;
pub(crate) mod source;
