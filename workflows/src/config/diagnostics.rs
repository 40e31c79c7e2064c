//! Problems in a config file, each with its file, line and what to change.

use crate::duration::parse_duration_ms;
use serde::de::DeserializeOwned;
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use toml::Spanned;

/// One problem in a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file as given.
    pub file: PathBuf,
    /// 1-based line of the offending text, when known.
    pub line: Option<usize>,
    /// "saga checkout, step reserve_stock" or similar, when known.
    pub place: Option<String>,
    /// What is wrong and what to change.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        write!(f, ": ")?;
        if let Some(place) = &self.place {
            write!(f, "{place}: ")?;
        }
        write!(f, "{}", self.message)
    }
}

/// Every problem found in a config file, in file order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

/// The longest duration any key accepts: 30 days. Longer ones are typing
/// mistakes, and a deadline that far out overflows the clock arithmetic
/// every timer and timeout does.
pub const MAX_DURATION_MS: u64 = 30 * 24 * 3_600_000;

/// Collects every problem found while validating one config text, so that a
/// user sees all of them at once, in file order.
pub struct Diagnostics<'a> {
    text: &'a str,
    file: &'a Path,
    errors: Vec<ConfigError>,
}

impl<'a> Diagnostics<'a> {
    /// Starts collecting for `text`; `file` is only used in messages.
    pub fn new(text: &'a str, file: &'a Path) -> Self {
        Diagnostics {
            text,
            file,
            errors: Vec::new(),
        }
    }

    /// The file as given.
    pub fn file(&self) -> &'a Path {
        self.file
    }

    /// Records one problem. `span` is the offending text's byte range in the
    /// file (`0..0` when the key was not written: it was defaulted or is
    /// missing, so there is no line to name).
    pub fn error(&mut self, span: Range<usize>, place: Option<String>, message: String) {
        let line = (span != (0..0)).then(|| self.line_of(span.start));
        self.errors.push(ConfigError {
            file: self.file.to_owned(),
            line,
            place,
            message,
        });
    }

    /// A duration key's value in ms; a bad value (unreadable, or longer than
    /// [`MAX_DURATION_MS`]) is recorded and reads as 0.
    pub fn duration(&mut self, value: &Spanned<String>, place: &Option<String>, key: &str) -> u64 {
        match parse_duration_ms(value.get_ref()) {
            Ok(ms) if ms > MAX_DURATION_MS => {
                self.error(
                    value.span(),
                    place.clone(),
                    format!(
                        "{key} is {}, longer than 30 days (\"720h\"), the longest sagaflow accepts; use a shorter one",
                        value.get_ref().trim()
                    ),
                );
                0
            }
            Ok(ms) => ms,
            Err(e) => {
                self.error(value.span(), place.clone(), format!("{key}: {e}"));
                0
            }
        }
    }

    /// The 1-based line holding byte `offset` of the text.
    pub fn line_of(&self, offset: usize) -> usize {
        line_of(self.text, offset)
    }

    /// Every problem recorded, sorted by line (a problem without a line
    /// first), or `Ok` when there was none.
    pub fn finish(mut self) -> Result<(), ConfigErrors> {
        if self.errors.is_empty() {
            Ok(())
        } else {
            self.errors.sort_by_key(|e| e.line);
            Err(ConfigErrors(self.errors))
        }
    }
}

/// Deserializes config text, turning serde's first complaint into a
/// [`ConfigError`] with the line and what to change.
pub fn parse_toml<T: DeserializeOwned>(text: &str, file: &Path) -> Result<T, ConfigErrors> {
    toml::from_str(text).map_err(|e| {
        let message = e.message().trim_end().to_owned();
        let message = explain_parse_error(&message);
        ConfigErrors(vec![ConfigError {
            file: file.to_owned(),
            line: e.span().map(|s| line_of(text, s.start)),
            place: None,
            message,
        }])
    })
}

fn explain_parse_error(message: &str) -> String {
    if message.starts_with("unknown field") {
        format!("{message}; remove the key or fix its spelling")
    } else if message.starts_with("missing field") {
        format!("{message}; add it (the shipped sagas.toml shows every key with its default)")
    } else if message.starts_with("invalid type") {
        format!(
            "{message}; see the comments in the shipped sagas.toml for each key's type (durations are strings such as \"2s\")"
        )
    } else if message.starts_with("unknown variant") {
        format!("{message}; use one of the listed values")
    } else {
        message.to_owned()
    }
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())]
        .bytes()
        .filter(|b| *b == b'\n')
        .count()
        + 1
}
