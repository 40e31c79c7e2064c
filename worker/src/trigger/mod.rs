//! Triggers: where orders come from. Each turns messages into saga starts
//! and settles a message only after its start is durable.

pub mod embedded;
pub mod servicebus;
