//! Saga definitions as written in `sagas.toml` and their validation.

use super::diagnostics::{parse_toml, ConfigErrors, Diagnostics};
use crate::duration::parse_duration_ms;
use crate::model::{RetryPolicy, SagaDef, StepDef};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::Path;
use toml::Spanned;

/// Attempt timeout of a step that sets none.
const DEFAULT_TIMEOUT_MS: u64 = 10_000;

/// The `[sagas.NAME]` tables of a `sagas.toml` as written, with the spans
/// their messages need; [`SagaTables::validate`] makes definitions of them.
#[derive(Deserialize, Default)]
#[serde(transparent)]
pub struct SagaTables(BTreeMap<String, Spanned<RawSaga>>);

impl SagaTables {
    /// Validates every saga, recording each problem in `diagnostics`;
    /// `registered` lists every activity name the worker can run. What comes
    /// back is only meaningful when `diagnostics` finishes without errors.
    pub fn validate(
        self,
        diagnostics: &mut Diagnostics<'_>,
        registered: &[&str],
    ) -> BTreeMap<String, SagaDef> {
        let mut v = SagaValidator {
            d: diagnostics,
            registered,
        };
        self.0
            .into_iter()
            .map(|(name, saga)| {
                let def = v.saga(&name, saga);
                (name, def)
            })
            .collect()
    }
}

/// Parses and validates only the saga tables of config text (every other
/// table is the worker's and is not looked at here).
pub fn parse_sagas(
    text: &str,
    file: &Path,
    registered: &[&str],
) -> Result<BTreeMap<String, SagaDef>, ConfigErrors> {
    #[derive(Deserialize)]
    struct SagasOnly {
        #[serde(default)]
        sagas: SagaTables,
    }
    let raw: SagasOnly = parse_toml(text, file)?;
    let mut diagnostics = Diagnostics::new(text, file);
    let sagas = raw.sagas.validate(&mut diagnostics, registered);
    diagnostics.finish().map(|()| sagas)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSaga {
    pivot: Option<Spanned<String>>,
    compensation_retry: Option<Spanned<RawRetry>>,
    #[serde(default)]
    steps: Vec<Spanned<RawStep>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStep {
    name: Spanned<String>,
    action: Spanned<String>,
    compensation: Option<Spanned<String>>,
    timeout: Option<Spanned<String>>,
    compensation_timeout: Option<Spanned<String>>,
    max_wait: Option<Spanned<String>>,
    retry: Option<Spanned<RawRetry>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRetry {
    initial_interval: Option<Spanned<String>>,
    backoff_coefficient: Option<Spanned<f64>>,
    max_interval: Option<Spanned<String>>,
    max_attempts: Option<Spanned<i64>>,
    #[serde(default)]
    non_retryable: Vec<String>,
    jitter: Option<Spanned<f64>>,
}

struct SagaValidator<'d, 'a> {
    d: &'d mut Diagnostics<'a>,
    registered: &'d [&'d str],
}

impl SagaValidator<'_, '_> {
    fn saga(&mut self, name: &str, saga: Spanned<RawSaga>) -> SagaDef {
        let saga_span = saga.span();
        let saga = saga.into_inner();
        let saga_place = Some(format!("saga {name}"));
        if saga.steps.is_empty() {
            self.d.error(
                saga_span.clone(),
                saga_place.clone(),
                "has no steps; add [[sagas.NAME.steps]] tables with name and action".into(),
            );
        }
        let compensation_retry = match &saga.compensation_retry {
            Some(r) => self.retry(r, &saga_place),
            None => RetryPolicy {
                max_attempts: 10,
                ..RetryPolicy::default()
            },
        };
        let mut steps: Vec<StepDef> = Vec::new();
        let mut step_spans = Vec::new();
        for step in &saga.steps {
            let step_name = step.get_ref().name.get_ref().clone();
            let place = Some(format!("saga {name}, step {step_name}"));
            if let Some(first) = steps.iter().position(|s| s.name == step_name) {
                let first_line = self.d.line_of(step_spans[first]);
                self.d.error(
                    step.get_ref().name.span(),
                    place.clone(),
                    format!(
                        "duplicate step name (first defined on line {first_line}); step names must be unique within a saga, rename one"
                    ),
                );
            }
            let raw = step.get_ref();
            self.activity(&raw.action, &place, "action");
            if let Some(c) = &raw.compensation {
                self.activity(c, &place, "compensation");
            }
            let timeout_ms = raw.timeout.as_ref().map_or(DEFAULT_TIMEOUT_MS, |t| {
                self.d.duration(t, &place, "timeout")
            });
            if timeout_ms == 0 {
                if let Some(t) = &raw.timeout {
                    if parse_duration_ms(t.get_ref()) == Ok(0) {
                        self.d.error(
                            t.span(),
                            place.clone(),
                            "timeout is 0; give each attempt some time, e.g. \"5s\"".into(),
                        );
                    }
                }
            }
            let compensation_timeout_ms = match (&raw.compensation_timeout, &raw.compensation) {
                (Some(t), None) => {
                    self.d.error(
                        t.span(),
                        place.clone(),
                        "compensation_timeout is set but the step has no compensation; remove it or add compensation = \"ACTIVITY\"".into(),
                    );
                    None
                }
                (Some(t), Some(_)) => match self.d.duration(t, &place, "compensation_timeout") {
                    0 => {
                        if parse_duration_ms(t.get_ref()) == Ok(0) {
                            self.d.error(
                                t.span(),
                                place.clone(),
                                "compensation_timeout is 0; give each attempt some time, e.g. \"5s\"".into(),
                            );
                        }
                        None
                    }
                    ms => Some(ms),
                },
                (None, _) => None,
            };
            // "0" is allowed: the step never waits, an open breaker counts
            // as a failed attempt at once.
            let max_wait_ms = raw
                .max_wait
                .as_ref()
                .map(|t| self.d.duration(t, &place, "max_wait"));
            let retry = match &raw.retry {
                Some(r) => self.retry(r, &place),
                None => RetryPolicy::default(),
            };
            step_spans.push(raw.name.span().start);
            steps.push(StepDef {
                name: step_name,
                action: raw.action.get_ref().clone(),
                compensation: raw.compensation.as_ref().map(|c| c.get_ref().clone()),
                timeout_ms,
                compensation_timeout_ms,
                retry,
                max_wait_ms,
                settle_ms: None,
            });
        }
        let pivot_given = saga.pivot.is_some();
        let pivot = match &saga.pivot {
            None => None,
            Some(p) => match steps.iter().position(|s| &s.name == p.get_ref()) {
                Some(i) => Some(i),
                None => {
                    let names: Vec<&str> = steps.iter().map(|s| s.name.as_str()).collect();
                    self.d.error(
                        p.span(),
                        saga_place.clone(),
                        format!(
                            "pivot \"{}\" is not a step of this saga; use one of: {}",
                            p.get_ref(),
                            names.join(", ")
                        ),
                    );
                    None
                }
            },
        };
        for (i, (step, raw)) in steps.iter().zip(&saga.steps).enumerate() {
            let place = Some(format!("saga {name}, step {}", step.name));
            let raw = raw.get_ref();
            match (pivot, &raw.compensation) {
                (Some(p), None) if i < p => self.d.error(
                    raw.name.span(),
                    place,
                    format!(
                        "comes before the pivot ({}) but has no compensation; add compensation = \"ACTIVITY\" so it can be undone, or move the pivot",
                        steps[p].name
                    ),
                ),
                (Some(p), Some(c)) if i >= p => self.d.error(
                    c.span(),
                    place,
                    format!(
                        "has a compensation but {} the pivot ({}), where the saga only goes forward; remove the compensation or move the pivot later",
                        if i == p { "is" } else { "comes after" },
                        steps[p].name
                    ),
                ),
                (None, None) if !pivot_given => self.d.error(
                    raw.name.span(),
                    place,
                    "has no compensation and the saga has no pivot; add compensation = \"ACTIVITY\", or set pivot = \"STEP\" on the saga to mark the point of no return".into(),
                ),
                _ => {}
            }
        }
        SagaDef {
            name: name.to_owned(),
            steps,
            pivot,
            compensation_retry,
        }
    }

    fn activity(&mut self, name: &Spanned<String>, place: &Option<String>, key: &str) {
        if !self.registered.contains(&name.get_ref().as_str()) {
            let suggestion = closest(name.get_ref(), self.registered)
                .map(|s| format!("did you mean {s}? "))
                .unwrap_or_default();
            self.d.error(
                name.span(),
                place.clone(),
                format!(
                    "{key} {} is not a registered activity; {suggestion}registered: {}",
                    name.get_ref(),
                    self.registered.join(", ")
                ),
            );
        }
    }

    fn retry(&mut self, raw: &Spanned<RawRetry>, place: &Option<String>) -> RetryPolicy {
        let d = RetryPolicy::default();
        let r = raw.get_ref();
        let initial_interval_ms = r
            .initial_interval
            .as_ref()
            .map_or(d.initial_interval_ms, |v| {
                self.d.duration(v, place, "retry.initial_interval")
            });
        let max_interval_ms = r.max_interval.as_ref().map_or(d.max_interval_ms, |v| {
            self.d.duration(v, place, "retry.max_interval")
        });
        if max_interval_ms < initial_interval_ms {
            self.d.error(
                raw.span(),
                place.clone(),
                format!(
                    "retry.max_interval ({max_interval_ms}ms) is shorter than retry.initial_interval ({initial_interval_ms}ms); raise max_interval"
                ),
            );
        }
        let backoff_coefficient = match &r.backoff_coefficient {
            Some(c) if *c.get_ref() < 1.0 => {
                self.d.error(
                    c.span(),
                    place.clone(),
                    format!(
                        "retry.backoff_coefficient is {}; use 1.0 or more (1.0 keeps the delay constant)",
                        c.get_ref()
                    ),
                );
                1.0
            }
            Some(c) if *c.get_ref() > 100.0 => {
                self.d.error(
                    c.span(),
                    place.clone(),
                    format!(
                        "retry.backoff_coefficient is {}; use at most 100 (each delay is the last times this, up to retry.max_interval)",
                        c.get_ref()
                    ),
                );
                1.0
            }
            Some(c) => *c.get_ref(),
            None => d.backoff_coefficient,
        };
        let max_attempts = match &r.max_attempts {
            Some(m) if *m.get_ref() < 0 || *m.get_ref() > i64::from(u32::MAX) => {
                self.d.error(
                    m.span(),
                    place.clone(),
                    format!(
                        "retry.max_attempts is {}; use 1 or more, or 0 for no limit",
                        m.get_ref()
                    ),
                );
                1
            }
            Some(m) => *m.get_ref() as u32,
            None => d.max_attempts,
        };
        let jitter = match &r.jitter {
            Some(j) if !(0.0..1.0).contains(j.get_ref()) => {
                self.d.error(
                    j.span(),
                    place.clone(),
                    format!(
                        "retry.jitter is {}; use a fraction from 0.0 up to (not including) 1.0",
                        j.get_ref()
                    ),
                );
                0.0
            }
            Some(j) => *j.get_ref(),
            None => d.jitter,
        };
        RetryPolicy {
            initial_interval_ms,
            backoff_coefficient,
            max_interval_ms,
            max_attempts,
            non_retryable: r.non_retryable.clone(),
            jitter,
        }
    }
}

/// The registered name closest to a misspelt one, if any is close.
fn closest<'a>(name: &str, candidates: &[&'a str]) -> Option<&'a str> {
    candidates
        .iter()
        .map(|c| (edit_distance(name, c), *c))
        .filter(|(d, _)| *d <= 3)
        .min()
        .map(|(_, c)| c)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur.push((prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}
