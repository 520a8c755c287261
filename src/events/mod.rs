//! The event store: every tracked object's last state, in an SQLite file of its own
//! (`events.sqlite` in the state dir), for `adaptd events list|show` and `cmd/events`.
//!
//! One row per object, rewritten on each `new`/`update`/`end` (an object's history is its
//! MQTT messages; what a person looks back for is what it was). A file of its own, not a
//! table of the sample store: events are written several times a second on a busy camera and
//! pruned all the time, samples rarely and kept; neither should lock or bloat the other.
//! WAL with `synchronous = FULL`, like the sample store. Retention: rows older than
//! `retain_days` (by end, for ended objects) and beyond the newest `max_events` go.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{params, Connection, OpenFlags, OptionalExtension};
use serde::{Deserialize, Serialize};

use crate::wire::TrackedObject;

/// `PRAGMA application_id` of event stores ("adev"): tells ours from another SQLite file.
const APPLICATION_ID: i32 = 0x6164_6576;

/// `[events]`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EventsConfig {
    /// Store objects at all (they are published on MQTT either way).
    pub enabled: bool,
    /// Days an ended object is kept.
    pub retain_days: f64,
    /// Objects kept at most; the oldest go first.
    pub max_events: u32,
}

impl Default for EventsConfig {
    fn default() -> Self {
        EventsConfig {
            enabled: true,
            retain_days: 10.0,
            max_events: 10_000,
        }
    }
}

impl EventsConfig {
    /// Range rules; each message names the key and what is allowed.
    pub fn validate(&self) -> Vec<String> {
        let mut p = Vec::new();
        if !(self.retain_days.is_finite() && self.retain_days > 0.0 && self.retain_days <= 3650.0) {
            p.push(format!(
                "[events].retain_days = {} is out of range; allowed: above 0 up to 3650",
                self.retain_days
            ));
        }
        if !(1..=10_000_000).contains(&self.max_events) {
            p.push(format!(
                "[events].max_events = {} is out of range; allowed: 1 to 10000000",
                self.max_events
            ));
        }
        p
    }
}

/// Why the event store could not be used; each message names the file.
#[derive(Debug, thiserror::Error)]
pub enum EventStoreError {
    #[error("{path}: {what}: {source}")]
    Sqlite {
        path: PathBuf,
        what: &'static str,
        source: rusqlite::Error,
    },
    #[error(
        "{path}: not an adaptd event store (another program's SQLite file?). The file was NOT \
         modified; move it away so a new event store can be created there"
    )]
    NotOurs { path: PathBuf },
    #[error("{path}: event {id} is unreadable ({detail}); remove it with sqlite3, or move the file away")]
    Corrupt {
        path: PathBuf,
        id: String,
        detail: String,
    },
    #[error("no event store at {path}: the daemon has not recorded an object there yet (is `[events] enabled`? is this the daemon's state_dir?)")]
    Missing { path: PathBuf },
}

/// Which stored objects to list.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Query {
    pub camera: Option<String>,
    pub label: Option<String>,
    pub sub_label: Option<String>,
    /// Objects that started at or after this (unix seconds).
    pub after: Option<f64>,
    /// Objects that started before this (unix seconds).
    pub before: Option<f64>,
    /// Objects that were in this zone at some point.
    pub zone: Option<String>,
    pub limit: usize,
}

/// An open event store.
pub struct EventStore {
    conn: Connection,
    path: PathBuf,
}

impl EventStore {
    /// The file's place in a state dir.
    pub fn path_in(state_dir: &Path) -> PathBuf {
        state_dir.join("events.sqlite")
    }

    /// Opens (creating if absent) for writing: the daemon.
    pub fn open(path: &Path) -> Result<EventStore, EventStoreError> {
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags).map_err(sql(path, "opening"))?;
        let store = EventStore {
            conn,
            path: path.to_path_buf(),
        };
        store.check_ours(true)?;
        store
            .conn
            .busy_timeout(Duration::from_secs(5))
            .map_err(sql(path, "setting the busy timeout"))?;
        store
            .conn
            .execute_batch(
                "PRAGMA journal_mode = WAL;
                 PRAGMA synchronous = FULL;
                 CREATE TABLE IF NOT EXISTS events (
                     id TEXT NOT NULL PRIMARY KEY,
                     camera TEXT NOT NULL,
                     label TEXT NOT NULL,
                     sub_label TEXT,
                     start_time REAL NOT NULL,
                     end_time REAL,
                     body TEXT NOT NULL
                 ) STRICT;
                 CREATE INDEX IF NOT EXISTS events_by_start ON events (start_time);
                 CREATE INDEX IF NOT EXISTS events_by_camera ON events (camera, start_time);",
            )
            .map_err(sql(path, "creating the events table"))?;
        store
            .conn
            .pragma_update(None, "application_id", APPLICATION_ID)
            .map_err(sql(path, "setting the application id"))?;
        Ok(store)
    }

    /// Opens an existing store read-only: `adaptd events`, beside a running daemon.
    pub fn open_read(path: &Path) -> Result<EventStore, EventStoreError> {
        if !path.exists() {
            return Err(EventStoreError::Missing {
                path: path.to_path_buf(),
            });
        }
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags).map_err(sql(path, "opening"))?;
        conn.busy_timeout(Duration::from_secs(5))
            .map_err(sql(path, "setting the busy timeout"))?;
        let store = EventStore {
            conn,
            path: path.to_path_buf(),
        };
        store.check_ours(false)?;
        Ok(store)
    }

    /// Refuses a file that is another program's database (an empty one is ours to set up).
    fn check_ours(&self, may_be_new: bool) -> Result<(), EventStoreError> {
        let id: i32 = self
            .conn
            .pragma_query_value(None, "application_id", |r| r.get(0))
            .map_err(|_| EventStoreError::NotOurs {
                path: self.path.clone(),
            })?;
        let tables: i64 = self
            .conn
            .query_row("SELECT count(*) FROM sqlite_schema", [], |r| r.get(0))
            .map_err(|_| EventStoreError::NotOurs {
                path: self.path.clone(),
            })?;
        let fresh = id == 0 && tables == 0;
        if id == APPLICATION_ID || (fresh && may_be_new) {
            Ok(())
        } else {
            Err(EventStoreError::NotOurs {
                path: self.path.clone(),
            })
        }
    }

    /// Writes an object's current state (inserted or replaced); true when it was new.
    pub fn upsert(&self, o: &TrackedObject) -> Result<bool, EventStoreError> {
        let body = serde_json::to_string(o).map_err(|e| EventStoreError::Corrupt {
            path: self.path.clone(),
            id: o.id.clone(),
            detail: e.to_string(),
        })?;
        let sub_label = o.sub_label.as_ref().map(|s| s.0.as_str());
        let updated = self
            .conn
            .prepare_cached(
                "UPDATE events SET label = ?2, sub_label = ?3, end_time = ?4, body = ?5
                 WHERE id = ?1",
            )
            .and_then(|mut s| s.execute(params![o.id, o.label, sub_label, o.end_time, body]))
            .map_err(sql(&self.path, "writing an event"))?;
        if updated > 0 {
            return Ok(false);
        }
        self.conn
            .prepare_cached(
                "INSERT INTO events (id, camera, label, sub_label, start_time, end_time, body)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )
            .and_then(|mut s| {
                s.execute(params![
                    o.id,
                    o.camera,
                    o.label,
                    sub_label,
                    o.start_time,
                    o.end_time,
                    body
                ])
            })
            .map_err(sql(&self.path, "writing an event"))?;
        Ok(true)
    }

    /// Drops the oldest objects over `max_events` (the cap alone; [`EventStore::prune`] also
    /// applies the age rule); the number removed.
    pub fn cap(&self, max_events: u32) -> Result<usize, EventStoreError> {
        self.conn
            .execute(
                "DELETE FROM events WHERE id IN
                     (SELECT id FROM events ORDER BY start_time DESC LIMIT -1 OFFSET ?1)",
                params![max_events],
            )
            .map_err(sql(&self.path, "pruning events over max_events"))
    }

    /// Deletes what retention says must go; returns the number of rows removed.
    pub fn prune(&self, cfg: &EventsConfig, now_s: f64) -> Result<usize, EventStoreError> {
        let cutoff = now_s - cfg.retain_days * 86_400.0;
        let old = self
            .conn
            .execute(
                "DELETE FROM events WHERE end_time IS NOT NULL AND end_time < ?1",
                params![cutoff],
            )
            .map_err(sql(&self.path, "pruning old events"))?;
        let over = self.cap(cfg.max_events)?;
        Ok(old + over)
    }

    /// Stored objects matching `q`, newest first.
    pub fn list(&self, q: &Query) -> Result<Vec<TrackedObject>, EventStoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT id, body FROM events
                 WHERE (?1 IS NULL OR camera = ?1) AND (?2 IS NULL OR label = ?2)
                   AND (?3 IS NULL OR sub_label = ?3)
                   AND (?4 IS NULL OR start_time >= ?4) AND (?5 IS NULL OR start_time < ?5)
                   AND (?7 IS NULL OR EXISTS
                        (SELECT 1 FROM json_each(body, '$.entered_zones') WHERE value = ?7))
                 ORDER BY start_time DESC LIMIT ?6",
            )
            .map_err(sql(&self.path, "listing events"))?;
        let rows = stmt
            .query_map(
                params![
                    q.camera,
                    q.label,
                    q.sub_label,
                    q.after,
                    q.before,
                    q.limit.min(i64::MAX as usize) as i64,
                    q.zone
                ],
                |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)),
            )
            .map_err(sql(&self.path, "listing events"))?;
        let mut out = Vec::new();
        for row in rows {
            let (id, body) = row.map_err(sql(&self.path, "reading an event"))?;
            out.push(self.decode(id, &body)?);
        }
        Ok(out)
    }

    /// One stored object by id.
    pub fn get(&self, id: &str) -> Result<Option<TrackedObject>, EventStoreError> {
        let body: Option<String> = self
            .conn
            .query_row("SELECT body FROM events WHERE id = ?1", [id], |r| r.get(0))
            .optional()
            .map_err(sql(&self.path, "reading an event"))?;
        body.map(|b| self.decode(id.to_owned(), &b)).transpose()
    }

    /// Drops one stored object; whether it was there. (An object still being tracked comes
    /// back with its next change.)
    pub fn remove(&self, id: &str) -> Result<bool, EventStoreError> {
        self.conn
            .execute("DELETE FROM events WHERE id = ?1", [id])
            .map(|n| n > 0)
            .map_err(sql(&self.path, "removing an event"))
    }

    /// Rows stored.
    pub fn count(&self) -> Result<u64, EventStoreError> {
        self.conn
            .query_row("SELECT count(*) FROM events", [], |r| r.get::<_, i64>(0))
            .map(|n| n.max(0) as u64)
            .map_err(sql(&self.path, "counting events"))
    }

    fn decode(&self, id: String, body: &str) -> Result<TrackedObject, EventStoreError> {
        serde_json::from_str(body).map_err(|e| EventStoreError::Corrupt {
            path: self.path.clone(),
            id,
            detail: e.to_string(),
        })
    }
}

fn sql<'a>(path: &'a Path, what: &'static str) -> impl Fn(rusqlite::Error) -> EventStoreError + 'a {
    move |source| EventStoreError::Sqlite {
        path: path.to_path_buf(),
        what,
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(id: &str, camera: &str, start: f64, end: Option<f64>) -> TrackedObject {
        TrackedObject {
            id: id.into(),
            camera: camera.into(),
            label: "person".into(),
            score: 0.7,
            top_score: 0.8,
            start_time: start,
            end_time: end,
            ..TrackedObject::default()
        }
    }

    #[test]
    fn objects_are_upserted_listed_newest_first_and_filtered() {
        let dir = tempfile::tempdir().unwrap();
        let path = EventStore::path_in(dir.path());
        let s = EventStore::open(&path).unwrap();
        s.upsert(&object("a", "front", 100.0, None)).unwrap();
        s.upsert(&object("b", "yard", 200.0, None)).unwrap();
        let mut a = object("a", "front", 100.0, Some(150.0));
        a.sub_label = Some(("alice".into(), 0.9));
        s.upsert(&a).unwrap();
        assert_eq!(s.count().unwrap(), 2, "an update replaces the row");
        let all = s
            .list(&Query {
                limit: 10,
                ..Query::default()
            })
            .unwrap();
        assert_eq!(
            all.iter().map(|o| o.id.as_str()).collect::<Vec<_>>(),
            ["b", "a"]
        );
        let alice = s
            .list(&Query {
                sub_label: Some("alice".into()),
                limit: 10,
                ..Query::default()
            })
            .unwrap();
        assert_eq!(alice, vec![a.clone()]);
        let front = s
            .list(&Query {
                camera: Some("front".into()),
                after: Some(50.0),
                before: Some(150.0),
                limit: 10,
                ..Query::default()
            })
            .unwrap();
        assert_eq!(front.len(), 1);
        let mut zoned = object("z", "front", 300.0, None);
        zoned.entered_zones = vec!["driveway".into(), "porch".into()];
        s.upsert(&zoned).unwrap();
        let porch = |s: &EventStore| {
            s.list(&Query {
                zone: Some("porch".into()),
                limit: 10,
                ..Query::default()
            })
            .unwrap()
        };
        assert_eq!(porch(&s), vec![zoned]);
        assert!(s.remove("z").unwrap());
        assert!(!s.remove("z").unwrap(), "already gone");
        assert!(porch(&s).is_empty());
        drop(s);
        // A reader beside the writer (the CLI beside the daemon), after a reopen.
        let r = EventStore::open_read(&path).unwrap();
        assert_eq!(r.get("a").unwrap(), Some(a));
        assert_eq!(r.get("zzz").unwrap(), None);
    }

    #[test]
    fn retention_drops_old_ended_objects_then_the_oldest_over_the_cap() {
        let dir = tempfile::tempdir().unwrap();
        let s = EventStore::open(&EventStore::path_in(dir.path())).unwrap();
        let day = 86_400.0;
        s.upsert(&object("old", "c", 0.0, Some(day))).unwrap();
        s.upsert(&object("open", "c", 0.5 * day, None)).unwrap();
        for i in 0..5 {
            s.upsert(&object(&format!("n{i}"), "c", 20.0 * day + i as f64, None))
                .unwrap();
        }
        let cfg = EventsConfig {
            retain_days: 10.0,
            max_events: 4,
            enabled: true,
        };
        let removed = s.prune(&cfg, 21.0 * day).unwrap();
        assert_eq!(removed, 3, "old by age, then open and n0 over the cap");
        let left: Vec<String> = s
            .list(&Query {
                limit: 100,
                ..Query::default()
            })
            .unwrap()
            .into_iter()
            .map(|o| o.id)
            .collect();
        assert_eq!(left, ["n4", "n3", "n2", "n1"]);
    }

    #[test]
    fn another_programs_database_is_refused_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("other.sqlite");
        let c = Connection::open(&path).unwrap();
        c.execute_batch("CREATE TABLE t (x INTEGER); INSERT INTO t VALUES (1);")
            .unwrap();
        drop(c);
        let before = std::fs::read(&path).unwrap();
        let e = EventStore::open(&path).err().expect("refused").to_string();
        assert!(e.contains("not an adaptd event store"), "{e}");
        assert_eq!(std::fs::read(&path).unwrap(), before);
        std::fs::write(dir.path().join("junk"), b"not sqlite at all, just text").unwrap();
        assert!(EventStore::open(&dir.path().join("junk")).is_err());
        let missing = EventStore::open_read(&dir.path().join("none.sqlite"))
            .err()
            .expect("missing")
            .to_string();
        assert!(missing.contains("no event store"), "{missing}");
        assert!(EventsConfig::default().validate().is_empty());
        assert_eq!(
            EventsConfig {
                retain_days: 0.0,
                max_events: 0,
                enabled: true
            }
            .validate()
            .len(),
            2
        );
    }
}
