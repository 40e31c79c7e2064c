//! An operator command sent to one saga on either engine, and what became
//! of it ([`Verdict`]).
//!
//! A command is checked before it is sent and refused at once, with the
//! reason, when it does not apply: on the embedded engine by replaying the
//! saga from its journal (the engine's own decision), on Temporal by the
//! workflow Update's validator. Then the worker applies it exactly once and
//! records it with who sent it and why.

use super::source::{open_journal, Source};
use crate::app::DataPaths;
use crate::engine::command::CommandRequest;
use crate::engine::embedded::operator;
use crate::engine::temporal::client::TemporalClient;
use anyhow::Result;
use sagaflow_activities::clock::now_ms;
use std::time::{Duration, Instant};

/// The operator's name: the flag or variable, else the OS user.
pub(crate) fn operator_name(given: Option<String>) -> String {
    given
        .filter(|s| !s.trim().is_empty())
        .or_else(|| std::env::var("USER").ok())
        .or_else(|| std::env::var("LOGNAME").ok())
        .or_else(|| {
            std::process::Command::new("whoami")
                .output()
                .ok()
                .filter(|o| o.status.success())
                .and_then(|o| String::from_utf8(o.stdout).ok())
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
        })
        .unwrap_or_else(|| "unknown".into())
}

/// What became of one command.
#[derive(Debug, Clone)]
pub enum Verdict {
    /// The worker applied it.
    Applied,
    /// Queued for a worker that has not answered (embedded engine).
    Queued,
    /// Refused, with the reason.
    Refused(String),
}

impl Verdict {
    /// The outcome's name: applied, queued or refused.
    pub fn name(&self) -> &'static str {
        match self {
            Verdict::Applied => "applied",
            Verdict::Queued => "queued",
            Verdict::Refused(_) => "refused",
        }
    }

    /// A Temporal Update's answer: applied, or refused by the validator
    /// before anything was recorded in the history.
    pub fn from_update(answer: Result<(), String>) -> Verdict {
        match answer {
            Ok(()) => Verdict::Applied,
            Err(why) => Verdict::Refused(format!("{why}; nothing was sent")),
        }
    }

    /// Reads the verdict back from a [`report`].
    pub fn from_report(v: &serde_json::Value) -> Option<Verdict> {
        match v["outcome"].as_str()? {
            "applied" => Some(Verdict::Applied),
            "queued" => Some(Verdict::Queued),
            "refused" => Some(Verdict::Refused(
                v["detail"].as_str().unwrap_or_default().to_owned(),
            )),
            _ => None,
        }
    }
}

/// One command's outcome as `--json` prints it and the admin API answers.
pub(crate) fn report(id: &str, request: &CommandRequest, verdict: &Verdict) -> serde_json::Value {
    serde_json::json!({
        "saga_id": id,
        "command": request.signal.name(),
        "outcome": verdict.name(),
        "detail": match verdict {
            Verdict::Refused(why) => Some(why.as_str()),
            _ => None,
        },
        "operator": request.audit.operator,
        "reason": request.audit.reason,
    })
}

/// Sends one command to one saga on either engine and returns its verdict.
pub(crate) fn one(
    source: &Source,
    id: &str,
    request: &CommandRequest,
    wait_secs: u64,
) -> Result<Verdict> {
    Ok(match source {
        Source::Journal(data) => embedded(data, id, request, wait_secs)?,
        Source::Temporal(settings) => {
            let verdict = crate::runtime::block_on(async {
                TemporalClient::connect(settings)
                    .await?
                    .command(id, request, Duration::from_secs(wait_secs.max(1)))
                    .await
            })??;
            Verdict::from_update(verdict)
        }
        Source::Admin(client) => client.command(id, request, wait_secs)?,
    })
}

/// Checks against the replayed saga, queues, and waits up to `wait_secs`
/// for the running worker's verdict.
pub(crate) fn embedded(
    data: &std::path::Path,
    id: &str,
    request: &CommandRequest,
    wait_secs: u64,
) -> Result<Verdict> {
    let inbox_id = match check_and_queue(data, id, request)? {
        Ok(inbox_id) => inbox_id.expect("a command outside a bulk run is always queued"),
        Err(refused) => return Ok(refused),
    };
    let conn = open_journal(data)?;
    let journal = DataPaths {
        dir: data.to_owned(),
    }
    .journal();
    wait_for_verdict(&conn, &journal, inbox_id, wait_secs)
}

/// Checks against the replayed saga and queues: the inbox id, `None` when
/// the command's bulk run commanded this saga already, or the refusal.
fn check_and_queue(
    data: &std::path::Path,
    id: &str,
    request: &CommandRequest,
) -> Result<Result<Option<i64>, Verdict>> {
    let mut conn = open_journal(data)?;
    if let Some(bulk) = &request.audit.bulk {
        if operator::commanded(&conn, bulk, id)? {
            return Ok(Ok(None));
        }
    }
    if let Err(why) = operator::check(&conn, id, &request.signal)? {
        return Ok(Err(Verdict::Refused(format!("{why}; nothing was sent"))));
    }
    Ok(Ok(operator::queue(&mut conn, id, request, now_ms())?))
}

/// A bulk run's step on the embedded engine: check and queue without
/// waiting; `None` when the run commanded this saga already.
pub(crate) fn embedded_check_and_queue(
    data: &std::path::Path,
    id: &str,
    request: &CommandRequest,
) -> Result<Option<Verdict>> {
    Ok(match check_and_queue(data, id, request)? {
        Ok(Some(_)) => Some(Verdict::Queued),
        Ok(None) => None,
        Err(refused) => Some(refused),
    })
}

/// Waits up to `wait_secs` for the running worker's verdict on inbox row
/// `inbox_id`; `Queued` when no worker runs or none answered in time.
pub(crate) fn wait_for_verdict(
    conn: &rusqlite::Connection,
    journal: &std::path::Path,
    inbox_id: i64,
    wait_secs: u64,
) -> Result<Verdict> {
    if wait_secs == 0 || !operator::worker_running(journal) {
        return Ok(Verdict::Queued);
    }
    let deadline = Instant::now() + Duration::from_secs(wait_secs);
    while Instant::now() < deadline {
        if let Some(row) = operator::outcome(conn, inbox_id)? {
            return Ok(match row.outcome.as_str() {
                "applied" => Verdict::Applied,
                _ => Verdict::Refused(row.detail.unwrap_or_default()),
            });
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(Verdict::Queued)
}
