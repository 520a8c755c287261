//! The routes that change something: MQTT commands over HTTP, sample uploads, relabel and
//! delete, and the three actions on an event (name it, it is a false positive, drop it).
//! Every one goes through the same control-plane code as its MQTT twin, so a reply here is
//! the reply MQTT would have sent.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::reads::{blocking, find_event, learner};
use super::{status_of, to_json, ApiError, Web};
use crate::daemon::control::ControlError;
use crate::daemon::notice::Notice;
use crate::daemon::snapshots::SnapshotStore;
use crate::mqtt::{Reply, Request};
use crate::store::SampleSource;
use crate::wire::{Command, LabelTarget};

/// A reply as the answer: 200 when it is ok, else the status that fits the error.
fn reply(status: StatusCode, r: &Reply) -> Response {
    (status, Json(r.to_value())).into_response()
}

fn answer(
    verb: &str,
    id: Option<crate::wire::RequestId>,
    out: Result<Value, ControlError>,
) -> Response {
    match out {
        Ok(v) => reply(StatusCode::OK, &Reply::ok(id, verb, v)),
        Err(e) => reply(status_of(&e), &Reply::error(id, Some(verb), e.to_string())),
    }
}

/// `POST /api/cmd/<verb>`: the body is the MQTT command's payload.
pub async fn command(
    State(web): State<Arc<Web>>,
    Path(verb): Path<String>,
    body: Bytes,
) -> Response {
    let req = match Request::parse(&verb, &body) {
        Ok(r) => r,
        Err(rejected) => return reply(StatusCode::BAD_REQUEST, &rejected.reply()),
    };
    let (id, verb) = (req.id.clone(), req.command.verb());
    let out = web.control.execute(req).await;
    answer(verb, id, out)
}

#[derive(Debug, Deserialize)]
pub struct UploadParams {
    camera: Option<String>,
    /// The file's name, for the sample's source and for errors.
    name: Option<String>,
}

/// `POST /api/samples/<label>?camera=<camera>`: one image or WAV file as the body.
pub async fn upload(
    State(web): State<Arc<Web>>,
    Path(label): Path<String>,
    Query(p): Query<UploadParams>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Response {
    let Ok(body) = axum::body::to_bytes(body, web.max_upload).await else {
        return reply(
            StatusCode::PAYLOAD_TOO_LARGE,
            &Reply::error(
                None,
                Some("sample"),
                format!(
                    "{}: the file is larger than the {} MiB upload limit ([http].max_upload_mb)",
                    p.name.as_deref().unwrap_or("upload"),
                    web.max_upload / (1024 * 1024)
                ),
            ),
        );
    };
    let name = p
        .name
        .filter(|n| !n.trim().is_empty())
        .unwrap_or_else(|| "upload".into());
    if body.is_empty() {
        return reply(
            StatusCode::BAD_REQUEST,
            &Reply::error(None, Some("sample"), format!("{name}: the file is empty")),
        );
    }
    let declared = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if declared.starts_with("video/") || declared.starts_with("text/") {
        return reply(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            &Reply::error(
                None,
                Some("sample"),
                format!("{name}: a {declared} file is not a sample; upload a JPEG or PNG picture, or a WAV clip for a microphone"),
            ),
        );
    }
    let source = SampleSource::Web { name: name.clone() };
    let camera = p.camera.filter(|c| !c.is_empty());
    let out = web
        .control
        .add_sample(&name, source, camera.as_deref(), &label, body.to_vec())
        .await;
    answer("sample", None, out)
}

#[derive(Debug, Deserialize)]
pub struct RelabelBody {
    label: String,
}

/// `POST /api/samples/<model>/<id>/relabel`.
pub async fn relabel(
    State(web): State<Arc<Web>>,
    Path((model, id)): Path<(String, i64)>,
    Json(body): Json<RelabelBody>,
) -> Result<Response, ApiError> {
    let l = learner(&web, &model)?;
    let label = crate::label::Label::parse(&body.label)
        .map_err(|e| ApiError::bad(e.to_string()))?
        .as_str()
        .to_owned();
    let new_label = label.clone();
    let out = blocking(move || {
        l.relabel_sample(id, &label)
            .map_err(|e| ApiError::bad(e.to_string()))?
            .ok_or_else(|| ApiError::not_found(format!("no sample {id} in `{model}`")))
    })
    .await?;
    web.control.notices.send(Notice::DeviceChanged);
    to_json(&json!({"ok": true, "id": out.id, "label": new_label, "kept": out.kept}))
}

/// `DELETE /api/samples/<model>/<id>`.
pub async fn delete_sample(
    State(web): State<Arc<Web>>,
    Path((model, id)): Path<(String, i64)>,
) -> Result<Response, ApiError> {
    let l = learner(&web, &model)?;
    let removed = blocking(move || {
        l.remove_sample(id)
            .map_err(|e| ApiError::internal(e.to_string()))
    })
    .await?;
    if !removed {
        return Err(ApiError::not_found(format!("no sample {id} in `{model}`")));
    }
    web.control.notices.send(Notice::DeviceChanged);
    to_json(&json!({"ok": true, "removed": 1}))
}

#[derive(Debug, Deserialize)]
pub struct LabelBody {
    label: String,
}

/// `POST /api/events/<id>/label`: the object's best crop while the daemon holds it, else the
/// crop stored with the event.
pub async fn label_event(
    State(web): State<Arc<Web>>,
    Path(id): Path<String>,
    Json(body): Json<LabelBody>,
) -> Result<Response, ApiError> {
    let o = find_event(&web, id).await?;
    let label = crate::mqtt::Label::parse(&body.label).map_err(|e| ApiError::bad(e.to_string()))?;
    let req = Request {
        id: None,
        camera: Some(o.camera.clone()),
        command: Command::Label {
            label: label.clone(),
            target: LabelTarget::Object(o.id.clone()),
        },
    };
    let verb = req.command.verb();
    match web.control.execute(req).await {
        // The object has left the daemon's memory: its stored crop is what the person saw.
        Err(ControlError::Detection(why)) => {
            let dir = SnapshotStore::dir_in(&web.state_dir);
            let (camera, oid) = (o.camera.clone(), o.id.clone());
            let crop = blocking(move || {
                Ok(SnapshotStore::file_in(&dir, &camera, &oid, true)
                    .and_then(|p| crate::bounded::read_capped(&p, 64 << 20).ok()))
            })
            .await?;
            let Some(crop) = crop else {
                return Ok(answer(
                    verb,
                    None,
                    Err(ControlError::Detection(format!(
                        "{why}; and event `{}` has no stored crop to use instead",
                        o.id
                    ))),
                ));
            };
            if label.as_str() == crate::daemon::false_positives::FALSE {
                return Ok(answer(verb, None, Err(ControlError::NotApplicable(format!(
                    "object `{}` has ended, so there is nothing left to suppress; mark an object a false positive while it is in view",
                    o.id
                )))));
            }
            let source = SampleSource::Web {
                name: format!("event {}", o.id),
            };
            let out = web
                .control
                .add_sample(
                    &format!("the crop of event {}", o.id),
                    source,
                    Some(&o.camera),
                    label.as_str(),
                    crop,
                )
                .await;
            Ok(answer(verb, None, out))
        }
        out => Ok(answer(verb, None, out)),
    }
}

/// `POST /api/events/<id>/false_positive`.
pub async fn false_positive_event(
    State(web): State<Arc<Web>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let o = find_event(&web, id).await?;
    let req = Request {
        id: None,
        camera: Some(o.camera.clone()),
        command: Command::FalsePositive {
            target: LabelTarget::Object(o.id.clone()),
        },
    };
    let verb = req.command.verb();
    let out = web.control.execute(req).await;
    Ok(answer(verb, None, out))
}

/// `DELETE /api/events/<id>`: the stored event and its two snapshot files.
pub async fn drop_event(
    State(web): State<Arc<Web>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let o = find_event(&web, id).await?;
    let Some(path) = web.control.events_path.clone() else {
        return Err(ApiError::not_found(
            "objects are not stored here ([events] enabled = false)",
        ));
    };
    let dir = SnapshotStore::dir_in(&web.state_dir);
    let files = blocking(move || {
        let store = crate::events::EventStore::open(&path)
            .map_err(|e| ApiError::internal(e.to_string()))?;
        store
            .remove(&o.id)
            .map_err(|e| ApiError::internal(e.to_string()))?;
        SnapshotStore::remove_in(&dir, &o.camera, &o.id)
            .map_err(|e| ApiError::internal(e.to_string()))
    })
    .await?;
    to_json(&json!({"ok": true, "snapshots_removed": files}))
}
