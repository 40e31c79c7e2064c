//! The operator service's one face over where sagas are: the embedded
//! journal in a data directory, a Temporal cluster, or a running worker's
//! admin API. Every read (list, show, history, stats) gives the same rows
//! ([`crate::engine::view`]) whichever it is, so the CLI, the admin API and
//! the dashboard print them without knowing the engine.

use crate::app::DataPaths;
use crate::config::TemporalSettings;
use crate::engine::embedded::{journal, read};
use crate::engine::temporal::client::TemporalClient;
use crate::engine::view;
use crate::runtime::block_on;
use anyhow::{bail, Context, Result};
use rusqlite::Connection;
use sagaflow_workflows::SagaDef;
use serde_json::Value;
use std::path::{Path, PathBuf};

/// Opens the journal of a data directory for reading, with a helpful error
/// when there is none.
pub fn open_journal(data: &Path) -> Result<Connection> {
    let paths = DataPaths {
        dir: data.to_owned(),
    };
    if !paths.journal().exists() {
        bail!(
            "no journal at {}; run `sagaflow run` or `sagaflow demo` first, or pass --data DIR",
            paths.journal().display()
        );
    }
    Ok(journal::open_reader(&paths.journal())?)
}

fn find_saga(conn: &Connection, id: &str, data: &Path) -> Result<view::SagaRow> {
    read::saga(conn, id)?.with_context(|| {
        format!(
            "no saga {id} in {}; `sagaflow list` shows the ids",
            data.display()
        )
    })
}

/// Where the operator views read from: the embedded journal in a data
/// directory, or a Temporal cluster. Both give the same rows, so every
/// command prints the same way on both engines.
pub enum Source {
    /// The embedded engine's journal under this data directory.
    Journal(PathBuf),
    /// A Temporal cluster.
    Temporal(TemporalSettings),
    /// A running worker's admin API (`--admin URL`), which answers from
    /// one of the two above.
    Admin(super::remote::AdminClient),
}

/// One saga with everything `show` and `history` print.
pub(crate) struct SagaView {
    pub(crate) row: view::SagaRow,
    pub(crate) def: SagaDef,
    pub(crate) input: Option<Value>,
    pub(crate) events: Vec<view::EventRow>,
}

impl Source {
    /// Sagas, newest first, optionally of one status.
    pub(crate) fn list(&self, status: Option<&str>, limit: usize) -> Result<Vec<view::SagaRow>> {
        match self {
            Source::Journal(data) => Ok(read::list(&open_journal(data)?, status, limit)?),
            Source::Temporal(settings) => block_on(async {
                TemporalClient::connect(settings)
                    .await?
                    .list(status, limit)
                    .await
            })?
            .map_err(Into::into),
            Source::Admin(client) => client.list(status, limit),
        }
    }

    /// One saga with its definition, input and journal.
    pub(crate) fn saga(&self, id: &str) -> Result<SagaView> {
        match self {
            Source::Journal(data) => {
                let conn = open_journal(data)?;
                let row = find_saga(&conn, id, data)?;
                let def = read::definition(&conn, &row.def_hash)?.with_context(|| {
                    format!(
                        "the definition {} of saga {} is missing from the journal",
                        row.def_hash, row.id
                    )
                })?;
                Ok(SagaView {
                    input: read::input(&conn, id)?,
                    events: read::events(&conn, id)?,
                    row,
                    def,
                })
            }
            Source::Temporal(settings) => {
                let saga =
                    block_on(async { TemporalClient::connect(settings).await?.saga(id).await })??;
                Ok(SagaView {
                    row: saga.row,
                    def: saga.def,
                    input: Some(saga.order),
                    events: saga.events,
                })
            }
            Source::Admin(client) => client.saga(id),
        }
    }

    /// One saga's Temporal history in the SDK's replayable JSON form (for
    /// replay tests); only a Temporal cluster has one.
    pub(crate) fn replayable_history(&self, id: &str) -> Result<Vec<u8>> {
        match self {
            Source::Temporal(settings) => Ok(block_on(async {
                TemporalClient::connect(settings)
                    .await?
                    .history_json(id)
                    .await
            })??),
            Source::Journal(_) | Source::Admin(_) => bail!(
                "--export writes a Temporal history; pass --engine temporal on the worker's machine (the embedded journal is `history --json`)"
            ),
        }
    }

    /// Counts by status and latency percentiles.
    pub(crate) fn stats(&self) -> Result<view::Stats> {
        match self {
            Source::Journal(data) => Ok(read::stats(&open_journal(data)?)?),
            Source::Temporal(settings) => Ok(block_on(async {
                TemporalClient::connect(settings).await?.stats().await
            })??),
            Source::Admin(client) => client.stats(),
        }
    }
}

/// The refund link, both ways: a refund saga names the sale it undoes in
/// its input; a refunded sale has a saga at its refund id.
pub(crate) fn refund_links(
    source: &Source,
    id: &str,
    input: Option<&Value>,
) -> (Option<Value>, Option<Value>) {
    let refund_of = input.and_then(|i| i.get("refund")).cloned();
    let refunded_by = match &refund_of {
        Some(_) => None,
        None => source
            .saga(&crate::engine::command::refund_id(id))
            .ok()
            .map(|r| serde_json::json!({"id": r.row.id, "status": r.row.status})),
    };
    (refund_of, refunded_by)
}

/// `show --json`'s document, with the definition, as the admin API's
/// `GET /api/sagas/{id}` answers.
pub(crate) fn saga_document(source: &Source, view: &SagaView) -> Value {
    let (refund_of, refunded_by) = refund_links(source, &view.row.id, view.input.as_ref());
    serde_json::json!({
        "saga": view.row,
        "input": view.input,
        "timeline": view::timeline(&view.def, &view.events, &view.row.status),
        "spans": view::spans(&view.events, &view.row.status),
        "commands": view::commands(&view.events),
        "refund_of": refund_of,
        "refunded_by": refunded_by,
        "definition": view.def,
    })
}
