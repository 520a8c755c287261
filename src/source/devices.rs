//! `adaptd devices`: the cameras (V4L2) and microphones (ALSA) this machine has, with what
//! each can give and a config line that uses it, so nobody has to guess a device name.
//!
//! Cameras are the `/dev/video*` nodes that capture video (a UVC webcam also has a metadata
//! node, left out), with their stable `/dev/v4l/by-id/` name when udev made one: it survives
//! replugging into another port, `/dev/video0` does not.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::alsa::{capture_devices, CaptureDevice};

/// What `adaptd devices` prints.
#[derive(Debug, Clone, Serialize)]
pub struct Inventory {
    pub cameras: Vec<VideoDevice>,
    /// Why cameras could not be listed at all.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cameras_error: Option<String>,
    pub microphones: Vec<CaptureDevice>,
    /// Why microphones could not be listed at all (no libasound).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub microphones_error: Option<String>,
}

/// One V4L2 capture node.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VideoDevice {
    /// `/dev/videoN`.
    pub path: PathBuf,
    /// Its `/dev/v4l/by-id/...` link, the name to put in a config.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stable_path: Option<PathBuf>,
    pub card: String,
    pub driver: String,
    pub bus: String,
    pub formats: Vec<VideoFormat>,
    /// Why it could not be queried (busy, permission).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One pixel format of a camera.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VideoFormat {
    /// FourCC, e.g. `MJPG`, `YUYV`.
    pub fourcc: String,
    pub description: String,
    pub sizes: Vec<VideoSize>,
}

/// One frame size, with the highest frame rate the camera offers at it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VideoSize {
    pub width: u32,
    pub height: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_fps: Option<f64>,
}

/// Lists everything; never fails as a whole (each half says why it is empty).
pub fn inventory() -> Inventory {
    let (cameras, cameras_error) = match video_devices() {
        Ok(c) => (c, None),
        Err(e) => (Vec::new(), Some(e)),
    };
    let (microphones, microphones_error) = match capture_devices() {
        Ok(m) => (m, None),
        Err(e) => (Vec::new(), Some(e.to_string())),
    };
    Inventory {
        cameras,
        cameras_error,
        microphones,
        microphones_error,
    }
}

/// `/dev/video*` nodes in number order, each queried.
#[cfg(feature = "v4l2")]
fn video_devices() -> Result<Vec<VideoDevice>, String> {
    let mut nodes = video_nodes(Path::new("/dev")).map_err(|e| format!("cannot list /dev: {e}"))?;
    nodes.sort_by_key(|p| node_number(p));
    let links = by_id_links(Path::new("/dev/v4l/by-id"));
    let mut out = Vec::new();
    for path in nodes {
        if let Some(d) = query_video(&path, &links) {
            out.push(d);
        }
    }
    Ok(out)
}

#[cfg(not(feature = "v4l2"))]
fn video_devices() -> Result<Vec<VideoDevice>, String> {
    Err("this adaptd was built without V4L2 support (cargo feature `v4l2`)".into())
}

/// `dir`'s entries named `video<N>`.
#[cfg_attr(not(feature = "v4l2"), allow(dead_code))]
fn video_nodes(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name
            .strip_prefix("video")
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        {
            out.push(entry.path());
        }
    }
    Ok(out)
}

#[cfg_attr(not(feature = "v4l2"), allow(dead_code))]
fn node_number(p: &Path) -> u32 {
    p.file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_prefix("video"))
        .and_then(|n| n.parse().ok())
        .unwrap_or(u32::MAX)
}

/// (target, link) for every symlink in `dir`, targets canonicalised.
#[cfg_attr(not(feature = "v4l2"), allow(dead_code))]
fn by_id_links(dir: &Path) -> Vec<(PathBuf, PathBuf)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut links: Vec<(PathBuf, PathBuf)> = entries
        .flatten()
        .filter_map(|e| std::fs::canonicalize(e.path()).ok().map(|t| (t, e.path())))
        .collect();
    links.sort();
    links
}

/// A capture node's description; `None` for nodes that do not capture video (metadata,
/// output, codec nodes).
#[cfg(feature = "v4l2")]
fn query_video(path: &Path, links: &[(PathBuf, PathBuf)]) -> Option<VideoDevice> {
    use v4l::capability::Flags;
    use v4l::video::Capture;

    let canonical = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_owned());
    let stable_path = links
        .iter()
        .find(|(target, _)| *target == canonical)
        .map(|(_, link)| link.clone());
    let mut d = VideoDevice {
        path: path.to_owned(),
        stable_path,
        card: String::new(),
        driver: String::new(),
        bus: String::new(),
        formats: Vec::new(),
        error: None,
    };
    let dev = match v4l::Device::with_path(path) {
        Ok(dev) => dev,
        Err(e) => {
            d.error = Some(format!(
                "cannot open ({e}); the user needs to be in the video group"
            ));
            return Some(d);
        }
    };
    let caps = match dev.query_caps() {
        Ok(c) => c,
        Err(e) => {
            d.error = Some(format!("not a V4L2 device ({e})"));
            return Some(d);
        }
    };
    if !caps.capabilities.contains(Flags::VIDEO_CAPTURE) {
        return None;
    }
    d.card = caps.card;
    d.driver = caps.driver;
    d.bus = caps.bus;
    let formats = match dev.enum_formats() {
        Ok(f) => f,
        Err(e) => {
            d.error = Some(format!("cannot list its formats ({e})"));
            return Some(d);
        }
    };
    for f in formats {
        let mut sizes = Vec::new();
        for fs in dev.enum_framesizes(f.fourcc).unwrap_or_default() {
            let discrete: Vec<_> = match fs.size {
                v4l::framesize::FrameSizeEnum::Discrete(s) => vec![(s.width, s.height)],
                // A range: its largest size stands for it (listing every step is noise).
                v4l::framesize::FrameSizeEnum::Stepwise(s) => vec![(s.max_width, s.max_height)],
            };
            for (width, height) in discrete {
                let max_fps = dev
                    .enum_frameintervals(f.fourcc, width, height)
                    .unwrap_or_default()
                    .iter()
                    .filter_map(|i| match &i.interval {
                        v4l::frameinterval::FrameIntervalEnum::Discrete(fr) => (fr.numerator > 0)
                            .then(|| f64::from(fr.denominator) / f64::from(fr.numerator)),
                        v4l::frameinterval::FrameIntervalEnum::Stepwise(s) => (s.min.numerator > 0)
                            .then(|| f64::from(s.min.denominator) / f64::from(s.min.numerator)),
                    })
                    .fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.max(v))));
                sizes.push(VideoSize {
                    width,
                    height,
                    max_fps,
                });
            }
        }
        d.formats.push(VideoFormat {
            fourcc: String::from_utf8_lossy(&f.fourcc.repr).into_owned(),
            description: f.description,
            sizes,
        });
    }
    Some(d)
}

/// The inventory for people: each device, what it gives, and a config line for it.
pub fn render_text(inv: &Inventory) -> String {
    let mut s = String::from("Cameras (V4L2)\n");
    if let Some(e) = &inv.cameras_error {
        s.push_str(&format!("  {e}\n"));
    } else if inv.cameras.is_empty() {
        s.push_str(
            "  none: no /dev/video* capture device. Plug a USB webcam in; a Pi camera module \
             is read through rpicam-vid (kind = \"command\"), an IP camera over RTSP \
             (kind = \"rtsp\"): docs/configuration.md has a recipe for each.\n",
        );
    }
    for c in &inv.cameras {
        s.push_str(&format!("  {}", c.path.display()));
        if !c.card.is_empty() {
            s.push_str(&format!("  {} ({}, {})", c.card, c.driver, c.bus));
        }
        s.push('\n');
        if let Some(p) = &c.stable_path {
            s.push_str(&format!("    stable name: {}\n", p.display()));
        }
        if let Some(e) = &c.error {
            s.push_str(&format!("    {e}\n"));
        }
        for f in &c.formats {
            let sizes: Vec<String> = f
                .sizes
                .iter()
                .map(|z| match z.max_fps {
                    Some(fps) => format!("{}x{} @ {}", z.width, z.height, round_fps(fps)),
                    None => format!("{}x{}", z.width, z.height),
                })
                .collect();
            s.push_str(&format!(
                "    {} ({}): {}\n",
                f.fourcc,
                f.description,
                if sizes.is_empty() {
                    "sizes not listed".into()
                } else {
                    sizes.join(", ")
                }
            ));
        }
        if let Some(block) = camera_config(c) {
            s.push_str("    config:\n");
            for line in block.lines() {
                s.push_str(&format!("      {line}\n"));
            }
        }
    }
    s.push_str("\nMicrophones (ALSA capture)\n");
    if let Some(e) = &inv.microphones_error {
        s.push_str(&format!("  {e}\n"));
    } else if inv.microphones.is_empty() {
        s.push_str("  none: ALSA lists no capture device; plug a USB microphone in\n");
    }
    let width = inv
        .microphones
        .iter()
        .map(|m| m.name.len())
        .max()
        .unwrap_or(0);
    for m in &inv.microphones {
        s.push_str(&format!("  {:width$}  {}", m.name, m.description));
        if let Some(c) = &m.capabilities {
            s.push_str(&format!(
                " [{}; {}; {}]",
                c.formats.join(" "),
                range(c.rate_min, c.rate_max, "Hz"),
                range(c.channels_min, c.channels_max, "ch"),
            ));
        }
        if let Some(e) = &m.probe_error {
            s.push_str(&format!(" [{e}]"));
        }
        s.push('\n');
    }
    if let Some(m) = pick_microphone(&inv.microphones) {
        s.push_str(&format!(
            "  config:\n    [[microphones]]\n    name = \"mic\"\n    source = {{ kind = \"alsa\", \
             device = \"{}\" }}\n",
            m.name
        ));
    }
    s
}

fn round_fps(fps: f64) -> String {
    if (fps - fps.round()).abs() < 0.01 {
        format!("{} fps", fps.round())
    } else {
        format!("{fps:.2} fps")
    }
}

fn range(lo: u32, hi: u32, unit: &str) -> String {
    if lo == hi {
        format!("{lo} {unit}")
    } else {
        format!("{lo}-{hi} {unit}")
    }
}

/// A `[[cameras]]` entry (TOML) for the camera's best MJPEG (else YUYV) size up to 1280 wide.
fn camera_config(c: &VideoDevice) -> Option<String> {
    let (format, f) = c
        .formats
        .iter()
        .find(|f| f.fourcc == "MJPG")
        .map(|f| ("mjpeg", f))
        .or_else(|| {
            c.formats
                .iter()
                .find(|f| f.fourcc == "YUYV")
                .map(|f| ("yuyv", f))
        })?;
    let size = f
        .sizes
        .iter()
        .filter(|z| z.width <= 1280)
        .max_by_key(|z| z.width * z.height)
        .or_else(|| f.sizes.first())?;
    let device = c.stable_path.as_ref().unwrap_or(&c.path);
    Some(format!(
        "[[cameras]]\nname = \"cam\"\nsource = {{ kind = \"v4l2\", device = \"{}\", width = {}, \
         height = {}, format = \"{format}\" }}",
        device.display(),
        size.width,
        size.height
    ))
}

/// The device to suggest: a converting `plughw:` one (any rate, any channel count), else
/// `default`, else the first that is not ALSA's `null` (which captures silence).
fn pick_microphone(list: &[CaptureDevice]) -> Option<&CaptureDevice> {
    list.iter()
        .find(|m| m.name.starts_with("plughw:"))
        .or_else(|| list.iter().find(|m| m.name == "default"))
        .or_else(|| list.iter().find(|m| m.name != "null"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn webcam() -> VideoDevice {
        VideoDevice {
            path: "/dev/video0".into(),
            stable_path: Some("/dev/v4l/by-id/usb-Cam-video-index0".into()),
            card: "USB Camera".into(),
            driver: "uvcvideo".into(),
            bus: "usb-0000:01:00.0-1".into(),
            formats: vec![
                VideoFormat {
                    fourcc: "YUYV".into(),
                    description: "YUYV 4:2:2".into(),
                    sizes: vec![VideoSize {
                        width: 640,
                        height: 480,
                        max_fps: Some(30.0),
                    }],
                },
                VideoFormat {
                    fourcc: "MJPG".into(),
                    description: "Motion-JPEG".into(),
                    sizes: vec![
                        VideoSize {
                            width: 1920,
                            height: 1080,
                            max_fps: Some(30.0),
                        },
                        VideoSize {
                            width: 1280,
                            height: 720,
                            max_fps: Some(29.97),
                        },
                    ],
                },
            ],
            error: None,
        }
    }

    #[test]
    fn a_camera_gets_its_stable_name_formats_and_a_config_line() {
        let inv = Inventory {
            cameras: vec![webcam()],
            cameras_error: None,
            microphones: Vec::new(),
            microphones_error: None,
        };
        let t = render_text(&inv);
        assert!(t.contains("/dev/video0  USB Camera (uvcvideo"), "{t}");
        assert!(
            t.contains("MJPG (Motion-JPEG): 1920x1080 @ 30 fps, 1280x720 @ 29.97 fps"),
            "{t}"
        );
        // MJPEG preferred, at most 1280 wide, by its stable name.
        assert!(
            t.contains(
                "device = \"/dev/v4l/by-id/usb-Cam-video-index0\", width = 1280, height = 720, \
                 format = \"mjpeg\""
            ),
            "{t}"
        );
        assert!(t.contains("ALSA lists no capture device"), "{t}");
    }

    #[test]
    fn the_suggested_camera_entry_is_a_valid_camera() {
        let block = camera_config(&webcam()).expect("an entry");
        #[derive(serde::Deserialize)]
        struct Doc {
            cameras: Vec<crate::source::CameraConfig>,
        }
        let d: Doc = toml::from_str(&block).expect("parses");
        assert_eq!(d.cameras.len(), 1);
        assert!(d.cameras[0].source.validate().is_empty());
    }

    #[test]
    fn video_nodes_are_the_numbered_ones_in_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        for n in ["video10", "video2", "videox", "video", "vbi0"] {
            std::fs::write(dir.path().join(n), b"").expect("write");
        }
        let mut nodes = video_nodes(dir.path()).expect("list");
        nodes.sort_by_key(|p| node_number(p));
        let names: Vec<_> = nodes
            .iter()
            .filter_map(|p| p.file_name()?.to_str().map(String::from))
            .collect();
        assert_eq!(names, ["video2", "video10"]);
    }
}
