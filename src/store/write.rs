//! Writing samples: insert with per-label eviction and the total-size check, all inside the
//! caller's transaction.

use std::path::Path;

use rusqlite::{params, Connection, OptionalExtension};

use crate::store::codec::{
    embedding_bytes, encode_embedding, short_sha, source_columns, to_u64, to_u64_usize,
};
use crate::store::{
    policy, AddOutcome, BackboneId, EvictionPolicy, NewSample, StoreError, StoreOptions,
};

/// Insert with eviction, inside the caller's transaction (so `add_many` shares it).
pub(super) fn add_in_tx(
    conn: &Connection,
    path: &Path,
    options: &StoreOptions,
    sample: &NewSample,
) -> Result<AddOutcome, StoreError> {
    let sql = |what| move |e| StoreError::sqlite(path, what, e);
    let label = sample.label.as_str();
    check_dimension(conn, path, &sample.backbone, sample.embedding.len(), None)?;
    let seen: i64 = conn
        .prepare_cached(
            "INSERT INTO labels (label, seen) VALUES (?1, 1) \
             ON CONFLICT (label) DO UPDATE SET seen = seen + 1 RETURNING seen",
        )
        .and_then(|mut s| s.query_row(params![label], |r| r.get(0)))
        .map_err(sql("counting a label's samples"))?;
    let (train, holdout) = label_counts(conn, path, label)?;
    let mut count = train + holdout;
    let cap = u64::try_from(options.limits.max_per_label).unwrap_or(u64::MAX);
    let mut evicted = Vec::new();
    // Evicts the label's `j`-th sample in id order. `false` when there is none, which can only
    // happen in a hand-edited file; it ends the loops below instead of spinning.
    let mut evict_nth = |j: u64| -> Result<bool, StoreError> {
        let Some(id) = nth_of_label(conn, path, label, j)? else {
            return Ok(false);
        };
        delete(conn, path, id)?;
        evicted.push(id);
        Ok(true)
    };
    let mut kept = true;
    match options.limits.per_label_policy {
        EvictionPolicy::Oldest => {
            while count >= cap && evict_nth(0)? {
                count -= 1;
            }
        }
        EvictionPolicy::Reservoir { seed } => {
            // Each sample offered bumped `seen`, so seen > count; max() guards a hand-edited db.
            let n = to_u64(seen).max(count + 1);
            // A lowered cap: trim uniformly at random down to it first.
            let mut round = 1;
            while count > cap && evict_nth(policy::draw_below(seed, label, n, round, count))? {
                count -= 1;
                round += 1;
            }
            if count == cap {
                // Algorithm R: keep the n-th with probability cap/n, replacing a uniform victim.
                let j = policy::draw_below(seed, label, n, 0, n);
                if j < cap {
                    evict_nth(j)?;
                } else {
                    kept = false;
                }
            }
        }
    }
    let (train, holdout) = if evicted.is_empty() {
        (train, holdout)
    } else {
        label_counts(conn, path, label)?
    };
    let split = policy::split_for_next(train, holdout, options.holdout_fraction);
    let sample_bytes = embedding_bytes(&sample.embedding).saturating_add(
        sample
            .thumbnail_jpeg
            .as_ref()
            .map_or(0, |t| to_u64_usize(t.len())),
    );
    if kept {
        let would_be = total_bytes(conn, path)?.saturating_add(sample_bytes);
        if would_be > options.limits.max_total_bytes {
            return Err(StoreError::StoreFull {
                path: path.to_path_buf(),
                sample_bytes,
                would_be,
                max_total_bytes: options.limits.max_total_bytes,
            });
        }
    }
    let (kind, detail) = source_columns(&sample.source);
    conn.prepare_cached(
        "INSERT INTO samples (label, split, model_sha256, embedding_tensor, source_kind, \
         source_detail, created_unix_ms, embedding, thumbnail_jpeg) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )
    .and_then(|mut s| {
        s.execute(params![
            label,
            split.as_str(),
            sample.backbone.model_sha256,
            sample.backbone.embedding_tensor,
            kind,
            detail,
            sample.created_unix_ms,
            encode_embedding(&sample.embedding),
            sample.thumbnail_jpeg,
        ])
    })
    .map_err(sql("inserting a sample"))?;
    let id = conn.last_insert_rowid();
    if !kept {
        // Inserted then dropped, so the id is real and never reused: the outcome reports the
        // sample as offered and evicted, exactly what reservoir sampling did with it.
        delete(conn, path, id)?;
        evicted.push(id);
    }
    Ok(AddOutcome {
        id,
        split,
        kept,
        evicted,
    })
}

/// (train, holdout) counts of a label.
fn label_counts(conn: &Connection, path: &Path, label: &str) -> Result<(u64, u64), StoreError> {
    let (t, h): (i64, i64) = conn
        .prepare_cached(
            "SELECT coalesce(sum(split = 'train'), 0), coalesce(sum(split = 'holdout'), 0) \
             FROM samples WHERE label = ?1",
        )
        .and_then(|mut s| s.query_row(params![label], |r| Ok((r.get(0)?, r.get(1)?))))
        .map_err(|e| StoreError::sqlite(path, "counting a label's samples", e))?;
    Ok((to_u64(t), to_u64(h)))
}

/// Id of the label's `n`-th sample in id order (0 = oldest).
fn nth_of_label(
    conn: &Connection,
    path: &Path,
    label: &str,
    n: u64,
) -> Result<Option<i64>, StoreError> {
    conn.prepare_cached("SELECT id FROM samples WHERE label = ?1 ORDER BY id LIMIT 1 OFFSET ?2")
        .and_then(|mut s| {
            s.query_row(params![label, i64::try_from(n).unwrap_or(i64::MAX)], |r| {
                r.get(0)
            })
            .optional()
        })
        .map_err(|e| StoreError::sqlite(path, "choosing a sample to evict", e))
}

fn delete(conn: &Connection, path: &Path, id: i64) -> Result<(), StoreError> {
    conn.prepare_cached("DELETE FROM samples WHERE id = ?1")
        .and_then(|mut s| s.execute(params![id]))
        .map_err(|e| StoreError::sqlite(path, "evicting a sample", e))?;
    Ok(())
}

pub(super) fn total_bytes(conn: &Connection, path: &Path) -> Result<u64, StoreError> {
    let total: i64 = conn
        .prepare_cached("SELECT payload_bytes FROM store_totals WHERE id = 1")
        .and_then(|mut s| s.query_row([], |r| r.get(0)))
        .map_err(|e| StoreError::sqlite(path, "reading the store size", e))?;
    Ok(to_u64(total))
}

/// Refuses an embedding whose dimension differs from the samples already stored for the same
/// backbone: it means the backbone id does not describe the model that computed it, and a
/// training set of mixed dimensions is unusable.
pub(super) fn check_dimension(
    conn: &Connection,
    path: &Path,
    backbone: &BackboneId,
    dim: usize,
    except_id: Option<i64>,
) -> Result<(), StoreError> {
    let stored: Option<i64> = conn
        .prepare_cached(
            "SELECT length(embedding) FROM samples \
             WHERE model_sha256 = ?1 AND embedding_tensor = ?2 AND id IS NOT ?3 LIMIT 1",
        )
        .and_then(|mut s| {
            s.query_row(
                params![backbone.model_sha256, backbone.embedding_tensor, except_id],
                |r| r.get(0),
            )
            .optional()
        })
        .map_err(|e| StoreError::sqlite(path, "checking the embedding dimension", e))?;
    match stored {
        Some(bytes) if to_u64(bytes) != to_u64_usize(dim) * 4 => Err(StoreError::InvalidSample {
            reason: format!(
                "the embedding has {dim} values but the samples already stored for backbone \
                 {}/{} have {}; the backbone id does not match the model that computed this \
                 embedding",
                short_sha(&backbone.model_sha256),
                backbone.embedding_tensor,
                bytes / 4
            ),
        }),
        _ => Ok(()),
    }
}
