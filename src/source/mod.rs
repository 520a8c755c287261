//! Frame sources: where pictures come from before inference.
//!
//! Five kinds, chosen by the `[source]` table ([`SourceConfig`]):
//! - `rtsp` ([`rtsp`]): an IP camera, H.264 over RTSP decoded in the binary, reconnecting
//!   with backoff whatever goes wrong.
//! - `command` ([`command`]): a camera program (rpicam-vid, ffmpeg, GStreamer) adaptd starts,
//!   reads MJPEG from, restarts when it exits and stops with itself.
//! - `dir` ([`dir`]): a folder of JPEG/PNG files replayed at a set rate, optionally looping.
//! - `mjpeg` ([`mjpeg`]): concatenated JPEGs on stdin, a FIFO (which outlives its writers)
//!   or a file, for producers started by hand.
//! - `v4l2` ([`v4l2`], cargo feature `v4l2`): a USB webcam, reopened with backoff when it is
//!   unplugged ([`reopen`]).
//!
//! Every kind is a [`Source`]: a blocking `next_frame` meant for a dedicated capture thread,
//! never the async runtime. Frames reach the inference thread through the one-frame
//! [`latest`] slot, so a slow model skips stale frames instead of queueing them.
//!
//! The contract of `next_frame`, the same for all kinds, keeps the daemon's loop trivial:
//! `Ok(Some(frame))` a frame; `Ok(None)` the end (a non-looping folder is done, the pipe's
//! writer closed it, or a stop was requested); `Err(e)` a fatal problem whose message says
//! what to fix. Everything recoverable is handled inside and only counted in [`SourceStats`]:
//! undecodable files and frames are skipped, a broken MJPEG stream resynchronises, a lost
//! camera is reopened.
//!
//! Microphones are sources too: [`microphone`] reads PCM from a sound card ([`alsa`]) or a
//! pipe, FIFO or file on its own capture thread and hands whole utterances (cut by [`crate::audio::vad`]) to inference
//! through a small bounded slot, the audio counterpart of the frame slot.
//!
//! Layout: [`frame`] (the `Frame` type), [`config`] (`[source]`), [`devices`] (what
//! `adaptd devices` lists), [`streams`] (`[[cameras]]`
//! and `[[microphones]]`), [`latest`] (the slot), [`stop`] (interruptible sleeps), [`stats`]
//! (counters and state for MQTT), [`pace`] (drift-free pacing, and the fps cap's demand), [`convert`] (YUYV and MJPEG
//! frame conversion), then one module per kind, [`microphone`] included.

use std::sync::mpsc::SendError;
use std::sync::Arc;
use std::thread::JoinHandle;

use tracing::{info, warn};

use crate::vision::image_io::DecodeLimits;

pub mod alsa;
pub mod command;
pub mod config;
pub mod convert;
pub mod devices;
pub mod dir;
pub mod frame;
pub mod latest;
pub mod microphone;
pub mod mjpeg;
pub mod pace;
pub mod reopen;
pub mod rtsp;
pub mod stats;
pub mod stop;
pub mod streams;
#[cfg(feature = "v4l2")]
pub mod v4l2;

pub use config::{PixelFormat, SourceConfig};
pub use frame::Frame;
pub use latest::{latest_slot, Doorbell, LatestFrame, LatestReceiver, LatestSender, SlotCounters};
pub use pace::Demand;
pub use reopen::ReopeningCamera;
pub use stats::{SourceState, SourceStats, SourceStatsSnapshot};
pub use stop::StopSignal;
pub use streams::{CameraConfig, MicrophoneConfig, StreamKind, StreamSpec};

/// A producer of frames, run on its own thread (see the module docs for the contract).
pub trait Source: Send {
    /// Blocks until the next frame, the end of the stream, or a fatal error.
    fn next_frame(&mut self) -> Result<Option<Frame>, SourceError>;

    /// One line for logs and the `state` topic, e.g. `v4l2 /dev/video0 MJPG 640x480 @ 15 fps`.
    fn describe(&self) -> String;

    /// The live counters and state; clone the `Arc` before moving the source to its thread.
    fn stats(&self) -> Arc<SourceStats>;
}

/// Why a source could not start or had to end. Messages name the path or device, what is
/// wrong, and what to do.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("invalid [source] configuration: {}", .0.join("; "))]
    Config(Vec<String>),

    #[error("{}: {hint} ({source})", path.display())]
    DirOpen {
        path: std::path::PathBuf,
        hint: &'static str,
        source: std::io::Error,
    },
    #[error(
        "{}: not a folder; [source] kind = \"dir\" replays the JPEG/PNG files of a folder \
         (to read one MJPEG file use kind = \"mjpeg\")", path.display()
    )]
    NotADir { path: std::path::PathBuf },
    #[error(
        "{}: no JPEG or PNG files (*.jpg, *.jpeg, *.png) in this folder; copy images there \
         or point [source].path at a folder that has some", path.display()
    )]
    DirEmpty { path: std::path::PathBuf },
    #[error(
        "{}: none of the {count} image files could be decoded (first: {first}); check that \
         they are JPEG or PNG files and not truncated", path.display()
    )]
    AllUndecodable {
        path: std::path::PathBuf,
        count: usize,
        first: String,
    },

    #[error("{name}: cannot open: {source}; {hint}")]
    InputOpen {
        name: String,
        hint: &'static str,
        source: std::io::Error,
    },
    #[error(
        "{name}: is a folder; [source] kind = \"mjpeg\" reads one stream (a file, a FIFO or \
         \"-\" for standard input); for a folder of images use kind = \"dir\""
    )]
    InputIsDir { name: String },
    #[error(
        "{name}: reading the MJPEG stream failed: {source}; check the producer \
         (ffmpeg, rpicam-vid) that writes to it"
    )]
    InputRead {
        name: String,
        source: std::io::Error,
    },

    #[error(
        "{device}: no such device: is the camera plugged in? `v4l2-ctl --list-devices` lists \
         cameras"
    )]
    CameraNotFound { device: String },
    #[error(
        "{device}: permission denied: add the user running adaptd to the `video` group \
         (`sudo usermod -aG video USER`, then log in again), or give the service \
         SupplementaryGroups=video"
    )]
    CameraPermission { device: String },
    #[error(
        "{device}: device busy: another program is using the camera; `fuser -v {device}` \
         shows which"
    )]
    CameraBusy { device: String },
    #[error(
        "{device}: not a V4L2 video capture device: {detail}; `v4l2-ctl --list-devices` lists \
         cameras"
    )]
    NotACamera { device: String, detail: String },
    #[error(
        "{device}: the driver offers {granted}, which adaptd cannot read (MJPG or YUYV \
         needed); pick a format and size from `v4l2-ctl -d {device} --list-formats-ext` for \
         [source].format, .width and .height"
    )]
    FormatUnsupported { device: String, granted: String },
    #[error(
        "{device}: not enough USB bandwidth to stream ({op}: {source}); lower [source].width, \
         .height or .fps, use format = \"mjpeg\", or move the camera to a USB port of its own"
    )]
    CameraBandwidth {
        device: String,
        op: &'static str,
        source: std::io::Error,
    },
    #[error("{device}: the camera was lost ({detail}); reopening it when it comes back")]
    CameraLost { device: String, detail: String },
    #[error("{device}: {op} failed: {source}")]
    Camera {
        device: String,
        op: &'static str,
        source: std::io::Error,
    },
    #[error(
        "{device}: this adaptd was built without V4L2 support; rebuild with \
         `--features v4l2`, or feed the camera as an MJPEG pipe ([source] kind = \"mjpeg\", \
         path = \"-\")"
    )]
    NoV4l2Support { device: String },

    #[error(transparent)]
    RtspAddress(#[from] rtsp::address::AddressError),
    #[error("{name}: the camera offers {offered}, and no H.264 video; {hint}")]
    RtspCodec {
        name: String,
        offered: String,
        hint: &'static str,
    },
    #[error("{name}: {problem}")]
    Decoder { name: String, problem: String },
    #[error("{name}: cannot start the camera's network runtime: {source}")]
    Runtime {
        name: String,
        source: std::io::Error,
    },
    #[error(
        "{name}: this adaptd was built without RTSP support (cargo feature `rtsp`); rebuild \
         with it, or feed the camera through kind = \"mjpeg\" from ffmpeg"
    )]
    NoRtspSupport { name: String },
}

impl SourceError {
    /// Whether reopening the camera later may succeed: true for a camera that is missing,
    /// busy, forbidden (udev may fix permissions after a hotplug), short of USB bandwidth
    /// (another camera on the bus may stop) or was lost; false for errors only a
    /// configuration change fixes.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            SourceError::CameraNotFound { .. }
                | SourceError::CameraPermission { .. }
                | SourceError::CameraBusy { .. }
                | SourceError::CameraBandwidth { .. }
                | SourceError::CameraLost { .. }
                | SourceError::Camera { .. }
        )
    }
}

/// What to ask of a camera: the `v4l2` variant of [`SourceConfig`] as a struct.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CameraSettings {
    pub device: String,
    pub width: u32,
    pub height: u32,
    pub fps: u32,
    pub format: PixelFormat,
}

/// Opens one camera (no reconnection). Without the `v4l2` feature: always
/// [`SourceError::NoV4l2Support`].
pub fn open_camera(
    settings: &CameraSettings,
    limits: DecodeLimits,
    stats: Arc<SourceStats>,
    stop: StopSignal,
) -> Result<Box<dyn Source>, SourceError> {
    #[cfg(feature = "v4l2")]
    {
        v4l2::V4l2Camera::open(settings, limits, stats, stop)
            .map(|c| Box::new(c) as Box<dyn Source>)
    }
    #[cfg(not(feature = "v4l2"))]
    {
        let _ = (limits, stats, stop);
        Err(SourceError::NoV4l2Support {
            device: settings.device.clone(),
        })
    }
}

/// Builds the source a configuration describes.
///
/// Cheap and quick to call from the daemon's startup: a folder is listed, an MJPEG path is
/// checked (a FIFO is opened later, on the capture thread, since opening blocks until a writer
/// appears), a camera is opened once. A camera that is absent or busy at startup is not an
/// error: the returned source starts in `Reconnecting` and keeps trying; a path that is no
/// camera is. `stop` interrupts every sleep and wait of the source.
pub fn open(
    cfg: &SourceConfig,
    limits: DecodeLimits,
    stop: &StopSignal,
    demand: &Demand,
) -> Result<Box<dyn Source>, SourceError> {
    let problems = cfg.validate();
    if !problems.is_empty() {
        return Err(SourceError::Config(problems));
    }
    match cfg {
        SourceConfig::Audio { .. } | SourceConfig::Alsa { .. } => {
            Err(SourceError::Config(vec![format!(
                "[source].kind = \"{}\" is read by the audio pipeline, not as frames; use it \
                 with an audio model ([model].name = \"resemblyzer-ge2e\")",
                cfg.kind()
            )]))
        }
        SourceConfig::Dir { path, fps, repeat } => Ok(Box::new(dir::DirSource::open(
            path,
            *fps,
            *repeat,
            limits,
            stop.clone(),
        )?)),
        SourceConfig::Mjpeg { path, fps_limit } => Ok(Box::new(mjpeg::MjpegSource::open(
            path,
            *fps_limit,
            limits,
            stop.clone(),
        )?)),
        SourceConfig::Command { argv, fps_limit } => Ok(Box::new(command::CommandSource::new(
            argv.clone(),
            *fps_limit,
            limits,
            stop.clone(),
        ))),
        SourceConfig::Rtsp {
            url,
            transport,
            password_file,
            decode,
        } => open_rtsp(
            url,
            *transport,
            password_file.as_deref(),
            *decode,
            limits,
            stop,
            demand,
        ),
        SourceConfig::V4l2 {
            device,
            width,
            height,
            fps,
            format,
        } => {
            let settings = CameraSettings {
                device: device.clone(),
                width: *width,
                height: *height,
                fps: *fps,
                format: *format,
            };
            let s2 = settings.clone();
            let stop2 = stop.clone();
            let opener: reopen::Opener =
                Box::new(move |stats| open_camera(&s2, limits, stats.clone(), stop2.clone()));
            let wrapper = ReopeningCamera::new(device.clone(), opener, stop.clone());
            let first = open_camera(
                &settings,
                limits,
                wrapper.shared_stats().clone(),
                stop.clone(),
            );
            match first {
                Ok(cam) => Ok(Box::new(wrapper.with_camera(cam))),
                Err(e) if e.is_retryable() => {
                    warn!("{e}; will keep trying");
                    Ok(Box::new(wrapper.after_failed_open(&e)))
                }
                Err(e) => Err(e),
            }
        }
    }
}

/// An RTSP camera: the password file is read here, the connection made on the capture thread.
fn open_rtsp(
    url: &str,
    transport: config::RtspTransport,
    password_file: Option<&std::path::Path>,
    policy: config::DecodePolicy,
    limits: DecodeLimits,
    stop: &StopSignal,
    demand: &Demand,
) -> Result<Box<dyn Source>, SourceError> {
    let address = rtsp::address::RtspAddress::load(url, password_file)?;
    #[cfg(feature = "rtsp")]
    {
        let settings = rtsp::session::RtspSettings {
            address,
            transport,
            policy,
            limits,
        };
        Ok(Box::new(rtsp::RtspSource::open(
            settings,
            stop.clone(),
            demand.clone(),
        )?))
    }
    #[cfg(not(feature = "rtsp"))]
    {
        let _ = (transport, policy, limits, stop, demand);
        Err(SourceError::NoRtspSupport {
            name: address.to_string(),
        })
    }
}

/// How a capture loop ended without an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CaptureEnd {
    /// The source ended (folder done, pipe closed) or saw the stop signal.
    EndOfStream,
    /// The receiving side of the slot was dropped or closed.
    ReceiverGone,
}

/// The capture thread's loop: frames from `source` into the slot until the source ends, the
/// receiver goes away, or a fatal error. Dropping `tx` on return closes the slot, which wakes
/// the inference thread with `Disconnected`.
pub fn run_capture(
    source: &mut dyn Source,
    tx: LatestSender<Frame>,
) -> Result<CaptureEnd, SourceError> {
    loop {
        if tx.is_closed() {
            return Ok(CaptureEnd::ReceiverGone);
        }
        match source.next_frame()? {
            Some(frame) => {
                if let Err(SendError(_)) = tx.send(frame) {
                    return Ok(CaptureEnd::ReceiverGone);
                }
            }
            None => return Ok(CaptureEnd::EndOfStream),
        }
    }
}

/// The capture thread; its result says how capture ended.
pub type CaptureHandle = JoinHandle<Result<CaptureEnd, SourceError>>;

/// Starts `source` on a thread named `capture` and returns the receiving end of its slot.
///
/// Join the handle to learn why capture ended. At shutdown call `stop.stop()` (which every
/// source's sleeps and camera waits observe within a second) and drop the receiver; do not
/// wait on the join forever: a read from stdin or an unopened FIFO cannot be interrupted and
/// ends only when the writer closes it or the process exits.
pub fn spawn_capture(
    mut source: Box<dyn Source>,
) -> std::io::Result<(CaptureHandle, LatestReceiver<Frame>)> {
    let (tx, rx) = LatestFrame::new();
    let handle = std::thread::Builder::new()
        .name("capture".into())
        .spawn(move || {
            info!(source = %source.describe(), "capture started");
            let end = run_capture(source.as_mut(), tx);
            match &end {
                Ok(how) => info!(?how, "capture ended"),
                Err(e) => warn!("capture failed: {e}"),
            }
            end
        })?;
    Ok((handle, rx))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc::RecvTimeoutError;
    use std::time::Duration;

    fn png(v: u8) -> Vec<u8> {
        let img = image::RgbImage::from_pixel(4, 4, image::Rgb([v, v, v]));
        let mut out = std::io::Cursor::new(Vec::new());
        img.write_to(&mut out, image::ImageFormat::Png)
            .expect("encoding to memory");
        out.into_inner()
    }

    #[test]
    fn open_builds_each_kind_and_rejects_invalid_config() {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("a.png"), png(1)).expect("write");
        let stop = StopSignal::new();
        let cfg = SourceConfig::Dir {
            path: dir.path().into(),
            fps: 100.0,
            repeat: false,
        };
        let src = open(&cfg, DecodeLimits::default(), &stop, &Demand::new()).expect("dir opens");
        assert!(src.describe().starts_with("dir "));

        let fifo_less = SourceConfig::Mjpeg {
            path: dir.path().join("missing.mjpeg"),
            fps_limit: None,
        };
        let e = open(&fifo_less, DecodeLimits::default(), &stop, &Demand::new())
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("missing.mjpeg") && e.contains("mkfifo"), "{e}");

        let bad = SourceConfig::Dir {
            path: dir.path().into(),
            fps: -1.0,
            repeat: false,
        };
        let e = open(&bad, DecodeLimits::default(), &stop, &Demand::new())
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            e.starts_with("invalid [source] configuration: [source].fps"),
            "{e}"
        );
    }

    #[test]
    fn a_camera_that_is_absent_at_startup_is_retried_not_fatal() {
        let dir = tempfile::tempdir().expect("temp dir");
        let cfg = SourceConfig::V4l2 {
            device: dir.path().join("video9").display().to_string(),
            width: 640,
            height: 480,
            fps: 15,
            format: PixelFormat::Mjpeg,
        };
        let stop = StopSignal::new();
        let opened = open(&cfg, DecodeLimits::default(), &stop, &Demand::new());
        if cfg!(feature = "v4l2") {
            let mut src = match opened {
                Ok(src) => src,
                Err(e) => panic!("an absent camera must be retried: {e}"),
            };
            match src.stats().state() {
                SourceState::Reconnecting {
                    attempt,
                    last_error,
                    ..
                } => {
                    assert_eq!(attempt, 1);
                    assert!(last_error.contains("is the camera plugged in?"));
                }
                other => panic!("{other:?}"),
            }
            // Stopping ends it promptly instead of waiting out the backoff.
            stop.stop();
            assert!(matches!(src.next_frame(), Ok(None)));
        } else {
            let e = opened.err().map(|e| e.to_string()).unwrap_or_default();
            assert!(e.contains("built without V4L2 support"), "{e}");
        }
    }

    #[test]
    fn without_v4l2_opening_a_camera_says_so() {
        let r = open_camera(
            &CameraSettings {
                device: "/dev/video0".into(),
                width: 640,
                height: 480,
                fps: 15,
                format: PixelFormat::Mjpeg,
            },
            DecodeLimits::default(),
            SourceStats::new(),
            StopSignal::new(),
        );
        if cfg!(feature = "v4l2") {
            // Only where no camera exists: then the error is the clear "plugged in?" one.
            if !std::path::Path::new("/dev/video0").exists() {
                let e = r.err().map(|e| e.to_string()).unwrap_or_default();
                assert!(e.contains("no such device"), "{e}");
            }
        } else {
            let e = r.err().map(|e| e.to_string()).unwrap_or_default();
            assert_eq!(
                e,
                "/dev/video0: this adaptd was built without V4L2 support; rebuild with \
                 `--features v4l2`, or feed the camera as an MJPEG pipe ([source] kind = \
                 \"mjpeg\", path = \"-\")"
            );
        }
    }

    #[test]
    fn spawned_capture_feeds_the_slot_and_closes_it_at_the_end() {
        let dir = tempfile::tempdir().expect("temp dir");
        for (i, name) in ["1.png", "2.png", "3.png"].iter().enumerate() {
            std::fs::write(dir.path().join(name), png(i as u8 * 10)).expect("write");
        }
        let stop = StopSignal::new();
        let cfg = SourceConfig::Dir {
            path: dir.path().into(),
            fps: 50.0,
            repeat: false,
        };
        let src = open(&cfg, DecodeLimits::default(), &stop, &Demand::new()).expect("opens");
        let stats = src.stats();
        let (handle, rx) = spawn_capture(src).expect("thread");
        let mut seqs = Vec::new();
        loop {
            match rx.recv_timeout(Duration::from_secs(10)) {
                Ok(f) => seqs.push(f.seq),
                Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => panic!("no frame in 10 s"),
            }
        }
        assert_eq!(seqs.last(), Some(&2));
        let c = rx.counters();
        assert_eq!(c.received() + c.skipped(), 3);
        let end = handle.join().ok().and_then(|r| r.ok());
        assert_eq!(end, Some(CaptureEnd::EndOfStream));
        assert_eq!(stats.snapshot().frames, 3);
    }

    #[test]
    fn dropping_the_receiver_ends_capture() {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("1.png"), png(5)).expect("write");
        let stop = StopSignal::new();
        let cfg = SourceConfig::Dir {
            path: dir.path().into(),
            fps: 100.0,
            repeat: true,
        };
        let src = open(&cfg, DecodeLimits::default(), &stop, &Demand::new()).expect("opens");
        let (handle, rx) = spawn_capture(src).expect("thread");
        assert!(rx.recv_timeout(Duration::from_secs(10)).is_ok());
        drop(rx);
        let end = handle.join().ok().and_then(|r| r.ok());
        assert_eq!(end, Some(CaptureEnd::ReceiverGone));
    }
}
