//! adaptd: edge inference and on-device adaptation.
//!
//! A frozen, pretrained backbone (MobileNetV2, EfficientNet-Lite, NanoDet... run by tract-onnx,
//! or by onnxruntime when its library is installed)
//! turns camera frames into embeddings, class scores or boxes; a small classifier head is
//! retrained on the device from a handful of labeled examples, so the model learns the user's
//! own scene without a GPU, Python or a cloud.
//!
//! # Layout
//! - [`config`]: the TOML configuration file; strict (unknown keys are errors) and reporting
//!   every problem at once, each with its key and what is allowed.
//! - [`model`]: model manifests (what an ONNX file needs: input tensor, normalisation,
//!   embedding tensor, output meaning, fine-tuning cut), finding model files and checking
//!   their sha256; [`model::onnx_graph`] rewrites a model's protobuf bytes (outputs,
//!   initializers) and [`model::tail`] reads the trainable tail between the cut and the
//!   embedding out of the graph.
//! - [`vision`]: images in, answers out: [`vision::image_io`] decodes untrusted JPEG/PNG
//!   under size limits, [`vision::preprocess`] resizes and normalises into the input tensor,
//!   [`vision::classify`] ranks classes,
//!   [`vision::detect`] decodes NanoDet/YOLO outputs and runs NMS; [`vision::VisionModel`]
//!   ties them together.
//! - [`runtime`]: [`runtime::backbone`] loads a model and runs it on the configured
//!   backend (for vision and audio models alike); the inference backends under it: [`runtime::tract`] (always
//!   built) and `runtime::onnxruntime` (cargo feature `onnxruntime`, the library loaded at run
//!   time), `auto` choosing between them; one [`runtime::Engine`] trait, so everything above
//!   the graph is the same code for both. [`runtime::depthwise`] is our depthwise-convolution
//!   kernel, patched into tract's graph (with the ReLU6 after it fused) where it is faster.
//! - [`audio`]: audio in, voice prints out: WAV and raw PCM, resampling to 16 kHz, the energy
//!   gate (VAD), the mel front end (checked against librosa) and the speaker encoder.
//! - [`store`]: the SQLite sample store (WAL, full sync): labeled embeddings with their
//!   backbone identity, source, thumbnail and train/holdout split; per-label and total caps.
//! - [`adapt`]: transfer learning on the device: the trainable head (softmax regression or
//!   MLP, open-set `unknown`), its Adam trainer, metrics, and the versioned head registry
//!   with its deploy-only-if-not-worse policy; [`adapt::finetune`] trains the backbone's
//!   tail with the head on cached cut activations, behind a negative-transfer guard.
//! - [`consensus`]: N-of-M agreement over frames before a label changes, and the
//!   `new`/`update`/`end` events that result.
//! - [`daemon`]: the long-running service: the per-frame pipeline (backbone, head, sub-labels,
//!   consensus) and its statistics.
//! - [`source`]: where frames come from: IP cameras over RTSP (`source::rtsp`: retina and
//!   openh264 in the binary, reconnecting with backoff), camera programs adaptd supervises
//!   (`source::command`), V4L2 cameras (reopened with backoff when unplugged), directory
//!   replay, MJPEG streams on a pipe or FIFO; microphones on a sound card (`source::alsa`:
//!   libasound loaded at run time, reopened with backoff) or a pipe; `source::devices`, what
//!   `adaptd devices` lists; the latest-frame slot that lets a slow model
//!   skip stale frames, and the fps cap's demand that lets a source skip converting frames
//!   nobody will take.
//! - [`track`]: a camera's detections associated across frames into objects with stable ids
//!   (ByteTrack's two rounds, constant-velocity prediction, optimal assignment), and the
//!   IDF1 / identity-switch scores that measure it.
//! - [`events`]: the event store: each tracked object's last state in an SQLite file of its
//!   own, with retention, for `adaptd events` and `cmd/events`.
//! - [`mqtt`]: the MQTT control plane: configuration, topics, command parsing and replies,
//!   the connection with last will, reconnect backoff and clean shutdown, Home Assistant
//!   discovery.
//! - [`wire`]: the MQTT contract as types: one serde type per payload (`state`, `stats`,
//!   `detections`, `events`, `training`, `reply`) and the strict command parser; the daemon
//!   writes them, `watch` reads them (leniently: another version may have written them), and a
//!   test holds docs/mqtt.md to them. A leaf: it imports nothing of the crate but `Label`.
//! - [`watch`]: `adaptd watch`, a live terminal view of a device built from its MQTT topics.
//! - [`http`]: what the web server needs that knows nothing of the daemon: `[http]`, who may
//!   use it (argon2 passwords, tokens, sessions, CSRF) and the page, embedded; the routes are
//!   `daemon::web`.
//! - [`logtail`]: the last log lines in memory, for the web page's Status view.
//! - [`npy`]: NumPy `.npy` files, so embeddings leave adaptd in the ecosystem's format.
//! - [`bounded`]: reading untrusted files whole with a size cap checked first.
//! - [`durable`]: crash-safe file replacement (temp file, fsync, rename, directory fsync).
//! - [`rng`]: the one pseudo-random generator (SplitMix64): seeded streams for training,
//!   clock-seeded jitter.
//! - [`backoff`]: retry delays, exponential, with full jitter for the broker link.
//! - [`label`]: the one label rule (samples, commands, the store) and the reserved `unknown`.
//! - [`cli`]: the `adaptd` command line (its `bench` commands included: they are commands,
//!   with anyhow at the edge); `main.rs` only maps its errors to exit codes.
//!
//! Layers, one way: runtime (tract / onnxruntime and [`runtime::backbone`]) <- vision, audio
//! <- source <- daemon (its pipeline inside) <- cli; [`track`] sits on vision. [`wire`], [`label`], [`model`],
//! [`durable`], [`bounded`], [`rng`], [`backoff`], [`http`] and [`logtail`] are leaves anyone may use; the daemon never imports the CLI and
//! takes a parsed `Config`. Beside that chain: [`store`] <- [`adapt`] (training reads samples),
//! [`mqtt`] (the connection, on [`wire`]), [`consensus`]; [`config`] gathers every room's
//! settings and sits just under the daemon; [`watch`] reads MQTT and never the daemon.
//! `tests/layers.rs` holds the crate to this table and fails naming the file and line of any
//! import against it.
//!
//! # One crate, not a workspace (measured)
//! The candidates for a crate of their own were the embedded broker (`mqtt::broker`, 2.6k
//! lines), the audio DSP (`audio`, 3.9k) and the head trainer (`adapt`, 5.0k) of 43.6k. A
//! split pays when it makes builds faster, and here it would not: on the 2-core CI machine a
//! one-line change anywhere in `src/` rebuilds the library in 5 s and every test target
//! (17 binaries) in 14 s, thanks to incremental compilation; a cold build is the ~270
//! dependencies (tract, image, rumqttc, rusqlite...), which a split does not reduce. The
//! layer boundaries are enforced by `tests/layers.rs` instead, which is what a crate boundary
//! would have bought us; a room that grows past that (a second binary needing only the
//! broker, say) is the time to split.

// Input, files and the network reach almost every function here: a panic would take the
// daemon (and its unacknowledged work) down. Outside tests, failures are errors with a
// message, never `unwrap`/`expect`; clippy holds the line.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod adapt;
pub mod audio;
pub mod backoff;
pub mod bounded;
pub mod cli;
pub mod config;
pub mod consensus;
pub mod daemon;
pub mod durable;
pub mod events;
pub mod http;
pub mod label;
pub mod logtail;
pub mod model;
pub mod mqtt;
pub mod npy;
pub mod rng;
pub mod runtime;
pub mod source;
pub mod store;
pub mod track;
pub mod vision;
pub mod watch;
pub mod wire;
