//! Saga traces, exported over OTLP/HTTP when `[telemetry] endpoint` is
//! set.
//!
//! Every saga is one trace: a span for the saga, one per run of a step's
//! action or compensation under it, one per attempt under that. The trace
//! is the order's own when its message carried a W3C context (the saga
//! span's parent is the producer's span), and one derived from the saga
//! id otherwise.
//!
//! The spans are built from what the interpreter reports as each piece of
//! work ends ([`Finished`]), with saga times, not from in-process
//! `tracing` spans: a saga outlives the worker that started it (a crash,
//! a restart, another Temporal worker), and an in-process span would end
//! with its process. Span ids are derived from the saga
//! ([`sagaflow_activities::trace`]), so a step's span reported after a
//! crash has the id its attempts, reported before it, named as their
//! parent; and an attempt's span id is the parent id the payment
//! provider saw in its requests' `traceparent`.
//!
//! Export is best effort and never slows a saga: spans queue for the
//! SDK's batch processor, which posts them from its own thread and drops
//! what does not fit in its queue (`OTEL_BSP_*` tune it). Work replayed
//! after a crash is not reported again, so a span whose work ended just
//! before a crash may be missing; its children and parents are not.

use crate::config::{OtlpProtocol, TelemetrySettings};
use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, SpanData, SpanEvents, SpanExporter, SpanLinks,
    SpanProcessor,
};
use opentelemetry_sdk::Resource;
use sagaflow_activities::trace as ids;
use sagaflow_workflows::{Finished, Phase, Work};
use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[cfg(test)]
mod tests;

/// The span exporter, once [`start`] made one.
static EXPORT: OnceLock<Export> = OnceLock::new();

struct Export {
    processor: BatchSpanProcessor,
    scope: InstrumentationScope,
}

/// Why trace export could not start.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// The OTLP exporter refused its configuration.
    #[error("cannot export traces to {url}: {reason}; check [telemetry] endpoint and protocol")]
    Exporter {
        /// The traces URL.
        url: String,
        /// What the exporter said.
        reason: String,
    },
    /// The headers variable is not `key=value` pairs. The value is never
    /// shown: it usually holds a secret.
    #[error("the environment variable {env} (named by [telemetry] headers_env) is not key=value pairs separated by commas; write e.g. api-key=SECRET,team=shop")]
    Headers {
        /// The variable's name.
        env: String,
    },
}

/// Starts exporting saga traces when `settings` names an endpoint; true
/// when export is on. Call before the engine starts: the engine asks
/// [`enabled`] as it starts. A second call changes nothing.
pub fn start(settings: &TelemetrySettings) -> Result<bool, TelemetryError> {
    let Some(url) = &settings.traces_url else {
        return Ok(enabled());
    };
    if enabled() {
        return Ok(true);
    }
    let headers = match &settings.headers_env {
        Some(env) => match std::env::var(env) {
            Ok(text) => parse_headers(&text).ok_or(TelemetryError::Headers { env: env.clone() })?,
            Err(_) => HashMap::new(),
        },
        None => HashMap::new(),
    };
    let protocol = match settings.protocol {
        OtlpProtocol::HttpProtobuf => Protocol::HttpBinary,
        OtlpProtocol::HttpJson => Protocol::HttpJson,
    };
    let mut exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_endpoint(url.clone())
        .with_protocol(protocol)
        .with_timeout(Duration::from_secs(10))
        .with_headers(headers)
        .build()
        .map_err(|e| TelemetryError::Exporter {
            url: url.clone(),
            reason: e.to_string(),
        })?;
    exporter.set_resource(
        &Resource::builder()
            .with_service_name(settings.service_name.clone())
            .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
            .build(),
    );
    let processor = BatchSpanProcessor::builder(exporter)
        .with_batch_config(batch_config())
        .build();
    let export = Export {
        processor,
        scope: InstrumentationScope::builder("sagaflow")
            .with_version(env!("CARGO_PKG_VERSION"))
            .build(),
    };
    // Lost a race with another start: that one exports.
    let _ = EXPORT.set(export);
    tracing::info!(url = %url, protocol = ?settings.protocol, "exporting saga traces over OTLP");
    Ok(true)
}

/// The batch processor's limits: a sale's spans (a dozen per saga, at
/// thousands of sagas a second) need a larger queue and batches than the
/// SDK's defaults, and a second's delay keeps traces current. The
/// `OTEL_BSP_*` variables, when set, win.
fn batch_config() -> opentelemetry_sdk::trace::BatchConfig {
    let set = |name: &str| std::env::var_os(name).is_some();
    let mut config = BatchConfigBuilder::default();
    if !set("OTEL_BSP_MAX_QUEUE_SIZE") {
        config = config.with_max_queue_size(65_536);
    }
    if !set("OTEL_BSP_MAX_EXPORT_BATCH_SIZE") {
        config = config.with_max_export_batch_size(4_096);
    }
    if !set("OTEL_BSP_SCHEDULE_DELAY") {
        config = config.with_scheduled_delay(Duration::from_secs(1));
    }
    config.build()
}

/// `key=value,key2=value2` (values percent-decoded, as in
/// `OTEL_EXPORTER_OTLP_HEADERS`); `None` when a pair has no `=` or no key.
fn parse_headers(text: &str) -> Option<HashMap<String, String>> {
    let mut headers = HashMap::new();
    for pair in text.split(',').filter(|p| !p.trim().is_empty()) {
        let (key, value) = pair.split_once('=')?;
        let key = key.trim();
        if key.is_empty() {
            return None;
        }
        let value = percent_encoding::percent_decode_str(value.trim())
            .decode_utf8()
            .ok()?;
        headers.insert(key.to_owned(), value.into_owned());
    }
    Some(headers)
}

/// True when saga traces are exported: the engines then ask sagas to
/// report their ended work.
pub fn enabled() -> bool {
    EXPORT.get().is_some()
}

/// Queues the span of `work` for export (nothing when export is off).
pub fn record(work: &Finished) {
    if let Some(export) = EXPORT.get() {
        export.processor.on_end(span(work, &export.scope));
    }
}

/// Exports what is queued, waiting at most a few seconds: called as the
/// worker stops.
pub fn flush() {
    if let Some(export) = EXPORT.get() {
        let result: OTelSdkResult = export.processor.force_flush();
        if let Err(error) = result {
            tracing::warn!(%error, "some saga spans were not exported");
        }
    }
}

/// The span of `work`: ids derived from the saga, times from the saga's
/// clock.
pub(crate) fn span(work: &Finished, scope: &InstrumentationScope) -> SpanData {
    let incoming = work.traceparent.as_deref().and_then(parse_traceparent);
    let (trace_id, flags) = match incoming {
        Some((trace, _, flags)) => (trace, flags),
        None => (
            TraceId::from(ids::saga_trace_id(&work.saga_id)),
            TraceFlags::SAMPLED,
        ),
    };
    let saga_span = SpanId::from(ids::saga_span_id(&work.saga_id));
    let mut attributes = vec![
        KeyValue::new("sagaflow.saga.id", work.saga_id.clone()),
        KeyValue::new("sagaflow.saga.name", work.saga.clone()),
    ];
    let (span_id, parent, remote_parent, kind, name, status) = match &work.work {
        Work::Saga { status } => {
            attributes.push(KeyValue::new("sagaflow.outcome", *status));
            let (parent, remote) = match incoming {
                Some((_, parent, _)) => (parent, true),
                None => (SpanId::INVALID, false),
            };
            let span_status = match *status {
                "completed" => Status::Ok,
                _ => Status::Unset,
            };
            (
                saga_span,
                parent,
                remote,
                SpanKind::Consumer,
                format!("saga {}", work.saga),
                span_status,
            )
        }
        Work::Step {
            step,
            phase,
            key,
            first_attempt,
            outcome,
        } => {
            attributes.push(KeyValue::new("sagaflow.step", step.clone()));
            attributes.push(KeyValue::new("sagaflow.phase", phase.name()));
            attributes.push(KeyValue::new(
                "sagaflow.first_attempt",
                i64::from(*first_attempt),
            ));
            attributes.push(KeyValue::new("sagaflow.outcome", *outcome));
            let span_status = match *outcome {
                "completed" => Status::Ok,
                "failed" => Status::error(format!("{step} failed for good")),
                _ => Status::Unset,
            };
            (
                SpanId::from(ids::step_span_id(key, *first_attempt)),
                saga_span,
                false,
                SpanKind::Internal,
                format!("{} {step}", run_word(*phase)),
                span_status,
            )
        }
        Work::Attempt {
            step,
            phase,
            key,
            first_attempt,
            attempt,
            error,
        } => {
            attributes.push(KeyValue::new("sagaflow.step", step.clone()));
            attributes.push(KeyValue::new("sagaflow.phase", phase.name()));
            attributes.push(KeyValue::new("sagaflow.attempt", i64::from(*attempt)));
            let span_status = match error {
                None => {
                    attributes.push(KeyValue::new("sagaflow.outcome", "ok"));
                    Status::Ok
                }
                Some(e) => {
                    attributes.push(KeyValue::new("sagaflow.outcome", e.kind.clone()));
                    attributes.push(KeyValue::new("error.type", e.kind.clone()));
                    attributes.push(KeyValue::new("sagaflow.retryable", e.retryable));
                    Status::error(format!("{}: {}", e.kind, e.message))
                }
            };
            (
                SpanId::from(ids::attempt_span_id(key, *attempt)),
                SpanId::from(ids::step_span_id(key, *first_attempt)),
                false,
                SpanKind::Client,
                format!("attempt {} {step}", run_word(*phase)),
                span_status,
            )
        }
    };
    SpanData {
        span_context: SpanContext::new(trace_id, span_id, flags, false, TraceState::NONE),
        parent_span_id: parent,
        parent_span_is_remote: remote_parent,
        span_kind: kind,
        name: Cow::Owned(name),
        start_time: at(work.started_ms),
        end_time: at(work.ended_ms.max(work.started_ms)),
        attributes,
        dropped_attributes_count: 0,
        events: SpanEvents::default(),
        links: SpanLinks::default(),
        status,
        instrumentation_scope: scope.clone(),
    }
}

/// "step" for an action's run, "compensate" for a compensation's.
fn run_word(phase: Phase) -> &'static str {
    match phase {
        Phase::Action => "step",
        Phase::Compensation => "compensate",
    }
}

/// The trace id, parent span id and flags of a valid `traceparent`.
fn parse_traceparent(traceparent: &str) -> Option<(TraceId, SpanId, TraceFlags)> {
    if !ids::is_valid(traceparent) {
        return None;
    }
    let trace = TraceId::from_hex(&traceparent[3..35]).ok()?;
    let parent = SpanId::from_hex(&traceparent[36..52]).ok()?;
    let flags = u8::from_str_radix(&traceparent[53..55], 16).ok()?;
    Some((trace, parent, TraceFlags::new(flags)))
}

/// Milliseconds since the Unix epoch as a time.
fn at(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}
