//! The MQTT control plane of adaptd: the daemon's only network interface.
//!
//! Home Assistant users automate against MQTT, so everything adaptd reports (availability,
//! state, detections, events, snapshots, stats, training results, command replies) goes out
//! here, and everything it is told (commands, labeled samples) comes in here. The topic
//! vocabulary follows Frigate's, which those users already know; see `DESIGN.md`.
//!
//! # Submodules
//! - [`config`]: the `[mqtt]` table of the TOML config, its validation, and the TLS and
//!   password material it points to.
//! - [`topics`]: every topic name under `<prefix>/<device_id>`, and the classification of
//!   incoming topics.
//! - [`commands`]: parsing of `cmd/<verb>` payloads into [`Command`]s and the `reply` JSON.
//! - [`discovery`]: the Home Assistant device-based discovery message.
//! - `broker` (cargo feature `embedded-broker`): the small in-process broker behind
//!   `[mqtt].url = "embedded"`.
//! - [`client`]: [`MqttLink`], which owns the connection and its event loop task: last will,
//!   `online`, re-subscription and discovery after every reconnect, clean shutdown.
//!
//! # Wiring
//! Call [`MqttLink::start`] inside the tokio runtime; it returns at once (the broker may be
//! down) with the link and a receiver of [`LinkEvent`]s, which the owner must keep draining:
//! - on [`LinkEvent::Connected`], publish the retained `state` and `snapshot` (the link has
//!   already published `online` and the discovery message);
//! - on [`LinkEvent::Message`], handle a command ([`Request::parse`], then a [`Reply`] on
//!   `reply`) or a labeled sample;
//! - on [`LinkEvent::Oversized`] (a message over `max_packet_bytes` was lost), publish an
//!   `ok: false` [`Reply`] if you like;
//! - [`LinkEvent::HomeAssistantOnline`] is informational.
//!
//! Hand a [`Publisher`] (cheap to clone) to the inference thread for per-frame messages
//! ([`Publisher::try_publish`] never blocks); use [`Publisher::publish`] for replies and
//! retained state. On shutdown call [`MqttLink::shutdown`], which publishes `stopped` and
//! waits for the DISCONNECT to be flushed so the broker does not fire the will (`offline`).

#[cfg(feature = "embedded-broker")]
pub mod broker;
pub mod client;
pub mod commands;
pub mod config;
pub mod discovery;
pub mod topics;

#[cfg(test)]
mod broker_tests;

pub use client::{LinkEvent, LinkStats, Mirrored, MqttLink, Publisher};
pub use commands::{Command, CommandError, Label, Rejected, Reply, Request};
pub use config::{MqttConfig, MqttError};
pub use topics::{Incoming, Topics};
