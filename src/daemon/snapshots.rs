//! Per-object snapshots on disk: `<state_dir>/snapshots/<camera>/<id>.jpg` and
//! `<id>-clean.jpg`.
//!
//! An event in Home Assistant or in `adaptd events show` says *that* a person or a car was
//! seen; the picture is what lets someone check it. Two files per tracked object:
//! - `<id>.jpg`: the object's best frame with its box outlined and captioned, drawn like the
//!   live `snapshot` image (the same [`draw_labelled_box`]), shrunk to
//!   [`SnapshotsConfig::max_side`] because it is also published retained on MQTT and shown
//!   in dashboards, where a 4K frame is only bytes to move;
//! - `<id>-clean.jpg`: the box cut from the full-resolution frame with a margin and nothing
//!   drawn on it, for a person labelling the object (the outline would hide its edges, and a
//!   caption could be mistaken for the truth) and for re-embedding.
//!
//! A better frame of the same object replaces both files; every write goes through
//! [`write_atomic`] so a power cut leaves the old picture or the new one, never half a JPEG.
//! Retention (`prune`) goes by age and then by the total size of the directory, and only ever
//! deletes `*.jpg` files in camera directories: the state dir is shared with other stores,
//! and a person may keep notes or copies next to the pictures.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use image::codecs::jpeg::JpegEncoder;
use image::{imageops, RgbImage};

use super::annotate::draw_labelled_box;
use crate::config::SnapshotsConfig;
use crate::durable::{clean_stale_temps, write_atomic};

/// Suffix of the clean crop's file name, after the object id.
const CLEAN_SUFFIX: &str = "-clean";
/// Longest object id or camera name accepted as a file name.
const MAX_NAME_LEN: usize = 64;

impl SnapshotsConfig {
    /// The margin actually used: an unvalidated config must not make a crop of the whole
    /// frame (or of nothing) out of a NaN or a negative number.
    fn margin(&self) -> f32 {
        if self.crop_margin.is_finite() {
            self.crop_margin.clamp(0.0, 1.0)
        } else {
            0.0
        }
    }

    /// How old a snapshot may get; a nonsensical `retain_days` deletes nothing by age rather
    /// than everything.
    fn max_age(&self) -> Duration {
        if self.retain_days.is_finite() && self.retain_days > 0.0 {
            Duration::try_from_secs_f64(self.retain_days * 86_400.0).unwrap_or(Duration::MAX)
        } else {
            Duration::MAX
        }
    }

    fn max_bytes(&self) -> u64 {
        self.max_mb.saturating_mul(1024 * 1024)
    }
}

/// Why a snapshot could not be written, listed or pruned; each message names the file or the
/// object and what to do.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error(
        "{path}: {what}: {source} (check that the state dir is writable and the disk is not full)"
    )]
    Io {
        path: PathBuf,
        what: &'static str,
        source: io::Error,
    },
    #[error(
        "snapshot {what} {name:?} is not a safe file name: use 1 to 64 of A-Z a-z 0-9 . _ -, \
         not starting with a dot{extra}; nothing was written"
    )]
    UnsafeName {
        what: &'static str,
        name: String,
        extra: &'static str,
    },
    #[error(
        "snapshot {camera}/{id}: the box {bbox:?} has no area inside the {width}x{height} frame, \
         so there is nothing to crop; nothing was written (is the box in this frame's pixels?)"
    )]
    EmptyBox {
        camera: String,
        id: String,
        bbox: [f32; 4],
        width: u32,
        height: u32,
    },
    #[error("{path}: encoding the JPEG: {source}; nothing was written for this file")]
    Encode {
        path: PathBuf,
        source: image::ImageError,
    },
    #[error("{path}: could not delete this old snapshot: {source}; fix its permissions or remove it by hand, pruning stops at it")]
    Remove { path: PathBuf, source: io::Error },
}

/// The snapshots directory of one daemon.
///
/// Holds no state besides its place and settings, so it can be shared between threads: the
/// files are the truth, and writes are atomic.
#[derive(Debug)]
pub struct SnapshotStore {
    dir: PathBuf,
    cfg: SnapshotsConfig,
}

/// One of our files, as found on disk.
struct SnapFile {
    path: PathBuf,
    camera: String,
    id: String,
    modified: SystemTime,
    len: u64,
}

impl SnapshotStore {
    /// The directory's place in a state dir.
    pub fn dir_in(state_dir: &Path) -> PathBuf {
        state_dir.join("snapshots")
    }

    /// Creates the dir (and clears stale temp files).
    ///
    /// Temp files left by a crash mid-write sit next to their targets, in the camera
    /// directories, so those are cleaned too.
    pub fn open(dir: &Path, cfg: SnapshotsConfig) -> Result<SnapshotStore, SnapshotError> {
        fs::create_dir_all(dir).map_err(io_err(dir, "creating the snapshots directory"))?;
        clean_stale_temps(dir).map_err(io_err(dir, "removing stale temporary files"))?;
        for camera in camera_dirs(dir)? {
            clean_stale_temps(&camera)
                .map_err(io_err(&camera, "removing stale temporary files"))?;
        }
        Ok(SnapshotStore {
            dir: dir.to_path_buf(),
            cfg,
        })
    }

    /// The snapshots directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The settings it was opened with.
    pub fn config(&self) -> &SnapshotsConfig {
        &self.cfg
    }

    /// Writes `<camera>/<id>.jpg` (the frame with `bbox` drawn and `caption`) and
    /// `<camera>/<id>-clean.jpg` (the crop), replacing earlier ones for the same id (a better
    /// frame of the same object). Returns the annotated JPEG bytes, for publishing.
    ///
    /// `id` and `camera` must be safe file names ([A-Za-z0-9._-], no leading dot, not empty,
    /// <= 64 chars; an id may not end in `-clean`, which would collide with another id's
    /// crop): anything else is an error, never a path outside the dir. `bbox` is in pixels of
    /// `frame`, `[x1, y1, x2, y2]`; it is clipped to the frame, and one with no area inside
    /// it is an error before anything is written. `known` picks the caption colour of an
    /// object the head recognised.
    pub fn save(
        &self,
        camera: &str,
        id: &str,
        frame: &RgbImage,
        bbox: [f32; 4],
        caption: &str,
        known: bool,
    ) -> Result<Vec<u8>, SnapshotError> {
        check_name("camera", camera)?;
        check_id(id)?;
        let (w, h) = frame.dimensions();
        let Some((cx, cy, cw, ch)) = crop_rect(bbox, w, h, self.cfg.margin()) else {
            return Err(SnapshotError::EmptyBox {
                camera: camera.to_owned(),
                id: id.to_owned(),
                bbox,
                width: w,
                height: h,
            });
        };
        let cam_dir = self.dir.join(camera);
        let annotated_path = cam_dir.join(format!("{id}.jpg"));
        let clean_path = cam_dir.join(format!("{id}{CLEAN_SUFFIX}.jpg"));

        // Both encoded before either is written, so a failure leaves the old pair intact.
        let crop = imageops::crop_imm(frame, cx, cy, cw, ch).to_image();
        let clean = self.jpeg(&crop, &clean_path)?;
        let (mut annotated, factor) = self.shrunk(frame);
        let scaled = [
            bbox[0] * factor.0,
            bbox[1] * factor.1,
            bbox[2] * factor.0,
            bbox[3] * factor.1,
        ];
        // Drawn after shrinking, so the outline keeps its thickness in the published image.
        draw_labelled_box(&mut annotated, scaled, caption, known);
        let annotated = self.jpeg(&annotated, &annotated_path)?;

        fs::create_dir_all(&cam_dir).map_err(io_err(&cam_dir, "creating the camera directory"))?;
        write_atomic(&clean_path, &clean).map_err(io_err(&clean_path, "writing the snapshot"))?;
        write_atomic(&annotated_path, &annotated)
            .map_err(io_err(&annotated_path, "writing the snapshot"))?;
        Ok(annotated)
    }

    /// Path of an existing snapshot (`clean` = the crop), None when absent or id/camera unsafe.
    pub fn path(&self, camera: &str, id: &str, clean: bool) -> Option<PathBuf> {
        Self::file_in(&self.dir, camera, id, clean)
    }

    /// [`SnapshotStore::path`] for readers that hold no store (the web page, beside the
    /// writer thread that owns it): `dir` is [`SnapshotStore::dir_in`] of the state dir.
    pub fn file_in(dir: &Path, camera: &str, id: &str, clean: bool) -> Option<PathBuf> {
        if check_name("camera", camera).is_err() || check_id(id).is_err() {
            return None;
        }
        let suffix = if clean { CLEAN_SUFFIX } else { "" };
        let p = dir.join(camera).join(format!("{id}{suffix}.jpg"));
        // symlink_metadata: a link planted in the dir is not ours to hand out.
        match fs::symlink_metadata(&p) {
            Ok(m) if m.is_file() => Some(p),
            _ => None,
        }
    }

    /// Deletes an object's two files (when a person drops its event); how many there were.
    pub fn remove_in(dir: &Path, camera: &str, id: &str) -> Result<usize, SnapshotError> {
        let files: Vec<(PathBuf, u64)> = [false, true]
            .into_iter()
            .filter_map(|clean| Self::file_in(dir, camera, id, clean))
            .map(|p| (p, 0))
            .collect();
        remove_all(&files)
    }

    /// Deletes snapshots older than retain_days (by mtime), then the oldest until the total is
    /// under max_mb. Returns how many files were removed. Never touches files that are not
    /// ours (only `*.jpg` in camera subdirs).
    ///
    /// An object's two files go together (its age is that of the newer one), so a picture is
    /// never left without its crop or the other way round. A file that cannot be deleted stops
    /// pruning with an error rather than making it delete newer snapshots to make up for it.
    pub fn prune(&self, now: SystemTime) -> Result<usize, SnapshotError> {
        #[derive(Default)]
        struct Object {
            files: Vec<(PathBuf, u64)>,
            newest: Option<SystemTime>,
            bytes: u64,
        }
        let mut objects: BTreeMap<(String, String), Object> = BTreeMap::new();
        for f in self.files()? {
            let o = objects.entry((f.camera, f.id)).or_default();
            o.newest = Some(o.newest.map_or(f.modified, |t| t.max(f.modified)));
            o.bytes = o.bytes.saturating_add(f.len);
            o.files.push((f.path, f.len));
        }
        let max_age = self.cfg.max_age();
        let is_old = |o: &Object| {
            o.newest
                .and_then(|t| now.duration_since(t).ok())
                .is_some_and(|age| age > max_age)
        };
        let mut removed = 0;
        let mut kept = Vec::new();
        for o in objects.into_values() {
            if is_old(&o) {
                removed += remove_all(&o.files)?;
            } else {
                kept.push(o);
            }
        }
        let mut total: u64 = kept.iter().map(|o| o.bytes).fold(0, u64::saturating_add);
        // Oldest first; the BTreeMap order (camera, id) breaks ties, and sort_by_key is stable.
        kept.sort_by_key(|o| o.newest);
        let limit = self.cfg.max_bytes();
        for o in &kept {
            if total <= limit {
                break;
            }
            removed += remove_all(&o.files)?;
            total = total.saturating_sub(o.bytes);
        }
        Ok(removed)
    }

    /// Total bytes of snapshot files.
    pub fn total_bytes(&self) -> Result<u64, SnapshotError> {
        Ok(self
            .files()?
            .iter()
            .map(|f| f.len)
            .fold(0, u64::saturating_add))
    }

    /// Our files: regular `*.jpg` files with a safe name in camera directories. Links are not
    /// followed, so pruning cannot reach outside the dir.
    fn files(&self) -> Result<Vec<SnapFile>, SnapshotError> {
        let mut out = Vec::new();
        for cam_dir in camera_dirs(&self.dir)? {
            let camera = file_name(&cam_dir);
            let entries = match fs::read_dir(&cam_dir) {
                Ok(e) => e,
                // Removed since it was listed.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io_err(&cam_dir, "listing snapshots")(e)),
            };
            for entry in entries {
                let entry = entry.map_err(io_err(&cam_dir, "listing snapshots"))?;
                let name = entry.file_name();
                let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(".jpg")) else {
                    continue;
                };
                if check_name("file", stem).is_err() {
                    continue;
                }
                let meta = match entry.metadata() {
                    Ok(m) => m,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(io_err(&entry.path(), "reading snapshot metadata")(e)),
                };
                if !meta.is_file() {
                    continue;
                }
                let id = stem.strip_suffix(CLEAN_SUFFIX).unwrap_or(stem);
                out.push(SnapFile {
                    path: entry.path(),
                    camera: camera.clone(),
                    id: id.to_owned(),
                    // A file system without mtimes: treat it as new rather than delete it.
                    modified: meta.modified().unwrap_or(SystemTime::now()),
                    len: meta.len(),
                });
            }
        }
        Ok(out)
    }

    /// `frame` with its longest side at most `max_side`, and the factors that map its
    /// pixels to the result's.
    fn shrunk(&self, frame: &RgbImage) -> (RgbImage, (f32, f32)) {
        let (w, h) = frame.dimensions();
        match self
            .cfg
            .max_side
            .and_then(|m| crate::vision::image_io::fit_within(frame, m))
        {
            Some(img) => {
                let (nw, nh) = img.dimensions();
                (img, (nw as f32 / w as f32, nh as f32 / h as f32))
            }
            None => (frame.clone(), (1.0, 1.0)),
        }
    }

    fn jpeg(&self, img: &RgbImage, path: &Path) -> Result<Vec<u8>, SnapshotError> {
        let mut out = Vec::new();
        JpegEncoder::new_with_quality(&mut out, self.cfg.quality.clamp(1, 100))
            .encode_image(img)
            .map_err(|source| SnapshotError::Encode {
                path: path.to_path_buf(),
                source,
            })?;
        Ok(out)
    }
}

/// The camera directories under `dir`: real directories (not links) with a safe name.
fn camera_dirs(dir: &Path) -> Result<Vec<PathBuf>, SnapshotError> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_err(dir, "listing the snapshots directory"))? {
        let entry = entry.map_err(io_err(dir, "listing the snapshots directory"))?;
        let safe = entry
            .file_name()
            .to_str()
            .is_some_and(|n| check_name("camera", n).is_ok());
        // DirEntry::file_type does not follow links.
        if safe && entry.file_type().is_ok_and(|t| t.is_dir()) {
            out.push(entry.path());
        }
    }
    Ok(out)
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Removes `files`, returning how many were there to remove.
fn remove_all(files: &[(PathBuf, u64)]) -> Result<usize, SnapshotError> {
    let mut n = 0;
    for (path, _) in files {
        match fs::remove_file(path) {
            Ok(()) => n += 1,
            // Removed by someone else meanwhile: the goal is reached.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(SnapshotError::Remove {
                    path: path.clone(),
                    source,
                })
            }
        }
    }
    Ok(n)
}

/// `name` can be used as one path component that stays inside its directory and is not
/// hidden: `[A-Za-z0-9._-]{1,64}`, not starting with a dot (so neither `.` nor `..`).
fn check_name(what: &'static str, name: &str) -> Result<(), SnapshotError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(SnapshotError::UnsafeName {
            what,
            name: name.to_owned(),
            extra: "",
        })
    }
}

/// An object id: a safe name that does not end in `-clean`, since `<id>-clean.jpg` is the
/// crop of `<id>` and must not be another object's picture.
fn check_id(id: &str) -> Result<(), SnapshotError> {
    check_name("id", id)?;
    if id.ends_with(CLEAN_SUFFIX) {
        return Err(SnapshotError::UnsafeName {
            what: "id",
            name: id.to_owned(),
            extra: ", not ending in -clean",
        });
    }
    Ok(())
}

/// The clean crop of `bbox` in a `w` x `h` frame, as `(x, y, width, height)`: the box clipped
/// to the frame (NaN and -inf count as 0, +inf as the far edge), grown by `margin` times its
/// size on each side, clipped again and rounded outwards to whole pixels. None when the box
/// has no area inside the frame.
fn crop_rect(bbox: [f32; 4], w: u32, h: u32, margin: f32) -> Option<(u32, u32, u32, u32)> {
    let (fw, fh) = (w as f32, h as f32);
    // f32::max returns the other operand for NaN.
    let clip = |v: f32, hi: f32| v.max(0.0).min(hi);
    let (x1, y1) = (clip(bbox[0], fw), clip(bbox[1], fh));
    let (x2, y2) = (clip(bbox[2], fw), clip(bbox[3], fh));
    if !(x2 > x1 && y2 > y1) {
        return None;
    }
    let (mx, my) = ((x2 - x1) * margin, (y2 - y1) * margin);
    let cx1 = (x1 - mx).max(0.0).floor() as u32;
    let cy1 = (y1 - my).max(0.0).floor() as u32;
    let cx2 = ((x2 + mx).min(fw).ceil() as u32).min(w);
    let cy2 = ((y2 + my).min(fh).ceil() as u32).min(h);
    (cx2 > cx1 && cy2 > cy1).then(|| (cx1, cy1, cx2 - cx1, cy2 - cy1))
}

fn io_err<'a>(path: &'a Path, what: &'static str) -> impl FnOnce(io::Error) -> SnapshotError + 'a {
    move |source| SnapshotError::Io {
        path: path.to_path_buf(),
        what,
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::annotate::{KNOWN, OTHER};
    use image::{GenericImageView, Rgb};

    const GREY: Rgb<u8> = Rgb([40, 40, 40]);

    fn store(dir: &Path, cfg: SnapshotsConfig) -> SnapshotStore {
        SnapshotStore::open(dir, cfg).expect("open")
    }

    fn frame(w: u32, h: u32) -> RgbImage {
        RgbImage::from_pixel(w, h, GREY)
    }

    fn decode(path: &Path) -> RgbImage {
        image::open(path).expect("decodable JPEG").to_rgb8()
    }

    /// All files under `dir`, recursively, relative to it.
    fn tree(dir: &Path) -> Vec<String> {
        fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
            for e in fs::read_dir(dir).expect("read_dir").flatten() {
                let p = e.path();
                if e.file_type().expect("type").is_dir() {
                    walk(root, &p, out);
                } else {
                    out.push(p.strip_prefix(root).expect("prefix").display().to_string());
                }
            }
        }
        let mut out = Vec::new();
        walk(dir, dir, &mut out);
        out.sort();
        out
    }

    fn set_age(path: &Path, age: Duration) {
        let f = fs::File::options().write(true).open(path).expect("open");
        f.set_modified(SystemTime::now() - age)
            .expect("set_modified");
    }

    fn near(p: Rgb<u8>, c: Rgb<u8>, tol: i32) -> bool {
        p.0.iter()
            .zip(c.0)
            .all(|(&a, b)| (i32::from(a) - i32::from(b)).abs() <= tol)
    }

    const DAY: Duration = Duration::from_secs(86_400);

    #[test]
    fn save_writes_the_annotated_frame_and_the_clean_crop() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let s = store(tmp.path(), SnapshotsConfig::default());
        // 960 px wide: captions and outlines are 2 px, enough to survive JPEG.
        let bytes = s
            .save(
                "front",
                "1700000000.000-abcdef",
                &frame(960, 480),
                [100.0, 100.0, 400.0, 300.0],
                "alice 0.91",
                true,
            )
            .expect("save");
        let annotated = s
            .path("front", "1700000000.000-abcdef", false)
            .expect("annotated");
        let clean = s
            .path("front", "1700000000.000-abcdef", true)
            .expect("clean");
        assert_eq!(
            annotated,
            tmp.path().join("front/1700000000.000-abcdef.jpg")
        );
        assert_eq!(
            clean,
            tmp.path().join("front/1700000000.000-abcdef-clean.jpg")
        );
        assert_eq!(fs::read(&annotated).expect("read"), bytes);

        let a = decode(&annotated);
        assert_eq!(a.dimensions(), (960, 480));
        // The left edge of the box is the KNOWN colour; the inside keeps the frame.
        assert!(
            near(*a.get_pixel(100, 200), KNOWN, 40),
            "{:?}",
            a.get_pixel(100, 200)
        );
        assert!(
            near(*a.get_pixel(250, 200), GREY, 8),
            "{:?}",
            a.get_pixel(250, 200)
        );

        // 300x200 box, 15 % margin: 45 and 30 px each side.
        let c = decode(&clean);
        assert_eq!(c.dimensions(), (390, 260));
        assert!(
            c.pixels().all(|&p| near(p, GREY, 8)),
            "nothing drawn on the crop"
        );
    }

    #[test]
    fn the_margin_of_a_crop_stops_at_the_frame_edge() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let s = store(tmp.path(), SnapshotsConfig::default());
        // Partly outside: clipped to [0, 0, 100, 50], then 15, 7.5 px of margin inwards only.
        s.save(
            "cam",
            "a",
            &frame(200, 100),
            [-30.0, -10.0, 100.0, 50.0],
            "car",
            false,
        )
        .expect("save");
        let c = decode(&s.path("cam", "a", true).expect("clean"));
        assert_eq!(c.dimensions(), (115, 58));
        // Not numbers and infinities are clipped too.
        s.save(
            "cam",
            "b",
            &frame(200, 100),
            [f32::NAN, f32::NEG_INFINITY, f32::INFINITY, 1e30],
            "x",
            false,
        )
        .expect("save");
        assert_eq!(
            decode(&s.path("cam", "b", true).expect("clean")).dimensions(),
            (200, 100)
        );
    }

    #[test]
    fn an_unknown_object_is_outlined_in_the_other_colour() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let s = store(tmp.path(), SnapshotsConfig::default());
        s.save(
            "cam",
            "a",
            &frame(960, 480),
            [100.0, 100.0, 400.0, 300.0],
            "car 0.50",
            false,
        )
        .expect("save");
        let a = decode(&s.path("cam", "a", false).expect("annotated"));
        assert!(
            near(*a.get_pixel(100, 200), OTHER, 40),
            "{:?}",
            a.get_pixel(100, 200)
        );
    }

    #[test]
    fn saving_the_same_id_again_replaces_its_two_files() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let s = store(tmp.path(), SnapshotsConfig::default());
        s.save(
            "cam",
            "a",
            &frame(200, 100),
            [10.0, 10.0, 50.0, 50.0],
            "car",
            false,
        )
        .expect("save");
        let second = s
            .save(
                "cam",
                "a",
                &frame(300, 200),
                [10.0, 10.0, 110.0, 110.0],
                "car",
                true,
            )
            .expect("save again");
        assert_eq!(tree(tmp.path()), ["cam/a-clean.jpg", "cam/a.jpg"]);
        assert_eq!(
            fs::read(tmp.path().join("cam/a.jpg")).expect("read"),
            second
        );
        assert_eq!(
            decode(&tmp.path().join("cam/a.jpg")).dimensions(),
            (300, 200)
        );
    }

    #[test]
    fn unsafe_ids_and_cameras_are_refused_and_nothing_is_written() {
        let root = tempfile::tempdir().expect("tempdir");
        let dir = root.path().join("snapshots");
        let s = store(&dir, SnapshotsConfig::default());
        let f = frame(100, 100);
        let b = [10.0, 10.0, 50.0, 50.0];
        let long = "a".repeat(65);
        for id in [
            "../x",
            "",
            ".hidden",
            "a/b",
            "..",
            "a\\b",
            "é",
            long.as_str(),
            "x-clean",
        ] {
            let e = s.save("cam", id, &f, b, "x", false).expect_err(id);
            assert!(
                matches!(e, SnapshotError::UnsafeName { what: "id", .. }),
                "{id}: {e}"
            );
            assert!(e.to_string().contains("not a safe file name"), "{e}");
            assert_eq!(s.path("cam", id, false), None);
        }
        for camera in ["../cam", "", ".", "a/b", "/etc"] {
            let e = s.save(camera, "a", &f, b, "x", false).expect_err(camera);
            assert!(
                matches!(e, SnapshotError::UnsafeName { what: "camera", .. }),
                "{camera}: {e}"
            );
            assert_eq!(s.path(camera, "a", true), None);
        }
        assert!(tree(root.path()).is_empty(), "{:?}", tree(root.path()));
        // The longest allowed name is fine.
        s.save("cam", &"a".repeat(64), &f, b, "x", false)
            .expect("64 chars");
    }

    #[test]
    fn max_side_shrinks_a_large_frame_and_its_box() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let s = store(tmp.path(), SnapshotsConfig::default());
        let bytes = s
            .save(
                "cam",
                "a",
                &frame(2000, 1000),
                [500.0, 250.0, 1500.0, 750.0],
                "person",
                true,
            )
            .expect("save");
        let a = image::load_from_memory(&bytes).expect("decode").to_rgb8();
        assert_eq!(a.dimensions(), (1280, 640));
        // The box, scaled by 0.64, is outlined where it now is.
        assert!(
            near(*a.get_pixel(320, 320), KNOWN, 40),
            "{:?}",
            a.get_pixel(320, 320)
        );
        // The crop is cut from the full frame: 1000x500 plus 15 %.
        assert_eq!(
            decode(&s.path("cam", "a", true).expect("clean")).dimensions(),
            (1300, 650)
        );
    }

    #[test]
    fn a_small_frame_is_never_enlarged_and_none_keeps_it_as_captured() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let s = store(tmp.path(), SnapshotsConfig::default());
        let bytes = s
            .save(
                "cam",
                "a",
                &frame(640, 360),
                [1.0, 1.0, 9.0, 9.0],
                "x",
                false,
            )
            .expect("save");
        assert_eq!(
            image::load_from_memory(&bytes)
                .expect("decode")
                .dimensions(),
            (640, 360)
        );
        let cfg = SnapshotsConfig {
            max_side: None,
            ..SnapshotsConfig::default()
        };
        let s = store(tmp.path(), cfg);
        let bytes = s
            .save(
                "cam",
                "b",
                &frame(2000, 1000),
                [1.0, 1.0, 9.0, 9.0],
                "x",
                false,
            )
            .expect("save");
        assert_eq!(
            image::load_from_memory(&bytes)
                .expect("decode")
                .dimensions(),
            (2000, 1000)
        );
    }

    #[test]
    fn a_box_outside_the_frame_is_an_error_and_writes_nothing() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let s = store(tmp.path(), SnapshotsConfig::default());
        let f = frame(100, 50);
        for b in [
            [200.0, 10.0, 300.0, 40.0],
            [-50.0, -50.0, -10.0, -10.0],
            [30.0, 30.0, 30.0, 40.0],
            [60.0, 10.0, 20.0, 40.0],
            [f32::NAN; 4],
        ] {
            let e = s.save("cam", "a", &f, b, "x", false).expect_err("no area");
            assert!(matches!(e, SnapshotError::EmptyBox { .. }), "{b:?}: {e}");
            assert!(e.to_string().contains("cam/a"), "{e}");
        }
        assert!(s
            .save("cam", "a", &frame(0, 0), [0.0, 0.0, 1.0, 1.0], "x", false)
            .is_err());
        assert!(tree(tmp.path()).is_empty(), "{:?}", tree(tmp.path()));
    }

    #[test]
    fn prune_by_age_removes_old_objects_only() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let s = store(tmp.path(), SnapshotsConfig::default());
        for (cam, id) in [("a", "old"), ("a", "recent"), ("b", "old2")] {
            s.save(cam, id, &frame(64, 64), [8.0, 8.0, 40.0, 40.0], "x", false)
                .expect("save");
        }
        for p in [
            "a/old.jpg",
            "a/old-clean.jpg",
            "b/old2.jpg",
            "b/old2-clean.jpg",
        ] {
            set_age(&tmp.path().join(p), 11 * DAY);
        }
        for p in ["a/recent.jpg", "a/recent-clean.jpg"] {
            set_age(&tmp.path().join(p), 9 * DAY);
        }
        assert_eq!(s.prune(SystemTime::now()).expect("prune"), 4);
        assert_eq!(tree(tmp.path()), ["a/recent-clean.jpg", "a/recent.jpg"]);
        assert_eq!(s.prune(SystemTime::now()).expect("prune again"), 0);
    }

    #[test]
    fn prune_by_size_removes_the_oldest_objects_until_under_the_limit() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let cfg = SnapshotsConfig {
            max_mb: 1,
            ..SnapshotsConfig::default()
        };
        let s = store(tmp.path(), cfg);
        fs::create_dir_all(tmp.path().join("cam")).expect("mkdir");
        // Four objects of 400 kB each (1.6 MB): two must go to get under 1 MiB.
        let ids = ["third", "first", "fourth", "second"];
        let ages = [2, 4, 1, 3];
        for (id, age) in ids.iter().zip(ages) {
            for name in [format!("{id}.jpg"), format!("{id}-clean.jpg")] {
                let p = tmp.path().join("cam").join(name);
                fs::write(&p, vec![0u8; 200_000]).expect("write");
                set_age(&p, Duration::from_secs(age * 60));
            }
        }
        assert_eq!(s.total_bytes().expect("total"), 1_600_000);
        assert_eq!(s.prune(SystemTime::now()).expect("prune"), 4);
        assert_eq!(
            tree(tmp.path()),
            [
                "cam/fourth-clean.jpg",
                "cam/fourth.jpg",
                "cam/third-clean.jpg",
                "cam/third.jpg"
            ]
        );
        assert_eq!(s.total_bytes().expect("total"), 800_000);
    }

    #[test]
    fn prune_leaves_files_that_are_not_snapshots_alone() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let cfg = SnapshotsConfig {
            max_mb: 1,
            ..SnapshotsConfig::default()
        };
        let s = store(tmp.path(), cfg);
        let big = vec![0u8; 2_000_000];
        fs::create_dir_all(tmp.path().join("cam/nested")).expect("mkdir");
        fs::create_dir_all(tmp.path().join(".hidden")).expect("mkdir");
        let foreign = [
            "top.jpg",
            "notes.txt",
            "cam/readme.txt",
            "cam/.hidden.jpg",
            "cam/photo.JPG",
            "cam/nested/deep.jpg",
            ".hidden/x.jpg",
        ];
        for p in foreign {
            let p = tmp.path().join(p);
            fs::write(&p, &big).expect("write");
            set_age(&p, 100 * DAY);
        }
        #[cfg(unix)]
        {
            // A link to a directory outside: never followed.
            let outside = tempfile::tempdir().expect("tempdir");
            fs::write(outside.path().join("victim.jpg"), b"x").expect("write");
            std::os::unix::fs::symlink(outside.path(), tmp.path().join("linked")).expect("symlink");
            std::os::unix::fs::symlink(
                outside.path().join("victim.jpg"),
                tmp.path().join("cam/link.jpg"),
            )
            .expect("symlink");
            assert_eq!(s.prune(SystemTime::now()).expect("prune"), 0);
            assert!(outside.path().join("victim.jpg").exists());
        }
        assert_eq!(s.prune(SystemTime::now()).expect("prune"), 0);
        assert_eq!(s.total_bytes().expect("total"), 0);
        for p in foreign {
            assert!(tmp.path().join(p).exists(), "{p} was removed");
        }
    }

    #[test]
    fn open_creates_the_directory_and_clears_stale_temp_files() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("state/snapshots");
        let s = store(&dir, SnapshotsConfig::default());
        assert!(dir.is_dir());
        s.save(
            "cam",
            "a",
            &frame(64, 64),
            [8.0, 8.0, 40.0, 40.0],
            "x",
            false,
        )
        .expect("save");
        // A crashed writer's temp file (pid 0 is never a live process), old enough to clear.
        let temp = dir.join("cam/.a.jpg.tmp.0.7");
        fs::write(&temp, b"half a jpeg").expect("write");
        set_age(&temp, Duration::from_secs(3600 * 2));
        drop(store(&dir, SnapshotsConfig::default()));
        assert!(!temp.exists());
        assert_eq!(tree(&dir), ["cam/a-clean.jpg", "cam/a.jpg"]);
    }

    #[test]
    fn the_default_config_is_valid_and_bad_values_name_their_key() {
        assert_eq!(SnapshotsConfig::default().validate(), Vec::<String>::new());
        let bad = SnapshotsConfig {
            enabled: true,
            retain_days: f64::NAN,
            max_mb: 0,
            quality: 0,
            crop_margin: -0.1,
            max_side: Some(10),
        };
        let p = bad.validate();
        assert_eq!(p.len(), 5, "{p:?}");
        for (key, range) in [
            ("[snapshots].retain_days", "above 0 up to 3650"),
            ("[snapshots].max_mb", "1 to 1048576"),
            ("[snapshots].quality = 0", "1 to 100"),
            ("[snapshots].crop_margin", "0 to 1"),
            ("[snapshots].max_side = 10", "64 to 16384"),
        ] {
            assert!(
                p.iter().any(|m| m.contains(key) && m.contains(range)),
                "{key}: {p:?}"
            );
        }
        let q = SnapshotsConfig {
            quality: 101,
            ..SnapshotsConfig::default()
        }
        .validate();
        assert_eq!(q.len(), 1, "{q:?}");
    }

    #[test]
    fn the_config_reads_from_toml_with_defaults_and_refuses_unknown_keys() {
        let c: SnapshotsConfig = toml::from_str("quality = 90\nmax_side = 640").expect("toml");
        assert_eq!(
            c,
            SnapshotsConfig {
                quality: 90,
                max_side: Some(640),
                ..SnapshotsConfig::default()
            }
        );
        assert!(toml::from_str::<SnapshotsConfig>("qualty = 90").is_err());
    }

    #[test]
    fn a_nonsensical_unvalidated_config_neither_panics_nor_deletes_everything() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let cfg = SnapshotsConfig {
            retain_days: -1.0,
            quality: 0,
            crop_margin: f32::NAN,
            max_side: Some(0),
            ..SnapshotsConfig::default()
        };
        let s = store(tmp.path(), cfg);
        s.save(
            "cam",
            "a",
            &frame(100, 50),
            [10.0, 10.0, 30.0, 30.0],
            "x",
            false,
        )
        .expect("save");
        assert_eq!(
            decode(&s.path("cam", "a", true).expect("clean")).dimensions(),
            (20, 20)
        );
        assert_eq!(s.prune(SystemTime::now()).expect("prune"), 0);
    }
}
