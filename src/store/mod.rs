//! The sample store: labeled embeddings (plus a small thumbnail each) in one SQLite file, from
//! which the trainer builds a new classifier head without re-running the backbone.
//!
//! # Guarantees and rules
//! - **Durability.** WAL journal with `synchronous=FULL`: when [`SampleStore::add`] (or any
//!   other write) returns `Ok`, its commit has been fsynced; a power cut right after loses
//!   nothing. Every write is one transaction: insert and evictions land together or not at all.
//! - **A damaged file is never touched.** [`SampleStore::open`] validates a file read-only
//!   (SQLite header, size, `PRAGMA quick_check`, application id, schema version) before the
//!   read-write open; a corrupt or foreign file is refused with an error saying it was NOT
//!   modified. See `schema.rs`.
//! - **Splits.** Each sample is assigned train or holdout once, at insert, and never again,
//!   stratified per label: holdout when that brings the label's holdout count to
//!   `max(1, floor(n * holdout_fraction))` capped at `n - 1`, `n` counting the new sample. So
//!   10 samples at 0.2 give 2 holdout, and any label with at least two samples has at least one
//!   of each after every insert (see `policy::split_for_next`).
//! - **Per-label cap** ([`StoreLimits::max_per_label`]): [`EvictionPolicy::Oldest`] drops the
//!   label's first-stored sample (by id, not by `created_unix_ms`: a Pi without a real-time
//!   clock can stamp samples with a wrong time before NTP sync); [`EvictionPolicy::Reservoir`]
//!   keeps a uniform sample of everything ever offered for the label (the n-th sample is kept
//!   with probability cap/n and replaces a uniformly chosen one), reproducibly for a seed.
//! - **Total cap** ([`StoreLimits::max_total_bytes`], embedding + thumbnail bytes): a sample
//!   that would exceed it is REFUSED with [`StoreError::StoreFull`], not made room for by
//!   evicting other labels. Silently dropping the samples of a rare class the user labeled by
//!   hand to make room for a flood of another is worse than a visible "store full"; per-label
//!   caps are the tool that bounds growth, the total cap is the disk's safety net.

mod codec;
pub mod error;
mod policy;
mod schema;
#[cfg(test)]
mod tests;
mod types;
mod write;

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use std::path::{Path, PathBuf};

use codec::{
    decode_embedding, embedding_bytes, embedding_row, encode_embedding, parse_split, to_i64,
    to_u64, to_usize, validate_backbone, validate_embedding, validate_options, validate_sample,
    RawMeta,
};
use write::{add_in_tx, check_dimension, total_bytes};

pub use error::StoreError;
pub use policy::{
    validate_label, validate_training_label, MAX_LABEL_LEN, NONE_LABEL, UNKNOWN_LABEL,
};
pub use schema::SCHEMA_VERSION;
pub use types::{
    AddOutcome, BackboneId, EmbeddingRow, EmbeddingSet, EvictionPolicy, LabelCount, NewSample,
    Sample, SampleMeta, SampleSource, Split, StaleCount, StoreLimits, StoreOptions,
    ThumbnailFilter, ThumbnailRow, MAX_EMBEDDING_DIM,
};

/// The sample store. One per file per process; writes take `&mut self`.
pub struct SampleStore {
    conn: Connection,
    path: PathBuf,
    options: StoreOptions,
}

impl std::fmt::Debug for SampleStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SampleStore")
            .field("path", &self.path)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

/// Columns of [`SampleMeta`], in the order `RawMeta::read` expects. `length()` of a blob reads its
/// size from the record header without loading the blob.
const META_COLUMNS: &str = "id, label, split, model_sha256, embedding_tensor, source_kind, \
                            source_detail, created_unix_ms, length(embedding), \
                            length(thumbnail_jpeg)";
const META_LEN: usize = 10;

/// Rows fetched per query by [`Thumbnails`]: bounds memory at a few MB of thumbnails.
const THUMBNAIL_BATCH: usize = 32;

impl SampleStore {
    /// Opens the store at `path` with default options, creating it if absent (its directory
    /// must exist). See [`SampleStore::open_with`].
    pub fn open(path: &Path) -> Result<SampleStore, StoreError> {
        SampleStore::open_with(path, StoreOptions::default())
    }

    /// Opens the store at `path`, creating it if absent (its directory must exist).
    ///
    /// An existing file is validated read-only first (header, size, `PRAGMA quick_check`, that
    /// it is an adaptd store of a schema version this build knows) and refused, unmodified, if
    /// anything is wrong. `quick_check` reads the whole file: expect about a second per
    /// 20-50 MB on an SD card, once per start.
    pub fn open_with(path: &Path, options: StoreOptions) -> Result<SampleStore, StoreError> {
        validate_options(&options)?;
        let conn = schema::open_store(path, options.busy_timeout, schema::MIGRATIONS)?;
        Ok(SampleStore {
            conn,
            path: path.to_path_buf(),
            options,
        })
    }

    /// Closes the connection, reporting a failure of the final checkpoint (dropping the store
    /// closes it too, silently).
    pub fn close(self) -> Result<(), StoreError> {
        let path = self.path;
        self.conn
            .close()
            .map_err(|(_, e)| StoreError::sqlite(&path, "closing the store", e))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn options(&self) -> &StoreOptions {
        &self.options
    }

    /// Changes the limits (e.g. on a config reload). They apply from the next add: a store over
    /// a lowered per-label cap shrinks as samples of that label arrive, one over a lowered
    /// total cap refuses new samples until samples are removed.
    pub fn set_limits(&mut self, limits: StoreLimits) -> Result<(), StoreError> {
        let options = StoreOptions {
            limits,
            ..self.options.clone()
        };
        validate_options(&options)?;
        self.options = options;
        Ok(())
    }

    fn sql(&self, what: &'static str) -> impl FnOnce(rusqlite::Error) -> StoreError + '_ {
        move |e| StoreError::sqlite(&self.path, what, e)
    }

    /// Stores one sample, evicting per the per-label policy, in one transaction. When this
    /// returns `Ok` the commit is durable (WAL + `synchronous=FULL` fsync the log at commit).
    pub fn add(&mut self, sample: NewSample) -> Result<AddOutcome, StoreError> {
        validate_sample(&sample)?;
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| StoreError::sqlite(&self.path, "starting a transaction", e))?;
        let outcome = add_in_tx(&tx, &self.path, &self.options, &sample)?;
        tx.commit()
            .map_err(|e| StoreError::sqlite(&self.path, "committing a new sample", e))?;
        Ok(outcome)
    }

    /// Stores many samples in ONE transaction (for import): all are stored or none. Every
    /// sample is validated before anything is written; a validation failure comes back as
    /// [`StoreError::InBatch`] with its index. [`StoreError::StoreFull`] and
    /// [`StoreError::DiskFull`] come back unwrapped so callers can match them.
    pub fn add_many(&mut self, samples: Vec<NewSample>) -> Result<Vec<AddOutcome>, StoreError> {
        let in_batch = |index, e| StoreError::InBatch {
            index,
            source: Box::new(e),
        };
        for (i, s) in samples.iter().enumerate() {
            validate_sample(s).map_err(|e| in_batch(i, e))?;
        }
        if samples.is_empty() {
            return Ok(Vec::new());
        }
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| StoreError::sqlite(&self.path, "starting a transaction", e))?;
        let mut outcomes = Vec::with_capacity(samples.len());
        for (i, s) in samples.iter().enumerate() {
            match add_in_tx(&tx, &self.path, &self.options, s) {
                Ok(o) => outcomes.push(o),
                Err(e @ StoreError::InvalidSample { .. }) => return Err(in_batch(i, e)),
                Err(e) => return Err(e),
            }
        }
        tx.commit()
            .map_err(|e| StoreError::sqlite(&self.path, "committing the batch", e))?;
        Ok(outcomes)
    }

    /// Samples per label and split, sorted by label; labels without samples are left out.
    pub fn counts(&self) -> Result<Vec<LabelCount>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT label, coalesce(sum(split = 'train'), 0), \
                        coalesce(sum(split = 'holdout'), 0) \
                 FROM samples GROUP BY label ORDER BY label",
            )
            .map_err(self.sql("counting samples"))?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, i64>(2)?,
                ))
            })
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
            .map_err(self.sql("counting samples"))?;
        Ok(rows
            .into_iter()
            .map(|(label, train, holdout)| LabelCount {
                label,
                train: to_usize(train),
                holdout: to_usize(holdout),
            })
            .collect())
    }

    /// Metadata (no embeddings, no thumbnails) of up to `limit` samples in id order, skipping
    /// `offset`, optionally of one label. A malformed label is an error rather than an empty
    /// list, so a typo in a command is reported as such.
    pub fn list(
        &self,
        label: Option<&str>,
        limit: usize,
        offset: usize,
    ) -> Result<Vec<SampleMeta>, StoreError> {
        let (limit, offset) = (to_i64(limit), to_i64(offset));
        let raw = match label {
            Some(label) => {
                validate_label(label)?;
                self.query_meta(
                    &format!(
                        "SELECT {META_COLUMNS} FROM samples WHERE label = ?1 \
                         ORDER BY id LIMIT ?2 OFFSET ?3"
                    ),
                    params![label, limit, offset],
                    |_| Ok(()),
                )?
            }
            None => self.query_meta(
                &format!("SELECT {META_COLUMNS} FROM samples ORDER BY id LIMIT ?1 OFFSET ?2"),
                params![limit, offset],
                |_| Ok(()),
            )?,
        };
        Ok(raw.into_iter().map(|(m, ())| m).collect())
    }

    /// Metadata of up to `limit` samples, newest first, older than id `before` when given,
    /// optionally of one label: a gallery's pages.
    pub fn list_recent(
        &self,
        label: Option<&str>,
        before: Option<i64>,
        limit: usize,
    ) -> Result<Vec<SampleMeta>, StoreError> {
        if let Some(label) = label {
            validate_label(label)?;
        }
        let raw = self.query_meta(
            &format!(
                "SELECT {META_COLUMNS} FROM samples \
                 WHERE (?1 IS NULL OR label = ?1) AND (?2 IS NULL OR id < ?2) \
                 ORDER BY id DESC LIMIT ?3"
            ),
            params![label, before, to_i64(limit)],
            |_| Ok(()),
        )?;
        Ok(raw.into_iter().map(|(m, ())| m).collect())
    }

    /// The whole sample, or `None` if no sample has this id.
    pub fn get(&self, id: i64) -> Result<Option<Sample>, StoreError> {
        let mut rows = self.query_meta(
            &format!("SELECT {META_COLUMNS}, embedding, thumbnail_jpeg FROM samples WHERE id = ?1"),
            params![id],
            |r| {
                Ok((
                    r.get::<_, Vec<u8>>(META_LEN)?,
                    r.get::<_, Option<Vec<u8>>>(META_LEN + 1)?,
                ))
            },
        )?;
        let Some((meta, (blob, thumbnail_jpeg))) = rows.pop() else {
            return Ok(None);
        };
        let embedding = decode_embedding(&self.path, meta.id, &blob)?;
        Ok(Some(Sample {
            id: meta.id,
            label: meta.label,
            embedding,
            backbone: meta.backbone,
            source: meta.source,
            created_unix_ms: meta.created_unix_ms,
            thumbnail_jpeg,
            split: meta.split,
        }))
    }

    /// Removes one sample; `false` if it did not exist. The label's seen-counter is kept, so
    /// reservoir sampling stays uniform over everything offered.
    pub fn remove(&mut self, id: i64) -> Result<bool, StoreError> {
        let n = self
            .conn
            .execute("DELETE FROM samples WHERE id = ?1", params![id])
            .map_err(self.sql("removing a sample"))?;
        Ok(n > 0)
    }

    /// Removes every sample of `label` and its counters (the "forget" command): a label learned
    /// again later starts from scratch. Returns how many samples were removed.
    pub fn remove_label(&mut self, label: &str) -> Result<usize, StoreError> {
        validate_label(label)?;
        let path = &self.path;
        let sql = |what| move |e| StoreError::sqlite(path, what, e);
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql("starting a transaction"))?;
        let n = tx
            .execute("DELETE FROM samples WHERE label = ?1", params![label])
            .map_err(sql("removing a label's samples"))?;
        tx.execute("DELETE FROM labels WHERE label = ?1", params![label])
            .map_err(sql("removing a label"))?;
        tx.commit().map_err(sql("committing a label removal"))?;
        Ok(n)
    }

    /// The samples of `backbone` (optionally of one split) with their embeddings, for the
    /// trainer. Samples of other backbones are left out: see [`SampleStore::count_other_backbones`].
    pub fn embeddings(
        &self,
        backbone: &BackboneId,
        split: Option<Split>,
    ) -> Result<EmbeddingSet, StoreError> {
        // One read transaction: the label list and the rows come from the same snapshot even
        // if another process writes in between. Dropping it ends it (nothing to commit).
        let _snapshot = self
            .conn
            .unchecked_transaction()
            .map_err(self.sql("starting a read transaction"))?;
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT DISTINCT label FROM samples \
                 WHERE model_sha256 = ?1 AND embedding_tensor = ?2 ORDER BY label",
            )
            .map_err(self.sql("reading labels"))?;
        let labels: Vec<String> = stmt
            .query_map(
                params![backbone.model_sha256, backbone.embedding_tensor],
                |r| r.get(0),
            )
            .and_then(|rows| rows.collect())
            .map_err(self.sql("reading labels"))?;
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT id, label, split, embedding FROM samples \
                 WHERE model_sha256 = ?1 AND embedding_tensor = ?2 \
                   AND (?3 IS NULL OR split = ?3) ORDER BY id",
            )
            .map_err(self.sql("reading embeddings"))?;
        let mut set = EmbeddingSet {
            labels,
            ..EmbeddingSet::default()
        };
        let mut rows = stmt
            .query(params![
                backbone.model_sha256,
                backbone.embedding_tensor,
                split.map(Split::as_str)
            ])
            .map_err(self.sql("reading embeddings"))?;
        // Row by row, decoding straight from SQLite's buffer: peak memory is the decoded set,
        // not the set plus a copy of every blob.
        while let Some(row) = rows.next().map_err(self.sql("reading embeddings"))? {
            let (id, label, split, blob) =
                embedding_row(row).map_err(self.sql("reading embeddings"))?;
            let embedding = decode_embedding(&self.path, id, blob)?;
            if set.samples.is_empty() {
                set.dim = embedding.len();
            } else if embedding.len() != set.dim {
                return Err(self.corrupt_sample(
                    id,
                    format!(
                        "its embedding has {} values but earlier samples of the same backbone \
                         have {}",
                        embedding.len(),
                        set.dim
                    ),
                ));
            }
            let label_index = set.labels.binary_search(&label).map_err(|_| {
                self.corrupt_sample(id, "its label is missing from the label list".into())
            })?;
            set.samples.push(EmbeddingRow {
                id,
                split: parse_split(&self.path, id, &split)?,
                label,
                label_index,
                embedding,
            });
        }
        Ok(set)
    }

    /// How many samples were embedded by a backbone other than `current` ("N samples need
    /// re-embedding"), and how many of those lack a thumbnail and cannot be re-embedded.
    pub fn count_other_backbones(&self, current: &BackboneId) -> Result<StaleCount, StoreError> {
        let (samples, without_thumbnail): (i64, i64) = self
            .conn
            .query_row(
                "SELECT count(*), coalesce(sum(thumbnail_jpeg IS NULL), 0) FROM samples \
                 WHERE NOT (model_sha256 = ?1 AND embedding_tensor = ?2)",
                params![current.model_sha256, current.embedding_tensor],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .map_err(self.sql("counting samples of other backbones"))?;
        Ok(StaleCount {
            samples: to_usize(samples),
            without_thumbnail: to_usize(without_thumbnail),
        })
    }

    /// Ids of the samples not of `current`, in id order: the work list of a re-embedding run,
    /// which fetches each with [`SampleStore::get`] and writes it back with
    /// [`SampleStore::set_embedding`] (so the run can stop and resume anywhere).
    pub fn stale_ids(&self, current: &BackboneId) -> Result<Vec<i64>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT id FROM samples \
                 WHERE NOT (model_sha256 = ?1 AND embedding_tensor = ?2) ORDER BY id",
            )
            .map_err(self.sql("listing samples of other backbones"))?;
        let ids = stmt
            .query_map(
                params![current.model_sha256, current.embedding_tensor],
                |r| r.get(0),
            )
            .and_then(|rows| rows.collect())
            .map_err(self.sql("listing samples of other backbones"))?;
        Ok(ids)
    }

    /// Every backbone in the store with its sample count, for status output.
    pub fn backbones(&self) -> Result<Vec<(BackboneId, usize)>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT model_sha256, embedding_tensor, count(*) FROM samples \
                 GROUP BY model_sha256, embedding_tensor ORDER BY 3 DESC, 1, 2",
            )
            .map_err(self.sql("listing backbones"))?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    BackboneId {
                        model_sha256: r.get(0)?,
                        embedding_tensor: r.get(1)?,
                    },
                    to_usize(r.get::<_, i64>(2)?),
                ))
            })
            .and_then(|rows| rows.collect())
            .map_err(self.sql("listing backbones"))?;
        Ok(rows)
    }

    /// Walks samples with their thumbnails in id order, a batch of 32 rows per query, so an
    /// export of thousands of thumbnails never holds them all in memory. Each batch is its own
    /// read: samples added or removed while walking may or may not be seen, none twice.
    pub fn thumbnails(&self, filter: ThumbnailFilter) -> Thumbnails<'_> {
        Thumbnails {
            store: self,
            filter,
            after_id: i64::MIN,
            batch: Vec::new().into_iter(),
            done: false,
        }
    }

    fn thumbnail_batch(
        &self,
        filter: &ThumbnailFilter,
        after_id: i64,
    ) -> Result<Vec<ThumbnailRow>, StoreError> {
        let select = format!("SELECT {META_COLUMNS}, thumbnail_jpeg FROM samples WHERE id > ?1");
        let thumb = |r: &rusqlite::Row<'_>| r.get::<_, Option<Vec<u8>>>(META_LEN);
        let limit = to_i64(THUMBNAIL_BATCH);
        let rows = match filter {
            ThumbnailFilter::All => self.query_meta(
                &format!("{select} ORDER BY id LIMIT ?2"),
                params![after_id, limit],
                thumb,
            )?,
            ThumbnailFilter::Label(label) => self.query_meta(
                &format!("{select} AND label = ?2 ORDER BY id LIMIT ?3"),
                params![after_id, label, limit],
                thumb,
            )?,
            ThumbnailFilter::OtherBackbones(b) => self.query_meta(
                &format!(
                    "{select} AND NOT (model_sha256 = ?2 AND embedding_tensor = ?3) \
                     ORDER BY id LIMIT ?4"
                ),
                params![after_id, b.model_sha256, b.embedding_tensor, limit],
                thumb,
            )?,
        };
        Ok(rows
            .into_iter()
            .map(|(meta, thumbnail_jpeg)| ThumbnailRow {
                meta,
                thumbnail_jpeg,
            })
            .collect())
    }

    /// Replaces a sample's embedding and backbone (re-embedding after a backbone upgrade). Its
    /// label, split and thumbnail stay. Refused with [`StoreError::StoreFull`] only if it grows
    /// the store past `max_total_bytes`.
    pub fn set_embedding(
        &mut self,
        id: i64,
        backbone: &BackboneId,
        embedding: &[f32],
    ) -> Result<(), StoreError> {
        validate_backbone(backbone)?;
        validate_embedding(embedding)?;
        let path = &self.path;
        let sql = |what| move |e| StoreError::sqlite(path, what, e);
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql("starting a transaction"))?;
        let old_bytes: i64 = tx
            .query_row(
                "SELECT length(embedding) FROM samples WHERE id = ?1",
                params![id],
                |r| r.get(0),
            )
            .optional()
            .map_err(sql("reading a sample"))?
            .ok_or_else(|| StoreError::NoSuchSample {
                path: path.clone(),
                id,
            })?;
        check_dimension(&tx, path, backbone, embedding.len(), Some(id))?;
        let new_bytes = embedding_bytes(embedding);
        let total = total_bytes(&tx, path)?;
        let would_be = total
            .saturating_sub(to_u64(old_bytes))
            .saturating_add(new_bytes);
        if would_be > total && would_be > self.options.limits.max_total_bytes {
            return Err(StoreError::StoreFull {
                path: path.clone(),
                sample_bytes: new_bytes,
                would_be,
                max_total_bytes: self.options.limits.max_total_bytes,
            });
        }
        tx.execute(
            "UPDATE samples SET model_sha256 = ?2, embedding_tensor = ?3, embedding = ?4 \
             WHERE id = ?1",
            params![
                id,
                backbone.model_sha256,
                backbone.embedding_tensor,
                encode_embedding(embedding)
            ],
        )
        .map_err(sql("updating an embedding"))?;
        tx.commit().map_err(sql("committing an embedding update"))?;
        Ok(())
    }

    /// Embedding + thumbnail bytes stored: what `max_total_bytes` limits. The file is larger
    /// (pages, indexes, WAL).
    pub fn total_bytes(&self) -> Result<u64, StoreError> {
        total_bytes(&self.conn, &self.path)
    }

    fn corrupt_sample(&self, id: i64, detail: String) -> StoreError {
        StoreError::CorruptSample {
            path: self.path.clone(),
            id,
            detail,
        }
    }

    /// Runs a query whose first columns are [`META_COLUMNS`]; `extra` reads the columns after.
    fn query_meta<T>(
        &self,
        sql: &str,
        params: &[&dyn rusqlite::ToSql],
        extra: impl Fn(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
    ) -> Result<Vec<(SampleMeta, T)>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(sql)
            .map_err(self.sql("reading samples"))?;
        let raw = stmt
            .query_map(params, |r| Ok((RawMeta::read(r)?, extra(r)?)))
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
            .map_err(self.sql("reading samples"))?;
        raw.into_iter()
            .map(|(m, t)| Ok((m.decode(&self.path)?, t)))
            .collect()
    }
}

/// Iterator over samples with thumbnails; see [`SampleStore::thumbnails`]. Stops after the
/// first error.
pub struct Thumbnails<'a> {
    store: &'a SampleStore,
    filter: ThumbnailFilter,
    after_id: i64,
    batch: std::vec::IntoIter<ThumbnailRow>,
    done: bool,
}

impl Iterator for Thumbnails<'_> {
    type Item = Result<ThumbnailRow, StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(row) = self.batch.next() {
            return Some(Ok(row));
        }
        if self.done {
            return None;
        }
        match self.store.thumbnail_batch(&self.filter, self.after_id) {
            Ok(rows) => {
                self.done = rows.len() < THUMBNAIL_BATCH;
                if let Some(last) = rows.last() {
                    self.after_id = last.meta.id;
                }
                self.batch = rows.into_iter();
                self.batch.next().map(Ok)
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}
