use super::*;
use sagaflow_workflows::ActivityError;

const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

fn scope() -> InstrumentationScope {
    InstrumentationScope::builder("sagaflow").build()
}

fn finished(traceparent: Option<&str>, work: Work) -> Finished {
    Finished {
        saga_id: "o-1".into(),
        saga: "checkout".into(),
        traceparent: traceparent.map(str::to_owned),
        started_ms: 1_700_000_000_000,
        ended_ms: 1_700_000_000_250,
        work,
    }
}

fn step(first_attempt: u32) -> Work {
    Work::Step {
        step: "authorize_payment".into(),
        phase: Phase::Action,
        key: "o-1/authorize_payment".into(),
        first_attempt,
        outcome: "completed",
    }
}

fn attempt(first_attempt: u32, attempt: u32, error: Option<ActivityError>) -> Work {
    Work::Attempt {
        step: "authorize_payment".into(),
        phase: Phase::Action,
        key: "o-1/authorize_payment".into(),
        first_attempt,
        attempt,
        error,
    }
}

fn attribute<'a>(span: &'a SpanData, key: &str) -> Option<&'a opentelemetry::Value> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| &kv.value)
}

#[test]
fn spans_nest_saga_step_attempt_in_the_messages_trace() {
    let saga = span(
        &finished(
            Some(TP),
            Work::Saga {
                status: "completed",
            },
        ),
        &scope(),
    );
    let run = span(&finished(Some(TP), step(1)), &scope());
    let first = span(&finished(Some(TP), attempt(1, 1, None)), &scope());
    let second = span(&finished(Some(TP), attempt(1, 2, None)), &scope());
    let trace = TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap();
    for s in [&saga, &run, &first, &second] {
        assert_eq!(s.span_context.trace_id(), trace, "{}", s.name);
        assert!(s.span_context.is_sampled());
        assert_eq!(
            attribute(s, "sagaflow.saga.id").map(|v| v.as_str().into_owned()),
            Some("o-1".to_owned())
        );
    }
    assert_eq!(
        saga.parent_span_id,
        SpanId::from_hex("00f067aa0ba902b7").unwrap()
    );
    assert!(saga.parent_span_is_remote);
    assert_eq!(run.parent_span_id, saga.span_context.span_id());
    assert_eq!(first.parent_span_id, run.span_context.span_id());
    assert_eq!(second.parent_span_id, run.span_context.span_id());
    assert_ne!(first.span_context.span_id(), second.span_context.span_id());
    assert_eq!(saga.name, "saga checkout");
    assert_eq!(run.name, "step authorize_payment");
}

#[test]
fn an_attempts_span_id_is_the_parent_id_the_provider_saw() {
    let sent = ids::child(TP, "o-1/authorize_payment", 2).unwrap();
    let attempt = span(&finished(Some(TP), attempt(1, 2, None)), &scope());
    assert_eq!(
        format!(
            "{:016x}",
            u64::from_be_bytes(attempt.span_context.span_id().to_bytes())
        ),
        &sent[36..52]
    );
}

#[test]
fn a_retried_parked_step_is_a_new_run_whose_attempts_nest_under_it() {
    let first_run = span(&finished(None, step(1)), &scope());
    let second_run = span(&finished(None, step(4)), &scope());
    let fourth = span(&finished(None, attempt(4, 4, None)), &scope());
    assert_ne!(
        first_run.span_context.span_id(),
        second_run.span_context.span_id()
    );
    assert_eq!(fourth.parent_span_id, second_run.span_context.span_id());
}

#[test]
fn without_a_context_the_saga_is_the_root_of_a_trace_of_its_own() {
    let saga = span(
        &finished(
            None,
            Work::Saga {
                status: "compensated",
            },
        ),
        &scope(),
    );
    let again = span(
        &finished(
            None,
            Work::Saga {
                status: "compensated",
            },
        ),
        &scope(),
    );
    assert_eq!(saga.parent_span_id, SpanId::INVALID);
    assert!(!saga.parent_span_is_remote);
    assert!(saga.span_context.trace_id() != TraceId::INVALID);
    assert_eq!(saga.span_context.trace_id(), again.span_context.trace_id());
    assert_eq!(saga.status, Status::Unset);
    let run = span(&finished(None, step(1)), &scope());
    assert_eq!(run.span_context.trace_id(), saga.span_context.trace_id());
    assert_eq!(run.parent_span_id, saga.span_context.span_id());
}

#[test]
fn a_failed_attempt_carries_its_error() {
    let error = ActivityError::retryable("provider_unavailable", "503 from the provider");
    let s = span(&finished(Some(TP), attempt(1, 1, Some(error))), &scope());
    assert_eq!(
        s.status,
        Status::error("provider_unavailable: 503 from the provider")
    );
    assert_eq!(
        attribute(&s, "error.type").map(|v| v.as_str().into_owned()),
        Some("provider_unavailable".to_owned())
    );
    assert_eq!(
        attribute(&s, "sagaflow.attempt"),
        Some(&opentelemetry::Value::I64(1))
    );
    assert_eq!(s.span_kind, SpanKind::Client);
    assert_eq!(
        s.end_time.duration_since(s.start_time).unwrap(),
        Duration::from_millis(250)
    );
}

#[test]
fn headers_are_key_value_pairs() {
    let h = parse_headers("api-key=s%3Dcret, team=shop").unwrap();
    assert_eq!(h.get("api-key").map(String::as_str), Some("s=cret"));
    assert_eq!(h.get("team").map(String::as_str), Some("shop"));
    assert_eq!(parse_headers("").unwrap().len(), 0);
    assert!(parse_headers("no-equals-sign").is_none());
    assert!(parse_headers("=value").is_none());
}
