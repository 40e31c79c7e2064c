//! The audit: every operator command (applied or refused) and every
//! `reconcile --fix` repair, oldest first, on either engine.

use super::source::{open_journal, Source};
use crate::engine::embedded::operator;
use crate::engine::temporal::client::TemporalClient;
use crate::engine::view::AuditRow;
use anyhow::{bail, Context, Result};
use std::path::Path;

/// Operator commands since `since_ms`, oldest first, on either engine;
/// with `data`, `reconcile --fix`'s repairs recorded there too.
pub(crate) fn audit_rows(
    source: &Source,
    data: Option<&Path>,
    since_ms: u64,
    saga: Option<&str>,
    limit: usize,
) -> Result<Vec<AuditRow>> {
    // `reconcile --fix`'s repairs, recorded in the data directory.
    let repairs = match data {
        Some(data) => {
            crate::reconcile::repair::audited(data, since_ms, saga).with_context(|| {
                format!(
                    "cannot read {}",
                    crate::reconcile::repair::audit_path(data).display()
                )
            })?
        }
        None => Vec::new(),
    };
    let engine_rows = match source {
        Source::Journal(data) => Ok(operator::audit(
            &open_journal(data)?,
            since_ms,
            saga,
            limit,
        )?),
        Source::Temporal(settings) => crate::runtime::block_on(async {
            TemporalClient::connect(settings)
                .await?
                .audit(since_ms, saga, limit)
                .await
        })?
        .map_err(anyhow::Error::from),
        // The worker behind the admin API adds its own repairs.
        Source::Admin(client) => return client.audit(since_ms, saga, limit),
    };
    let mut rows = match engine_rows {
        Ok(rows) => rows,
        // A saga the cluster does not know (an orphan reservation's id)
        // can still have repairs: they are its whole audit.
        Err(_) if saga.is_some() && !repairs.is_empty() => Vec::new(),
        Err(e) => return Err(e),
    };
    if !repairs.is_empty() {
        rows.extend(repairs);
        rows.sort_by_key(|r| r.at_ms);
        rows.truncate(limit);
    }
    Ok(rows)
}

/// A time as RFC 3339 UTC with milliseconds.
pub fn rfc3339(ms: u64) -> String {
    chrono::DateTime::from_timestamp_millis(ms as i64)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_else(|| ms.to_string())
}

/// `--since`: an RFC 3339 time, or an age before `now_ms` (`15m`, `2h`, `7d`).
pub fn parse_since(s: &str, now_ms: u64) -> Result<u64> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Ok(t.timestamp_millis().max(0) as u64);
    }
    let (digits, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = digits.parse().ok().filter(|_| !digits.is_empty()).with_context(|| {
        format!("--since {s:?} is neither an RFC 3339 time (2026-11-30T18:00:00Z) nor an age (15m, 2h, 7d)")
    })?;
    let unit_ms = match unit {
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => bail!("--since {s:?}: the age's unit must be s, m, h or d (e.g. 15m)"),
    };
    Ok(now_ms.saturating_sub(n.saturating_mul(unit_ms)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_takes_a_time_or_an_age() {
        assert_eq!(
            parse_since("2026-11-30T18:00:00Z", 0).unwrap(),
            1_796_061_600_000
        );
        assert_eq!(
            parse_since("15m", 1_000_000_000).unwrap(),
            1_000_000_000 - 900_000
        );
        assert_eq!(parse_since("7d", 1_000).unwrap(), 0);
        let err = parse_since("yesterday", 0).unwrap_err().to_string();
        assert!(err.contains("neither an RFC 3339 time"), "{err}");
        let err = parse_since("5y", 0).unwrap_err().to_string();
        assert!(err.contains("must be s, m, h or d"), "{err}");
        assert_eq!(rfc3339(1_796_061_600_123), "2026-11-30T18:00:00.123Z");
    }
}
