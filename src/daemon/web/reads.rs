//! The read routes: state, events and their pictures, samples and thumbnails, training runs,
//! status, metrics. Store reads run on the blocking pool; every file served is found by an id
//! in the daemon's own stores, never by a path from the request.

use std::collections::BTreeMap;
use std::path::Path as FsPath;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::{to_json, ApiError, Web};
use crate::daemon::learner::Learner;
use crate::daemon::snapshots::SnapshotStore;
use crate::events::{EventStore, EventStoreError};
use crate::wire::TrackedObject;

/// Runs store work on the blocking pool.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?
}

/// `GET /api/state`.
pub async fn state(State(web): State<Arc<Web>>) -> Result<Response, ApiError> {
    to_json(&web.control.device_state())
}

#[derive(Debug, Deserialize)]
pub struct EventsParams {
    camera: Option<String>,
    label: Option<String>,
    sub_label: Option<String>,
    zone: Option<String>,
    after: Option<f64>,
    before: Option<f64>,
    limit: Option<usize>,
}

/// A listing's `limit`: `default` when absent, else 1 to `max`.
fn limit(given: Option<usize>, default: usize, max: usize) -> Result<usize, ApiError> {
    let limit = given.unwrap_or(default);
    if (1..=max).contains(&limit) {
        Ok(limit)
    } else {
        Err(ApiError::bad(format!(
            "limit = {limit} is out of range; allowed: 1 to {max}"
        )))
    }
}

/// An empty filter field is no filter (what an HTML form sends for a blank input).
fn given(s: Option<String>) -> Option<String> {
    s.map(|s| s.trim().to_owned()).filter(|s| !s.is_empty())
}

fn open_events(web: &Web) -> Result<Option<EventStore>, ApiError> {
    let Some(path) = web.control.events_path.clone() else {
        return Err(ApiError::not_found(
            "objects are not stored here ([events] enabled = false)",
        ));
    };
    match EventStore::open_read(&path) {
        Ok(s) => Ok(Some(s)),
        // Nothing recorded yet.
        Err(EventStoreError::Missing { .. }) => Ok(None),
        Err(e) => Err(ApiError::internal(e.to_string())),
    }
}

/// An object with the addresses of its pictures (flattened: the object's own fields, as
/// MQTT has them, plus two).
#[derive(Serialize)]
pub struct WithUrls<'a> {
    #[serde(flatten)]
    object: &'a TrackedObject,
    snapshot_url: Option<String>,
    crop_url: Option<String>,
}

fn with_urls(o: &TrackedObject) -> WithUrls<'_> {
    let url = |what: &str| {
        o.has_snapshot
            .then(|| format!("/api/events/{}/{what}.jpg", o.id))
    };
    WithUrls {
        object: o,
        snapshot_url: url("snapshot"),
        crop_url: url("crop"),
    }
}

/// `GET /api/events`.
pub async fn events(
    State(web): State<Arc<Web>>,
    Query(p): Query<EventsParams>,
) -> Result<Response, ApiError> {
    let limit = limit(p.limit, 50, 1000)?;
    if p.after.is_some_and(|a| !a.is_finite()) || p.before.is_some_and(|b| !b.is_finite()) {
        return Err(ApiError::bad("after and before are unix seconds"));
    }
    let query = crate::events::Query {
        camera: given(p.camera),
        label: given(p.label),
        sub_label: given(p.sub_label),
        zone: given(p.zone),
        after: p.after,
        before: p.before,
        limit,
    };
    let w = web.clone();
    let list = blocking(move || match open_events(&w)? {
        None => Ok(Vec::new()),
        Some(store) => store
            .list(&query)
            .map_err(|e| ApiError::internal(e.to_string())),
    })
    .await?;
    let events: Vec<WithUrls<'_>> = list.iter().map(with_urls).collect();
    to_json(&json!({ "events": events }))
}

/// The stored object `id`, or 404.
pub async fn find_event(web: &Arc<Web>, id: String) -> Result<TrackedObject, ApiError> {
    let w = web.clone();
    blocking(move || {
        let store = open_events(&w)?;
        let found = match store {
            Some(s) => s.get(&id).map_err(|e| ApiError::internal(e.to_string()))?,
            None => None,
        };
        found.ok_or_else(|| {
            ApiError::not_found(format!(
                "no stored event `{id}` (it may have been dropped or pruned by [events] retention)"
            ))
        })
    })
    .await
}

/// `GET /api/events/<id>`.
pub async fn event(
    State(web): State<Arc<Web>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let o = find_event(&web, id).await?;
    to_json(&with_urls(&o))
}

async fn event_picture(web: Arc<Web>, id: String, clean: bool) -> Result<Response, ApiError> {
    let o = find_event(&web, id).await?;
    let dir = SnapshotStore::dir_in(&web.state_dir);
    let bytes = blocking(move || {
        let path = SnapshotStore::file_in(&dir, &o.camera, &o.id, clean).ok_or_else(|| {
            ApiError::not_found(format!(
                "event `{}` has no snapshot on disk (none was taken yet, or [snapshots] \
                 retention removed it)",
                o.id
            ))
        })?;
        read_small(&path)
    })
    .await?;
    Ok(jpeg(bytes))
}

/// A file of ours, at most 64 MiB.
fn read_small(path: &FsPath) -> Result<Vec<u8>, ApiError> {
    crate::bounded::read_capped(path, 64 << 20)
        .map_err(|e| ApiError::not_found(format!("{}: cannot read it ({e:?})", path.display())))
}

fn jpeg(bytes: Vec<u8>) -> Response {
    (
        [
            (header::CONTENT_TYPE, "image/jpeg"),
            (header::CACHE_CONTROL, "private, max-age=60"),
        ],
        bytes,
    )
        .into_response()
}

/// `GET /api/events/<id>/snapshot.jpg`.
pub async fn event_snapshot(
    State(web): State<Arc<Web>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    event_picture(web, id, false).await
}

/// `GET /api/events/<id>/crop.jpg`.
pub async fn event_crop(
    State(web): State<Arc<Web>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    event_picture(web, id, true).await
}

/// A learner as the page lists it.
#[derive(Debug, Serialize)]
pub struct LearnerOut {
    model: String,
    kind: &'static str,
    cameras: Vec<String>,
    head_version: Option<u32>,
    training: bool,
    counts: BTreeMap<String, usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    heads: Option<Vec<Value>>,
}

fn learner_out(web: &Web, l: &Learner) -> LearnerOut {
    let cameras = web
        .control
        .streams
        .iter()
        .filter(|s| std::ptr::eq(Arc::as_ptr(&s.learner), l))
        .map(|s| s.name.clone())
        .collect();
    LearnerOut {
        model: l.model.clone(),
        kind: if l.is_audio { "audio" } else { "vision" },
        cameras,
        head_version: l.head_version(),
        training: l.is_training(),
        counts: l.counts(),
        heads: None,
    }
}

/// The learner of `model`, or 404 naming the ones there are.
pub fn learner(web: &Web, model: &str) -> Result<Arc<Learner>, ApiError> {
    web.control
        .learners
        .iter()
        .find(|l| l.model == model)
        .cloned()
        .ok_or_else(|| {
            let known: Vec<&str> = web
                .control
                .learners
                .iter()
                .map(|l| l.model.as_str())
                .collect();
            ApiError::not_found(format!(
                "no learner `{model}`; the models that learn here are {known:?}"
            ))
        })
}

#[derive(Debug, Deserialize)]
pub struct SamplesParams {
    model: Option<String>,
    label: Option<String>,
    before: Option<i64>,
    limit: Option<usize>,
}

/// `GET /api/samples`.
pub async fn samples(
    State(web): State<Arc<Web>>,
    Query(p): Query<SamplesParams>,
) -> Result<Response, ApiError> {
    let limit = limit(p.limit, 100, 500)?;
    let learners: Vec<Arc<Learner>> = match given(p.model) {
        Some(m) => vec![learner(&web, &m)?],
        None => web.control.learners.clone(),
    };
    let models: Vec<LearnerOut> = learners.iter().map(|l| learner_out(&web, l)).collect();
    let label = given(p.label);
    let before = p.before;
    let rows = blocking(move || {
        let mut rows = Vec::new();
        for l in &learners {
            let list = l
                .with_workspace(|ws| ws.store.list_recent(label.as_deref(), before, limit))
                .map_err(|e| ApiError::bad(e.to_string()))?;
            for m in list {
                // A voice learner's samples keep a clip, a vision learner's a picture.
                let url = |what: &str| {
                    m.thumbnail_bytes
                        .map(|_| format!("/api/samples/{}/{}/{what}", l.model, m.id))
                };
                let (thumbnail_url, clip_url) = if l.is_audio {
                    (None, url("clip.wav"))
                } else {
                    (url("thumbnail.jpg"), None)
                };
                rows.push(json!({
                    "id": m.id, "model": l.model, "label": m.label,
                    "source": m.source, "split": m.split.as_str(),
                    "created_unix_ms": m.created_unix_ms, "thumbnail_url": thumbnail_url,
                    "clip_url": clip_url,
                }));
            }
        }
        Ok(rows)
    })
    .await?;
    to_json(&json!({ "models": models, "samples": rows }))
}

/// The picture or clip sample `id` of `model` keeps, if it is a `riff` (WAV) one or not.
async fn sample_blob(web: &Web, model: String, id: i64, riff: bool) -> Result<Vec<u8>, ApiError> {
    let l = learner(web, &model)?;
    blocking(move || {
        let sample = l
            .with_workspace(|ws| ws.store.get(id))
            .map_err(|e| ApiError::internal(e.to_string()))?
            .ok_or_else(|| ApiError::not_found(format!("no sample {id} in `{model}`")))?;
        let what = if riff { "clip" } else { "thumbnail" };
        sample
            .thumbnail_jpeg
            .filter(|b| b.starts_with(b"RIFF") == riff)
            .ok_or_else(|| ApiError::not_found(format!("sample {id} of `{model}` has no {what}")))
    })
    .await
}

/// `GET /api/samples/<model>/<id>/thumbnail.jpg`.
pub async fn thumbnail(
    State(web): State<Arc<Web>>,
    Path((model, id)): Path<(String, i64)>,
) -> Result<Response, ApiError> {
    Ok(jpeg(sample_blob(&web, model, id, false).await?))
}

/// `GET /api/samples/<model>/<id>/clip.wav`: a voice sample's first seconds.
pub async fn clip(
    State(web): State<Arc<Web>>,
    Path((model, id)): Path<(String, i64)>,
) -> Result<Response, ApiError> {
    let wav = sample_blob(&web, model, id, true).await?;
    Ok((
        [
            (header::CONTENT_TYPE, "audio/wav"),
            (header::CACHE_CONTROL, "private, max-age=60"),
        ],
        wav,
    )
        .into_response())
}

/// `GET /api/training`.
pub async fn training(State(web): State<Arc<Web>>) -> Result<Response, ApiError> {
    let learners = web.control.learners.clone();
    let mut out: Vec<LearnerOut> = learners.iter().map(|l| learner_out(&web, l)).collect();
    let heads = blocking(move || {
        let mut all = Vec::new();
        for l in &learners {
            let (list, current) =
                l.with_workspace(|ws| (ws.registry.list(), ws.registry.current_version()));
            let list = list.map_err(|e| ApiError::internal(e.to_string()))?;
            let current = current.map_err(|e| ApiError::internal(e.to_string()))?;
            let mut heads: Vec<Value> = list
                .iter()
                .rev()
                .map(|m| {
                    json!({
                        "version": m.version, "created_unix": m.created_unix,
                        "classes": m.classes, "deployed": m.deployed,
                        "current": Some(m.version) == current,
                        "deploy_reason": m.deploy_reason, "report": m.report,
                    })
                })
                .collect();
            heads.truncate(100);
            all.push(heads);
        }
        Ok(all)
    })
    .await?;
    for (l, h) in out.iter_mut().zip(heads) {
        l.heads = Some(h);
    }
    to_json(&json!({ "learners": out }))
}

/// Bytes of every file under `dir` (the state dir: samples, heads, events, snapshots).
fn dir_bytes(dir: &FsPath) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_bytes(&e.path()),
            Ok(t) if t.is_file() => e.metadata().map_or(0, |m| m.len()),
            _ => 0,
        })
        .sum()
}

/// Free bytes for an unprivileged writer on the file system of `dir`.
fn free_bytes(dir: &FsPath) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt as _;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid C string and `st` a valid out-pointer for the call.
    let rc = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
    (rc == 0).then(|| st.f_bavail as u64 * st.f_frsize as u64)
}

/// This process's resident memory, bytes (Linux).
pub fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages * u64::try_from(page).ok()?)
}

/// `GET /api/status`.
pub async fn status(State(web): State<Arc<Web>>) -> Result<Response, ApiError> {
    let c = &web.control;
    let link = c.publisher.stats();
    let dir = web.state_dir.clone();
    let (bytes, free) = blocking(move || Ok((dir_bytes(&dir), free_bytes(&dir)))).await?;
    let models: Vec<Value> = c
        .engines
        .iter()
        .map(|e| serde_json::to_value(e).unwrap_or(Value::Null))
        .collect();
    to_json(&json!({
        "version": env!("CARGO_PKG_VERSION"),
        "device_id": c.publisher.topics().device_id(),
        "uptime_s": c.telemetry.uptime().as_secs_f64(),
        "mqtt": {"connected": link.connected, "reconnects": link.reconnects,
                 "published": link.published, "dropped": link.dropped},
        "models": models,
        "cameras": c.streams.iter().map(|s| json!({
            "name": s.name, "kind": s.kind.as_str(), "model": s.model,
            "backend": s.backend.to_string(), "source": s.source,
            "source_state": s.source_stats.state(),
        })).collect::<Vec<_>>(),
        "state_dir": web.state_dir.display().to_string(),
        "state_dir_bytes": bytes,
        "disk_free_bytes": free,
        "resident_bytes": resident_bytes(),
        "log": crate::logtail::lines(),
    }))
}

/// `GET /metrics`: the registry, with the gauges that are read rather than counted brought
/// up to date first (all from memory: a scrape touches no store or file).
pub async fn metrics(State(web): State<Arc<Web>>) -> Result<Response, ApiError> {
    let c = &web.control;
    let t = &c.telemetry;
    for s in &c.streams {
        let snap = s.source_stats.snapshot();
        t.sync_source(
            &s.name,
            snap.frames,
            snap.decode_errors,
            s.source_stats.decode_seconds(),
        );
        t.set_fps(&s.name, t.rates(&s.name).fps);
    }
    for l in &c.learners {
        t.set_learner(&l.model, &l.counts(), l.head_accuracy(), l.head_macro_f1());
    }
    t.sync_mqtt(c.publisher.stats().reconnects);
    t.set_resident(resident_bytes().unwrap_or(0));
    Ok((
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        t.encode(),
    )
        .into_response())
}
