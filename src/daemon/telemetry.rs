//! The daemon's one metrics registry.
//!
//! Every counter the daemon keeps lives here, in a `prometheus-client` [`Registry`], so that
//! the MQTT `stats` message (built from [`Telemetry`]'s getters) and an HTTP `/metrics`
//! endpoint ([`Telemetry::encode`], OpenMetrics text) can never disagree: they read the same
//! atomics. Writers are few and fixed: the inference workers (frames, latency), the trainer
//! (runs), the MQTT link's owner (connection). Names follow Prometheus conventions
//! (`adaptd_<what>_total`, `_seconds`).
//!
//! Percentiles for `stats` (p50/p95 of the last 256 frames) and the 10-second frame rate are
//! not Prometheus concepts (Prometheus derives them from the histogram and the counters), so
//! they sit beside the registry in [`StreamMeters`], one per stream.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use super::stats::{FpsMeter, LatencyRing};

/// Labels of per-stream series.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StreamLabels {
    pub camera: String,
}

/// Labels of per-model series.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModelLabels {
    pub camera: String,
    pub model: String,
    pub backend: String,
}

/// Labels of event counters.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EventLabels {
    pub camera: String,
    pub label: String,
}

/// Labels of per-learner series.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LearnerLabels {
    pub model: String,
}

/// Labels of per-learner, per-label series.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SampleLabels {
    pub model: String,
    pub label: String,
}

/// Labels of training counters.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TrainLabels {
    pub model: String,
    /// `deployed`, `rejected`, `failed` or `cancelled`.
    pub outcome: String,
}

/// Rate and latency of one stream over its recent past (see the module docs).
#[derive(Debug)]
pub struct StreamMeters {
    pub latency: LatencyRing,
    pub fps: FpsMeter,
}

/// The registry and handles to every metric in it; cheap to share (`Arc`).
pub struct Telemetry {
    registry: Registry,
    frames_processed: Family<StreamLabels, Counter>,
    frames_dropped: Family<StreamLabels, Counter>,
    frames_throttled: Family<StreamLabels, Counter>,
    frames_motion_skipped: Family<StreamLabels, Counter>,
    inference_seconds: Family<ModelLabels, Histogram>,
    events: Family<EventLabels, Counter>,
    training_runs: Family<TrainLabels, Counter>,
    training_seconds: Family<LearnerLabels, Histogram>,
    mqtt_connected: Gauge,
    // Read, not counted: brought up to date by `/metrics` before it encodes
    // ([`Telemetry::sync_source`] and the setters after it).
    frames_read: Family<StreamLabels, Counter>,
    decode_errors: Family<StreamLabels, Counter>,
    decode_seconds: Family<StreamLabels, Counter<f64, AtomicU64>>,
    fps: Family<StreamLabels, Gauge<f64, AtomicU64>>,
    objects: Family<EventLabels, Counter>,
    samples: Family<SampleLabels, Gauge>,
    head_accuracy: Family<LearnerLabels, Gauge<f64, AtomicU64>>,
    head_macro_f1: Family<LearnerLabels, Gauge<f64, AtomicU64>>,
    mqtt_reconnects: Counter,
    resident: Gauge,
    meters: Mutex<BTreeMap<String, StreamMeters>>,
    started: Instant,
}

fn histogram() -> Histogram {
    // 1 ms to ~16 s: a Pi Zero's detector and a Jetson's classifier both fall inside.
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

impl Telemetry {
    pub fn new() -> Arc<Telemetry> {
        let mut registry = Registry::with_prefix("adaptd");
        let frames_processed = Family::<StreamLabels, Counter>::default();
        let frames_dropped = Family::<StreamLabels, Counter>::default();
        let frames_throttled = Family::<StreamLabels, Counter>::default();
        let frames_motion_skipped = Family::<StreamLabels, Counter>::default();
        let inference_seconds =
            Family::<ModelLabels, Histogram>::new_with_constructor(histogram as fn() -> Histogram);
        let events = Family::<EventLabels, Counter>::default();
        let training_runs = Family::<TrainLabels, Counter>::default();
        let mqtt_connected = Gauge::default();
        let training_seconds = Family::<LearnerLabels, Histogram>::new_with_constructor(
            histogram as fn() -> Histogram,
        );
        let frames_read = Family::<StreamLabels, Counter>::default();
        let decode_errors = Family::<StreamLabels, Counter>::default();
        let decode_seconds = Family::<StreamLabels, Counter<f64, AtomicU64>>::default();
        let fps = Family::<StreamLabels, Gauge<f64, AtomicU64>>::default();
        let objects = Family::<EventLabels, Counter>::default();
        let samples = Family::<SampleLabels, Gauge>::default();
        let head_accuracy = Family::<LearnerLabels, Gauge<f64, AtomicU64>>::default();
        let head_macro_f1 = Family::<LearnerLabels, Gauge<f64, AtomicU64>>::default();
        let mqtt_reconnects = Counter::default();
        let resident = Gauge::default();
        registry.register(
            "frames_read",
            "Frames (or files) the source delivered",
            frames_read.clone(),
        );
        registry.register(
            "decode_errors",
            "Frames or files the source could not decode and skipped",
            decode_errors.clone(),
        );
        registry.register(
            "decode_seconds",
            "Time the source spent decoding frames (JPEG, PNG, H.264); over frames_read, the mean",
            decode_seconds.clone(),
        );
        registry.register(
            "fps",
            "Frames processed per second over the last 10 s",
            fps.clone(),
        );
        registry.register(
            "objects",
            "Tracked objects announced (new), per camera and label",
            objects.clone(),
        );
        registry.register(
            "samples",
            "Labeled samples stored, per learner and label",
            samples.clone(),
        );
        registry.register(
            "training_seconds",
            "Time to train a head",
            training_seconds.clone(),
        );
        registry.register(
            "head_accuracy",
            "Held-out accuracy of the head in service",
            head_accuracy.clone(),
        );
        registry.register(
            "head_macro_f1",
            "Held-out macro-F1 of the head in service",
            head_macro_f1.clone(),
        );
        registry.register(
            "mqtt_reconnects",
            "Times the MQTT link had to connect again",
            mqtt_reconnects.clone(),
        );
        registry.register_with_unit(
            "resident_memory",
            "Resident memory of the daemon",
            prometheus_client::registry::Unit::Bytes,
            resident.clone(),
        );
        registry.register(
            "frames_processed",
            "Frames (or utterances) run through the model",
            frames_processed.clone(),
        );
        registry.register(
            "frames_dropped",
            "Frames replaced by a newer one before inference took them (the model is slower than the source)",
            frames_dropped.clone(),
        );
        registry.register(
            "frames_throttled",
            "Frames left out to hold the camera's fps cap",
            frames_throttled.clone(),
        );
        registry.register(
            "frames_motion_skipped",
            "Frames the motion gate left out because nothing moved",
            frames_motion_skipped.clone(),
        );
        registry.register(
            "inference_seconds",
            "Per-frame processing time (backbone, head, sub-labels)",
            inference_seconds.clone(),
        );
        registry.register(
            "events",
            "Consensus events published, per camera and label",
            events.clone(),
        );
        registry.register(
            "training_runs",
            "Training runs by outcome",
            training_runs.clone(),
        );
        registry.register(
            "mqtt_connected",
            "1 while the MQTT link is up",
            mqtt_connected.clone(),
        );
        Arc::new(Telemetry {
            registry,
            frames_processed,
            frames_dropped,
            frames_throttled,
            frames_motion_skipped,
            inference_seconds,
            events,
            training_runs,
            training_seconds,
            mqtt_connected,
            frames_read,
            decode_errors,
            decode_seconds,
            fps,
            objects,
            samples,
            head_accuracy,
            head_macro_f1,
            mqtt_reconnects,
            resident,
            meters: Mutex::new(BTreeMap::new()),
            started: Instant::now(),
        })
    }

    fn stream(camera: &str) -> StreamLabels {
        StreamLabels {
            camera: camera.to_owned(),
        }
    }

    fn meters(&self) -> MutexGuard<'_, BTreeMap<String, StreamMeters>> {
        // Every update under this lock is a single push: a poisoned lock is still consistent.
        self.meters.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// One frame of `camera` went through `model` on `backend` in `took`.
    pub fn frame_processed(&self, camera: &str, model: &str, backend: &str, took: Duration) {
        self.frames_processed
            .get_or_create(&Self::stream(camera))
            .inc();
        self.inference_seconds
            .get_or_create(&ModelLabels {
                camera: camera.to_owned(),
                model: model.to_owned(),
                backend: backend.to_owned(),
            })
            .observe(took.as_secs_f64());
        let mut meters = self.meters();
        let m = meters
            .entry(camera.to_owned())
            .or_insert_with(|| StreamMeters {
                latency: LatencyRing::new(256),
                fps: FpsMeter::new(Duration::from_secs(10)),
            });
        m.latency.push(took);
        m.fps.tick(Instant::now());
    }

    pub fn frame_throttled(&self, camera: &str) {
        self.frames_throttled
            .get_or_create(&Self::stream(camera))
            .inc();
    }

    pub fn frame_motion_skipped(&self, camera: &str) {
        self.frames_motion_skipped
            .get_or_create(&Self::stream(camera))
            .inc();
    }

    /// Brings `frames_dropped` up to `total`, the source slot's own count (it only grows).
    pub fn sync_dropped(&self, camera: &str, total: u64) {
        catch_up(
            &self.frames_dropped.get_or_create(&Self::stream(camera)),
            total,
        );
    }

    pub fn event(&self, camera: &str, label: &str) {
        self.events
            .get_or_create(&EventLabels {
                camera: camera.to_owned(),
                label: label.to_owned(),
            })
            .inc();
    }

    pub fn training_run(&self, model: &str, outcome: &str) {
        self.training_runs
            .get_or_create(&TrainLabels {
                model: model.to_owned(),
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    /// A training run of `model` took `took` (whatever its outcome).
    pub fn training_time(&self, model: &str, took: Duration) {
        self.training_seconds
            .get_or_create(&LearnerLabels {
                model: model.to_owned(),
            })
            .observe(took.as_secs_f64());
    }

    /// A tracked object of `label` was announced on `camera`.
    pub fn object(&self, camera: &str, label: &str) {
        self.objects
            .get_or_create(&EventLabels {
                camera: camera.to_owned(),
                label: label.to_owned(),
            })
            .inc();
    }

    /// Brings the source's counters (which the source keeps) into the registry.
    pub fn sync_source(&self, camera: &str, frames: u64, decode_errors: u64, decode_s: f64) {
        let labels = Self::stream(camera);
        catch_up(&self.frames_read.get_or_create(&labels), frames);
        catch_up(&self.decode_errors.get_or_create(&labels), decode_errors);
        let d = self.decode_seconds.get_or_create(&labels);
        let now = d.get();
        if decode_s > now {
            d.inc_by(decode_s - now);
        }
    }

    pub fn set_fps(&self, camera: &str, fps: f64) {
        self.fps.get_or_create(&Self::stream(camera)).set(fps);
    }

    /// A learner's sample counts and the held-out scores of its head in service.
    pub fn set_learner(
        &self,
        model: &str,
        counts: &BTreeMap<String, usize>,
        accuracy: Option<f64>,
        macro_f1: Option<f64>,
    ) {
        for (label, n) in counts {
            self.samples
                .get_or_create(&SampleLabels {
                    model: model.to_owned(),
                    label: label.clone(),
                })
                .set(i64::try_from(*n).unwrap_or(i64::MAX));
        }
        let l = LearnerLabels {
            model: model.to_owned(),
        };
        if let Some(a) = accuracy {
            self.head_accuracy.get_or_create(&l).set(a);
        }
        if let Some(f) = macro_f1 {
            self.head_macro_f1.get_or_create(&l).set(f);
        }
    }

    /// Brings the reconnect counter up to the link's own count.
    pub fn sync_mqtt(&self, reconnects: u64) {
        catch_up(&self.mqtt_reconnects, reconnects);
    }

    pub fn set_resident(&self, bytes: u64) {
        self.resident.set(i64::try_from(bytes).unwrap_or(i64::MAX));
    }

    pub fn set_mqtt_connected(&self, up: bool) {
        self.mqtt_connected.set(i64::from(up));
    }

    /// Counters of one stream, for `stats`.
    pub fn counts(&self, camera: &str) -> StreamCounts {
        let get =
            |f: &Family<StreamLabels, Counter>| f.get(&Self::stream(camera)).map_or(0, |c| c.get());
        StreamCounts {
            processed: get(&self.frames_processed),
            dropped: get(&self.frames_dropped),
            throttled: get(&self.frames_throttled),
            motion_skipped: get(&self.frames_motion_skipped),
        }
    }

    /// fps over the last 10 s and latency percentiles (ms) of the last 256 frames.
    pub fn rates(&self, camera: &str) -> StreamRates {
        let meters = self.meters();
        meters
            .get(camera)
            .map_or(StreamRates::default(), |m| StreamRates {
                fps: m.fps.fps(),
                p50_ms: m.latency.percentile(0.5),
                p95_ms: m.latency.percentile(0.95),
            })
    }

    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// The registry as OpenMetrics text (the body of `/metrics`).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Raises a counter to `total`, a count kept elsewhere that only grows (a counter never goes
/// back, so a restarted source's smaller count leaves it where it is).
fn catch_up(c: &Counter, total: u64) {
    let now = c.get();
    if total > now {
        c.inc_by(total - now);
    }
}

/// Counters of one stream since start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StreamCounts {
    pub processed: u64,
    pub dropped: u64,
    pub throttled: u64,
    pub motion_skipped: u64,
}

/// Recent rate and latency of one stream.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct StreamRates {
    pub fps: f64,
    pub p50_ms: f64,
    pub p95_ms: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_and_metrics_read_the_same_counters() {
        let t = Telemetry::new();
        t.frame_processed("front", "mobilenetv2", "tract", Duration::from_millis(20));
        t.frame_processed("front", "mobilenetv2", "tract", Duration::from_millis(40));
        t.frame_throttled("back");
        t.sync_dropped("front", 5);
        t.sync_dropped("front", 3); // never goes back
        t.event("front", "alice");
        t.training_run("mobilenetv2", "deployed");
        assert_eq!(
            t.counts("front"),
            StreamCounts {
                processed: 2,
                dropped: 5,
                throttled: 0,
                motion_skipped: 0
            }
        );
        assert_eq!(t.counts("back").throttled, 1);
        assert_eq!(t.counts("nosuch"), StreamCounts::default());
        let r = t.rates("front");
        assert_eq!(r.p50_ms, 20.0);
        assert_eq!(r.p95_ms, 40.0);
        let text = t.encode();
        for line in [
            "adaptd_frames_processed_total{camera=\"front\"} 2",
            "adaptd_frames_dropped_total{camera=\"front\"} 5",
            "adaptd_frames_throttled_total{camera=\"back\"} 1",
            "adaptd_events_total{camera=\"front\",label=\"alice\"} 1",
            "adaptd_training_runs_total{model=\"mobilenetv2\",outcome=\"deployed\"} 1",
            "adaptd_inference_seconds_count{camera=\"front\",model=\"mobilenetv2\",backend=\"tract\"} 2",
        ] {
            assert!(text.contains(line), "missing {line} in:\n{text}");
        }
        assert!(
            text.ends_with("# EOF\n"),
            "OpenMetrics text ends with # EOF"
        );
    }
}
