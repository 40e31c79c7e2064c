//! `sagaflow sandbox`: the payment sandbox as a standalone server several
//! workers share (`profile.payment = "http"`, `[payment] base_url` pointed
//! at it), its knobs changed while it runs, and its ledger read.

use crate::app::{self, DataPaths, SANDBOX_KEY};
use crate::config::Config;
use crate::runtime::runtime;
use anyhow::{bail, Context, Result};
use sagaflow_payment_sandbox::{
    read_ledger, read_requests, ErrorSide, KnobsPatch, Sandbox, SandboxConfig,
};
use sagaflow_workflows::duration::parse_duration_ms;
use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::process::ExitCode;

/// Arguments of `sandbox`: serve (the default), or one of its subcommands.
#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct SandboxArgs {
    #[command(subcommand)]
    command: Option<SandboxCommand>,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Debug, clap::Subcommand)]
enum SandboxCommand {
    /// Serve the sandbox until Ctrl-C or SIGTERM (what `sagaflow sandbox` alone does)
    Serve(ServeArgs),
    /// Read or change the knobs of a running sandbox (an outage, latency, errors, ...)
    Knobs(KnobsArgs),
    /// The sandbox's books: intents by status, captured and refunded amounts, the request log
    Ledger(LedgerArgs),
}

/// Knob flags shared by `serve` (starting values) and `knobs` (changes).
#[derive(Debug, Clone, Default, clap::Args)]
struct KnobFlags {
    /// Fraction of POSTs answered with an injected 500 (0 to 1)
    #[arg(long, value_name = "RATE")]
    error_rate: Option<f64>,
    /// Where injected 500s fall: both (half and half), before (nothing applied) or after (applied, 500 stored)
    #[arg(long, value_name = "SIDE", value_parser = ["both", "before", "after"])]
    error_side: Option<String>,
    /// Delay before each request, e.g. 20ms
    #[arg(long, value_name = "DURATION", value_parser = parse_duration_ms)]
    latency: Option<u64>,
    /// With --latency, draw each request's delay evenly up to this, e.g. --latency 3s --latency-max 8s (a slow provider); 0ms: off
    #[arg(long, value_name = "DURATION", value_parser = parse_duration_ms)]
    latency_max: Option<u64>,
    /// Fraction of requests that get a latency spike (0 to 1)
    #[arg(long, value_name = "RATE")]
    spike_rate: Option<f64>,
    /// Extra delay of a spiking request, e.g. 2s [default: 1s]
    #[arg(long, value_name = "DURATION", value_parser = parse_duration_ms)]
    spike_latency: Option<u64>,
    /// Fraction of requests held past the client's limit: applied, answered late (0 to 1)
    #[arg(long, value_name = "RATE")]
    timeout_rate: Option<f64>,
    /// How long a held request waits before it is answered [default: 30s]
    #[arg(long, value_name = "DURATION", value_parser = parse_duration_ms)]
    timeout_hold: Option<u64>,
    /// Search results trail writes by this long, e.g. 5s (Stripe's search lags)
    #[arg(long, value_name = "DURATION", value_parser = parse_duration_ms)]
    search_lag: Option<u64>,
    /// Answer every request with 503 for this long from now, e.g. 15s; 0ms ends an outage
    #[arg(long, value_name = "DURATION", value_parser = parse_duration_ms)]
    outage: Option<u64>,
    /// Send Retry-After (rounded up to seconds) with the outage's 503s, e.g. 10s; 0ms: none
    #[arg(long, value_name = "DURATION", value_parser = parse_duration_ms)]
    retry_after: Option<u64>,
}

impl KnobFlags {
    fn patch(&self) -> KnobsPatch {
        KnobsPatch {
            error_rate: self.error_rate,
            error_side: self.error_side.as_deref().map(|side| match side {
                "before" => ErrorSide::Before,
                "after" => ErrorSide::After,
                _ => ErrorSide::Both,
            }),
            latency_ms: self.latency,
            latency_max_ms: self.latency_max,
            spike_rate: self.spike_rate,
            spike_ms: self.spike_latency,
            timeout_rate: self.timeout_rate,
            timeout_ms: self.timeout_hold,
            search_lag_ms: self.search_lag,
            outage_ms: self.outage,
            retry_after_ms: self.retry_after,
        }
    }
}

/// Arguments of `sandbox serve`.
#[derive(Debug, Clone, clap::Args)]
struct ServeArgs {
    /// Port to listen on [default: [sandbox] port in sagas.toml; 0 picks a free one]
    #[arg(long, short = 'p')]
    port: Option<u16>,
    /// Address to listen on (0.0.0.0 to serve other machines or pods)
    #[arg(long, default_value = "127.0.0.1")]
    bind: IpAddr,
    /// Print the listening line as JSON ({"base_url":..,"db":..})
    #[arg(long)]
    json: bool,
    /// Do not keep the request log (who sent which POST; `sandbox ledger --requests` reads it)
    #[arg(long)]
    no_request_log: bool,
    #[command(flatten)]
    knobs: KnobFlags,
}

/// Arguments of `sandbox knobs`.
#[derive(Debug, clap::Args)]
struct KnobsArgs {
    /// The sandbox's URL [default: [payment] base_url, else http://127.0.0.1:[sandbox] port]
    #[arg(long)]
    url: Option<String>,
    /// Print the knobs as JSON
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    knobs: KnobFlags,
}

/// Arguments of `sandbox ledger`.
#[derive(Debug, clap::Args)]
struct LedgerArgs {
    /// Also list the request log (every POST that executed or replayed)
    #[arg(long)]
    requests: bool,
    /// Only the requests about this payment intent (implies --requests)
    #[arg(long, value_name = "PI")]
    intent: Option<String>,
    /// Print JSON
    #[arg(long)]
    json: bool,
}

/// `sagaflow sandbox ...`.
pub fn sandbox(config: &Config, data: &Path, args: SandboxArgs) -> Result<ExitCode> {
    match args.command {
        None => serve(config, data, args.serve),
        Some(SandboxCommand::Serve(s)) => serve(config, data, s),
        Some(SandboxCommand::Knobs(k)) => knobs(config, k),
        Some(SandboxCommand::Ledger(l)) => ledger(data, l),
    }
}

/// Serves until Ctrl-C or SIGTERM; the first line on stdout says where.
fn serve(config: &Config, data: &Path, args: ServeArgs) -> Result<ExitCode> {
    let paths = DataPaths::new(data)?;
    let mut knobs = app::sandbox_knobs(config);
    let patch = args.knobs.patch();
    patch.check()?;
    patch.apply_to(&mut knobs);
    let port = args.port.unwrap_or(config.sandbox.port);
    let rt = runtime()?;
    rt.block_on(async {
        let sandbox = Sandbox::start(
            SandboxConfig {
                db_path: paths.payments(),
                knobs,
                request_log: !args.no_request_log,
            },
            SocketAddr::new(args.bind, port),
        )
        .await
        .context("cannot start the payment sandbox")?;
        let db = paths.payments().display().to_string();
        let line = if args.json {
            serde_json::json!({"base_url": sandbox.base_url(), "db": db}).to_string()
        } else {
            format!(
                "payment sandbox listening on {} (store {db}); Ctrl-C stops it",
                sandbox.base_url()
            )
        };
        let mut out = std::io::stdout().lock();
        writeln!(out, "{line}")?;
        out.flush()?;
        drop(out);
        wait_for_stop().await?;
        drop(sandbox);
        Ok(ExitCode::SUCCESS)
    })
}

async fn wait_for_stop() -> Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot listen for SIGTERM")?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r.context("cannot listen for Ctrl-C")?,
        _ = term.recv() => {}
    }
    Ok(())
}

/// Reads (no knob flags) or changes the knobs over the admin call.
fn knobs(config: &Config, args: KnobsArgs) -> Result<ExitCode> {
    let url = match (&args.url, config.payment.base_url.as_str(), config.sandbox.port) {
        (Some(url), _, _) => url.trim_end_matches('/').to_owned(),
        (None, base, _) if !base.is_empty() => base.trim_end_matches('/').to_owned(),
        (None, _, port) if port != 0 => format!("http://127.0.0.1:{port}"),
        _ => bail!(
            "no sandbox URL: pass --url http://HOST:PORT (what `sagaflow sandbox` printed), or set [payment] base_url"
        ),
    };
    let key = std::env::var(&config.payment.api_key_env).unwrap_or_else(|_| SANDBOX_KEY.into());
    let patch = args.knobs.patch();
    patch.check()?;
    let change = patch != KnobsPatch::default();
    let rt = runtime()?;
    let knobs: serde_json::Value = rt.block_on(async {
        let http = reqwest::Client::new();
        let endpoint = format!("{url}/_sandbox/knobs");
        let request = if change {
            http.post(&endpoint).json(&patch)
        } else {
            http.get(&endpoint)
        };
        let response = request.bearer_auth(&key).send().await.with_context(|| {
            format!(
                "cannot reach the payment sandbox at {url}; is `sagaflow sandbox` running there?"
            )
        })?;
        let status = response.status();
        let body: serde_json::Value = response
            .json()
            .await
            .with_context(|| format!("{url} did not answer JSON; is it a payment sandbox?"))?;
        if !status.is_success() {
            bail!(
                "the sandbox at {url} refused: {}",
                body["error"]["message"].as_str().unwrap_or("(no message)")
            );
        }
        Ok::<_, anyhow::Error>(body)
    })?;
    if args.json {
        println!("{knobs}");
    } else if let Some(map) = knobs.as_object() {
        for (name, value) in map {
            println!("{name} = {value}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Prints the ledger (and the request log when asked).
fn ledger(data: &Path, args: LedgerArgs) -> Result<ExitCode> {
    let db = DataPaths {
        dir: data.to_owned(),
    }
    .payments();
    let ledger = read_ledger(&db)?;
    let requests = if args.requests || args.intent.is_some() {
        Some(read_requests(&db, args.intent.as_deref())?)
    } else {
        None
    };
    let mut out = std::io::stdout().lock();
    if args.json {
        let mut value = serde_json::json!({ "ledger": ledger });
        if let Some(requests) = &requests {
            value["requests"] = serde_json::json!(requests);
        }
        writeln!(out, "{value}")?;
        return Ok(ExitCode::SUCCESS);
    }
    let l = &ledger;
    writeln!(
        out,
        "intents {}: requires_capture {}, succeeded {}, canceled {}, declined {}, refunded {}",
        l.intents, l.requires_capture, l.succeeded, l.canceled, l.declined, l.refunded
    )?;
    writeln!(
        out,
        "captured {} and refunded {} (minor units); double captures {}, orders with several live intents {}",
        l.captured_amount, l.refunded_amount, l.double_captures, l.orders_with_several_intents
    )?;
    for r in requests.iter().flatten() {
        writeln!(
            out,
            "{} {} {} {}{} key={} client={}",
            r.at_ms,
            r.method,
            r.path,
            r.status,
            if r.replayed { " (replayed)" } else { "" },
            r.idempotency_key.as_deref().unwrap_or("-"),
            r.client
        )?;
    }
    Ok(ExitCode::SUCCESS)
}
