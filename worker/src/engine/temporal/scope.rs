//! What one deployment sees and commands on a namespace it may share with
//! others: the task queue names the deployment (`[temporal] task_queue`).
//!
//! - every value in a visibility query is a quoted, escaped literal
//!   ([`literal`]), and the caller's terms are parenthesised after the
//!   task-queue term, so no value and no `OR` reaches past it;
//! - a saga is read or commanded only when its history starts on this
//!   task queue ([`owned`]): another deployment's saga is "no saga" here.
//!
//! `TemporalClient::is_open` is the exception on purpose: the stock reaper
//! asks it before releasing a reservation, and a saga that is open
//! anywhere must keep its stock.

use super::workflow::WORKFLOW_TYPE;
use temporalio_common::protos::temporal::api::history::v1::{
    history_event::Attributes, HistoryEvent,
};

/// `value` as a visibility-query string literal: quoted, with `'` and `\`
/// escaped.
pub fn literal(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('\'');
    for c in value.chars() {
        if matches!(c, '\'' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('\'');
    out
}

/// Whether `history` is a saga workflow started on `task_queue`.
pub fn owned(history: &[HistoryEvent], task_queue: &str) -> bool {
    match history.first().and_then(|e| e.attributes.as_ref()) {
        Some(Attributes::WorkflowExecutionStartedEventAttributes(a)) => {
            a.task_queue.as_ref().is_some_and(|q| q.name == task_queue)
                && a.workflow_type
                    .as_ref()
                    .is_some_and(|t| t.name == WORKFLOW_TYPE)
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_keep_quotes_and_backslashes_inside() {
        assert_eq!(literal("sagaflow"), "'sagaflow'");
        assert_eq!(literal("x' OR TaskQueue != '"), r"'x\' OR TaskQueue != \''");
        assert_eq!(literal(r"a\"), r"'a\\'");
    }
}
