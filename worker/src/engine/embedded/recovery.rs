//! Recovery's reading half: what the journal holds, as inputs for the state
//! machine. The deciding half is [`super::state::State::apply`] with
//! [`Input::Recover`](super::state::Input::Recover): a recovered saga is
//! rebuilt by the code that ran it the first time.
//!
//! A record that cannot be read (a definition, an input, an event body) is
//! passed on as an `Err` with the reason, never skipped and never fatal:
//! the state parks that saga and the others recover. Only a failing query
//! (the file itself is unreadable) stops start-up.

use super::api::EngineError;
use super::journal::EventKind;
use super::state::Recovered;
use crate::engine::model::Definition;
use rusqlite::{Connection, OptionalExtension};
use sagaflow_workflows::SagaDef;
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// The journal as the core needs it at start-up: what it reads does not
/// grow with the number of ended sagas (their ids are looked up when a
/// start needs them: `journal_ids.rs`).
pub(crate) struct Journal {
    /// Definitions already stored.
    pub(crate) written_defs: HashSet<String>,
    /// Sagas that had not ended, oldest first.
    pub(crate) open: Vec<Recovered>,
}

/// Reads the journal through `conn`.
pub(crate) fn read(conn: &Connection) -> Result<Journal, EngineError> {
    let mut defs: HashMap<String, Result<Arc<Definition>, String>> = HashMap::new();
    {
        let mut stmt = conn.prepare("SELECT hash, body FROM definitions")?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
        for row in rows {
            let (hash, body) = row?;
            defs.insert(hash.clone(), definition(hash, body));
        }
    }
    let written_defs = defs
        .iter()
        .filter(|(_, d)| d.is_ok())
        .map(|(h, _)| h.clone())
        .collect();
    let rows: Vec<(String, String, String, u64)> = conn
        .prepare(
            // Every status but the terminal ones, through the status index:
            // the ended sagas, however many, are not read.
            "SELECT id, def_hash, input, created_ms FROM sagas INDEXED BY sagas_status
             WHERE status IN ('running', 'compensating', 'parked') ORDER BY created_ms",
        )?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
        .collect::<Result<_, _>>()?;
    let mut open = Vec::with_capacity(rows.len());
    for (id, hash, input, created_ms) in rows {
        let def = defs
            .get(&hash)
            .cloned()
            .unwrap_or_else(|| Err(format!("definition {hash} is not in the journal")));
        open.push(recovered(conn, id, def, &input, created_ms)?);
    }
    Ok(Journal { written_defs, open })
}

/// One saga that has not ended, as recovery would read it; `None` when
/// there is no such saga or it has ended. The CLI replays it to check a
/// command before sending it.
pub(crate) fn read_one(conn: &Connection, id: &str) -> Result<Option<Recovered>, EngineError> {
    let row: Option<(String, String, u64)> = conn
        .query_row(
            "SELECT def_hash, input, created_ms FROM sagas
             WHERE id = ?1 AND status NOT IN ('completed', 'compensated')",
            [id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()?;
    let Some((hash, input, created_ms)) = row else {
        return Ok(None);
    };
    let body: Option<String> = conn
        .query_row(
            "SELECT body FROM definitions WHERE hash = ?1",
            [&hash],
            |r| r.get(0),
        )
        .optional()?;
    let def = match body {
        None => Err(format!("definition {hash} is not in the journal")),
        Some(body) => definition(hash, body),
    };
    Ok(Some(recovered(
        conn,
        id.to_owned(),
        def,
        &input,
        created_ms,
    )?))
}

fn definition(hash: String, body: String) -> Result<Arc<Definition>, String> {
    serde_json::from_str::<SagaDef>(&body)
        .map(|def| {
            Arc::new(Definition {
                name: Arc::from(def.name.as_str()),
                def,
                hash: hash.clone(),
                json: body,
            })
        })
        .map_err(|e| format!("definition {hash} is not a saga definition ({e})"))
}

fn recovered(
    conn: &Connection,
    id: String,
    def: Result<Arc<Definition>, String>,
    input: &str,
    created_ms: u64,
) -> Result<Recovered, EngineError> {
    let input =
        serde_json::from_str::<Value>(input).map_err(|e| format!("the input is not JSON ({e})"));
    let events = conn
        .prepare_cached(
            "SELECT n, at_ms, kind, seq, body FROM events WHERE saga_id = ?1 ORDER BY n",
        )?
        .query_map([&id], |r| {
            Ok((
                r.get::<_, u32>(0)?,
                r.get::<_, u64>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, Option<u32>>(3)?,
                r.get::<_, String>(4)?,
            ))
        })?
        .map(|row| {
            row.map(|(n, at_ms, kind, seq, body)| (n, at_ms, EventKind::decode(&kind, seq, &body)))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Recovered {
        id,
        created_ms,
        def,
        input,
        events,
    })
}
