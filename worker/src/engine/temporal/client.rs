//! Talking to the cluster: connect, start, operator commands (Updates) and
//! the targets of a bulk command; the operator's views are in
//! [`reads`](self::reads).

use super::history::translate;
use super::scope::literal;
use super::workflow::{
    SagaInput, SagaWorkflow, SAGA_NAME, SAGA_STATUS, SAGA_WORKER, WORKFLOW_TYPE,
};
use crate::config::TemporalSettings;
use crate::engine::command::CommandRequest;
use crate::engine::filter::{last_attempt, Filter, Target};
use crate::engine::model::{Definition, StartOutcome};
use futures::TryStreamExt;
use sagaflow_workflows::{SagaOutcome, SagaStatus, Stage};
use serde_json::Value;
use std::str::FromStr;
use std::time::{SystemTime, UNIX_EPOCH};
use temporalio_client::errors::{WorkflowStartError, WorkflowUpdateError};
use temporalio_client::{
    Client, ClientOptions, Connection, ConnectionOptions, Url, WorkflowCountOptions,
    WorkflowExecuteUpdateOptions, WorkflowGetResultOptions, WorkflowIdConflictPolicy,
    WorkflowIdReusePolicy, WorkflowListOptions, WorkflowStartOptions,
};
use temporalio_common::search_attributes::SearchAttributes;

mod reads;

/// How long `show` and `history` wait for a worker to answer the status
/// query before they read the status from the history instead.
pub(super) const STATUS_QUERY_WAIT: std::time::Duration = std::time::Duration::from_millis(1500);

/// How long connecting to the cluster may take (the calls after it have
/// the SDK's own deadlines).
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

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
                // Without it a connect to an address that drops packets
                // waits for the OS (minutes): a command would hang.
                .connect_timeout(CONNECT_TIMEOUT)
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
}
