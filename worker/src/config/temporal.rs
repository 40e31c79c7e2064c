//! `[temporal]`: where the cluster is, how a saga's steps run on it, and
//! the worker's slots.

use super::raw::RawTemporal;
use super::settings::{StepMode, TemporalSettings};
use sagaflow_workflows::config::Diagnostics;
use sagaflow_workflows::duration::parse_duration_ms;
use toml::Spanned;

/// Workflow tasks one worker runs at once (the SDK's default).
pub const DEFAULT_WORKFLOW_TASK_SLOTS: usize = 100;
/// Activity tasks one worker runs at once: as many calls as the embedded
/// engine's `max_concurrent_activities`, so a 150 ms provider does not cap
/// a worker at the SDK's 100 slots (about 660 calls a second).
pub const DEFAULT_ACTIVITY_SLOTS: usize = 512;
/// Local activities one worker runs at once (same reasoning).
pub const DEFAULT_LOCAL_ACTIVITY_SLOTS: usize = 512;
/// Sagas whose state a worker keeps between workflow tasks (the SDK's
/// default); past it the least recently used are replayed from history.
pub const DEFAULT_WORKFLOW_CACHE: usize = 1_000;
/// How long the cluster may keep a worker's workflow tasks waiting before
/// the worker takes fewer new sagas: operator commands travel through the
/// same queues, and a second keeps their answers within two.
pub const DEFAULT_MAX_TASK_WAIT_MS: u64 = 1_000;
/// The most of any slot count or the cache.
const MAX_SLOTS: i64 = 100_000;

/// Checks `[temporal]` and resolves its defaults.
pub(super) fn temporal(d: &mut Diagnostics<'_>, raw: RawTemporal) -> TemporalSettings {
    let section = || Some("[temporal]".to_owned());
    let address = raw.address.get_ref();
    if address.contains("://") || !address.contains(':') {
        d.error(
            raw.address.span(),
            section(),
            format!(
                "address \"{address}\" is not host:port; write e.g. \"127.0.0.1:7233\" (no scheme)"
            ),
        );
    }
    if let Some(old) = &raw.local_activities {
        let instead = match old.get_ref().as_bool() {
            Some(false) => "steps = \"activities\"",
            _ => "steps = \"checkpointed\" (the default, safe around the pivot) or steps = \"local\" (fewer events; a crash can re-run the pivot)",
        };
        d.error(
            old.span(),
            section(),
            format!("local_activities was replaced by `steps`; remove it and write {instead}"),
        );
    }
    let steps = match raw.steps.as_ref().map(|s| (s.get_ref().as_str(), s.span())) {
        None => StepMode::Checkpointed,
        Some((name, span)) => StepMode::parse(name).unwrap_or_else(|| {
            d.error(
                span,
                section(),
                format!(
                    "steps is \"{name}\"; use \"checkpointed\" (the default), \"activities\" or \"local\""
                ),
            );
            StepMode::Checkpointed
        }),
    };
    let mut count = |value: &Option<Spanned<i64>>, key: &str, default: usize| -> usize {
        let Some(value) = value else {
            return default;
        };
        let n = *value.get_ref();
        if !(1..=MAX_SLOTS).contains(&n) {
            d.error(
                value.span(),
                section(),
                format!("{key} is {n}; use 1 to {MAX_SLOTS} (the default is {default})"),
            );
            return default;
        }
        n as usize
    };
    let workflow_task_slots = count(
        &raw.workflow_task_slots,
        "workflow_task_slots",
        DEFAULT_WORKFLOW_TASK_SLOTS,
    );
    let activity_slots = count(
        &raw.activity_slots,
        "activity_slots",
        DEFAULT_ACTIVITY_SLOTS,
    );
    let local_activity_slots = count(
        &raw.local_activity_slots,
        "local_activity_slots",
        DEFAULT_LOCAL_ACTIVITY_SLOTS,
    );
    let workflow_cache = count(
        &raw.workflow_cache,
        "workflow_cache",
        DEFAULT_WORKFLOW_CACHE,
    );
    let max_task_wait_ms = max_task_wait(d, raw.max_task_wait.as_ref());
    TemporalSettings {
        address: raw.address.into_inner(),
        namespace: raw.namespace,
        task_queue: raw.task_queue,
        steps,
        workflow_task_slots,
        activity_slots,
        local_activity_slots,
        workflow_cache,
        max_task_wait_ms,
    }
}

/// `max_task_wait`: a duration from 100 ms to 10 minutes, or "off".
fn max_task_wait(d: &mut Diagnostics<'_>, value: Option<&Spanned<String>>) -> Option<u64> {
    let Some(value) = value else {
        return Some(DEFAULT_MAX_TASK_WAIT_MS);
    };
    let text = value.get_ref().trim();
    if text == "off" {
        return None;
    }
    let problem = match parse_duration_ms(text) {
        Ok(ms) if (100..=600_000).contains(&ms) => return Some(ms),
        Ok(_) => format!(
            "max_task_wait is {text}; use \"100ms\" to \"10m\" (the default is \"1s\"), or \"off\" to limit intake by --max-live alone"
        ),
        Err(e) => format!("max_task_wait: {e}, or \"off\""),
    };
    d.error(value.span(), Some("[temporal]".to_owned()), problem);
    Some(DEFAULT_MAX_TASK_WAIT_MS)
}
