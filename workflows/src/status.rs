//! The saga status model: where a saga is and whether it has ended.

use serde::{Deserialize, Serialize};

/// The status of one saga. `Completed` and `Compensated` are terminal;
/// `Parked` waits for an operator signal; the others are in progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum SagaStatus {
    /// Forward steps are running.
    Running,
    /// A step failed for good; completed steps are being undone in reverse.
    Compensating,
    /// Every step succeeded.
    Completed,
    /// The saga failed and every completed step was compensated.
    Compensated,
    /// A step or compensation kept failing; the saga waits for an operator.
    Parked {
        /// What failed and what the operator can do.
        reason: String,
    },
}

impl SagaStatus {
    /// The lowercase name used in the journal, the CLI and `--status`.
    pub fn name(&self) -> &'static str {
        match self {
            SagaStatus::Running => "running",
            SagaStatus::Compensating => "compensating",
            SagaStatus::Completed => "completed",
            SagaStatus::Compensated => "compensated",
            SagaStatus::Parked { .. } => "parked",
        }
    }

    /// True for `Completed` and `Compensated`: nothing more will happen.
    pub fn is_terminal(&self) -> bool {
        matches!(self, SagaStatus::Completed | SagaStatus::Compensated)
    }

    /// The parked reason, if any.
    pub fn reason(&self) -> Option<&str> {
        match self {
            SagaStatus::Parked { reason } => Some(reason),
            _ => None,
        }
    }

    /// Rebuilds a status from its name and optional reason (as stored).
    pub fn from_parts(name: &str, reason: Option<String>) -> Option<SagaStatus> {
        Some(match name {
            "running" => SagaStatus::Running,
            "compensating" => SagaStatus::Compensating,
            "completed" => SagaStatus::Completed,
            "compensated" => SagaStatus::Compensated,
            "parked" => SagaStatus::Parked {
                reason: reason.unwrap_or_default(),
            },
            _ => return None,
        })
    }

    /// Every status name, for `--status` help and validation.
    pub const NAMES: [&'static str; 5] = [
        "running",
        "compensating",
        "completed",
        "compensated",
        "parked",
    ];
}
