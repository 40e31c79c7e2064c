//! What a bulk request must be before anything is read or sent: an id
//! that names a file and nothing else, a rate the scheduler can keep.

use crate::engine::filter::Target;
use anyhow::{bail, Result};
use std::collections::BTreeSet;

/// Sagas a bulk run commands without `confirm_targets`: a filter that
/// selects more than this is confirmed with the number it selects.
pub const MAX_TARGETS: usize = 1_000;

/// Bulk commands a second, at least and at most (`--rate`).
const MIN_RATE: f64 = 0.01;
const MAX_RATE: f64 = 100_000.0;

/// A bulk id names a file in `DATA/bulk/`: letters, digits, - and _ only,
/// so no id is a path of its own (`/etc/x`, `../x`).
pub(crate) fn bulk_id(bulk_id: &str) -> Result<()> {
    if bulk_id.is_empty()
        || bulk_id.len() > 100
        || !bulk_id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        bail!("bulk id {bulk_id:?}: use 1 to 100 letters, digits, - and _ (it names a file)");
    }
    Ok(())
}

/// A rate the run's schedule can be computed from (a tiny one would make
/// the wait before a command overflow a `Duration`).
pub(crate) fn rate(rate: Option<f64>) -> Result<()> {
    match rate {
        Some(r) if !(MIN_RATE..=MAX_RATE).contains(&r) => bail!(
            "rate {r:?} is out of range: use {MIN_RATE} to {MAX_RATE} commands a second (or leave it out: as fast as the engine takes them)"
        ),
        _ => Ok(()),
    }
}

/// The ids in `path`: a dry run's `--json` output (one saga per line,
/// its `id`) or one id per line.
pub(crate) fn read_ids(path: &std::path::Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("cannot read the ids in {}: {e}", path.display()))?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|l| match serde_json::from_str::<serde_json::Value>(l) {
            Ok(v) if v["id"].is_string() => v["id"].as_str().unwrap_or_default().to_owned(),
            _ => l.to_owned(),
        })
        .collect())
}

/// Refuses a run larger than [`MAX_TARGETS`] unless `confirmed` is its
/// size.
pub(crate) fn size(n: usize, confirmed: Option<usize>) -> Result<()> {
    match confirmed {
        _ if n <= MAX_TARGETS => Ok(()),
        Some(c) if c == n => Ok(()),
        Some(c) => bail!(
            "this run would command {n} sagas, and {c} were confirmed: look at the dry run again and confirm {n} (--confirm-targets {n}, or the API's confirm_targets)"
        ),
        None => bail!(
            "this run would command {n} sagas, more than {MAX_TARGETS}: check the dry run, then confirm the number with --confirm-targets {n} (the API's confirm_targets)"
        ),
    }
}

/// `found` (what the filter selects now) kept to the dry run's `ids`, in
/// `found`'s order; the ids that no longer match, with why. Without ids,
/// everything found.
pub(crate) fn only_listed(
    found: Vec<Target>,
    ids: Option<&[String]>,
) -> (Vec<Target>, Vec<(String, String)>) {
    let Some(ids) = ids else {
        return (found, Vec::new());
    };
    let listed: BTreeSet<&str> = ids.iter().map(String::as_str).collect();
    let matching: BTreeSet<&str> = found.iter().map(|t| t.id.as_str()).collect();
    let skipped = ids
        .iter()
        .filter(|id| !matching.contains(id.as_str()))
        .map(|id| {
            (
                id.clone(),
                "no longer matches the filter: not commanded".to_owned(),
            )
        })
        .collect();
    let kept = found
        .into_iter()
        .filter(|t| listed.contains(t.id.as_str()))
        .collect();
    (kept, skipped)
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_bulk_id_is_a_file_name_and_nothing_more() {
        for good in ["b1796000000000", "sale-7_retry"] {
            assert!(super::bulk_id(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "a/b",
            "a.json",
            "ö",
            &"a".repeat(101),
        ] {
            let err = super::bulk_id(bad).unwrap_err().to_string();
            assert!(err.contains("it names a file"), "{bad}: {err}");
        }
    }

    #[test]
    fn a_run_acts_on_the_dry_runs_sagas_that_still_match_and_no_others() {
        let found = ["a", "b", "new"].map(super::Target::planned).to_vec();
        let ids = vec!["b".to_owned(), "a".to_owned(), "gone".to_owned()];
        let (kept, skipped) = super::only_listed(found.clone(), Some(&ids));
        let kept: Vec<&str> = kept.iter().map(|t| t.id.as_str()).collect();
        assert_eq!(kept, ["a", "b"], "the new match is not acted on");
        assert_eq!(skipped.len(), 1);
        assert_eq!(skipped[0].0, "gone");
        assert_eq!(super::only_listed(found, None).0.len(), 3);
    }

    #[test]
    fn a_large_run_needs_its_size_confirmed() {
        assert!(super::size(super::MAX_TARGETS, None).is_ok());
        let err = super::size(1_500, None).unwrap_err().to_string();
        assert!(err.contains("--confirm-targets 1500"), "{err}");
        assert!(super::size(1_500, Some(1_499)).is_err());
        assert!(super::size(1_500, Some(1_500)).is_ok());
    }

    #[test]
    fn a_rate_is_bounded_and_finite() {
        for good in [None, Some(0.01), Some(5.0), Some(100_000.0)] {
            assert!(super::rate(good).is_ok(), "{good:?}");
        }
        for bad in [1e-300, 0.0, -1.0, f64::NAN, f64::INFINITY, 1e9] {
            let err = super::rate(Some(bad)).unwrap_err().to_string();
            assert!(err.contains("out of range"), "{bad}: {err}");
        }
    }
}
