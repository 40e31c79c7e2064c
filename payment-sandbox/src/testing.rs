//! Helpers for tests that need a sandbox: this crate's own, and the HTTP
//! adapter's in `sagaflow-activities`.

use crate::{Knobs, Sandbox, SandboxConfig};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};

/// A sandbox database under the temp dir, removed (with its WAL) on drop.
pub struct TempDb {
    /// The file (not created until a sandbox opens it).
    pub path: PathBuf,
}

impl TempDb {
    /// A fresh path whose name carries `name`, the process id and a counter.
    pub fn new(name: &str) -> TempDb {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "sagaflow-payment-{name}-{}-{}-{}.db",
            std::process::id(),
            crate::store::now_ms(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        TempDb { path }
    }
}

impl Drop for TempDb {
    fn drop(&mut self) {
        for suffix in ["", "-wal", "-shm"] {
            let mut file = self.path.clone().into_os_string();
            file.push(suffix);
            let _ = std::fs::remove_file(file);
        }
    }
}

/// Starts a sandbox over `db` on a free loopback port with every knob off
/// and the request log on.
pub async fn start(db: &TempDb) -> Sandbox {
    let config = SandboxConfig {
        db_path: db.path.clone(),
        knobs: Knobs::default(),
        request_log: true,
    };
    Sandbox::start(config, "127.0.0.1:0".parse().unwrap())
        .await
        .expect("the sandbox starts on a free loopback port")
}
