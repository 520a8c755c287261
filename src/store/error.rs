//! The one error type of the sample store.
//!
//! Every message names the file, says what is wrong and what to do, because these errors end up
//! in an MQTT `reply` or a journal line read by someone who cannot attach a debugger to a Pi.
//! Anything that can happen to a damaged file says explicitly that the file was NOT modified:
//! the user's first worry after "corrupt" is whether adaptd made it worse.

use std::path::PathBuf;

/// Errors of [`crate::store::SampleStore`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The file exists but is not an adaptd sample store (not SQLite, or another program's
    /// SQLite database).
    #[error(
        "{path}: not an adaptd sample store: {detail}. The file was NOT modified; point adaptd \
         at its sample store file, or move this file away so a new store can be created there"
    )]
    NotAStore { path: PathBuf, detail: String },

    /// The file looks like a sample store but fails validation at open.
    #[error(
        "{path}: the sample store is corrupt ({detail}). The file was NOT modified (adaptd never \
         repairs or overwrites a damaged store); restore it from a backup, or move it away so an \
         empty store is created"
    )]
    Corrupt { path: PathBuf, detail: String },

    /// One stored row cannot be decoded; the rest of the store may be fine.
    #[error(
        "{path}: sample {id} is corrupt ({detail}); nothing was modified. Remove that sample, or \
         restore the store from a backup"
    )]
    CorruptSample {
        path: PathBuf,
        id: i64,
        detail: String,
    },

    /// The store was written by a newer adaptd whose schema this build does not know.
    #[error(
        "{path}: the sample store has schema version {found} but this adaptd knows versions up \
         to {supported}; it was written by a newer adaptd. The file was NOT modified; run the \
         newer adaptd, or point this one at another store file"
    )]
    TooNew {
        path: PathBuf,
        found: i64,
        supported: u32,
    },

    /// The file system cannot do WAL (e.g. NFS or SMB without shared memory).
    #[error(
        "{path}: SQLite could not switch the sample store to WAL journal mode (it stayed in \
         {mode:?}); the store needs a local file system with shared-memory support (not NFS or \
         SMB): move it to local storage"
    )]
    NoWal { path: PathBuf, mode: String },

    /// SQLITE_FULL: the file system (or `max_page_count`) has no room. The transaction was
    /// rolled back, so the store is exactly as before the call.
    #[error(
        "disk full while writing {path}: nothing was written (the transaction was rolled back, \
         the store is unchanged); free space and retry"
    )]
    DiskFull { path: PathBuf },

    /// Storing the sample would exceed `StoreLimits::max_total_bytes`.
    #[error(
        "{path}: sample store full: this sample ({sample_bytes} bytes of embedding and \
         thumbnail) would bring the store to {would_be} bytes, over max_total_bytes = \
         {max_total_bytes}; nothing was written. Lower max_per_label, forget labels you no \
         longer need, or raise max_total_bytes"
    )]
    StoreFull {
        path: PathBuf,
        sample_bytes: u64,
        would_be: u64,
        max_total_bytes: u64,
    },

    /// The label breaks the label rule (see [`crate::store::validate_label`]).
    #[error("invalid label {label:?}: {reason}")]
    InvalidLabel { label: String, reason: String },

    /// `unknown` is what the classifier reports; it cannot be learned.
    #[error(
        "label {label:?} is reserved: it is what the classifier reports when no class is \
         confident, so it cannot be a training label; use \"none\" for background and false \
         positives"
    )]
    ReservedLabel { label: String },

    /// The sample itself is unusable (empty or non-finite embedding, wrong dimension, bad
    /// backbone id).
    #[error("invalid sample: {reason}")]
    InvalidSample { reason: String },

    /// `StoreOptions` / `StoreLimits` out of range.
    #[error("invalid sample store settings: {reason}")]
    InvalidOptions { reason: String },

    /// A sample of an `add_many` batch failed validation; nothing of the batch was stored.
    #[error(
        "sample #{index} of the batch (counting from 0): {source}; nothing of the batch was stored"
    )]
    InBatch {
        index: usize,
        source: Box<StoreError>,
    },

    /// No sample has this id (it was removed, evicted, or never existed).
    #[error("{path}: no sample with id {id}: it was removed or evicted, or never existed")]
    NoSuchSample { path: PathBuf, id: i64 },

    /// Another connection held the lock past the busy timeout.
    #[error(
        "{path}: the sample store is locked by another process (another adaptd, or an sqlite3 \
         shell with an open transaction) and stayed locked past the busy timeout; nothing was \
         written. Stop the other process and retry"
    )]
    Busy { path: PathBuf },

    /// The file or its directory cannot be accessed.
    #[error("{path}: could not {what}: {source}")]
    Io {
        path: PathBuf,
        what: &'static str,
        source: std::io::Error,
    },

    /// Any other SQLite failure, with what the store was doing.
    #[error("{path}: SQLite failed while {what}: {source}")]
    Sqlite {
        path: PathBuf,
        what: &'static str,
        source: rusqlite::Error,
    },
}

impl StoreError {
    /// Maps a SQLite error to the variant a caller can act on. Disk-full, busy and corruption
    /// get their own variants because each calls for a different reaction (free space, stop the
    /// other process, restore a backup); everything else keeps SQLite's own message.
    pub(crate) fn sqlite(path: &std::path::Path, what: &'static str, e: rusqlite::Error) -> Self {
        use rusqlite::ErrorCode;
        let path = path.to_path_buf();
        match e.sqlite_error_code() {
            Some(ErrorCode::DiskFull) => StoreError::DiskFull { path },
            Some(ErrorCode::DatabaseBusy) | Some(ErrorCode::DatabaseLocked) => {
                StoreError::Busy { path }
            }
            Some(ErrorCode::DatabaseCorrupt) => StoreError::Corrupt {
                path,
                detail: format!("SQLite reported corruption while {what}: {e}"),
            },
            Some(ErrorCode::NotADatabase) => StoreError::NotAStore {
                path,
                detail: format!("SQLite says it is not a database ({e})"),
            },
            _ => StoreError::Sqlite {
                path,
                what,
                source: e,
            },
        }
    }
}
