//! What both engines share about a saga's start: its definition, hashed
//! and serialized once, and the answer to a start.

use sagaflow_workflows::SagaDef;
use std::sync::Arc;

/// A saga definition with its hash and JSON form computed once.
#[derive(Debug)]
pub struct Definition {
    /// The definition.
    pub def: SagaDef,
    /// Content hash (stored with each saga).
    pub hash: String,
    /// Canonical JSON (stored once per hash).
    pub json: String,
    /// The saga's name, shared (metrics labels).
    pub name: Arc<str>,
}

impl Definition {
    /// Wraps a definition, computing its hash and JSON.
    pub fn new(def: SagaDef) -> Arc<Definition> {
        let json = serde_json::to_string(&def).expect("definitions serialize");
        let hash = def.hash();
        let name = Arc::from(def.name.as_str());
        Arc::new(Definition {
            def,
            hash,
            json,
            name,
        })
    }
}

/// The answer to a start request, once it is durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartOutcome {
    /// A new saga was journaled.
    Started,
    /// A saga with this id already exists; nothing was written.
    Duplicate,
}
