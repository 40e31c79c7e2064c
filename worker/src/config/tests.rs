//! The whole `sagas.toml` through the worker's loader: the shipped file
//! loads, profile mistakes fail with their exact message, and saga mistakes
//! read exactly as `sagaflow_workflows::config` words them.

use super::settings::{HttpVersion, StepMode, DEFAULT_PAYMENT_CONNECTIONS};
use super::Config;
use sagaflow_activities::registry::BUILTIN_ACTIVITIES;
use sagaflow_workflows::config::parse_sagas;
use std::path::{Path, PathBuf};

fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn broken(name: &str) -> String {
    let text = std::fs::read_to_string(manifest_dir().join("tests/broken").join(name)).unwrap();
    let shown = Path::new("tests/broken").join(name);
    match Config::parse(&text, &shown, &BUILTIN_ACTIVITIES) {
        Ok(_) => panic!("{name} should not load"),
        Err(e) => e.to_string(),
    }
}

const PROFILE: &str = r#"[profile]
engine = "embedded"
trigger = "embedded"
stock = "embedded"
orders = "embedded"
payment = "sandbox"
"#;

fn parse(text: &str) -> Result<Config, String> {
    Config::parse(text, Path::new("sagas.toml"), &BUILTIN_ACTIVITIES).map_err(|e| e.to_string())
}

#[test]
fn shipped_sagas_toml_loads() {
    let config = Config::load_file(&manifest_dir().join("../sagas.toml"), &BUILTIN_ACTIVITIES)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.saga("checkout").unwrap().steps.len(), 5);
    assert!(config.embedded.group_commit);
    assert_eq!(config.embedded.max_concurrent_activities, 512);
    assert_eq!(config.stock.reservation_ttl_ms, 15 * 60_000);
    assert_eq!(config.temporal.address, "127.0.0.1:7233");
    assert_eq!(config.servicebus.dead_letter_queue, "orders.dlq");
}

#[test]
fn unknown_engine() {
    assert_eq!(
        broken("bad_engine.toml"),
        "tests/broken/bad_engine.toml:2: unknown variant `temporal-ish`, expected `embedded` or `temporal`; use one of the listed values"
    );
}

#[test]
fn unknown_top_level_table_is_refused() {
    let err = parse(&format!("{PROFILE}\n[redsi]\nurl_env = \"X\"\n")).unwrap_err();
    assert!(
        err.starts_with("sagas.toml:8: unknown field `redsi`, expected one of `profile`, "),
        "{err}"
    );
    assert!(
        err.ends_with("; remove the key or fix its spelling"),
        "{err}"
    );
}

#[test]
fn profile_and_saga_problems_are_reported_together_in_line_order() {
    let text = format!(
        "{PROFILE}\n[sagas.checkout]\n[[sagas.checkout.steps]]\nname = \"reserve\"\naction = \"stock.reserv\"\ncompensation = \"stock.release\"\n\n[servicebus]\nprefetch = 0\n"
    );
    let err = parse(&text).unwrap_err();
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 2, "{err}");
    assert!(
        lines[0].starts_with("sagas.toml:11: saga checkout, step reserve: action stock.reserv is not a registered activity; did you mean stock.reserve?"),
        "{err}"
    );
    assert_eq!(
        lines[1],
        "sagas.toml:15: [servicebus]: prefetch is 0; use 1 to 5000 (messages the broker may push ahead)"
    );
}

#[test]
fn a_setting_the_chosen_adapter_needs_is_named() {
    let err = parse(&PROFILE.replace("\"sandbox\"", "\"http\"")).unwrap_err();
    assert_eq!(
        err,
        "sagas.toml: [payment]: profile.payment is \"http\" but payment.base_url is empty; set base_url to the provider's URL or use payment = \"sandbox\""
    );
}

/// The saga checks moved to `workflows` with their tests; through the whole
/// loader every one of those files must read exactly the same.
#[test]
fn saga_mistakes_read_the_same_through_the_whole_loader() {
    let dir = manifest_dir().join("../workflows/tests/broken");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let alone = parse_sagas(&text, &path, &BUILTIN_ACTIVITIES).unwrap_err();
        let whole = Config::parse(&text, &path, &BUILTIN_ACTIVITIES).unwrap_err();
        assert_eq!(whole, alone, "{}", path.display());
        seen += 1;
    }
    assert!(seen >= 9, "only {seen} broken files in {}", dir.display());
}

/// Before these checks each value loaded; a huge one overflowed a deadline
/// or the timer arithmetic, a zero TTL reclaimed stock under a live saga.
#[test]
fn nonsensical_limits_are_refused_at_load() {
    let text = format!(
        "{PROFILE}\n[embedded]\nmax_concurrent_activities = 1000000000\n\n[stock]\nreservation_ttl = \"0ms\"\n\n[payment]\nrequest_timeout = \"0s\"\n\n[sandbox]\nlatency = \"100000h\"\n"
    );
    let err = parse(&text).unwrap_err();
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(
        lines,
        [
            "sagas.toml:9: [embedded]: max_concurrent_activities is 1000000000; use 1 to 100000",
            "sagas.toml:12: [stock]: reservation_ttl is 0ms; a reservation must outlive the steps before the capture; use at least \"1s\" (the default is \"15m\")",
            "sagas.toml:15: [payment]: request_timeout is 0s; give each request some time, e.g. \"5s\"",
            "sagas.toml:18: latency is 100000h, longer than 30 days (\"720h\"), the longest sagaflow accepts; use a shorter one",
        ],
        "{err}"
    );
}

#[test]
fn a_step_timeout_or_backoff_beyond_the_limits_is_refused() {
    let text = format!(
        "{PROFILE}\n[sagas.checkout]\n[[sagas.checkout.steps]]\nname = \"reserve\"\naction = \"stock.reserve\"\ncompensation = \"stock.release\"\ntimeout = \"5000h\"\nretry = {{ backoff_coefficient = 1000.0 }}\n"
    );
    let err = parse(&text).unwrap_err();
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 2, "{err}");
    assert!(
        lines[0].starts_with(
            "sagas.toml:13: saga checkout, step reserve: timeout is 5000h, longer than 30 days"
        ),
        "{err}"
    );
    assert!(
        lines[1].starts_with("sagas.toml:14: saga checkout, step reserve: retry.backoff_coefficient is 1000; use at most 100"),
        "{err}"
    );
}

/// A void that may look for a lost authorization keeps trying for
/// `search_lag` by time, whatever its attempt count: a budget of three
/// attempts, which once was refused here, loads, and the void's step
/// carries the lag as its settle window (issue 31, defect 3). Other steps,
/// and the in-process sandbox (no lag), carry none.
#[test]
fn a_void_settles_for_the_search_lag_whatever_its_attempts() {
    let profile = PROFILE.replace("payment = \"sandbox\"", "payment = \"http\"");
    let saga = "[sagas.checkout]\npivot = \"pay\"\ncompensation_retry = { max_attempts = 3 }\n[[sagas.checkout.steps]]\nname = \"auth\"\naction = \"payment.authorize\"\ncompensation = \"payment.void\"\ntimeout = \"10s\"\n[[sagas.checkout.steps]]\nname = \"pay\"\naction = \"payment.capture\"\n";
    let text = format!(
        "{profile}\n[payment]\nbase_url = \"http://127.0.0.1:1\"\nsearch_lag = \"1m\"\n\n{saga}"
    );
    let config = parse(&text).unwrap();
    let steps = &config.saga("checkout").unwrap().steps;
    assert_eq!(steps[0].settle_ms, Some(60_000));
    assert_eq!(steps[1].settle_ms, None, "no void, nothing to settle");
    let sandbox = parse(&text.replace("payment = \"http\"", "payment = \"sandbox\"")).unwrap();
    assert_eq!(sandbox.saga("checkout").unwrap().steps[0].settle_ms, None);
}

/// Generated edits of the shipped `sagas.toml` (issue 12): a line replaced,
/// dropped or doubled. The loader never panics, and every problem it
/// reports names the file and says what is wrong.
mod generated {
    use super::*;
    use proptest::prelude::*;

    fn shipped() -> String {
        std::fs::read_to_string(manifest_dir().join("../sagas.toml")).unwrap()
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        #[test]
        fn an_edited_config_loads_or_every_problem_is_explained(
            at in any::<prop::sample::Index>(),
            edit in 0u8..3,
            text in "\\PC{0,40}|[a-z_]{1,12} = \"?[0-9a-z]{0,6}\"?|\\[[a-z.]{1,12}\\]",
        ) {
            let shipped = shipped();
            let mut lines: Vec<&str> = shipped.lines().collect();
            let i = at.index(lines.len());
            match edit {
                0 => lines[i] = &text,
                1 => {
                    lines.remove(i);
                }
                _ => lines.insert(i, lines[i]),
            }
            let edited = lines.join("\n");
            let file = Path::new("edited/sagas.toml");
            if let Err(errors) = Config::parse(&edited, file, &BUILTIN_ACTIVITIES) {
                prop_assert!(!errors.0.is_empty());
                for e in &errors.0 {
                    let shown = e.to_string();
                    prop_assert!(shown.starts_with("edited/sagas.toml"), "{}", shown);
                    prop_assert!(e.message.trim().len() > 10, "{}", shown);
                }
            }
        }
    }
}

#[test]
fn breakers_default_on_for_every_dependency_and_each_key_is_checked() {
    let config = parse(PROFILE).unwrap();
    let deps: Vec<&str> = config
        .breakers
        .breakers
        .iter()
        .map(|(d, _)| d.as_str())
        .collect();
    assert_eq!(deps, ["payment", "stock", "orders"]);
    let payment = &config.breakers.breakers[0].1;
    assert_eq!(
        (payment.failures, payment.open_for_ms, payment.probes),
        (5, 5_000, 1)
    );

    let off = parse(&format!("{PROFILE}[breakers]\nenabled = false\n")).unwrap();
    assert!(off.breakers.breakers.is_empty());
    let one_off = parse(&format!("{PROFILE}[breakers.stock]\nenabled = false\n")).unwrap();
    assert_eq!(one_off.breakers.breakers.len(), 2);

    let err = parse(&format!(
        "{PROFILE}[breakers.payment]\nfailures = 0\nopen_for = \"10ms\"\nfailure_rate = 1.5\n"
    ))
    .unwrap_err();
    assert!(
        err.contains("sagas.toml:8: [breakers.payment]: failures is 0; use 1 to 10000"),
        "{err}"
    );
    assert!(
        err.contains("sagas.toml:9: [breakers.payment]: open_for is 10ms"),
        "{err}"
    );
    assert!(
        err.contains("sagas.toml:10: [breakers.payment]: failure_rate is 1.5"),
        "{err}"
    );
    let err = parse(&format!("{PROFILE}[breakers.paymnet]\nprobes = 2\n")).unwrap_err();
    assert!(err.contains("unknown field `paymnet`"), "{err}");
    // The rules issue 31 added: a handful of failures in a row, slow
    // calls, the ramp after an outage, a cap on calls in flight.
    assert_eq!(
        (payment.consecutive, payment.slow_call_ms, payment.ramp_ms),
        (5, 3_000, 10_000)
    );
    assert_eq!((payment.max_in_flight, payment.burst), (0, 5));
    let set = parse(&format!(
        "{PROFILE}[breakers.stock]\nconsecutive = 0\nslow_call = \"800ms\"\nramp = \"0s\"\nmax_in_flight = 64\nburst = 0\n"
    ))
    .unwrap();
    let stock = &set.breakers.breakers[1].1;
    assert_eq!(
        (
            stock.consecutive,
            stock.slow_call_ms,
            stock.ramp_ms,
            stock.max_in_flight,
            stock.burst
        ),
        (0, 800, 0, 64, 0)
    );
    let err = parse(&format!(
        "{PROFILE}[breakers.orders]\nconsecutive = -1\nmax_in_flight = 100001\nslow_call = \"soon\"\nburst = -2\n"
    ))
    .unwrap_err();
    for line in [
        "sagas.toml:8: [breakers.orders]: consecutive is -1; use 0 to 10000 (failures in a row that open the breaker; 0 turns this rule off)",
        "sagas.toml:9: [breakers.orders]: max_in_flight is 100001; use 0 to 100000",
        "sagas.toml:10: [breakers.orders]: slow_call",
        "sagas.toml:11: [breakers.orders]: burst is -2; use 0 to 100000",
    ] {
        assert!(err.contains(line), "{line}\n{err}");
    }
}

#[test]
fn telemetry_is_off_unless_an_endpoint_is_named() {
    let config = parse(PROFILE).unwrap();
    assert_eq!(config.telemetry.traces_url, None);
    assert_eq!(config.telemetry.service_name, "sagaflow");
    let shipped = Config::load_file(&manifest_dir().join("../sagas.toml"), &BUILTIN_ACTIVITIES)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(shipped.telemetry.traces_url, None);
}

#[test]
fn telemetry_endpoint_gets_the_traces_path_once() {
    for (written, url) in [
        (
            "http://otel-collector:4318",
            "http://otel-collector:4318/v1/traces",
        ),
        (
            "http://otel-collector:4318/",
            "http://otel-collector:4318/v1/traces",
        ),
        (
            "https://otlp.example.com/v1/traces",
            "https://otlp.example.com/v1/traces",
        ),
    ] {
        let text = format!(
            "{PROFILE}\n[telemetry]\nendpoint = \"{written}\"\nprotocol = \"http/json\"\nservice_name = \"checkout\"\nheaders_env = \"OTLP_HEADERS\"\n"
        );
        let t = parse(&text).unwrap().telemetry;
        assert_eq!(t.traces_url.as_deref(), Some(url));
        assert_eq!(t.protocol, super::OtlpProtocol::HttpJson);
        assert_eq!(t.service_name, "checkout");
        assert_eq!(t.headers_env.as_deref(), Some("OTLP_HEADERS"));
    }
}

#[test]
fn telemetry_mistakes_say_what_to_write() {
    let err = parse(&format!(
        "{PROFILE}\n[telemetry]\nendpoint = \"otel:4318\"\n"
    ))
    .unwrap_err();
    assert!(
        err.contains("sagas.toml:9: [telemetry]: endpoint \"otel:4318\" is not an http(s) URL; write the OTLP/HTTP receiver's address, e.g. \"http://otel-collector:4318\""),
        "{err}"
    );
    let err = parse(&format!(
        "{PROFILE}\n[telemetry]\nendpoint = \"http://c:4317\"\nprotocol = \"grpc\"\n"
    ))
    .unwrap_err();
    assert!(
        err.contains("sagas.toml:10: [telemetry]: protocol \"grpc\" is not supported; point endpoint at the collector's OTLP/HTTP port (4318)"),
        "{err}"
    );
    let err = parse(&format!("{PROFILE}\n[telemetry]\nprotocol = \"json\"\n")).unwrap_err();
    assert!(err.contains("protocol \"json\" is not one of"), "{err}");
    let err = parse(&format!("{PROFILE}\n[telemetry]\nservice_name = \" \"\n")).unwrap_err();
    assert!(err.contains("service_name is empty"), "{err}");
}

#[test]
fn retention_takes_days_or_off_and_the_audit_outlives_the_sagas() {
    let ok = parse(&format!(
        "{PROFILE}\n[embedded]\nretention = \"7d\"\naudit_retention = \"off\"\n"
    ))
    .unwrap();
    assert_eq!(ok.embedded.retention_ms, Some(7 * 86_400_000));
    assert_eq!(ok.embedded.audit_retention_ms, None);
    let defaults = parse(PROFILE).unwrap();
    assert_eq!(defaults.embedded.retention_ms, Some(3 * 86_400_000));
    assert_eq!(defaults.embedded.audit_retention_ms, Some(90 * 86_400_000));
    let err = parse(&format!("{PROFILE}\n[embedded]\nretention = \"soon\"\n")).unwrap_err();
    assert!(
        err.starts_with("sagas.toml:9: [embedded]: retention: invalid duration \"soon\""),
        "{err}"
    );
    assert!(err.contains("or \"off\" to keep everything"), "{err}");
    let err = parse(&format!(
        "{PROFILE}\n[embedded]\nretention = \"30d\"\naudit_retention = \"7d\"\n"
    ))
    .unwrap_err();
    assert_eq!(
        err.trim(),
        "sagas.toml:10: [embedded]: audit_retention (7d) is shorter than retention (30d): the audit would forget commands on sagas the journal still holds; make audit_retention at least as long",
    );
}

#[test]
fn payment_transport_defaults_and_mistakes() {
    let config = parse(PROFILE).unwrap();
    assert_eq!(config.payment.http, HttpVersion::Auto);
    assert_eq!(config.payment.connections, DEFAULT_PAYMENT_CONNECTIONS);

    let config = parse(&format!(
        "{PROFILE}\n[payment]\nhttp = \"http2\"\nconnections = 2\n"
    ))
    .unwrap();
    assert_eq!(config.payment.http, HttpVersion::Http2);
    assert_eq!(config.payment.connections, 2);

    let err = parse(&format!(
        "{PROFILE}\n[payment]\nhttp = \"http3\"\nconnections = 0\n"
    ))
    .unwrap_err();
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(
        lines,
        [
            "sagas.toml:9: [payment]: http is \"http3\"; write \"auto\" (HTTP/2 when the provider offers it over https), \"http1\" or \"http2\"",
            "sagas.toml:10: [payment]: connections is 0; use 1 to 256 (HTTP/2 connections to the provider; the default is 4)",
        ],
        "{err}"
    );
}

#[test]
fn temporal_steps_and_slots_are_checked_and_the_old_key_says_what_replaced_it() {
    let text = format!(
        "{PROFILE}\n[temporal]\nlocal_activities = true\nsteps = \"fast\"\nworkflow_task_slots = 0\n"
    );
    let err = parse(&text).unwrap_err();
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(
        lines,
        [
            "sagas.toml:9: [temporal]: local_activities was replaced by `steps`; remove it and write steps = \"checkpointed\" (the default, safe around the pivot) or steps = \"local\" (fewer events; a crash can re-run the pivot)",
            "sagas.toml:10: [temporal]: steps is \"fast\"; use \"checkpointed\" (the default), \"activities\" or \"local\"",
            "sagas.toml:11: [temporal]: workflow_task_slots is 0; use 1 to 100000 (the default is 100)",
        ],
        "{err}"
    );
    let err = parse(&format!(
        "{PROFILE}\n[temporal]\nlocal_activities = false\n"
    ))
    .unwrap_err();
    assert!(err.contains("write steps = \"activities\""), "{err}");

    let defaults = parse(PROFILE).unwrap().temporal;
    assert_eq!(defaults.steps, StepMode::Checkpointed);
    assert_eq!(
        (
            defaults.workflow_task_slots,
            defaults.activity_slots,
            defaults.local_activity_slots,
            defaults.workflow_cache
        ),
        (100, 512, 512, 1_000)
    );
    let set = parse(&format!(
        "{PROFILE}\n[temporal]\nsteps = \"local\"\nactivity_slots = 64\nworkflow_cache = 10\n"
    ))
    .unwrap()
    .temporal;
    assert_eq!(
        (set.steps, set.activity_slots, set.workflow_cache),
        (StepMode::Local, 64, 10)
    );
}

#[test]
fn temporal_max_task_wait_is_a_bounded_duration_or_off() {
    assert_eq!(
        parse(PROFILE).unwrap().temporal.max_task_wait_ms,
        Some(1_000)
    );
    let set = |v: &str| parse(&format!("{PROFILE}\n[temporal]\nmax_task_wait = \"{v}\"\n"));
    assert_eq!(set("250ms").unwrap().temporal.max_task_wait_ms, Some(250));
    assert_eq!(set("off").unwrap().temporal.max_task_wait_ms, None);
    assert_eq!(
        set("10ms").unwrap_err(),
        "sagas.toml:9: [temporal]: max_task_wait is 10ms; use \"100ms\" to \"10m\" (the default is \"1s\"), or \"off\" to limit intake by --max-live alone"
    );
    let err = set("soon").unwrap_err();
    assert!(
        err.starts_with("sagas.toml:9: [temporal]: max_task_wait: ") && err.ends_with("or \"off\""),
        "{err}"
    );
}
