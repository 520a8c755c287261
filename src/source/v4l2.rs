//! V4L2 capture (USB/UVC webcams) through the `v4l` crate: open, negotiate, stream.
//!
//! The driver decides: it may grant another size, rate or even pixel format than asked for,
//! so what it granted is read back, logged and put into the stats (`negotiated`), and the
//! conversion follows the granted format. Buffers are memory-mapped (4 of them: enough to
//! absorb a slow frame without the driver dropping, few enough to stay current); the `v4l`
//! crate hands back the whole mapping, so every buffer is cut to `bytesused` before use.
//!
//! Errors are sorted for [`crate::source::reopen::ReopeningCamera`]: a missing, busy or
//! vanished camera is retryable, a path that is no camera is not.

use std::io;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{info, warn};
use v4l::buffer::{Flags as BufFlags, Type};
use v4l::capability::Flags as CapFlags;
use v4l::io::mmap::Stream;
use v4l::io::traits::CaptureStream;
use v4l::video::capture::Parameters;
use v4l::video::Capture;
use v4l::{Device, FourCC};

use crate::source::convert::{decode_mjpeg_frame, yuyv_to_rgb};
use crate::source::frame::{unix_ms_now, Frame};
use crate::source::stats::{should_log, SourceStats};
use crate::source::stop::StopSignal;
use crate::source::{CameraSettings, PixelFormat, Source, SourceError};
use crate::vision::image_io::DecodeLimits;

/// Mapped buffers requested from the driver.
const BUFFERS: u32 = 4;
/// How long one wait for a frame may block; bounds how late a stop request is noticed.
const POLL: Duration = Duration::from_secs(1);
/// No frame for this long means the camera is wedged (it happens to UVC firmware): treat it
/// as lost and reopen. Long enough for a camera that drops to a few fps in the dark.
const NO_FRAME_LIMIT: Duration = Duration::from_secs(10);

// Linux errno values (the same on x86_64, aarch64 and armv7).
const ENOENT: i32 = 2;
const EIO: i32 = 5;
const ENXIO: i32 = 6;
const EAGAIN: i32 = 11;
const EACCES: i32 = 13;
const EBUSY: i32 = 16;
const ENODEV: i32 = 19;
const EISDIR: i32 = 21;
const EINVAL: i32 = 22;
const ENOTTY: i32 = 25;
const ENOSPC: i32 = 28;
const EPIPE: i32 = 32;
const EPROTO: i32 = 71;
const ESHUTDOWN: i32 = 108;
const EPERM: i32 = 1;

/// One open camera. Meant to run inside [`crate::source::ReopeningCamera`], which numbers the
/// frames across reconnections and counts them; this type counts only the frames it skips.
pub struct V4l2Camera {
    device: String,
    /// Dropped explicitly in `Drop`, before the device (see there).
    stream: Option<Stream<'static>>,
    _dev: Device,
    granted: PixelFormat,
    width: u32,
    height: u32,
    stride: usize,
    negotiated: String,
    limits: DecodeLimits,
    stop: StopSignal,
    stats: Arc<SourceStats>,
    seq: u64,
}

/// Maps an error of `open()` on the device node.
fn open_error(device: &str, e: io::Error) -> SourceError {
    let device = device.to_string();
    match e.raw_os_error() {
        Some(ENOENT | ENODEV | ENXIO) => SourceError::CameraNotFound { device },
        Some(EACCES | EPERM) => SourceError::CameraPermission { device },
        Some(EBUSY) => SourceError::CameraBusy { device },
        Some(EISDIR) => SourceError::NotACamera {
            device,
            detail: "it is a folder".into(),
        },
        _ => SourceError::Camera {
            device,
            op: "open",
            source: e,
        },
    }
}

/// Maps an ioctl error while configuring or streaming.
fn io_error(device: &str, op: &'static str, e: io::Error) -> SourceError {
    let device = device.to_string();
    match e.raw_os_error() {
        Some(ENODEV | ENXIO | EIO | EPIPE | EPROTO | ESHUTDOWN | ENOENT) => {
            SourceError::CameraLost {
                device,
                detail: format!("{op}: {e}"),
            }
        }
        Some(EBUSY) => SourceError::CameraBusy { device },
        // UVC reserves isochronous bandwidth at stream start and fails with ENOSPC when the
        // bus (often shared by every port of a Pi) cannot carry the format.
        Some(ENOSPC) => SourceError::CameraBandwidth {
            device,
            op,
            source: e,
        },
        _ => SourceError::Camera {
            device,
            op,
            source: e,
        },
    }
}

fn fourcc_str(f: FourCC) -> String {
    match f.str() {
        Ok(s) => s.trim_end_matches(['\0', ' ']).to_string(),
        Err(_) => format!("{:#010x}", u32::from(f)),
    }
}

impl V4l2Camera {
    /// Opens and configures the camera and allocates its buffers; streaming starts with the
    /// first [`Source::next_frame`]. `stats` is shared with the reopening wrapper.
    pub fn open(
        settings: &CameraSettings,
        limits: DecodeLimits,
        stats: Arc<SourceStats>,
        stop: StopSignal,
    ) -> Result<V4l2Camera, SourceError> {
        let device = settings.device.as_str();
        let dev = Device::with_path(device).map_err(|e| open_error(device, e))?;

        let caps = dev.query_caps().map_err(|e| match e.raw_os_error() {
            Some(ENOTTY | EINVAL) => SourceError::NotACamera {
                device: device.into(),
                detail: format!(
                    "it does not answer VIDIOC_QUERYCAP ({e}), so it is a regular file or \
                     another kind of device"
                ),
            },
            _ => io_error(device, "VIDIOC_QUERYCAP", e),
        })?;
        let flags = caps.capabilities;
        if !flags.contains(CapFlags::VIDEO_CAPTURE) {
            let detail = if flags.contains(CapFlags::VIDEO_CAPTURE_MPLANE) {
                format!(
                    "{} ({}) captures multi-planar only, which this build cannot read; \
                     feed it as an MJPEG pipe instead (e.g. `rpicam-vid -t 0 --codec mjpeg -o -` \
                     with [source] kind = \"mjpeg\", path = \"-\")",
                    caps.card, caps.driver
                )
            } else if flags.contains(CapFlags::META_CAPTURE) {
                format!(
                    "{} ({}): this node carries metadata; the picture is usually on the \
                     node numbered just before it",
                    caps.card, caps.driver
                )
            } else {
                format!("{} ({}) has no video capture", caps.card, caps.driver)
            };
            return Err(SourceError::NotACamera {
                device: device.into(),
                detail,
            });
        }
        if !flags.contains(CapFlags::STREAMING) {
            return Err(SourceError::NotACamera {
                device: device.into(),
                detail: format!(
                    "{} ({}) does not support streaming I/O",
                    caps.card, caps.driver
                ),
            });
        }

        let mut fmt = dev
            .format()
            .map_err(|e| io_error(device, "VIDIOC_G_FMT", e))?;
        let asked = FourCC::new(&settings.format.fourcc());
        fmt.width = settings.width;
        fmt.height = settings.height;
        fmt.fourcc = asked;
        let got = dev
            .set_format(&fmt)
            .map_err(|e| io_error(device, "VIDIOC_S_FMT", e))?;
        let granted = match &got.fourcc.repr {
            b"MJPG" | b"JPEG" => PixelFormat::Mjpeg,
            b"YUYV" => PixelFormat::Yuyv,
            _ => {
                return Err(SourceError::FormatUnsupported {
                    device: device.into(),
                    granted: format!("{} {}x{}", fourcc_str(got.fourcc), got.width, got.height),
                })
            }
        };
        if granted != settings.format {
            warn!(
                "{device}: asked for {}, the driver gave {}; using it",
                fourcc_str(asked),
                fourcc_str(got.fourcc)
            );
        }
        if (got.width, got.height) != (settings.width, settings.height) {
            warn!(
                "{device}: asked for {}x{}, the driver gave {}x{} (sizes it offers: \
                 `v4l2-ctl -d {device} --list-formats-ext`)",
                settings.width, settings.height, got.width, got.height
            );
        }
        if got.width == 0
            || got.height == 0
            || (granted == PixelFormat::Yuyv && !got.width.is_multiple_of(2))
        {
            return Err(SourceError::FormatUnsupported {
                device: device.into(),
                granted: format!("{} {}x{}", fourcc_str(got.fourcc), got.width, got.height),
            });
        }
        let stride = (got.stride as usize).max(got.width as usize * 2);

        // Not every driver lets the rate be set (EINVAL/ENOTTY): then it runs at its default.
        let fps_granted = match dev.set_params(&Parameters::with_fps(settings.fps)) {
            Ok(p) if p.interval.numerator > 0 => {
                Some(f64::from(p.interval.denominator) / f64::from(p.interval.numerator))
            }
            Ok(_) => None,
            Err(e) => {
                warn!("{device}: the frame rate cannot be set ({e}); using the driver's");
                None
            }
        };
        let fps_text = match fps_granted {
            Some(f) => format!("{f:.3}")
                .trim_end_matches('0')
                .trim_end_matches('.')
                .to_string(),
            None => "?".into(),
        };
        let negotiated = format!(
            "{} {}x{} @ {} fps",
            fourcc_str(got.fourcc),
            got.width,
            got.height,
            fps_text
        );
        info!(
            "{device}: {} ({}, {}): {negotiated} (asked {} {}x{} @ {} fps)",
            caps.card,
            caps.driver,
            caps.bus,
            fourcc_str(asked),
            settings.width,
            settings.height,
            settings.fps
        );
        stats.set_negotiated(negotiated.clone());

        let mut stream: Stream<'static> =
            Stream::with_buffers(&dev, Type::VideoCapture, BUFFERS)
                .map_err(|e| io_error(device, "VIDIOC_REQBUFS/mmap", e))?;
        stream.set_timeout(POLL);

        Ok(V4l2Camera {
            device: device.into(),
            stream: Some(stream),
            _dev: dev,
            granted,
            width: got.width,
            height: got.height,
            stride,
            negotiated,
            limits,
            stop,
            stats,
            seq: 0,
        })
    }
}

impl Source for V4l2Camera {
    fn next_frame(&mut self) -> Result<Option<Frame>, SourceError> {
        let Some(stream) = self.stream.as_mut() else {
            return Ok(None);
        };
        let mut last_frame = Instant::now();
        loop {
            if self.stop.is_stopped() {
                return Ok(None);
            }
            let (buf, meta) = match stream.next() {
                Ok(v) => v,
                Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                    if last_frame.elapsed() >= NO_FRAME_LIMIT {
                        return Err(SourceError::CameraLost {
                            device: self.device.clone(),
                            detail: format!("no frame for {} s", NO_FRAME_LIMIT.as_secs()),
                        });
                    }
                    continue;
                }
                Err(e)
                    if e.kind() == io::ErrorKind::Interrupted
                        || e.raw_os_error() == Some(EAGAIN) =>
                {
                    continue
                }
                // `next()` queues buffers, starts streaming the first time, then dequeues.
                Err(e) => return Err(io_error(&self.device, "capture (QBUF/STREAMON/DQBUF)", e)),
            };
            last_frame = Instant::now();
            let captured = Instant::now();
            let unix_ms = unix_ms_now();
            // The mapping is the whole buffer; only `bytesused` of it is this frame.
            let used = (meta.bytesused as usize).min(buf.len());
            let skip = |why: String| {
                let n = self.stats.decode_error(why.clone());
                if should_log(n) {
                    warn!("{why}; frame skipped ({n} so far)");
                }
            };
            if meta.flags.contains(BufFlags::ERROR) || used == 0 {
                skip(format!(
                    "{} frame #{}: the driver marked it corrupt or empty ({} bytes)",
                    self.device, meta.sequence, used
                ));
                continue;
            }
            let data = &buf[..used];
            let started = std::time::Instant::now();
            let image = match self.granted {
                PixelFormat::Mjpeg => {
                    let name = format!("{} frame #{}", self.device, meta.sequence);
                    decode_mjpeg_frame(data, &name, &self.limits).map_err(|e| e.to_string())
                }
                PixelFormat::Yuyv => yuyv_to_rgb(data, self.width, self.height, self.stride)
                    .map_err(|e| format!("{} frame #{}: {e}", self.device, meta.sequence)),
            };
            self.stats.decoded(started.elapsed());
            match image {
                Ok(image) => {
                    let frame = Frame {
                        seq: self.seq,
                        captured,
                        unix_ms,
                        image,
                        source: self.device.clone(),
                    };
                    self.seq += 1;
                    return Ok(Some(frame));
                }
                Err(why) => skip(why),
            }
        }
    }

    fn describe(&self) -> String {
        format!("v4l2 {} {}", self.device, self.negotiated)
    }

    fn stats(&self) -> Arc<SourceStats> {
        self.stats.clone()
    }
}

impl Drop for V4l2Camera {
    /// `v4l`'s stream stops capture in its destructor and panics if that fails with anything
    /// but ENODEV; after a USB error it can fail with EIO. A panic while dropping a lost
    /// camera would kill the capture thread exactly when it should reconnect, so the stream is
    /// dropped here under `catch_unwind` (the mappings and the descriptor are still released:
    /// field destructors run during unwinding).
    fn drop(&mut self) {
        if let Some(stream) = self.stream.take() {
            if catch_unwind(AssertUnwindSafe(move || drop(stream))).is_err() {
                warn!(
                    "{}: stopping the stream failed while closing the camera",
                    self.device
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(device: &str) -> CameraSettings {
        CameraSettings {
            device: device.into(),
            width: 640,
            height: 480,
            fps: 15,
            format: PixelFormat::Mjpeg,
        }
    }

    fn open_err(device: &str) -> SourceError {
        match V4l2Camera::open(
            &settings(device),
            DecodeLimits::default(),
            SourceStats::new(),
            StopSignal::new(),
        ) {
            Ok(_) => panic!("{device} opened as a camera"),
            Err(e) => e,
        }
    }

    #[test]
    fn a_missing_device_says_to_plug_the_camera_in() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("video0");
        let dev = path.display().to_string();
        let e = open_err(&dev);
        assert!(e.is_retryable());
        assert_eq!(
            e.to_string(),
            format!(
                "{dev}: no such device: is the camera plugged in? \
                 `v4l2-ctl --list-devices` lists cameras"
            )
        );
        // The real default path, absent on machines without a camera.
        if !std::path::Path::new("/dev/video0").exists() {
            assert!(open_err("/dev/video0")
                .to_string()
                .starts_with("/dev/video0: no such device: is the camera plugged in?"));
        }
    }

    /// Under qemu-user (the ARM tests, cross/README.md) no V4L2 ioctl is emulated: each fails
    /// with ENOSYS where a kernel answers ENOTTY for a file or device that is not a camera, so
    /// the two tests of that answer cannot run there. Checked on /dev/null, like the test.
    fn v4l2_ioctls_not_emulated() -> bool {
        const ENOSYS: i32 = 38;
        let skip = Device::with_path("/dev/null")
            .and_then(|d| d.query_caps().map(|_| ()))
            .is_err_and(|e| e.raw_os_error() == Some(ENOSYS));
        if skip {
            eprintln!("skipped: VIDIOC_QUERYCAP gives ENOSYS (qemu-user emulates no V4L2 ioctl)");
        }
        skip
    }

    #[test]
    fn a_regular_file_is_not_a_camera() {
        if v4l2_ioctls_not_emulated() {
            return;
        }
        let file = tempfile::NamedTempFile::new().expect("temp file");
        let dev = file.path().display().to_string();
        let e = open_err(&dev);
        assert!(
            !e.is_retryable(),
            "retrying cannot turn a file into a camera"
        );
        let msg = e.to_string();
        assert!(
            msg.starts_with(&format!("{dev}: not a V4L2 video capture device")),
            "{msg}"
        );
        assert!(msg.contains("VIDIOC_QUERYCAP"), "{msg}");
        assert!(msg.contains("v4l2-ctl --list-devices"), "{msg}");
    }

    #[test]
    fn a_folder_and_a_character_device_are_not_cameras() {
        let dir = tempfile::tempdir().expect("temp dir");
        let e = open_err(&dir.path().display().to_string());
        assert!(e.to_string().contains("it is a folder"), "{e}");
        if v4l2_ioctls_not_emulated() {
            return;
        }
        let e = open_err("/dev/null");
        assert!(matches!(e, SourceError::NotACamera { .. }), "{e}");
    }

    #[test]
    fn streaming_errors_that_mean_unplugged_are_retryable_losses() {
        for code in [ENODEV, EIO, ENXIO, EPROTO, ESHUTDOWN] {
            let e = io_error(
                "/dev/video0",
                "VIDIOC_DQBUF",
                io::Error::from_raw_os_error(code),
            );
            assert!(matches!(e, SourceError::CameraLost { .. }), "{code}: {e}");
            assert!(e.is_retryable());
        }
        let e = io_error(
            "/dev/video0",
            "STREAMON",
            io::Error::from_raw_os_error(ENOSPC),
        );
        assert!(e.to_string().contains("not enough USB bandwidth"), "{e}");
        assert!(e.is_retryable());
        let e = open_error("/dev/video0", io::Error::from_raw_os_error(EBUSY));
        assert!(e
            .to_string()
            .contains("another program is using the camera"));
        let e = open_error("/dev/video0", io::Error::from_raw_os_error(EACCES));
        assert!(e.to_string().contains("`video` group"));
    }
}
