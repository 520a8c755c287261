//! Tests on real SQLite files in temporary directories.

use super::schema::{self, Migration};
use super::*;
use std::fs;

fn bb(n: u8) -> BackboneId {
    BackboneId {
        model_sha256: format!("{n:02x}").repeat(32),
        embedding_tensor: "features".into(),
    }
}

fn sample(label: &str, v: f32) -> NewSample {
    NewSample {
        label: label.into(),
        embedding: vec![v, -v, 0.5, 1.0],
        backbone: bb(1),
        source: SampleSource::CameraFrame,
        created_unix_ms: 1_700_000_000_000,
        thumbnail_jpeg: Some(vec![0xFF, 0xD8, 0xFF, 0xD9]),
    }
}

fn db_path(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("samples.db")
}

fn open_limits(path: &Path, limits: StoreLimits) -> SampleStore {
    SampleStore::open_with(
        path,
        StoreOptions {
            limits,
            ..StoreOptions::default()
        },
    )
    .unwrap()
}

fn ids(store: &SampleStore, label: Option<&str>) -> Vec<i64> {
    store
        .list(label, usize::MAX, 0)
        .unwrap()
        .into_iter()
        .map(|m| m.id)
        .collect()
}

fn pragma_i64(store: &SampleStore, name: &str) -> i64 {
    store
        .conn
        .pragma_query_value(None, name, |r| r.get(0))
        .unwrap()
}

/// A populated store, closed, so its file can be tampered with.
fn closed_store(path: &Path, n: usize) {
    let mut store = SampleStore::open(path).unwrap();
    for i in 0..n {
        let mut s = sample(if i % 2 == 0 { "cat" } else { "dog" }, i as f32);
        s.thumbnail_jpeg = Some(vec![i as u8; 3000]);
        store.add(s).unwrap();
    }
    store.close().unwrap();
}

fn dir_listing(path: &Path) -> Vec<std::ffi::OsString> {
    let mut names: Vec<_> = fs::read_dir(path.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    names.sort();
    names
}

/// Asserts that opening fails as `check` expects, leaves the file byte for byte as it was and
/// creates nothing beside it (no -wal, no -shm).
fn assert_refused_unchanged(path: &Path, check: impl Fn(&StoreError) -> bool) -> String {
    let (before, listing) = (fs::read(path).unwrap(), dir_listing(path));
    let err = SampleStore::open(path).unwrap_err();
    assert!(check(&err), "unexpected error: {err:?}");
    assert_eq!(fs::read(path).unwrap(), before, "the file was modified");
    assert_eq!(dir_listing(path), listing, "files were created");
    let msg = err.to_string();
    assert!(msg.contains(&path.display().to_string()), "{msg}");
    assert!(msg.contains("NOT modified"), "{msg}");
    msg
}

#[test]
fn round_trip_of_every_field() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let mut store = SampleStore::open(&path).unwrap();
    let special = vec![
        0.0,
        -0.0,
        f32::MIN_POSITIVE / 2.0,
        f32::MAX,
        f32::MIN,
        1e-30,
        3.25,
    ];
    let sources = [
        SampleSource::File {
            path: "/var/lib/adaptd/in/ü cat.jpg".into(),
        },
        SampleSource::Mqtt {
            topic: "adaptd/pi/samples/cat".into(),
        },
        SampleSource::CameraFrame,
        SampleSource::Microphone,
        SampleSource::Web {
            name: "alice.jpg".into(),
        },
        SampleSource::DetectionCrop {
            class: "person".into(),
        },
    ];
    let mut added = Vec::new();
    for (i, source) in sources.into_iter().enumerate() {
        let new = NewSample {
            label: NONE_LABEL.into(),
            embedding: special.clone(),
            backbone: bb(7),
            source,
            created_unix_ms: -5 + i as i64,
            thumbnail_jpeg: if i == 2 {
                None
            } else {
                Some(vec![i as u8; 1000 + i])
            },
        };
        let out = store.add(new.clone()).unwrap();
        assert!(out.kept && out.evicted.is_empty());
        added.push((out, new));
    }
    drop(store);
    let store = SampleStore::open(&path).unwrap();
    for (out, new) in added {
        let got = store.get(out.id).unwrap().unwrap();
        assert_eq!(got.id, out.id);
        assert_eq!(got.split, out.split);
        assert_eq!(got.label, new.label);
        assert_eq!(got.backbone, new.backbone);
        assert_eq!(got.source, new.source);
        assert_eq!(got.created_unix_ms, new.created_unix_ms);
        assert_eq!(got.thumbnail_jpeg, new.thumbnail_jpeg);
        let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&got.embedding), bits(&new.embedding));
        let meta = store.list(Some("none"), 1, 0).unwrap().remove(0);
        assert_eq!(meta.embedding_dim, 7);
    }
    assert!(store.get(9999).unwrap().is_none());
}

#[test]
fn wal_synchronous_full_and_foreign_keys_are_really_set() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    for _ in 0..2 {
        let store = SampleStore::open(&path).unwrap();
        let mode: String = store
            .conn
            .pragma_query_value(None, "journal_mode", |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        assert_eq!(pragma_i64(&store, "synchronous"), 2, "2 = FULL");
        assert_eq!(pragma_i64(&store, "foreign_keys"), 1);
        assert_eq!(pragma_i64(&store, "busy_timeout"), 5000);
        assert_eq!(
            pragma_i64(&store, "user_version"),
            i64::from(SCHEMA_VERSION)
        );
        assert_eq!(
            pragma_i64(&store, "application_id"),
            i64::from(schema::APPLICATION_ID)
        );
    }
    // WAL is a property of the file, seen by any other connection too.
    let other = rusqlite::Connection::open(&path).unwrap();
    let mode: String = other
        .pragma_query_value(None, "journal_mode", |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
}

#[test]
fn reopen_keeps_data_and_user_version() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    closed_store(&path, 6);
    let store = SampleStore::open(&path).unwrap();
    assert_eq!(pragma_i64(&store, "user_version"), 1);
    let counts = store.counts().unwrap();
    assert_eq!(
        counts,
        vec![
            LabelCount {
                label: "cat".into(),
                train: 2,
                holdout: 1
            },
            LabelCount {
                label: "dog".into(),
                train: 2,
                holdout: 1
            },
        ]
    );
    assert_eq!(store.total_bytes().unwrap(), 6 * (16 + 3000));
}

#[test]
fn splits_are_stratified_per_label_and_never_change() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = SampleStore::open(&db_path(&dir)).unwrap();
    let mut first_splits = Vec::new();
    for i in 0..10 {
        let a = store.add(sample("cat", i as f32)).unwrap();
        first_splits.push((a.id, a.split));
        if i < 2 {
            store.add(sample("dog", i as f32)).unwrap();
        }
        if i >= 1 {
            // After every insert, a label with >= 2 samples has both splits.
            let c = store.counts().unwrap();
            assert!(c.iter().all(|c| c.train >= 1 && c.holdout >= 1), "{c:?}");
        }
    }
    let counts = store.counts().unwrap();
    assert_eq!(
        counts[0],
        LabelCount {
            label: "cat".into(),
            train: 8,
            holdout: 2
        }
    );
    assert_eq!(
        counts[1],
        LabelCount {
            label: "dog".into(),
            train: 1,
            holdout: 1
        }
    );
    // The 2nd and the 10th sample of "cat" are the holdout ones.
    let holdout: Vec<usize> = first_splits
        .iter()
        .enumerate()
        .filter(|(_, (_, s))| *s == Split::Holdout)
        .map(|(k, _)| k)
        .collect();
    assert_eq!(holdout, [1, 9]);
    for _ in 0..20 {
        store.add(sample("cat", 1.0)).unwrap();
    }
    for (id, split) in first_splits {
        assert_eq!(
            store.get(id).unwrap().unwrap().split,
            split,
            "split of {id} changed"
        );
    }
    assert_eq!(store.counts().unwrap()[0].holdout, 6, "30 samples at 0.2");
}

#[test]
fn removing_the_only_holdout_is_repaired_by_the_next_sample() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = SampleStore::open(&db_path(&dir)).unwrap();
    store.add(sample("cat", 0.0)).unwrap();
    let second = store.add(sample("cat", 1.0)).unwrap();
    assert_eq!(second.split, Split::Holdout);
    assert!(store.remove(second.id).unwrap());
    assert!(!store.remove(second.id).unwrap());
    assert_eq!(store.add(sample("cat", 2.0)).unwrap().split, Split::Holdout);
}

#[test]
fn per_label_cap_evicts_the_oldest() {
    let dir = tempfile::tempdir().unwrap();
    let limits = StoreLimits {
        max_per_label: 3,
        per_label_policy: EvictionPolicy::Oldest,
        max_total_bytes: u64::MAX,
    };
    let mut store = open_limits(&db_path(&dir), limits);
    let mut all = Vec::new();
    for i in 0..6 {
        let out = store.add(sample("cat", i as f32)).unwrap();
        store.add(sample("dog", i as f32)).unwrap();
        assert!(out.kept);
        if i < 3 {
            assert!(out.evicted.is_empty());
        } else {
            assert_eq!(out.evicted, vec![all[i - 3]]);
        }
        all.push(out.id);
        let c = &store.counts().unwrap()[0];
        if i >= 1 {
            assert!(c.train >= 1 && c.holdout >= 1, "{c:?}");
        }
    }
    assert_eq!(ids(&store, Some("cat")), all[3..].to_vec());
    assert_eq!(ids(&store, Some("dog")).len(), 3);

    // A lowered cap shrinks the label on its next sample.
    store
        .set_limits(StoreLimits {
            max_per_label: 1,
            ..store.options().limits.clone()
        })
        .unwrap();
    let out = store.add(sample("cat", 9.0)).unwrap();
    assert_eq!(out.evicted, all[3..].to_vec());
    assert_eq!(ids(&store, Some("cat")), vec![out.id]);
}

fn reservoir_run(
    path: &Path,
    seed: u64,
    offers: usize,
    reopen_at: Option<usize>,
) -> Vec<AddOutcome> {
    let limits = StoreLimits {
        max_per_label: 10,
        per_label_policy: EvictionPolicy::Reservoir { seed },
        max_total_bytes: u64::MAX,
    };
    let mut store = open_limits(path, limits.clone());
    let mut outs = Vec::new();
    for i in 0..offers {
        if Some(i) == reopen_at {
            store.close().unwrap();
            store = open_limits(path, limits.clone());
        }
        outs.push(store.add(sample("cat", i as f32)).unwrap());
        let c = &store.counts().unwrap()[0];
        assert_eq!(
            c.train + c.holdout,
            (i + 1).min(10),
            "exactly the cap is kept"
        );
        if i >= 1 {
            assert!(c.train >= 1 && c.holdout >= 1, "{c:?}");
        }
    }
    outs
}

#[test]
fn reservoir_keeps_exactly_cap_deterministically() {
    let dir = tempfile::tempdir().unwrap();
    let a = reservoir_run(&dir.path().join("a.db"), 42, 100, None);
    let b = reservoir_run(&dir.path().join("b.db"), 42, 100, Some(50));
    let c = reservoir_run(&dir.path().join("c.db"), 43, 100, None);
    assert_eq!(a, b, "same seed, same decisions, across a restart too");
    assert_ne!(a, c, "another seed decides differently");
    // Not-kept samples are reported as evicted, and the reservoir reaches back in time.
    let store = SampleStore::open(&dir.path().join("a.db")).unwrap();
    let kept = ids(&store, Some("cat"));
    assert_eq!(kept.len(), 10);
    let dropped = a.iter().filter(|o| !o.kept).count();
    assert!(
        dropped > 50,
        "most of 90 late offers are discarded: {dropped}"
    );
    assert!(a
        .iter()
        .filter(|o| !o.kept)
        .all(|o| o.evicted == vec![o.id]));
    let first_half: Vec<i64> = a[..50].iter().map(|o| o.id).collect();
    assert!(kept.iter().any(|id| first_half.contains(id)), "{kept:?}");
    assert!(a[..10].iter().all(|o| o.kept && o.evicted.is_empty()));
}

#[test]
fn total_cap_refuses_and_rolls_back_evictions() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    // Each sample is 16 embedding bytes + 4 thumbnail bytes = 20.
    let limits = StoreLimits {
        max_per_label: 1,
        per_label_policy: EvictionPolicy::Oldest,
        max_total_bytes: 50,
    };
    let mut store = open_limits(&path, limits);
    store.add(sample("cat", 1.0)).unwrap();
    store.add(sample("dog", 1.0)).unwrap();
    assert_eq!(store.total_bytes().unwrap(), 40);
    let err = store.add(sample("bird", 1.0)).unwrap_err();
    assert!(
        matches!(err, StoreError::StoreFull { would_be: 60, .. }),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("full") && msg.contains("nothing was written"),
        "{msg}"
    );
    // Replacing within a label (per-label eviction frees the room) still works...
    let dog = store.add(sample("dog", 2.0)).unwrap();
    assert_eq!(dog.evicted.len(), 1);
    // ...but not when the newcomer is bigger than the room: the eviction is rolled back too.
    let before = ids(&store, None);
    let mut big = sample("dog", 3.0);
    big.thumbnail_jpeg = Some(vec![0; 100]);
    assert!(matches!(store.add(big), Err(StoreError::StoreFull { .. })));
    assert_eq!(ids(&store, None), before);
    assert_eq!(store.total_bytes().unwrap(), 40);
    // The seen-counter bump was rolled back with it.
    let seen: i64 = store
        .conn
        .query_row("SELECT seen FROM labels WHERE label = 'dog'", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(seen, 2);
}

#[test]
fn bad_labels_and_unknown_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = SampleStore::open(&db_path(&dir)).unwrap();
    for bad in [
        "",
        "Cat",
        "a b",
        "a/b",
        "a+",
        "#",
        "-x",
        "x.y",
        &"a".repeat(65),
    ] {
        let err = store.add(sample(bad, 1.0)).unwrap_err();
        assert!(
            matches!(err, StoreError::InvalidLabel { .. }),
            "{bad}: {err:?}"
        );
        let msg = err.to_string();
        assert!(msg.contains(&format!("{bad:?}")) || bad.len() > 64, "{msg}");
        assert!(msg.contains("lower-case a-z"), "{msg}");
    }
    let err = store.add(sample(UNKNOWN_LABEL, 1.0)).unwrap_err();
    assert!(matches!(err, StoreError::ReservedLabel { .. }), "{err:?}");
    assert!(err.to_string().contains("reserved"));
    assert!(store.add(sample(NONE_LABEL, 1.0)).is_ok());
    assert!(store.add(sample(&"a".repeat(64), 1.0)).is_ok());
    assert!(matches!(
        store.list(Some("Bad"), 10, 0),
        Err(StoreError::InvalidLabel { .. })
    ));
    assert!(matches!(
        store.remove_label("a b"),
        Err(StoreError::InvalidLabel { .. })
    ));
    assert_eq!(store.counts().unwrap().len(), 2);
}

#[test]
fn bad_samples_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = SampleStore::open(&db_path(&dir)).unwrap();
    let mut s = sample("cat", 1.0);
    s.embedding[2] = f32::NAN;
    let err = store.add(s).unwrap_err().to_string();
    assert!(err.contains("value 2 is NaN"), "{err}");
    let mut s = sample("cat", 1.0);
    s.embedding.clear();
    assert!(matches!(
        store.add(s),
        Err(StoreError::InvalidSample { .. })
    ));
    let mut s = sample("cat", 1.0);
    s.backbone.model_sha256 = "AB".repeat(32);
    assert!(store
        .add(s)
        .unwrap_err()
        .to_string()
        .contains("lower-case hex"));
    store.add(sample("cat", 1.0)).unwrap();
    let mut s = sample("dog", 1.0);
    s.embedding.push(1.0);
    let err = store.add(s).unwrap_err().to_string();
    assert!(
        err.contains("has 5 values") && err.contains("have 4"),
        "{err}"
    );
    for bad in [0, 1] {
        let mut o = StoreOptions::default();
        if bad == 0 {
            o.limits.max_per_label = 0;
        } else {
            o.holdout_fraction = 1.0;
        }
        let e = SampleStore::open_with(&db_path(&dir), o).unwrap_err();
        assert!(matches!(e, StoreError::InvalidOptions { .. }), "{e:?}");
    }
}

#[test]
fn add_many_is_all_or_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = SampleStore::open(&db_path(&dir)).unwrap();
    let mut batch: Vec<NewSample> = (0..4).map(|i| sample("cat", i as f32)).collect();
    batch.push(sample("Bad", 0.0));
    let err = store.add_many(batch.clone()).unwrap_err();
    assert!(
        matches!(err, StoreError::InBatch { index: 4, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("nothing of the batch was stored"));
    // A dimension mismatch inside the batch is only seen against earlier rows of the batch.
    batch[4] = sample("dog", 0.0);
    batch[4].embedding.push(0.0);
    let err = store.add_many(batch.clone()).unwrap_err();
    assert!(
        matches!(err, StoreError::InBatch { index: 4, .. }),
        "{err:?}"
    );
    assert!(store.counts().unwrap().is_empty());
    assert_eq!(store.total_bytes().unwrap(), 0);
    batch.pop();
    let outs = store.add_many(batch).unwrap();
    assert_eq!(outs.len(), 4);
    assert_eq!(
        store.counts().unwrap()[0],
        LabelCount {
            label: "cat".into(),
            train: 3,
            holdout: 1
        }
    );
    assert!(store.add_many(Vec::new()).unwrap().is_empty());
}

#[test]
fn list_returns_metadata_in_pages() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = SampleStore::open(&db_path(&dir)).unwrap();
    for i in 0..5 {
        store.add(sample("cat", i as f32)).unwrap();
        store.add(sample("dog", i as f32)).unwrap();
    }
    let all = store.list(None, 100, 0).unwrap();
    assert_eq!(all.len(), 10);
    assert!(all.windows(2).all(|w| w[0].id < w[1].id));
    let page = store.list(Some("dog"), 2, 1).unwrap();
    assert_eq!(page.len(), 2);
    assert!(page.iter().all(|m| m.label == "dog"));
    assert_eq!(page[0].id, all[3].id);
    assert_eq!(page[0].thumbnail_bytes, Some(4));
    assert_eq!(page[0].embedding_dim, 4);
    assert_eq!(page[0].source, SampleSource::CameraFrame);
    assert!(store.list(Some("bird"), 10, 0).unwrap().is_empty());
}

#[test]
fn remove_label_forgets_samples_and_counters() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = SampleStore::open(&db_path(&dir)).unwrap();
    for i in 0..4 {
        store.add(sample("cat", i as f32)).unwrap();
    }
    store.add(sample("dog", 0.0)).unwrap();
    assert_eq!(store.remove_label("cat").unwrap(), 4);
    assert_eq!(store.remove_label("cat").unwrap(), 0);
    assert_eq!(store.remove_label("unknown").unwrap(), 0);
    assert_eq!(store.counts().unwrap().len(), 1);
    assert_eq!(store.total_bytes().unwrap(), 20);
    let rows: i64 = store
        .conn
        .query_row("SELECT count(*) FROM labels WHERE label = 'cat'", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(rows, 0);
    assert_eq!(store.add(sample("cat", 0.0)).unwrap().split, Split::Train);
}

#[test]
fn embeddings_are_filtered_by_backbone_and_split() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = SampleStore::open(&db_path(&dir)).unwrap();
    for i in 0..5 {
        store.add(sample("dog", i as f32)).unwrap();
        store.add(sample("cat", i as f32)).unwrap();
    }
    let mut old = sample("bird", 9.0);
    old.backbone = bb(2);
    old.embedding = vec![1.0; 8];
    let old_with_thumb = store.add(old.clone()).unwrap().id;
    old.thumbnail_jpeg = None;
    let old_without = store.add(old).unwrap().id;

    let set = store.embeddings(&bb(1), None).unwrap();
    assert_eq!(set.labels, ["cat", "dog"]);
    assert_eq!(set.dim, 4);
    assert_eq!(set.samples.len(), 10);
    assert!(set
        .samples
        .iter()
        .all(|r| set.labels[r.label_index] == r.label));
    let holdout = store.embeddings(&bb(1), Some(Split::Holdout)).unwrap();
    assert_eq!(
        holdout.labels, set.labels,
        "class indices agree across splits"
    );
    assert_eq!(holdout.samples.len(), 2);
    assert!(holdout.samples.iter().all(|r| r.split == Split::Holdout));
    assert_eq!(
        store
            .embeddings(&bb(1), Some(Split::Train))
            .unwrap()
            .samples
            .len(),
        8
    );
    assert_eq!(
        store.embeddings(&bb(3), None).unwrap(),
        EmbeddingSet::default()
    );

    let stale = store.count_other_backbones(&bb(1)).unwrap();
    assert_eq!(
        stale,
        StaleCount {
            samples: 2,
            without_thumbnail: 1
        }
    );
    assert_eq!(
        store.stale_ids(&bb(1)).unwrap(),
        [old_with_thumb, old_without]
    );
    assert_eq!(store.backbones().unwrap(), [(bb(1), 10), (bb(2), 2)]);

    // Re-embedding: wrong dimension refused, right one moves the sample over.
    let err = store
        .set_embedding(old_with_thumb, &bb(1), &[1.0; 8])
        .unwrap_err();
    assert!(matches!(err, StoreError::InvalidSample { .. }), "{err:?}");
    let before = store.total_bytes().unwrap();
    store
        .set_embedding(old_with_thumb, &bb(1), &[0.25; 4])
        .unwrap();
    assert_eq!(store.total_bytes().unwrap(), before - 16);
    let moved = store.get(old_with_thumb).unwrap().unwrap();
    assert_eq!((moved.backbone, moved.embedding), (bb(1), vec![0.25; 4]));
    assert_eq!(store.count_other_backbones(&bb(1)).unwrap().samples, 1);
    assert_eq!(
        store.embeddings(&bb(1), None).unwrap().labels,
        ["bird", "cat", "dog"]
    );
    let err = store.set_embedding(12345, &bb(1), &[0.0; 4]).unwrap_err();
    assert!(
        matches!(err, StoreError::NoSuchSample { id: 12345, .. }),
        "{err:?}"
    );
}

#[test]
fn thumbnails_walk_in_batches() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = SampleStore::open(&db_path(&dir)).unwrap();
    let mut expected = Vec::new();
    for i in 0..75u32 {
        let mut s = sample(if i % 3 == 0 { "cat" } else { "dog" }, i as f32);
        s.thumbnail_jpeg = (i % 5 != 0).then(|| i.to_le_bytes().to_vec());
        if i == 70 {
            s.backbone = bb(2);
        }
        expected.push((store.add(s.clone()).unwrap().id, s.thumbnail_jpeg));
    }
    let all: Vec<ThumbnailRow> = store
        .thumbnails(ThumbnailFilter::All)
        .collect::<Result<_, _>>()
        .unwrap();
    let got: Vec<_> = all
        .into_iter()
        .map(|t| (t.meta.id, t.thumbnail_jpeg))
        .collect();
    assert_eq!(got, expected);
    let cats = store
        .thumbnails(ThumbnailFilter::Label("cat".into()))
        .count();
    assert_eq!(cats, 25);
    let stale: Vec<_> = store
        .thumbnails(ThumbnailFilter::OtherBackbones(bb(1)))
        .map(|r| r.unwrap().meta.id)
        .collect();
    assert_eq!(stale, [expected[70].0]);
}

#[test]
fn malformed_embedding_blob_is_a_clear_corruption_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = SampleStore::open(&db_path(&dir)).unwrap();
    let id = store.add(sample("cat", 1.0)).unwrap().id;
    store
        .conn
        .execute(
            "UPDATE samples SET embedding = x'01020304050607' WHERE id = ?1",
            [id],
        )
        .unwrap();
    let err = store.get(id).unwrap_err();
    assert!(
        matches!(err, StoreError::CorruptSample { id: i, .. } if i == id),
        "{err:?}"
    );
    assert!(err.to_string().contains("not a multiple of 4"), "{err}");
    assert!(matches!(
        store.list(None, 10, 0),
        Err(StoreError::CorruptSample { .. })
    ));
    assert!(matches!(
        store.embeddings(&bb(1), None),
        Err(StoreError::CorruptSample { .. })
    ));
    // The way out: remove it.
    assert!(store.remove(id).unwrap());
    assert!(store.list(None, 10, 0).unwrap().is_empty());
}

#[test]
fn disk_full_is_its_own_error_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let mut store = SampleStore::open(&path).unwrap();
    store.add(sample("cat", 1.0)).unwrap();
    let pages = pragma_i64(&store, "page_count");
    let max: i64 = store
        .conn
        .pragma_update_and_check(None, "max_page_count", pages, |r| r.get(0))
        .unwrap();
    assert_eq!(max, pages);
    let (counts, bytes) = (store.counts().unwrap(), store.total_bytes().unwrap());
    let mut big = sample("cat", 2.0);
    big.thumbnail_jpeg = Some(vec![7; 64 * 1024]);
    let err = store.add(big.clone()).unwrap_err();
    assert!(matches!(err, StoreError::DiskFull { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.starts_with("disk full while writing") && msg.contains("nothing was written"),
        "{msg}"
    );
    assert!(msg.contains(&path.display().to_string()), "{msg}");
    assert!(matches!(
        store.add_many(vec![big.clone()]),
        Err(StoreError::DiskFull { .. })
    ));
    assert_eq!(store.counts().unwrap(), counts);
    assert_eq!(store.total_bytes().unwrap(), bytes);
    let check: String = store
        .conn
        .pragma_query_value(None, "integrity_check", |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
    // With room again, the same sample goes in.
    store
        .conn
        .pragma_update_and_check(None, "max_page_count", 1_000_000, |r| r.get::<_, i64>(0))
        .unwrap();
    store.add(big).unwrap();
    drop(store);
    assert_eq!(
        SampleStore::open(&path).unwrap().counts().unwrap()[0].train,
        1
    );
}

/// Garbage over every page but the first (header and schema root stay readable), so only
/// SQLite's own check can tell.
fn scramble_after_first_page(path: &Path) {
    let mut bytes = fs::read(path).unwrap();
    let mut x = 0x1234_5678_u32;
    for b in &mut bytes[4096..] {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        *b = x as u8;
    }
    fs::write(path, &bytes).unwrap();
}

#[test]
fn corrupt_file_is_refused_and_left_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    closed_store(&path, 20);
    assert!(fs::metadata(&path).unwrap().len() > 4 * 4096);
    scramble_after_first_page(&path);
    let msg = assert_refused_unchanged(&path, |e| matches!(e, StoreError::Corrupt { .. }));
    assert!(msg.contains("quick_check found: Tree"), "{msg}");
    assert!(!msg.contains('\n') && !msg.contains("***"), "{msg}");
    // Refusing twice changes nothing either (no repair attempt on the second try).
    assert_refused_unchanged(&path, |e| matches!(e, StoreError::Corrupt { .. }));
}

#[test]
fn non_database_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let mut noise = Vec::new();
    let mut x = 99_u64;
    for _ in 0..10_000 {
        x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        noise.push((x >> 33) as u8);
    }
    for content in [
        noise,
        b"[store]\npath = \"x\"\n".to_vec(),
        b"SQLite".to_vec(),
    ] {
        fs::write(&path, &content).unwrap();
        assert_refused_unchanged(&path, |e| {
            matches!(e, StoreError::NotAStore { .. } | StoreError::Corrupt { .. })
        });
    }
    fs::write(&path, b"this is a text file, not a store").unwrap();
    let msg = assert_refused_unchanged(&path, |e| matches!(e, StoreError::NotAStore { .. }));
    assert!(msg.contains("not an SQLite database"), "{msg}");
    // A directory.
    let sub = dir.path().join("dir.db");
    fs::create_dir(&sub).unwrap();
    assert!(matches!(
        SampleStore::open(&sub),
        Err(StoreError::NotAStore { .. })
    ));
}

#[test]
fn truncated_files_are_refused_and_left_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    closed_store(&path, 20);
    let full = fs::read(&path).unwrap();
    assert!(full.len() >= 8 * 4096, "{}", full.len());
    for cut in [
        full.len() - 100,
        full.len() - 3 * 4096,
        full.len() / 2,
        4096,
        50,
    ] {
        fs::write(&path, &full[..cut]).unwrap();
        let msg = assert_refused_unchanged(&path, |e| matches!(e, StoreError::Corrupt { .. }));
        assert!(msg.contains("truncated"), "cut at {cut}: {msg}");
    }
    fs::write(&path, &full).unwrap();
    assert_eq!(SampleStore::open(&path).unwrap().counts().unwrap().len(), 2);
}

#[test]
fn another_programs_database_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let other = rusqlite::Connection::open(&path).unwrap();
    other
        .execute_batch("CREATE TABLE invoices (id INTEGER)")
        .unwrap();
    drop(other);
    let msg = assert_refused_unchanged(&path, |e| matches!(e, StoreError::NotAStore { .. }));
    assert!(msg.contains("invoices"), "{msg}");
}

#[test]
fn empty_files_and_empty_databases_become_stores() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    fs::write(&path, b"").unwrap();
    SampleStore::open(&path)
        .unwrap()
        .add(sample("cat", 1.0))
        .unwrap();
    let empty_db = dir.path().join("empty.db");
    rusqlite::Connection::open(&empty_db)
        .unwrap()
        .execute_batch("VACUUM")
        .unwrap();
    let store = SampleStore::open(&empty_db).unwrap();
    assert_eq!(pragma_i64(&store, "user_version"), 1);
}

#[test]
fn orphan_wal_and_missing_directory_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let wal = dir.path().join("samples.db-wal");
    fs::write(&wal, b"not empty").unwrap();
    let err = SampleStore::open(&path).unwrap_err();
    assert!(matches!(err, StoreError::NotAStore { .. }), "{err:?}");
    assert!(err.to_string().contains("samples.db-wal"), "{err}");
    assert!(!path.exists(), "nothing was created");
    fs::remove_file(&wal).unwrap();
    fs::write(dir.path().join("samples.db-journal"), b"stale").unwrap();
    assert!(matches!(
        SampleStore::open(&path),
        Err(StoreError::NotAStore { .. })
    ));
    assert!(!path.exists(), "nothing was created");
    // Beside an existing store, a hot rollback journal is refused too: rolling it back writes.
    closed_store(&dir.path().join("other.db"), 2);
    fs::write(dir.path().join("other.db-journal"), b"stale").unwrap();
    let msg = assert_refused_unchanged(&dir.path().join("other.db"), |e| {
        matches!(e, StoreError::Corrupt { .. })
    });
    assert!(msg.contains("rollback-journal"), "{msg}");
    let err = SampleStore::open(&dir.path().join("missing/samples.db")).unwrap_err();
    assert!(matches!(err, StoreError::Io { .. }), "{err:?}");
    assert!(err.to_string().contains("directory"), "{err}");
}

#[test]
fn migrations_are_ordered_and_run_once() {
    for (i, m) in schema::MIGRATIONS.iter().enumerate() {
        assert_eq!(
            m.version as usize,
            i + 1,
            "versions are 1, 2, 3... without gaps"
        );
    }
    assert_eq!(schema::MIGRATIONS.last().unwrap().version, SCHEMA_VERSION);

    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    closed_store(&path, 3);
    // Reopening a current store applies nothing and keeps the version.
    let store = SampleStore::open(&path).unwrap();
    assert_eq!(pragma_i64(&store, "user_version"), 1);
    drop(store);

    // A v2 is one more entry: it runs once, on top of v1, keeping the data.
    let with_v2 = [
        Migration {
            version: 1,
            apply: schema::MIGRATIONS[0].apply,
        },
        Migration {
            version: 2,
            apply: |tx| tx.execute_batch("ALTER TABLE samples ADD COLUMN note TEXT"),
        },
    ];
    let mut conn = rusqlite::Connection::open(&path).unwrap();
    schema::migrate(&mut conn, &path, &with_v2).unwrap();
    schema::migrate(&mut conn, &path, &with_v2).unwrap();
    let v: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(v, 2);
    let n: i64 = conn
        .query_row("SELECT count(*) FROM samples WHERE note IS NULL", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(n, 3);
    drop(conn);

    // This build only knows v1: the v2 store is refused, untouched.
    let msg = assert_refused_unchanged(&path, |e| {
        matches!(
            e,
            StoreError::TooNew {
                found: 2,
                supported: 1,
                ..
            }
        )
    });
    assert!(msg.contains("newer adaptd"), "{msg}");
}

#[test]
fn a_copy_taken_mid_run_opens_with_every_committed_sample() {
    // Copying the files of an open store is what a power cut leaves: the database file plus a
    // WAL holding the commits since the last checkpoint.
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let mut store = SampleStore::open(&path).unwrap();
    for i in 0..30 {
        store.add(sample("cat", i as f32)).unwrap();
    }
    let crash = tempfile::tempdir().unwrap();
    let copy = crash.path().join("we?ird #dir %41 ü").join("samples.db");
    fs::create_dir(copy.parent().unwrap()).unwrap();
    fs::copy(&path, &copy).unwrap();
    let wal = fs::read(dir.path().join("samples.db-wal")).unwrap();
    assert!(!wal.is_empty(), "the commits are still in the WAL");
    fs::write(copy.parent().unwrap().join("samples.db-wal"), wal).unwrap();
    let copied = SampleStore::open(&copy).unwrap();
    assert_eq!(copied.counts().unwrap(), store.counts().unwrap());
    assert_eq!(
        copied.counts().unwrap()[0].train + copied.counts().unwrap()[0].holdout,
        30
    );
}

#[test]
fn odd_characters_in_the_path_are_handled() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a?b#c%20d ü.db");
    closed_store(&path, 2);
    assert_eq!(SampleStore::open(&path).unwrap().counts().unwrap().len(), 2);
    scramble_after_first_page(&path);
    let msg = assert_refused_unchanged(&path, |e| matches!(e, StoreError::Corrupt { .. }));
    assert!(msg.contains("quick_check"), "{msg}");
}
