//! What `/metrics` says after known events: names, labels, values.

use super::*;
use sagaflow_workflows::DependencyWait;
use serde_json::json;

fn line<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    text.lines().find(|l| l.starts_with(prefix))
}

fn value(text: &str, prefix: &str) -> f64 {
    line(text, prefix)
        .unwrap_or_else(|| panic!("no line {prefix} in:\n{text}"))
        .rsplit(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

/// A private set (the global one is shared by every test in the binary).
#[test]
fn attempts_failures_refusals_and_sagas_are_counted_with_their_labels() {
    let m = Metrics::new();
    let reserve = m.recorder("reserve_stock", "stock.reserve", Phase::Action);
    let again = m.recorder("reserve_stock", "stock.reserve", Phase::Action);
    assert!(Arc::ptr_eq(&reserve, &again), "handles are cached per step");
    reserve.record(&Ok(json!({})), Duration::from_millis(3));
    reserve.record(
        &Err(ActivityError::retryable("redis_unavailable", "down")),
        Duration::from_millis(2),
    );
    reserve.record(
        &Err(ActivityError::breaker_open(DependencyWait {
            dependency: "stock".into(),
            since_ms: 0,
            retry_after_ms: 5_000,
        })),
        Duration::ZERO,
    );
    let release = m.recorder("reserve_stock", "stock.release", Phase::Compensation);
    release.record(&Ok(json!({})), Duration::from_millis(1));

    let saga: Arc<str> = Arc::from("checkout");
    m.saga_started(&saga);
    m.saga_started(&saga);
    m.saga_ended(&saga, "completed", Duration::from_millis(40));
    m.saga_parked(&saga, &Arc::from("commit_stock"), Phase::Action);
    m.journal_committed(12, Duration::from_micros(900));

    let stats = QueueCounts {
        received: 5,
        started: 3,
        duplicates: 1,
        dead_lettered: 1,
        ..QueueCounts::default()
    };
    let text = m.render(&Scrape {
        trigger: Some(stats),
        breakers: None,
        in_progress: Some(7),
    });

    let step = r#"{step="reserve_stock",activity="stock.reserve",phase="action"}"#;
    assert_eq!(
        value(&text, &format!("sagaflow_step_attempts_total{step}")),
        2.0,
        "the refusal is not an attempt"
    );
    assert_eq!(
        value(
            &text,
            &format!("sagaflow_step_breaker_refusals_total{step}")
        ),
        1.0
    );
    assert_eq!(
        value(
            &text,
            r#"sagaflow_step_failures_total{step="reserve_stock",activity="stock.reserve",phase="action",kind="redis_unavailable"}"#
        ),
        1.0
    );
    assert_eq!(
        value(
            &text,
            &format!("sagaflow_step_duration_seconds_count{step}")
        ),
        2.0
    );
    assert_eq!(
        value(
            &text,
            r#"sagaflow_step_attempts_total{step="reserve_stock",activity="stock.release",phase="compensation"}"#
        ),
        1.0
    );
    assert_eq!(
        value(&text, r#"sagaflow_sagas_started_total{saga="checkout"}"#),
        2.0
    );
    assert_eq!(
        value(
            &text,
            r#"sagaflow_sagas_ended_total{saga="checkout",status="completed"}"#
        ),
        1.0
    );
    assert_eq!(
        value(
            &text,
            r#"sagaflow_sagas_parked_total{saga="checkout",step="commit_stock",phase="action"}"#
        ),
        1.0
    );
    assert_eq!(
        value(
            &text,
            r#"sagaflow_saga_duration_seconds_sum{saga="checkout",status="completed"}"#
        ),
        0.04
    );
    assert_eq!(
        value(&text, "sagaflow_journal_commit_batch_records_sum"),
        12.0
    );
    assert_eq!(value(&text, "sagaflow_queue_messages_received_total"), 5.0);
    assert_eq!(
        value(
            &text,
            r#"sagaflow_queue_messages_completed_total{reason="started"}"#
        ),
        3.0
    );
    assert_eq!(
        value(
            &text,
            r#"sagaflow_queue_messages_completed_total{reason="duplicate"}"#
        ),
        1.0
    );
    assert_eq!(
        value(&text, "sagaflow_queue_messages_dead_lettered_total"),
        1.0
    );
    assert_eq!(value(&text, "sagaflow_sagas_in_progress"), 7.0);
    assert!(
        text.contains("# TYPE sagaflow_step_duration_seconds histogram"),
        "{text}"
    );
    assert!(text.ends_with("# EOF\n"));
}

#[test]
fn breakers_show_their_state_as_one_of_three() {
    let m = Metrics::new();
    let breakers = Breakers::new([(
        "payment".to_owned(),
        sagaflow_activities::breaker::BreakerSettings::default_for("payment"),
    )]);
    let text = m.render(&Scrape {
        breakers: Some(&breakers),
        ..Scrape::default()
    });
    assert_eq!(
        value(
            &text,
            r#"sagaflow_breaker_state{dependency="payment",state="closed"}"#
        ),
        1.0
    );
    assert_eq!(
        value(
            &text,
            r#"sagaflow_breaker_state{dependency="payment",state="open"}"#
        ),
        0.0
    );
    assert_eq!(
        value(
            &text,
            r#"sagaflow_breaker_opened_total{dependency="payment"}"#
        ),
        0.0
    );
}

/// Every metric the Grafana dashboard in `deploy/grafana/` queries is one
/// `/metrics` exports (a renamed metric would leave a panel empty).
#[test]
fn the_dashboard_queries_only_exported_metrics() {
    let m = Metrics::new();
    let r = m.recorder("s", "a.b", Phase::Action);
    r.record(&Ok(json!({})), Duration::from_millis(1));
    r.record(
        &Err(ActivityError::retryable("k", "m")),
        Duration::from_millis(1),
    );
    r.record(
        &Err(ActivityError::breaker_open(DependencyWait {
            dependency: "payment".into(),
            since_ms: 0,
            retry_after_ms: 1,
        })),
        Duration::ZERO,
    );
    let saga: Arc<str> = Arc::from("checkout");
    m.saga_started(&saga);
    m.saga_ended(&saga, "completed", Duration::from_millis(5));
    m.saga_parked(&saga, &saga, Phase::Action);
    m.journal_committed(1, Duration::from_millis(1));
    let stats = QueueCounts::default();
    let breakers = Breakers::new([(
        "payment".to_owned(),
        sagaflow_activities::breaker::BreakerSettings::default_for("payment"),
    )]);
    let text = m.render(&Scrape {
        trigger: Some(stats),
        breakers: Some(&breakers),
        in_progress: Some(0),
    });
    let exported: std::collections::BTreeSet<&str> = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next())
        .collect();

    let dashboard: Value = serde_json::from_str(include_str!(
        "../../../deploy/grafana/sagaflow-dashboard.json"
    ))
    .expect("the dashboard is JSON");
    let mut queried = 0;
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().expect("targets") {
            let expr = target["expr"].as_str().expect("expr");
            let mut rest = expr;
            while let Some(at) = rest.find("sagaflow_") {
                let name: String = rest[at..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                assert!(
                    exported.contains(name.as_str()),
                    "panel {:?} queries {name}, which /metrics does not export; exported: {exported:?}",
                    panel["title"]
                );
                queried += 1;
                rest = &rest[at + name.len()..];
            }
        }
    }
    assert!(
        queried >= 15,
        "the dashboard queries the metrics: {queried}"
    );
}
