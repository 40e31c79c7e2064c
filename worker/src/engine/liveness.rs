//! Which sagas still live, as the engine of this deployment sees them: what
//! the stock reaper asks before it reclaims a reservation past its
//! deadline (ARCHITECTURE.md, "A reservation outlives a slow saga").
//!
//! Live means not ended: running, compensating or parked. A saga the
//! engine does not know (never started here, or another deployment's) is
//! not live. Any doubt (the journal cannot be read, the cluster does not
//! answer) is an error, and the reaper then reclaims nothing.

use super::embedded::journal::{open_reader, JournalError};
use super::embedded::read;
use super::temporal::client::{TemporalClient, TemporalError};
use futures::{StreamExt, TryStreamExt};
use std::collections::HashSet;
use std::path::PathBuf;

/// Where the answer comes from.
#[derive(Clone)]
pub enum Liveness {
    /// The embedded engine's journal (read on its own connection).
    Journal(PathBuf),
    /// The Temporal cluster: an open workflow is a live saga.
    Temporal(TemporalClient),
}

/// Why liveness could not be decided; nothing is reclaimed then.
#[derive(Debug, thiserror::Error)]
pub enum LivenessError {
    /// The journal could not be opened or read.
    #[error("cannot read the journal to see which sagas live: {0}")]
    Journal(String),
    /// The cluster did not answer a describe.
    #[error("cannot ask Temporal which sagas live: {0}")]
    Temporal(#[from] TemporalError),
}

impl From<JournalError> for LivenessError {
    fn from(e: JournalError) -> Self {
        LivenessError::Journal(e.to_string())
    }
}

impl Liveness {
    /// The ids among `ids` whose saga has not ended.
    pub async fn living(&self, ids: &[&str]) -> Result<HashSet<String>, LivenessError> {
        match self {
            Liveness::Journal(path) => {
                let path = path.clone();
                let ids: Vec<String> = ids.iter().map(|s| (*s).to_owned()).collect();
                tokio::task::spawn_blocking(move || {
                    let conn = open_reader(&path)?;
                    let mut living = HashSet::new();
                    for id in ids {
                        let row = read::saga(&conn, &id)
                            .map_err(|e| LivenessError::Journal(e.to_string()))?;
                        if row.is_some_and(|r| is_live_status(&r.status)) {
                            living.insert(id);
                        }
                    }
                    Ok(living)
                })
                .await
                .map_err(|e| LivenessError::Journal(e.to_string()))?
            }
            Liveness::Temporal(client) => {
                let owned: Vec<String> = ids.iter().map(|id| (*id).to_owned()).collect();
                let answers: Vec<(String, bool)> = futures::stream::iter(owned)
                    .map(|id| {
                        let client = client.clone();
                        async move { client.is_open(&id).await.map(|open| (id, open)) }
                    })
                    .buffer_unordered(DESCRIBES_AT_ONCE)
                    .try_collect()
                    .await?;
                Ok(answers
                    .into_iter()
                    .filter(|(_, open)| *open)
                    .map(|(id, _)| id)
                    .collect())
            }
        }
    }
}

/// Describes in flight at once when many reservations expire together
/// (after a long outage), so judging them takes seconds, not minutes.
const DESCRIBES_AT_ONCE: usize = 16;

/// A journal status name of a saga that has not ended. A status this
/// build does not know counts as live: keeping stock is the safe mistake.
fn is_live_status(status: &str) -> bool {
    !matches!(status, "completed" | "compensated")
}

#[cfg(test)]
mod tests {
    use super::is_live_status;

    #[test]
    fn only_ended_sagas_are_not_live() {
        for s in ["running", "compensating", "parked"] {
            assert!(is_live_status(s), "{s}");
        }
        for s in ["completed", "compensated"] {
            assert!(!is_live_status(s), "{s}");
        }
    }
}
