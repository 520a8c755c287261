//! The screen, drawn from a [`WatchView`]: the device header (availability, versions,
//! learners' heads and samples, training), a section per camera (state and source, fps and
//! latency, the latest detections, recent events), then the last training run, the last reply
//! and the last problem.
//!
//! Each file draws one part; this one puts the parts in order and gives each its priority
//! for a short terminal (`prio`).

mod camera;
mod detections;
mod events;
mod header;
mod replies;
mod training;

use super::layout::{layout, Section};
use super::line::{Line, Style};
use super::model::{CameraView, Stamped, WatchView};

/// Which sections survive a short terminal, most important first (0). Live figures beat
/// descriptions: the device's availability, then each camera's title, figures and
/// detections; the last problem before the device's descriptions because it explains a
/// screen of dashes; events and the last reply go first. Per-camera sections add the
/// camera's index (less than [`super::model::MAX_CAMERAS`]), so the first camera's outlast
/// the second's of the same kind.
pub(super) mod prio {
    pub const HEADER: u16 = 0;
    pub const CAMERA_TITLE: u16 = 100;
    pub const CAMERA_FIGURES: u16 = 200;
    pub const DETECTIONS: u16 = 300;
    pub const PROBLEM: u16 = 400;
    pub const DEVICE: u16 = 500;
    pub const LEARNERS: u16 = 600;
    pub const TRAINING: u16 = 700;
    pub const EVENTS: u16 = 800;
    pub const REPLY: u16 = 900;
}

impl WatchView {
    /// The whole screen as text lines, fitting `width` columns and at most `height` rows
    /// (long lines end in '…'; when rows are short, the lowest-priority sections shrink or go
    /// first, see `prio`). `color`: whether to emit ANSI SGR colours (green online, red
    /// offline, yellow stopped/paused, bold labels); without, the output is plain text.
    pub fn render(&self, width: usize, height: usize, now_ms: i64, color: bool) -> Vec<String> {
        let mut sections = vec![
            Section::fixed(prio::HEADER, false, header::title(self, now_ms)),
            Section::fixed(prio::DEVICE, false, header::device(self)),
            header::learners(self, width),
        ];
        for (i, (name, cam)) in self.cameras.iter().enumerate() {
            let i = i as u16;
            sections.push(Section::fixed(
                prio::CAMERA_TITLE + i,
                true,
                camera::title(self, name, cam),
            ));
            sections.push(Section::fixed(
                prio::CAMERA_FIGURES + i,
                false,
                camera::figures(cam),
            ));
            sections.push(detections::section(
                cam,
                width,
                now_ms,
                prio::DETECTIONS + i,
            ));
            sections.push(events::section(cam, now_ms, prio::EVENTS + i));
        }
        if self.cameras.is_empty() {
            let waiting = match &self.only {
                Some(name) => format!("no message of camera `{name}` yet"),
                None => "no camera yet".to_owned(),
            };
            sections.push(Section::fixed(
                prio::CAMERA_TITLE,
                true,
                Line::styled(Style::Dim, waiting),
            ));
        }
        sections.push(Section::fixed(
            prio::TRAINING,
            true,
            training::line(self, now_ms),
        ));
        if let Some(r) = &self.reply {
            sections.push(Section::fixed(
                prio::REPLY,
                false,
                replies::reply(r, now_ms),
            ));
        }
        if let Some(p) = &self.problem {
            let line = replies::problem(p, self.problems, now_ms);
            sections.push(Section::fixed(prio::PROBLEM, false, line));
        }
        layout(sections, height)
            .iter()
            .map(|l| l.render(width, color))
            .collect()
    }
}

/// A field of a stamped value, with the value's arrival time.
fn field<S, T>(s: Option<&Stamped<S>>, f: impl Fn(&S) -> T) -> Option<(i64, T)> {
    s.map(|s| (s.at_ms, f(&s.value)))
}

/// The value that arrived last; the first wins ties. `state` and `stats` both carry paused,
/// training, head version and source state, and either can be the fresher one.
fn freshest<T>(a: Option<(i64, T)>, b: Option<(i64, T)>) -> Option<T> {
    match (a, b) {
        (Some((ta, va)), Some((tb, vb))) => Some(if tb > ta { vb } else { va }),
        (Some((_, v)), None) | (None, Some((_, v))) => Some(v),
        (None, None) => None,
    }
}

/// The camera's pause flag, from the fresher of its state and its figures.
fn paused(cam: &CameraView) -> Option<bool> {
    freshest(
        field(cam.state.as_ref(), |s| s.paused),
        field(cam.figures.as_ref(), |f| f.paused),
    )
}
