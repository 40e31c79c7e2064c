//! `sagaflow bench` measures what it says: with `--provider separate` the
//! payment sandbox runs in a process of its own (its CPU measured apart
//! from the worker's, and stopped with the run), and `--provider-latency`
//! reaches it.

use crate::common::*;

#[test]
fn a_checkout_bench_with_a_separate_provider_reports_both_processes_cpu() {
    let root = data_dir("bench-separate");
    let config = config_with(&root, &[]);
    // The bench starts its data directory afresh: not where the config is.
    let dir = root.join("data");
    let d = dir.to_str().unwrap();
    let c = config.to_str().unwrap();
    let args = [
        "bench",
        "--activities",
        "checkout",
        "--provider",
        "separate",
        "--provider-latency",
        "20ms",
        "--sagas",
        "1000",
        "--in-flight",
        "100",
        "--max-activities",
        "50",
        "--json",
        "--config",
        c,
        "--data",
        d,
    ];
    let r = json_line(&sagaflow_ok(&args));
    assert_eq!(r["sagas"], 1000, "{r}");
    assert_eq!(r["provider"], "separate", "{r}");
    assert_eq!(r["provider_latency_ms"], 20, "{r}");
    assert_eq!(r["max_concurrent_activities"], 50, "{r}");
    let worker = r["worker_cpu_ms_per_saga"].as_f64().unwrap();
    let provider = r["provider_cpu_ms_per_saga"].as_f64().unwrap();
    assert!(worker > 0.0 && provider > 0.0, "{r}");
    assert!(r["peak_rss_mb"].as_f64().unwrap() > 1.0, "{r}");
    // Two calls to the provider per saga (authorize, capture), each 20 ms
    // later than it would be: no saga ends sooner than that.
    assert!(r["p50_ms"].as_f64().unwrap() >= 40.0, "{r}");
    // The provider's ledger shows every saga's payment, and its process
    // is gone.
    let ledger = json_line(&sagaflow_ok(&[
        "sandbox",
        "ledger",
        "--json",
        "--data",
        dir.join("provider").to_str().unwrap(),
    ]));
    assert_eq!(ledger["ledger"]["succeeded"], 1000, "{ledger}");
    let pids = std::process::Command::new("pgrep")
        .args(["-f", &format!("--data {}", dir.join("provider").display())])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&pids.stdout).trim().is_empty(),
        "the provider process outlived the bench"
    );
}

/// Where no sagas.toml is found the built-in one applies, to the bench
/// and to the sandbox it starts (which was once handed the built-in
/// config's label as a file to read, and did not start).
#[test]
fn a_separate_provider_starts_without_a_sagas_toml() {
    let dir = data_dir("bench-builtin-config");
    let data = dir.join("data");
    let out = std::process::Command::new(bin())
        .args([
            "bench",
            "--activities",
            "checkout",
            "--provider",
            "separate",
        ])
        .args(["--sagas", "50", "--in-flight", "10", "--json", "--data"])
        .arg(&data)
        .current_dir(&dir)
        .env_remove("SAGAFLOW_CONFIG")
        .env_remove("SAGAFLOW_DATA")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let r = json_line(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(
        (r["sagas"].as_u64(), r["provider"].as_str()),
        (Some(50), Some("separate")),
        "{r}"
    );
    assert!(!dir.join("sagas.toml").exists());
}

#[test]
fn provider_flags_are_refused_where_no_provider_is_called() {
    let out = sagaflow(&["bench", "--activities", "noop", "--provider-latency", "5ms"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--provider and --provider-latency apply to --activities checkout"),
        "{err}"
    );
    let out = sagaflow(&["bench", "--temporal-steps", "local", "--sagas", "1"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--temporal-steps applies to --engine temporal"),
        "{err}"
    );
}

/// `--keep-journal` measures on the journal an earlier run left: its
/// sagas are counted before the run, this run's ids are new (all of them
/// start and complete), and the journal holds both runs afterwards.
#[test]
fn a_bench_on_a_kept_journal_adds_its_own_sagas() {
    let dir = data_dir("bench-keep").join("data");
    let d = dir.to_str().unwrap();
    let run = |extra: &[&str]| {
        let mut args = vec![
            "bench",
            "--sagas",
            "500",
            "--in-flight",
            "50",
            "--json",
            "--data",
            d,
        ];
        args.extend_from_slice(extra);
        json_line(&sagaflow_ok(&args))
    };
    let first = run(&[]);
    assert_eq!(first["journal_sagas_before"], 0, "{first}");
    let second = run(&["--keep-journal"]);
    assert_eq!(second["journal_sagas_before"], 500, "{second}");
    assert_eq!(second["sagas"], 500, "{second}");
    assert!(second["first_saga_ms"].as_f64().unwrap() > 0.0, "{second}");
    assert!(second["journal_mb"].as_f64().unwrap() > 0.0, "{second}");
    let completed: i64 = rusqlite::Connection::open(dir.join("journal.db"))
        .unwrap()
        .query_row(
            "SELECT COUNT(*) FROM sagas WHERE status = 'completed'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(completed, 1_000);
    // Without --data there is no journal to keep.
    let out = sagaflow(&["bench", "--keep-journal"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("pass --data"));
}
