//! Validation of what comes in, and the encoding of samples into SQLite columns and back.

use std::path::Path;

use crate::store::{
    validate_training_label, BackboneId, NewSample, SampleMeta, SampleSource, Split, StoreError,
    StoreOptions, MAX_EMBEDDING_DIM,
};

pub(super) fn short_sha(sha: &str) -> &str {
    sha.get(..12).unwrap_or(sha)
}

pub(super) fn validate_options(o: &StoreOptions) -> Result<(), StoreError> {
    let bad = |reason: String| Err(StoreError::InvalidOptions { reason });
    if o.limits.max_per_label == 0 {
        return bad("max_per_label is 0; it must be at least 1".into());
    }
    if o.limits.max_total_bytes == 0 {
        return bad("max_total_bytes is 0; it must be at least 1".into());
    }
    if !(o.holdout_fraction > 0.0 && o.holdout_fraction < 1.0) {
        return bad(format!(
            "holdout_fraction is {}; it must be between 0 and 1 (exclusive), e.g. 0.2",
            o.holdout_fraction
        ));
    }
    Ok(())
}

pub(super) fn validate_sample(s: &NewSample) -> Result<(), StoreError> {
    validate_training_label(&s.label)?;
    validate_backbone(&s.backbone)?;
    validate_embedding(&s.embedding)
}

/// A strict backbone id: a sha256 written in upper case by one caller and lower case by another
/// would split the store in two "backbones" and mark every sample as needing re-embedding.
pub(super) fn validate_backbone(b: &BackboneId) -> Result<(), StoreError> {
    let sha = &b.model_sha256;
    if sha.len() != 64 || !sha.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')) {
        return Err(StoreError::InvalidSample {
            reason: format!(
                "model_sha256 {:?} is not 64 lower-case hex digits (the sha256 of the model \
                 file)",
                sha.chars().take(80).collect::<String>()
            ),
        });
    }
    let t = &b.embedding_tensor;
    if t.is_empty() || t.len() > 256 || t.chars().any(char::is_control) {
        return Err(StoreError::InvalidSample {
            reason: format!(
                "embedding_tensor {:?} must be the tensor name: 1 to 256 bytes, no control \
                 characters",
                t.chars().take(80).collect::<String>()
            ),
        });
    }
    Ok(())
}

/// NaN or infinity in one stored embedding poisons every head trained on the store, so it is
/// stopped at the door, where the broken backbone output can still be traced.
pub(super) fn validate_embedding(e: &[f32]) -> Result<(), StoreError> {
    if e.is_empty() || e.len() > MAX_EMBEDDING_DIM {
        return Err(StoreError::InvalidSample {
            reason: format!(
                "the embedding has {} values; it must have 1 to {MAX_EMBEDDING_DIM}",
                e.len()
            ),
        });
    }
    if let Some(i) = e.iter().position(|v| !v.is_finite()) {
        return Err(StoreError::InvalidSample {
            reason: format!(
                "embedding value {i} is {}; the backbone produced a non-finite output (check \
                 the model and its input normalisation)",
                e[i]
            ),
        });
    }
    Ok(())
}

/// Little-endian f32s, so a store copied between an x86 laptop and an ARM Pi reads the same.
pub(super) fn encode_embedding(e: &[f32]) -> Vec<u8> {
    e.iter().flat_map(|v| v.to_le_bytes()).collect()
}

pub(super) fn decode_embedding(path: &Path, id: i64, blob: &[u8]) -> Result<Vec<f32>, StoreError> {
    if !blob.len().is_multiple_of(4) {
        return Err(StoreError::CorruptSample {
            path: path.to_path_buf(),
            id,
            detail: format!(
                "its embedding blob has {} bytes, not a multiple of 4 (little-endian f32 values)",
                blob.len()
            ),
        });
    }
    Ok(blob
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect())
}

pub(super) fn embedding_bytes(e: &[f32]) -> u64 {
    to_u64_usize(e.len()).saturating_mul(4)
}

pub(super) fn source_columns(s: &SampleSource) -> (&'static str, Option<&str>) {
    match s {
        SampleSource::File { path } => ("file", Some(path)),
        SampleSource::Mqtt { topic } => ("mqtt", Some(topic)),
        SampleSource::CameraFrame => ("camera_frame", None),
        SampleSource::Microphone => ("microphone", None),
        SampleSource::DetectionCrop { class } => ("detection_crop", Some(class)),
        SampleSource::Web { name } => ("web", Some(name)),
    }
}

pub(super) fn parse_source(
    path: &Path,
    id: i64,
    kind: &str,
    detail: Option<String>,
) -> Result<SampleSource, StoreError> {
    match (kind, detail) {
        ("file", Some(path)) => Ok(SampleSource::File { path }),
        ("mqtt", Some(topic)) => Ok(SampleSource::Mqtt { topic }),
        ("camera_frame", None) => Ok(SampleSource::CameraFrame),
        ("microphone", None) => Ok(SampleSource::Microphone),
        ("detection_crop", Some(class)) => Ok(SampleSource::DetectionCrop { class }),
        ("web", Some(name)) => Ok(SampleSource::Web { name }),
        (kind, detail) => Err(StoreError::CorruptSample {
            path: path.to_path_buf(),
            id,
            detail: format!(
                "unknown source kind {kind:?} (with {} detail)",
                if detail.is_some() { "a" } else { "no" }
            ),
        }),
    }
}

pub(super) fn parse_split(path: &Path, id: i64, s: &str) -> Result<Split, StoreError> {
    match s {
        "train" => Ok(Split::Train),
        "holdout" => Ok(Split::Holdout),
        other => Err(StoreError::CorruptSample {
            path: path.to_path_buf(),
            id,
            detail: format!("unknown split {other:?}"),
        }),
    }
}

/// `(id, label, split, embedding blob)` of `SELECT id, label, split, embedding`, the blob
/// borrowed from SQLite's buffer rather than copied.
pub(super) fn embedding_row<'r>(
    r: &'r rusqlite::Row<'_>,
) -> rusqlite::Result<(i64, String, String, &'r [u8])> {
    let blob = r.get_ref(3)?;
    let bytes = blob
        .as_blob()
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(3, blob.data_type(), Box::new(e)))?;
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, bytes))
}

/// A row of [`crate::store::META_COLUMNS`] as SQLite gives it, decoded into [`SampleMeta`] outside the
/// rusqlite callback so decoding errors can be our own.
pub(super) struct RawMeta {
    id: i64,
    label: String,
    split: String,
    model_sha256: String,
    embedding_tensor: String,
    source_kind: String,
    source_detail: Option<String>,
    created_unix_ms: i64,
    embedding_bytes: i64,
    thumbnail_bytes: Option<i64>,
}

impl RawMeta {
    pub(super) fn read(r: &rusqlite::Row<'_>) -> rusqlite::Result<RawMeta> {
        Ok(RawMeta {
            id: r.get(0)?,
            label: r.get(1)?,
            split: r.get(2)?,
            model_sha256: r.get(3)?,
            embedding_tensor: r.get(4)?,
            source_kind: r.get(5)?,
            source_detail: r.get(6)?,
            created_unix_ms: r.get(7)?,
            embedding_bytes: r.get(8)?,
            thumbnail_bytes: r.get(9)?,
        })
    }

    pub(super) fn decode(self, path: &Path) -> Result<SampleMeta, StoreError> {
        let id = self.id;
        if self.embedding_bytes % 4 != 0 {
            return Err(StoreError::CorruptSample {
                path: path.to_path_buf(),
                id,
                detail: format!(
                    "its embedding blob has {} bytes, not a multiple of 4 (little-endian f32 \
                     values)",
                    self.embedding_bytes
                ),
            });
        }
        Ok(SampleMeta {
            id,
            split: parse_split(path, id, &self.split)?,
            source: parse_source(path, id, &self.source_kind, self.source_detail)?,
            label: self.label,
            backbone: BackboneId {
                model_sha256: self.model_sha256,
                embedding_tensor: self.embedding_tensor,
            },
            created_unix_ms: self.created_unix_ms,
            embedding_dim: to_usize(self.embedding_bytes / 4),
            thumbnail_bytes: self.thumbnail_bytes.map(to_usize),
        })
    }
}

// Counts and sizes come out of SQLite as i64 and are never negative (CHECK constraints,
// COUNT); these saturate instead of panicking should a hand-edited file say otherwise. usize
// may be 32 bits (armv7).
pub(super) fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}
pub(super) fn to_usize(v: i64) -> usize {
    usize::try_from(v).unwrap_or(if v < 0 { 0 } else { usize::MAX })
}
pub(super) fn to_u64_usize(v: usize) -> u64 {
    u64::try_from(v).unwrap_or(u64::MAX)
}
pub(super) fn to_i64(v: usize) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}
