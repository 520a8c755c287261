//! Opening a store file without ever damaging it, and bringing its schema up to date.
//!
//! Order matters: an existing file is first checked with plain file reads (SQLite header, page
//! size, length) and then through a READ-ONLY SQLite connection (`PRAGMA quick_check`, identity,
//! schema version). Only a file that passes is opened read-write, configured and migrated. A
//! read-write open of a damaged file can already write (journal-mode switch, hot-journal
//! rollback, migrations), and "adaptd made my broken store worse" is the one outcome this module
//! exists to prevent.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, Transaction, TransactionBehavior};

use crate::store::error::StoreError;

/// `PRAGMA application_id` of adaptd sample stores ("adap" in ASCII). Lets open tell an
/// adaptd store from some other program's SQLite file, which must never be migrated.
pub(crate) const APPLICATION_ID: i32 = 0x6164_6170;

/// One step of the schema history. `apply` runs inside the same transaction that then sets
/// `PRAGMA user_version = version`, so a step is applied completely or not at all.
pub(crate) struct Migration {
    pub version: u32,
    pub apply: fn(&Transaction<'_>) -> rusqlite::Result<()>,
}

/// The schema history, oldest first, versions 1, 2, 3... without gaps. A schema change is one
/// more entry here (for example `Migration { version: 2, apply: |tx| tx.execute_batch("ALTER
/// TABLE ...") }`); existing entries never change, since stores in the field already ran them.
pub(crate) const MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    apply: |tx| tx.execute_batch(SCHEMA_V1),
}];

/// The schema version this build writes (the last migration).
pub const SCHEMA_VERSION: u32 = 1;

/// Version 1. Notes on the choices:
/// - `AUTOINCREMENT`: ids are never reused, so an id reported as evicted or removed (in logs,
///   MQTT replies, exports) can never come back naming a different sample.
/// - Small columns first, blobs last: metadata queries read a row's first page only, never the
///   overflow pages holding embeddings and thumbnails.
/// - `labels.seen` counts every sample ever offered for a label (the `n` of reservoir
///   sampling); it must survive restarts for reservoir decisions to be reproducible.
/// - `store_totals` is kept by triggers so the total-size limit is one row read, not a scan of
///   every blob, and stays right whatever modifies `samples`.
/// - STRICT tables: a wrong type is an error at write time, not a surprise at read time.
const SCHEMA_V1: &str = "
PRAGMA application_id = 1633968496;

CREATE TABLE labels (
    label TEXT NOT NULL PRIMARY KEY,
    seen  INTEGER NOT NULL DEFAULT 0 CHECK (seen >= 0)
) STRICT, WITHOUT ROWID;

CREATE TABLE samples (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    label            TEXT NOT NULL REFERENCES labels (label),
    split            TEXT NOT NULL CHECK (split IN ('train', 'holdout')),
    model_sha256     TEXT NOT NULL,
    embedding_tensor TEXT NOT NULL,
    source_kind      TEXT NOT NULL,
    source_detail    TEXT,
    created_unix_ms  INTEGER NOT NULL,
    embedding        BLOB NOT NULL,
    thumbnail_jpeg   BLOB
) STRICT;

CREATE INDEX samples_by_label ON samples (label, split);
CREATE INDEX samples_by_backbone ON samples (model_sha256, embedding_tensor);

CREATE TABLE store_totals (
    id            INTEGER PRIMARY KEY CHECK (id = 1),
    payload_bytes INTEGER NOT NULL CHECK (payload_bytes >= 0)
) STRICT;
INSERT INTO store_totals (id, payload_bytes) VALUES (1, 0);

CREATE TRIGGER samples_bytes_insert AFTER INSERT ON samples BEGIN
    UPDATE store_totals
       SET payload_bytes = payload_bytes + length(NEW.embedding)
                           + coalesce(length(NEW.thumbnail_jpeg), 0)
     WHERE id = 1;
END;
CREATE TRIGGER samples_bytes_delete AFTER DELETE ON samples BEGIN
    UPDATE store_totals
       SET payload_bytes = payload_bytes - length(OLD.embedding)
                           - coalesce(length(OLD.thumbnail_jpeg), 0)
     WHERE id = 1;
END;
CREATE TRIGGER samples_bytes_update AFTER UPDATE OF embedding, thumbnail_jpeg ON samples BEGIN
    UPDATE store_totals
       SET payload_bytes = payload_bytes
                           + length(NEW.embedding) + coalesce(length(NEW.thumbnail_jpeg), 0)
                           - length(OLD.embedding) - coalesce(length(OLD.thumbnail_jpeg), 0)
     WHERE id = 1;
END;
";

/// A kill in the instant a NEW store switches from rollback-journal to WAL mode leaves an empty
/// (0 bytes or one page) database and a `-journal` whose recorded original size is 0 pages
/// (or whose header was never written). Rolling such a journal back restores "nothing", so
/// deleting it loses no data, and refusing it would keep a freshly installed daemon in a
/// restart loop until someone deleted the file by hand.
fn discard_creation_journal(path: &Path) -> Result<(), StoreError> {
    const JOURNAL_MAGIC: [u8; 8] = [0xd9, 0xd5, 0x05, 0xf9, 0x20, 0xa1, 0x63, 0xd7];
    let journal = sidecar(path, "-journal");
    let (Ok(db), Ok(j)) = (
        std::fs::read(path).map(|b| b.len()),
        std::fs::read(&journal),
    ) else {
        return Ok(());
    };
    // Every adaptd store has several tables, so more than one page; one page at most is a
    // database that never held anything.
    let one_page_at_most =
        db == 0 || (db <= 65536 && std::fs::read(path).is_ok_and(|b| page_size_of(&b) == Some(db)));
    let nothing_to_restore = j.len() < 20 || j[..8] != JOURNAL_MAGIC || j[16..20] == [0, 0, 0, 0];
    if one_page_at_most && nothing_to_restore {
        std::fs::remove_file(&journal).map_err(|e| {
            io_err(
                &journal,
                "remove the journal of an interrupted store creation",
                e,
            )
        })?;
    }
    Ok(())
}

/// The page size recorded in a database header.
fn page_size_of(header: &[u8]) -> Option<usize> {
    if header.len() < 100 || &header[..16] != SQLITE_MAGIC {
        return None;
    }
    match u16::from_be_bytes([header[16], header[17]]) {
        1 => Some(65536),
        n => Some(usize::from(n)),
    }
}

/// Tables a store of version >= 1 must have; checked read-only before anything is written.
const V1_TABLES: [&str; 3] = ["labels", "samples", "store_totals"];

const SQLITE_MAGIC: &[u8; 16] = b"SQLite format 3\0";

/// Opens (creating if absent) the store at `path`: validates, configures, migrates.
pub(crate) fn open_store(
    path: &Path,
    busy_timeout: Duration,
    migrations: &[Migration],
) -> Result<Connection, StoreError> {
    discard_creation_journal(path)?;
    // Existing non-empty files are validated without writing; a missing file is created; a
    // zero-byte file holds nothing to lose (SQLite itself treats it as an empty database, and
    // it is what a crash right after creating a new store leaves behind).
    let create = match std::fs::metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            check_no_orphans(path)?;
            check_parent_dir(path)?;
            true
        }
        Err(e) => return Err(io_err(path, "read the metadata of the sample store", e)),
        Ok(m) if !m.is_file() => {
            return Err(StoreError::NotAStore {
                path: path.to_path_buf(),
                detail: "it is a directory or a special file, not a regular file".into(),
            })
        }
        Ok(m) if m.len() == 0 => {
            check_no_orphans(path)?;
            false
        }
        Ok(m) => {
            check_header(path, m.len())?;
            check_read_only(path, busy_timeout, latest(migrations))?;
            false
        }
    };
    let mut flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    if create {
        flags |= OpenFlags::SQLITE_OPEN_CREATE;
    }
    let mut conn = Connection::open_with_flags(path, flags)
        .map_err(|e| StoreError::sqlite(path, "opening the store read-write", e))?;
    // SQLite silently falls back to read-only for a write-protected file; the daemon would then
    // fail at its first sample instead of at start.
    if conn
        .is_readonly(rusqlite::MAIN_DB)
        .map_err(|e| StoreError::sqlite(path, "opening the store read-write", e))?
    {
        return Err(io_err(
            path,
            "open the sample store for writing",
            std::io::Error::new(
                std::io::ErrorKind::PermissionDenied,
                "the file is write-protected or on a read-only file system; fix its \
                 permissions or choose another path",
            ),
        ));
    }
    configure(&conn, path, busy_timeout)?;
    migrate(&mut conn, path, migrations)?;
    Ok(conn)
}

fn latest(migrations: &[Migration]) -> u32 {
    migrations.last().map_or(0, |m| m.version)
}

fn io_err(path: &Path, what: &'static str, source: std::io::Error) -> StoreError {
    StoreError::Io {
        path: path.to_path_buf(),
        what,
        source,
    }
}

fn corrupt(path: &Path, detail: String) -> StoreError {
    StoreError::Corrupt {
        path: path.to_path_buf(),
        detail,
    }
}

fn sidecar(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

fn non_empty(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.len() > 0)
}

/// A `-wal` or `-journal` file without its database is left over from an interrupted write
/// (a `-wal` may hold the only copy of recent samples). SQLite applies such a file to whatever
/// database it finds at the path, so creating a new store beside it would corrupt the new store
/// or lose the old data. Refuse, and let a human decide.
fn check_no_orphans(path: &Path) -> Result<(), StoreError> {
    for suffix in ["-wal", "-journal"] {
        let side = sidecar(path, suffix);
        if non_empty(&side) {
            return Err(StoreError::NotAStore {
                path: path.to_path_buf(),
                detail: format!(
                    "the database file is missing or empty but {} exists and is not empty: it \
                     is left over from an interrupted write (a -wal file may hold the only \
                     copy of recent samples). Restore the database file beside it, or delete \
                     {} to start a new store",
                    side.display(),
                    side.display()
                ),
            });
        }
    }
    Ok(())
}

fn check_parent_dir(path: &Path) -> Result<(), StoreError> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => return Ok(()),
    };
    match std::fs::metadata(parent) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(io_err(
            path,
            "create the sample store",
            std::io::Error::new(
                std::io::ErrorKind::NotADirectory,
                format!("{} is not a directory", parent.display()),
            ),
        )),
        Err(e) => Err(io_err(
            path,
            "create the sample store (create its directory first)",
            e,
        )),
    }
}

/// Plain-file checks before SQLite sees the file: the header magic (a clear "not a database"
/// for a JPEG or a config file given by mistake), then sizes, which catch truncation that
/// SQLite's quick_check could miss when the file was cut at a page boundary.
fn check_header(path: &Path, len: u64) -> Result<(), StoreError> {
    let mut header = Vec::with_capacity(100);
    File::open(path)
        .and_then(|f| f.take(100).read_to_end(&mut header))
        .map_err(|e| io_err(path, "read the sample store", e))?;
    let n = header.len().min(SQLITE_MAGIC.len());
    if header[..n] != SQLITE_MAGIC[..n] {
        return Err(StoreError::NotAStore {
            path: path.to_path_buf(),
            detail: "it is not an SQLite database (it does not start with the SQLite header)"
                .into(),
        });
    }
    if header.len() < 100 {
        return Err(corrupt(
            path,
            format!("truncated: only {len} bytes, shorter than the 100-byte SQLite header"),
        ));
    }
    let page_size = match u16::from_be_bytes([header[16], header[17]]) {
        1 => 65_536,
        p if p >= 512 && p.is_power_of_two() => u64::from(p),
        p => {
            return Err(corrupt(
                path,
                format!("the header has an invalid page size ({p})"),
            ))
        }
    };
    if !len.is_multiple_of(page_size) {
        return Err(corrupt(
            path,
            format!(
                "its {len} bytes are not a whole number of {page_size}-byte pages: it was \
                 truncated or damaged"
            ),
        ));
    }
    // adaptd stores are always in WAL mode; a hot rollback journal means another program
    // wrote this file, or a crash hit the instant a new store switched to WAL. Rolling it back
    // is a write, which validation must not do.
    let journal = sidecar(path, "-journal");
    if non_empty(&journal) {
        return Err(corrupt(
            path,
            format!(
                "{} exists and is not empty: an interrupted write in rollback-journal mode, \
                 which adaptd never uses. Check the file with the sqlite3 tool (which rolls the \
                 journal back) before giving it to adaptd",
                journal.display()
            ),
        ));
    }
    let be32 = |at: usize| {
        u32::from_be_bytes([header[at], header[at + 1], header[at + 2], header[at + 3]])
    };
    let (change_counter, header_pages, valid_for) = (be32(24), be32(28), be32(92));
    // The in-header page count is authoritative when valid-for matches the change counter. With
    // a non-empty -wal the database file alone may legitimately lag behind (a checkpoint cut
    // short by a crash), so the comparison is only made without one.
    let expected = u64::from(header_pages) * page_size;
    if header_pages != 0
        && change_counter == valid_for
        && !non_empty(&sidecar(path, "-wal"))
        && len < expected
    {
        return Err(corrupt(
            path,
            format!(
                "truncated: its header says {header_pages} pages ({expected} bytes) but the \
                 file has {len} bytes"
            ),
        ));
    }
    Ok(())
}

/// Validates through a read-only connection: readable schema, `PRAGMA quick_check`, identity
/// and version. Read-only, so nothing in the database file can change whatever is found.
fn check_read_only(path: &Path, busy_timeout: Duration, latest: u32) -> Result<(), StoreError> {
    let sql = |what| move |e| StoreError::sqlite(path, what, e);
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    // Without a -wal file the database file alone is the whole state and no WAL-mode
    // connection is using it, so it is read as immutable: no locks, and no -wal/-shm files
    // created beside a file that may be refused. With one, the normal read-only open reads the
    // WAL's committed transactions as well (it may create a missing -shm index).
    let conn = match immutable_uri(path) {
        Some(uri) if !sidecar(path, "-wal").exists() => {
            Connection::open_with_flags(uri, flags | OpenFlags::SQLITE_OPEN_URI)
        }
        _ => Connection::open_with_flags(path, flags),
    }
    .map_err(sql("opening the store read-only to validate it"))?;
    conn.busy_timeout(busy_timeout)
        .map_err(sql("setting the busy timeout"))?;
    let tables: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_schema WHERE type = 'table'")
        .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
        .map_err(sql("reading the schema"))?;
    let mut problems = Vec::new();
    conn.pragma(None, "quick_check", 5, |row| {
        problems.push(row.get::<_, String>(0)?);
        Ok(())
    })
    .map_err(sql("running PRAGMA quick_check"))?;
    if problems != ["ok"] {
        // One row can hold several lines, headed by "*** in database main ***".
        let lines: Vec<&str> = problems
            .iter()
            .flat_map(|p| p.lines())
            .filter(|l| !l.starts_with("***") && !l.trim().is_empty())
            .collect();
        let shown: Vec<&str> = lines.iter().take(3).map(|l| l.trim()).collect();
        let more = lines.len().saturating_sub(shown.len());
        return Err(corrupt(
            path,
            format!(
                "PRAGMA quick_check found: {}{}",
                shown.join("; "),
                if more > 0 {
                    format!("; and {more} more")
                } else {
                    String::new()
                }
            ),
        ));
    }
    let app_id: i32 = conn
        .pragma_query_value(None, "application_id", |r| r.get(0))
        .map_err(sql("reading PRAGMA application_id"))?;
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(sql("reading PRAGMA user_version"))?;
    if app_id != APPLICATION_ID {
        // An SQLite file nobody has written to yet is fine to initialise; anything else
        // belongs to another program.
        if app_id == 0 && version == 0 && tables.is_empty() {
            return Ok(());
        }
        return Err(StoreError::NotAStore {
            path: path.to_path_buf(),
            detail: format!(
                "it is an SQLite database of another program (application_id {app_id:#x}, \
                 tables: {})",
                if tables.is_empty() {
                    "none".into()
                } else {
                    tables.join(", ")
                }
            ),
        });
    }
    if version > i64::from(latest) {
        return Err(StoreError::TooNew {
            path: path.to_path_buf(),
            found: version,
            supported: latest,
        });
    }
    if version >= 1 {
        if let Some(missing) = V1_TABLES.iter().find(|t| !tables.iter().any(|x| x == *t)) {
            return Err(corrupt(
                path,
                format!("schema version {version} but the table {missing:?} is missing"),
            ));
        }
    }
    Ok(())
}

/// `file:` URI opening `path` read-only and immutable, percent-encoding everything but
/// unreserved characters so `?`, `#` or `%` in a path cannot change its meaning. `None` for a
/// path that is not UTF-8 (the caller falls back to a plain read-only open).
fn immutable_uri(path: &Path) -> Option<String> {
    if !cfg!(unix) {
        return None;
    }
    let path = std::path::absolute(path).ok()?;
    let text = path.to_str()?;
    let mut uri = String::from("file:");
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"/-_.~".contains(&b) {
            uri.push(char::from(b));
        } else {
            uri.push_str(&format!("%{b:02X}"));
        }
    }
    uri.push_str("?mode=ro&immutable=1");
    Some(uri)
}

/// Per-connection settings. WAL + synchronous=FULL make every commit durable once it returns
/// (the WAL is fsynced at each commit) while readers never block the writer; foreign keys keep
/// samples tied to their label row; trusted_schema=OFF limits what SQL stored in a (possibly
/// foreign) file can run.
fn configure(conn: &Connection, path: &Path, busy_timeout: Duration) -> Result<(), StoreError> {
    let sql = |what| move |e| StoreError::sqlite(path, what, e);
    conn.busy_timeout(busy_timeout)
        .map_err(sql("setting the busy timeout"))?;
    let mode: String = conn
        .pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))
        .map_err(sql("switching to WAL journal mode"))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::NoWal {
            path: path.to_path_buf(),
            mode,
        });
    }
    for (name, value) in [
        ("synchronous", "FULL"),
        ("foreign_keys", "ON"),
        ("trusted_schema", "OFF"),
    ] {
        conn.pragma_update(None, name, value)
            .map_err(sql("setting connection pragmas"))?;
    }
    Ok(())
}

/// Applies every migration newer than the file's `user_version`, each in its own IMMEDIATE
/// transaction that re-reads the version, so two processes opening the same old store cannot
/// both apply a step.
pub(crate) fn migrate(
    conn: &mut Connection,
    path: &Path,
    migrations: &[Migration],
) -> Result<(), StoreError> {
    let sql = |what| move |e| StoreError::sqlite(path, what, e);
    let latest = latest(migrations);
    for m in migrations {
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql("starting a schema migration"))?;
        let version: i64 = tx
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(sql("reading PRAGMA user_version"))?;
        if version > i64::from(latest) {
            return Err(StoreError::TooNew {
                path: path.to_path_buf(),
                found: version,
                supported: latest,
            });
        }
        if version >= i64::from(m.version) {
            continue;
        }
        (m.apply)(&tx).map_err(sql("migrating the schema"))?;
        tx.pragma_update(None, "user_version", m.version)
            .map_err(sql("setting PRAGMA user_version"))?;
        tx.commit().map_err(sql("committing a schema migration"))?;
    }
    Ok(())
}
