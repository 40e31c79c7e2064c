//! Intake is not held back by parked sagas: with 2,000 sagas parked in the
//! journal (more than `--max-live`), a worker starts every new order, and
//! at a rate of the same order as one with none parked, the two running
//! side by side.
//!
//! The rate is a figure for BENCHMARKS.md, not a timed assertion: alone
//! it measures 0.95-1.06x, but with the rest of the suite on two cores CI
//! has measured 0.86-0.90x on binaries that pass alone. The bound kept
//! here, half the rate, is what a per-start cost growing with the parked
//! sagas would break (a scan of 2,000 rows per start is far slower), and
//! noise does not reach it.
//!
//! Before parked sagas stopped counting as in progress, the worker with
//! 2,000 parked took no order at all (the limit was full) and this test
//! timed out.

use crate::common::*;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn world(name: &str) -> (PathBuf, PathBuf) {
    let dir = data_dir(name);
    let config = config_with(&dir, &[]);
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(PARKS_SAGA);
    std::fs::write(&config, text).unwrap();
    (dir, config)
}

fn submit(dir: &Path, config: &Path, prefix: &str, n: usize) {
    let lines: Vec<String> = (0..n)
        .map(|i| {
            format!(
                r#"{{"order_id":"{prefix}-{i:05}","customer":"c","items":[{{"sku":"SKU-1","qty":1}}],"amount":100,"currency":"usd","payment_method":"pm_card_visa"}}"#
            )
        })
        .collect();
    let file = dir.join(format!("{prefix}.jsonl"));
    std::fs::write(&file, lines.join("\n")).unwrap();
    sagaflow_ok(&[
        "submit",
        file.to_str().unwrap(),
        "--config",
        config.to_str().unwrap(),
        "--data",
        dir.to_str().unwrap(),
    ]);
}

fn run_until_idle(dir: &Path, config: &Path, saga: &str) {
    let began = Instant::now();
    sagaflow_ok(&[
        "run",
        "--until-idle",
        "--saga",
        saga,
        "--max-live",
        "1000",
        "--admin-bind",
        "127.0.0.1:0",
        "--config",
        config.to_str().unwrap(),
        "--data",
        dir.to_str().unwrap(),
    ]);
    assert!(began.elapsed() < Duration::from_secs(300));
}

/// Sagas of `saga` (count, parked) and their start rate: starts per
/// second between the first and the last start, from the journal.
fn starts(dir: &Path, saga: &str, prefix: &str) -> (u64, u64, f64) {
    let journal = rusqlite::Connection::open(dir.join("journal.db")).unwrap();
    journal
        .query_row(
            "SELECT COUNT(*), COALESCE(SUM(status = 'parked'), 0), MIN(created_ms), MAX(created_ms)
             FROM sagas WHERE saga = ?1 AND id LIKE ?2",
            rusqlite::params![saga, format!("{prefix}-%")],
            |r| {
                let (n, parked, first, last): (u64, u64, u64, u64) =
                    (r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?);
                Ok((
                    n,
                    parked,
                    (n - 1) as f64 * 1000.0 / (last - first).max(1) as f64,
                ))
            },
        )
        .unwrap()
}

#[test]
fn parked_sagas_do_not_slow_intake() {
    const PARKED: usize = 2_000;
    const ORDERS: usize = 8_000;
    let (parked_dir, parked_config) = world("intake-parked");
    let (empty_dir, empty_config) = world("intake-empty");
    submit(&parked_dir, &parked_config, "p", PARKED);
    run_until_idle(&parked_dir, &parked_config, "parks");
    assert_eq!(
        starts(&parked_dir, "parks", "p").1,
        PARKED as u64,
        "every saga of the first sale parked"
    );
    // Both workers run at the same time, so whatever else loads the
    // machine (the other tests) falls on both alike; best of three rounds
    // (with the whole suite running beside it, one CI run measured 0.895x
    // over two rounds, and 1.06x alone, on the same binary).
    let mut best = [0.0f64; 2];
    for round in 0..3 {
        let prefix = format!("n{round}");
        let worlds = [(&empty_dir, &empty_config), (&parked_dir, &parked_config)];
        for (dir, config) in worlds {
            submit(dir, config, &prefix, ORDERS);
        }
        std::thread::scope(|s| {
            for (dir, config) in worlds {
                s.spawn(move || run_until_idle(dir, config, "noop"));
            }
        });
        for (i, (dir, _)) in worlds.into_iter().enumerate() {
            let (n, parked, rate) = starts(dir, "noop", &prefix);
            assert_eq!(
                (n, parked),
                (ORDERS as u64, 0),
                "every order started and ran"
            );
            best[i] = best[i].max(rate);
        }
    }
    let [empty, parked] = best;
    eprintln!(
        "intake: {empty:.0} starts/s with none parked, {parked:.0} starts/s with {PARKED} parked ({:.2}x)",
        parked / empty
    );
    assert!(
        parked >= 0.5 * empty,
        "with {PARKED} parked the worker starts {parked:.0}/s, under half the {empty:.0}/s of one with none: \
         something on the start path grows with the parked sagas"
    );
    assert_eq!(
        starts(&parked_dir, "parks", "p").1,
        PARKED as u64,
        "still parked"
    );
}
