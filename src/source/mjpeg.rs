//! MJPEG byte streams: JPEG after JPEG on stdin, a FIFO or a file.
//!
//! This is the practical path for cameras that V4L2 cannot open directly (Raspberry Pi CSI
//! cameras behind libcamera, Jetson cameras behind Argus) and for network cameras:
//! `rpicam-vid -t 0 --codec mjpeg -o - | adaptd ...`, or
//! `ffmpeg -i rtsp://... -f mjpeg - | adaptd ...`.
//!
//! Such a stream has no container: frame boundaries must be found in the bytes. Searching for
//! the next `FF D9` (end of image) is what most scripts do, and it breaks on an EXIF thumbnail
//! (a complete JPEG inside the first one) and never recovers from a frame cut short. The
//! [`MjpegSplitter`] instead walks the JPEG structure: marker segments are skipped by their
//! length (so bytes inside them never count as markers), and in the entropy-coded data a real
//! marker is the only place `FF` is followed by anything but `00` or a restart code. A frame
//! that is cut short and followed by the next frame's start-of-image is noticed and dropped;
//! bytes between frames are discarded; a frame growing past the decode size limit is
//! abandoned and the stream resynchronised on the next start-of-image, so memory stays bounded
//! whatever arrives.

use std::fs::File;
use std::io::{self, ErrorKind, Read};
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use tracing::{debug, info, warn};

use crate::source::convert::decode_mjpeg_frame;
use crate::source::frame::Frame;
use crate::source::pace::Pacer;
use crate::source::stats::{should_log, SourceState, SourceStats};
use crate::source::stop::StopSignal;
use crate::source::{Source, SourceError};
use crate::vision::image_io::DecodeLimits;

/// Bytes asked of the reader per `read()`: large enough for few syscalls at 30 fps of 100 KB
/// frames, small enough not to matter next to the frame limit.
const READ_CHUNK: usize = 64 * 1024;

/// Where the splitter is in the JPEG grammar; kept between reads so that every byte is
/// examined once, however the stream is chopped into `read()` results.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Looking for `FF D8` among bytes that belong to no frame.
    Search,
    /// Inside a frame (which starts at `buf[0]`), expecting a marker at `pos`.
    Markers,
    /// Inside entropy-coded data after a start-of-scan, at `pos`.
    Entropy,
}

/// What examining the buffered bytes concluded.
enum Step {
    NeedMore,
    /// A complete frame of this many bytes at the start of the buffer.
    Complete(usize),
    /// Not a valid frame; search again for a start-of-image from this offset.
    Broken(usize),
}

/// Splits a byte stream into JPEG frames (see the module docs for how).
pub struct MjpegSplitter<R> {
    reader: R,
    buf: Vec<u8>,
    /// Read target, allocated once: `read()` may return a byte at a time.
    scratch: Box<[u8]>,
    mode: Mode,
    pos: usize,
    max_frame: usize,
    eof: bool,
    /// Times a frame boundary was lost: truncated, malformed or oversized frames.
    pub resyncs: u64,
    /// Bytes that were outside any frame.
    pub garbage_bytes: u64,
    /// Frames abandoned for exceeding `max_frame`.
    pub oversized: u64,
}

impl<R: Read> MjpegSplitter<R> {
    /// `max_frame`: the largest frame accepted, normally the decode limit `max_bytes`.
    pub fn new(reader: R, max_frame: usize) -> MjpegSplitter<R> {
        MjpegSplitter {
            reader,
            buf: Vec::new(),
            scratch: vec![0; READ_CHUNK].into_boxed_slice(),
            mode: Mode::Search,
            pos: 0,
            max_frame: max_frame.max(4),
            eof: false,
            resyncs: 0,
            garbage_bytes: 0,
            oversized: 0,
        }
    }

    /// The next complete JPEG, or `None` at the end of the stream (a partial frame at the end
    /// is counted as a resync and dropped). Read errors other than `Interrupted` are returned.
    pub fn next_jpeg(&mut self) -> io::Result<Option<Vec<u8>>> {
        loop {
            match self.step() {
                Step::Complete(len) => {
                    let rest = self.buf.split_off(len);
                    let frame = std::mem::replace(&mut self.buf, rest);
                    self.mode = Mode::Search;
                    self.pos = 0;
                    if frame.len() > self.max_frame {
                        // Found whole in one read; what follows it is intact.
                        self.count_oversized();
                        continue;
                    }
                    return Ok(Some(frame));
                }
                Step::Broken(at) => {
                    self.resyncs += 1;
                    debug!(
                        offset = at,
                        "MJPEG stream: malformed frame, resynchronising"
                    );
                    self.buf.drain(..at.min(self.buf.len()));
                    self.mode = Mode::Search;
                    self.pos = 0;
                    continue;
                }
                Step::NeedMore => {}
            }
            if self.mode != Mode::Search && self.buf.len() > self.max_frame {
                self.abandon_oversized();
                continue;
            }
            if self.eof {
                if self.mode != Mode::Search {
                    self.resyncs += 1;
                    debug!(
                        bytes = self.buf.len(),
                        "MJPEG stream ended inside a frame; dropped"
                    );
                } else {
                    self.garbage_bytes += self.buf.len() as u64;
                }
                self.buf.clear();
                self.mode = Mode::Search;
                return Ok(None);
            }
            self.fill()?;
        }
    }

    /// Drops the frame being assembled; what follows is searched for the next start-of-image.
    fn abandon_oversized(&mut self) {
        self.count_oversized();
        // Keep a trailing FF: it may be the first half of the next SOI.
        let keep = usize::from(self.buf.last() == Some(&0xFF));
        self.garbage_bytes += (self.buf.len() - keep) as u64;
        self.buf.drain(..self.buf.len() - keep);
        self.mode = Mode::Search;
        self.pos = 0;
    }

    fn count_oversized(&mut self) {
        self.oversized += 1;
        self.resyncs += 1;
        if should_log(self.oversized) {
            warn!(
                "MJPEG frame larger than the {}-byte limit ([image].max_bytes): dropped \
                 ({} so far); raise the limit or lower the producer's resolution or quality",
                self.max_frame, self.oversized
            );
        }
    }

    fn fill(&mut self) -> io::Result<()> {
        let result = loop {
            match self.reader.read(&mut self.scratch) {
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                other => break other,
            }
        };
        let n = result?;
        if n == 0 {
            self.eof = true;
        }
        self.buf
            .extend_from_slice(&self.scratch[..n.min(self.scratch.len())]);
        Ok(())
    }

    /// Advances through the buffered bytes as far as they allow.
    fn step(&mut self) -> Step {
        loop {
            let b = &self.buf;
            match self.mode {
                Mode::Search => {
                    match b.windows(2).position(|w| w == [0xFF, 0xD8]) {
                        Some(i) => {
                            self.garbage_bytes += i as u64;
                            self.buf.drain(..i);
                            self.mode = Mode::Markers;
                            self.pos = 2;
                        }
                        None => {
                            // Everything but a trailing FF is garbage.
                            let keep = usize::from(b.last() == Some(&0xFF));
                            let drop = b.len() - keep;
                            if drop > 0 {
                                self.garbage_bytes += drop as u64;
                                self.buf.drain(..drop);
                            }
                            return Step::NeedMore;
                        }
                    }
                }
                Mode::Markers => {
                    let p = self.pos;
                    let (Some(&ff), Some(&m)) = (b.get(p), b.get(p + 1)) else {
                        return Step::NeedMore;
                    };
                    if ff != 0xFF {
                        return Step::Broken(2);
                    }
                    match m {
                        0xFF => self.pos += 1, // fill byte before a marker
                        0xD9 => return Step::Complete(p + 2),
                        // A new image starts inside this one's headers: this one was cut short.
                        0xD8 => return Step::Broken(p),
                        0x00 => return Step::Broken(2),
                        0x01 | 0xD0..=0xD7 => self.pos += 2,
                        _ => {
                            let (Some(&hi), Some(&lo)) = (b.get(p + 2), b.get(p + 3)) else {
                                return Step::NeedMore;
                            };
                            let len = usize::from(u16::from_be_bytes([hi, lo]));
                            if len < 2 {
                                return Step::Broken(2);
                            }
                            // Wait for the whole segment, then jump over it: its bytes are
                            // never read as markers. Only a start-of-scan is followed by data.
                            if p + 2 + len > b.len() {
                                return Step::NeedMore;
                            }
                            self.pos = p + 2 + len;
                            if m == 0xDA {
                                self.mode = Mode::Entropy;
                            }
                        }
                    }
                }
                Mode::Entropy => {
                    let p = self.pos;
                    let Some(off) = b[p.min(b.len())..].iter().position(|&x| x == 0xFF) else {
                        self.pos = b.len();
                        return Step::NeedMore;
                    };
                    let i = p + off;
                    let Some(&next) = b.get(i + 1) else {
                        self.pos = i;
                        return Step::NeedMore;
                    };
                    match next {
                        0x00 | 0xD0..=0xD7 => self.pos = i + 2, // stuffed byte, restart marker
                        0xFF => self.pos = i + 1,               // fill byte
                        0xD8 => return Step::Broken(i),         // next frame: this one was cut
                        _ => {
                            // A real marker: EOI, or the tables and scan of a progressive JPEG.
                            self.pos = i;
                            self.mode = Mode::Markers;
                        }
                    }
                }
            }
        }
    }
}

/// How to honour `fps_limit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RateMode {
    /// A regular file: sleep, so a recording replays at the given rate.
    Pace,
    /// A pipe: never slow the writer (it would stall or drop frames itself), discard extras
    /// before decoding them.
    Drop,
}

enum Input {
    /// A FIFO is opened on the capture thread's first `next_frame`, because opening one
    /// blocks until a writer appears.
    Pending(PathBuf),
    Open(MjpegSplitter<Box<dyn Read + Send>>),
    Closed,
}

/// A [`Source`] over an MJPEG stream.
pub struct MjpegSource {
    name: String,
    input: Input,
    limits: DecodeLimits,
    fps_limit: Option<f64>,
    rate: Option<(Pacer, RateMode)>,
    stop: StopSignal,
    stats: Arc<SourceStats>,
    seq: u64,
    /// A FIFO: when its writer closes it, wait for the next writer instead of ending.
    fifo: Option<PathBuf>,
    /// Writers that came and went.
    writers_gone: u32,
    read: u64,
}

impl MjpegSource {
    /// Opens `path` (`-` for standard input). A missing path is an error now; a FIFO is only
    /// opened on the first [`Source::next_frame`], because opening a FIFO blocks until a writer
    /// appears.
    pub fn open(
        path: &Path,
        fps_limit: Option<f64>,
        limits: DecodeLimits,
        stop: StopSignal,
    ) -> Result<MjpegSource, SourceError> {
        let (name, input, mode, fifo) = if path == Path::new("-") {
            let stdin: Box<dyn Read + Send> = Box::new(io::stdin());
            // `< recording.mjpeg` makes stdin a regular file: pace it like one.
            let mode = match std::fs::metadata("/dev/stdin") {
                Ok(m) if m.is_file() => RateMode::Pace,
                _ => RateMode::Drop,
            };
            (
                "stdin".to_string(),
                Input::Open(MjpegSplitter::new(stdin, max_frame(&limits))),
                mode,
                None,
            )
        } else {
            let name = path.display().to_string();
            let meta = std::fs::metadata(path).map_err(|e| SourceError::InputOpen {
                name: name.clone(),
                hint: if e.kind() == ErrorKind::NotFound {
                    "no such file or FIFO: create the FIFO with `mkfifo` before starting \
                     adaptd, or check [source].path"
                } else {
                    "check [source].path and the permissions of the user running adaptd"
                },
                source: e,
            })?;
            if meta.is_dir() {
                return Err(SourceError::InputIsDir { name });
            }
            let mode = if meta.is_file() {
                RateMode::Pace
            } else {
                RateMode::Drop
            };
            let fifo = meta.file_type().is_fifo().then(|| path.to_path_buf());
            (name, Input::Pending(path.to_path_buf()), mode, fifo)
        };
        let mut source = MjpegSource::with_input(name, input, mode, fps_limit, limits, stop);
        source.fifo = fifo;
        Ok(source)
    }

    /// Over any reader, e.g. a child process's stdout or a test's byte source. Extra frames
    /// beyond `fps_limit` are dropped (the reader is treated as live).
    pub fn from_reader(
        name: impl Into<String>,
        reader: Box<dyn Read + Send>,
        fps_limit: Option<f64>,
        limits: DecodeLimits,
        stop: StopSignal,
    ) -> MjpegSource {
        let input = Input::Open(MjpegSplitter::new(reader, max_frame(&limits)));
        MjpegSource::with_input(name.into(), input, RateMode::Drop, fps_limit, limits, stop)
    }

    /// Reports into `stats` instead of its own (a supervisor that restarts the reader keeps
    /// its counters across restarts).
    pub fn sharing_stats(mut self, stats: Arc<SourceStats>) -> MjpegSource {
        self.stats = stats;
        self
    }

    fn with_input(
        name: String,
        input: Input,
        mode: RateMode,
        fps_limit: Option<f64>,
        limits: DecodeLimits,
        stop: StopSignal,
    ) -> MjpegSource {
        MjpegSource {
            name,
            input,
            limits,
            fps_limit,
            rate: fps_limit.map(|fps| (Pacer::new(fps), mode)),
            stop,
            stats: SourceStats::new(),
            seq: 0,
            read: 0,
            fifo: None,
            writers_gone: 0,
        }
    }

    fn splitter(
        &mut self,
    ) -> Result<Option<&mut MjpegSplitter<Box<dyn Read + Send>>>, SourceError> {
        if let Input::Pending(path) = &self.input {
            info!(path = %path.display(), "opening MJPEG input (a FIFO waits for its writer)");
            let file = File::open(path).map_err(|e| SourceError::InputOpen {
                name: self.name.clone(),
                hint: "check [source].path and the permissions of the user running adaptd",
                source: e,
            })?;
            let reader: Box<dyn Read + Send> = Box::new(file);
            self.input = Input::Open(MjpegSplitter::new(reader, max_frame(&self.limits)));
        }
        Ok(match &mut self.input {
            Input::Open(s) => Some(s),
            _ => None,
        })
    }

    /// Ends the stream: state and log.
    fn end(&mut self) -> Result<Option<Frame>, SourceError> {
        if !matches!(self.input, Input::Closed) {
            if self.read == 0 && self.name == "stdin" && !self.stop.is_stopped() {
                warn!(
                    "stdin closed before any frame arrived; under systemd stdin is /dev/null: \
                     pipe the producer into adaptd, or use a FIFO path for [source].path"
                );
            }
            info!(source = %self.name, frames = self.seq, "MJPEG input closed");
        }
        self.input = Input::Closed;
        self.stats.set_state(SourceState::Ended);
        Ok(None)
    }
}

fn max_frame(limits: &DecodeLimits) -> usize {
    usize::try_from(limits.max_bytes).unwrap_or(usize::MAX)
}

impl Source for MjpegSource {
    fn next_frame(&mut self) -> Result<Option<Frame>, SourceError> {
        loop {
            if self.stop.is_stopped() {
                return self.end();
            }
            let Some(splitter) = self.splitter()? else {
                return self.end();
            };
            let jpeg = splitter.next_jpeg();
            let (resyncs, garbage) = (splitter.resyncs, splitter.garbage_bytes);
            self.stats.set_splitter(resyncs, garbage);
            let jpeg = match jpeg {
                Ok(Some(j)) => j,
                Ok(None) => match self.fifo.clone() {
                    // A FIFO outlives its writers: wait for the next one (the open blocks).
                    Some(path) if !self.stop.is_stopped() => {
                        self.writers_gone = self.writers_gone.saturating_add(1);
                        info!(source = %self.name, "the writer closed the FIFO; waiting for a new one");
                        self.stats.set_state(SourceState::Reconnecting {
                            attempt: self.writers_gone,
                            last_error: "the writer closed the FIFO; waiting for a new writer"
                                .into(),
                            retry_in_s: 0,
                        });
                        self.input = Input::Pending(path);
                        continue;
                    }
                    _ => return self.end(),
                },
                Err(e) => {
                    let err = SourceError::InputRead {
                        name: self.name.clone(),
                        source: e,
                    };
                    self.stats.set_state(SourceState::Failed {
                        error: err.to_string(),
                    });
                    return Err(err);
                }
            };
            self.read += 1;
            if let Some((pacer, mode)) = &mut self.rate {
                match mode {
                    RateMode::Drop => {
                        if !pacer.admit(Instant::now()) {
                            self.stats.rate_dropped();
                            continue;
                        }
                    }
                    RateMode::Pace => {
                        let d = pacer.delay(Instant::now());
                        if !d.is_zero() && !self.stop.sleep(d) {
                            return self.end();
                        }
                    }
                }
            }
            let label = format!("{} frame #{}", self.name, self.read);
            let started = std::time::Instant::now();
            let decoded = decode_mjpeg_frame(&jpeg, &label, &self.limits);
            self.stats.decoded(started.elapsed());
            match decoded {
                Ok(image) => {
                    let frame = Frame::now(self.seq, image, self.name.clone());
                    self.seq += 1;
                    self.stats.frame_delivered();
                    return Ok(Some(frame));
                }
                Err(e) => {
                    let n = self.stats.decode_error(e.to_string());
                    if should_log(n) {
                        warn!("{e}; frame skipped ({n} so far)");
                    }
                }
            }
        }
    }

    fn describe(&self) -> String {
        match self.fps_limit {
            Some(fps) => format!("mjpeg {} (at most {fps} fps)", self.name),
            None => format!("mjpeg {}", self.name),
        }
    }

    fn stats(&self) -> Arc<SourceStats> {
        self.stats.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::convert::tests::jpeg;
    use image::{Rgb, RgbImage};
    use std::time::Duration;

    /// Hands out the data 1..=`max` bytes per `read()`, in a fixed pseudo-random pattern,
    /// so markers and segment lengths fall across read boundaries.
    struct Chunked {
        data: Vec<u8>,
        pos: usize,
        max: usize,
        rng: u64,
        /// Fail with this error once the data is exhausted, instead of reporting EOF.
        fail_at_end: bool,
    }

    impl Chunked {
        fn new(data: Vec<u8>, max: usize) -> Chunked {
            Chunked {
                data,
                pos: 0,
                max,
                rng: 0x2545_F491_4F6C_DD1D,
                fail_at_end: false,
            }
        }
    }

    impl Read for Chunked {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.pos >= self.data.len() {
                if self.fail_at_end {
                    return Err(io::Error::new(ErrorKind::BrokenPipe, "writer crashed"));
                }
                return Ok(0);
            }
            self.rng ^= self.rng << 13;
            self.rng ^= self.rng >> 7;
            self.rng ^= self.rng << 17;
            let n = (1 + (self.rng % self.max as u64) as usize)
                .min(buf.len())
                .min(self.data.len() - self.pos);
            buf[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
            self.pos += n;
            Ok(n)
        }
    }

    /// A picture with some structure so the JPEG has real entropy-coded data.
    fn picture(w: u32, h: u32, seed: u8) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| {
            Rgb([
                (x * 7) as u8 ^ seed,
                (y * 5) as u8,
                ((x + y) as u8).wrapping_mul(seed | 1),
            ])
        })
    }

    /// Bytes that are not a JPEG, including FF, FF D9 and FF 00 but never FF D8.
    fn junk(len: usize, seed: u64) -> Vec<u8> {
        let mut r = seed | 1;
        let mut v: Vec<u8> = (0..len)
            .map(|_| {
                r ^= r << 13;
                r ^= r >> 7;
                r ^= r << 17;
                match r % 10 {
                    0 => 0xFF,
                    1 => 0xD9,
                    _ => (r >> 8) as u8,
                }
            })
            .collect();
        for i in 1..v.len() {
            if v[i - 1] == 0xFF && v[i] == 0xD8 {
                v[i] = 0xD9;
            }
        }
        v
    }

    fn split_all(
        data: Vec<u8>,
        max_read: usize,
        max_frame: usize,
    ) -> (Vec<Vec<u8>>, MjpegSplitter<Chunked>) {
        let mut s = MjpegSplitter::new(Chunked::new(data, max_read), max_frame);
        let mut frames = Vec::new();
        while let Some(f) = s.next_jpeg().expect("in-memory reads do not fail") {
            frames.push(f);
        }
        (frames, s)
    }

    #[test]
    fn splits_frames_among_junk_whatever_the_read_sizes() {
        let frames: Vec<Vec<u8>> = (0..5u8)
            .map(|i| jpeg(&picture(24 + u32::from(i) * 8, 16, i * 40), 80))
            .collect();
        let mut stream = junk(100, 1);
        stream.extend_from_slice(&frames[0]);
        stream.extend_from_slice(&junk(333, 2));
        stream.extend_from_slice(&frames[1]);
        stream.extend_from_slice(&frames[2]); // back to back
        stream.extend_from_slice(&[0xFF, 0xFF, 0xFF]); // fill bytes right before an SOI
        stream.extend_from_slice(&frames[3]);
        stream.extend_from_slice(&junk(50, 3));
        stream.extend_from_slice(&frames[4]);
        stream.extend_from_slice(&frames[0][..frames[0].len() / 2]); // cut by EOF
        for max_read in [1, 2, 3, 7, 64, 4096, 1 << 20] {
            let (got, s) = split_all(stream.clone(), max_read, 1 << 20);
            assert_eq!(got.len(), 5, "read size {max_read}");
            for (g, want) in got.iter().zip(&frames) {
                assert!(g == want, "read size {max_read}: frame differs");
            }
            assert_eq!(s.resyncs, 1, "only the frame cut by EOF is lost");
            assert_eq!(s.garbage_bytes, 100 + 333 + 3 + 50, "read size {max_read}");
        }
        // And they decode to the right pictures.
        let limits = DecodeLimits::default();
        let img = decode_mjpeg_frame(&frames[4], "f4", &limits).expect("decodes");
        assert_eq!(img.dimensions(), (56, 16));
    }

    #[test]
    fn a_cut_frame_followed_by_the_next_one_is_dropped_and_the_next_kept() {
        let a = jpeg(&picture(64, 48, 1), 90);
        let b = jpeg(&picture(32, 32, 2), 90);
        // Cut inside the entropy-coded data, and cut inside a header segment.
        for cut in [a.len() * 2 / 3, 30] {
            let mut stream = a[..cut].to_vec();
            stream.extend_from_slice(&b);
            stream.extend_from_slice(&a);
            for max_read in [1, 5, 4096] {
                let (got, s) = split_all(stream.clone(), max_read, 1 << 20);
                assert_eq!(got.len(), 2, "cut {cut}, read size {max_read}");
                assert!(got[0] == b && got[1] == a);
                assert!(s.resyncs >= 1);
            }
        }
    }

    #[test]
    fn marker_bytes_inside_segments_do_not_split_a_frame() {
        // An application segment holding a whole fake JPEG (like an EXIF thumbnail).
        let base = jpeg(&picture(16, 16, 3), 90);
        let payload = [0xFF, 0xD8, 0xFF, 0xD9, 0xFF, 0x00, 0xFF, 0xD9];
        let mut with_app = base[..2].to_vec();
        with_app.extend_from_slice(&[0xFF, 0xEF, 0x00, (payload.len() + 2) as u8]);
        with_app.extend_from_slice(&payload);
        with_app.extend_from_slice(&base[2..]);
        let mut stream = with_app.clone();
        stream.extend_from_slice(&base);
        let (got, s) = split_all(stream, 3, 1 << 20);
        assert_eq!(got.len(), 2);
        assert!(got[0] == with_app && got[1] == base);
        assert_eq!(s.resyncs, 0);
        let img = decode_mjpeg_frame(&got[0], "app", &DecodeLimits::default()).expect("decodes");
        assert_eq!(img.dimensions(), (16, 16));
    }

    #[test]
    fn oversized_and_endless_frames_are_abandoned_and_the_stream_resyncs() {
        let small = jpeg(&picture(16, 16, 4), 80);
        let big = jpeg(&picture(256, 256, 5), 100);
        let max = small.len() * 3;
        assert!(big.len() > max);
        let mut stream = small.clone();
        stream.extend_from_slice(&big);
        stream.extend_from_slice(&small);
        for max_read in [1, 100, 1 << 20] {
            let (got, s) = split_all(stream.clone(), max_read, max);
            assert_eq!(got.len(), 2, "read size {max_read}");
            assert!(got.iter().all(|g| *g == small));
            assert_eq!(s.oversized, 1, "read size {max_read}");
        }
        // A frame that never ends (a producer stuck mid-scan): bounded, then given up.
        let mut endless = small[..small.len() - 2].to_vec(); // no EOI
        endless.extend(std::iter::repeat_n(0x55u8, 2 << 20));
        endless.extend_from_slice(&small);
        let (got, s) = split_all(endless, 4096, 64 * 1024);
        assert_eq!(got.len(), 1);
        assert!(got[0] == small);
        assert_eq!(s.oversized, 1);
        assert!(s.buf.capacity() < 64 * 1024 + 2 * READ_CHUNK + 4096);
    }

    fn source_over(data: Vec<u8>, fps_limit: Option<f64>) -> MjpegSource {
        MjpegSource::from_reader(
            "test-pipe",
            Box::new(Chunked::new(data, 977)),
            fps_limit,
            DecodeLimits::default(),
            StopSignal::new(),
        )
    }

    #[test]
    fn the_source_decodes_frames_skips_bad_ones_and_ends_with_the_pipe() {
        let a = jpeg(&RgbImage::from_pixel(16, 8, Rgb([250, 10, 10])), 95);
        let b = jpeg(&RgbImage::from_pixel(16, 8, Rgb([10, 10, 250])), 95);
        let mut stream = a.clone();
        stream.extend_from_slice(&[0xFF, 0xD8, 0xFF, 0xD9]); // a frame with no picture
        stream.extend_from_slice(&b);
        let mut src = source_over(stream, None);
        let stats = src.stats();
        let f0 = src.next_frame().expect("ok").expect("frame");
        let f1 = src.next_frame().expect("ok").expect("frame");
        assert_eq!((f0.seq, f1.seq), (0, 1));
        assert!(f0.image.get_pixel(4, 4).0[0] > 200);
        assert!(f1.image.get_pixel(4, 4).0[2] > 200);
        assert_eq!(f0.source, "test-pipe");
        assert!(matches!(src.next_frame(), Ok(None)));
        let snap = stats.snapshot();
        assert_eq!((snap.frames, snap.decode_errors), (2, 1));
        assert!(snap
            .last_skip
            .unwrap_or_default()
            .contains("test-pipe frame #2"));
        assert_eq!(snap.state, SourceState::Ended);
    }

    #[test]
    fn fps_limit_drops_extra_frames_from_a_pipe_before_decoding() {
        let a = jpeg(&picture(16, 16, 6), 80);
        let stream: Vec<u8> = (0..10).flat_map(|_| a.clone()).collect();
        let mut src = source_over(stream, Some(0.5));
        let mut n = 0;
        while let Ok(Some(_)) = src.next_frame() {
            n += 1;
        }
        let snap = src.stats().snapshot();
        assert_eq!(n, 1, "10 frames arriving at once, 0.5 fps allowed");
        assert_eq!(snap.rate_dropped, 9);
        assert_eq!(snap.decode_errors, 0);
    }

    #[test]
    fn a_read_error_is_fatal_with_a_message() {
        let a = jpeg(&picture(8, 8, 7), 80);
        let mut r = Chunked::new(a, 50);
        r.fail_at_end = true;
        let mut src = MjpegSource::from_reader(
            "stdin",
            Box::new(r),
            None,
            DecodeLimits::default(),
            StopSignal::new(),
        );
        assert!(src.next_frame().expect("first frame").is_some());
        let e = src
            .next_frame()
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            e.starts_with("stdin: reading the MJPEG stream failed: writer crashed"),
            "{e}"
        );
    }

    #[test]
    fn a_file_is_replayed_at_the_fps_limit() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("rec.mjpeg");
        let a = jpeg(&picture(8, 8, 8), 80);
        std::fs::write(&path, [a.clone(), a.clone(), a.clone(), a].concat()).expect("write");
        let mut src = MjpegSource::open(
            &path,
            Some(20.0),
            DecodeLimits::default(),
            StopSignal::new(),
        )
        .expect("opens");
        let t = Instant::now();
        let mut n = 0;
        while let Ok(Some(_)) = src.next_frame() {
            n += 1;
        }
        assert_eq!(n, 4, "a file is paced, not dropped");
        assert!(
            t.elapsed() >= Duration::from_millis(145),
            "{:?}",
            t.elapsed()
        );
        // A folder is not a stream.
        let e = MjpegSource::open(dir.path(), None, DecodeLimits::default(), StopSignal::new())
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("kind = \"dir\""), "{e}");
    }

    #[test]
    fn a_fifo_is_opened_on_the_capture_thread_and_outlives_its_writers() {
        use std::time::Duration;
        let dir = tempfile::tempdir().expect("temp dir");
        let fifo = dir.path().join("cam.fifo");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        if !made.map(|s| s.success()).unwrap_or(false) {
            eprintln!("mkfifo unavailable; skipping");
            return;
        }
        // Opening the source does not block although no writer exists yet.
        let stop = StopSignal::new();
        let mut src =
            MjpegSource::open(&fifo, None, DecodeLimits::default(), stop.clone()).expect("opens");
        let a = jpeg(&picture(8, 8, 9), 80);
        let (f2, stop2, stats) = (fifo.clone(), stop.clone(), src.stats());
        // Two writers one after the other, like a producer that is restarted; then a stop,
        // and a last writer that only opens and closes (a FIFO open blocks until then).
        let writers = std::thread::spawn(move || -> std::io::Result<Vec<SourceState>> {
            use std::io::Write;
            let mut seen = Vec::new();
            let payloads = [[a.clone(), b"junk".to_vec(), a.clone()].concat(), a.clone()];
            for (k, payload) in payloads.into_iter().enumerate() {
                let mut w = std::fs::OpenOptions::new().write(true).open(&f2)?;
                w.write_all(&payload)?;
                drop(w);
                let deadline = Instant::now() + Duration::from_secs(10);
                let gone = |s: &SourceState| matches!(s, SourceState::Reconnecting { attempt, .. } if *attempt as usize == k + 1);
                while !gone(&stats.state()) && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(10));
                }
                seen.push(stats.state());
            }
            stop2.stop();
            drop(std::fs::OpenOptions::new().write(true).open(&f2)?);
            Ok(seen)
        });
        let mut n = 0;
        while let Ok(Some(f)) = src.next_frame() {
            assert_eq!(f.source, fifo.display().to_string());
            n += 1;
        }
        assert_eq!(n, 3, "frames of both writers");
        let seen = writers.join().ok().and_then(|r| r.ok()).unwrap_or_default();
        assert_eq!(seen.len(), 2, "{seen:?}");
        for (i, s) in seen.iter().enumerate() {
            match s {
                SourceState::Reconnecting {
                    attempt,
                    last_error,
                    ..
                } => {
                    assert_eq!(*attempt as usize, i + 1);
                    assert!(
                        last_error.contains("waiting for a new writer"),
                        "{last_error}"
                    );
                }
                other => panic!("after writer {i}: {other:?}"),
            }
        }
        assert_eq!(src.stats().state(), SourceState::Ended);
    }
}
