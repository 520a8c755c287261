//! The MQTT wire contract: one serde type per payload, written by the daemon and read by
//! `adaptd watch` (and any other reader), so the two cannot drift apart.
//!
//! A leaf module: it imports nothing else of the crate, and everything may import it.
//! Readers are often another version than the writer: no payload type denies unknown
//! fields, and optional fields default when absent.

pub mod detections;
pub mod state;
pub mod stats;
pub mod training;

pub use detections::{Detections, Event, EventKind, HeadLabel, Item, UtteranceInfo};
pub use state::{CameraState, DeviceState, EngineState, LearnerState, SourceState};
pub use stats::{CameraStats, Stats};
pub use training::{SampleStored, Training};
