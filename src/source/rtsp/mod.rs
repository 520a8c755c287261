//! IP cameras over RTSP: `kind = "rtsp"`.
//!
//! RTSP and RTP come from `retina` (pure Rust, on tokio), H.264 decoding from openh264
//! ([`h264`]); no ffmpeg, no GStreamer on the board. The source is a blocking [`crate::source::Source`] like
//! every other: it owns a single-threaded tokio runtime on its capture thread, so a camera
//! that hangs stalls only its own thread.
//!
//! Nothing ends an RTSP camera but a fault in its configuration: a server that is down or
//! restarts, a refused login, a stream that stops or stalls, a burst of undecodable frames
//! all close the session and reconnect with exponential backoff (1 s doubling to 30 s, reset
//! once frames flow), and the camera's `state` says `connecting`, `streaming` or
//! `reconnecting` with the attempt, the next try and why. An H.265-only camera is the
//! exception: no retry decodes it, so it fails at once with what to do instead.
//!
//! Decode policy: every access unit is decoded (P-frames depend on the frames before them),
//! but only the pictures the camera's `fps` cap will take are converted to RGB
//! ([`crate::source::pace::Demand`]);
//! `decode = "keyframes"` decodes the key frames alone, for boards that cannot keep up.

pub mod address;
#[cfg(feature = "rtsp")]
pub mod h264;

#[cfg(feature = "rtsp")]
pub use session::RtspSource;

#[cfg(feature = "rtsp")]
pub mod session;
