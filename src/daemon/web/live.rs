//! What a viewer watches: `GET /api/stream` (server-sent events mirroring the daemon's JSON
//! MQTT messages) and `GET /api/cameras/<camera>/latest.jpg` (the latest processed frame).
//!
//! Cost is paid per frame, not per viewer: a frame is encoded to JPEG once, on the first
//! request for it, and every other viewer of that frame gets the same bytes; with nobody
//! watching nothing is encoded and the mirror costs one atomic load per message. A viewer that
//! falls behind skips messages (the mirror is a bounded broadcast) instead of holding the
//! daemon back.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{header, HeaderValue};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream::Stream;
use tokio::sync::broadcast::error::RecvError;

use super::{ApiError, Web};
use crate::mqtt::Mirrored;

/// JPEG quality of live frames: what Frigate's live view uses, a third of the bytes of 95.
const QUALITY: u8 = 75;
/// How often an idle stream says it is alive (proxies close silent connections).
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// One camera's latest encoded frame: (frame_id, JPEG), behind an async lock that the encoder
/// holds while it encodes.
type Encoded = Arc<tokio::sync::Mutex<Option<(u64, bytes::Bytes)>>>;

/// The latest encoded frame of each camera.
#[derive(Default)]
pub struct FrameCache {
    cameras: Mutex<HashMap<String, Encoded>>,
}

impl FrameCache {
    fn slot(&self, camera: &str) -> Encoded {
        let mut map = self.cameras.lock().unwrap_or_else(|e| e.into_inner());
        map.entry(camera.to_owned()).or_default().clone()
    }
}

/// `GET /api/cameras/<camera>/latest.jpg`.
pub async fn latest_jpg(
    State(web): State<Arc<Web>>,
    Path(camera): Path<String>,
) -> Result<Response, ApiError> {
    let stream = web
        .control
        .stream(&camera)
        .map_err(|e| ApiError::new(super::status_of(&e), e.to_string()))?;
    let latest = stream
        .latest()
        .ok_or_else(|| ApiError::not_found(format!("`{camera}` has not processed a frame yet")))?;
    let Some(image) = latest.image.clone() else {
        return Err(ApiError::not_found(format!(
            "`{camera}` is a microphone: it has no picture"
        )));
    };
    let frame_id = latest.result.frame_id;
    let slot = web.frames.slot(&camera);
    // One encoder per camera at a time: viewers of the same frame wait for the first one's
    // bytes instead of encoding it again.
    let mut cached = slot.lock().await;
    let jpeg = match cached.as_ref() {
        Some((id, bytes)) if *id == frame_id => bytes.clone(),
        _ => {
            let encoded = tokio::task::spawn_blocking(move || {
                let mut out = std::io::Cursor::new(Vec::new());
                image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, QUALITY)
                    .encode_image(&*image)
                    .map(|()| bytes::Bytes::from(out.into_inner()))
            })
            .await
            .map_err(|e| ApiError::internal(e.to_string()))?
            .map_err(|e| ApiError::internal(format!("cannot encode the frame: {e}")))?;
            *cached = Some((frame_id, encoded.clone()));
            encoded
        }
    };
    drop(cached);
    let mut res = ([(header::CONTENT_TYPE, "image/jpeg")], jpeg).into_response();
    if let Ok(v) = HeaderValue::from_str(&frame_id.to_string()) {
        res.headers_mut()
            .insert(header::HeaderName::from_static("x-frame-id"), v);
    }
    Ok(res)
}

/// `GET /api/stream`: the current state first, then every JSON message the daemon publishes.
pub async fn stream(
    State(web): State<Arc<Web>>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let control = &web.control;
    let rx = control.publisher.mirror();
    let base = format!("{}/", control.publisher.topics().base());
    let mut first = VecDeque::new();
    if let Ok(state) = serde_json::to_string(&control.device_state()) {
        first.push_back(frame("state", &state));
    }
    for s in &control.streams {
        if let Ok(st) = serde_json::to_string(&s.state()) {
            first.push_back(frame(&format!("{}/state", s.name), &st));
        }
    }
    let shutdown = web.shutdown.clone();
    let events = futures_util::stream::unfold(
        (first, rx, base, shutdown),
        |(mut first, mut rx, base, shutdown)| async move {
            if let Some(data) = first.pop_front() {
                return Some((Ok(Event::default().data(data)), (first, rx, base, shutdown)));
            }
            loop {
                let next = tokio::select! {
                    () = shutdown.cancelled() => return None,
                    m = rx.recv() => m,
                };
                match next {
                    Ok(m) => {
                        if let Some(data) = relay(&m, &base) {
                            return Some((
                                Ok(Event::default().data(data)),
                                (first, rx, base, shutdown),
                            ));
                        }
                    }
                    // A slow viewer: the skipped messages are gone, the next ones come.
                    Err(RecvError::Lagged(_)) => {}
                    Err(RecvError::Closed) => return None,
                }
            }
        },
    );
    Sse::new(events).keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
}

/// `{"topic": ..., "payload": ...}` around a payload that is already JSON text.
fn frame(topic: &str, payload: &str) -> String {
    let topic = serde_json::Value::from(topic).to_string();
    format!("{{\"topic\":{topic},\"payload\":{payload}}}")
}

/// The event of a mirrored message, or `None` for what a page does not read: other devices'
/// topics, binary payloads (snapshots), and anything that is not JSON.
fn relay(m: &Mirrored, base: &str) -> Option<String> {
    let topic = m.topic.strip_prefix(base)?;
    if topic.ends_with("/snapshot") {
        return None;
    }
    let text = std::str::from_utf8(&m.payload).ok()?;
    let first = text.trim_start().chars().next()?;
    if !(first == '{' || first == '[' || first.is_ascii_digit() || first == '-') {
        return None;
    }
    // A counts topic's payload is a bare number; everything else is a JSON document. Checked,
    // so a page can always parse what it gets.
    serde_json::from_str::<serde::de::IgnoredAny>(text).ok()?;
    Some(frame(topic, text))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(topic: &str, payload: &[u8]) -> Mirrored {
        Mirrored {
            topic: topic.into(),
            payload: payload.to_vec(),
        }
    }

    #[test]
    fn relays_json_of_this_device_only() {
        let base = "adaptd/shed/";
        assert_eq!(
            relay(&m("adaptd/shed/front/detections", b"{\"a\":1}"), base).as_deref(),
            Some("{\"topic\":\"front/detections\",\"payload\":{\"a\":1}}")
        );
        assert_eq!(
            relay(&m("adaptd/shed/front/all/person", b"2"), base).as_deref(),
            Some("{\"topic\":\"front/all/person\",\"payload\":2}")
        );
        assert_eq!(relay(&m("adaptd/other/state", b"{}"), base), None);
        assert_eq!(
            relay(&m("adaptd/shed/front/snapshot", b"\xff\xd8"), base),
            None
        );
        assert_eq!(relay(&m("adaptd/shed/available", b"online"), base), None);
        assert_eq!(relay(&m("adaptd/shed/state", b"{broken"), base), None);
    }
}
