//! The started-models file: which models were started at run time and which configured ones were shut down,
//! so a restarted host serves what it served before. Written whole to a temporary file, then renamed.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::error::ManagerError;
use crate::config::ModelConfig;

/// What is remembered across restarts: models started at run time, and configured models shut down.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Persisted {
    pub started: Vec<ModelConfig>,
    /// `model@worker_type` of each configured model that was shut down.
    pub shut_down: Vec<String>,
}

/// The started-models file of one host, with its writes serialised.
pub struct StateFile {
    path: Option<PathBuf>,
    lock: tokio::sync::Mutex<()>,
}

impl StateFile {
    /// A file at `path`; with `None` nothing is remembered.
    pub fn new(path: Option<PathBuf>) -> Self {
        Self { path, lock: tokio::sync::Mutex::new(()) }
    }

    /// What the file holds; nothing when there is no file or it is unreadable (logged: a corrupt file must not
    /// keep the host from starting).
    pub async fn load(&self) -> Persisted {
        match &self.path {
            Some(path) => read(path).await,
            None => Persisted::default(),
        }
    }

    /// Applies `change` to what the file holds and writes it back.
    pub async fn update(&self, change: impl FnOnce(&mut Persisted)) -> Result<(), ManagerError> {
        let Some(path) = &self.path else { return Ok(()) };
        let _guard = self.lock.lock().await;
        let mut persisted = read(path).await;
        change(&mut persisted);
        let persist = |source| ManagerError::Persist { path: path.clone(), source };
        let bytes = serde_json::to_vec_pretty(&persisted).map_err(|e| persist(e.into()))?;
        if let Some(dir) = path.parent() {
            tokio::fs::create_dir_all(dir).await.map_err(persist)?;
        }
        // Write then rename, so a crash mid-write never leaves a truncated file.
        let tmp = path.with_extension("json.tmp");
        tokio::fs::write(&tmp, bytes).await.map_err(persist)?;
        tokio::fs::rename(&tmp, path).await.map_err(persist)
    }
}

async fn read(path: &Path) -> Persisted {
    match tokio::fs::read(path).await {
        Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            tracing::error!(path = %path.display(), error = %e, "the started-models file is unreadable; ignoring it");
            Persisted::default()
        }),
        Err(_) => Persisted::default(),
    }
}
