//! What a bulk request must be before anything is read or sent: an id
//! that names a file and nothing else, a rate the scheduler can keep.

use anyhow::{bail, Result};

/// Bulk commands a second, at least and at most (`--rate`).
const MIN_RATE: f64 = 0.01;
const MAX_RATE: f64 = 100_000.0;

/// A bulk id names a file in `DATA/bulk/`: letters, digits, - and _ only,
/// so no id is a path of its own (`/etc/x`, `../x`).
pub(super) fn bulk_id(bulk_id: &str) -> Result<()> {
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
pub(super) fn rate(rate: Option<f64>) -> Result<()> {
    match rate {
        Some(r) if !(MIN_RATE..=MAX_RATE).contains(&r) => bail!(
            "rate {r} is out of range: use {MIN_RATE} to {MAX_RATE} commands a second (or leave it out: as fast as the engine takes them)"
        ),
        _ => Ok(()),
    }
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
