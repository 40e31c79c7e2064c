//! `sagaflow bench-stock`: reservations per second through the Redis stock
//! adapter with 64 in flight, next to `redis-benchmark` running the same
//! reserve script with EVALSHA (64 clients, one request each in flight) in
//! the same run, as a ratio.
//!
//! Both sides run the adapter's own Lua script on the same server, so the
//! ratio is what the adapter (the redis crate's multiplexed connection,
//! argument building, reply mapping) costs over the bare protocol.

use crate::config::Config;
use crate::runtime::runtime;
use anyhow::{anyhow, bail, Context, Result};
use sagaflow_activities::stock::bench::{bench_reserve, StockBenchConfig};
use sagaflow_activities::stock::redis::{RedisStock, RedisStockConfig};
use sagaflow_activities::stock::Stock;
use serde::Serialize;
use std::process::{Command, ExitCode};
use std::sync::Arc;

/// Arguments of `bench-stock`.
#[derive(Debug, clap::Args)]
pub struct BenchStockArgs {
    /// Reservations per side
    #[arg(long, default_value_t = 100_000)]
    pub reservations: usize,
    /// Reservations in flight (adapter) = redis-benchmark clients
    #[arg(long, default_value_t = 64)]
    pub in_flight: usize,
    /// Print one JSON object instead of text
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Serialize)]
struct StockBench {
    reservations: usize,
    in_flight: usize,
    adapter_per_sec: f64,
    adapter_p50_us: u64,
    adapter_p99_us: u64,
    redis_benchmark_per_sec: f64,
    ratio: f64,
}

/// `sagaflow bench-stock`.
pub fn bench_stock(config: Config, args: BenchStockArgs) -> Result<ExitCode> {
    let url = std::env::var(&config.redis.url_env).map_err(|_| {
        anyhow!(
            "the environment variable {} ([redis] url_env) is not set; export it with the Redis URL, e.g. redis://127.0.0.1:6379",
            config.redis.url_env
        )
    })?;
    let parsed = url::Url::parse(&url).context("the Redis URL is not a URL")?;
    let host = parsed.host_str().unwrap_or("127.0.0.1").to_owned();
    let port = parsed.port().unwrap_or(6379);
    let run = format!("{:x}", sagaflow_activities::clock::now_ms());
    let prefix = format!("{}bench-{run}:", config.redis.key_prefix);
    let rt = runtime()?;
    let (adapter, sha, keys, redis) = rt.block_on(async {
        let redis = Arc::new(
            RedisStock::connect_with(RedisStockConfig {
                url: url.clone(),
                key_prefix: prefix.clone(),
            })
            .await?,
        );
        let stock = Stock::from(redis.clone());
        // The redis-benchmark side's SKU: plenty of units, so every call
        // takes the same path (repeated random ids are idempotent returns).
        let sku = "bench-rb".to_owned();
        stock
            .seed(&[(sku.clone(), (args.reservations * 10) as i64)])
            .await?;
        let (sha, keys) = redis.reserve_script_for(&sku);
        if !args.json {
            eprintln!(
                "adapter: {} reservations, {} in flight ...",
                args.reservations, args.in_flight
            );
        }
        let report = bench_reserve(
            &stock,
            &StockBenchConfig {
                sku: "bench-adapter".into(),
                reservations: args.reservations,
                in_flight: args.in_flight,
            },
        )
        .await?;
        anyhow::Ok((report, sha, keys, redis))
    })?;
    if !args.json {
        eprintln!(
            "redis-benchmark: EVALSHA of the same script, {} clients ...",
            args.in_flight
        );
    }
    let mut cmd = Command::new("redis-benchmark");
    cmd.args(["-h", &host, "-p", &port.to_string()]);
    if let Some(pass) = parsed.password() {
        cmd.args(["-a", pass]);
    }
    let deadline = (u64::MAX / 2).to_string();
    cmd.args([
        "-c",
        &args.in_flight.to_string(),
        "-n",
        &args.reservations.to_string(),
        "-r",
        "1000000000",
        "--csv",
        "EVALSHA",
        &sha,
        "3",
        &keys[0],
        &keys[1],
        &keys[2],
        &format!("rb-{run}-__rand_int__"),
        "1",
        &deadline,
        "",
        "1",
    ]);
    let out = cmd
        .output()
        .context("cannot run redis-benchmark; install it (Debian: redis-tools, or scripts/services.sh redis)")?;
    if !out.status.success() {
        bail!(
            "redis-benchmark failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let rb = text
        .lines()
        .filter(|l| l.starts_with("\"EVALSHA"))
        .find_map(|l| l.split(',').nth(1))
        .and_then(|v| v.trim_matches('"').parse::<f64>().ok())
        .with_context(|| format!("no EVALSHA rate in redis-benchmark's output:\n{text}"))?;
    // redis-benchmark counts error replies as requests too: check the
    // script really reserved (random ids repeat a little; those are
    // idempotent returns).
    let reserved = rt.block_on(redis.snapshot())?.reserved;
    if (reserved as f64) < args.reservations as f64 * 0.9 {
        bail!(
            "redis-benchmark's calls did not reserve ({reserved} units reserved after {} calls): its rate is not comparable",
            args.reservations
        );
    }
    // Leave nothing behind under the bench prefix.
    let _ = Command::new("redis-cli")
        .args(["-h", &host, "-p", &port.to_string()])
        .args(["--scan", "--pattern", &format!("{prefix}*")])
        .output()
        .map(|o| {
            let keys: Vec<String> = String::from_utf8_lossy(&o.stdout)
                .lines()
                .map(str::to_owned)
                .collect();
            if !keys.is_empty() {
                let _ = Command::new("redis-cli")
                    .args(["-h", &host, "-p", &port.to_string(), "DEL"])
                    .args(&keys)
                    .output();
            }
        });
    let r = StockBench {
        reservations: args.reservations,
        in_flight: args.in_flight,
        adapter_per_sec: adapter.per_second,
        adapter_p50_us: adapter.p50_us,
        adapter_p99_us: adapter.p99_us,
        redis_benchmark_per_sec: rb,
        ratio: adapter.per_second / rb,
    };
    if args.json {
        println!("{}", serde_json::to_string(&r)?);
    } else {
        println!(
            "adapter (stock.reserve, {} in flight)   {:>9.0} reservations/s  (p50 {} us, p99 {} us)",
            r.in_flight, r.adapter_per_sec, r.adapter_p50_us, r.adapter_p99_us
        );
        println!(
            "redis-benchmark (EVALSHA, {} clients)   {:>9.0} calls/s",
            r.in_flight, r.redis_benchmark_per_sec
        );
        println!(
            "ratio {:.2} (target >= 0.7); {} reservations each",
            r.ratio, r.reservations
        );
    }
    Ok(ExitCode::SUCCESS)
}
