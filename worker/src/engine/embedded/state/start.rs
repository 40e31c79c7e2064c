//! Starting a saga: a new order, or a refund an operator asked for. A
//! start is idempotent (a known id is acknowledged as a duplicate); the
//! definition is journaled once per hash.

use super::{new_live, Action, Effects, Observed, State};
use crate::engine::command::StartRequest;
use crate::engine::embedded::journal::{Applied, EventKind, Record};
use crate::engine::model::{Definition, StartOutcome};
use serde_json::Value;
use std::sync::Arc;

impl State {
    #[allow(clippy::too_many_arguments)] // the fields of Input::Start
    pub(super) fn start<A>(
        &mut self,
        saga_id: String,
        def: Arc<Definition>,
        input: Value,
        ack: Option<A>,
        journaled: bool,
        now: u64,
        out: &mut Effects<A>,
    ) {
        if journaled || self.knows(&saga_id) {
            if let Some(ack) = ack {
                out.actions.push(Action::Ack(ack, StartOutcome::Duplicate));
            }
            return;
        }
        let id: Arc<str> = Arc::from(saga_id);
        if !self.written_defs.contains(&def.hash) {
            self.written_defs.insert(def.hash.clone());
            out.records.push(Record::Definition {
                hash: def.hash.clone(),
                name: def.def.name.clone(),
                body: def.json.clone(),
            });
        }
        out.records.push(Record::NewSaga {
            id: id.to_string(),
            saga: def.def.name.clone(),
            def_hash: def.hash.clone(),
            input: input.to_string(),
            at_ms: now,
        });
        out.records.push(Record::Event {
            saga_id: id.clone(),
            n: 0,
            at_ms: now,
            kind: EventKind::Started,
        });
        if let Some(ack) = ack {
            out.actions.push(Action::Ack(ack, StartOutcome::Started));
        }
        out.observed.push(Observed::Started {
            saga: def.name.clone(),
        });
        let live = new_live(id.clone(), def, input, now, 1);
        live.ctx.set_traced(self.traced);
        self.insert(id.clone(), live);
        self.advance(&id, now, out);
    }

    /// Starts the saga an operator command asked for (idempotent, like any
    /// start) and audits the command in the same commit.
    pub(super) fn start_from_inbox<A>(
        &mut self,
        of: String,
        start: Result<Box<(StartRequest, String)>, String>,
        inbox_id: i64,
        journaled: bool,
        now: u64,
        out: &mut Effects<A>,
    ) {
        let (request, body) = match start {
            Ok(boxed) => *boxed,
            Err(why) => {
                tracing::warn!(saga_id = of, %why, "unreadable start command in the inbox; refused");
                out.records.push(Record::DropSignal {
                    inbox_id,
                    saga_id: of,
                    command: None,
                    why: format!("the inbox row cannot be read: {why}"),
                    at_ms: now,
                });
                return;
            }
        };
        let exists = journaled || self.knows(&request.saga_id);
        let detail = if exists {
            format!("{} exists already; nothing was started", request.saga_id)
        } else {
            format!("started {}", request.saga_id)
        };
        out.records.push(Record::Applied(Box::new(Applied {
            inbox_id,
            saga_id: of,
            command: "refund",
            audit: request.audit,
            detail,
            body,
            at_ms: now,
        })));
        let def = Definition::new(request.def);
        self.start(request.saga_id, def, request.input, None, exists, now, out);
    }
}
