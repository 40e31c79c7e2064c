//! `[breakers]`: one circuit breaker per dependency, each key checked.

use super::raw::{RawBreaker, RawBreakers};
use super::settings::BreakerSettingsByDependency;
use sagaflow_activities::breaker::BreakerSettings;
use sagaflow_workflows::config::Diagnostics;
use sagaflow_workflows::duration::parse_duration_ms;
use toml::Spanned;

/// Checks `[breakers]` and resolves each dependency's defaults.
pub(super) fn breakers(d: &mut Diagnostics<'_>, raw: RawBreakers) -> BreakerSettingsByDependency {
    let tables = [
        ("payment", raw.payment),
        ("stock", raw.stock),
        ("orders", raw.orders),
    ];
    let mut breakers = Vec::new();
    for (dependency, table) in tables {
        let s = breaker(d, dependency, &table);
        if raw.enabled && table.enabled.unwrap_or(true) {
            breakers.push((dependency.to_owned(), s));
        }
    }
    BreakerSettingsByDependency { breakers }
}

fn breaker(d: &mut Diagnostics<'_>, dependency: &str, table: &RawBreaker) -> BreakerSettings {
    let section = format!("[breakers.{dependency}]");
    let count = |d: &mut Diagnostics<'_>, key, value, range, what| {
        whole(d, &section, key, value, range, what)
    };
    let duration = |d: &mut Diagnostics<'_>, key, value, min_ms, advice| {
        duration(d, &section, key, value, min_ms, advice)
    };
    let mut s = BreakerSettings::default_for(dependency);
    if let Some(n) = count(
        d,
        "consecutive",
        &table.consecutive,
        0..=10_000,
        "failures in a row that open the breaker; 0 turns this rule off",
    ) {
        s.consecutive = n;
    }
    if let Some(n) = count(
        d,
        "failures",
        &table.failures,
        1..=10_000,
        "failures within the window that open the breaker",
    ) {
        s.failures = n;
    }
    if let Some(n) = count(
        d,
        "probes",
        &table.probes,
        1..=1_000,
        "calls let through at once while half-open",
    ) {
        s.probes = n;
    }
    if let Some(n) = count(
        d,
        "max_in_flight",
        &table.max_in_flight,
        0..=100_000,
        "calls in flight to the dependency from this worker; 0: no cap",
    ) {
        s.max_in_flight = n;
    }
    if let Some(n) = count(
        d,
        "burst",
        &table.burst,
        0..=100_000,
        "calls that go out after a quiet moment before the dependency answers one; 0: no limit",
    ) {
        s.burst = n;
    }
    if let Some(r) = &table.failure_rate {
        let rate = *r.get_ref();
        if rate > 0.0 && rate <= 1.0 {
            s.failure_rate = rate;
        } else {
            d.error(
                r.span(),
                Some(section.clone()),
                format!("failure_rate is {rate}; use a fraction above 0.0, at most 1.0 (0.5: half the calls in the window failed)"),
            );
        }
    }
    let at_least = "count failures over at least \"100ms\" (the default is \"10s\")";
    if let Some(ms) = duration(d, "window", &table.window, 100, at_least) {
        s.window_ms = ms;
    }
    let at_least = "stay open at least \"100ms\" (the default is \"5s\")";
    if let Some(ms) = duration(d, "open_for", &table.open_for, 100, at_least) {
        s.open_for_ms = ms;
    }
    // "0s" turns these two off.
    if let Some(ms) = duration(d, "slow_call", &table.slow_call, 0, "") {
        s.slow_call_ms = ms;
    }
    if let Some(ms) = duration(d, "ramp", &table.ramp, 0, "") {
        s.ramp_ms = ms;
    }
    if let Some(count) = &table.count {
        s.count = count.clone();
    }
    s
}

/// A whole-number key within `range`, or an error that says what it
/// means (`what`) and `None`.
fn whole(
    d: &mut Diagnostics<'_>,
    section: &str,
    key: &str,
    value: &Option<Spanned<i64>>,
    range: std::ops::RangeInclusive<i64>,
    what: &str,
) -> Option<u32> {
    let v = value.as_ref()?;
    let n = *v.get_ref();
    if range.contains(&n) {
        return u32::try_from(n).ok();
    }
    d.error(
        v.span(),
        Some(section.to_owned()),
        format!(
            "{key} is {n}; use {} to {} ({what})",
            range.start(),
            range.end()
        ),
    );
    None
}

/// A duration key, or an error (unreadable, or shorter than `min_ms`:
/// then `advice` says what to write).
fn duration(
    d: &mut Diagnostics<'_>,
    section: &str,
    key: &str,
    value: &Option<Spanned<String>>,
    min_ms: u64,
    advice: &str,
) -> Option<u64> {
    let v = value.as_ref()?;
    let ms = d.duration(v, &Some(section.to_owned()), key);
    if parse_duration_ms(v.get_ref()).is_ok_and(|ms| ms < min_ms) {
        d.error(
            v.span(),
            Some(section.to_owned()),
            format!("{key} is {}; {advice}", v.get_ref().trim()),
        );
    }
    Some(ms)
}
