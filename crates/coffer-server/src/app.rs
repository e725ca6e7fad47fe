//! State shared by every handler: storage for reads, the writer for changes, the catalog in
//! force and the live event hub.

use std::sync::Arc;

use coffer_core::{Catalog, Command, Transaction};
use coffer_store::Store;

use crate::auth::layer::Gatekeeper;
use crate::auth::rate::{Limits, StreamCounter};
use crate::error::ApiError;
use crate::events::Events;
use crate::writer::{SharedCatalog, WriteError, WriterHandle};

/// What handlers share.
pub struct App {
    pub store: Arc<dyn Store>,
    pub writer: WriterHandle,
    pub catalog: SharedCatalog,
    pub events: Arc<Events>,
    pub gatekeeper: Arc<Gatekeeper>,
    pub limits: Limits,
    /// Receipt verification, the sandbox issuer and the refund policy.
    pub receipts: Arc<crate::receipts::Receipts>,
    pub streams: Arc<StreamCounter>,
    /// Turns true when the server shuts down: open streams end so the shutdown can finish.
    pub stopping: tokio::sync::watch::Receiver<bool>,
    /// One permit per running ledger export (online backup); shutdown takes them all back
    /// before it closes the store.
    pub exports: Arc<tokio::sync::Semaphore>,
}

impl App {
    /// The catalog in force now.
    pub fn catalog(&self) -> Arc<Catalog> {
        Arc::clone(&self.catalog.read().expect("catalog lock poisoned").catalog)
    }

    /// Sends a command through the writer; returns its transaction once durable.
    pub async fn execute(&self, command: Command) -> Result<Arc<Transaction>, ApiError> {
        match self.writer.submit(command).await {
            Ok(Ok(transaction)) => Ok(transaction),
            Ok(Err(rejection)) => Err(ApiError::Rejected(rejection)),
            Err(WriteError::Stopped) => Err(ApiError::Unavailable(
                "the server is shutting down; nothing was changed, retry with the same idempotency key".to_owned(),
            )),
            Err(WriteError::CommitFailed(_) | WriteError::Store(_)) => Err(ApiError::Unavailable(
                // After a failed fsync the commit may still reach the disk: only a retry with
                // the same key can tell, and it returns the original outcome if it did.
                "the commit could not be confirmed; retry with the same idempotency key".to_owned(),
            )),
            Err(WriteError::Catalog(e)) => Err(ApiError::Internal(format!("catalog error on a command: {e}"))),
        }
    }

    /// Runs blocking storage work (scans, verification) off the async workers.
    pub async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(Arc<dyn Store>) -> Result<T, coffer_store::StoreError> + Send + 'static,
    ) -> Result<T, ApiError> {
        let store = Arc::clone(&self.store);
        tokio::task::spawn_blocking(move || work(store))
            .await
            .map_err(|e| ApiError::Internal(format!("storage task failed: {e}")))?
            .map_err(ApiError::from)
    }
}
