//! Operator commands as both engines carry them: the command itself (a
//! [`Signal`] the interpreter understands) and its [`Audit`] (who, why, as
//! part of which bulk run), which the engines record with it and the
//! interpreter never sees.

use sagaflow_workflows::Signal;
use serde::{Deserialize, Serialize};

/// Who sent a command and why: recorded with the command in the journal
/// (and the audit table) or in the Temporal history.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Audit {
    /// The operator (`--operator`, else the OS user).
    #[serde(default)]
    pub operator: String,
    /// Why (`--reason`, required by the CLI).
    #[serde(default)]
    pub reason: String,
    /// The bulk run this command belongs to, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bulk: Option<String>,
}

/// A command with its audit, as a Temporal Update carries it and as the
/// journal's `signal` events store it (flattened: `{"signal": "retry",
/// "operator": ..., "reason": ...}`; a resolve adds `step` and `output`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommandRequest {
    /// The command.
    pub signal: Signal,
    /// Who and why.
    #[serde(flatten)]
    pub audit: Audit,
}

/// A saga an operator command starts (a refund saga), as the inbox carries
/// it to the worker: the definition and input travel with it, so the worker
/// starts exactly what the CLI checked. Stored as `{"signal": "refund",
/// ...}` in the inbox row of the saga it undoes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StartRequest {
    /// The new saga's id (derived from the original's, so a second request
    /// is a duplicate start that changes nothing).
    pub saga_id: String,
    /// Its definition.
    pub def: sagaflow_workflows::SagaDef,
    /// Its input.
    pub input: serde_json::Value,
    /// Who and why.
    #[serde(flatten)]
    pub audit: Audit,
}

/// The id of the refund saga of checkout `id`: `#` never appears in an
/// order id (orders are refused at the door with it), so this id cannot
/// collide with an order's, and a second refund finds the first.
pub fn refund_id(id: &str) -> String {
    format!("{id}{REFUND_SUFFIX}")
}

/// What [`refund_id`] appends to a sale's id.
pub const REFUND_SUFFIX: &str = "#refund";

/// The stored form of a command: `signal` is its name; a resolve's step
/// and output sit beside it, so that the journal's rows stay flat and a
/// v1 body (`{"signal":"retry"}`) still reads.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Stored {
    signal: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    step: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    output: Option<serde_json::Value>,
    #[serde(flatten)]
    audit: Audit,
}

impl CommandRequest {
    /// The JSON stored in the journal and the inbox.
    pub fn encode(&self) -> String {
        let (step, output) = match &self.signal {
            Signal::Resolve { step, output } => (Some(step.clone()), Some(output.clone())),
            _ => (None, None),
        };
        serde_json::to_string(&Stored {
            signal: self.signal.name().to_owned(),
            step,
            output,
            audit: self.audit.clone(),
        })
        .expect("commands serialize")
    }

    /// Reads a stored command back; `Err` says what is wrong with it.
    pub fn decode(body: &str) -> Result<CommandRequest, String> {
        let stored: Stored = serde_json::from_str(body)
            .map_err(|e| format!("a command body that is not a command ({e})"))?;
        let signal = match (stored.signal.as_str(), stored.step) {
            ("resolve", Some(step)) => Signal::Resolve {
                step,
                output: stored
                    .output
                    .unwrap_or_else(|| serde_json::Value::Object(Default::default())),
            },
            ("resolve", None) => return Err("a resolve without a step".into()),
            (name, _) => {
                Signal::parse(name).ok_or_else(|| format!("an unknown command {name:?}"))?
            }
        };
        Ok(CommandRequest {
            signal,
            audit: stored.audit,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn commands_round_trip_and_v1_bodies_still_read() {
        let resolve = CommandRequest {
            signal: Signal::Resolve {
                step: "commit_stock".into(),
                output: json!({"by": "hand"}),
            },
            audit: Audit {
                operator: "alice".into(),
                reason: "committed in the warehouse tool".into(),
                bulk: Some("b-1".into()),
            },
        };
        let body = resolve.encode();
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&body).unwrap(),
            json!({"signal": "resolve", "step": "commit_stock", "output": {"by": "hand"},
                   "operator": "alice", "reason": "committed in the warehouse tool", "bulk": "b-1"})
        );
        assert_eq!(CommandRequest::decode(&body).unwrap(), resolve);
        let v1 = CommandRequest::decode(r#"{"signal":"retry"}"#).unwrap();
        assert_eq!(v1.signal, Signal::Retry);
        assert_eq!(v1.audit, Audit::default());
        assert!(CommandRequest::decode(r#"{"signal":"resolve"}"#)
            .unwrap_err()
            .contains("without a step"));
        assert!(CommandRequest::decode(r#"{"signal":"launch"}"#)
            .unwrap_err()
            .contains("unknown command"));
    }
}
