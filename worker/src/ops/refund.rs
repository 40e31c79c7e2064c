//! A refund: the refund saga of a completed checkout, started on either
//! engine (or queued for the embedded worker), once per saga.

use super::command::{wait_for_verdict, Verdict};
use super::source::{open_journal, Source};
use crate::app::DataPaths;
use crate::config::Config;
use crate::engine::command::{refund_id, Audit, StartRequest};
use crate::engine::embedded::operator;
use crate::engine::temporal::client::TemporalClient;
use crate::engine::view::EventRow;
use crate::engine::Definition;
use anyhow::{Context, Result};
use sagaflow_activities::clock::now_ms;
use serde::{Deserialize, Serialize};

/// The saga name `sagaflow refund` starts.
pub const REFUND_SAGA: &str = "refund";

/// What became of a refund request.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RefundOutcome {
    /// The saga refunded.
    pub saga_id: String,
    /// applied (started), queued (for a worker), exists (started before:
    /// nothing done), or refused.
    pub outcome: String,
    /// The refund saga's id.
    pub refund_saga: String,
    /// What happened, in words.
    pub detail: String,
}

/// Starts the refund saga of completed saga `id` on either engine, or
/// says why not. A second request finds the first refund and does nothing.
pub(crate) fn start_refund(
    source: &Source,
    config: &Config,
    id: &str,
    audit: Audit,
    wait: u64,
) -> Result<RefundOutcome> {
    let refund = refund_id(id);
    let outcome = |outcome: &str, detail: String| RefundOutcome {
        saga_id: id.to_owned(),
        outcome: outcome.to_owned(),
        refund_saga: refund.clone(),
        detail,
    };
    let def = config.sagas.get(REFUND_SAGA).cloned().with_context(|| {
        format!(
            "{} defines no [sagas.{REFUND_SAGA}]; add it (the shipped sagas.toml has one: refund the payment, return the stock, cancel the order)",
            config.file.display()
        )
    })?;
    let saga = match source.saga(id) {
        Ok(saga) => saga,
        Err(e) if matches!(source, Source::Journal(_)) && e.to_string().starts_with("no saga") => {
            return Ok(outcome("refused", not_in_journal(config, id)));
        }
        Err(e) => return Err(e),
    };
    let refunds = saga
        .input
        .as_ref()
        .and_then(|i| i["refund"]["saga_id"].as_str());
    if let Some(of) = refunds {
        return Ok(outcome(
            "refused",
            format!("it is itself the refund of saga {of}; nothing was sent"),
        ));
    }
    if saga.row.status != "completed" {
        return Ok(outcome(
            "refused",
            format!(
                "refund applies only to a completed saga, and this one is {}; {}; nothing was sent",
                saga.row.status,
                match saga.row.status.as_str() {
                    "running" => "before its pivot `sagaflow cancel` stops it",
                    "parked" => "finish it first (`sagaflow retry` or `resolve`)",
                    _ => "nothing was sold",
                }
            ),
        ));
    }
    if let Ok(existing) = source.saga(&refund) {
        return Ok(outcome(
            "exists",
            format!(
                "saga {id} has a refund already: {refund} ({}); nothing was started",
                existing.row.status
            ),
        ));
    }
    let mut input = saga
        .input
        .clone()
        .with_context(|| format!("the journal of saga {id} holds no readable order"))?;
    input["refund"] = serde_json::json!({
        "saga_id": id,
        "payment_intent": captured_intent(&saga.events),
        "operator": audit.operator,
        "reason": audit.reason,
    });
    let request = StartRequest {
        saga_id: refund.clone(),
        def,
        input,
        audit,
    };
    let applied = match source {
        Source::Journal(data) => {
            let mut conn = open_journal(data)?;
            let inbox_id = operator::queue_start(&mut conn, id, "refund", &request, now_ms())?;
            let journal = DataPaths {
                dir: data.to_owned(),
            }
            .journal();
            wait_for_verdict(&conn, &journal, inbox_id, wait)?
        }
        Source::Temporal(settings) => {
            crate::runtime::block_on(async {
                let client = TemporalClient::connect(settings).await?;
                let def = Definition::new(request.def);
                client
                    .start(client.saga_input(request.saga_id, &def, request.input))
                    .await
            })??;
            Verdict::Applied
        }
        Source::Admin(client) => return client.refund(id, &request.audit, wait),
    };
    Ok(match applied {
        Verdict::Applied => outcome(
            "applied",
            format!("refund of saga {id} started as saga {refund}; `sagaflow show {refund}` follows it"),
        ),
        Verdict::Queued => outcome(
            "queued",
            format!("refund of saga {id} queued as saga {refund}: no worker is running on this journal, or it has not answered yet; it starts when one runs"),
        ),
        Verdict::Refused(why) => outcome("refused", why),
    })
}

/// Why a refund of a saga the journal does not hold is refused: it never
/// ran here, or retention removed it (the journal no longer knows what it
/// captured, reserved and wrote, which the refund saga undoes).
fn not_in_journal(config: &Config, id: &str) -> String {
    match config.embedded.retention_ms {
        Some(ms) => format!(
            "the journal holds no saga {id}: it never ran here, or it ended more than {} ago and [embedded] retention removed it; a refund needs its journal (the payment it captured, the stock it took), so refund it at the provider and return its stock by hand, with the saga from your `sagaflow archive` file; nothing was sent",
            sagaflow_workflows::duration::format_duration_ms(ms)
        ),
        None => format!("the journal holds no saga {id} (`sagaflow list` shows the ids); nothing was sent"),
    }
}

/// The payment intent a checkout captured, from its journal.
fn captured_intent(events: &[EventRow]) -> Option<String> {
    events
        .iter()
        .filter(|e| e.kind == "activity_completed")
        .filter_map(|e| e.body.get("output"))
        .find(|o| o["kind"] == "capture")
        .and_then(|o| o["payment_intent"].as_str())
        .map(str::to_owned)
}
