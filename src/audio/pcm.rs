//! Raw 16-bit PCM from a byte stream: a pipe from `arecord`, a FIFO, standard input.
//!
//! The daemon does not talk to ALSA or PulseAudio itself (that would tie the binary to a
//! sound stack and its libraries, and a board's microphone setup is the system's business):
//! any recorder that writes little-endian signed 16-bit samples to a pipe will do, e.g.
//! `arecord -f S16_LE -r 16000 -c 1 | adaptd ...` or `parec --format=s16le`. S16_LE is the
//! format every capture tool offers and the one USB microphones deliver natively.
//!
//! Two layers:
//!
//! - [`PcmDecoder`] turns bytes into mono `f32` however the bytes are split. A read from a pipe
//!   returns whatever is there, which can end in the middle of a sample (an odd byte) or of a
//!   stereo frame; the remainder is carried over to the next call, never dropped or misaligned
//!   (a misaligned 16-bit stream turns speech into loud noise).
//! - [`PcmReader`] reads a blocking [`Read`] into chunks. `arecord` writes a WAV header
//!   unless told `-t raw`; with [`Header::Detect`] a leading `RIFF....WAVE` header is parsed
//!   (its rate and channel count win over the configured ones, since they describe the
//!   actual bytes) and anything else is taken as raw audio from the first byte.
//!
//! Samples are scaled by 1/32768 and channels averaged, exactly like [`super::wav`], so a
//! live stream and the same audio saved as a WAV file give the same voice print.

use std::io::{self, Read};

use super::wav::{self, SampleFormat, WavError};

/// Rate and channel count of a raw stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PcmFormat {
    pub sample_rate: u32,
    pub channels: u16,
}

/// Whether a stream may start with a WAV header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Header {
    /// Every byte is audio.
    Raw,
    /// A leading `RIFF....WAVE` header is parsed and skipped; otherwise raw.
    Detect,
}

/// Why a stream could not be read.
#[derive(Debug, thiserror::Error)]
pub enum PcmError {
    #[error("audio stream: could not read: {0}")]
    Io(#[from] io::Error),
    #[error("audio stream: {problem}")]
    Config { problem: String },
    #[error("audio stream: bad WAV header: {0}")]
    Header(WavError),
    #[error("audio stream: ended inside its WAV header ({detail})")]
    TruncatedHeader { detail: String },
    #[error(
        "audio stream: the WAV header says {format}; adaptd reads 16-bit little-endian PCM from \
         a pipe (record with `arecord -f S16_LE -r 16000 -c 1`)"
    )]
    NotS16 { format: String },
}

/// Most channels accepted: capture devices have at most a few dozen, and a header claiming
/// 65535 would make every read buffer 128 KiB per frame.
pub const MAX_CHANNELS: u16 = 64;

/// Bytes-to-samples conversion that survives reads ending mid-frame.
#[derive(Debug, Clone)]
pub struct PcmDecoder {
    channels: usize,
    /// Start of an incomplete frame from the previous call (fewer than `2 * channels` bytes).
    carry: Vec<u8>,
}

impl PcmDecoder {
    /// A decoder for interleaved S16_LE with `channels` channels.
    pub fn new(channels: u16) -> Result<Self, PcmError> {
        if channels == 0 || channels > MAX_CHANNELS {
            return Err(PcmError::Config {
                problem: format!("{channels} channels (1 to {MAX_CHANNELS} are read)"),
            });
        }
        Ok(PcmDecoder {
            channels: usize::from(channels),
            carry: Vec::with_capacity(usize::from(channels) * 2),
        })
    }

    fn frame_bytes(&self) -> usize {
        self.channels * 2
    }

    /// Bytes of an incomplete frame waiting for the next call.
    pub fn pending_bytes(&self) -> usize {
        self.carry.len()
    }

    /// Forgets an incomplete frame (at the end of a stream); returns how many bytes it had.
    pub fn discard_pending(&mut self) -> usize {
        let n = self.carry.len();
        self.carry.clear();
        n
    }

    /// Appends the mono samples of every frame completed by `bytes` to `out`; returns how many.
    pub fn decode(&mut self, mut bytes: &[u8], out: &mut Vec<f32>) -> usize {
        let fb = self.frame_bytes();
        let before = out.len();
        if !self.carry.is_empty() {
            let need = fb - self.carry.len();
            let take = need.min(bytes.len());
            self.carry.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            if self.carry.len() < fb {
                return 0;
            }
            let frame = std::mem::take(&mut self.carry);
            out.push(self.mono(&frame));
            self.carry = frame;
            self.carry.clear();
        }
        let whole = bytes.len() / fb * fb;
        out.reserve(whole / fb);
        for frame in bytes[..whole].chunks_exact(fb) {
            out.push(self.mono(frame));
        }
        self.carry.extend_from_slice(&bytes[whole..]);
        out.len() - before
    }

    fn mono(&self, frame: &[u8]) -> f32 {
        let sum: f32 = frame
            .chunks_exact(2)
            .map(|s| f32::from(i16::from_le_bytes([s[0], s[1]])) / 32768.0)
            .sum();
        if self.channels == 1 {
            sum
        } else {
            sum / self.channels as f32
        }
    }
}

/// Largest chunk skipped between a streamed WAV header and its audio (a `LIST` of tags is a
/// few hundred bytes; megabytes mean the bytes are not a header at all).
const MAX_HEADER_CHUNK: u64 = 1 << 20;

/// Reads a blocking byte stream into chunks of mono samples.
#[derive(Debug)]
pub struct PcmReader<R> {
    reader: R,
    format: PcmFormat,
    decoder: PcmDecoder,
    buf: Vec<u8>,
    /// Audio bytes read while looking for a header, decoded first.
    prefix: Vec<u8>,
    had_header: bool,
    dropped: usize,
    done: bool,
}

/// Reads until `buf` is full or the stream ends; returns the bytes read.
fn read_full<R: Read>(r: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

impl<R: Read> PcmReader<R> {
    /// Wraps `reader`; chunks hold at most `chunk_frames` frames. With [`Header::Detect`] this
    /// reads (blocking) until the first 12 bytes, and a header if there is one, have arrived.
    pub fn new(
        mut reader: R,
        format: PcmFormat,
        chunk_frames: usize,
        header: Header,
    ) -> Result<Self, PcmError> {
        if format.sample_rate == 0 {
            return Err(PcmError::Config {
                problem: "sample rate 0 Hz".into(),
            });
        }
        if chunk_frames == 0 {
            return Err(PcmError::Config {
                problem: "chunk of 0 frames".into(),
            });
        }
        let mut format = format;
        let mut prefix = Vec::new();
        let mut had_header = false;
        if header == Header::Detect {
            let mut head = [0u8; 12];
            let n = read_full(&mut reader, &mut head)?;
            let is_wav = n == 12
                && (head.starts_with(b"RIFF") || head.starts_with(b"RF64"))
                && &head[8..12] == b"WAVE";
            if is_wav {
                format = read_stream_header(&mut reader)?;
                had_header = true;
            } else {
                prefix.extend_from_slice(&head[..n]);
            }
        }
        let decoder = PcmDecoder::new(format.channels)?;
        let buf = vec![0u8; chunk_frames * decoder.frame_bytes()];
        Ok(PcmReader {
            reader,
            format,
            decoder,
            buf,
            prefix,
            had_header,
            dropped: 0,
            done: false,
        })
    }

    /// The stream's format (from its WAV header, if it had one).
    pub fn format(&self) -> PcmFormat {
        self.format
    }

    /// True when the stream started with a WAV header.
    pub fn had_wav_header(&self) -> bool {
        self.had_header
    }

    /// Bytes of an incomplete last frame dropped at the end of the stream.
    pub fn dropped_bytes(&self) -> usize {
        self.dropped
    }

    /// The next chunk of mono samples (at least one), as soon as one read has produced some;
    /// `None` once the stream has ended.
    pub fn read_chunk(&mut self) -> Result<Option<Vec<f32>>, PcmError> {
        let mut out = Vec::new();
        if !self.prefix.is_empty() {
            let prefix = std::mem::take(&mut self.prefix);
            self.decoder.decode(&prefix, &mut out);
            if !out.is_empty() {
                return Ok(Some(out));
            }
        }
        while !self.done {
            // Never read more than completes `chunk_frames` frames together with the carry.
            let room = self.buf.len() - self.decoder.pending_bytes();
            match self.reader.read(&mut self.buf[..room]) {
                Ok(0) => {
                    self.done = true;
                    self.dropped += self.decoder.discard_pending();
                }
                Ok(n) => {
                    if self.decoder.decode(&self.buf[..n], &mut out) > 0 {
                        return Ok(Some(out));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(None)
    }
}

impl<R: Read> Iterator for PcmReader<R> {
    type Item = Result<Vec<f32>, PcmError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.read_chunk().transpose()
    }
}

/// Reads the chunks after `RIFF....WAVE` up to the start of the audio; returns its format.
fn read_stream_header<R: Read>(reader: &mut R) -> Result<PcmFormat, PcmError> {
    let mut fmt = None;
    loop {
        let mut head = [0u8; 8];
        if read_full(reader, &mut head)? < 8 {
            return Err(PcmError::TruncatedHeader {
                detail: "no data chunk".into(),
            });
        }
        let size = u64::from(u32::from_le_bytes([head[4], head[5], head[6], head[7]]));
        if &head[..4] == b"data" {
            // The size is a placeholder in a stream; the audio runs to the end.
            break;
        }
        if size > MAX_HEADER_CHUNK {
            return Err(PcmError::TruncatedHeader {
                detail: format!(
                    "a '{}' chunk of {size} bytes before the audio",
                    String::from_utf8_lossy(&head[..4])
                ),
            });
        }
        let padded = (size + (size & 1)) as usize;
        let mut body = vec![0u8; padded];
        if read_full(reader, &mut body)? < padded {
            return Err(PcmError::TruncatedHeader {
                detail: format!("inside the '{}' chunk", String::from_utf8_lossy(&head[..4])),
            });
        }
        if &head[..4] == b"fmt " {
            fmt = Some(wav::parse_fmt(&body[..size as usize], "stream").map_err(PcmError::Header)?);
        }
    }
    let Some(fmt) = fmt else {
        return Err(PcmError::Header(WavError::BadHeader {
            name: "stream".into(),
            problem: "no 'fmt ' chunk before the audio".into(),
        }));
    };
    if fmt.format != SampleFormat::I16 {
        return Err(PcmError::NotS16 {
            format: fmt.format.to_string(),
        });
    }
    Ok(PcmFormat {
        sample_rate: fmt.sample_rate,
        channels: fmt.channels,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audio::wav::tests::Builder;

    /// A reader that hands out its bytes in a fixed pattern of read sizes, like a pipe.
    #[derive(Debug)]
    struct Trickle {
        data: Vec<u8>,
        pos: usize,
        sizes: Vec<usize>,
        call: usize,
        interrupt_every: usize,
    }

    impl Read for Trickle {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.call += 1;
            if self.interrupt_every > 0 && self.call.is_multiple_of(self.interrupt_every) {
                return Err(io::Error::new(io::ErrorKind::Interrupted, "signal"));
            }
            let want = self.sizes[self.call % self.sizes.len()].min(buf.len());
            let n = want.min(self.data.len() - self.pos);
            buf[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
            self.pos += n;
            Ok(n)
        }
    }

    fn trickle(data: Vec<u8>, sizes: &[usize]) -> Trickle {
        Trickle {
            data,
            pos: 0,
            sizes: sizes.to_vec(),
            call: 0,
            interrupt_every: 5,
        }
    }

    fn s16(samples: &[i16]) -> Vec<u8> {
        samples.iter().flat_map(|s| s.to_le_bytes()).collect()
    }

    fn read_all<R: Read>(r: &mut PcmReader<R>) -> Vec<f32> {
        let mut out = Vec::new();
        while let Some(c) = r.read_chunk().unwrap() {
            assert!(!c.is_empty());
            out.extend(c);
        }
        out
    }

    const MONO16K: PcmFormat = PcmFormat {
        sample_rate: 16000,
        channels: 1,
    };

    #[test]
    fn odd_byte_reads_keep_alignment() {
        let samples: Vec<i16> = (0..1000).map(|i| (i * 37 - 18000) as i16).collect();
        let expect: Vec<f32> = samples.iter().map(|s| f32::from(*s) / 32768.0).collect();
        for sizes in [vec![1usize], vec![3], vec![1, 2, 7, 1, 1000], vec![4096]] {
            let mut r =
                PcmReader::new(trickle(s16(&samples), &sizes), MONO16K, 256, Header::Raw).unwrap();
            assert_eq!(read_all(&mut r), expect, "read sizes {sizes:?}");
            assert_eq!(r.dropped_bytes(), 0);
        }
    }

    #[test]
    fn stereo_frames_split_across_reads_are_averaged() {
        let bytes = s16(&[16384, 0, -32768, 0, 8192, 8192]);
        let fmt = PcmFormat {
            sample_rate: 48000,
            channels: 2,
        };
        let mut r = PcmReader::new(trickle(bytes, &[3, 1, 5]), fmt, 2, Header::Raw).unwrap();
        assert_eq!(read_all(&mut r), vec![0.25, -0.5, 0.25]);
    }

    #[test]
    fn chunks_are_bounded() {
        let bytes = s16(&[1; 1000]);
        let mut r = PcmReader::new(trickle(bytes, &[100_000]), MONO16K, 160, Header::Raw).unwrap();
        let mut sizes = Vec::new();
        while let Some(c) = r.read_chunk().unwrap() {
            sizes.push(c.len());
        }
        assert!(sizes.iter().all(|n| *n <= 160), "{sizes:?}");
        assert_eq!(sizes.iter().sum::<usize>(), 1000);
    }

    #[test]
    fn trailing_odd_byte_is_dropped_and_counted() {
        let mut bytes = s16(&[100, 200]);
        bytes.push(7);
        let mut r = PcmReader::new(trickle(bytes, &[2]), MONO16K, 64, Header::Raw).unwrap();
        assert_eq!(read_all(&mut r).len(), 2);
        assert_eq!(r.dropped_bytes(), 1);
        assert!(r.read_chunk().unwrap().is_none());
    }

    #[test]
    fn arecord_style_wav_header_is_parsed_and_wins() {
        let mut b = Builder::pcm16(2, 44100, &[1000, 3000, -1000, -3000]);
        b.data_size = Some(0x7FFF_FFFF);
        b.before_data = vec![(b"LIST".to_vec(), b"INFOabc".to_vec())];
        let mut r =
            PcmReader::new(trickle(b.build(), &[5, 1]), MONO16K, 64, Header::Detect).unwrap();
        assert!(r.had_wav_header());
        assert_eq!(
            r.format(),
            PcmFormat {
                sample_rate: 44100,
                channels: 2
            }
        );
        assert_eq!(read_all(&mut r), vec![2000.0 / 32768.0, -2000.0 / 32768.0]);
    }

    #[test]
    fn raw_stream_with_detect_keeps_its_first_bytes() {
        let samples: Vec<i16> = (0..20).map(|i| i * 100).collect();
        let mut r =
            PcmReader::new(trickle(s16(&samples), &[7]), MONO16K, 64, Header::Detect).unwrap();
        assert!(!r.had_wav_header());
        let got = read_all(&mut r);
        assert_eq!(got.len(), 20);
        assert_eq!(got[19], 1900.0 / 32768.0);
        // Shorter than the 12 bytes looked at.
        let mut r =
            PcmReader::new(trickle(s16(&[5, 6, 7]), &[1]), MONO16K, 64, Header::Detect).unwrap();
        assert_eq!(read_all(&mut r).len(), 3);
        // Empty stream.
        let mut r = PcmReader::new(trickle(vec![], &[1]), MONO16K, 64, Header::Detect).unwrap();
        assert!(r.read_chunk().unwrap().is_none());
    }

    #[test]
    fn bad_stream_headers_are_explained() {
        let mut b = Builder::pcm16(1, 16000, &[]);
        b.bits = 24;
        b.data = vec![0; 6];
        let err =
            PcmReader::new(trickle(b.build(), &[64]), MONO16K, 64, Header::Detect).unwrap_err();
        assert!(err.to_string().contains("arecord -f S16_LE"), "{err}");
        let full = Builder::pcm16(1, 16000, &[1, 2]).build();
        let err = PcmReader::new(
            trickle(full[..30].to_vec(), &[64]),
            MONO16K,
            64,
            Header::Detect,
        )
        .unwrap_err();
        assert!(matches!(err, PcmError::TruncatedHeader { .. }), "{err}");
        let mut b = Builder::pcm16(1, 16000, &[1, 2]);
        b.tag = 7;
        b.bits = 8;
        let err =
            PcmReader::new(trickle(b.build(), &[64]), MONO16K, 64, Header::Detect).unwrap_err();
        assert!(err.to_string().contains("μ-law"), "{err}");
    }

    #[test]
    fn bad_configs_are_refused() {
        let zero_ch = PcmFormat {
            sample_rate: 16000,
            channels: 0,
        };
        assert!(PcmReader::new(io::empty(), zero_ch, 64, Header::Raw).is_err());
        let many = PcmFormat {
            sample_rate: 16000,
            channels: 65535,
        };
        let err = PcmReader::new(io::empty(), many, 64, Header::Raw).unwrap_err();
        assert!(err.to_string().contains("65535 channels"), "{err}");
        let zero_rate = PcmFormat {
            sample_rate: 0,
            channels: 1,
        };
        assert!(PcmReader::new(io::empty(), zero_rate, 64, Header::Raw).is_err());
        assert!(PcmReader::new(io::empty(), MONO16K, 0, Header::Raw).is_err());
    }

    #[test]
    fn read_errors_are_reported() {
        #[derive(Debug)]
        struct Broken;
        impl Read for Broken {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                Err(io::Error::new(io::ErrorKind::BrokenPipe, "gone"))
            }
        }
        let mut r = PcmReader::new(Broken, MONO16K, 64, Header::Raw).unwrap();
        assert!(matches!(r.read_chunk(), Err(PcmError::Io(_))));
    }

    #[test]
    fn decoder_alone_handles_any_split() {
        let bytes = s16(&[-32768, 32767, 0, 1]);
        let mut whole = Vec::new();
        PcmDecoder::new(1).unwrap().decode(&bytes, &mut whole);
        for split in 0..bytes.len() {
            let mut d = PcmDecoder::new(1).unwrap();
            let mut out = Vec::new();
            d.decode(&bytes[..split], &mut out);
            d.decode(&bytes[split..], &mut out);
            assert_eq!(out, whole, "split at {split}");
            assert_eq!(d.pending_bytes(), 0);
        }
        assert_eq!(whole[0], -1.0);
    }
}
