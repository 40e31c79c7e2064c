//! Human-readable durations in `sagas.toml` ("250ms", "2s", "5m", "1h", "3d").

/// Parses a duration written as a whole number followed by `ms`, `s`, `m`,
/// `h` or `d` into milliseconds.
///
/// Returns a message that says what to write instead when the text is not a
/// duration.
pub fn parse_duration_ms(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let hint = "write a whole number followed by ms, s, m, h or d, e.g. \"250ms\" or \"2s\"";
    if num.is_empty() {
        return Err(format!("invalid duration \"{text}\": {hint}"));
    }
    let n: u64 = num
        .parse()
        .map_err(|_| format!("invalid duration \"{text}\": the number is too large"))?;
    let factor = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        "" => {
            return Err(format!(
                "invalid duration \"{text}\": the unit is missing; {hint}"
            ))
        }
        _ => {
            return Err(format!(
                "invalid duration \"{text}\": unknown unit \"{unit}\"; {hint}"
            ))
        }
    };
    n.checked_mul(factor)
        .ok_or_else(|| format!("invalid duration \"{text}\": the number is too large"))
}

/// Formats milliseconds the way `sagas.toml` writes them, choosing the
/// largest unit that divides evenly.
pub fn format_duration_ms(ms: u64) -> String {
    if ms != 0 && ms.is_multiple_of(86_400_000) {
        format!("{}d", ms / 86_400_000)
    } else if ms != 0 && ms.is_multiple_of(3_600_000) {
        format!("{}h", ms / 3_600_000)
    } else if ms != 0 && ms.is_multiple_of(60_000) {
        format!("{}m", ms / 60_000)
    } else if ms != 0 && ms.is_multiple_of(1_000) {
        format!("{}s", ms / 1_000)
    } else {
        format!("{ms}ms")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_unit() {
        assert_eq!(parse_duration_ms("250ms"), Ok(250));
        assert_eq!(parse_duration_ms("2s"), Ok(2_000));
        assert_eq!(parse_duration_ms("5m"), Ok(300_000));
        assert_eq!(parse_duration_ms("1h"), Ok(3_600_000));
        assert_eq!(parse_duration_ms("3d"), Ok(259_200_000));
    }

    #[test]
    fn rejects_bad_text_with_a_hint() {
        let e = parse_duration_ms("2x").unwrap_err();
        assert!(e.contains("unknown unit \"x\""), "{e}");
        let e = parse_duration_ms("10").unwrap_err();
        assert!(e.contains("unit is missing"), "{e}");
        assert!(parse_duration_ms("fast").is_err());
    }

    #[test]
    fn formats_round_trip() {
        for ms in [0, 1, 250, 2_000, 300_000, 3_600_000, 259_200_000] {
            assert_eq!(parse_duration_ms(&format_duration_ms(ms)), Ok(ms));
        }
    }
}
