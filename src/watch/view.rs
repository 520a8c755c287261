//! `adaptd watch`: what one device's MQTT topics say, as a screen of text.
//!
//! The model ([`WatchView`]) and the renderer are pure: no MQTT, no terminal, no clock. The
//! caller feeds every message of `<prefix>/<device>/#` to [`WatchView::apply`] together with
//! the wall clock, and redraws with [`WatchView::render`] and [`frame`] on a timer, so all of
//! it is testable on plain strings.
//!
//! Payloads are read loosely, field by field from a `serde_json::Value`, rather than through
//! the daemon's own types: the watch is often a different binary version from the daemon it
//! watches. A newer daemon may add fields (ignored) or drop some (shown as `–`); a field of an
//! unexpected type is treated as missing. Only a payload that cannot be read at all (not JSON,
//! not an object, an unknown availability word) is reported, as the one-line "last problem".
//! Nothing a payload contains can panic the view, grow its memory without bound, or reach the
//! terminal as a control sequence (a label or an error message with an ESC in it is shown
//! with `�` instead).

use std::collections::VecDeque;

use serde_json::{Map, Value};
use unicode_width::UnicodeWidthChar;

/// Consensus events kept; older ones are forgotten (the screen has room for about this many).
pub const MAX_EVENTS: usize = 8;
/// Items kept from one frame; a detector can report dozens, the rest are only counted.
const MAX_ITEMS: usize = 64;
/// Labels kept from a `samples` map (the screen shows one line of them anyway).
const MAX_LABELS: usize = 256;
/// Characters kept of any payload string: more than a screen line, and bounded memory.
const MAX_TEXT: usize = 240;
/// Cells of a score bar.
const BAR_CELLS: usize = 8;
/// Widest label columns of the detections table; longer labels end in `…`.
const LABEL_COLUMN_MAX: usize = 18;
const BOX_COLUMN_MAX: usize = 23;
/// Placeholder for a value the device did not send (or sent with an unexpected type).
const DASH: &str = "–";
const SEP: &str = " · ";

/// A value with the watch's wall-clock time of its arrival. Ages are measured against the
/// watch's own clock, not the device's timestamps, so a device with a wrong clock (a Pi
/// without RTC before NTP) still shows sensible ages.
#[derive(Debug, Clone)]
struct Stamped<T> {
    at_ms: i64,
    value: T,
}

fn stamp<T>(at_ms: i64, value: T) -> Stamped<T> {
    Stamped { at_ms, value }
}

/// The retained `available` topic.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Availability {
    Online,
    /// The broker's last will: the device vanished without saying goodbye.
    Offline,
    /// Clean shutdown.
    Stopped,
    /// A word this watch does not know (shown as is, and reported as a problem).
    Other(String),
}

/// A source's state: `state.source_state` is an object (`{"state": "reconnecting",
/// "attempt": 3, "last_error": ...}`), `stats.source_state` only its name.
#[derive(Debug, Clone, Default, PartialEq)]
struct SourceStateView {
    state: Option<String>,
    detail: Option<String>,
}

/// Sample counts per label, sorted by count (largest first), then label.
#[derive(Debug, Clone, Default, PartialEq)]
struct Samples {
    top: Vec<(String, u64)>,
    labels: usize,
    total: u64,
}

/// The retained `state` message.
#[derive(Debug, Clone, Default)]
struct DeviceState {
    binary_version: Option<String>,
    model: Option<String>,
    embedding_model: Option<String>,
    /// `Some(None)`: the device said `null` (no head trained yet), which is worth saying.
    head_version: Option<Option<u64>>,
    paused: Option<bool>,
    training: Option<bool>,
    source: Option<String>,
    source_state: Option<SourceStateView>,
    label: Option<String>,
    samples: Option<Samples>,
}

/// The periodic `stats` message.
#[derive(Debug, Clone, Default)]
struct Stats {
    fps: Option<f64>,
    frames: Option<u64>,
    skipped: Option<u64>,
    p50: Option<f64>,
    p95: Option<f64>,
    paused: Option<bool>,
    source_state: Option<String>,
    head_version: Option<Option<u64>>,
    head_macro_f1: Option<f64>,
    training: Option<bool>,
    samples: Option<Samples>,
    cpu_temp_c: Option<f64>,
    mqtt_reconnects: Option<u64>,
    uptime_s: Option<u64>,
}

/// One `detections` message.
#[derive(Debug, Clone, Default)]
struct Frame {
    frame_id: Option<u64>,
    width: Option<u64>,
    height: Option<u64>,
    inference_ms: Option<f64>,
    /// The first [`MAX_ITEMS`]; `None` when `items` was missing or not an array.
    items: Option<Vec<ItemView>>,
    /// How many items the frame had.
    item_count: usize,
}

#[derive(Debug, Clone, Default)]
struct ItemView {
    label: Option<String>,
    score: Option<f64>,
    bbox: Option<[f64; 4]>,
    head: Option<HeadView>,
}

#[derive(Debug, Clone, Default)]
struct HeadView {
    label: Option<String>,
    score: Option<f64>,
    unknown: bool,
}

/// One consensus event (`{"type": "new"|"update"|"end", "track", "before", "after", "score"}`).
#[derive(Debug, Clone, Default)]
struct EventView {
    kind: Option<String>,
    track: Option<String>,
    before: Option<String>,
    after: Option<String>,
    score: Option<f64>,
}

/// One `training` message; the large fields (`confusion`, `outcome`) are not kept.
#[derive(Debug, Clone, Default)]
struct TrainingView {
    status: Option<String>,
    trigger: Option<String>,
    version: Option<u64>,
    deployed: Option<bool>,
    reason: Option<String>,
    accuracy: Option<f64>,
    macro_f1: Option<f64>,
    current_macro_f1: Option<f64>,
    error: Option<String>,
}

/// One `reply` message, reduced to what fits a line.
#[derive(Debug, Clone, Default)]
struct ReplyView {
    id: Option<String>,
    cmd: Option<String>,
    ok: Option<bool>,
    /// The error message, or the result as compact JSON.
    detail: Option<String>,
}

#[derive(Debug, Clone)]
struct Problem {
    topic: String,
    message: String,
}

/// What the watch view knows about one device, built from its MQTT messages.
///
/// Everything is kept already reduced to what the screen shows (bounded strings, at most
/// [`MAX_EVENTS`] events, `MAX_ITEMS` items per frame), so a chatty or hostile publisher
/// cannot grow it, and rendering never has to re-parse JSON.
#[derive(Debug, Clone)]
pub struct WatchView {
    device: String,
    available: Option<Stamped<Availability>>,
    state: Option<Stamped<DeviceState>>,
    stats: Option<Stamped<Stats>>,
    frame: Option<Stamped<Frame>>,
    training: Option<Stamped<TrainingView>>,
    /// Most recent first, at most [`MAX_EVENTS`].
    events: VecDeque<Stamped<EventView>>,
    reply: Option<Stamped<ReplyView>>,
    problem: Option<Stamped<Problem>>,
    problems: u64,
    /// The last message on a non-retained topic. Retained ones (`state`, `available`) do not
    /// count: the broker replays them on subscribe however long the device has been gone.
    last_live_ms: Option<i64>,
}

impl WatchView {
    pub fn new(device: &str) -> WatchView {
        WatchView {
            device: clean(device, 64),
            available: None,
            state: None,
            stats: None,
            frame: None,
            training: None,
            events: VecDeque::with_capacity(MAX_EVENTS),
            reply: None,
            problem: None,
            problems: 0,
            last_live_ms: None,
        }
    }

    /// One message; `subtopic` is the topic relative to `<prefix>/<device>/` (e.g.
    /// "detections", "state", "stats", "training", "events", "available", "reply"), `now_ms`
    /// the wall clock in unix ms (for "seen 3 s ago" and event ages). Bad/unexpected payloads
    /// never panic: they are remembered as a one-line "last problem" shown at the bottom.
    ///
    /// Other subtopics (`snapshot`, a JPEG; `cmd/...` and `samples/...`, which other clients
    /// publish; anything a newer daemon adds) are ignored without a problem, so the caller can
    /// simply subscribe to `<prefix>/<device>/#`.
    pub fn apply(&mut self, subtopic: &str, payload: &[u8], now_ms: i64) {
        let topic = subtopic.trim_matches('/');
        let live = matches!(
            topic,
            "detections" | "stats" | "events" | "training" | "reply"
        );
        if live {
            self.last_live_ms = Some(now_ms);
        }
        let outcome = match topic {
            "available" => self.apply_available(payload, now_ms),
            "state" => self.apply_state(payload, now_ms),
            "stats" => object(payload).map(|m| self.stats = Some(stamp(now_ms, Stats::read(&m)))),
            "detections" => {
                object(payload).map(|m| self.frame = Some(stamp(now_ms, Frame::read(&m))))
            }
            "events" => object(payload).map(|m| {
                self.events.push_front(stamp(now_ms, EventView::read(&m)));
                self.events.truncate(MAX_EVENTS);
            }),
            "training" => {
                object(payload).map(|m| self.training = Some(stamp(now_ms, TrainingView::read(&m))))
            }
            "reply" => {
                object(payload).map(|m| self.reply = Some(stamp(now_ms, ReplyView::read(&m))))
            }
            _ => return,
        };
        if let Err(message) = outcome {
            self.problems = self.problems.saturating_add(1);
            self.problem = Some(stamp(
                now_ms,
                Problem {
                    topic: clean(topic, 40),
                    message: clean(&message, MAX_TEXT),
                },
            ));
        }
    }

    fn apply_available(&mut self, payload: &[u8], now_ms: i64) -> Result<(), String> {
        let text = std::str::from_utf8(payload)
            .map_err(|_| "not UTF-8 text (expected online, offline or stopped)".to_string())?
            .trim();
        let word = |w: &str| text.eq_ignore_ascii_case(w);
        let availability = if text.is_empty() {
            // An empty retained message is how a retained topic is cleared.
            self.available = None;
            return Ok(());
        } else if word("online") {
            Availability::Online
        } else if word("offline") {
            Availability::Offline
        } else if word("stopped") {
            Availability::Stopped
        } else {
            let shown = clean(text, 24);
            self.available = Some(stamp(now_ms, Availability::Other(shown.clone())));
            return Err(format!(
                "unexpected '{shown}' (expected online, offline or stopped)"
            ));
        };
        self.available = Some(stamp(now_ms, availability));
        Ok(())
    }

    fn apply_state(&mut self, payload: &[u8], now_ms: i64) -> Result<(), String> {
        if payload.iter().all(u8::is_ascii_whitespace) {
            // The retained state was cleared (e.g. the device was decommissioned).
            self.state = None;
            return Ok(());
        }
        let m = object(payload)?;
        self.state = Some(stamp(now_ms, DeviceState::read(&m)));
        Ok(())
    }

    /// The whole screen as text lines, fitting `width` columns and at most `height` rows
    /// (long lines end in '…'; when rows are short, the lowest-priority sections shrink or go
    /// first: blank separators, then the last reply, events, samples, training, the model
    /// line, the last problem, detection rows, the stable label and the stats line; the
    /// device/availability line goes last, see `prio`).
    /// `color`: whether to emit ANSI SGR colours (green online, red offline, yellow
    /// stopped/paused, bold labels); with `color = false` the output is plain text.
    pub fn render(&self, width: usize, height: usize, now_ms: i64, color: bool) -> Vec<String> {
        let mut sections = vec![
            Section::fixed(prio::HEADER, false, self.header_line(now_ms)),
            Section::fixed(prio::MODEL, false, self.model_line()),
            Section::fixed(prio::STATS, false, self.stats_line()),
            Section::fixed(prio::LABEL, false, self.label_line()),
            self.detections_section(width, now_ms),
            Section::fixed(prio::TRAINING, true, self.training_line(now_ms)),
            Section::fixed(prio::SAMPLES, false, self.samples_line(width)),
            self.events_section(now_ms),
        ];
        if let Some(r) = &self.reply {
            sections.push(Section::fixed(prio::REPLY, false, reply_line(r, now_ms)));
        }
        if let Some(p) = &self.problem {
            let line = self.problem_line(p, now_ms);
            sections.push(Section::fixed(prio::PROBLEM, false, line));
        }
        layout(sections, height)
            .iter()
            .map(|l| l.render(width, color))
            .collect()
    }

    // --- lines -------------------------------------------------------------------------

    /// `adaptd watch · cam1 · online · paused · seen 2 s ago · adaptd 0.1.0`
    fn header_line(&self, now_ms: i64) -> Line {
        let mut l = Line::default();
        l.push(Style::Bold, "adaptd watch")
            .plain(SEP)
            .push(Style::Bold, &self.device)
            .plain(SEP);
        match self.available.as_ref().map(|a| &a.value) {
            None => l.push(Style::Dim, DASH),
            Some(Availability::Online) => l.push(Style::Green, "online"),
            Some(Availability::Offline) => l.push(Style::Red, "offline"),
            Some(Availability::Stopped) => l.push(Style::Yellow, "stopped"),
            Some(Availability::Other(w)) => l.push(Style::Yellow, w),
        };
        let paused = freshest(
            self.state_field(|s| s.paused),
            self.stats_field(|s| s.paused),
        );
        if paused == Some(true) {
            l.plain(SEP).push(Style::Yellow, "paused");
        }
        match self.last_live_ms {
            Some(at) => l.plain(format!("{SEP}seen {}", age(now_ms, at))),
            None => l.plain(format!("{SEP}no live message yet")),
        };
        if let Some(v) = self.state_field(|s| s.binary_version.clone()) {
            l.plain(format!("{SEP}adaptd {}", v.1));
        }
        l
    }

    /// `model nanodet-m + mobilenetv2 · head v3 (macro-F1 0.93) · source … (streaming)`
    fn model_line(&self) -> Line {
        let mut l = Line::default();
        let state = self.state.as_ref().map(|s| &s.value);
        let model = state.and_then(|s| s.model.clone());
        l.plain("model ")
            .push(Style::Bold, model.as_deref().unwrap_or(DASH));
        if let Some(e) = state.and_then(|s| s.embedding_model.as_ref()) {
            if Some(e) != model.as_ref() {
                // A detector: boxes are sub-labelled through this classification backbone.
                l.plain(" + ").plain(e);
            }
        }
        l.plain(SEP);
        let head = freshest(
            self.state_field(|s| s.head_version),
            self.stats_field(|s| s.head_version),
        );
        match head {
            None => l.plain(format!("head {DASH}")),
            Some(None) => l.plain("no head yet"),
            Some(Some(v)) => {
                l.plain(format!("head v{v}"));
                // The F1 is only in `stats`; it describes the stats' head, which may lag
                // behind a head that `state` already reports as deployed.
                if let Some(s) = self.stats.as_ref().map(|s| &s.value) {
                    if let (Some(Some(sv)), Some(f1)) = (s.head_version, s.head_macro_f1) {
                        if sv == v {
                            l.plain(format!(" (macro-F1 {f1:.2})"));
                        }
                    }
                }
                &mut l
            }
        };
        l.plain(SEP).plain("source ");
        l.plain(state.and_then(|s| s.source.as_deref()).unwrap_or(DASH));
        if let Some(ss) = self.source_state() {
            let name = ss.state.as_deref().unwrap_or(DASH);
            let style = match name {
                "failed" => Style::Red,
                "reconnecting" | "ended" | "starting" => Style::Yellow,
                _ => Style::Plain,
            };
            l.plain(" (").push(style, name);
            if let Some(d) = &ss.detail {
                l.plain(": ").plain(d);
            }
            l.plain(")");
        }
        l
    }

    /// The fresher of `state`'s and `stats`' source state; the detail (attempt, error) only
    /// comes with `state`, and is kept when `stats` names the same state.
    fn source_state(&self) -> Option<SourceStateView> {
        let from_state = self.state_field(|s| s.source_state.clone());
        let from_stats = self.stats_field(|s| {
            s.source_state.clone().map(|name| SourceStateView {
                state: Some(name),
                detail: None,
            })
        });
        let detail = from_state.as_ref().map(|s| s.1.clone());
        let mut chosen = freshest(from_state, from_stats)?;
        if chosen.detail.is_none() {
            if let Some(d) = detail.filter(|d| d.state == chosen.state) {
                chosen.detail = d.detail;
            }
        }
        Some(chosen)
    }

    /// `9.8 fps · p50 38 ms · p95 57 ms · 12034 frames, 12 skipped · up 3h12m · CPU 52°C`
    fn stats_line(&self) -> Line {
        let mut l = Line::default();
        let Some(s) = self.stats.as_ref().map(|s| &s.value) else {
            l.push(Style::Dim, "no stats yet");
            return l;
        };
        l.plain(format!(
            "{} fps{SEP}p50 {}{SEP}p95 {}{SEP}{} frames, {} skipped{SEP}up {}",
            opt(s.fps, |v| format!("{v:.1}")),
            opt(s.p50, fmt_ms),
            opt(s.p95, fmt_ms),
            opt(s.frames, |v| v.to_string()),
            opt(s.skipped, |v| v.to_string()),
            opt(s.uptime_s, fmt_span),
        ));
        // Absent on boards without a thermal zone: leave it out rather than show a dash.
        if let Some(t) = s.cpu_temp_c {
            l.plain(format!("{SEP}CPU {t:.0}°C"));
        }
        if let Some(n) = s.mqtt_reconnects.filter(|n| *n > 0) {
            l.plain(format!("{SEP}{n} MQTT reconnect{}", plural(n)));
        }
        l
    }

    /// `stable label: alice` (the first label that held through consensus).
    fn label_line(&self) -> Line {
        let mut l = Line::default();
        l.plain("stable label: ");
        match self.state.as_ref().and_then(|s| s.value.label.as_deref()) {
            Some(label) => l.push(Style::Bold, label),
            None => l.push(Style::Dim, DASH),
        };
        l
    }

    /// The latest frame: a summary line, a column header and one row per item.
    fn detections_section(&self, width: usize, now_ms: i64) -> Section {
        let Some(f) = &self.frame else {
            return Section::fixed(
                prio::DETECTIONS,
                true,
                Line::styled(Style::Dim, "no frame yet"),
            );
        };
        let frame = &f.value;
        let mut summary = Line::default();
        summary.plain(format!(
            "last frame {}{SEP}#{}{SEP}{}x{}{SEP}{} ms",
            age(now_ms, f.at_ms),
            opt(frame.frame_id, |v| v.to_string()),
            opt(frame.width, |v| v.to_string()),
            opt(frame.height, |v| v.to_string()),
            opt(frame.inference_ms, |v| format!("{v:.1}")),
        ));
        let items = match &frame.items {
            None => {
                summary.plain(format!("{SEP}items {DASH}"));
                return Section::fixed(prio::DETECTIONS, true, summary);
            }
            Some(items) if items.is_empty() => {
                summary.plain(format!("{SEP}nothing detected"));
                return Section::fixed(prio::DETECTIONS, true, summary);
            }
            Some(items) => items,
        };
        let n = frame.item_count;
        summary.plain(format!("{SEP}{n} item{}", plural(n as u64)));
        let (header, rows) = item_table(items, width);
        Section::elastic(
            prio::DETECTIONS,
            true,
            vec![summary, header],
            rows,
            n.max(items.len()),
            1,
            |n| format!("   … {n} more"),
        )
    }

    /// One line on the training run: running, deployed, kept back or failed.
    fn training_line(&self, now_ms: i64) -> Line {
        let mut l = Line::default();
        l.plain("training: ");
        let from_state = self.state_field(|s| s.training);
        let from_stats = self.stats_field(|s| s.training);
        let flag_at = from_state.map(|f| f.0).max(from_stats.map(|f| f.0));
        let flag = freshest(from_state, from_stats);
        let Some(t) = &self.training else {
            match flag {
                Some(true) => l.push(Style::Yellow, "running"),
                Some(false) => l.plain("idle"),
                None => l.push(Style::Dim, DASH),
            };
            return l;
        };
        let msg = &t.value;
        let started = msg.status.as_deref() == Some("started");
        // A `training` message can be missed (the watch started mid-run, or QoS 0 lost it):
        // when the fresher flag of `state`/`stats` disagrees, it wins.
        if let (Some(running), Some(at)) = (flag, flag_at) {
            if at > t.at_ms && running != started {
                if running {
                    l.push(Style::Yellow, "running");
                } else {
                    l.plain("idle");
                }
                return l;
            }
        }
        let when = age(now_ms, t.at_ms);
        match msg.status.as_deref() {
            Some("started") => {
                let secs = now_ms.saturating_sub(t.at_ms).max(0) / 1000;
                l.push(Style::Yellow, "running")
                    .plain(format!(" for {}", fmt_span(secs as u64)));
                if let Some(trigger) = &msg.trigger {
                    l.plain(format!(" (trigger: {trigger})"));
                }
            }
            Some("finished") => {
                let version = opt(msg.version, |v| format!("v{v}"));
                match msg.deployed {
                    Some(true) => l.push(Style::Green, format!("{version} deployed")),
                    Some(false) => l.push(Style::Yellow, format!("{version} not deployed")),
                    None => l.plain(format!("{version} finished")),
                };
                l.plain(format!(" {when}"));
                if let Some(f1) = msg.macro_f1 {
                    l.plain(format!("{SEP}macro-F1 {f1:.3}"));
                    if let Some(cur) = msg.current_macro_f1 {
                        l.plain(format!(" (current {cur:.3})"));
                    }
                }
                if let Some(a) = msg.accuracy {
                    l.plain(format!("{SEP}accuracy {a:.3}"));
                }
                if let Some(r) = &msg.reason {
                    l.plain(format!("{SEP}{r}"));
                }
            }
            Some("failed") => {
                l.push(Style::Red, "failed")
                    .plain(format!(" {when}: "))
                    .plain(msg.error.as_deref().unwrap_or(DASH));
            }
            Some(other) => {
                l.plain(format!("{other} {when}"));
            }
            None => {
                l.plain(format!("{DASH} {when}"));
            }
        }
        l
    }

    /// `samples 42: alice 20 · bob 12 · cat 10 · +3 more`, as many labels as fit.
    fn samples_line(&self, width: usize) -> Line {
        let mut l = Line::default();
        let samples = freshest(
            self.state_field(|s| s.samples.clone()),
            self.stats_field(|s| s.samples.clone()),
        );
        let Some(s) = samples else {
            l.plain(format!("samples: {DASH}"));
            return l;
        };
        if s.labels == 0 {
            l.plain("samples: none yet");
            return l;
        }
        l.plain(format!("samples {}: ", s.total));
        let more = |rest: usize| format!("{SEP}+{rest} more");
        let reserve = str_width(&more(s.labels));
        for (i, (label, count)) in s.top.iter().enumerate() {
            let sep = if i == 0 { "" } else { SEP };
            let part_w = str_width(sep) + str_width(label) + 1 + count.to_string().len();
            let last = i + 1 == s.labels;
            let needed = l.width() + part_w + if last { 0 } else { reserve };
            if i > 0 && needed > width {
                l.plain(more(s.labels - i));
                return l;
            }
            l.plain(sep)
                .push(Style::Bold, label)
                .plain(format!(" {count}"));
        }
        if s.labels > s.top.len() {
            l.plain(more(s.labels - s.top.len()));
        }
        l
    }

    fn events_section(&self, now_ms: i64) -> Section {
        if self.events.is_empty() {
            let line = Line::plain_text("recent events: none yet");
            return Section::fixed(prio::EVENTS, true, line);
        }
        let rows = self
            .events
            .iter()
            .map(|e| event_line(e, now_ms))
            .collect::<Vec<_>>();
        let n = rows.len();
        Section::elastic(
            prio::EVENTS,
            true,
            vec![Line::plain_text("recent events:")],
            rows,
            n,
            1,
            |n| format!("   … {n} older"),
        )
    }

    fn problem_line(&self, p: &Stamped<Problem>, now_ms: i64) -> Line {
        let mut l = Line::default();
        l.push(Style::Red, "problem")
            .plain(format!(" {}", age(now_ms, p.at_ms)));
        if self.problems > 1 {
            l.plain(format!(" ({} so far)", self.problems));
        }
        l.plain(format!(": {}: {}", p.value.topic, p.value.message));
        l
    }

    fn state_field<T>(&self, f: impl Fn(&DeviceState) -> Option<T>) -> Option<(i64, T)> {
        let s = self.state.as_ref()?;
        f(&s.value).map(|v| (s.at_ms, v))
    }

    fn stats_field<T>(&self, f: impl Fn(&Stats) -> Option<T>) -> Option<(i64, T)> {
        let s = self.stats.as_ref()?;
        f(&s.value).map(|v| (s.at_ms, v))
    }
}

/// The value that arrived last; `state` wins ties. Both `state` and `stats` carry paused,
/// training, head version, source state and samples, and either can be the fresher one.
fn freshest<T>(from_state: Option<(i64, T)>, from_stats: Option<(i64, T)>) -> Option<T> {
    match (from_state, from_stats) {
        (Some((a, va)), Some((b, vb))) => Some(if b > a { vb } else { va }),
        (Some((_, v)), None) | (None, Some((_, v))) => Some(v),
        (None, None) => None,
    }
}

/// The detections table: column header and one row per item, with the index the `label`
/// command's `detection` refers to.
fn item_table(items: &[ItemView], width: usize) -> (Line, Vec<Line>) {
    let labels: Vec<String> = items
        .iter()
        .map(|i| fit(i.label.as_deref().unwrap_or(DASH), LABEL_COLUMN_MAX))
        .collect();
    let boxes: Vec<Option<String>> = items
        .iter()
        .map(|i| i.bbox.map(|b| fit(&fmt_box(b), BOX_COLUMN_MAX)))
        .collect();
    let with_box = boxes.iter().any(Option::is_some);
    let heads: Vec<Option<String>> = items
        .iter()
        .map(|i| {
            i.head
                .as_ref()
                .map(|h| fit(h.label.as_deref().unwrap_or(DASH), LABEL_COLUMN_MAX))
        })
        .collect();
    let idx_w = (items.len().saturating_sub(1)).to_string().len();
    let label_w = column_width(labels.iter().map(String::as_str), "backbone");
    let box_w = column_width(boxes.iter().flatten().map(String::as_str), "box");
    let head_w = column_width(heads.iter().flatten().map(String::as_str), "head");
    // Bars only when the whole row fits: numbers matter more than bars.
    let row_w = |bar: usize| {
        let score = 4 + if bar > 0 { 1 + bar } else { 0 };
        idx_w
            + 2
            + label_w
            + 2
            + score
            + if with_box { 2 + box_w } else { 0 }
            + 2
            + head_w
            + 1
            + score
            + " (unknown)".len()
    };
    let bar = if row_w(BAR_CELLS) <= width {
        BAR_CELLS
    } else {
        0
    };
    let score_w = 4 + if bar > 0 { 1 + bar } else { 0 };

    let mut header = Line::default();
    let mut h = format!(
        "{}  {}  {}",
        pad_left("#", idx_w),
        pad("backbone", label_w),
        pad("score", score_w)
    );
    if with_box {
        h.push_str(&format!("  {}", pad("box", box_w)));
    }
    h.push_str("  head");
    header.push(Style::Dim, h);

    let rows = items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let mut l = Line::default();
            l.plain(format!("{}  ", pad_left(&i.to_string(), idx_w)))
                .push(Style::Bold, &labels[i])
                .plain(" ".repeat(label_w.saturating_sub(str_width(&labels[i])) + 2))
                .plain(pad(&score_cell(item.score, bar), score_w));
            if with_box {
                let b = boxes[i].as_deref().unwrap_or(DASH);
                l.plain(format!("  {}", pad(b, box_w)));
            }
            l.plain("  ");
            match (&item.head, &heads[i]) {
                (Some(head), Some(label)) => {
                    let style = if head.unknown {
                        Style::Yellow
                    } else {
                        Style::Bold
                    };
                    l.push(style, label)
                        .plain(" ".repeat(head_w.saturating_sub(str_width(label)) + 1))
                        .plain(score_cell(head.score, bar));
                    if head.unknown && label != "unknown" {
                        l.push(Style::Yellow, " (unknown)");
                    }
                }
                _ => {
                    l.push(Style::Dim, DASH);
                }
            }
            l.trim_end();
            l
        })
        .collect();
    (header, rows)
}

fn column_width<'a>(cells: impl Iterator<Item = &'a str>, title: &str) -> usize {
    cells.map(str_width).fold(str_width(title), usize::max)
}

/// `0.91 ███████░` (or just `0.91` when `bar` is 0).
fn score_cell(score: Option<f64>, bar: usize) -> String {
    let Some(s) = score else {
        return DASH.to_string();
    };
    let number = format!("{s:.2}");
    if bar == 0 {
        return number;
    }
    let filled = (s.clamp(0.0, 1.0) * bar as f64).round() as usize;
    format!(
        "{number} {}{}",
        "█".repeat(filled),
        "░".repeat(bar - filled.min(bar))
    )
}

/// `x1,y1 x2,y2` in whole pixels.
fn fmt_box(b: [f64; 4]) -> String {
    format!("{:.0},{:.0} {:.0},{:.0}", b[0], b[1], b[2], b[3])
}

/// `   12 s ago  new     person: – → alice  0.88`
fn event_line(e: &Stamped<EventView>, now_ms: i64) -> Line {
    let ev = &e.value;
    let mut l = Line::default();
    let kind = ev.kind.as_deref().unwrap_or(DASH);
    l.plain(format!(
        "  {}  {}  ",
        pad_left(&age(now_ms, e.at_ms), 10),
        pad(kind, 6)
    ));
    l.plain(ev.track.as_deref().unwrap_or(DASH)).plain(": ");
    match &ev.before {
        Some(b) => l.push(Style::Bold, b),
        None => l.plain(DASH),
    };
    l.plain(" → ");
    match &ev.after {
        Some(a) => l.push(Style::Bold, a),
        None => l.plain(DASH),
    };
    // `end` events carry score 0: nothing to show.
    if let Some(s) = ev.score.filter(|s| *s > 0.0) {
        l.plain(format!("  {s:.2}"));
    }
    l
}

/// `last reply 3 s ago: train (id a) ok: {"status":"started"}`
fn reply_line(r: &Stamped<ReplyView>, now_ms: i64) -> Line {
    let reply = &r.value;
    let mut l = Line::default();
    l.plain(format!(
        "last reply {}: {}",
        age(now_ms, r.at_ms),
        reply.cmd.as_deref().unwrap_or(DASH)
    ));
    if let Some(id) = &reply.id {
        l.plain(format!(" (id {id})"));
    }
    l.plain(" ");
    match reply.ok {
        Some(true) => l.push(Style::Green, "ok"),
        Some(false) => l.push(Style::Red, "error"),
        None => l.plain(DASH),
    };
    if let Some(d) = &reply.detail {
        l.plain(": ").plain(d);
    }
    l
}

// --- reading payloads ----------------------------------------------------------------------

/// The payload as a JSON object, or why not.
fn object(payload: &[u8]) -> Result<Map<String, Value>, String> {
    if payload.iter().all(u8::is_ascii_whitespace) {
        return Err("empty payload (expected a JSON object)".into());
    }
    match serde_json::from_slice::<Value>(payload) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(other) => Err(format!("expected a JSON object, got {}", type_name(&other))),
        Err(e) => Err(format!("not valid JSON ({e})")),
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn text(m: &Map<String, Value>, key: &str) -> Option<String> {
    m.get(key)?.as_str().map(|s| clean(s, MAX_TEXT))
}

fn number(m: &Map<String, Value>, key: &str) -> Option<f64> {
    m.get(key)?.as_f64()
}

fn flag(m: &Map<String, Value>, key: &str) -> Option<bool> {
    m.get(key)?.as_bool()
}

fn count(m: &Map<String, Value>, key: &str) -> Option<u64> {
    as_count(m.get(key)?)
}

/// A non-negative integer, also when written as `12.0`.
fn as_count(v: &Value) -> Option<u64> {
    v.as_u64().or_else(|| {
        v.as_f64()
            .filter(|f| *f >= 0.0 && f.fract() == 0.0 && *f < u64::MAX as f64)
            .map(|f| f as u64)
    })
}

/// `Some(None)` for an explicit `null`, `None` when missing or of another type.
fn nullable_count(m: &Map<String, Value>, key: &str) -> Option<Option<u64>> {
    match m.get(key)? {
        Value::Null => Some(None),
        v => as_count(v).map(Some),
    }
}

fn samples(m: &Map<String, Value>, key: &str) -> Option<Samples> {
    let map = m.get(key)?.as_object()?;
    let mut all: Vec<(String, u64)> = map
        .iter()
        .filter_map(|(label, n)| as_count(n).map(|n| (clean(label, 64), n)))
        .collect();
    all.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let labels = all.len();
    let total = all.iter().fold(0u64, |acc, (_, n)| acc.saturating_add(*n));
    all.truncate(MAX_LABELS);
    Some(Samples {
        top: all,
        labels,
        total,
    })
}

/// `state.source_state` is the serialised `SourceState` (`{"state": ..., "attempt": ...,
/// "last_error"|"error": ...}`); a plain string is accepted too.
fn source_state(v: &Value) -> Option<SourceStateView> {
    match v {
        Value::String(s) => Some(SourceStateView {
            state: Some(clean(s, 40)),
            detail: None,
        }),
        Value::Object(o) => {
            let error = text(o, "last_error").or_else(|| text(o, "error"));
            let detail = match (count(o, "attempt"), error) {
                (Some(a), Some(e)) => Some(format!("attempt {a}: {e}")),
                (Some(a), None) => Some(format!("attempt {a}")),
                (None, e) => e,
            };
            Some(SourceStateView {
                state: text(o, "state"),
                detail,
            })
        }
        _ => None,
    }
}

/// `stats.training` is `"running"` / `"idle"`; `state.training` a boolean.
fn running(v: &Value) -> Option<bool> {
    match v {
        Value::Bool(b) => Some(*b),
        Value::String(s) if s == "running" => Some(true),
        Value::String(s) if s == "idle" => Some(false),
        _ => None,
    }
}

impl DeviceState {
    fn read(m: &Map<String, Value>) -> DeviceState {
        DeviceState {
            binary_version: text(m, "binary_version").map(|s| clean(&s, 32)),
            model: text(m, "model"),
            embedding_model: text(m, "embedding_model"),
            head_version: nullable_count(m, "head_version"),
            paused: flag(m, "paused"),
            training: m.get("training").and_then(running),
            source: text(m, "source"),
            source_state: m.get("source_state").and_then(source_state),
            label: text(m, "label"),
            samples: samples(m, "samples"),
        }
    }
}

impl Stats {
    fn read(m: &Map<String, Value>) -> Stats {
        Stats {
            fps: number(m, "fps"),
            frames: count(m, "frames"),
            skipped: count(m, "skipped_frames"),
            p50: number(m, "inference_ms_p50"),
            p95: number(m, "inference_ms_p95"),
            paused: flag(m, "paused"),
            source_state: m
                .get("source_state")
                .and_then(source_state)
                .and_then(|s| s.state),
            head_version: nullable_count(m, "head_version"),
            head_macro_f1: number(m, "head_macro_f1"),
            training: m.get("training").and_then(running),
            samples: samples(m, "samples"),
            cpu_temp_c: number(m, "cpu_temp_c"),
            mqtt_reconnects: count(m, "mqtt_reconnects"),
            uptime_s: count(m, "uptime_s"),
        }
    }
}

impl Frame {
    fn read(m: &Map<String, Value>) -> Frame {
        let (items, item_count) = match m.get("items").and_then(Value::as_array) {
            Some(a) => (
                Some(a.iter().take(MAX_ITEMS).map(ItemView::read).collect()),
                a.len(),
            ),
            None => (None, 0),
        };
        Frame {
            frame_id: count(m, "frame_id"),
            width: count(m, "width"),
            height: count(m, "height"),
            inference_ms: number(m, "inference_ms"),
            items,
            item_count,
        }
    }
}

impl ItemView {
    fn read(v: &Value) -> ItemView {
        let Some(m) = v.as_object() else {
            return ItemView::default();
        };
        let bbox = m.get("box").and_then(Value::as_array).and_then(|a| {
            let v: Vec<f64> = a.iter().filter_map(Value::as_f64).collect();
            <[f64; 4]>::try_from(v).ok().filter(|_| a.len() == 4)
        });
        let head = m.get("head").and_then(Value::as_object).map(|h| {
            let label = text(h, "label");
            HeadView {
                unknown: flag(h, "unknown").unwrap_or(false) || label.as_deref() == Some("unknown"),
                label,
                score: number(h, "score"),
            }
        });
        ItemView {
            label: text(m, "label"),
            score: number(m, "score"),
            bbox,
            head,
        }
    }
}

impl EventView {
    fn read(m: &Map<String, Value>) -> EventView {
        EventView {
            // The daemon serialises `EventKind` as `type`; `kind` is accepted too.
            kind: text(m, "type").or_else(|| text(m, "kind")),
            track: text(m, "track"),
            before: text(m, "before"),
            after: text(m, "after"),
            score: number(m, "score"),
        }
    }
}

impl TrainingView {
    fn read(m: &Map<String, Value>) -> TrainingView {
        TrainingView {
            status: text(m, "status"),
            trigger: text(m, "trigger"),
            version: count(m, "version"),
            deployed: flag(m, "deployed"),
            reason: text(m, "reason"),
            accuracy: number(m, "accuracy"),
            macro_f1: number(m, "macro_f1"),
            current_macro_f1: number(m, "current_macro_f1"),
            error: text(m, "error"),
        }
    }
}

impl ReplyView {
    fn read(m: &Map<String, Value>) -> ReplyView {
        let id = match m.get("id") {
            Some(Value::String(s)) => Some(clean(s, 40)),
            Some(Value::Number(n)) => Some(n.to_string()),
            _ => None,
        };
        let ok = flag(m, "ok");
        let detail = if ok == Some(false) {
            text(m, "error")
        } else {
            match m.get("result") {
                None | Some(Value::Null) => None,
                Some(Value::String(s)) => Some(clean(s, MAX_TEXT)),
                Some(other) => Some(clean(&other.to_string(), MAX_TEXT)),
            }
        };
        ReplyView {
            id,
            cmd: text(m, "cmd").map(|s| clean(&s, 40)),
            ok,
            detail,
        }
    }
}

// --- text ----------------------------------------------------------------------------------

/// Characters that must never reach the terminal from a payload: C0/C1 controls (ESC starts
/// escape sequences) and the bidi controls that reorder what follows them.
fn is_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}'
        )
}

/// Payload text made safe and short: whitespace controls become spaces, other unsafe
/// characters `�`, and at most `max_chars` characters are kept (then `…`).
fn clean(s: &str, max_chars: usize) -> String {
    let mut out = String::with_capacity(s.len().min(max_chars + 4));
    for (i, c) in s.chars().enumerate() {
        if i == max_chars {
            out.push('…');
            break;
        }
        out.push(match c {
            '\n' | '\r' | '\t' => ' ',
            c if is_unsafe(c) => '\u{FFFD}',
            c => c,
        });
    }
    out
}

/// Display columns of one character as the renderer prints it.
fn char_width(c: char) -> usize {
    if is_unsafe(c) {
        1 // printed as `�`
    } else {
        c.width().unwrap_or(0)
    }
}

fn str_width(s: &str) -> usize {
    s.chars().map(char_width).sum()
}

/// `s` cut to `max` display columns, ending in `…` when cut.
fn fit(s: &str, max: usize) -> String {
    if str_width(s) <= max {
        return s.to_string();
    }
    let mut out = String::new();
    let mut used = 0;
    for c in s.chars() {
        let w = char_width(c);
        if used + w + 1 > max {
            break;
        }
        used += w;
        out.push(c);
    }
    out.push('…');
    out
}

/// Left-aligned in `w` display columns (`format!` pads by chars, not columns).
fn pad(s: &str, w: usize) -> String {
    format!("{s}{}", " ".repeat(w.saturating_sub(str_width(s))))
}

fn pad_left(s: &str, w: usize) -> String {
    format!("{}{s}", " ".repeat(w.saturating_sub(str_width(s))))
}

fn opt<T>(v: Option<T>, f: impl FnOnce(T) -> String) -> String {
    v.map_or_else(|| DASH.to_string(), f)
}

fn plural(n: u64) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

/// `7.3 ms` below 10 ms, `38 ms` above: a tenth of a millisecond is noise on a 40 ms model.
fn fmt_ms(v: f64) -> String {
    if v < 10.0 {
        format!("{v:.1} ms")
    } else {
        format!("{v:.0} ms")
    }
}

/// A duration, two units at most: `45s`, `12m05s`, `3h12m`, `2d04h`.
fn fmt_span(secs: u64) -> String {
    match secs {
        0..=59 => format!("{secs}s"),
        60..=3599 => format!("{}m{:02}s", secs / 60, secs % 60),
        3600..=86_399 => format!("{}h{:02}m", secs / 3600, secs % 3600 / 60),
        _ => format!("{}d{:02}h", secs / 86_400, secs % 86_400 / 3600),
    }
}

/// How long ago, one unit: `3 s ago`, `2 min ago`, `5 h ago`, `3 d ago`. A time in the
/// future (the wall clock stepped back) reads as `0 s ago`.
fn age(now_ms: i64, at_ms: i64) -> String {
    let s = now_ms.saturating_sub(at_ms).max(0) / 1000;
    match s {
        0..=59 => format!("{s} s ago"),
        60..=3599 => format!("{} min ago", s / 60),
        3600..=172_799 => format!("{} h ago", s / 3600),
        _ => format!("{} d ago", s / 86_400),
    }
}

// --- styled lines --------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Style {
    Plain,
    Bold,
    Dim,
    Green,
    Red,
    Yellow,
}

impl Style {
    fn sgr(self) -> Option<&'static str> {
        match self {
            Style::Plain => None,
            Style::Bold => Some("1"),
            Style::Dim => Some("2"),
            Style::Green => Some("32"),
            Style::Red => Some("31"),
            Style::Yellow => Some("33"),
        }
    }
}

/// A line as styled pieces. Styles are applied only when printing, per piece and each reset
/// at its end, so truncation counts visible characters only and can never leave a colour
/// running into the next line.
#[derive(Debug, Clone, Default)]
struct Line {
    spans: Vec<(Style, String)>,
}

impl Line {
    fn styled(style: Style, s: impl Into<String>) -> Line {
        let mut l = Line::default();
        l.push(style, s);
        l
    }

    fn plain_text(s: impl Into<String>) -> Line {
        Line::styled(Style::Plain, s)
    }

    fn push(&mut self, style: Style, s: impl Into<String>) -> &mut Line {
        let s = s.into();
        if !s.is_empty() {
            self.spans.push((style, s));
        }
        self
    }

    fn plain(&mut self, s: impl Into<String>) -> &mut Line {
        self.push(Style::Plain, s)
    }

    fn width(&self) -> usize {
        self.spans.iter().map(|(_, s)| str_width(s)).sum()
    }

    /// Drops trailing spaces (table rows padded for columns that turned out empty).
    fn trim_end(&mut self) {
        while let Some((_, s)) = self.spans.last_mut() {
            let t = s.trim_end_matches(' ').len();
            s.truncate(t);
            if !s.is_empty() {
                break;
            }
            self.spans.pop();
        }
    }

    /// The line in at most `width` display columns, ending in `…` when cut.
    fn render(&self, width: usize, color: bool) -> String {
        let cut = self.width() > width;
        let budget = if cut { width.saturating_sub(1) } else { width };
        let mut out = String::new();
        let mut used = 0;
        for (style, text) in &self.spans {
            let mut piece = String::new();
            let mut full = false;
            for c in text.chars() {
                let c = if is_unsafe(c) { '\u{FFFD}' } else { c };
                let w = char_width(c);
                if used + w > budget {
                    full = true;
                    break;
                }
                used += w;
                piece.push(c);
            }
            if !piece.is_empty() {
                match style.sgr().filter(|_| color) {
                    Some(sgr) => out.push_str(&format!("\x1b[{sgr}m{piece}\x1b[0m")),
                    None => out.push_str(&piece),
                }
            }
            if full {
                break;
            }
        }
        if cut && width > 0 {
            out.push('…');
        }
        out
    }
}

// --- layout --------------------------------------------------------------------------------

/// Which sections survive a short terminal, most important first (0). Live figures beat
/// descriptions: the device's availability, then fps, the stable label and the detections;
/// the last problem before the model line because it explains a screen of dashes.
mod prio {
    pub const HEADER: u8 = 0;
    pub const STATS: u8 = 1;
    pub const LABEL: u8 = 2;
    pub const DETECTIONS: u8 = 3;
    pub const PROBLEM: u8 = 4;
    pub const MODEL: u8 = 5;
    pub const TRAINING: u8 = 6;
    pub const SAMPLES: u8 = 7;
    pub const EVENTS: u8 = 8;
    pub const REPLY: u8 = 9;
}

/// A block of lines with a priority (0 = kept longest). An elastic section can hide rows
/// from its end, showing `… N more` instead.
struct Section {
    priority: u8,
    /// A blank line before it (dropped first when rows are short).
    gap_before: bool,
    head: Vec<Line>,
    rows: Vec<Line>,
    /// Rows the section stands for (more than `rows` when the view kept only some).
    total_rows: usize,
    min_rows: usize,
    shown: usize,
    more: fn(usize) -> String,
}

impl Section {
    fn fixed(priority: u8, gap_before: bool, line: Line) -> Section {
        Section::elastic(priority, gap_before, vec![line], Vec::new(), 0, 0, |_| {
            String::new()
        })
    }

    fn elastic(
        priority: u8,
        gap_before: bool,
        head: Vec<Line>,
        rows: Vec<Line>,
        total_rows: usize,
        min_rows: usize,
        more: fn(usize) -> String,
    ) -> Section {
        let shown = rows.len();
        Section {
            priority,
            gap_before,
            head,
            rows,
            total_rows: total_rows.max(shown),
            min_rows,
            shown,
            more,
        }
    }

    fn len(&self) -> usize {
        self.head.len() + self.rows_part(self.shown)
    }

    /// Lines taken by the rows when `shown` of them are shown (plus the `… N more` line).
    fn rows_part(&self, shown: usize) -> usize {
        shown + usize::from(shown < self.total_rows)
    }

    /// Hides rows to save up to `excess` lines, keeping at least `min_rows`.
    fn shrink(&mut self, excess: usize) {
        let now = self.rows_part(self.shown);
        let floor = self.rows_part(self.min_rows.min(self.shown));
        let target = now.saturating_sub(excess).max(floor);
        if target < now {
            // Showing k < total rows costs k + 1 lines (the `… N more`).
            self.shown = target.saturating_sub(1).max(self.min_rows.min(self.shown));
        }
    }
}

fn total_lines(sections: &[Section]) -> usize {
    sections
        .iter()
        .enumerate()
        .map(|(i, s)| s.len() + usize::from(i > 0 && s.gap_before))
        .sum()
}

/// Fits the sections into `height` rows: first the blank separators go, then, from the
/// least important section up, each shrinks as far as it can and is dropped if that is not
/// enough. Priorities are unique.
fn layout(mut sections: Vec<Section>, height: usize) -> Vec<Line> {
    debug_assert!(
        sections
            .iter()
            .enumerate()
            .all(|(i, a)| sections[i + 1..].iter().all(|b| a.priority != b.priority)),
        "section priorities must be unique"
    );
    if total_lines(&sections) > height {
        for s in &mut sections {
            s.gap_before = false;
        }
    }
    let mut order: Vec<u8> = sections.iter().map(|s| s.priority).collect();
    order.sort_unstable_by(|a, b| b.cmp(a));
    for p in order {
        let total = total_lines(&sections);
        if total <= height {
            break;
        }
        if let Some(i) = sections.iter().position(|s| s.priority == p) {
            sections[i].shrink(total - height);
            if total_lines(&sections) > height {
                sections.remove(i);
            }
        }
    }
    let mut lines = Vec::new();
    for (i, s) in sections.iter().enumerate() {
        if i > 0 && s.gap_before {
            lines.push(Line::default());
        }
        lines.extend(s.head.iter().cloned());
        lines.extend(s.rows.iter().take(s.shown).cloned());
        if s.shown < s.total_rows {
            lines.push(Line::plain_text((s.more)(s.total_rows - s.shown)));
        }
    }
    lines.truncate(height);
    lines
}

/// The bytes that redraw the screen in place with `lines`, without a full-screen clear (which
/// flickers): cursor home, then each line, each erasing what the previous frame left on its
/// row, then everything below the last line erased.
///
/// Two details differ from the obvious "line + `ESC[K` + CR LF": each row is erased *before*
/// its text is written, and no line feed follows the last line. A line exactly as wide as the
/// terminal leaves the cursor in the "pending wrap" state on the last column, where an
/// erase-to-end-of-line erases that column too (xterm, alacritty), eating the `…` of every
/// truncated line; and a line feed after a line on the bottom row scrolls the whole screen up
/// by one each frame. The last line is preceded by `ESC[J` (erase to end of screen), which
/// clears its own row and the rows below in one go. Everything is written in one piece, so
/// the terminal never shows a half-erased row.
pub fn frame(lines: &[String]) -> String {
    let mut out = String::from("\x1b[H");
    if lines.is_empty() {
        out.push_str("\x1b[J");
        return out;
    }
    for (i, line) in lines.iter().enumerate() {
        if i > 0 {
            out.push_str("\r\n");
        }
        out.push_str(if i + 1 == lines.len() {
            "\x1b[J"
        } else {
            "\x1b[K"
        });
        out.push_str(line);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_760_000_000_000;

    const DETECTOR_STATE: &str = r#"{"binary_version":"0.1.0","model":"nanodet-m",
        "embedding_model":"mobilenetv2","head_version":3,"paused":false,"training":false,
        "source":"mjpeg http://10.0.0.5:8080/stream (at most 10 fps)",
        "source_state":{"state":"streaming"},"label":"alice",
        "samples":{"alice":20,"bob":12,"cat":10},"samples_total":42}"#;

    const DETECTOR_STATS: &str = r#"{"fps":9.8,"frames":12034,"skipped_frames":12,
        "inference_ms_p50":38.4,"inference_ms_p95":57.1,"paused":false,
        "source_state":"streaming","head_version":3,"head_macro_f1":0.931,"training":"idle",
        "samples":{"alice":20,"bob":12,"cat":10},"cpu_temp_c":52.3,"mqtt_reconnects":0,
        "uptime_s":11520}"#;

    const DETECTOR_FRAME: &str = r#"{"frame_id":12034,"time_unix_ms":1760000000000,
        "width":640,"height":480,"items":[
        {"label":"person","score":0.91,"box":[12.4,30.0,200.7,410.2],
         "head":{"label":"alice","score":0.88,"unknown":false,"head_version":3}},
        {"label":"person","score":0.77,"box":[300,40,380,300],
         "head":{"label":"unknown","score":0.31,"unknown":true,"head_version":3}},
        {"label":"dog","score":0.55,"box":[420.5,200,600,470]}],"inference_ms":38.2}"#;

    const CLASSIFIER_STATE: &str = r#"{"binary_version":"0.1.0","model":"mobilenetv2",
        "embedding_model":"mobilenetv2","head_version":7,"paused":true,"training":false,
        "source":"dir /var/lib/adaptd/frames (5 fps, loop)",
        "source_state":{"state":"reconnecting","attempt":3,"last_error":"no such device"},
        "label":"cat","samples":{"cat":31,"dog":30,"empty":5},"samples_total":66}"#;

    const CLASSIFIER_FRAME: &str = r#"{"frame_id":77,"time_unix_ms":1760000000000,
        "width":224,"height":224,"items":[{"label":"tabby","score":0.62,
        "head":{"label":"cat","score":0.97,"unknown":false,"head_version":7}}],
        "inference_ms":7.25}"#;

    fn detector() -> WatchView {
        let mut v = WatchView::new("cam1");
        v.apply("available", b"online", T0 - 60_000);
        v.apply("state", DETECTOR_STATE.as_bytes(), T0 - 60_000);
        v.apply("stats", DETECTOR_STATS.as_bytes(), T0 - 4_000);
        v.apply(
            "events",
            br#"{"type":"end","track":"dog","before":"dog","after":null,"score":0.0}"#,
            T0 - 95_000,
        );
        v.apply(
            "events",
            br#"{"type":"new","track":"person","before":null,"after":"bob","score":0.74}"#,
            T0 - 30_000,
        );
        v.apply(
            "events",
            br#"{"type":"update","track":"person","before":"bob","after":"alice","score":0.88}"#,
            T0 - 3_000,
        );
        v.apply(
            "training",
            br#"{"status":"started","trigger":"schedule","force":false}"#,
            T0 - 140_000,
        );
        v.apply(
            "training",
            br#"{"status":"finished","version":4,"deployed":true,
                "reason":"v4 holdout macro-F1 0.9310 >= v3's 0.8840 on the same holdout",
                "accuracy":0.95,"macro_f1":0.931,"current_macro_f1":0.884,
                "confusion":[[9,1],[0,10]],"classes":["alice","bob"],"outcome":{}}"#,
            T0 - 125_000,
        );
        v.apply(
            "reply",
            br#"{"id":"a1","cmd":"train","ok":true,"result":{"status":"started"}}"#,
            T0 - 141_000,
        );
        v.apply("detections", DETECTOR_FRAME.as_bytes(), T0 - 400);
        v
    }

    fn classifier() -> WatchView {
        let mut v = WatchView::new("kitchen");
        v.apply("available", b"online", T0);
        v.apply("state", CLASSIFIER_STATE.as_bytes(), T0);
        v.apply("detections", CLASSIFIER_FRAME.as_bytes(), T0 - 2_000);
        v
    }

    /// Removes SGR sequences (`ESC [ params m`), the only escapes the renderer emits.
    fn strip_ansi(s: &str) -> String {
        let mut out = String::new();
        let mut chars = s.chars();
        while let Some(c) = chars.next() {
            if c == '\x1b' {
                assert_eq!(chars.next(), Some('['), "only CSI sequences: {s:?}");
                for c in chars.by_ref() {
                    if ('\x40'..='\x7e').contains(&c) {
                        assert_eq!(c, 'm', "only SGR sequences: {s:?}");
                        break;
                    }
                }
            } else {
                out.push(c);
            }
        }
        out
    }

    fn plain(v: &WatchView, w: usize, h: usize) -> Vec<String> {
        v.render(w, h, T0, false)
    }

    fn has(lines: &[String], needle: &str) -> bool {
        lines.iter().any(|l| l.contains(needle))
    }

    fn line_with<'a>(lines: &'a [String], needle: &str) -> &'a str {
        lines
            .iter()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no line with {needle:?} in\n{}", lines.join("\n")))
    }

    /// Checks the contract for one render: at most `h` rows, no row wider than `w` columns
    /// (visible characters only), and no escape byte at all without colour.
    fn check_fits(v: &WatchView, w: usize, h: usize, now: i64) {
        for color in [false, true] {
            let lines = v.render(w, h, now, color);
            assert!(lines.len() <= h, "{} rows > {h}", lines.len());
            for l in &lines {
                if !color {
                    assert!(!l.contains('\x1b'), "escape without colour: {l:?}");
                }
                let visible = strip_ansi(l);
                assert!(
                    str_width(&visible) <= w,
                    "{} columns > {w}: {visible:?}",
                    str_width(&visible)
                );
                assert!(!visible.chars().any(is_unsafe), "control char: {l:?}");
            }
        }
    }

    #[test]
    fn detector_screen_at_80x24() {
        let lines = plain(&detector(), 80, 24);
        let expected = [
            "adaptd watch · cam1 · online · seen 0 s ago · adaptd 0.1.0",
            "model nanodet-m + mobilenetv2 · head v3 (macro-F1 0.93) · source mjpeg http://1…",
            "9.8 fps · p50 38 ms · p95 57 ms · 12034 frames, 12 skipped · up 3h12m · CPU 52°C",
            "stable label: alice",
            "",
            "last frame 0 s ago · #12034 · 640x480 · 38.2 ms · 3 items",
            "#  backbone  score          box              head",
            "0  person    0.91 ███████░  12,30 201,410    alice   0.88 ███████░",
            "1  person    0.77 ██████░░  300,40 380,300   unknown 0.31 ██░░░░░░",
            "2  dog       0.55 ████░░░░  420,200 600,470  –",
            "",
            "training: v4 deployed 2 min ago · macro-F1 0.931 (current 0.884) · accuracy 0.9…",
            "samples 42: alice 20 · bob 12 · cat 10",
            "",
            "recent events:",
            "     3 s ago  update  person: bob → alice  0.88",
            "    30 s ago  new     person: – → bob  0.74",
            "   1 min ago  end     dog: dog → –",
            "last reply 2 min ago: train (id a1) ok: {\"status\":\"started\"}",
        ];
        assert_eq!(lines, expected, "\n{}", lines.join("\n"));
    }

    #[test]
    fn classifier_shows_head_label_paused_and_reconnecting_source() {
        let lines = plain(&classifier(), 120, 24);
        let header = line_with(&lines, "adaptd watch");
        assert!(header.contains("kitchen · online · paused"), "{header}");
        // `detections` is live (unlike the retained `state` and `available`).
        assert!(header.contains("seen 2 s ago"), "{header}");
        let model = line_with(&lines, "model ");
        // Same backbone for frames and embeddings: named once.
        assert!(model.starts_with("model mobilenetv2 · head v7"), "{model}");
        assert!(
            model.contains("(reconnecting: attempt 3: no such device)"),
            "{model}"
        );
        assert!(has(&lines, "stable label: cat"));
        assert!(has(
            &lines,
            "last frame 2 s ago · #77 · 224x224 · 7.2 ms · 1 item"
        ));
        // No box column for whole-frame classification.
        let header_row = line_with(&lines, "backbone");
        assert!(!header_row.contains("box"), "{header_row}");
        let row = line_with(&lines, "tabby");
        assert_eq!(row, "0  tabby     0.62 █████░░░  cat  0.97 ████████");
        assert!(has(&lines, "no stats yet"));
        assert!(has(&lines, "samples 66: cat 31 · dog 30 · empty 5"));
        assert!(has(&lines, "training: idle"));
        assert!(has(&lines, "recent events: none yet"));
        check_fits(&classifier(), 80, 24, T0);
    }

    #[test]
    fn detector_rows_show_boxes_sub_labels_and_unknown_marker() {
        let mut v = detector();
        v.apply(
            "detections",
            br#"{"frame_id":5,"width":640,"height":480,"inference_ms":40,"items":[
                {"label":"person","score":0.6,"box":[1,2,3,4],
                 "head":{"label":"background","score":0.8,"unknown":true}},
                {"label":"car","score":0.5,"box":[1,2,3]},
                {"label":"cat","score":0.4,"box":[0,0,10,10],"head":{"label":"tom","score":0.9}}
            ]}"#,
            T0,
        );
        let lines = plain(&v, 100, 40);
        let row0 = line_with(&lines, "background");
        assert!(row0.contains("1,2 3,4"), "{row0}");
        assert!(row0.ends_with("(unknown)"), "{row0}");
        // A malformed box is a dash, not a problem.
        let row1 = line_with(&lines, "car");
        assert!(row1.contains("0.50") && row1.contains("  –  "), "{row1}");
        assert!(row1.ends_with('–'), "no head: {row1}");
        let row2 = line_with(&lines, "tom");
        assert!(!row2.contains("unknown"), "{row2}");
        assert!(v.problem.is_none());
    }

    #[test]
    fn many_items_are_capped_and_counted() {
        let items: Vec<String> = (0..100)
            .map(|i| format!(r#"{{"label":"person","score":0.5,"box":[{i},0,{i},9]}}"#))
            .collect();
        let payload = format!(r#"{{"frame_id":1,"items":[{}]}}"#, items.join(","));
        let mut v = detector();
        v.apply("detections", payload.as_bytes(), T0);
        assert_eq!(v.frame.as_ref().map(|f| f.value.item_count), Some(100));
        let kept = v
            .frame
            .as_ref()
            .and_then(|f| f.value.items.as_ref())
            .map(Vec::len);
        assert_eq!(kept, Some(MAX_ITEMS));
        let lines = plain(&v, 80, 24);
        assert_eq!(lines.len(), 24);
        assert!(has(&lines, "100 items"));
        let more = line_with(&lines, " more");
        let shown = lines.iter().filter(|l| l.contains("person")).count();
        assert_eq!(more.trim(), format!("… {} more", 100 - shown));
        // Detections outrank everything below them: what was dropped is the low end.
        assert!(shown >= 10, "{}", lines.join("\n"));
        assert!(has(&lines, "adaptd watch") && has(&lines, "fps"));
        assert!(!has(&lines, "last reply"));
    }

    #[test]
    fn availability_offline_stopped_and_unknown() {
        let mut v = detector();
        v.apply("available", b"offline", T0);
        assert!(plain(&v, 80, 24)[0].contains("cam1 · offline"));
        v.apply("available", b" stopped\n", T0);
        assert!(plain(&v, 80, 24)[0].contains("cam1 · stopped"));
        assert!(v.problem.is_none());
        let red = v.render(80, 24, T0, true);
        assert!(red[0].contains("\x1b[33mstopped\x1b[0m"), "{:?}", red[0]);
        v.apply("available", b"offline", T0);
        assert!(v.render(80, 24, T0, true)[0].contains("\x1b[31moffline\x1b[0m"));
        v.apply("available", b"online", T0);
        assert!(v.render(80, 24, T0, true)[0].contains("\x1b[32monline\x1b[0m"));
        v.apply("available", b"sleeping", T0);
        let lines = plain(&v, 80, 24);
        assert!(lines[0].contains("cam1 · sleeping"), "{}", lines[0]);
        assert!(line_with(&lines, "problem").contains("available: unexpected 'sleeping'"));
        // An empty retained message clears the topic.
        v.apply("available", b"", T0);
        assert!(plain(&v, 80, 24)[0].contains("cam1 · –"));
    }

    #[test]
    fn malformed_payloads_become_the_problem_line() {
        let mut v = detector();
        let bad: [(&str, &[u8], &str); 9] = [
            (
                "stats",
                b"{\"fps\": 9.",
                "stats: not valid JSON (EOF while parsing",
            ),
            (
                "detections",
                b"[1,2]",
                "detections: expected a JSON object, got an array",
            ),
            (
                "events",
                b"42",
                "events: expected a JSON object, got a number",
            ),
            ("training", b"", "training: empty payload"),
            ("reply", b"null", "reply: expected a JSON object, got null"),
            ("state", b"\xff\xfe{}", "state: not valid JSON"),
            ("available", b"\xff", "available: not UTF-8 text"),
            ("detections", b"{\"items\": 5}", ""),
            (
                "stats",
                b"{\"fps\": \"fast\", \"frames\": -3, \"uptime_s\": 1.5}",
                "",
            ),
        ];
        for (i, (topic, payload, expected)) in bad.iter().enumerate() {
            v.apply(topic, payload, T0 - 5_000);
            check_fits(&v, 80, 24, T0);
            if expected.is_empty() {
                continue;
            }
            let lines = plain(&v, 200, 40);
            let p = line_with(&lines, "problem");
            assert!(p.contains(expected), "{p}");
            assert!(p.starts_with("problem 5 s ago"), "{p}");
            if i > 0 {
                assert!(p.contains(&format!("({} so far)", i + 1)), "{p}");
            }
        }
        // Wrongly typed fields are not problems; they read as missing.
        assert_eq!(v.problems, 7);
        let lines = plain(&v, 200, 40);
        assert!(has(
            &lines,
            "last frame 5 s ago · #– · –x– · – ms · items –"
        ));
        assert!(has(
            &lines,
            "– fps · p50 – · p95 – · – frames, – skipped · up –"
        ));
        // The state that was there survives a bad update.
        assert!(has(&lines, "stable label: alice"));
    }

    #[test]
    fn random_bytes_never_panic() {
        // xorshift: deterministic, no dependency.
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let topics = [
            "available",
            "state",
            "stats",
            "detections",
            "events",
            "training",
            "reply",
        ];
        let seeds = [
            DETECTOR_STATE,
            DETECTOR_STATS,
            DETECTOR_FRAME,
            CLASSIFIER_STATE,
            CLASSIFIER_FRAME,
        ];
        let mut v = WatchView::new("fuzz");
        for round in 0..3000 {
            let topic = topics[next() as usize % topics.len()];
            let mut payload = seeds[next() as usize % seeds.len()].as_bytes().to_vec();
            // Mutate a few bytes: mostly still JSON-ish, sometimes valid with odd types.
            for _ in 0..(next() % 4) {
                let i = next() as usize % payload.len();
                payload[i] = (next() % 256) as u8;
            }
            if round % 7 == 0 {
                payload.truncate(next() as usize % payload.len());
            }
            v.apply(topic, &payload, T0 + round);
            if round % 50 == 0 {
                let w = (next() % 130) as usize;
                let h = (next() % 30) as usize;
                check_fits(&v, w, h, T0 + round);
            }
        }
    }

    #[test]
    fn lines_fit_any_width_with_and_without_colour() {
        let mut v = detector();
        v.apply(
            "reply",
            "{\"cmd\":\"set\",\"ok\":false,\"error\":\"値が大きすぎます: 設定を確認してください\"}"
                .as_bytes(),
            T0,
        );
        v.apply("stats", b"{", T0);
        for w in 0..=130 {
            check_fits(&v, w, 24, T0);
        }
        let lines = plain(&v, 40, 24);
        assert!(lines.iter().any(|l| l.ends_with('…')));
        // A cut wide character never leaves the line wider than asked.
        let reply = v.render(60, 40, T0, true);
        let reply = reply.iter().find(|l| l.contains("last reply")).cloned();
        let reply = strip_ansi(&reply.unwrap_or_default());
        assert!(reply.ends_with('…') && str_width(&reply) <= 60, "{reply}");
    }

    #[test]
    fn colour_is_per_piece_and_reset() {
        let v = detector();
        let lines = v.render(80, 24, T0, true);
        assert!(lines[0].contains("\x1b[1mcam1\x1b[0m"), "{:?}", lines[0]);
        assert!(lines[0].contains("\x1b[32monline\x1b[0m"));
        let label = line_with(&lines, "stable label");
        assert!(label.contains("\x1b[1malice\x1b[0m"), "{label:?}");
        for l in &lines {
            // Every SGR that sets a style is closed on the same line.
            assert_eq!(
                l.matches("\x1b[0m").count(),
                l.matches("\x1b[").count() - l.matches("\x1b[0m").count(),
                "{l:?}"
            );
        }
        // Cut in the middle of a coloured piece: the reset is still there.
        let narrow = v.render(20, 24, T0, true);
        assert!(narrow[0].ends_with("\x1b[0m…"), "{:?}", narrow[0]);
        assert_eq!(strip_ansi(&narrow[0]), "adaptd watch · cam1…");
        let plain_lines = plain(&v, 80, 24);
        for (c, p) in lines.iter().zip(&plain_lines) {
            assert_eq!(&strip_ansi(c), p);
        }
    }

    #[test]
    fn plain_output_has_no_escape_bytes_even_from_payloads() {
        let mut v = WatchView::new("cam\x1b[2J1");
        v.apply(
            "state",
            "{\"label\":\"\\u001b]0;owned\\u0007cat\",\"model\":\"m\\u009b31m\\u202eevil\"}"
                .as_bytes(),
            T0,
        );
        v.apply(
            "reply",
            br#"{"cmd":"x","ok":false,"error":"line1\nline2\u001b[31m"}"#,
            T0,
        );
        v.apply("available", b"\x1b[31monline", T0);
        for color in [false, true] {
            let lines = v.render(120, 30, T0, color);
            let all = lines.join("\n");
            if !color {
                assert!(!all.contains('\x1b'), "{all:?}");
            }
            let visible = lines.iter().map(|l| strip_ansi(l)).collect::<String>();
            assert!(!visible.chars().any(is_unsafe), "{visible:?}");
            assert!(!visible.contains('\u{9b}') && !visible.contains('\u{7}'));
        }
        let lines = plain(&v, 120, 30);
        assert!(
            lines[0].starts_with("adaptd watch · cam�[2J1 · "),
            "{}",
            lines[0]
        );
        assert!(has(&lines, "stable label: �]0;owned�cat"));
        assert!(has(&lines, "error: line1 line2�[31m"));
    }

    #[test]
    fn height_is_respected_and_priorities_hold() {
        let mut v = detector();
        v.apply("stats", b"nope", T0 - 1_000);
        for i in 0..20 {
            v.apply(
                "events",
                format!(r#"{{"type":"new","track":"t{i}","after":"x","score":0.9}}"#).as_bytes(),
                T0,
            );
        }
        let full = plain(&v, 80, 100);
        for h in 0..=full.len() + 2 {
            check_fits(&v, 80, h, T0);
            let lines = plain(&v, 80, h);
            if h >= 1 {
                assert!(lines[0].starts_with("adaptd watch"), "h={h}");
            }
            if h >= full.len() {
                assert_eq!(lines, full, "nothing dropped when everything fits");
            }
            // Sections keep their order whatever is dropped.
            let pos = |needle: &str| lines.iter().position(|l| l.contains(needle));
            let order = [
                pos("adaptd watch"),
                pos("model "),
                pos(" fps"),
                pos("stable label"),
                pos("last frame"),
                pos("training:"),
                pos("samples "),
                pos("recent events"),
                pos("last reply"),
                pos("problem "),
            ];
            let present: Vec<usize> = order.iter().flatten().copied().collect();
            assert!(present.windows(2).all(|w| w[0] < w[1]), "h={h}: {lines:#?}");
            // The more important survives the less important.
            let rank = [
                pos("adaptd watch"),
                pos(" fps"),
                pos("stable label"),
                pos("last frame"),
                pos("problem "),
                pos("model "),
                pos("training:"),
                pos("samples "),
                pos("recent events"),
                pos("last reply"),
            ];
            for pair in rank.windows(2) {
                assert!(pair[0].is_some() || pair[1].is_none(), "h={h}: {lines:#?}");
            }
        }
        assert!(plain(&v, 80, 0).is_empty());
        assert_eq!(plain(&v, 80, 1).len(), 1);
        // A short screen: blank separators go before content, events shrink before going.
        let l = plain(&v, 80, 20);
        assert_eq!(l.len(), 20);
        assert!(!l.iter().any(String::is_empty), "{l:#?}");
        assert!(has(&l, "older"), "{l:#?}");
        assert!(has(&l, "problem") && !has(&l, "last reply"), "{l:#?}");
    }

    #[test]
    fn event_list_is_bounded_newest_first() {
        let mut v = WatchView::new("cam1");
        for i in 0..100 {
            v.apply(
                "events",
                format!(r#"{{"type":"update","track":"scene","before":"a{i}","after":"b{i}","score":0.6}}"#)
                    .as_bytes(),
                T0 - (100 - i) * 1_000,
            );
        }
        assert_eq!(v.events.len(), MAX_EVENTS);
        let lines = plain(&v, 80, 100);
        let rows: Vec<&String> = lines.iter().filter(|l| l.contains("scene:")).collect();
        assert_eq!(rows.len(), MAX_EVENTS);
        assert_eq!(rows[0].trim(), "1 s ago  update  scene: a99 → b99  0.60");
        assert!(rows[MAX_EVENTS - 1].contains("a92 → b92"), "{}", rows[7]);
        assert!(!has(&lines, "older"));
    }

    #[test]
    fn events_read_the_daemons_type_field_and_kind() {
        let mut v = WatchView::new("cam1");
        v.apply(
            "events",
            br#"{"type":"new","track":"scene","before":null,"after":"cat","score":0.87,"extra":1}"#,
            T0,
        );
        v.apply(
            "events",
            br#"{"kind":"end","track":"scene","before":"cat"}"#,
            T0,
        );
        v.apply("events", br#"{"track":7}"#, T0);
        let lines = plain(&v, 80, 24);
        assert!(has(&lines, "new     scene: – → cat  0.87"), "{lines:#?}");
        assert!(has(&lines, "end     scene: cat → –"), "{lines:#?}");
        assert!(has(&lines, "–       –: – → –"), "{lines:#?}");
    }

    #[test]
    fn training_lifecycle() {
        let mut v = detector();
        v.apply(
            "training",
            br#"{"status":"started","trigger":"command","force":false}"#,
            T0 - 75_000,
        );
        v.apply("stats", br#"{"training":"running"}"#, T0 - 1_000);
        assert!(has(
            &plain(&v, 100, 30),
            "training: running for 1m15s (trigger: command)"
        ));
        v.apply(
            "training",
            br#"{"status":"finished","version":5,"deployed":false,
                "reason":"v5 holdout macro-F1 0.8000 < v4's 0.9310 on the same holdout: keeping v4",
                "accuracy":0.8,"macro_f1":0.8,"current_macro_f1":0.931}"#,
            T0 - 1_000,
        );
        let line = plain(&v, 200, 30);
        let line = line_with(&line, "training:");
        assert_eq!(
            line,
            "training: v5 not deployed 1 s ago · macro-F1 0.800 (current 0.931) · accuracy 0.800 · v5 holdout macro-F1 0.8000 < v4's 0.9310 on the same holdout: keeping v4"
        );
        v.apply(
            "training",
            br#"{"status":"failed","deployed":false,"error":"only 1 class has samples"}"#,
            T0,
        );
        let lines = plain(&v, 100, 30);
        assert_eq!(
            line_with(&lines, "training:"),
            "training: failed 0 s ago: only 1 class has samples"
        );
        // A fresher state that says a run is going (its `started` was missed) wins.
        v.apply("state", br#"{"training":true}"#, T0 + 1);
        assert!(has(&plain(&v, 100, 30), "training: running"));
        // Without any training message: the flag only.
        let mut w = WatchView::new("x");
        assert!(has(&plain(&w, 80, 24), "training: –"));
        w.apply("stats", br#"{"training":"running"}"#, T0);
        assert!(has(&plain(&w, 80, 24), "training: running"));
    }

    #[test]
    fn reply_line_ok_and_error() {
        let mut v = WatchView::new("cam1");
        v.apply(
            "reply",
            br#"{"id":9,"cmd":"set","ok":false,"error":"`fps` = 100 is out of range"}"#,
            T0 - 2_000,
        );
        assert!(has(
            &plain(&v, 80, 24),
            "last reply 2 s ago: set (id 9) error: `fps` = 100 is out of range"
        ));
        v.apply(
            "reply",
            br#"{"id":null,"cmd":"pause","ok":true,"result":{"paused":true}}"#,
            T0,
        );
        assert!(has(
            &plain(&v, 80, 24),
            r#"last reply 0 s ago: pause ok: {"paused":true}"#
        ));
        v.apply("reply", br#"{"ok":true,"result":null}"#, T0);
        assert!(has(&plain(&v, 80, 24), "last reply 0 s ago: – ok"));
    }

    #[test]
    fn samples_sorted_and_compact() {
        let mut v = WatchView::new("cam1");
        v.apply(
            "state",
            br#"{"samples":{"b":5,"a":5,"zed":40,"c":1,"bad":"x"}}"#,
            T0,
        );
        assert!(has(
            &plain(&v, 80, 24),
            "samples 51: zed 40 · a 5 · b 5 · c 1"
        ));
        let labels: Vec<String> = (0..40).map(|i| format!(r#""label{i:02}":{i}"#)).collect();
        v.apply(
            "stats",
            format!(r#"{{"samples":{{{}}}}}"#, labels.join(",")).as_bytes(),
            T0 + 1,
        );
        let lines = plain(&v, 80, 24);
        let line = line_with(&lines, "samples ");
        assert!(
            line.starts_with("samples 780: label39 39 · label38 38"),
            "{line}"
        );
        assert!(line.ends_with(" more") && !line.ends_with('…'), "{line}");
        assert!(str_width(line) <= 80);
        v.apply("state", br#"{"samples":{}}"#, T0 + 2);
        assert!(has(&plain(&v, 80, 24), "samples: none yet"));
    }

    #[test]
    fn retained_topics_do_not_count_as_seen_and_empty_state_clears() {
        let mut v = WatchView::new("cam1");
        v.apply("available", b"online", T0);
        v.apply("state", DETECTOR_STATE.as_bytes(), T0);
        assert!(plain(&v, 80, 24)[0].contains("no live message yet"));
        v.apply("stats", DETECTOR_STATS.as_bytes(), T0 - 125_000);
        assert!(plain(&v, 80, 24)[0].contains("seen 2 min ago"));
        v.apply("state", b"", T0);
        let lines = plain(&v, 80, 24);
        assert!(has(&lines, "stable label: –"));
        assert!(has(
            &lines,
            "model – · head v3 (macro-F1 0.93) · source – (streaming)"
        ));
        assert!(v.problem.is_none());
    }

    #[test]
    fn other_subtopics_are_ignored() {
        let mut v = detector();
        let before = plain(&v, 80, 24);
        v.apply("snapshot", &[0xff, 0xd8, 0xff, 0xe0, 0, 1], T0);
        v.apply("cmd/train", b"{}", T0);
        v.apply("samples/cat", &[0xff, 0xd8], T0);
        v.apply("something-new", b"{", T0);
        assert_eq!(plain(&v, 80, 24), before);
        assert!(v.problem.is_none());
        // Leading/trailing slashes from the caller's topic split are tolerated.
        v.apply("/available/", b"stopped", T0);
        assert!(plain(&v, 80, 24)[0].contains("stopped"));
    }

    #[test]
    fn head_and_source_state_take_the_fresher_message() {
        let mut v = WatchView::new("cam1");
        v.apply(
            "state",
            br#"{"head_version":null,"source_state":{"state":"failed","error":"/dev/video0: gone"}}"#,
            T0,
        );
        let model = plain(&v, 100, 24);
        let model = line_with(&model, "model ");
        assert!(model.contains("no head yet"), "{model}");
        assert!(model.contains("(failed: /dev/video0: gone)"), "{model}");
        v.apply(
            "stats",
            br#"{"head_version":2,"head_macro_f1":0.5,"source_state":"streaming"}"#,
            T0 + 1,
        );
        let model = plain(&v, 100, 24);
        let model = line_with(&model, "model ");
        assert!(model.contains("head v2 (macro-F1 0.50)"), "{model}");
        assert!(model.ends_with("(streaming)"), "{model}");
        // A newer state names v3; the stats' F1 belongs to v2 and is not shown for v3.
        v.apply("state", br#"{"head_version":3}"#, T0 + 2);
        let model = plain(&v, 100, 24);
        assert!(line_with(&model, "model ").contains("head v3 · source"));
    }

    #[test]
    fn ages_and_spans() {
        assert_eq!(age(T0, T0 + 5_000), "0 s ago");
        assert_eq!(age(T0, T0 - 59_999), "59 s ago");
        assert_eq!(age(T0, T0 - 60_000), "1 min ago");
        assert_eq!(age(T0, T0 - 3_600_000), "1 h ago");
        assert_eq!(age(T0, T0 - 172_800_000), "2 d ago");
        assert_eq!(age(i64::MAX, i64::MIN), "106751991167 d ago");
        assert_eq!(fmt_span(0), "0s");
        assert_eq!(fmt_span(725), "12m05s");
        assert_eq!(fmt_span(11_520), "3h12m");
        assert_eq!(fmt_span(190_000), "2d04h");
        assert_eq!(fmt_ms(7.25), "7.2 ms");
        assert_eq!(fmt_ms(38.4), "38 ms");
    }

    #[test]
    fn frame_redraws_in_place() {
        let lines = vec!["one".to_string(), "two".to_string(), "three".to_string()];
        assert_eq!(frame(&lines), "\x1b[H\x1b[Kone\r\n\x1b[Ktwo\r\n\x1b[Jthree");
        assert_eq!(frame(&[]), "\x1b[H\x1b[J");
        let f = frame(&detector().render(80, 24, T0, true));
        assert!(!f.contains("\x1b[2J"), "no full-screen clear");
        assert!(!f.ends_with('\n'), "no scroll after the bottom row");
    }

    #[test]
    fn layout_shrinks_then_drops() {
        let line = |s: &str| Line::plain_text(s);
        let rows = |n: usize| (0..n).map(|i| line(&format!("r{i}"))).collect::<Vec<_>>();
        let build = || {
            vec![
                Section::fixed(0, false, line("top")),
                Section::elastic(1, true, vec![line("A")], rows(5), 5, 1, |n| format!("+{n}")),
                Section::elastic(2, true, vec![line("B")], rows(4), 4, 1, |n| format!("+{n}")),
            ]
        };
        let text = |h: usize| {
            layout(build(), h)
                .iter()
                .map(|l| l.render(80, false))
                .collect::<Vec<_>>()
                .join(" ")
        };
        assert_eq!(text(14), "top  A r0 r1 r2 r3 r4  B r0 r1 r2 r3");
        assert_eq!(text(13), "top A r0 r1 r2 r3 r4 B r0 r1 r2 r3");
        assert_eq!(text(12), "top A r0 r1 r2 r3 r4 B r0 r1 r2 r3");
        assert_eq!(text(10), "top A r0 r1 r2 r3 r4 B r0 +3");
        assert_eq!(text(9), "top A r0 r1 r2 r3 r4");
        assert_eq!(text(5), "top A r0 r1 +3");
        assert_eq!(text(4), "top A r0 +4");
        // At its minimum (one row and "+4") A does not fit any more: it goes whole.
        assert_eq!(text(3), "top");
        assert_eq!(text(2), "top");
    }
}
