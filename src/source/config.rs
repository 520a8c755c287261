//! The `[source]` table of the configuration file.
//!
//! ```toml
//! [source]
//! kind = "v4l2"            # or "dir", "mjpeg"
//! device = "/dev/video0"
//! width = 640
//! height = 480
//! fps = 15
//! format = "mjpeg"         # or "yuyv"
//! ```
//!
//! A microphone (with an audio model such as `resemblyzer-ge2e`):
//!
//! ```toml
//! [source]
//! kind = "audio"
//! path = "-"               # arecord -f S16_LE -r 16000 -c 1 | adaptd run ...
//! sample_rate = 16000      # of the raw PCM; a WAV header in the stream overrides both
//! channels = 1
//! ```
//!
//! A microphone on a sound card (ALSA):
//!
//! ```toml
//! [source]
//! kind = "alsa"
//! device = "plughw:CARD=Device,DEV=0"   # `adaptd devices` lists them; default "default"
//! ```
//!
//! One enum tagged by `kind`, so each kind accepts exactly its own keys: `fps_limit` under
//! `kind = "v4l2"` is an error, not silently ignored (`deny_unknown_fields`).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Where frames come from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, tag = "kind", rename_all = "kebab-case")]
pub enum SourceConfig {
    /// Replays the JPEG and PNG files of a folder in name order: for testing a model and a
    /// configuration on recorded pictures before going near a camera.
    Dir {
        path: PathBuf,
        /// Frames per second delivered.
        #[serde(default = "default_dir_fps")]
        fps: f64,
        /// Start again from the first file after the last (TOML key `loop`, a Rust keyword).
        #[serde(rename = "loop", default = "default_true")]
        repeat: bool,
    },
    /// Reads concatenated JPEGs from a stream: `-` for standard input, or a FIFO or file path.
    Mjpeg {
        path: PathBuf,
        /// Upper bound on frames per second; extra frames from a pipe are dropped before
        /// decoding (saving the CPU), a regular file is replayed at this rate.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        fps_limit: Option<f64>,
    },
    /// A V4L2 camera (USB/UVC webcams).
    V4l2 {
        #[serde(default = "default_device")]
        device: String,
        #[serde(default = "default_width")]
        width: u32,
        #[serde(default = "default_height")]
        height: u32,
        #[serde(default = "default_camera_fps")]
        fps: u32,
        #[serde(default)]
        format: PixelFormat,
    },
    /// An IP camera over RTSP, H.264 read and decoded in the binary (no ffmpeg): reconnects
    /// with backoff whatever goes wrong, and says why in `state`.
    Rtsp {
        /// `rtsp://[user[:password]@]host[:port]/path`.
        url: String,
        /// RTP over the RTSP connection (`tcp`, works through NAT and loses nothing) or `udp`.
        #[serde(default)]
        transport: RtspTransport,
        /// A file whose first line is the password, so the config holds none; the URL then
        /// names only the user.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        password_file: Option<PathBuf>,
        /// Which frames are decoded: `all` (every frame; the camera's `fps` cap still
        /// converts only the frames it takes), or `keyframes` for weak boards.
        #[serde(default)]
        decode: DecodePolicy,
    },
    /// A camera program adaptd starts and supervises (restarted with backoff when it exits,
    /// stopped with adaptd) that writes MJPEG to its stdout: `rpicam-vid`, ffmpeg, GStreamer.
    Command {
        /// The program and its arguments (no shell).
        argv: Vec<String>,
        /// Upper bound on frames per second; extra frames are dropped before decoding.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        fps_limit: Option<f64>,
    },
    /// Live audio: signed 16-bit little-endian PCM (optionally behind a WAV header) from
    /// standard input (`-`), a FIFO or a file, cut into utterances by the voice gate. For
    /// audio models only (the manifest's `kind = "audio"`).
    Audio {
        path: PathBuf,
        /// Rate of raw PCM, Hz (resampled to the model's rate).
        #[serde(default = "default_audio_rate")]
        sample_rate: u32,
        /// Interleaved channels of raw PCM (mixed down to mono).
        #[serde(default = "default_audio_channels")]
        channels: u16,
    },
    /// A microphone on a sound card, through ALSA (its library is loaded at run time):
    /// reopened with backoff while it is missing or after it is unplugged. For audio models
    /// only.
    Alsa {
        /// An ALSA PCM name: `default`, `hw:1,0`, `plughw:CARD=Device,DEV=0`, or one an
        /// asoundrc defines; `adaptd devices` lists them.
        #[serde(default = "default_alsa_device")]
        device: String,
        /// Rate asked of the device, Hz; a device that cannot give it gives its nearest, and
        /// adaptd resamples to the model's rate either way.
        #[serde(default = "default_audio_rate")]
        sample_rate: u32,
        /// Channels asked of the device (mixed down to mono).
        #[serde(default = "default_audio_channels")]
        channels: u16,
    },
}

/// How RTP packets travel from an RTSP camera.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RtspTransport {
    /// Interleaved on the RTSP TCP connection: through NAT and firewalls, nothing lost.
    #[default]
    Tcp,
    /// Separate UDP ports: lower latency on a clean LAN, but lost packets are lost frames.
    Udp,
}

/// Which H.264 frames an RTSP source decodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DecodePolicy {
    /// Every frame: P-frames need the frames before them, so this is what any rate above the
    /// camera's keyframe rate takes.
    #[default]
    All,
    /// Key (IDR) frames only: a fraction of the decode cost, at the camera's keyframe
    /// interval (often 1 to 4 s); for boards that cannot decode the whole stream.
    Keyframes,
}

/// What to ask the camera for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PixelFormat {
    /// Compressed: full resolution and frame rate over USB 2, costs a JPEG decode per frame.
    #[default]
    Mjpeg,
    /// Uncompressed 4:2:2: cheap to convert, but USB 2 bandwidth limits it to about 640x480
    /// at 30 fps; the fallback for cameras whose MJPEG is broken.
    Yuyv,
}

impl PixelFormat {
    /// The V4L2 FourCC.
    pub fn fourcc(self) -> [u8; 4] {
        match self {
            PixelFormat::Mjpeg => *b"MJPG",
            PixelFormat::Yuyv => *b"YUYV",
        }
    }
}

fn default_audio_rate() -> u32 {
    16_000
}
fn default_alsa_device() -> String {
    "default".into()
}

/// The rate and channel rules every audio source shares.
fn audio_format(sample_rate: u32, channels: u16, p: &mut Vec<String>) {
    let (lo, hi) = (
        crate::audio::resample::MIN_RATE,
        crate::audio::resample::MAX_RATE,
    );
    if !(lo..=hi).contains(&sample_rate) {
        p.push(format!(
            "[source].sample_rate = {sample_rate} is out of range; allowed: {lo} to {hi} Hz"
        ));
    }
    let max = crate::audio::pcm::MAX_CHANNELS;
    if !(1..=max).contains(&channels) {
        p.push(format!(
            "[source].channels = {channels} is out of range; allowed: 1 to {max}"
        ));
    }
}
fn default_audio_channels() -> u16 {
    1
}
fn default_dir_fps() -> f64 {
    2.0
}
fn default_true() -> bool {
    true
}
fn default_device() -> String {
    "/dev/video0".into()
}
fn default_width() -> u32 {
    640
}
fn default_height() -> u32 {
    480
}
fn default_camera_fps() -> u32 {
    15
}

impl Default for SourceConfig {
    /// The first camera with the defaults of each key: what a board with one USB webcam needs.
    fn default() -> Self {
        SourceConfig::V4l2 {
            device: default_device(),
            width: default_width(),
            height: default_height(),
            fps: default_camera_fps(),
            format: PixelFormat::default(),
        }
    }
}

/// Highest rate accepted for replay and rate limits: above any camera these boards run, and a
/// guard against `fps = 1e9` turning pacing into a busy loop.
pub const MAX_FPS: f64 = 240.0;
/// Largest camera side accepted (8K); the decode limits apply on top.
pub const MAX_SIDE: u32 = 8192;

impl SourceConfig {
    /// The value of `kind` for this variant.
    pub fn kind(&self) -> &'static str {
        match self {
            SourceConfig::Dir { .. } => "dir",
            SourceConfig::Mjpeg { .. } => "mjpeg",
            SourceConfig::V4l2 { .. } => "v4l2",
            SourceConfig::Rtsp { .. } => "rtsp",
            SourceConfig::Command { .. } => "command",
            SourceConfig::Audio { .. } => "audio",
            SourceConfig::Alsa { .. } => "alsa",
        }
    }

    /// True for sources of sound rather than pictures.
    pub fn is_audio(&self) -> bool {
        matches!(self, SourceConfig::Audio { .. } | SourceConfig::Alsa { .. })
    }

    /// Range and cross-field rules; each message names the key and what is allowed. Empty when
    /// the configuration is usable. Does not touch the file system or devices (a camera may be
    /// plugged in later; opening reports that).
    pub fn validate(&self) -> Vec<String> {
        let mut p = Vec::new();
        let fps_range = |key: &str, v: f64, p: &mut Vec<String>| {
            if !(v.is_finite() && v > 0.0 && v <= MAX_FPS) {
                p.push(format!(
                    "[source].{key} = {v} is out of range; allowed: above 0 up to {MAX_FPS}"
                ));
            }
        };
        match self {
            SourceConfig::Dir { path, fps, .. } => {
                if path.as_os_str().is_empty() {
                    p.push(
                        "[source].path is empty; give the folder of JPEG/PNG files to replay"
                            .into(),
                    );
                }
                fps_range("fps", *fps, &mut p);
            }
            SourceConfig::Mjpeg { path, fps_limit } => {
                if path.as_os_str().is_empty() {
                    p.push(
                        "[source].path is empty; allowed: \"-\" (standard input), a FIFO or a \
                         file path"
                            .into(),
                    );
                }
                if let Some(v) = fps_limit {
                    fps_range("fps_limit", *v, &mut p);
                }
            }
            SourceConfig::Command { argv, fps_limit } => {
                if argv.first().is_none_or(|p| p.trim().is_empty()) {
                    p.push(
                        "[source].argv is empty; give the program and its arguments, e.g. \
                         [\"rpicam-vid\", \"-t\", \"0\", \"--codec\", \"mjpeg\", \"-o\", \"-\"]"
                            .into(),
                    );
                }
                if let Some(v) = fps_limit {
                    fps_range("fps_limit", *v, &mut p);
                }
            }
            SourceConfig::Rtsp {
                url, password_file, ..
            } => {
                if let Err(e) =
                    super::rtsp::address::RtspAddress::check(url, password_file.is_some())
                {
                    p.push(e.to_string());
                }
                if !cfg!(feature = "rtsp") {
                    p.push(
                        "[source].kind = \"rtsp\": this adaptd was built without RTSP support \
                         (cargo feature `rtsp`); rebuild with it, or feed the camera through \
                         kind = \"mjpeg\" from ffmpeg"
                            .into(),
                    );
                }
            }
            SourceConfig::Audio {
                path,
                sample_rate,
                channels,
            } => {
                if path.as_os_str().is_empty() {
                    p.push(
                        "[source].path is empty; allowed: \"-\" (standard input), a FIFO or a \
                         file path"
                            .into(),
                    );
                }
                audio_format(*sample_rate, *channels, &mut p);
            }
            SourceConfig::Alsa {
                device,
                sample_rate,
                channels,
            } => {
                if device.trim().is_empty() || device.contains('\0') {
                    p.push(format!(
                        "[source].device = {device:?} is not an ALSA device name; allowed: \
                         \"default\", \"hw:1,0\", \"plughw:CARD=Device,DEV=0\" (`adaptd devices` \
                         lists them)"
                    ));
                }
                audio_format(*sample_rate, *channels, &mut p);
            }
            SourceConfig::V4l2 {
                device,
                width,
                height,
                fps,
                format,
            } => {
                if device.trim().is_empty() || device.contains('\0') {
                    p.push(format!(
                        "[source].device = {device:?} is not a device path; allowed: a path \
                         such as \"/dev/video0\" or \"/dev/v4l/by-id/...\""
                    ));
                }
                for (key, v) in [("width", *width), ("height", *height)] {
                    if !(1..=MAX_SIDE).contains(&v) {
                        p.push(format!(
                            "[source].{key} = {v} is out of range; allowed: 1 to {MAX_SIDE}"
                        ));
                    }
                }
                if *format == PixelFormat::Yuyv && !width.is_multiple_of(2) {
                    p.push(format!(
                        "[source].width = {width} must be even with format = \"yuyv\" (two \
                         pixels share their colour)"
                    ));
                }
                if !(1..=MAX_FPS as u32).contains(fps) {
                    p.push(format!(
                        "[source].fps = {fps} is out of range; allowed: 1 to {MAX_FPS}"
                    ));
                }
                if !cfg!(feature = "v4l2") {
                    p.push(
                        "[source].kind = \"v4l2\": this adaptd was built without V4L2 support; \
                         use kind = \"mjpeg\" with a pipe from the camera, or rebuild with \
                         `--features v4l2`"
                            .into(),
                    );
                }
            }
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Doc {
        source: SourceConfig,
    }

    fn parse(text: &str) -> Result<SourceConfig, String> {
        toml::from_str::<Doc>(text)
            .map(|d| d.source)
            .map_err(|e| e.message().to_string())
    }

    #[test]
    fn defaults_per_kind() {
        assert_eq!(
            parse("[source]\nkind = \"dir\"\npath = \"/data/frames\""),
            Ok(SourceConfig::Dir {
                path: "/data/frames".into(),
                fps: 2.0,
                repeat: true
            })
        );
        assert_eq!(
            parse("[source]\nkind = \"mjpeg\"\npath = \"-\""),
            Ok(SourceConfig::Mjpeg {
                path: "-".into(),
                fps_limit: None
            })
        );
        assert_eq!(
            parse("[source]\nkind = \"v4l2\""),
            Ok(SourceConfig::default())
        );
        assert_eq!(
            parse(
                "[source]\nkind = \"v4l2\"\ndevice = \"/dev/video2\"\nwidth = 1280\n\
                 height = 720\nfps = 30\nformat = \"yuyv\""
            ),
            Ok(SourceConfig::V4l2 {
                device: "/dev/video2".into(),
                width: 1280,
                height: 720,
                fps: 30,
                format: PixelFormat::Yuyv
            })
        );
        assert_eq!(
            parse("[source]\nkind = \"dir\"\npath = \"x\"\nloop = false\nfps = 0.5"),
            Ok(SourceConfig::Dir {
                path: "x".into(),
                fps: 0.5,
                repeat: false
            })
        );
    }

    #[test]
    fn unknown_keys_kinds_and_values_are_errors() {
        let e = parse("[source]\nkind = \"v4l2\"\nfps_limit = 5.0").unwrap_err();
        assert!(e.contains("fps_limit"), "{e}");
        let e = parse("[source]\nkind = \"hls\"\npath = \"x\"").unwrap_err();
        assert!(
            e.contains("hls") && e.contains("v4l2") && e.contains("rtsp"),
            "{e}"
        );
        let e = parse("[source]\nkind = \"rtsp\"\npath = \"x\"").unwrap_err();
        assert!(e.contains("path") && e.contains("url"), "{e}");
        let e = parse("[source]\nkind = \"v4l2\"\nformat = \"h264\"").unwrap_err();
        assert!(e.contains("h264") && e.contains("yuyv"), "{e}");
        let e = parse("[source]\npath = \"x\"").unwrap_err();
        assert!(e.contains("kind"), "{e}");
    }

    #[test]
    fn round_trips_through_toml() {
        for cfg in [
            SourceConfig::default(),
            SourceConfig::Dir {
                path: "/x".into(),
                fps: 3.0,
                repeat: false,
            },
            SourceConfig::Mjpeg {
                path: "-".into(),
                fps_limit: Some(5.0),
            },
        ] {
            let text = toml::to_string(&cfg).expect("serialisable");
            let back: SourceConfig = toml::from_str(&text).expect("parses back");
            assert_eq!(back, cfg, "{text}");
        }
    }

    #[test]
    fn validate_names_the_key_and_the_allowed_range() {
        let ok = SourceConfig::Dir {
            path: "x".into(),
            fps: 2.0,
            repeat: true,
        };
        assert!(ok.validate().is_empty());
        let bad = SourceConfig::Dir {
            path: "".into(),
            fps: 0.0,
            repeat: true,
        };
        let p = bad.validate();
        assert_eq!(p.len(), 2, "{p:?}");
        assert!(p[0].starts_with("[source].path is empty"));
        assert!(p[1].contains("[source].fps = 0") && p[1].contains("allowed"));
        let p = SourceConfig::Mjpeg {
            path: "-".into(),
            fps_limit: Some(f64::NAN),
        }
        .validate();
        assert!(
            p.len() == 1 && p[0].starts_with("[source].fps_limit = NaN"),
            "{p:?}"
        );
        let p = SourceConfig::V4l2 {
            device: "".into(),
            width: 641,
            height: 0,
            fps: 0,
            format: PixelFormat::Yuyv,
        }
        .validate();
        let joined = p.join("\n");
        for want in [
            "[source].device",
            "[source].width = 641 must be even",
            "[source].height = 0 is out of range",
            "[source].fps = 0 is out of range",
        ] {
            assert!(joined.contains(want), "missing {want:?} in {joined}");
        }
        let v4l2_ok = SourceConfig::default().validate();
        if cfg!(feature = "v4l2") {
            assert!(v4l2_ok.is_empty(), "{v4l2_ok:?}");
        } else {
            assert!(v4l2_ok[0].contains("built without V4L2 support"));
        }
    }

    #[test]
    fn an_alsa_microphone_defaults_to_the_default_device_at_16k_mono() {
        let cfg = parse("[source]\nkind = \"alsa\"").expect("parses");
        assert_eq!(
            cfg,
            SourceConfig::Alsa {
                device: "default".into(),
                sample_rate: 16_000,
                channels: 1
            }
        );
        assert!(cfg.is_audio() && cfg.validate().is_empty());
        let e = parse("[source]\nkind = \"alsa\"\npath = \"-\"").unwrap_err();
        assert!(e.contains("path") && e.contains("device"), "{e}");
        let p = SourceConfig::Alsa {
            device: " ".into(),
            sample_rate: 1,
            channels: 0,
        }
        .validate()
        .join("\n");
        for want in [
            "[source].device = \" \" is not an ALSA device name",
            "[source].sample_rate = 1 is out of range",
            "[source].channels = 0 is out of range",
        ] {
            assert!(p.contains(want), "missing {want:?} in {p}");
        }
    }
}
