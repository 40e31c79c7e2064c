//! The operator's views of a Temporal cluster: list, count and stats
//! from visibility (the `SagaStatus` and `SagaName` search attributes),
//! show, history and audit from the workflows' histories, as the rows of
//! [`crate::engine::view`], so the CLI prints both engines the same way.

use super::{ms, request, TemporalClient, TemporalError, STATUS_QUERY_WAIT};
use crate::engine::command::CommandRequest;
use crate::engine::temporal::history::{translate, HistorySaga};
use crate::engine::temporal::scope::owned;
use crate::engine::temporal::workflow::{SagaWorkflow, REASON_MEMO, SAGA_NAME, SAGA_STATUS};
use crate::engine::view::AuditRow;
use crate::engine::view::{percentile, SagaRow, Stats, LATENCY_SAMPLE};
use futures::TryStreamExt;
use sagaflow_workflows::SagaStatus;
use serde_json::Value;
use temporalio_client::errors::WorkflowInteractionError;
use temporalio_client::{
    WorkflowCountOptions, WorkflowDescribeOptions, WorkflowFetchHistoryOptions,
    WorkflowListOptions, WorkflowQueryOptions,
};
use temporalio_common::protos::temporal::api::enums::v1::WorkflowExecutionStatus;
use temporalio_common::protos::temporal::api::history::v1::HistoryEvent;

impl TemporalClient {
    /// Operator commands applied since `since_ms`, oldest first, from the
    /// Update events in the sagas' histories (a refused command leaves no
    /// event). Only sagas open at some time since `since_ms` can have one:
    /// those still running and those closed since.
    pub async fn audit(
        &self,
        since_ms: u64,
        saga_id: Option<&str>,
        limit: usize,
    ) -> Result<Vec<AuditRow>, TemporalError> {
        let ids: Vec<String> = match saga_id {
            // The saga's own history, and its refund saga's if it has one.
            Some(id) => {
                let refund = crate::engine::command::refund_id(id);
                let mut ids = vec![id.to_owned()];
                if self.raw_history(&refund).await.is_ok() {
                    ids.push(refund);
                }
                ids
            }
            None => {
                let since = chrono::DateTime::from_timestamp_millis(since_ms as i64)
                    .unwrap_or_default()
                    .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
                let query = self.query(Some(format!(
                    "ExecutionStatus = 'Running' OR CloseTime >= '{since}'"
                )));
                self.client
                    .list_workflows(query, WorkflowListOptions::default())
                    .map_err(request)
                    .map_ok(|wf| wf.id().to_owned())
                    .try_collect()
                    .await?
            }
        };
        let mut rows = Vec::new();
        for id in ids {
            let translated = translate(&self.raw_history(&id).await?);
            // A refund saga records the refund command in its start input.
            let refund = translated
                .input
                .as_ref()
                .and_then(|i| i.order.get("refund"));
            if let (Some(of), Some(started)) = (refund, translated.events.first()) {
                let text = |k: &str| of[k].as_str().unwrap_or_default().to_owned();
                if started.at_ms >= since_ms && saga_id.is_none_or(|s| s == text("saga_id")) {
                    rows.push(AuditRow {
                        at_ms: started.at_ms,
                        saga_id: text("saga_id"),
                        command: "refund".into(),
                        operator: text("operator"),
                        reason: text("reason"),
                        bulk_id: None,
                        outcome: "applied".into(),
                        detail: Some(format!("started {id}")),
                        body: of.clone(),
                    });
                }
            }
            for e in translated.events {
                if e.kind != "signal" || e.at_ms < since_ms {
                    continue;
                }
                let Ok(command) = CommandRequest::decode(&e.body.to_string()) else {
                    continue;
                };
                rows.push(AuditRow {
                    at_ms: e.at_ms,
                    saga_id: id.clone(),
                    command: command.signal.name().to_owned(),
                    operator: command.audit.operator,
                    reason: command.audit.reason,
                    bulk_id: command.audit.bulk,
                    outcome: "applied".into(),
                    detail: None,
                    body: e.body,
                });
            }
        }
        rows.sort_by(|a, b| a.at_ms.cmp(&b.at_ms).then(a.saga_id.cmp(&b.saga_id)));
        rows.truncate(limit);
        Ok(rows)
    }

    /// Counts sagas of a status (or all), through visibility.
    pub async fn count(&self, status: Option<&str>) -> Result<u64, TemporalError> {
        let n = self
            .client
            .count_workflows(self.status_query(status), WorkflowCountOptions::default())
            .await
            .map_err(request)?;
        Ok(n.count() as u64)
    }

    /// Lists sagas, newest first, as the embedded engine's rows.
    pub async fn list(
        &self,
        status: Option<&str>,
        limit: usize,
    ) -> Result<Vec<SagaRow>, TemporalError> {
        let mut rows: Vec<SagaRow> = self
            .client
            .list_workflows(self.status_query(status), WorkflowListOptions::default())
            .map_err(request)
            .try_filter_map(|wf| async move {
                let sa = wf.search_attributes();
                let created = ms(wf.start_time());
                let ended = wf.close_time().map(|t| ms(Some(t)));
                let status = sa.get(&SAGA_STATUS).unwrap_or_else(|| "running".into());
                let reason = if status == "parked" {
                    wf.memo().get::<String>(REASON_MEMO).ok().flatten()
                } else {
                    None
                };
                Ok(Some(SagaRow {
                    id: wf.id().to_owned(),
                    saga: sa.get(&SAGA_NAME).unwrap_or_default(),
                    status,
                    reason,
                    created_ms: created,
                    updated_ms: ended.unwrap_or(created),
                    ended_ms: ended,
                    def_hash: String::new(),
                }))
            })
            .try_collect()
            .await?;
        rows.sort_by(|a, b| b.created_ms.cmp(&a.created_ms).then(a.id.cmp(&b.id)));
        rows.truncate(limit);
        Ok(rows)
    }

    /// True when some parked saga has a workflow task waiting (a signal not
    /// yet processed): visibility still says parked, but work is pending.
    pub async fn parked_with_pending_work(&self) -> Result<bool, TemporalError> {
        let parked: Vec<String> = self
            .client
            .list_workflows(
                self.status_query(Some("parked")),
                WorkflowListOptions::default(),
            )
            .map_err(request)
            .map_ok(|wf| wf.id().to_owned())
            .try_collect()
            .await?;
        for id in parked {
            let description = self
                .client
                .get_workflow_handle::<SagaWorkflow>(id)
                .describe(WorkflowDescribeOptions::default())
                .await
                .map_err(request)?;
            if description.raw_description.pending_workflow_task.is_some() {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// True while the saga's workflow is open (running, compensating or
    /// parked: a parked saga waits for a signal); false once it has closed
    /// or when the cluster has no such workflow. Strongly consistent (a
    /// describe, not visibility).
    pub async fn is_open(&self, saga_id: &str) -> Result<bool, TemporalError> {
        match self
            .client
            .get_workflow_handle::<SagaWorkflow>(saga_id)
            .describe(WorkflowDescribeOptions::default())
            .await
        {
            Ok(d) => Ok(d
                .raw_description
                .workflow_execution_info
                .is_some_and(|i| i.status() == WorkflowExecutionStatus::Running)),
            Err(WorkflowInteractionError::NotFound(_)) => Ok(false),
            Err(e) => Err(request(e)),
        }
    }

    /// The saga's status as its workflow reports it (a query).
    pub async fn status(&self, saga_id: &str) -> Result<Option<SagaStatus>, TemporalError> {
        self.client
            .get_workflow_handle::<SagaWorkflow>(saga_id)
            .query(SagaWorkflow::status, (), WorkflowQueryOptions::default())
            .await
            .map_err(request)
    }

    /// The raw Temporal history of a saga of this deployment: a workflow
    /// started on another task queue is "not found" here
    /// ([`super::scope::owned`]), so no read or command reaches it.
    pub async fn raw_history(&self, saga_id: &str) -> Result<Vec<HistoryEvent>, TemporalError> {
        let events = self
            .client
            .get_workflow_handle::<SagaWorkflow>(saga_id)
            .fetch_history(WorkflowFetchHistoryOptions::default())
            .into_events()
            .await
            .map_err(|e| match e.to_string() {
                s if s.contains("not found") => TemporalError::NotFound(saga_id.to_owned()),
                s => TemporalError::Request(s),
            })?;
        if !owned(&events, &self.settings.task_queue) {
            return Err(TemporalError::NotFound(saga_id.to_owned()));
        }
        Ok(events)
    }

    /// The saga's history in the SDK's replayable JSON form (for recorded
    /// replay tests).
    pub async fn history_json(&self, saga_id: &str) -> Result<Vec<u8>, TemporalError> {
        self.client
            .get_workflow_handle::<SagaWorkflow>(saga_id)
            .fetch_history(WorkflowFetchHistoryOptions::default())
            .to_json()
            .await
            .map_err(request)
    }

    /// The order the saga started from (its workflow's input), or `None`
    /// when the cluster has no such saga.
    pub async fn started_order(&self, saga_id: &str) -> Result<Option<Value>, TemporalError> {
        match self.raw_history(saga_id).await {
            Ok(events) => Ok(translate(&events).input.map(|input| input.order)),
            Err(TemporalError::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// One saga: its row, definition and journal, from its history.
    pub async fn saga(&self, saga_id: &str) -> Result<HistorySaga, TemporalError> {
        let events = self.raw_history(saga_id).await?;
        let translated = translate(&events);
        let input = translated
            .input
            .ok_or_else(|| TemporalError::NotFound(saga_id.to_owned()))?;
        // The query is answered only by a running worker; without one the
        // server holds it until its own timeout, so the history (which has
        // every status the workflow recorded) answers after a short wait.
        let queried = tokio::time::timeout(STATUS_QUERY_WAIT, self.status(saga_id)).await;
        let status = queried
            .ok()
            .and_then(Result::ok)
            .flatten()
            .unwrap_or_else(|| {
                SagaStatus::from_parts(&translated.last_status, translated.last_reason.clone())
                    .unwrap_or(SagaStatus::Running)
            });
        let created = translated.events.first().map_or(0, |e| e.at_ms);
        let ended = status
            .is_terminal()
            .then(|| translated.events.last().map_or(created, |e| e.at_ms));
        Ok(HistorySaga {
            row: SagaRow {
                id: saga_id.to_owned(),
                saga: input.def.name.clone(),
                status: status.name().to_owned(),
                reason: status.reason().map(str::to_owned),
                created_ms: created,
                updated_ms: translated.events.last().map_or(created, |e| e.at_ms),
                ended_ms: ended,
                def_hash: input.def_hash.clone(),
            },
            def: input.def,
            order: input.order,
            events: translated.events,
        })
    }

    /// How many sagas have ended (at most `limit`, the most recently
    /// closed) and the history events they hold, from visibility.
    pub async fn history_events(&self, limit: usize) -> Result<(u64, u64), TemporalError> {
        let lengths: Vec<i64> = self
            .client
            .list_workflows(
                self.query(Some("ExecutionStatus != 'Running'".into())),
                WorkflowListOptions::builder().limit(limit).build(),
            )
            .map_err(request)
            .map_ok(|wf| wf.history_length())
            .try_collect()
            .await?;
        let events = lengths.iter().map(|n| (*n).max(0) as u64).sum();
        Ok((lengths.len() as u64, events))
    }

    /// Counts by status (count queries), and throughput and latency
    /// percentiles over the most recently ended sagas (at most
    /// [`LATENCY_SAMPLE`]): listing every saga would take minutes on a
    /// cluster that has run millions.
    pub async fn stats(&self) -> Result<Stats, TemporalError> {
        let mut s = Stats {
            running: self.count(Some("running")).await?,
            compensating: self.count(Some("compensating")).await?,
            completed: self.count(Some("completed")).await?,
            compensated: self.count(Some("compensated")).await?,
            parked: self.count(Some("parked")).await?,
            ..Stats::default()
        };
        s.total = s.running + s.compensating + s.completed + s.compensated + s.parked;
        let spans: Vec<(u64, u64, i64)> = self
            .client
            .list_workflows(
                // Closed executions come most recently closed first.
                self.query(Some("ExecutionStatus = 'Completed'".into())),
                WorkflowListOptions::builder().limit(LATENCY_SAMPLE).build(),
            )
            .map_err(request)
            .and_then(|wf| async move {
                Ok((
                    ms(wf.start_time()),
                    ms(wf.close_time()),
                    wf.history_length(),
                ))
            })
            .try_collect()
            .await?;
        let mut lat: Vec<u64> = spans.iter().map(|(a, b, _)| b.saturating_sub(*a)).collect();
        lat.sort_unstable();
        s.p50_ms = percentile(&lat, 0.5);
        s.p99_ms = percentile(&lat, 0.99);
        s.latency_over = lat.len() as u64;
        s.events = spans.iter().map(|(_, _, n)| *n as u64).sum();
        if let (Some(first), Some(last)) = (
            spans.iter().map(|(a, _, _)| *a).min(),
            spans.iter().map(|(_, b, _)| *b).max(),
        ) {
            let secs = last.saturating_sub(first).max(1) as f64 / 1000.0;
            s.sagas_per_sec = (lat.len() as f64 / secs * 10.0).round() / 10.0;
        }
        Ok(s)
    }
}
