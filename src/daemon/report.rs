//! The retained `state` documents and the periodic `stats`, built from the owners' handles
//! (streams, learners, telemetry, the link) as [`crate::wire`] types.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::learner::Learner;
use super::stats::cpu_temperature;
use super::streams::StreamHandle;
use super::telemetry::Telemetry;
use crate::mqtt::Publisher;
use crate::wire;

/// What the reports read, borrowed from their owners. The control plane lends it
/// ([`super::control::Control::owners`]); the reports never see the control plane itself, only
/// what they read (plus the two telemetry syncs `stats` makes), so `control` can use them
/// without a cycle.
pub struct Owners<'a> {
    pub streams: &'a [Arc<StreamHandle>],
    pub learners: &'a [Arc<Learner>],
    pub publisher: &'a Publisher,
    pub telemetry: &'a Telemetry,
    pub auto_train: bool,
    pub engines: &'a [wire::EngineState],
}

/// The device's retained `state`.
pub fn device_state(c: &Owners<'_>) -> wire::DeviceState {
    let cameras = c
        .streams
        .iter()
        .map(|s| {
            let mut st = s.state();
            st.camera = None;
            (s.name.clone(), st)
        })
        .collect();
    let learners: BTreeMap<String, wire::LearnerState> = c
        .learners
        .iter()
        .map(|l| {
            let samples = l.counts();
            let samples_total = samples.values().sum();
            (
                l.model.clone(),
                wire::LearnerState {
                    backend: l.backend.to_string(),
                    head_version: l.head_version(),
                    head_macro_f1: l.head_macro_f1(),
                    samples,
                    samples_total,
                },
            )
        })
        .collect();
    let samples_total = learners.values().map(|l| l.samples_total).sum();
    wire::DeviceState {
        binary_version: env!("CARGO_PKG_VERSION").to_owned(),
        device: c.publisher.topics().device_id().to_owned(),
        training: c.learners.iter().any(|l| l.is_training()),
        auto_train: c.auto_train,
        cameras,
        learners,
        samples_total,
        engines: c.engines.to_vec(),
    }
}

/// The `stats` message.
pub fn stats(c: &Owners<'_>) -> wire::Stats {
    let link = c.publisher.stats();
    c.telemetry.set_mqtt_connected(link.connected);
    let cameras = c
        .streams
        .iter()
        .map(|s| {
            c.telemetry.sync_dropped(&s.name, s.slot.skipped());
            let counts = c.telemetry.counts(&s.name);
            let rates = c.telemetry.rates(&s.name);
            // Three separate reads can race with the capture thread: clamp to what is possible.
            let queued = s
                .slot
                .sent()
                .saturating_sub(s.slot.skipped() + s.slot.received())
                .min(1);
            let source_state = serde_json::to_value(s.source_stats.state())
                .ok()
                .and_then(|v| v.get("state").and_then(|v| v.as_str()).map(str::to_owned))
                .unwrap_or_default();
            let source = s.source_stats.snapshot();
            (
                s.name.clone(),
                wire::CameraStats {
                    source_dropped_frames: source.rate_dropped,
                    decode_errors: source.decode_errors,
                    reconnects: source.reconnects,
                    fps: rates.fps,
                    frames: counts.processed,
                    skipped_frames: counts.dropped,
                    throttled_frames: counts.throttled,
                    motion_skipped_frames: counts.motion_skipped,
                    queued_frames: queued,
                    inference_ms_p50: rates.p50_ms,
                    inference_ms_p95: rates.p95_ms,
                    paused: s.is_paused(),
                    source_state,
                    head_version: s.learner.head_version(),
                    head_macro_f1: s.learner.head_macro_f1(),
                },
            )
        })
        .collect();
    let mut samples = BTreeMap::new();
    for l in c.learners {
        for (label, n) in l.counts() {
            *samples.entry(label).or_insert(0) += n;
        }
    }
    wire::Stats {
        uptime_s: c.telemetry.uptime().as_secs(),
        cpu_temp_c: cpu_temperature(),
        mqtt_reconnects: link.reconnects,
        mqtt_dropped: link.dropped,
        training: if c.learners.iter().any(|l| l.is_training()) {
            "running".into()
        } else {
            "idle".into()
        },
        cameras,
        samples,
    }
}

/// One line for `systemctl status`.
pub fn status_line(c: &Owners<'_>) -> String {
    let st = stats(c);
    let fps: f64 = st.cameras.values().map(|s| s.fps).sum();
    let streaming = st
        .cameras
        .values()
        .filter(|s| s.source_state == "streaming")
        .count();
    let samples: usize = st.samples.values().sum();
    let heads: Vec<String> = c
        .learners
        .iter()
        .map(|l| match l.head_version() {
            Some(v) => format!("{} head v{v}", l.model),
            None => format!("{} no head yet", l.model),
        })
        .collect();
    let mqtt = if c.publisher.stats().connected {
        "MQTT connected"
    } else {
        "MQTT disconnected"
    };
    format!(
        "{streaming}/{} streams streaming, {fps:.1} fps in all, {}, {samples} samples, {mqtt}",
        st.cameras.len(),
        heads.join(", ")
    )
}

/// The `training` message of a finished run.
pub fn training_finished(
    model: String,
    o: &crate::adapt::workspace::TrainOutcome,
) -> wire::Training {
    wire::Training::Finished {
        model,
        version: o.version,
        deployed: o.decision.deployed,
        reason: o.decision.reason.clone(),
        accuracy: o.report.metrics.accuracy,
        macro_f1: o.report.metrics.macro_f1,
        current_macro_f1: o.current_macro_f1,
        classes: o.report.classes.clone(),
        confusion: o.report.metrics.confusion.clone(),
        outcome: serde_json::to_value(o).unwrap_or_default(),
    }
}

/// The result of a `label` command or a `samples/<label>` message.
pub fn sample_stored(label: &str, out: &crate::store::AddOutcome) -> wire::SampleStored {
    wire::SampleStored {
        label: label.to_owned(),
        id: out.id,
        split: out.split.as_str().to_owned(),
        kept: out.kept,
        evicted: out.evicted.clone(),
    }
}

/// A consensus event of `camera` as published.
pub fn event(camera: &str, e: &crate::consensus::Event) -> wire::Event {
    wire::Event {
        camera: Some(camera.to_owned()),
        kind: match e.kind {
            crate::consensus::EventKind::New => wire::EventKind::New,
            crate::consensus::EventKind::Update => wire::EventKind::Update,
            crate::consensus::EventKind::End => wire::EventKind::End,
        },
        track: e.track.clone(),
        before: e.before.clone(),
        after: e.after.clone(),
        score: e.score,
    }
}
