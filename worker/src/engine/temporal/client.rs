//! Talking to the cluster: start, operator commands (Updates), and the
//! CLI's views.
//!
//! The views (list, show, history, stats) produce the same rows as the
//! embedded engine's [`read`](crate::engine::read) module, so the CLI prints
//! both engines the same way: list and stats come from visibility (the
//! `SagaStatus` and `SagaName` search attributes), show and history from the
//! workflow's Temporal history, translated into sagaflow's journal events.

use super::scope::{literal, owned};
use super::workflow::{
    SagaInput, SagaWorkflow, REASON_MEMO, SAGA_NAME, SAGA_STATUS, SAGA_WORKER, WORKFLOW_TYPE,
};
use crate::config::TemporalSettings;
use crate::engine::command::CommandRequest;
use crate::engine::filter::{last_attempt, Filter, Target};
use crate::engine::journal::AttemptBody;
use crate::engine::operator::AuditRow;
use crate::engine::read::{percentile, EventRow, SagaRow, Stats, LATENCY_SAMPLE};
use crate::engine::{Definition, StartOutcome};
use futures::TryStreamExt;
use sagaflow_workflows::{ActivityCall, ActivityError, SagaDef, SagaOutcome, SagaStatus, Stage};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::str::FromStr;
use std::time::{SystemTime, UNIX_EPOCH};
use temporalio_client::errors::{
    WorkflowInteractionError, WorkflowStartError, WorkflowUpdateError,
};
use temporalio_client::{
    Client, ClientOptions, Connection, ConnectionOptions, Url, WorkflowCountOptions,
    WorkflowDescribeOptions, WorkflowExecuteUpdateOptions, WorkflowFetchHistoryOptions,
    WorkflowGetResultOptions, WorkflowIdConflictPolicy, WorkflowIdReusePolicy, WorkflowListOptions,
    WorkflowQueryOptions, WorkflowStartOptions,
};
use temporalio_common::protos::constants::LOCAL_ACTIVITY_MARKER_NAME;
use temporalio_common::protos::temporal::api::common::v1::{Payload, Payloads};
use temporalio_common::protos::temporal::api::enums::v1::WorkflowExecutionStatus;
use temporalio_common::protos::temporal::api::failure::v1::{failure::FailureInfo, Failure};
use temporalio_common::protos::temporal::api::history::v1::{
    history_event::Attributes, HistoryEvent,
};
use temporalio_common::search_attributes::SearchAttributes;

/// How long `show` and `history` wait for a worker to answer the status
/// query before they read the status from the history instead.
const STATUS_QUERY_WAIT: std::time::Duration = std::time::Duration::from_millis(1500);

/// Errors talking to the Temporal cluster.
#[derive(Debug, thiserror::Error)]
pub enum TemporalError {
    /// The cluster did not answer.
    #[error("cannot reach Temporal at {address}; start it (`scripts/services.sh temporal` runs a dev server) or fix [temporal] address in sagas.toml")]
    Connect {
        /// The address tried.
        address: String,
        /// Why.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A request failed.
    #[error("temporal request failed: {0}")]
    Request(String),
    /// No saga with that id.
    #[error(
        "no saga {0} on the Temporal cluster; `sagaflow list --engine temporal` shows the ids"
    )]
    NotFound(String),
}

fn request<E: std::fmt::Display>(e: E) -> TemporalError {
    TemporalError::Request(e.to_string())
}

/// A connected client plus the settings it was made from.
#[derive(Clone)]
pub struct TemporalClient {
    /// The SDK client.
    pub client: Client,
    /// Address, namespace, task queue.
    pub settings: TemporalSettings,
    /// When set, views only see sagas whose id starts with it (a demo sale
    /// shares the namespace with everything else).
    pub scope: Option<String>,
}

fn ms(t: Option<SystemTime>) -> u64 {
    t.and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_millis() as u64)
}

impl TemporalClient {
    /// Connects to the cluster in `settings`.
    pub async fn connect(settings: &TemporalSettings) -> Result<TemporalClient, TemporalError> {
        let connect_err =
            |source: Box<dyn std::error::Error + Send + Sync>| TemporalError::Connect {
                address: settings.address.clone(),
                source,
            };
        let url = Url::from_str(&format!("http://{}", settings.address))
            .map_err(|e| connect_err(Box::new(e)))?;
        let connection = Connection::connect(
            ConnectionOptions::new(url)
                .identity(format!("sagaflow-{}", std::process::id()))
                .build(),
        )
        .await
        .map_err(|e| connect_err(Box::new(e)))?;
        let client = Client::new(
            connection,
            ClientOptions::new(settings.namespace.clone()).build(),
        )
        .map_err(|e| connect_err(Box::new(e)))?;
        Ok(TemporalClient {
            client,
            settings: settings.clone(),
            scope: None,
        })
    }

    /// The same client, its views limited to ids starting with `prefix`.
    pub fn scoped(&self, prefix: &str) -> TemporalClient {
        TemporalClient {
            scope: Some(prefix.to_owned()),
            ..self.clone()
        }
    }

    /// The visibility query selecting saga workflows in scope, with `extra`
    /// conditions. In scope means this deployment's: the ones on its task
    /// queue, so `list`, `stats`, idle checks and bulk targets never count
    /// another deployment's sagas on a shared namespace.
    /// Every value in it is a [`literal`], and `extra` is parenthesised,
    /// so nothing in it reaches past the task-queue term ([`super::scope`]).
    fn query(&self, extra: Option<String>) -> String {
        let mut q = format!(
            "WorkflowType = '{WORKFLOW_TYPE}' AND TaskQueue = {}",
            literal(&self.settings.task_queue)
        );
        if let Some(prefix) = &self.scope {
            q.push_str(&format!(" AND WorkflowId STARTS_WITH {}", literal(prefix)));
        }
        if let Some(extra) = extra {
            q.push_str(" AND (");
            q.push_str(&extra);
            q.push(')');
        }
        q
    }

    fn status_query(&self, status: Option<&str>) -> String {
        self.query(status.map(|s| format!("SagaStatus = {}", literal(s))))
    }

    /// The input of a new saga on this cluster: the definition it runs
    /// and how its steps run (`[temporal] steps`), fixed at its start.
    pub fn saga_input(&self, saga_id: String, def: &Definition, order: Value) -> SagaInput {
        SagaInput {
            saga_id,
            def_hash: def.hash.clone(),
            def: def.def.clone(),
            order,
            local_steps: false,
            steps: Some(self.settings.steps),
        }
    }

    /// Starts a saga workflow (workflow id = saga id). A saga that is
    /// running or has ended already is a harmless duplicate: nothing new
    /// runs.
    pub async fn start(&self, input: SagaInput) -> Result<StartOutcome, TemporalError> {
        let options =
            WorkflowStartOptions::new(self.settings.task_queue.clone(), input.saga_id.clone())
                .id_conflict_policy(WorkflowIdConflictPolicy::UseExisting)
                .id_reuse_policy(WorkflowIdReusePolicy::RejectDuplicate)
                .search_attributes(SearchAttributes::new([
                    SAGA_STATUS.value_set("running".to_owned()),
                    SAGA_NAME.value_set(input.def.name.clone()),
                    SAGA_WORKER.value_set(super::intake::worker_id().to_owned()),
                ]))
                .build();
        match self
            .client
            .start_workflow(SagaWorkflow::run, input, options)
            .await
        {
            Ok(_) => Ok(StartOutcome::Started),
            Err(WorkflowStartError::AlreadyStarted { .. }) => Ok(StartOutcome::Duplicate),
            Err(e) => Err(request(e)),
        }
    }

    /// Fails with what to run when the cluster lacks the `SagaStatus` or
    /// `SagaName` search attributes (starts and status upserts would fail).
    pub async fn check_search_attributes(&self) -> Result<(), TemporalError> {
        let probe = format!(
            "WorkflowType = '{WORKFLOW_TYPE}' AND SagaStatus = 'running' AND SagaName = 'checkout' AND SagaWorker = 'probe'"
        );
        match self.client.count_workflows(probe, WorkflowCountOptions::default()).await {
            Ok(_) => Ok(()),
            Err(e) => Err(TemporalError::Request(format!(
                "the namespace {ns} lacks the SagaStatus/SagaName/SagaWorker search attributes ({e}); create them: \
                 temporal operator search-attribute create --namespace {ns} --name SagaStatus --type Keyword \
                 && temporal operator search-attribute create --namespace {ns} --name SagaName --type Keyword \
                 && temporal operator search-attribute create --namespace {ns} --name SagaWorker --type Keyword \
                 (scripts/services.sh starts a dev server that has them)",
                ns = self.settings.namespace
            ))),
        }
    }

    /// Waits for a saga to end and returns how.
    pub async fn wait(&self, saga_id: &str) -> Result<SagaOutcome, TemporalError> {
        self.client
            .get_workflow_handle::<SagaWorkflow>(saga_id)
            .get_result(WorkflowGetResultOptions::default())
            .await
            .map_err(request)
    }

    /// Sends an operator command as the workflow's `command` Update and
    /// waits up to `wait` for the worker's answer: `Ok(Ok(()))` once
    /// applied, `Ok(Err(why))` when the validator refused it (or the saga
    /// has ended). With a bulk id the Update id is `{bulk}` so that the
    /// server runs it once per saga however often it is sent.
    pub async fn command(
        &self,
        saga_id: &str,
        request: &CommandRequest,
        wait: std::time::Duration,
    ) -> Result<Result<(), String>, TemporalError> {
        // An ended saga takes no Update; say why as the embedded engine does.
        let row = self.saga(saga_id).await?.row;
        let status = SagaStatus::from_parts(&row.status, row.reason).unwrap_or(SagaStatus::Running);
        if status.is_terminal() {
            return Ok(request.signal.applies_to(&status, &Stage::default(), &[]));
        }
        let options = WorkflowExecuteUpdateOptions::builder()
            .maybe_update_id(request.audit.bulk.clone())
            .build();
        let handle = self.client.get_workflow_handle::<SagaWorkflow>(saga_id);
        let update = handle.execute_update(SagaWorkflow::command, request.clone(), options);
        match tokio::time::timeout(wait, update).await {
            Err(_) => Err(TemporalError::Request(format!(
                "no worker answered the command within {}s; is a worker running on task queue {}? The command may still be checked and applied when one runs: see `sagaflow audit --saga {saga_id}`",
                wait.as_secs(),
                self.settings.task_queue
            ))),
            Ok(Ok(_)) => Ok(Ok(())),
            Ok(Err(WorkflowUpdateError::Failed(failure))) => Ok(Err(failure.message.clone())),
            Ok(Err(WorkflowUpdateError::NotFound(_))) => {
                Err(TemporalError::NotFound(saga_id.to_owned()))
            }
            Ok(Err(other)) => Err(TemporalError::Request(other.to_string())),
        }
    }

    /// The sagas `filter` selects among this deployment's (its task
    /// queue), oldest first: status, saga and start time through visibility, step and last error from each history
    /// (only when the filter asks for them).
    pub async fn targets(&self, filter: &Filter) -> Result<Vec<Target>, TemporalError> {
        let time = |ms: u64| {
            chrono::DateTime::from_timestamp_millis(ms as i64)
                .unwrap_or_default()
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
        };
        // (`query` scopes them to this deployment's task queue.)
        let mut terms = Vec::new();
        if let Some(s) = &filter.status {
            terms.push(format!("SagaStatus = {}", literal(s)));
        }
        if let Some(s) = &filter.saga {
            terms.push(format!("SagaName = {}", literal(s)));
        }
        if let Some(t) = filter.started_after {
            terms.push(format!("StartTime > '{}'", time(t)));
        }
        if let Some(t) = filter.started_before {
            terms.push(format!("StartTime < '{}'", time(t)));
        }
        let query = self.query(Some(terms.join(" AND ")).filter(|t| !t.is_empty()));
        let mut rows: Vec<Target> = self
            .client
            .list_workflows(query, WorkflowListOptions::default())
            .map_err(request)
            .map_ok(|wf| {
                let sa = wf.search_attributes();
                Target {
                    id: wf.id().to_owned(),
                    saga: sa.get(&SAGA_NAME).unwrap_or_default(),
                    status: sa.get(&SAGA_STATUS).unwrap_or_else(|| "running".into()),
                    step: None,
                    error: None,
                    created_ms: ms(wf.start_time()),
                }
            })
            .try_collect()
            .await?;
        if filter.needs_last_attempt() {
            let mut kept = Vec::with_capacity(rows.len());
            for mut t in rows {
                let events = translate(&self.raw_history(&t.id).await?).events;
                let (step, error) = last_attempt(events.iter().map(|e| (e.kind.as_str(), &e.body)));
                if filter.matches_attempt(step.as_deref(), error.as_deref()) {
                    t.step = step;
                    t.error = error;
                    kept.push(t);
                }
            }
            rows = kept;
        }
        rows.sort_by(|a, b| a.created_ms.cmp(&b.created_ms).then(a.id.cmp(&b.id)));
        Ok(rows)
    }

    /// True when saga `saga_id` accepted a command of bulk run `bulk`
    /// already (its history has the Update): a resumed run skips it.
    pub async fn commanded(&self, saga_id: &str, bulk: &str) -> Result<bool, TemporalError> {
        Ok(translate(&self.raw_history(saga_id).await?)
            .events
            .iter()
            .any(|e| e.kind == "signal" && e.body["bulk"] == bulk))
    }

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
    pub async fn saga(&self, saga_id: &str) -> Result<TemporalSaga, TemporalError> {
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
        Ok(TemporalSaga {
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
            total: 0,
            running: self.count(Some("running")).await?,
            compensating: self.count(Some("compensating")).await?,
            completed: self.count(Some("completed")).await?,
            compensated: self.count(Some("compensated")).await?,
            parked: self.count(Some("parked")).await?,
            sagas_per_sec: 0.0,
            p50_ms: 0,
            p99_ms: 0,
            latency_over: 0,
            events: 0,
            inbox: 0,
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

/// A saga read back from Temporal.
pub struct TemporalSaga {
    /// The list row.
    pub row: SagaRow,
    /// The definition it runs.
    pub def: SagaDef,
    /// Its order.
    pub order: Value,
    /// Its history as sagaflow journal events.
    pub events: Vec<EventRow>,
}

struct Translated {
    input: Option<SagaInput>,
    events: Vec<EventRow>,
    last_status: String,
    last_reason: Option<String>,
}

fn decode<T: serde::de::DeserializeOwned>(payloads: Option<&Payloads>) -> Option<T> {
    payloads
        .and_then(|p| p.payloads.first())
        .and_then(|p: &Payload| serde_json::from_slice(&p.data).ok())
}

/// Milliseconds since the epoch of a protobuf timestamp as JSON: an RFC
/// 3339 string or `{seconds, nanos}`.
fn timestamp_ms(t: &Value) -> Option<u64> {
    if let Some(text) = t.as_str() {
        let at = chrono::DateTime::parse_from_rfc3339(text).ok()?;
        return u64::try_from(at.timestamp_millis()).ok();
    }
    let seconds = t.get("seconds")?.as_i64()?;
    let nanos = t.get("nanos").and_then(Value::as_i64).unwrap_or(0);
    u64::try_from(seconds * 1000 + nanos / 1_000_000).ok()
}

/// The sagaflow error inside an activity failure (its details), or one
/// made from the failure's message.
pub(super) fn failure_error(failure: Option<&Failure>) -> ActivityError {
    let mut f = failure;
    while let Some(failure) = f {
        if let Some(FailureInfo::ApplicationFailureInfo(app)) = &failure.failure_info {
            if let Some(e) = decode::<ActivityError>(app.details.as_ref()) {
                return e;
            }
            let error = ActivityError::retryable(app.r#type.clone(), failure.message.clone());
            return ActivityError {
                retryable: !app.non_retryable,
                ..error
            };
        }
        if let Some(FailureInfo::TimeoutFailureInfo(_)) = &failure.failure_info {
            return ActivityError::retryable("timeout", failure.message.clone());
        }
        f = failure.cause.as_deref();
    }
    ActivityError::retryable(
        "activity_failed",
        failure.map_or_else(String::new, |f| f.message.clone()),
    )
}

/// Translates a Temporal history into sagaflow journal events: started,
/// activity_completed / activity_failed (with step, phase, attempt),
/// timer_fired, signal, status.
fn translate(history: &[HistoryEvent]) -> Translated {
    let mut out = Translated {
        input: None,
        events: Vec::new(),
        last_status: "running".into(),
        last_reason: None,
    };
    let mut scheduled: HashMap<i64, (ActivityCall, u64)> = HashMap::new();
    // Workflow time as the SDK keeps it: a workflow task starts at its
    // started event and each local activity moves it to its completion,
    // so a local step began where the one before it ended.
    let mut workflow_ms = 0u64;
    let push = |events: &mut Vec<EventRow>, at_ms: u64, kind: &str, body: Value| {
        events.push(EventRow {
            n: events.len() as u32,
            at_ms,
            kind: kind.to_owned(),
            seq: None,
            body,
        });
    };
    for ev in history {
        let at_ms = ev.event_time.as_ref().map_or(0, |t| {
            (t.seconds.max(0) as u64) * 1000 + (t.nanos.max(0) as u64) / 1_000_000
        });
        let attempt = |call: &ActivityCall,
                       started_ms: u64,
                       output: Option<Value>,
                       error: Option<ActivityError>| {
            serde_json::to_value(AttemptBody {
                step: call.step.clone(),
                activity: call.activity.clone(),
                phase: call.phase,
                attempt: call.attempt,
                started_ms,
                output,
                error,
            })
            .unwrap_or(Value::Null)
        };
        match &ev.attributes {
            Some(Attributes::WorkflowExecutionStartedEventAttributes(a)) => {
                out.input = decode(a.input.as_ref());
                push(&mut out.events, at_ms, "started", json!({}));
            }
            Some(Attributes::ActivityTaskScheduledEventAttributes(a)) => {
                if let Some(call) = decode::<ActivityCall>(a.input.as_ref()) {
                    scheduled.insert(ev.event_id, (call, at_ms));
                }
            }
            Some(Attributes::ActivityTaskCompletedEventAttributes(a)) => {
                if let Some((call, started)) = scheduled.get(&a.scheduled_event_id) {
                    let body = attempt(
                        call,
                        *started,
                        Some(decode(a.result.as_ref()).unwrap_or(Value::Null)),
                        None,
                    );
                    push(&mut out.events, at_ms, "activity_completed", body);
                }
            }
            Some(Attributes::ActivityTaskFailedEventAttributes(a)) => {
                if let Some((call, started)) = scheduled.get(&a.scheduled_event_id) {
                    let body = attempt(
                        call,
                        *started,
                        None,
                        Some(failure_error(a.failure.as_ref())),
                    );
                    push(&mut out.events, at_ms, "activity_failed", body);
                }
            }
            Some(Attributes::ActivityTaskTimedOutEventAttributes(a)) => {
                if let Some((call, started)) = scheduled.get(&a.scheduled_event_id) {
                    let error = ActivityError::retryable(
                        "timeout",
                        format!("no result within {}ms", call.timeout_ms),
                    );
                    let body = attempt(call, *started, None, Some(error));
                    push(&mut out.events, at_ms, "activity_failed", body);
                }
            }
            Some(Attributes::WorkflowTaskStartedEventAttributes(_)) => workflow_ms = at_ms,
            Some(Attributes::MarkerRecordedEventAttributes(a))
                if a.marker_name == LOCAL_ACTIVITY_MARKER_NAME =>
            {
                let Some(call) = decode::<ActivityCall>(a.details.get("input")) else {
                    continue;
                };
                let ended_ms = a
                    .details
                    .get("data")
                    .and_then(|d| decode::<Value>(Some(d)))
                    .and_then(|d| timestamp_ms(d.get("completeTime").or(d.get("complete_time"))?))
                    .unwrap_or(at_ms);
                let started_ms = workflow_ms.min(ended_ms);
                workflow_ms = ended_ms;
                let (kind, body) = match &a.failure {
                    None => (
                        "activity_completed",
                        attempt(
                            &call,
                            started_ms,
                            Some(decode(a.details.get("result")).unwrap_or(Value::Null)),
                            None,
                        ),
                    ),
                    Some(f) => (
                        "activity_failed",
                        attempt(&call, started_ms, None, Some(failure_error(Some(f)))),
                    ),
                };
                push(&mut out.events, ended_ms, kind, body);
            }
            Some(Attributes::TimerFiredEventAttributes(_)) => {
                push(&mut out.events, at_ms, "timer_fired", json!({}));
            }
            Some(Attributes::WorkflowExecutionUpdateAcceptedEventAttributes(a)) => {
                let request = a
                    .accepted_request
                    .as_ref()
                    .and_then(|r| r.input.as_ref())
                    .and_then(|i| decode::<CommandRequest>(i.args.as_ref()));
                if let Some(request) = request {
                    let body = serde_json::from_str(&request.encode()).unwrap_or(Value::Null);
                    push(&mut out.events, at_ms, "signal", body);
                }
            }
            Some(Attributes::WorkflowExecutionSignaledEventAttributes(a)) => {
                let signal: Value = decode(a.input.as_ref()).unwrap_or(Value::Null);
                push(
                    &mut out.events,
                    at_ms,
                    "signal",
                    json!({ "signal": signal }),
                );
            }
            Some(Attributes::WorkflowPropertiesModifiedEventAttributes(a)) => {
                if let Some(memo) = &a.upserted_memo {
                    out.last_reason = memo
                        .fields
                        .get(REASON_MEMO)
                        .and_then(|p| serde_json::from_slice::<String>(&p.data).ok());
                }
            }
            Some(Attributes::UpsertWorkflowSearchAttributesEventAttributes(a)) => {
                let status = a
                    .search_attributes
                    .as_ref()
                    .and_then(|s| s.indexed_fields.get("SagaStatus"))
                    .and_then(|p| serde_json::from_slice::<String>(&p.data).ok());
                if let Some(status) = status {
                    out.last_status = status.clone();
                    push(
                        &mut out.events,
                        at_ms,
                        "status",
                        json!({ "status": status }),
                    );
                }
            }
            _ => {}
        }
    }
    out
}
