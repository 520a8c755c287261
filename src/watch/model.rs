//! What the watch knows about one device, fed by its MQTT messages.
//!
//! The model and the renderer are pure: no MQTT, no terminal, no clock. The caller feeds every
//! message under `<prefix>/<device>/` to [`WatchView::apply`] with the wall clock, and redraws
//! with [`WatchView::render`] on a timer, so all of it is testable on plain strings.
//!
//! Each topic is read into its [`crate::wire`] type, which reads leniently (another version of
//! adaptd may have written it: unknown fields are ignored, a wrongly typed field reads as
//! missing), and reduced at once to what the screen shows ([`super::reduce`]). Only a payload
//! that cannot be read at all (not JSON, not an object, an unknown availability word) is
//! reported, as the one-line "last problem". Nothing a payload contains can panic the view,
//! grow its memory without bound (at most [`MAX_CAMERAS`] cameras, each with one frame of at
//! most 64 items and [`MAX_EVENTS`] events, every string bounded), or reach the terminal as
//! a control sequence.

use std::collections::{BTreeMap, VecDeque};

use serde::de::DeserializeOwned;

use super::reduce::{
    CameraFigures, CameraInfo, DeviceFigures, DeviceInfo, EventRow, Frame, ReplyInfo, TrainingInfo,
    MAX_TEXT,
};
use super::route::{route, CameraTopic, Route};
use super::text::clean;
use crate::wire::{self, Availability, AvailabilityError};

/// Consensus events kept per camera; older ones are forgotten.
pub const MAX_EVENTS: usize = 8;
/// Cameras tracked; messages of further cameras are counted, not kept.
pub const MAX_CAMERAS: usize = 16;

/// A value with the watch's wall-clock time of its arrival. Ages are measured against the
/// watch's own clock, not the device's timestamps, so a device with a wrong clock (a Pi
/// without RTC before NTP) still shows sensible ages.
#[derive(Debug, Clone)]
pub struct Stamped<T> {
    pub at_ms: i64,
    pub value: T,
}

fn stamp<T>(at_ms: i64, value: T) -> Stamped<T> {
    Stamped { at_ms, value }
}

/// The retained `available` word, or one this watch does not know (shown as is).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Presence {
    Known(Availability),
    Other(String),
}

/// The last payload that could not be read.
#[derive(Debug, Clone)]
pub struct Problem {
    pub topic: String,
    pub message: String,
}

/// Everything known about one camera (or microphone).
#[derive(Debug, Clone, Default)]
pub struct CameraView {
    /// From `<camera>/state` or `state.cameras.<name>`, whichever came last.
    pub state: Option<Stamped<CameraInfo>>,
    /// From `stats.cameras.<name>`.
    pub figures: Option<Stamped<CameraFigures>>,
    pub frame: Option<Stamped<Frame>>,
    /// Most recent first, at most [`MAX_EVENTS`].
    pub events: VecDeque<Stamped<EventRow>>,
}

impl CameraView {
    fn is_empty(&self) -> bool {
        self.state.is_none()
            && self.figures.is_none()
            && self.frame.is_none()
            && self.events.is_empty()
    }
}

/// What the watch view knows about one device, built from its MQTT messages.
#[derive(Debug, Clone)]
pub struct WatchView {
    pub(super) device: String,
    /// `--camera NAME`: only that camera is tracked.
    pub(super) only: Option<String>,
    pub(super) available: Option<Stamped<Presence>>,
    pub(super) device_state: Option<Stamped<DeviceInfo>>,
    /// The cameras the latest `state` named (to mark retained leftovers of removed cameras).
    pub(super) listed: Option<Vec<String>>,
    pub(super) figures: Option<Stamped<DeviceFigures>>,
    /// By name, at most [`MAX_CAMERAS`].
    pub(super) cameras: BTreeMap<String, CameraView>,
    /// Camera names seen beyond [`MAX_CAMERAS`] (each counted once per message).
    pub(super) untracked: u64,
    pub(super) training: Option<Stamped<TrainingInfo>>,
    pub(super) reply: Option<Stamped<ReplyInfo>>,
    pub(super) problem: Option<Stamped<Problem>>,
    pub(super) problems: u64,
    /// The last message on a live topic (see [`Route::is_live`]).
    pub(super) last_live_ms: Option<i64>,
}

impl WatchView {
    /// A view of `device`; with `only`, of that one camera (the device-level topics still
    /// count).
    pub fn new(device: &str, only: Option<&str>) -> WatchView {
        WatchView {
            device: clean(device, 64),
            only: only.map(|c| clean(c, 64)),
            available: None,
            device_state: None,
            listed: None,
            figures: None,
            cameras: BTreeMap::new(),
            untracked: 0,
            training: None,
            reply: None,
            problem: None,
            problems: 0,
            last_live_ms: None,
        }
    }

    /// One message; `subtopic` is the topic relative to `<prefix>/<device>/` (e.g. `state`,
    /// `front/detections`), `now_ms` the wall clock in unix ms. Bad payloads never panic: they
    /// are remembered as the one-line "last problem". Topics the view does not read
    /// ([`Route::Ignored`]) and cameras other than `--camera`'s are ignored silently.
    pub fn apply(&mut self, subtopic: &str, payload: &[u8], now_ms: i64) {
        let route = route(subtopic);
        if route == Route::Ignored {
            return;
        }
        if let Route::Camera { name, .. } = &route {
            if !self.wanted(name) {
                return;
            }
        }
        if route.is_live() {
            self.last_live_ms = Some(now_ms);
        }
        if let Err(message) = self.apply_routed(route, payload, now_ms) {
            self.problems = self.problems.saturating_add(1);
            self.problem = Some(stamp(
                now_ms,
                Problem {
                    topic: clean(subtopic.trim_matches('/'), 40),
                    message: clean(&message.to_string(), MAX_TEXT),
                },
            ));
        }
    }

    fn apply_routed(
        &mut self,
        route: Route,
        payload: &[u8],
        now: i64,
    ) -> Result<(), PayloadProblem> {
        match route {
            Route::Available => self.apply_available(payload, now),
            Route::DeviceState if is_blank(payload) => {
                // The retained state was cleared (e.g. the device was decommissioned).
                self.device_state = None;
                self.listed = None;
                Ok(())
            }
            Route::DeviceState => {
                let s: wire::DeviceState = read(payload)?;
                self.device_state = Some(stamp(now, DeviceInfo::from_wire(&s)));
                self.listed = Some(s.cameras.keys().take(64).cloned().collect());
                for (name, cam) in &s.cameras {
                    if wire::check_stream_name(name).is_ok() && self.wanted(name) {
                        if let Some(view) = self.camera_mut(name) {
                            view.state = Some(stamp(now, CameraInfo::from_wire(cam)));
                        }
                    }
                }
                Ok(())
            }
            Route::Stats => {
                let s: wire::Stats = read(payload)?;
                self.figures = Some(stamp(now, DeviceFigures::from_wire(&s)));
                for (name, cam) in &s.cameras {
                    if wire::check_stream_name(name).is_ok() && self.wanted(name) {
                        if let Some(view) = self.camera_mut(name) {
                            view.figures = Some(stamp(now, CameraFigures::from_wire(cam)));
                        }
                    }
                }
                Ok(())
            }
            Route::Training => {
                let t: wire::Training = read(payload)?;
                self.training = Some(stamp(now, TrainingInfo::from_wire(&t)));
                Ok(())
            }
            Route::Reply => {
                let r: wire::Reply = read(payload)?;
                self.reply = Some(stamp(now, ReplyInfo::from_wire(&r)));
                Ok(())
            }
            Route::Camera { name, topic } => self.apply_camera(&name, topic, payload, now),
            Route::Ignored => Ok(()),
        }
    }

    fn apply_camera(
        &mut self,
        name: &str,
        topic: CameraTopic,
        payload: &[u8],
        now: i64,
    ) -> Result<(), PayloadProblem> {
        if topic == CameraTopic::State && is_blank(payload) {
            // A retained camera state was cleared: the camera is gone from the device.
            if let Some(view) = self.cameras.get_mut(name) {
                view.state = None;
                if view.is_empty() {
                    self.cameras.remove(name);
                }
            }
            return Ok(());
        }
        // Each payload is read before the camera's view is looked up: a payload that cannot
        // be read must not create a camera.
        match topic {
            CameraTopic::State => {
                let info = CameraInfo::from_wire(&read(payload)?);
                if let Some(view) = self.camera_mut(name) {
                    view.state = Some(stamp(now, info));
                }
            }
            CameraTopic::Detections => {
                let frame = Frame::from_wire(&read(payload)?);
                if let Some(view) = self.camera_mut(name) {
                    view.frame = Some(stamp(now, frame));
                }
            }
            CameraTopic::Events => {
                let row = EventRow::from_wire(&read(payload)?);
                if let Some(view) = self.camera_mut(name) {
                    view.events.push_front(stamp(now, row));
                    view.events.truncate(MAX_EVENTS);
                }
            }
        }
        Ok(())
    }

    fn apply_available(&mut self, payload: &[u8], now_ms: i64) -> Result<(), PayloadProblem> {
        match Availability::from_payload(payload) {
            Ok(None) => {
                // An empty retained message is how a retained topic is cleared.
                self.available = None;
                Ok(())
            }
            Ok(Some(a)) => {
                self.available = Some(stamp(now_ms, Presence::Known(a)));
                Ok(())
            }
            Err(AvailabilityError::UnknownWord(word)) => {
                let shown = clean(&word, 24);
                self.available = Some(stamp(now_ms, Presence::Other(shown.clone())));
                Err(PayloadProblem::UnknownAvailability(shown))
            }
            Err(e) => Err(PayloadProblem::Availability(e)),
        }
    }

    fn wanted(&self, camera: &str) -> bool {
        self.only.as_deref().is_none_or(|only| only == camera)
    }

    /// The camera's view, created on first sight while fewer than [`MAX_CAMERAS`] are tracked.
    fn camera_mut(&mut self, name: &str) -> Option<&mut CameraView> {
        if !self.cameras.contains_key(name) {
            if self.cameras.len() >= MAX_CAMERAS {
                self.untracked = self.untracked.saturating_add(1);
                return None;
            }
            self.cameras.insert(name.to_owned(), CameraView::default());
        }
        self.cameras.get_mut(name)
    }
}

fn is_blank(payload: &[u8]) -> bool {
    payload.iter().all(u8::is_ascii_whitespace)
}

fn read<T: DeserializeOwned>(payload: &[u8]) -> Result<T, PayloadProblem> {
    Ok(wire::decode(payload)?)
}

/// Why a payload could not be shown; its text becomes the screen's problem line, so a payload
/// the view cannot read is reported, never dropped in silence.
#[derive(Debug, thiserror::Error)]
enum PayloadProblem {
    #[error(transparent)]
    Decode(#[from] wire::DecodeError),
    /// The word as cleaned for the screen (the raw one may hold control characters).
    #[error("unexpected '{0}' (expected online, offline or stopped)")]
    UnknownAvailability(String),
    #[error(transparent)]
    Availability(AvailabilityError),
}
