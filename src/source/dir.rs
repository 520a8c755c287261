//! Directory replay: the JPEG and PNG files of a folder, in name order, at a set rate.
//!
//! Used to try a model, a head or a configuration on recorded pictures, and by tests. A replay
//! must behave like a camera for everything downstream, so it is paced in real time (see
//! [`Pacer`]) rather than read as fast as possible. One bad file in a folder of thousands must
//! not end a replay: it is skipped, counted and logged. Only a folder where *nothing* decodes
//! is an error, because then the configuration is wrong, not one file.
//!
//! The folder is listed again at the start of every pass, so files dropped in while a looping
//! replay runs join the next pass, and deleted ones leave it.

use std::ffi::OsString;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use tracing::{info, warn};

use crate::source::frame::Frame;
use crate::source::pace::Pacer;
use crate::source::stats::{should_log, SourceState, SourceStats};
use crate::source::stop::StopSignal;
use crate::source::{Source, SourceError};
use crate::vision::image_io::{decode_file, DecodeLimits};

/// A [`Source`] replaying a folder.
pub struct DirSource {
    dir: PathBuf,
    repeat: bool,
    fps: f64,
    limits: DecodeLimits,
    pacer: Pacer,
    stop: StopSignal,
    stats: Arc<SourceStats>,
    /// The current pass, and the index of the next file in it.
    files: Vec<PathBuf>,
    next: usize,
    /// Decoded files in the current pass, and the first failure, to tell "some files are bad"
    /// from "nothing here is an image".
    pass_ok: usize,
    pass_first_error: Option<String>,
    seq: u64,
    ended: bool,
}

impl DirSource {
    /// Lists the folder now, so a wrong path or an empty folder fails at startup with a
    /// message, not on the capture thread later.
    pub fn open(
        dir: &Path,
        fps: f64,
        repeat: bool,
        limits: DecodeLimits,
        stop: StopSignal,
    ) -> Result<DirSource, SourceError> {
        let files = list_images(dir)?;
        info!(
            dir = %dir.display(),
            files = files.len(),
            fps,
            repeat,
            "replaying a folder of images"
        );
        Ok(DirSource {
            dir: dir.to_path_buf(),
            repeat,
            fps,
            limits,
            pacer: Pacer::new(fps),
            stop,
            stats: SourceStats::new(),
            files,
            next: 0,
            pass_ok: 0,
            pass_first_error: None,
            seq: 0,
            ended: false,
        })
    }

    fn end(&mut self) -> Result<Option<Frame>, SourceError> {
        if !self.ended {
            info!(dir = %self.dir.display(), frames = self.seq, "folder replay finished");
        }
        self.ended = true;
        self.stats.set_state(SourceState::Ended);
        Ok(None)
    }

    fn fail(&mut self, e: SourceError) -> Result<Option<Frame>, SourceError> {
        self.ended = true;
        self.stats.set_state(SourceState::Failed {
            error: e.to_string(),
        });
        Err(e)
    }

    /// Called when a pass is over: decides between end, error and a new pass.
    fn next_pass(&mut self) -> Result<bool, SourceError> {
        if self.pass_ok == 0 {
            return Err(SourceError::AllUndecodable {
                path: self.dir.clone(),
                count: self.files.len(),
                first: self.pass_first_error.take().unwrap_or_default(),
            });
        }
        if !self.repeat {
            return Ok(false);
        }
        self.files = list_images(&self.dir)?;
        self.next = 0;
        self.pass_ok = 0;
        self.pass_first_error = None;
        Ok(true)
    }
}

impl Source for DirSource {
    fn next_frame(&mut self) -> Result<Option<Frame>, SourceError> {
        if self.ended || self.stop.is_stopped() {
            return self.end();
        }
        loop {
            if self.next >= self.files.len() {
                match self.next_pass() {
                    Ok(true) => {}
                    Ok(false) => return self.end(),
                    Err(e) => return self.fail(e),
                }
            }
            let path = self.files[self.next].clone();
            self.next += 1;
            // decode_file checks the size before reading: a stray 4 GB video in the folder is
            // refused, not loaded.
            let started = Instant::now();
            let decoded = decode_file(&path, &self.limits);
            self.stats.decoded(started.elapsed());
            match decoded {
                Ok(image) => {
                    self.pass_ok += 1;
                    // Decode first, then wait: the frame goes out on time even when decoding
                    // takes a good part of the period.
                    let delay = self.pacer.delay(Instant::now());
                    if !delay.is_zero() && !self.stop.sleep(delay) {
                        return self.end();
                    }
                    let frame = Frame::now(self.seq, image, path.display().to_string());
                    self.seq += 1;
                    self.stats.frame_delivered();
                    return Ok(Some(frame));
                }
                Err(why) => {
                    let why = why.to_string();
                    let n = self.stats.decode_error(why.clone());
                    if should_log(n) {
                        warn!("{why}; file skipped ({n} so far)");
                    }
                    if self.pass_first_error.is_none() {
                        self.pass_first_error = Some(why);
                    }
                }
            }
        }
    }

    fn describe(&self) -> String {
        format!(
            "dir {} ({} fps{})",
            self.dir.display(),
            self.fps,
            if self.repeat { ", loop" } else { "" }
        )
    }

    fn stats(&self) -> Arc<SourceStats> {
        self.stats.clone()
    }
}

/// The image files of `dir`, sorted by name (byte order: name frames `0001.jpg`, `0002.jpg`,
/// ... for a predictable order). Hidden files are left out: `._photo.jpg` files that macOS
/// leaves on USB sticks have a JPEG name but are not images.
pub fn list_images(dir: &Path) -> Result<Vec<PathBuf>, SourceError> {
    let entries = std::fs::read_dir(dir).map_err(|e| {
        if e.raw_os_error() == Some(20) || e.kind() == ErrorKind::NotADirectory {
            return SourceError::NotADir {
                path: dir.to_path_buf(),
            };
        }
        SourceError::DirOpen {
            path: dir.to_path_buf(),
            hint: if e.kind() == ErrorKind::NotFound {
                "no such folder: check [source].path"
            } else {
                "cannot list the folder: check [source].path and the permissions of the user \
                 running adaptd"
            },
            source: e,
        }
    })?;
    let mut files: Vec<(OsString, PathBuf)> = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| SourceError::DirOpen {
            path: dir.to_path_buf(),
            hint: "listing the folder failed",
            source: e,
        })?;
        let name = entry.file_name();
        let lossy = name.to_string_lossy();
        if lossy.starts_with('.') {
            continue;
        }
        let ext = Path::new(&name)
            .extension()
            .map(|e| e.to_string_lossy().to_ascii_lowercase());
        if !matches!(ext.as_deref(), Some("jpg" | "jpeg" | "png")) {
            continue;
        }
        let path = entry.path();
        // Follows symlinks: a link to an image counts, a folder named `x.jpg` does not.
        if std::fs::metadata(&path)
            .map(|m| m.is_file())
            .unwrap_or(false)
        {
            files.push((name, path));
        }
    }
    if files.is_empty() {
        return Err(SourceError::DirEmpty {
            path: dir.to_path_buf(),
        });
    }
    files.sort();
    Ok(files.into_iter().map(|(_, p)| p).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{Rgb, RgbImage};
    use std::time::Duration;

    fn png(color: [u8; 3]) -> Vec<u8> {
        let img = RgbImage::from_pixel(8, 6, Rgb(color));
        let mut out = std::io::Cursor::new(Vec::new());
        img.write_to(&mut out, image::ImageFormat::Png)
            .expect("encoding to memory");
        out.into_inner()
    }

    fn folder(files: &[(&str, Vec<u8>)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("temp dir");
        for (name, bytes) in files {
            std::fs::write(dir.path().join(name), bytes).expect("write");
        }
        dir
    }

    fn open(dir: &Path, fps: f64, repeat: bool) -> DirSource {
        DirSource::open(dir, fps, repeat, DecodeLimits::default(), StopSignal::new())
            .expect("opens")
    }

    fn colour(f: &Frame) -> [u8; 3] {
        f.image.get_pixel(0, 0).0
    }

    #[test]
    fn replays_in_name_order_skipping_bad_files_and_others() {
        let dir = folder(&[
            ("b.png", png([0, 255, 0])),
            ("a.PNG", png([255, 0, 0])),
            ("c.jpg", b"not a jpeg at all".to_vec()),
            ("d.png", png([0, 0, 255])),
            ("notes.txt", b"ignored".to_vec()),
            ("._e.png", b"macOS resource fork".to_vec()),
        ]);
        std::fs::create_dir(dir.path().join("sub.jpg")).expect("mkdir");
        let mut s = open(dir.path(), 200.0, false);
        let stats = s.stats();
        let mut got = Vec::new();
        while let Some(f) = s.next_frame().expect("no fatal error") {
            got.push((f.seq, colour(&f), f.source.clone()));
        }
        assert_eq!(
            got.iter().map(|g| (g.0, g.1)).collect::<Vec<_>>(),
            vec![(0, [255, 0, 0]), (1, [0, 255, 0]), (2, [0, 0, 255])]
        );
        assert!(got[0].2.ends_with("a.PNG"));
        let snap = stats.snapshot();
        assert_eq!(snap.frames, 3);
        assert_eq!(snap.decode_errors, 1);
        assert!(snap.last_skip.unwrap_or_default().contains("c.jpg"));
        assert_eq!(snap.state, SourceState::Ended);
        // Ended stays ended.
        assert!(matches!(s.next_frame(), Ok(None)));
    }

    #[test]
    fn loops_and_picks_up_new_files_on_the_next_pass() {
        let dir = folder(&[("1.png", png([1, 1, 1])), ("2.png", png([2, 2, 2]))]);
        let mut s = open(dir.path(), 500.0, true);
        let mut next = || s.next_frame().ok().flatten().map(|f| colour(&f)[0]);
        assert_eq!(next(), Some(1));
        assert_eq!(next(), Some(2));
        std::fs::write(dir.path().join("3.png"), png([3, 3, 3])).expect("write");
        assert_eq!(next(), Some(1));
        assert_eq!(next(), Some(2));
        assert_eq!(next(), Some(3));
        assert_eq!(next(), Some(1));
    }

    #[test]
    fn paces_against_the_start_instant() {
        let dir = folder(&[("1.png", png([9, 9, 9]))]);
        let mut s = open(dir.path(), 20.0, true); // 50 ms period
        let t = Instant::now();
        for _ in 0..6 {
            assert!(s.next_frame().expect("frame").is_some());
        }
        // Frames at 0, 50, ..., 250 ms.
        let e = t.elapsed();
        assert!(e >= Duration::from_millis(245), "{e:?}");
        assert!(e < Duration::from_secs(3), "{e:?}");
    }

    #[test]
    fn stop_interrupts_a_slow_replay() {
        let dir = folder(&[("1.png", png([9, 9, 9]))]);
        let stop = StopSignal::new();
        let mut s = DirSource::open(
            dir.path(),
            0.05,
            true,
            DecodeLimits::default(),
            stop.clone(),
        )
        .expect("opens");
        assert!(s.next_frame().expect("first frame at once").is_some());
        let t = Instant::now();
        let h = std::thread::spawn(move || s.next_frame().map(|f| f.is_none()).ok());
        std::thread::sleep(Duration::from_millis(50));
        stop.stop();
        assert_eq!(h.join().ok().flatten(), Some(true), "ends with None");
        assert!(t.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn empty_missing_and_non_folders_are_clear_errors() {
        let empty = folder(&[("readme.txt", b"x".to_vec())]);
        let e = DirSource::open(
            empty.path(),
            2.0,
            true,
            DecodeLimits::default(),
            StopSignal::new(),
        )
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
        assert!(e.contains("no JPEG or PNG files"), "{e}");

        let missing = empty.path().join("nope");
        let e = list_images(&missing)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("nope") && e.contains("no such folder"), "{e}");

        let file = empty.path().join("readme.txt");
        let e = list_images(&file)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("not a folder"), "{e}");
    }

    #[test]
    fn a_folder_where_nothing_decodes_is_an_error_not_an_endless_loop() {
        let dir = folder(&[
            ("a.jpg", b"\xFF\xD8 truncated".to_vec()),
            ("b.png", b"garbage".to_vec()),
        ]);
        let mut s = open(dir.path(), 100.0, true);
        let stats = s.stats();
        let e = s
            .next_frame()
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            e.contains("none of the 2 image files could be decoded"),
            "{e}"
        );
        assert!(e.contains("a.jpg"), "names the first failure: {e}");
        assert!(matches!(stats.state(), SourceState::Failed { .. }));
        assert_eq!(stats.snapshot().decode_errors, 2);
    }

    #[test]
    fn oversized_files_are_skipped_before_reading() {
        let dir = folder(&[("big.png", png([1, 2, 3])), ("ok.png", png([4, 5, 6]))]);
        let big = dir.path().join("big.png");
        let mut bytes = png([1, 2, 3]);
        bytes.resize(10_000, 0);
        std::fs::write(&big, bytes).expect("write");
        let limits = DecodeLimits {
            max_bytes: 5_000,
            max_pixels: 1_000_000,
        };
        let mut s =
            DirSource::open(dir.path(), 100.0, false, limits, StopSignal::new()).expect("opens");
        let f = s.next_frame().expect("ok").expect("a frame");
        assert_eq!(colour(&f), [4, 5, 6]);
        let skip = s.stats().snapshot().last_skip.unwrap_or_default();
        assert!(skip.contains("over the 5000-byte limit"), "{skip}");
    }
}
