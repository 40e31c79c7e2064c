//! The operator inbox poller: reads signals the CLI wrote to the journal's
//! `inbox` table and hands them to the core. A row it cannot use is logged
//! (and left for the core to drop when it is for no live saga); a failed
//! read is logged and tried again at the next poll.

use super::api::Msg;
use super::journal;
use super::state::Input;
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
        let rows: rusqlite::Result<Vec<(i64, String, String)>> = conn
            .prepare_cached("SELECT id, saga_id, signal FROM inbox WHERE id > ?1 ORDER BY id")
            .and_then(|mut s| {
                s.query_map([last], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                    .collect()
            });
        match rows {
            Err(error) => {
                tracing::warn!(%error, "cannot read the operator inbox; trying again")
            }
            Ok(rows) => {
                for (id, saga_id, signal) in rows {
                    last = id;
                    match Signal::parse(&signal) {
                        Some(signal) => {
                            let _ = tx.send(Msg::Apply(Input::Signal {
                                saga_id,
                                signal,
                                inbox_id: id,
                            }));
                        }
                        None => tracing::warn!(
                            saga_id,
                            signal,
                            inbox_id = id,
                            "unknown signal in the inbox; ignored (known: retry)"
                        ),
                    }
                }
            }
        }
        std::thread::sleep(every);
    }
}
