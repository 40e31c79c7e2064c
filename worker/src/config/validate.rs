//! The deployment profile's checks: every value in range, every setting a
//! chosen adapter needs present. Saga definitions are validated by
//! `sagaflow_workflows::config` through the same [`Diagnostics`].

use super::raw::{RawConfig, RawEmbedded, RawPayment, RawServiceBus, RawTelemetry};
use super::settings::{
    AdminSettings, CosmosSettings, EmbeddedSettings, HttpVersion, OrdersKind, OtlpProtocol,
    PaymentKind, PaymentSettings, Profile, RedisSettings, SandboxSettings, ServiceBusSettings,
    StockSettings, TelemetrySettings, DEFAULT_AUDIT_RETENTION_MS, DEFAULT_PAYMENT_CONNECTIONS,
    DEFAULT_RETENTION_MS,
};
use super::Config;
use sagaflow_workflows::config::Diagnostics;
use sagaflow_workflows::duration::{format_duration_ms, parse_duration_ms};
use toml::Spanned;

/// Validates the whole file: the profile here, the sagas in `workflows`.
pub(super) fn config(d: &mut Diagnostics<'_>, raw: RawConfig, registered: &[&str]) -> Config {
    let none = None;
    let concurrency = *raw.embedded.max_concurrent_activities.get_ref();
    if !(1..=MAX_CONCURRENCY).contains(&concurrency) {
        d.error(
            raw.embedded.max_concurrent_activities.span(),
            Some("[embedded]".into()),
            format!("max_concurrent_activities is {concurrency}; use 1 to {MAX_CONCURRENCY}"),
        );
    }
    let (retention_ms, audit_retention_ms) = retention(d, &raw.embedded);
    let request_timeout_ms = raw
        .payment
        .request_timeout
        .as_ref()
        .map_or(5_000, |v| d.duration(v, &none, "request_timeout"));
    at_least(
        d,
        raw.payment.request_timeout.as_ref(),
        "[payment]",
        "request_timeout",
        1,
        "give each request some time, e.g. \"5s\"",
    );
    let search_lag_ms = raw
        .payment
        .search_lag
        .as_ref()
        .map_or(DEFAULT_SEARCH_LAG_MS, |v| {
            d.duration(v, &none, "search_lag")
        });
    let (http, connections) = payment_transport(d, &raw.payment);
    if raw.profile.payment == PaymentKind::Http && raw.payment.base_url.is_empty() {
        d.error(
            0..0,
            Some("[payment]".into()),
            "profile.payment is \"http\" but payment.base_url is empty; set base_url to the provider's URL or use payment = \"sandbox\"".into(),
        );
    }
    let reservation_ttl_ms = raw
        .stock
        .reservation_ttl
        .as_ref()
        .map_or(900_000, |v| d.duration(v, &none, "reservation_ttl"));
    at_least(
        d,
        raw.stock.reservation_ttl.as_ref(),
        "[stock]",
        "reservation_ttl",
        1_000,
        "a reservation must outlive the steps before the capture; use at least \"1s\" (the default is \"15m\")",
    );
    let error_rate = raw
        .sandbox
        .error_rate
        .as_ref()
        .map_or(0.0, |r| *r.get_ref());
    if !(0.0..=1.0).contains(&error_rate) {
        d.error(
            raw.sandbox.error_rate.as_ref().map_or(0..0, |r| r.span()),
            Some("[sandbox]".into()),
            format!("error_rate is {error_rate}; use a fraction between 0.0 and 1.0"),
        );
    }
    let latency_ms = raw
        .sandbox
        .latency
        .as_ref()
        .map_or(0, |v| d.duration(v, &none, "latency"));

    let temporal = super::temporal::temporal(d, raw.temporal);
    if raw.profile.orders == OrdersKind::Cosmos && raw.cosmos.region.trim().is_empty() {
        d.error(
            0..0,
            Some("[cosmos]".into()),
            "profile.orders is \"cosmos\" but cosmos.region is empty; set it to the Azure region the worker runs in, e.g. region = \"East US\"".into(),
        );
    }
    let servicebus = servicebus(d, raw.servicebus);
    let admin = admin(d, raw.admin);
    let breakers = super::breakers::breakers(d, raw.breakers);
    let telemetry = telemetry(d, raw.telemetry);
    let mut sagas = raw.sagas.validate(d, registered);
    if raw.profile.payment == PaymentKind::Http {
        voids_settle_for_the_search_lag(&mut sagas, search_lag_ms);
    }
    Config {
        file: d.file().to_owned(),
        profile: Profile {
            engine: raw.profile.engine,
            trigger: raw.profile.trigger,
            stock: raw.profile.stock,
            orders: raw.profile.orders,
            payment: raw.profile.payment,
            data_dir: raw.profile.data_dir,
        },
        embedded: EmbeddedSettings {
            group_commit: raw.embedded.group_commit,
            max_concurrent_activities: concurrency.max(1) as usize,
            retention_ms,
            audit_retention_ms,
        },
        temporal,
        servicebus,
        redis: RedisSettings {
            url_env: raw.redis.url_env,
            key_prefix: raw.redis.key_prefix,
        },
        cosmos: CosmosSettings {
            endpoint_env: raw.cosmos.endpoint_env,
            key_env: raw.cosmos.key_env,
            database: raw.cosmos.database,
            container: raw.cosmos.container,
            region: raw.cosmos.region,
            throttle_retries: raw.cosmos.throttle_retries,
        },
        payment: PaymentSettings {
            base_url: raw.payment.base_url,
            api_key_env: raw.payment.api_key_env,
            currency: raw.payment.currency,
            request_timeout_ms,
            search_lag_ms,
            http,
            connections,
        },
        stock: StockSettings { reservation_ttl_ms },
        sandbox: SandboxSettings {
            port: raw.sandbox.port,
            error_rate,
            latency_ms,
        },
        admin,
        breakers,
        telemetry,
        sagas,
    }
}

/// `[payment] http` and `connections`: the HTTP version spoken to the
/// provider and how many HTTP/2 connections carry its calls.
fn payment_transport(d: &mut Diagnostics<'_>, raw: &RawPayment) -> (HttpVersion, usize) {
    let place = Some("[payment]".to_owned());
    let http = match raw.http.as_ref().map(|h| (h.get_ref().trim(), h.span())) {
        None | Some(("auto", _)) => HttpVersion::Auto,
        Some(("http1", _)) => HttpVersion::Http1,
        Some(("http2", _)) => HttpVersion::Http2,
        Some((other, span)) => {
            d.error(
                span,
                place.clone(),
                format!("http is \"{other}\"; write \"auto\" (HTTP/2 when the provider offers it over https), \"http1\" or \"http2\""),
            );
            HttpVersion::Auto
        }
    };
    let connections = match &raw.connections {
        None => DEFAULT_PAYMENT_CONNECTIONS,
        Some(n) if (1..=MAX_PAYMENT_CONNECTIONS).contains(n.get_ref()) => *n.get_ref() as usize,
        Some(n) => {
            d.error(
                n.span(),
                place,
                format!(
                    "connections is {}; use 1 to {MAX_PAYMENT_CONNECTIONS} (HTTP/2 connections to the provider; the default is {DEFAULT_PAYMENT_CONNECTIONS})",
                    n.get_ref()
                ),
            );
            DEFAULT_PAYMENT_CONNECTIONS
        }
    };
    (http, connections)
}

/// More HTTP/2 connections than this is HTTP/1.1 with extra steps.
const MAX_PAYMENT_CONNECTIONS: i64 = 256;

/// `[telemetry]`: `endpoint` is an http(s) URL of an OTLP/HTTP receiver
/// (a collector's port 4318, say); the traces path is added unless it is
/// there. gRPC is not built in, and saying so beats a silent nothing.
fn telemetry(d: &mut Diagnostics<'_>, raw: RawTelemetry) -> TelemetrySettings {
    let place = Some("[telemetry]".to_owned());
    let protocol = match raw
        .protocol
        .as_ref()
        .map(|p| (p.get_ref().trim(), p.span()))
    {
        None | Some(("http/protobuf", _)) => OtlpProtocol::HttpProtobuf,
        Some(("http/json", _)) => OtlpProtocol::HttpJson,
        Some(("grpc", span)) => {
            d.error(
                span,
                place.clone(),
                "protocol \"grpc\" is not supported; point endpoint at the collector's OTLP/HTTP port (4318) and write protocol = \"http/protobuf\"".into(),
            );
            OtlpProtocol::HttpProtobuf
        }
        Some((other, span)) => {
            d.error(
                span,
                place.clone(),
                format!("protocol \"{other}\" is not one of \"http/protobuf\" or \"http/json\""),
            );
            OtlpProtocol::HttpProtobuf
        }
    };
    let traces_url = raw.endpoint.as_ref().and_then(|e| {
        let text = e.get_ref().trim();
        if text.is_empty() {
            return None;
        }
        match url::Url::parse(text) {
            Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => {
                let base = text.trim_end_matches('/');
                Some(if base.ends_with("/v1/traces") {
                    base.to_owned()
                } else {
                    format!("{base}/v1/traces")
                })
            }
            _ => {
                d.error(
                    e.span(),
                    place.clone(),
                    format!("endpoint \"{text}\" is not an http(s) URL; write the OTLP/HTTP receiver's address, e.g. \"http://otel-collector:4318\", or leave it empty for no export"),
                );
                None
            }
        }
    });
    let service_name = match &raw.service_name {
        Some(name) if name.get_ref().trim().is_empty() => {
            d.error(
                name.span(),
                place,
                "service_name is empty; name the service its spans belong to, e.g. \"sagaflow\""
                    .into(),
            );
            String::new()
        }
        Some(name) => name.get_ref().trim().to_owned(),
        None => "sagaflow".to_owned(),
    };
    let headers_env = Some(raw.headers_env.trim().to_owned()).filter(|h| !h.is_empty());
    TelemetrySettings {
        traces_url,
        protocol,
        service_name,
        headers_env,
    }
}

fn servicebus(d: &mut Diagnostics<'_>, raw: RawServiceBus) -> ServiceBusSettings {
    let place = Some("[servicebus]".to_owned());
    let queue = raw.queue.get_ref().trim().to_owned();
    if queue.is_empty() {
        d.error(
            raw.queue.span(),
            place.clone(),
            "queue is empty; name the queue orders arrive on, e.g. \"orders\"".into(),
        );
    }
    let prefetch = *raw.prefetch.get_ref();
    if !(1..=5000).contains(&prefetch) {
        d.error(
            raw.prefetch.span(),
            place.clone(),
            format!("prefetch is {prefetch}; use 1 to 5000 (messages the broker may push ahead)"),
        );
    }
    let max_bytes = *raw.max_message_bytes.get_ref();
    if !(1024..=100 * 1024 * 1024).contains(&max_bytes) {
        d.error(
            raw.max_message_bytes.span(),
            place,
            format!("max_message_bytes is {max_bytes}; use 1024 to 104857600 (Service Bus standard allows 262144)"),
        );
    }
    let dead_letter_queue = if raw.dead_letter_queue.is_empty() {
        format!("{queue}.dlq")
    } else {
        raw.dead_letter_queue
    };
    ServiceBusSettings {
        connection_env: raw.connection_env,
        queue,
        dead_letter_queue,
        prefetch: prefetch.clamp(1, 5000) as u32,
        max_message_bytes: max_bytes.max(1024) as u64,
    }
}

/// A void that looks for a lost authorization concludes "nothing to
/// void" only once the provider's search has had `search_lag_ms` to show
/// it: its compensation keeps trying for that long after the authorize's
/// outcome became unknown, through every retryable failure, whatever its
/// attempt count (`StepDef::settle_ms`). Counting attempts instead would
/// let attempts that end early (a 503 answers at once) run out first.
fn voids_settle_for_the_search_lag(
    sagas: &mut std::collections::BTreeMap<String, sagaflow_workflows::SagaDef>,
    search_lag_ms: u64,
) {
    for saga in sagas.values_mut() {
        for step in &mut saga.steps {
            if step.compensation.as_deref() == Some("payment.void") && search_lag_ms > 0 {
                step.settle_ms = Some(search_lag_ms);
            }
        }
    }
}

/// How long a provider's search may trail its writes when `[payment]
/// search_lag` is not set: Stripe documents under a minute.
const DEFAULT_SEARCH_LAG_MS: u64 = 60_000;

/// Activities at once, at most: beyond this a worker only queues more
/// requests at its dependencies.
const MAX_CONCURRENCY: i64 = 100_000;

/// Records a duration key that was written, reads well, and is shorter
/// than `min_ms`.
/// `[admin]`: `bind` is `host:port` (an IP address, so that what is
/// loopback is never a question of name resolution) or "off".
fn admin(d: &mut Diagnostics<'_>, raw: super::raw::RawAdmin) -> AdminSettings {
    let span = raw.bind.as_ref().map_or(0..0, |b| b.span());
    let text = raw
        .bind
        .as_ref()
        .map_or(super::settings::DEFAULT_ADMIN_BIND, |b| b.get_ref().trim());
    let bind = if text == "off" {
        None
    } else {
        match text.parse::<std::net::SocketAddr>() {
            Ok(addr) => Some(addr),
            Err(_) => {
                d.error(
                    span,
                    Some("[admin]".into()),
                    format!(
                        "bind \"{text}\" is not an IP address and port; write e.g. \"127.0.0.1:7070\" (loopback), \"0.0.0.0:7070\" (every interface, needs the token), or \"off\""
                    ),
                );
                None
            }
        }
    };
    if raw.token_env.trim().is_empty() {
        d.error(
            0..0,
            Some("[admin]".into()),
            "token_env is empty; name the environment variable that holds the admin token, e.g. token_env = \"SAGAFLOW_ADMIN_TOKEN\"".into(),
        );
    }
    AdminSettings {
        bind,
        bind_explicit: raw.bind.is_some(),
        token_env: raw.token_env,
    }
}

/// `[embedded] retention` and `audit_retention`: a duration of at least a
/// second (up to 10 years, beyond the 30-day limit of other keys) or
/// "off"; the audit is kept at least as long as the sagas it speaks of.
fn retention(d: &mut Diagnostics<'_>, raw: &RawEmbedded) -> (Option<u64>, Option<u64>) {
    const MAX_MS: u64 = 3_650 * 86_400_000;
    let mut read = |value: &Option<Spanned<String>>, key: &str, default: u64| -> Option<u64> {
        let Some(value) = value else {
            return Some(default);
        };
        let text = value.get_ref().trim();
        if text == "off" {
            return None;
        }
        let problem = match parse_duration_ms(text) {
            Ok(ms) if (1_000..=MAX_MS).contains(&ms) => return Some(ms),
            Ok(_) => format!("{key} is {text}; use at least \"1s\" and at most \"3650d\", or \"off\" to keep everything"),
            Err(e) => format!("{key}: {e}, or \"off\" to keep everything"),
        };
        d.error(value.span(), Some("[embedded]".into()), problem);
        Some(default)
    };
    let sagas = read(&raw.retention, "retention", DEFAULT_RETENTION_MS);
    let audit = read(
        &raw.audit_retention,
        "audit_retention",
        DEFAULT_AUDIT_RETENTION_MS,
    );
    let shorter = match (sagas, audit) {
        (None, Some(_)) => true,
        (Some(s), Some(a)) => a < s,
        _ => false,
    };
    if shorter {
        let span = raw
            .audit_retention
            .as_ref()
            .or(raw.retention.as_ref())
            .map_or(0..0, |v| v.span());
        d.error(
            span,
            Some("[embedded]".into()),
            format!(
                "audit_retention ({}) is shorter than retention ({}): the audit would forget commands on sagas the journal still holds; make audit_retention at least as long",
                audit.map_or("off".into(), format_duration_ms),
                sagas.map_or("off".into(), format_duration_ms),
            ),
        );
    }
    (sagas, audit)
}

fn at_least(
    d: &mut Diagnostics<'_>,
    value: Option<&Spanned<String>>,
    section: &str,
    key: &str,
    min_ms: u64,
    advice: &str,
) {
    let Some(value) = value else { return };
    if let Ok(ms) = parse_duration_ms(value.get_ref()) {
        if ms < min_ms {
            d.error(
                value.span(),
                Some(section.into()),
                format!("{key} is {}; {advice}", value.get_ref().trim()),
            );
        }
    }
}
