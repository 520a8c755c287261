//! Crash-safe file replacement.
//!
//! The daemon runs on small boards that lose power without warning. A file
//! that is rewritten in place can be found half-written after such a crash,
//! so every state file is replaced with the classic write-temp / fsync /
//! rename / fsync-directory sequence: a reader sees either the complete old
//! content or the complete new content, never a mixture, and once
//! [`write_atomic`] returns the new content survives a power cut.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Marker between the target's name and the pid/counter suffix of a
/// temporary file. Temporary names start with a dot so that directory
/// listings that look for real files (`v0001.json`, ...) skip them.
const TEMP_MARKER: &str = ".tmp.";

/// Distinguishes concurrent writers inside one process (threads writing the
/// same target); the pid distinguishes processes.
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Replaces `path` with `bytes` atomically and durably.
///
/// The bytes go to a uniquely named temporary file in the same directory
/// (same file system, so the rename is atomic), which is flushed with
/// `sync_all` before it is renamed over `path`; the directory is then synced
/// so that the rename itself survives a crash. On any failure the temporary
/// file is removed and the previous content of `path` is untouched.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let name = path.file_name().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("cannot write {}: the path has no file name", path.display()),
        )
    })?;
    let dir = parent_dir(path);
    let temp = dir.join(format!(
        ".{}{}{}.{}",
        name.to_string_lossy(),
        TEMP_MARKER,
        std::process::id(),
        TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
    ));

    let result = write_and_rename(&temp, path, bytes);
    if result.is_err() {
        // Best effort: the original error is the one worth reporting.
        let _ = fs::remove_file(&temp);
        return result;
    }
    fsync_dir(&dir)
}

fn write_and_rename(temp: &Path, path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut file = OpenOptions::new().write(true).create_new(true).open(temp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    fs::rename(temp, path)
}

/// The directory that holds `path`; a bare file name lives in the current
/// directory, whose path `Path::parent` reports as empty.
fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Flushes a directory's entries to stable storage.
///
/// A rename or a file creation is only durable once the directory that
/// records it has been synced; without this a power cut can bring back the
/// old name even though the file's data was synced.
#[cfg(unix)]
pub fn fsync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Flushes a directory's entries to stable storage.
///
/// Directories cannot be opened as files on this platform; NTFS journals
/// metadata, so there is nothing further to do.
#[cfg(not(unix))]
pub fn fsync_dir(_dir: &Path) -> io::Result<()> {
    Ok(())
}

/// Whether `name` is a temporary file made by [`write_atomic`].
///
/// Callers that scan a directory use this to ignore half-finished writes.
pub fn is_temp_name(name: &str) -> bool {
    temp_owner_pid(name).is_some()
}

/// The pid embedded in a temporary file name, if `name` is one.
fn temp_owner_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix('.')?;
    let (_, suffix) = rest.rsplit_once(TEMP_MARKER)?;
    let (pid, counter) = suffix.split_once('.')?;
    counter.parse::<u64>().ok()?;
    pid.parse::<u32>().ok()
}

/// Removes temporary files in `dir` left behind by writers that crashed,
/// returning how many were removed.
///
/// Only files whose writing process is gone and that have not been touched
/// for [`STALE_TEMP_AGE`] are removed, so a concurrent writer (another
/// `adaptd` process, possibly in another pid namespace, or another thread
/// of this one) never loses its temporary file mid-write. Where liveness
/// cannot be checked (no `/proc`), files of other processes older than an
/// hour are removed.
pub fn clean_stale_temps(dir: &Path) -> io::Result<usize> {
    let mut removed = 0;
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(temp_owner_pid) else {
            continue;
        };
        if !writer_is_gone(pid, &entry.path()) {
            continue;
        }
        match fs::remove_file(entry.path()) {
            Ok(()) => removed += 1,
            // Another cleaner got there first.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(removed)
}

/// Minimum age of a temporary file before [`clean_stale_temps`] removes it.
pub const STALE_TEMP_AGE: Duration = Duration::from_secs(60);

fn writer_is_gone(pid: u32, path: &Path) -> bool {
    if pid == std::process::id() {
        return false;
    }
    let age = fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .unwrap_or(Duration::ZERO);
    if Path::new("/proc/self").exists() {
        age >= STALE_TEMP_AGE && !Path::new("/proc").join(pid.to_string()).exists()
    } else {
        age >= Duration::from_secs(3600)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::SystemTime;

    #[test]
    fn writes_new_file_and_replaces_existing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        write_atomic(&path, b"first").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"first");
        write_atomic(&path, b"second, longer").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"second, longer");
        // No temporary files are left behind on success.
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, vec!["state.json".to_string()]);
    }

    #[test]
    fn failure_leaves_target_untouched_and_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("target");
        write_atomic(&path, b"old").unwrap();
        // Renaming a file over a non-empty directory fails.
        let blocker = dir.path().join("blocker");
        fs::create_dir(&blocker).unwrap();
        fs::write(blocker.join("x"), b"x").unwrap();
        assert!(write_atomic(&blocker, b"new").is_err());
        assert_eq!(fs::read(&path).unwrap(), b"old");
        let temps = fs::read_dir(dir.path())
            .unwrap()
            .filter(|e| is_temp_name(e.as_ref().unwrap().file_name().to_str().unwrap()))
            .count();
        assert_eq!(temps, 0);
    }

    #[test]
    fn missing_directory_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("no-such-dir").join("file");
        assert!(write_atomic(&path, b"x").is_err());
    }

    #[test]
    fn path_without_file_name_is_rejected() {
        let err = write_atomic(Path::new("/"), b"x").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn temp_names_are_recognised() {
        assert!(is_temp_name(".v0001.json.tmp.123.0"));
        assert!(is_temp_name(".current.tmp.1.99"));
        assert!(!is_temp_name("v0001.json"));
        assert!(!is_temp_name(".v0001.json.tmp.x.0"));
        assert!(!is_temp_name("v0001.json.tmp.1.0"));
    }

    #[test]
    fn cleans_only_temps_of_dead_writers() {
        let dir = tempfile::tempdir().unwrap();
        // Pid numbers above the kernel's pid_max never belong to a process.
        let dead = dir.path().join(".a.json.tmp.4294967295.0");
        let mine = dir
            .path()
            .join(format!(".b.json.tmp.{}.0", std::process::id()));
        let fresh_dead = dir.path().join(".c.json.tmp.4294967295.1");
        let real = dir.path().join("a.json");
        for p in [&dead, &mine, &real, &fresh_dead] {
            fs::write(p, b"x").unwrap();
        }
        let old = SystemTime::now() - Duration::from_secs(7200);
        for p in [&dead, &mine, &real] {
            let f = OpenOptions::new().write(true).open(p).unwrap();
            f.set_modified(old).unwrap();
        }
        let removed = clean_stale_temps(dir.path()).unwrap();
        assert_eq!(removed, 1);
        assert!(!dead.exists());
        // Too recent: its writer may live in another pid namespace.
        assert!(fresh_dead.exists());
        assert!(mine.exists());
        assert!(real.exists());
    }

    #[test]
    fn fsync_dir_works_on_a_directory() {
        let dir = tempfile::tempdir().unwrap();
        fsync_dir(dir.path()).unwrap();
    }
}
