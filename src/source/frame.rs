//! The unit every source produces: one decoded picture with the two clocks the daemon needs.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use image::RgbImage;

/// One decoded frame, owned, ready for preprocessing.
///
/// Two timestamps because they answer different questions: `captured` (monotonic) measures
/// latency and frame age inside the process and never jumps when NTP corrects the clock;
/// `unix_ms` (wall clock) is what goes into MQTT payloads and snapshots, where a person or
/// Home Assistant must line it up with other events.
#[derive(Debug, Clone)]
pub struct Frame {
    /// Position in this source's stream, from 0, without gaps for frames the source skipped
    /// itself (undecodable files or MJPEG frames); gaps seen by the inference thread are frames
    /// the latest-frame slot replaced (see [`crate::source::latest`]). Keeps counting across
    /// camera reconnects, so a frame id is unique for the life of the source.
    pub seq: u64,
    /// When the frame was taken from the device, pipe or folder.
    pub captured: Instant,
    /// The same moment on the wall clock, in milliseconds since the Unix epoch. A Pi has no
    /// battery-backed clock: until NTP syncs, this can be days off, while `captured` is fine.
    pub unix_ms: i64,
    pub image: RgbImage,
    /// Where the frame came from: the device path, `stdin`, the pipe's path, or for directory
    /// replay the file itself (so a surprising detection can be traced to its file).
    pub source: String,
}

impl Frame {
    /// A frame captured now.
    pub fn now(seq: u64, image: RgbImage, source: impl Into<String>) -> Frame {
        Frame {
            seq,
            captured: Instant::now(),
            unix_ms: unix_ms_now(),
            image,
            source: source.into(),
        }
    }
}

/// Milliseconds since the Unix epoch; saturates instead of panicking on absurd clocks.
pub fn unix_ms_now() -> i64 {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        Err(e) => i64::try_from(e.duration().as_millis())
            .map(|ms| -ms)
            .unwrap_or(i64::MIN),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_now_has_both_clocks() {
        let before = unix_ms_now();
        let f = Frame::now(7, RgbImage::new(2, 2), "test");
        assert_eq!(f.seq, 7);
        assert!(f.unix_ms >= before);
        // 2020-01-01 as a sanity floor for the machine's clock.
        assert!(f.unix_ms > 1_577_836_800_000);
        assert!(f.captured.elapsed().as_secs() < 5);
    }
}
