//! The MQTT wire contract: one serde type per payload, written by the daemon and read by
//! `adaptd watch` (and any other reader), so the two cannot drift apart. `docs/mqtt.md`
//! documents each payload with an example that a test parses into its type and writes back,
//! so the documentation cannot drift either.
//!
//! A leaf module: it imports nothing else of the crate but the `Label` rule, and everything
//! may import it.
//!
//! # Writers and readers
//! Writers (the daemon) produce exactly the JSON of the contract: fields that may be unknown
//! are written as `null` (`head_version`, `label`), and the few that are optional are left out
//! exactly where the daemon has always left them out (`box`, `head`, `width`/`height`,
//! `utterance`, `cpu_temp_c`, `cmd` of an unattributable reply).
//!
//! Readers are often another version than the writer, so reading is lenient: no payload type
//! denies unknown fields, a missing field takes its default, and a field of an unexpected type
//! reads as missing ([`lenient::lenient`]) instead of failing the whole message. Enums that a
//! newer daemon may extend read an unknown word as their `Unknown` variant, which no writer
//! produces. Only a payload that is not a JSON object at all is refused ([`decode`]).
//! Commands go the other way and are strict: [`Request::parse`].
//!
//! # Files, by topic family
//! - [`state`]: `available`, `state`, `<camera>/state` ([`Availability`], [`DeviceState`],
//!   [`CameraState`], [`LearnerState`], [`EngineState`], [`SourceState`]).
//! - [`detections`]: `<camera>/detections` ([`Detections`], [`Item`], [`HeadLabel`],
//!   [`UtteranceInfo`]); [`events`]: `<camera>/events` ([`Event`], [`EventKind`]);
//!   [`objects`]: `<camera>/objects` and `cmd/events` ([`ObjectEvent`], [`TrackedObject`],
//!   [`EventList`]).
//! - [`stats`]: `stats` ([`Stats`], [`CameraStats`]); [`training`]: `training` ([`Training`]).
//! - [`command`]: `cmd/<verb>` ([`Request`], [`Command`], ...), its errors in
//!   [`command_error`] and its field readers in `command_fields`; [`reply`]: `reply`
//!   ([`Reply`], [`SampleStored`]).
//! - [`request_id`]: the `id` a command carries and its reply echoes.
//! - [`name`]: the stream-name rule; [`lenient`]: the reading helpers.

pub mod command;
pub mod command_error;
mod command_fields;
pub mod detections;
pub mod events;
pub mod lenient;
pub mod name;
pub mod objects;
pub mod reply;
pub mod request_id;
pub mod state;
pub mod stats;
pub mod training;

#[cfg(test)]
mod docs_test;
#[cfg(test)]
mod test_support;

pub use command::{
    Command, EventFilter, LabelTarget, Rejected, Request, RequestId, RollbackTarget, Settings,
    VERBS,
};
pub use command_error::CommandError;
pub use detections::{Detections, HeadLabel, Item, UtteranceInfo};
pub use events::{Event, EventKind};
pub use lenient::{decode, DecodeError};
pub use name::{check_stream_name, MAX_STREAM_NAME, RESERVED_STREAM_NAMES};
pub use objects::{EventList, ObjectEvent, TrackedObject};
pub use reply::{
    FalsePositiveFiled, Forgotten, Paused, Reply, SampleStored, SettingsApplied, SnapshotTaken,
    TrainStarted,
};
pub use state::{
    Availability, AvailabilityError, CameraState, DeviceState, EngineState, LearnerState,
    SourceState, ZoneShape,
};
pub use stats::{CameraStats, Stats};
pub use training::Training;
