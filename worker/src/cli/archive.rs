//! `sagaflow archive`: ended sagas written to a file (JSON lines, one saga
//! with its input and events per line), optionally removed from the journal
//! once the file is on disk.
//!
//! Retention removes ended sagas on its own; this is for keeping them
//! somewhere first (a daily job with `--delete` before they reach the
//! retention, or a one-off export). A line holds what `show --json` and
//! `history --json` print, so the archive can be read without sagaflow.
//!
//! Safe beside a running worker: only ended sagas are read or removed, which
//! the worker no longer holds, and each removal is a short transaction of
//! at most [`BATCH`] sagas, made only after the lines that hold them are
//! synced to disk.

use crate::config::{Config, EngineKind};
use crate::engine::embedded::read;
use crate::engine::embedded::{journal, retention};
use crate::engine::view::{EventRow, SagaRow};
use crate::ops::source::open_journal;
use anyhow::{bail, Context, Result};
use sagaflow_activities::clock::now_ms;
use sagaflow_workflows::duration::{format_duration_ms, parse_duration_ms};
use serde::Serialize;
use serde_json::Value;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// Sagas read (and removed, with `--delete`) per transaction.
const BATCH: usize = 500;

/// Arguments of `archive`.
#[derive(Debug, clap::Args)]
pub struct ArchiveArgs {
    /// The file to append to (JSON lines; created if missing)
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// Sagas that ended at least this long ago, e.g. 2d [default: [embedded] retention]
    #[arg(long, value_name = "DURATION", value_parser = parse_duration_ms)]
    pub older_than: Option<u64>,
    /// Remove the archived sagas from the journal once the file is synced
    #[arg(long)]
    pub delete: bool,
    /// Print a JSON summary instead of text
    #[arg(long)]
    pub json: bool,
}

/// One archived saga: its row, input and events.
#[derive(Debug, Serialize)]
struct Line<'a> {
    #[serde(flatten)]
    saga: &'a SagaRow,
    input: Value,
    events: Vec<EventRow>,
}

/// What a run did.
#[derive(Debug, Serialize)]
struct Summary {
    archived: usize,
    events: usize,
    deleted: usize,
    ended_before_ms: u64,
    out: String,
}

/// `sagaflow archive`.
pub fn archive(config: &Config, data: &Path, args: ArchiveArgs) -> Result<ExitCode> {
    if config.profile.engine == EngineKind::Temporal {
        bail!("archive applies to the embedded journal; Temporal keeps closed workflows for its namespace's retention period (temporal operator namespace update --retention), and its archival feature exports them");
    }
    let Some(older_than) = args.older_than.or(config.embedded.retention_ms) else {
        bail!("[embedded] retention is \"off\": say which sagas to archive with --older-than DURATION, e.g. --older-than 7d");
    };
    let before = now_ms().saturating_sub(older_than);
    let reader = open_journal(data)?;
    let journal_path = crate::app::DataPaths::new(data)?.journal();
    let mut writer = args
        .delete
        .then(|| journal::open_writer(&journal_path))
        .transpose()?;
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&args.out)
        .with_context(|| format!("cannot open {} to append to", args.out.display()))?;
    let mut summary = Summary {
        archived: 0,
        events: 0,
        deleted: 0,
        ended_before_ms: before,
        out: args.out.display().to_string(),
    };
    let mut after: Option<(u64, String)> = None;
    let mut last_progress = Instant::now();
    loop {
        let cursor = after.as_ref().map(|(ms, id)| (*ms, id.as_str()));
        let rows = read::ended_before(&reader, before, cursor, BATCH)?;
        let Some(last) = rows.last() else { break };
        after = Some((last.ended_ms.unwrap_or(0), last.id.clone()));
        let mut buf = Vec::new();
        for saga in &rows {
            let events = read::events(&reader, &saga.id)?;
            summary.events += events.len();
            let line = Line {
                saga,
                input: read::input(&reader, &saga.id)?.unwrap_or(Value::Null),
                events,
            };
            serde_json::to_writer(&mut buf, &line)?;
            buf.push(b'\n');
        }
        file.write_all(&buf)
            .and_then(|()| file.sync_data())
            .with_context(|| format!("cannot write {}", args.out.display()))?;
        summary.archived += rows.len();
        if let Some(conn) = writer.as_mut() {
            let ids: Vec<String> = rows.iter().map(|r| r.id.clone()).collect();
            let tx = conn.transaction()?;
            retention::remove(&tx, &ids)?;
            tx.commit()?;
            summary.deleted += ids.len();
        }
        if !args.json && last_progress.elapsed() >= Duration::from_secs(2) {
            last_progress = Instant::now();
            eprintln!("archive: {} sagas written", summary.archived);
        }
    }
    let mut out = std::io::stdout().lock();
    if args.json {
        writeln!(out, "{}", serde_json::to_string(&summary)?)?;
    } else {
        writeln!(
            out,
            "archived {} sagas that ended over {} ago ({} events) to {}{}",
            summary.archived,
            format_duration_ms(older_than),
            summary.events,
            summary.out,
            if args.delete {
                format!("; removed {} from the journal", summary.deleted)
            } else {
                String::new()
            }
        )?;
    }
    Ok(ExitCode::SUCCESS)
}
