//! Storage errors.

/// Why a storage operation failed. Nothing was committed when a write returns one.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database engine or the disk failed (I/O error, disk full, corruption detected).
    #[error("storage failed: {0}")]
    Engine(#[from] redb::Error),
    /// Reading or writing the embedded store's journal failed.
    #[error("journal {path}: {source}")]
    Journal {
        path: String,
        source: std::io::Error,
    },
    /// PostgreSQL refused or failed a statement, or the connection broke.
    #[error("postgres: {0}")]
    Postgres(String),
    /// An import was asked of a store that already holds a ledger.
    #[error("the target store is not empty; import only into a new database")]
    NotEmpty,
    /// The database is being opened again after a storage error; retry shortly.
    #[error("the database is reopening after a storage error")]
    Reopening,
    /// The thread that checkpoints the journal stopped unexpectedly, so the store takes no more
    /// writes than it can hold in memory. Everything committed is in the journal; a restart
    /// recovers it.
    #[error(
        "the checkpointer stopped; restart the server (every committed batch is in the journal)"
    )]
    CheckpointerStopped,
    /// Another process holds the database open.
    #[error("the database {0} is already open in another process")]
    AlreadyOpen(String),
    /// A stored record could not be decoded.
    #[error("stored {what} could not be decoded: {detail}")]
    Corrupt { what: String, detail: String },
    /// Writing an export failed, or its reader stopped taking it.
    #[error("writing the export failed: {0}")]
    Output(#[source] std::io::Error),
    /// A file given to import does not start with the export header.
    #[error("not a Coffer ledger export (first line {first_line:?})")]
    NotAnExport { first_line: String },
    /// The data directory could not be created or read.
    #[error("data directory {path}: {source}")]
    DataDirectory {
        path: String,
        source: std::io::Error,
    },
}

macro_rules! engine_error {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self {
                StoreError::Engine(e.into())
            }
        }
    )*};
}

engine_error!(
    redb::StorageError,
    redb::TableError,
    redb::TransactionError,
    redb::CommitError,
    redb::SetDurabilityError
);
