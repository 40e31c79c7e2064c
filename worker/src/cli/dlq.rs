//! `sagaflow dlq list|resubmit` and `sagaflow send`: the operator's view of
//! the queue side. `dlq` follows `profile.trigger`: the embedded queue's
//! dead-letter table, or the Service Bus / broker dead-letter queue.

use super::run::{read_input, split_messages};
use super::shown::shown;
use crate::app::{self, DataPaths};
use crate::config::{Config, TriggerKind};
use crate::runtime::runtime;
use crate::trigger::servicebus::deadletter::{self, DeadLetter};
use crate::trigger::servicebus::endpoint::Endpoint;
use crate::trigger::servicebus::send::{send_all, Outgoing};
use anyhow::{anyhow, bail, Context, Result};
use sagaflow_activities::Order;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

/// `dlq` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum DlqCommand {
    /// List dead-lettered messages with the reason for each (they stay dead-lettered)
    List(DlqListArgs),
    /// Put a dead-lettered message back on the orders queue, optionally with a fixed body
    Resubmit(ResubmitArgs),
}

/// Arguments of `dlq list`.
#[derive(Debug, clap::Args)]
pub struct DlqListArgs {
    /// At most this many
    #[arg(long, default_value_t = 100)]
    pub limit: usize,
    /// Print JSON lines
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `dlq resubmit`.
#[derive(Debug, clap::Args)]
pub struct ResubmitArgs {
    /// The message id `dlq list` shows
    pub id: String,
    /// Send this body (a file, or - for stdin) instead of the message's own
    #[arg(long)]
    pub body: Option<PathBuf>,
}

/// Arguments of `send`.
#[derive(Debug, clap::Args)]
pub struct SendArgs {
    /// A file of orders (a JSON object, a JSON array, or JSON lines), or - for stdin
    pub file: PathBuf,
    /// Send each line as it is, without checking it (the worker dead-letters malformed ones)
    #[arg(long)]
    pub raw: bool,
    /// Set a string application property on every message, e.g.
    /// --property traceparent=00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01
    /// (the worker continues that trace); repeatable
    #[arg(long, value_name = "KEY=VALUE", value_parser = parse_property)]
    pub property: Vec<(String, String)>,
}

fn parse_property(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_owned(), value.to_owned())),
        _ => Err(format!(
            "{text:?} is not KEY=VALUE; for example --property traceparent=00-...-01"
        )),
    }
}

/// `sagaflow dlq ...`.
pub fn dlq(config: &Config, data: &Path, command: DlqCommand) -> Result<ExitCode> {
    match (config.profile.trigger, command) {
        (TriggerKind::Embedded, DlqCommand::List(args)) => {
            let queue = app::open_queue(&DataPaths::new(data)?)?;
            let rows: Vec<DeadLetter> = queue
                .dead_letters(args.limit)?
                .into_iter()
                .map(|d| {
                    let (reason, description) = match d.reason.split_once(": ") {
                        Some((r, desc)) if !r.contains(' ') => (r.to_owned(), desc.to_owned()),
                        _ => (String::new(), d.reason.clone()),
                    };
                    DeadLetter {
                        id: d.id.to_string(),
                        reason,
                        description,
                        dead_lettered_at_ms: d.dead_lettered_ms,
                        body: d.body,
                    }
                })
                .collect();
            print_dead_letters(&rows, args.json)
        }
        (TriggerKind::Embedded, DlqCommand::Resubmit(args)) => {
            let id: i64 = args.id.parse().map_err(|_| {
                anyhow!("{} is not an embedded dead-letter id (a number); `sagaflow dlq list` shows them", args.id)
            })?;
            let body = args.body.as_deref().map(read_input).transpose()?;
            let queue = app::open_queue(&DataPaths::new(data)?)?;
            if !queue.resubmit(id, body.as_deref().map(str::as_bytes))? {
                bail!("no dead-lettered message has id {id}; `sagaflow dlq list` shows the ids");
            }
            println!("message {id} is back on the queue");
            Ok(ExitCode::SUCCESS)
        }
        (TriggerKind::ServiceBus, DlqCommand::List(args)) => {
            let endpoint = Endpoint::from_env(&config.servicebus.connection_env)?;
            let rows = runtime()?
                .block_on(deadletter::list(&endpoint, &config.servicebus, args.limit))
                .map_err(anyhow::Error::msg)?;
            print_dead_letters(&rows, args.json)
        }
        (TriggerKind::ServiceBus, DlqCommand::Resubmit(args)) => {
            let endpoint = Endpoint::from_env(&config.servicebus.connection_env)?;
            let body = args
                .body
                .as_deref()
                .map(read_input)
                .transpose()?
                .map(String::into_bytes);
            let shown = runtime()?
                .block_on(deadletter::resubmit(
                    &endpoint,
                    &config.servicebus,
                    &args.id,
                    body,
                ))
                .map_err(anyhow::Error::msg)?;
            println!(
                "message {} ({}) is back on {}",
                shown.id, shown.reason, config.servicebus.queue
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn print_dead_letters(rows: &[DeadLetter], json: bool) -> Result<ExitCode> {
    let mut out = std::io::stdout().lock();
    for r in rows {
        if json {
            writeln!(out, "{}", serde_json::to_string(r)?)?;
        } else {
            writeln!(
                out,
                "message {}: {}{}{}\n  body: {}",
                r.id,
                shown(&r.reason),
                if r.reason.is_empty() { "" } else { ": " },
                shown(&r.description),
                shown(&r.body)
            )?;
        }
    }
    if rows.is_empty() && !json {
        writeln!(out, "(no dead-lettered messages)")?;
    }
    Ok(ExitCode::SUCCESS)
}

/// `sagaflow send FILE|-`: publishes orders to the `[servicebus]` queue.
pub fn send(config: &Config, args: SendArgs) -> Result<ExitCode> {
    let text = read_input(&args.file)?;
    let messages = split_messages(&text);
    let mut bad = Vec::new();
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let mut outgoing = Vec::with_capacity(messages.len());
    for (line, m) in messages {
        // The message id is the order id, so the saga id and Service Bus
        // duplicate detection agree; a body with none gets a fresh one.
        let id = match Order::parse(m.as_bytes()) {
            Ok(order) => order.order_id,
            Err(e) => {
                if !args.raw {
                    bad.push(format!("{}:{line}: {e}", args.file.display()));
                }
                serde_json::from_str::<serde_json::Value>(&m)
                    .ok()
                    .and_then(|v| v["order_id"].as_str().map(str::to_owned))
                    .unwrap_or_else(|| format!("msg-{stamp:x}-{line}"))
            }
        };
        outgoing.push(Outgoing {
            id,
            body: m.into_bytes(),
            properties: args.property.clone(),
        });
    }
    if !bad.is_empty() {
        for b in &bad {
            eprintln!("{b}");
        }
        bail!(
            "{} of {} orders are invalid; nothing was sent. Fix them, or pass --raw to send them anyway (the worker dead-letters invalid ones)",
            bad.len(),
            outgoing.len()
        );
    }
    let endpoint = Endpoint::from_env(&config.servicebus.connection_env)?;
    let address = endpoint.queue_address(&config.servicebus.queue);
    let total = outgoing.len();
    let started = Instant::now();
    let tty = std::io::stderr().is_terminal();
    let sent = runtime()?
        .block_on(send_all(&endpoint, &address, outgoing, |n| {
            if tty && n < total {
                eprint!("\rsent {n}/{total}");
            }
        }))
        .map_err(anyhow::Error::msg)
        .context("sending orders")?;
    if tty {
        eprint!("\r");
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "sent {sent} message(s) to {} on {endpoint} in {secs:.2}s ({:.0}/s)",
        config.servicebus.queue,
        sent as f64 / secs.max(1e-9)
    );
    Ok(ExitCode::SUCCESS)
}
