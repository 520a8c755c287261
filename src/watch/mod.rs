//! `adaptd watch`: a live terminal view of one device, from its MQTT topics.
//!
//! It is an ordinary MQTT subscriber, so it works from any machine that reaches the broker
//! (the Pi itself over SSH, or a laptop), against any adaptd version, and needs nothing from
//! the daemon beyond what Home Assistant sees. Each message is read into its
//! [`crate::wire`] type, so the watch reads exactly what the daemon writes.
//!
//! # Files
//! - [`route`]: which part of the view a topic feeds (device or `<camera>/...`), and the
//!   subscriptions;
//! - [`model`]: [`WatchView`], the state fed by messages, reduced at once to what the screen
//!   shows by [`reduce`];
//! - `render/`: the screen, one file per part (header, camera, detections, events, training,
//!   replies), fitted to the terminal by [`layout`] out of styled [`line`](mod@line)s and [`text`];
//! - this module: connecting, subscribing, and redrawing the terminal in place (or, with
//!   `--plain`, printing whole screens one after another, for logs and scripts).

pub mod layout;
pub mod line;
pub mod model;
pub mod reduce;
mod render;
pub mod route;
#[cfg(test)]
mod tests;
pub mod text;

use std::io::{IsTerminal, Write};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rumqttc::{AsyncClient, Event, Packet, QoS};
use tokio::time::{interval, MissedTickBehavior};

use crate::backoff::Backoff;
use crate::mqtt::client::client_options;
use crate::mqtt::{MqttConfig, MqttError};
pub use layout::frame;
pub use model::WatchView;

/// How `adaptd watch` shows what it receives.
#[derive(Debug, Clone)]
pub struct WatchOptions {
    /// Device id (the second level of the topics); the config's by default.
    pub device: String,
    /// No colours, no in-place redraw: whole screens printed one after another.
    pub plain: bool,
    /// Redraw period (in-place) or print period (plain).
    pub interval: Duration,
    /// Stop after printing this many screens (plain mode; `None` = until Ctrl-C).
    pub frames: Option<u64>,
    /// Only this camera (or microphone); `None`: every one.
    pub camera: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error(transparent)]
    Mqtt(#[from] MqttError),
    #[error("cannot write to the terminal: {0}")]
    Io(#[from] std::io::Error),
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The terminal's size in columns and rows (80x24 when it cannot be read, e.g. a pipe).
fn terminal_size() -> (usize, usize) {
    // SAFETY: TIOCGWINSZ writes one `winsize` into the struct we pass; a failing call leaves
    // it zeroed, which falls back to the default below.
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    let ok = unsafe { libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut ws) } == 0;
    if ok && ws.ws_col > 0 && ws.ws_row > 0 {
        (ws.ws_col as usize, ws.ws_row as usize)
    } else {
        (80, 24)
    }
}

/// Restores the cursor when the view ends, however it ends.
struct CursorGuard(bool);

impl Drop for CursorGuard {
    fn drop(&mut self) {
        if self.0 {
            let mut out = std::io::stdout();
            let _ = out.write_all(b"\x1b[?25h\r\n");
            let _ = out.flush();
        }
    }
}

/// Connects and shows the device until Ctrl-C (or `frames` screens in plain mode).
pub async fn watch(config: &MqttConfig, opts: &WatchOptions) -> Result<(), WatchError> {
    let base = format!("{}/{}", config.prefix, opts.device);
    let url = match config.broker_url()? {
        u if config.is_embedded() => format!("{u} (embedded broker)"),
        u => u.to_string(),
    };
    let client_id = format!("adaptd-watch-{}-{}", opts.device, std::process::id());
    let options = client_options(config, &client_id)?;
    let (client, mut events) = AsyncClient::new(options, 16);
    let tty = !opts.plain && std::io::stdout().is_terminal();
    let _cursor = CursorGuard(tty);
    let mut out = std::io::stdout();
    if tty {
        out.write_all(b"\x1b[?25l\x1b[2J")?;
    }
    let mut view = WatchView::new(&opts.device, opts.camera.as_deref());
    // `snapshot` is left out: a JPEG per frame for nothing.
    let subscriptions = route::subscriptions(&base, opts.camera.as_deref());
    let prefix = format!("{base}/");
    let mut link = format!("connecting to {url}");
    let mut backoff = Backoff::broker();
    let mut tick = interval(opts.interval);
    tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let mut printed = 0u64;
    let mut received = false;
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return Ok(()),
            _ = tick.tick() => {
                if opts.plain && !received {
                    continue;
                }
                let (w, h) = if tty { terminal_size() } else { (100, 40) };
                let mut lines = view.render(w, h.saturating_sub(1), now_ms(), tty);
                lines.push(format!("broker: {link}"));
                if tty {
                    out.write_all(frame(&lines).as_bytes())?;
                } else {
                    let mut text = lines.join("\n");
                    text.push_str("\n\n");
                    out.write_all(text.as_bytes())?;
                }
                out.flush()?;
                printed += 1;
                if opts.frames.is_some_and(|n| printed >= n) {
                    return Ok(());
                }
            }
            event = events.poll() => match event {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    backoff.reset();
                    link = format!("connected to {url}");
                    for t in &subscriptions {
                        // The request queue has room: it was just drained by the reconnect.
                        let _ = client.try_subscribe(t.as_str(), QoS::AtMostOnce);
                    }
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    if let Some(sub) = p.topic.strip_prefix(&prefix) {
                        received = true;
                        view.apply(sub, &p.payload, now_ms());
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    let wait = backoff.next_delay();
                    link = format!("{url}: {e}; retrying in {:.1} s", wait.as_secs_f64());
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }
}
