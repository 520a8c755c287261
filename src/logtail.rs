//! The last log lines in memory, for the web page's Status view: a `tracing` layer that keeps
//! the most recent [`CAPACITY`] events at info level and above, whatever the level printed on
//! stderr (the daemon prints warnings only by default, but a person looking at the page wants
//! to see "camera front streaming").
//!
//! A leaf: the binary installs [`layer`] beside its stderr printer, and the daemon reads
//! [`lines`].

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::{Mutex, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::Layer;

/// Lines kept.
pub const CAPACITY: usize = 200;
/// A line is cut at this many bytes (a log line that embeds a payload stays readable).
const MAX_LINE: usize = 1000;

fn ring() -> &'static Mutex<VecDeque<String>> {
    static RING: OnceLock<Mutex<VecDeque<String>>> = OnceLock::new();
    RING.get_or_init(|| Mutex::new(VecDeque::with_capacity(CAPACITY)))
}

/// The kept lines, oldest first.
pub fn lines() -> Vec<String> {
    let ring = ring().lock().unwrap_or_else(|e| e.into_inner());
    ring.iter().cloned().collect()
}

/// Keeps `line` (the oldest goes when full).
pub fn push(line: String) {
    let mut ring = ring().lock().unwrap_or_else(|e| e.into_inner());
    if ring.len() >= CAPACITY {
        ring.pop_front();
    }
    ring.push_back(line);
}

/// The layer that feeds the ring: info and above.
pub fn layer() -> TailLayer {
    TailLayer
}

/// See [`layer`].
pub struct TailLayer;

impl<S: Subscriber> Layer<S> for TailLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let meta = event.metadata();
        if *meta.level() > Level::INFO {
            return;
        }
        let mut v = Fields::default();
        event.record(&mut v);
        let mut line = format!(
            "{}  {:>5} {}: {}{}",
            utc_now(),
            meta.level(),
            meta.target(),
            v.message,
            v.rest
        );
        if line.len() > MAX_LINE {
            let mut cut = MAX_LINE;
            while !line.is_char_boundary(cut) {
                cut -= 1;
            }
            line.truncate(cut);
            line.push('…');
        }
        push(line);
    }
}

#[derive(Default)]
struct Fields {
    message: String,
    rest: String,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            let _ = write!(self.rest, " {}={value}", field.name());
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            let _ = write!(self.rest, " {}={value:?}", field.name());
        }
    }
}

/// Now as `YYYY-MM-DDTHH:MM:SSZ`.
fn utc_now() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    utc(secs)
}

/// Unix seconds as `YYYY-MM-DDTHH:MM:SSZ`.
fn utc(secs: u64) -> String {
    let [y, m, d, hh, mm, ss] = civil(i64::try_from(secs).unwrap_or(i64::MAX));
    format!("{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}Z")
}

/// Unix seconds as UTC `[year, month, day, hour, minute, second]` (the civil-from-days
/// algorithm of H. Hinnant: no time crate needed). Also what `adaptd events` prints.
pub fn civil(secs: i64) -> [i64; 6] {
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    [y, m, d, rem / 3600, rem % 3600 / 60, rem % 60]
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::layer::SubscriberExt;

    #[test]
    fn keeps_info_and_above_with_fields() {
        let subscriber = tracing_subscriber::registry().with(layer());
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(camera = "front", "streaming");
            tracing::debug!("not kept");
            tracing::warn!("slow");
        });
        let l = lines();
        let front = l
            .iter()
            .find(|x| x.contains("streaming"))
            .expect("info kept");
        assert!(
            front.contains("INFO") && front.contains("camera=front"),
            "{front}"
        );
        assert!(l.iter().any(|x| x.contains("WARN") && x.contains("slow")));
        assert!(!l.iter().any(|x| x.contains("not kept")));
    }

    #[test]
    fn the_ring_is_bounded_and_dates_are_civil() {
        for i in 0..CAPACITY + 10 {
            push(format!("line {i}"));
        }
        assert!(lines().len() <= CAPACITY);
        assert_eq!(utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc(1_796_725_805), "2026-12-08T10:30:05Z");
        assert_eq!(utc(951_782_400), "2000-02-29T00:00:00Z");
    }
}
