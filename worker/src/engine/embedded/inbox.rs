//! The operator inbox poller: reads commands the CLI wrote to the
//! journal's `inbox` table and hands them to the core, which applies or
//! refuses each (a row it cannot read is refused with the reason); a failed
//! read is logged and tried again at the next poll.

use super::api::Msg;
use super::journal;
use super::state::Input;
use crate::engine::command::{CommandRequest, StartRequest};
use sagaflow_workflows::Signal;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::time::Duration;

/// Polls the inbox of the journal at `path` every `every` until `stop`.
pub(crate) fn poll(path: PathBuf, tx: Sender<Msg>, stop: Arc<AtomicBool>, every: Duration) {
    let conn = match journal::open_reader(&path) {
        Ok(conn) => conn,
        Err(error) => {
            tracing::error!(%error, "cannot open the journal to read operator signals; signals wait until a restart");
            return;
        }
    };
    let mut last = 0i64;
    while !stop.load(Ordering::Relaxed) {
        let rows: rusqlite::Result<Vec<(i64, String, String, String)>> = conn
            .prepare_cached("SELECT id, saga_id, signal, body FROM inbox WHERE id > ?1 ORDER BY id")
            .and_then(|mut s| {
                s.query_map([last], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
                    .collect()
            });
        match rows {
            Err(error) => {
                tracing::warn!(%error, "cannot read the operator inbox; trying again")
            }
            Ok(rows) => {
                for (id, saga_id, name, body) in rows {
                    last = id;
                    if name == "refund" {
                        let start = serde_json::from_str::<StartRequest>(&body)
                            .map(|request| Box::new((request, body)))
                            .map_err(|e| {
                                format!("a refund body that is not a start request ({e})")
                            });
                        let _ = tx.send(Msg::Apply(Input::StartFromInbox {
                            of: saga_id,
                            start,
                            inbox_id: id,
                            journaled: false,
                        }));
                        continue;
                    }
                    let command = read_command(&name, &body);
                    if let Err(why) = &command {
                        tracing::warn!(saga_id, inbox_id = id, %why, "unreadable command in the inbox; refused");
                    }
                    let _ = tx.send(Msg::Apply(Input::Signal {
                        saga_id,
                        command,
                        inbox_id: id,
                    }));
                }
            }
        }
        std::thread::sleep(every);
    }
}

/// The command of an inbox row: its `body` (version 2), or a bare signal
/// name in `signal` (a row a version 1 CLI wrote).
fn read_command(name: &str, body: &str) -> Result<CommandRequest, String> {
    if body.trim() == "{}" {
        return Signal::parse(name)
            .map(|signal| CommandRequest {
                signal,
                audit: Default::default(),
            })
            .ok_or_else(|| format!("an unknown command {name:?}"));
    }
    CommandRequest::decode(body)
}
