//! Reading WAV files into mono `f32` samples, with limits checked before any allocation.
//!
//! WAV files reach adaptd from enrolment uploads, MQTT payloads and recordings made by other
//! tools, so the parser assumes nothing about who wrote them:
//!
//! - **Chunks are walked, not assumed.** `fmt ` and `data` are found wherever they are; `LIST`,
//!   `fact`, `bext`, `JUNK`, `cue `... are skipped; an odd-sized chunk is followed by its pad
//!   byte (and a writer that forgot the pad byte is tolerated). RF64/BW64 (`ds64`) sizes are
//!   honoured.
//! - **Streaming writers** (a WAV written to a pipe cannot be rewound to patch its sizes) leave
//!   the data size at `0`, `0xFFFFFFFF` or about `0x7FFFFFFF`; those mean "read to the end of
//!   the file". Any other size that runs past the end of the file is a *truncated* file and is
//!   refused, so half a recording never passes silently as a whole one.
//! - **Formats:** PCM 8 (unsigned), 16, 24 and 32-bit, IEEE float 32 and 64-bit, plain or
//!   `WAVE_FORMAT_EXTENSIBLE` (a 24-bit sample in a 32-bit container is read as 32-bit, which
//!   is exact). 8-bit PCM is supported rather than refused: it is unsigned with a 128 offset,
//!   a two-line case, and old voice recorders and telephony tools still write it. Compressed
//!   codecs (ADPCM, μ-law, A-law, MP3 in WAV...) are refused with the `ffmpeg` command that
//!   converts them.
//! - **Scaling** is the one libsndfile (and so librosa/Resemblyzer) uses: integers are divided
//!   by 2^(bits-1) (`-32768 → -1.0`, `32767 → 0.99997`), 8-bit is `(x - 128) / 128`, floats are
//!   kept as they are (values beyond ±1 are not clamped: librosa does not clamp them either;
//!   [`Wav::clipped_samples`] counts them so a caller can warn about a clipping recording).
//! - **Channels** are averaged into mono, as `librosa.load(mono=True)` does.
//! - **NaN or infinite** float samples are refused: one NaN spreads through the FFT into every
//!   mel band of its frames and through the speaker network's recurrent state into the whole
//!   embedding, so it cannot be "mostly fine".
//! - **Limits** ([`WavLimits`]) on the file size and the duration are checked from the file
//!   length and the header, before the sample buffer is allocated.
//!
//! Why not the `hound` crate: checked with hound 3.5.1, it refuses a data size of
//! `0xFFFFFFFF` ("data chunk length is not a multiple of sample size"), so every 16-bit WAV
//! that ffmpeg wrote to a pipe; reads a data size of 0 as zero samples without a word; does
//! not skip the pad byte after an odd-sized chunk and fails on the next header ("Failed to
//! read enough bytes"); does the same after a `fact` chunk longer than 4 bytes; and opens a
//! truncated file fine, failing only part-way through its samples. The format is simple
//! enough that a parser which handles all of that is shorter than the workarounds.

use crate::bounded::{read_capped_as, CappedReadError};
use std::fmt;
use std::path::Path;

/// What to tell a user whose file adaptd cannot read.
pub const FFMPEG_HINT: &str =
    "convert it with: ffmpeg -i in.wav -ar 16000 -ac 1 -c:a pcm_s16le out.wav";

/// Limits applied to every WAV before its samples are decoded.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WavLimits {
    /// Largest file (or payload) accepted, in bytes.
    pub max_bytes: u64,
    /// Longest audio accepted, in seconds (checked from the header, before allocating).
    pub max_seconds: f64,
}

impl Default for WavLimits {
    /// 256 MiB and 10 minutes: a 10-minute 48 kHz stereo 24-bit recording is 173 MB, and 10
    /// minutes of mono `f32` at the source rate is at most about 230 MB at 96 kHz; enrolment
    /// clips are seconds long, so anything beyond this is a mistake or an attack.
    fn default() -> Self {
        WavLimits {
            max_bytes: 256 << 20,
            max_seconds: 600.0,
        }
    }
}

/// How the samples are stored in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SampleFormat {
    /// 8-bit unsigned PCM (128 is silence).
    U8,
    /// 16-bit signed PCM.
    I16,
    /// 24-bit signed PCM, packed in 3 bytes.
    I24,
    /// 32-bit signed PCM (also a 24-bit sample left-justified in a 32-bit container).
    I32,
    /// 32-bit IEEE float.
    F32,
    /// 64-bit IEEE float.
    F64,
}

impl SampleFormat {
    /// Bytes one sample occupies in the file.
    pub fn bytes(self) -> usize {
        match self {
            SampleFormat::U8 => 1,
            SampleFormat::I16 => 2,
            SampleFormat::I24 => 3,
            SampleFormat::I32 | SampleFormat::F32 => 4,
            SampleFormat::F64 => 8,
        }
    }
}

impl fmt::Display for SampleFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SampleFormat::U8 => "8-bit unsigned PCM",
            SampleFormat::I16 => "16-bit PCM",
            SampleFormat::I24 => "24-bit PCM",
            SampleFormat::I32 => "32-bit PCM",
            SampleFormat::F32 => "32-bit float",
            SampleFormat::F64 => "64-bit float",
        })
    }
}

/// What the header says, plus how the data chunk was found.
#[derive(Debug, Clone, PartialEq)]
pub struct WavInfo {
    pub sample_rate: u32,
    /// Channels in the file (the decoded samples are always mono).
    pub channels: u16,
    pub format: SampleFormat,
    /// Bits that carry signal (`< format.bytes() * 8` for e.g. 20-bit audio in 24-bit
    /// containers); informational only, decoding uses the container size.
    pub valid_bits: u16,
    /// Sample frames (one sample per channel) in the data chunk.
    pub frames: usize,
    /// The data size was a streaming placeholder (0, 0xFFFFFFFF, ~0x7FFFFFFF) and the data
    /// was read to the end of the file.
    pub streamed: bool,
    /// Bytes at the end of the data that do not fill a whole frame (dropped).
    pub partial_frame_bytes: usize,
}

impl WavInfo {
    /// Duration of the audio in seconds.
    pub fn duration_secs(&self) -> f64 {
        self.frames as f64 / f64::from(self.sample_rate)
    }
}

/// A decoded WAV: mono samples at the file's own rate (see [`super::resample`] for 16 kHz).
#[derive(Debug, Clone, PartialEq)]
pub struct Wav {
    /// Mono samples, channels averaged, nominally in [-1, 1].
    pub samples: Vec<f32>,
    pub info: WavInfo,
    /// Samples (counted per channel, before the downmix) at or beyond full scale: a clipping
    /// recording distorts the spectrum and deserves a warning, not a refusal.
    pub clipped_samples: usize,
    /// Largest absolute sample value before the downmix.
    pub peak: f32,
}

/// Why a WAV could not be read. Every message names the input and says what to do.
#[derive(Debug, thiserror::Error)]
pub enum WavError {
    #[error("{name}: could not read: {source}")]
    Io {
        name: String,
        source: std::io::Error,
    },
    #[error("{name}: empty file (0 bytes)")]
    Empty { name: String },
    #[error("{name}: {bytes} bytes is over the {max}-byte limit; cut the recording shorter")]
    TooLarge { name: String, bytes: u64, max: u64 },
    #[error(
        "{name}: {seconds:.1} s of audio is over the {max_seconds:.1} s limit; \
         refused before decoding (cut the recording shorter)"
    )]
    TooLong {
        name: String,
        seconds: f64,
        max_seconds: f64,
    },
    #[error("{name}: not a WAV file ({found}); {FFMPEG_HINT}")]
    NotWav { name: String, found: String },
    #[error("{name}: truncated WAV file: {detail} (was it copied while still being written?)")]
    Truncated { name: String, detail: String },
    #[error("{name}: malformed WAV header: {problem}; {FFMPEG_HINT}")]
    BadHeader { name: String, problem: String },
    #[error(
        "{name}: {codec} audio is not supported (adaptd reads PCM and float WAV); {FFMPEG_HINT}"
    )]
    UnsupportedCodec { name: String, codec: String },
    #[error("{name}: no audio: the data chunk is empty")]
    NoSamples { name: String },
    #[error(
        "{name}: {count} samples are NaN or infinite (first in frame {first_frame}); the file \
         is corrupt: re-export it"
    )]
    NonFinite {
        name: String,
        count: usize,
        first_frame: usize,
    },
}

/// Reads and decodes a WAV file; the file size is checked before it is read.
pub fn read_file(path: &Path, limits: &WavLimits) -> Result<Wav, WavError> {
    let bytes: Vec<u8> = read_capped_as::<WavError>(path, limits.max_bytes)?;
    read_bytes(&bytes, &path.display().to_string(), limits)
}

impl CappedReadError for WavError {
    fn io(name: String, source: std::io::Error) -> Self {
        WavError::Io { name, source }
    }
    fn too_large(name: String, bytes: u64, max: u64) -> Self {
        WavError::TooLarge { name, bytes, max }
    }
}

/// Decodes WAV bytes; `name` identifies the input in errors.
pub fn read_bytes(bytes: &[u8], name: &str, limits: &WavLimits) -> Result<Wav, WavError> {
    if bytes.len() as u64 > limits.max_bytes {
        return Err(WavError::TooLarge {
            name: name.into(),
            bytes: bytes.len() as u64,
            max: limits.max_bytes,
        });
    }
    let layout = locate(bytes, name)?;
    let info = &layout.info;
    let seconds = info.duration_secs();
    if seconds > limits.max_seconds {
        return Err(WavError::TooLong {
            name: name.into(),
            seconds,
            max_seconds: limits.max_seconds,
        });
    }
    let data = &bytes[layout.data_start..layout.data_start + info.frames * layout.block_align];
    decode(data, layout.info.clone(), layout.block_align, name)
}

/// Reads only the header: format, rate, channels and length, without decoding samples.
pub fn probe_bytes(bytes: &[u8], name: &str) -> Result<WavInfo, WavError> {
    locate(bytes, name).map(|l| l.info)
}

/// The `fmt ` chunk, reduced to what decoding needs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Fmt {
    pub format: SampleFormat,
    pub channels: u16,
    pub sample_rate: u32,
    pub valid_bits: u16,
    /// Bytes per frame: `channels * format.bytes()`.
    pub block_align: usize,
}

/// Where the samples are, once the chunks have been walked.
struct Layout {
    info: WavInfo,
    data_start: usize,
    block_align: usize,
}

const EXTENSIBLE_GUID_TAIL: [u8; 14] = [
    0x00, 0x00, 0x00, 0x00, 0x10, 0x00, 0x80, 0x00, 0x00, 0xAA, 0x00, 0x38, 0x9B, 0x71,
];

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

/// A name for a WAVE format tag, for error messages.
fn codec_name(tag: u16) -> String {
    match tag {
        0x0002 => "Microsoft ADPCM".into(),
        0x0006 => "A-law".into(),
        0x0007 => "μ-law".into(),
        0x0011 => "IMA ADPCM".into(),
        0x0031 => "GSM 6.10".into(),
        0x0050 => "MPEG".into(),
        0x0055 => "MP3".into(),
        0x00FF | 0x1610 => "AAC".into(),
        0x2000 => "AC-3".into(),
        0xF1AC => "FLAC".into(),
        other => format!("format tag 0x{other:04X}"),
    }
}

/// Parses the body of a `fmt ` chunk.
pub(crate) fn parse_fmt(body: &[u8], name: &str) -> Result<Fmt, WavError> {
    let bad = |problem: String| WavError::BadHeader {
        name: name.into(),
        problem,
    };
    if body.len() < 16 {
        return Err(bad(format!(
            "the fmt chunk is {} bytes, at least 16 are needed",
            body.len()
        )));
    }
    let mut tag = u16_at(body, 0);
    let channels = u16_at(body, 2);
    let sample_rate = u32_at(body, 4);
    let block_align = usize::from(u16_at(body, 12));
    let bits = u16_at(body, 14);
    let mut valid_bits = bits;
    if tag == 0xFFFE {
        // WAVE_FORMAT_EXTENSIBLE: cbSize (22), valid bits, channel mask, sub-format GUID whose
        // first two bytes are the real format tag.
        if body.len() < 40 {
            return Err(bad(format!(
                "WAVE_FORMAT_EXTENSIBLE needs a 40-byte fmt chunk, this one has {}",
                body.len()
            )));
        }
        let vb = u16_at(body, 18);
        if vb != 0 {
            valid_bits = vb;
        }
        if body[26..40] != EXTENSIBLE_GUID_TAIL {
            return Err(WavError::UnsupportedCodec {
                name: name.into(),
                codec: "an unknown WAVE_FORMAT_EXTENSIBLE sub-format".into(),
            });
        }
        tag = u16_at(body, 24);
    }
    if channels == 0 {
        return Err(bad("the header says 0 channels".into()));
    }
    if sample_rate == 0 {
        return Err(bad("the header says a sample rate of 0 Hz".into()));
    }
    let container_bytes = usize::from(bits).div_ceil(8);
    let format = match (tag, container_bytes) {
        (1, 1) => SampleFormat::U8,
        (1, 2) => SampleFormat::I16,
        (1, 3) => SampleFormat::I24,
        (1, 4) => SampleFormat::I32,
        (3, 4) => SampleFormat::F32,
        (3, 8) => SampleFormat::F64,
        (1, _) | (3, _) => {
            return Err(WavError::UnsupportedCodec {
                name: name.into(),
                codec: format!("{bits}-bit {}", if tag == 1 { "PCM" } else { "float" }),
            })
        }
        (other, _) => {
            return Err(WavError::UnsupportedCodec {
                name: name.into(),
                codec: codec_name(other),
            })
        }
    };
    if valid_bits > bits {
        return Err(bad(format!(
            "{valid_bits} valid bits in a {bits}-bit container"
        )));
    }
    let frame_bytes = usize::from(channels) * format.bytes();
    // Some writers leave block_align at 0; the container size and channel count define it.
    if block_align != 0 && block_align != frame_bytes {
        return Err(bad(format!(
            "block align is {block_align} bytes, but {channels} channel(s) of {format} take \
             {frame_bytes}"
        )));
    }
    Ok(Fmt {
        format,
        channels,
        sample_rate,
        valid_bits,
        block_align: frame_bytes,
    })
}

/// A description of what the bytes are, for "not a WAV file" errors.
fn describe_signature(bytes: &[u8]) -> String {
    let starts = |sig: &[u8]| bytes.starts_with(sig);
    let what = if starts(b"OggS") {
        "it is an Ogg file"
    } else if starts(b"fLaC") {
        "it is a FLAC file"
    } else if starts(b"ID3") || (bytes.len() >= 2 && bytes[0] == 0xFF && bytes[1] & 0xE0 == 0xE0) {
        "it looks like MP3"
    } else if starts(b"FORM") {
        "it is an AIFF/IFF file"
    } else if bytes.len() >= 8 && &bytes[4..8] == b"ftyp" {
        "it is an MP4/M4A file"
    } else if starts(b"RIFF") {
        "a RIFF file of another kind (no WAVE tag)"
    } else {
        ""
    };
    if !what.is_empty() {
        return what.into();
    }
    let head: Vec<String> = bytes.iter().take(4).map(|b| format!("{b:02x}")).collect();
    format!(
        "it starts with bytes {} instead of RIFF....WAVE",
        head.join(" ")
    )
}

/// True for a chunk id of four printable ASCII characters (used to detect a missing pad byte).
fn plausible_id(b: &[u8]) -> bool {
    b.len() >= 4 && b[..4].iter().all(|c| (0x20..0x7F).contains(c))
}

/// Walks the chunks and finds the format and the data.
fn locate(bytes: &[u8], name: &str) -> Result<Layout, WavError> {
    let truncated = |detail: String| WavError::Truncated {
        name: name.into(),
        detail,
    };
    if bytes.is_empty() {
        return Err(WavError::Empty { name: name.into() });
    }
    let riff_like = [b"RIFF", b"RF64", b"BW64"]
        .iter()
        .any(|sig| bytes.starts_with(&sig[..bytes.len().min(4)]));
    if bytes.len() < 12 {
        return if riff_like {
            Err(truncated(format!(
                "{} bytes, shorter than the 12-byte RIFF header",
                bytes.len()
            )))
        } else {
            Err(WavError::NotWav {
                name: name.into(),
                found: describe_signature(bytes),
            })
        };
    }
    if !riff_like || &bytes[8..12] != b"WAVE" {
        return Err(WavError::NotWav {
            name: name.into(),
            found: describe_signature(bytes),
        });
    }
    let rf64 = !bytes.starts_with(b"RIFF");

    let mut fmt: Option<Fmt> = None;
    let mut ds64_data: Option<u64> = None;
    // (start, length in bytes, streamed)
    let mut data: Option<(usize, usize, bool)> = None;
    let mut pos = 12usize;
    while pos + 8 <= bytes.len() && (fmt.is_none() || data.is_none()) {
        let id = &bytes[pos..pos + 4];
        let size32 = u32_at(bytes, pos + 4);
        let body_start = pos + 8;
        let remaining = bytes.len() - body_start;
        match id {
            b"data" => {
                let declared = if rf64 && size32 == 0xFFFF_FFFF {
                    ds64_data
                } else {
                    Some(u64::from(size32))
                };
                let (len, streamed) = match declared {
                    Some(d) if d <= remaining as u64 && d != 0 => (d as usize, false),
                    // Placeholders written by tools that could not seek back to patch the
                    // size: read whatever follows.
                    Some(0) | None => (remaining, true),
                    Some(d) if d >= 0x7FFF_0000 => (remaining, true),
                    Some(d) => {
                        return Err(truncated(format!(
                            "the data chunk declares {d} bytes but only {remaining} follow"
                        )))
                    }
                };
                data = Some((body_start, len, streamed));
                if streamed {
                    break;
                }
                pos = next_chunk(bytes, body_start, len);
            }
            _ => {
                let size = size32 as usize;
                if size > remaining {
                    if id == b"fmt " || id == b"ds64" || data.is_none() {
                        return Err(truncated(format!(
                            "the '{}' chunk declares {size} bytes but only {remaining} follow",
                            String::from_utf8_lossy(id)
                        )));
                    }
                    break;
                }
                let body = &bytes[body_start..body_start + size];
                if id == b"fmt " {
                    fmt = Some(parse_fmt(body, name)?);
                } else if id == b"ds64" && body.len() >= 16 {
                    ds64_data = Some(u64_at(body, 8));
                }
                pos = next_chunk(bytes, body_start, size);
            }
        }
    }
    let Some(fmt) = fmt else {
        return Err(if pos < bytes.len() && data.is_none() {
            truncated("the file ends inside a chunk header".into())
        } else {
            WavError::BadHeader {
                name: name.into(),
                problem: "no 'fmt ' chunk".into(),
            }
        });
    };
    let Some((data_start, data_len, streamed)) = data else {
        return Err(truncated(
            "no 'data' chunk: the file ends before its audio".into(),
        ));
    };
    let frames = data_len / fmt.block_align;
    if frames == 0 {
        return Err(WavError::NoSamples { name: name.into() });
    }
    Ok(Layout {
        info: WavInfo {
            sample_rate: fmt.sample_rate,
            channels: fmt.channels,
            format: fmt.format,
            valid_bits: fmt.valid_bits,
            frames,
            streamed,
            partial_frame_bytes: data_len - frames * fmt.block_align,
        },
        data_start,
        block_align: fmt.block_align,
    })
}

/// Offset of the chunk after one whose body is `body_start..body_start+size`: bodies of odd
/// size are followed by a pad byte, unless the writer forgot it (then the next id is found
/// right after the body).
fn next_chunk(bytes: &[u8], body_start: usize, size: usize) -> usize {
    let end = body_start + size;
    if size % 2 == 1 {
        let padded = end + 1;
        if !plausible_id(bytes.get(padded..).unwrap_or(&[]))
            && plausible_id(bytes.get(end..).unwrap_or(&[]))
        {
            return end;
        }
        return padded;
    }
    end
}

/// Decodes whole frames of `data` into mono.
fn decode(data: &[u8], info: WavInfo, block_align: usize, name: &str) -> Result<Wav, WavError> {
    let channels = usize::from(info.channels);
    let bytes = info.format.bytes();
    let mut samples = Vec::with_capacity(info.frames);
    let mut clipped = 0usize;
    let mut peak = 0f32;
    let mut non_finite = 0usize;
    let mut first_bad = 0usize;
    let scale = 1.0 / channels as f32;
    for (frame_index, frame) in data.chunks_exact(block_align).enumerate() {
        let mut sum = 0f32;
        for s in frame.chunks_exact(bytes) {
            let (v, at_full_scale) = match info.format {
                SampleFormat::U8 => (
                    f32::from(i16::from(s[0]) - 128) / 128.0,
                    s[0] == 0 || s[0] == 255,
                ),
                SampleFormat::I16 => {
                    let x = i16::from_le_bytes([s[0], s[1]]);
                    (f32::from(x) / 32768.0, x == i16::MIN || x == i16::MAX)
                }
                SampleFormat::I24 => {
                    let x = i32::from_le_bytes([0, s[0], s[1], s[2]]) >> 8;
                    (x as f32 / 8_388_608.0, x <= -8_388_608 || x >= 8_388_607)
                }
                SampleFormat::I32 => {
                    let x = i32::from_le_bytes([s[0], s[1], s[2], s[3]]);
                    // Within f32 rounding of full scale (the low bits of a 24-in-32 sample).
                    (
                        x as f32 / 2_147_483_648.0,
                        x <= i32::MIN + 255 || x >= i32::MAX - 255,
                    )
                }
                SampleFormat::F32 => {
                    let x = f32::from_le_bytes([s[0], s[1], s[2], s[3]]);
                    (x, x.abs() >= 1.0)
                }
                SampleFormat::F64 => {
                    let mut a = [0u8; 8];
                    a.copy_from_slice(s);
                    let x = f64::from_le_bytes(a) as f32;
                    (x, x.abs() >= 1.0)
                }
            };
            if !v.is_finite() {
                if non_finite == 0 {
                    first_bad = frame_index;
                }
                non_finite += 1;
                continue;
            }
            clipped += usize::from(at_full_scale);
            peak = peak.max(v.abs());
            sum += v;
        }
        samples.push(if channels == 1 { sum } else { sum * scale });
    }
    if non_finite > 0 {
        return Err(WavError::NonFinite {
            name: name.into(),
            count: non_finite,
            first_frame: first_bad,
        });
    }
    Ok(Wav {
        samples,
        info,
        clipped_samples: clipped,
        peak,
    })
}

/// Encodes mono samples as a 16-bit PCM WAV (values clamped to [-1, 1]), e.g. to save an
/// utterance for inspection. `-1.0` maps to -32768 and `1.0` to 32767, the inverse of the
/// reader's scaling up to rounding.
pub fn encode_pcm16(samples: &[f32], sample_rate: u32) -> Vec<u8> {
    let data_len = samples.len() * 2;
    let mut out = Vec::with_capacity(44 + data_len);
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&(36 + data_len as u32).to_le_bytes());
    out.extend_from_slice(b"WAVEfmt ");
    out.extend_from_slice(&16u32.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes());
    out.extend_from_slice(&sample_rate.to_le_bytes());
    out.extend_from_slice(&(sample_rate * 2).to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&16u16.to_le_bytes());
    out.extend_from_slice(b"data");
    out.extend_from_slice(&(data_len as u32).to_le_bytes());
    for &s in samples {
        let v = (f64::from(s) * 32768.0).round().clamp(-32768.0, 32767.0) as i16;
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Builds a WAV with arbitrary header fields and extra chunks, for malformed inputs.
    pub(crate) struct Builder {
        pub tag: u16,
        pub channels: u16,
        pub rate: u32,
        pub bits: u16,
        pub block_align: Option<u16>,
        pub extensible: Option<u16>,
        pub before_fmt: Vec<(Vec<u8>, Vec<u8>)>,
        pub before_data: Vec<(Vec<u8>, Vec<u8>)>,
        pub data_size: Option<u32>,
        pub data: Vec<u8>,
        pub riff: &'static [u8; 4],
    }

    impl Builder {
        pub fn pcm16(channels: u16, rate: u32, samples: &[i16]) -> Builder {
            Builder {
                tag: 1,
                channels,
                rate,
                bits: 16,
                block_align: None,
                extensible: None,
                before_fmt: vec![],
                before_data: vec![],
                data_size: None,
                data: samples.iter().flat_map(|s| s.to_le_bytes()).collect(),
                riff: b"RIFF",
            }
        }

        pub fn build(&self) -> Vec<u8> {
            let chunk = |out: &mut Vec<u8>, id: &[u8], body: &[u8]| {
                out.extend_from_slice(id);
                out.extend_from_slice(&(body.len() as u32).to_le_bytes());
                out.extend_from_slice(body);
                if body.len() % 2 == 1 {
                    out.push(0);
                }
            };
            let mut out = Vec::new();
            out.extend_from_slice(self.riff);
            out.extend_from_slice(&0u32.to_le_bytes()); // patched below
            out.extend_from_slice(b"WAVE");
            for (id, body) in &self.before_fmt {
                chunk(&mut out, id, body);
            }
            let bytes_per = u32::from(self.bits).div_ceil(8);
            let align = self
                .block_align
                .unwrap_or((u32::from(self.channels) * bytes_per) as u16);
            let mut fmt = Vec::new();
            let tag = if self.extensible.is_some() {
                0xFFFE
            } else {
                self.tag
            };
            fmt.extend_from_slice(&tag.to_le_bytes());
            fmt.extend_from_slice(&self.channels.to_le_bytes());
            fmt.extend_from_slice(&self.rate.to_le_bytes());
            fmt.extend_from_slice(&(self.rate * u32::from(align)).to_le_bytes());
            fmt.extend_from_slice(&align.to_le_bytes());
            fmt.extend_from_slice(&self.bits.to_le_bytes());
            if let Some(valid) = self.extensible {
                fmt.extend_from_slice(&22u16.to_le_bytes());
                fmt.extend_from_slice(&valid.to_le_bytes());
                fmt.extend_from_slice(&3u32.to_le_bytes());
                fmt.extend_from_slice(&self.tag.to_le_bytes());
                fmt.extend_from_slice(&EXTENSIBLE_GUID_TAIL);
            }
            chunk(&mut out, b"fmt ", &fmt);
            for (id, body) in &self.before_data {
                chunk(&mut out, id, body);
            }
            out.extend_from_slice(b"data");
            out.extend_from_slice(
                &self
                    .data_size
                    .unwrap_or(self.data.len() as u32)
                    .to_le_bytes(),
            );
            out.extend_from_slice(&self.data);
            let riff_len = (out.len() - 8) as u32;
            out[4..8].copy_from_slice(&riff_len.to_le_bytes());
            out
        }
    }

    fn read(bytes: &[u8]) -> Result<Wav, WavError> {
        read_bytes(bytes, "test.wav", &WavLimits::default())
    }

    #[test]
    fn pcm16_mono_scaling_matches_libsndfile() {
        let wav = read(&Builder::pcm16(1, 16000, &[0, 16384, -32768, 32767]).build()).unwrap();
        assert_eq!(wav.samples, vec![0.0, 0.5, -1.0, 32767.0 / 32768.0]);
        assert_eq!(wav.info.sample_rate, 16000);
        assert_eq!(wav.info.format, SampleFormat::I16);
        assert_eq!(wav.clipped_samples, 2);
        assert!(!wav.info.streamed);
    }

    #[test]
    fn stereo_is_averaged_to_mono() {
        let wav = read(&Builder::pcm16(2, 44100, &[16384, 0, -16384, -16384, 8192, 24576]).build())
            .unwrap();
        assert_eq!(wav.samples, vec![0.25, -0.5, 0.5]);
        assert_eq!(wav.info.channels, 2);
        assert_eq!(wav.info.frames, 3);
    }

    #[test]
    fn eight_bit_unsigned_is_supported() {
        let mut b = Builder::pcm16(1, 8000, &[]);
        b.bits = 8;
        b.data = vec![128, 255, 0, 64, 1]; // odd data size: pad byte follows
        let wav = read(&b.build()).unwrap();
        assert_eq!(wav.info.format, SampleFormat::U8);
        assert_eq!(
            wav.samples,
            vec![0.0, 127.0 / 128.0, -1.0, -0.5, -127.0 / 128.0]
        );
        assert_eq!(wav.clipped_samples, 2);
    }

    #[test]
    fn pcm24_and_pcm32_and_extensible_24_in_32() {
        let mut b = Builder::pcm16(1, 48000, &[]);
        b.bits = 24;
        b.data = vec![0x00, 0x00, 0x40, 0x00, 0x00, 0x80, 0xFF, 0xFF, 0x7F];
        let wav = read(&b.build()).unwrap();
        assert_eq!(wav.info.format, SampleFormat::I24);
        assert_eq!(wav.samples[0], 0.5);
        assert_eq!(wav.samples[1], -1.0);
        assert!((wav.samples[2] - 1.0).abs() < 1e-6);

        let mut b = Builder::pcm16(1, 48000, &[]);
        b.bits = 32;
        b.extensible = Some(24);
        b.tag = 1;
        // 24-bit values left-justified in 32-bit containers.
        b.data = [0x0040_0000i32 << 8, i32::MIN]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let wav = read(&b.build()).unwrap();
        assert_eq!(wav.info.format, SampleFormat::I32);
        assert_eq!(wav.info.valid_bits, 24);
        assert_eq!(wav.samples, vec![0.5, -1.0]);
    }

    #[test]
    fn float32_float64_and_extensible_float() {
        for (bits, ext) in [(32u16, None), (64, None), (32, Some(32u16))] {
            let mut b = Builder::pcm16(1, 16000, &[]);
            b.tag = 3;
            b.bits = bits;
            b.extensible = ext;
            let vals = [0.25f64, -0.75, 1.5];
            b.data = if bits == 32 {
                vals.iter()
                    .flat_map(|v| (*v as f32).to_le_bytes())
                    .collect()
            } else {
                vals.iter().flat_map(|v| v.to_le_bytes()).collect()
            };
            let wav = read(&b.build()).unwrap();
            // Values beyond full scale are kept (librosa keeps them) but counted.
            assert_eq!(
                wav.samples,
                vec![0.25, -0.75, 1.5],
                "bits {bits} ext {ext:?}"
            );
            assert_eq!(wav.clipped_samples, 1);
            assert_eq!(wav.peak, 1.5);
        }
    }

    #[test]
    fn clipping_is_counted_not_refused() {
        // A sine driven 6 dB into the rails of a 16-bit file: decoded as is, counted.
        let samples: Vec<i16> = (0..1600)
            .map(|i| {
                let v = 2.0 * (2.0 * std::f64::consts::PI * 440.0 * i as f64 / 16000.0).sin();
                (v * 32768.0).clamp(-32768.0, 32767.0) as i16
            })
            .collect();
        let wav = read(&Builder::pcm16(1, 16000, &samples).build()).unwrap();
        let rails = samples
            .iter()
            .filter(|s| **s == i16::MIN || **s == i16::MAX)
            .count();
        assert!(rails > 500, "{rails}");
        assert_eq!(wav.clipped_samples, rails);
        assert_eq!(wav.peak, 1.0);
    }

    #[test]
    fn nan_in_float_wav_is_refused() {
        let mut b = Builder::pcm16(2, 16000, &[]);
        b.tag = 3;
        b.bits = 32;
        b.data = [0.1f32, 0.2, f32::NAN, 0.0, f32::INFINITY, 0.0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let err = read(&b.build()).unwrap_err();
        assert!(
            matches!(
                err,
                WavError::NonFinite {
                    count: 2,
                    first_frame: 1,
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("NaN"));
    }

    #[test]
    fn unknown_chunks_with_odd_sizes_are_skipped() {
        let mut b = Builder::pcm16(1, 16000, &[1, 2, 3]);
        b.before_fmt = vec![(b"JUNK".to_vec(), vec![0; 5])];
        b.before_data = vec![
            (b"LIST".to_vec(), b"INFOISFT\x03\x00\x00\x00ab\x00".to_vec()),
            (b"fact".to_vec(), vec![3, 0, 0, 0, 0, 0, 0, 0]),
        ];
        let wav = read(&b.build()).unwrap();
        assert_eq!(wav.info.frames, 3);
        assert_eq!(wav.samples[2], 3.0 / 32768.0);
    }

    #[test]
    fn missing_pad_byte_is_tolerated() {
        let mut bytes = Builder::pcm16(1, 16000, &[7, 8]).build();
        // Insert an odd-sized chunk without its pad byte right after the 12-byte header.
        let junk = [b"JUNK".as_slice(), &3u32.to_le_bytes(), &[1, 2, 3]].concat();
        bytes.splice(12..12, junk);
        let wav = read(&bytes).unwrap();
        assert_eq!(wav.info.frames, 2);
    }

    #[test]
    fn streaming_sizes_read_to_end() {
        for placeholder in [0u32, 0xFFFF_FFFF, 0x7FFF_FFFF, 0x7FFF_F000] {
            let mut b = Builder::pcm16(1, 16000, &[1, 2, 3, 4]);
            b.data_size = Some(placeholder);
            let wav = read(&b.build()).unwrap();
            assert_eq!(wav.info.frames, 4, "placeholder {placeholder:#x}");
            assert!(wav.info.streamed);
        }
    }

    #[test]
    fn streamed_partial_frame_is_dropped() {
        let mut b = Builder::pcm16(2, 16000, &[1, 2, 3]);
        b.data_size = Some(0xFFFF_FFFF);
        let wav = read(&b.build()).unwrap();
        assert_eq!(wav.info.frames, 1);
        assert_eq!(wav.info.partial_frame_bytes, 2);
    }

    #[test]
    fn rf64_uses_ds64_size() {
        let mut b = Builder::pcm16(1, 16000, &[5, 6, 7]);
        b.riff = b"RF64";
        let mut ds64 = vec![0u8; 28];
        ds64[8..16].copy_from_slice(&6u64.to_le_bytes());
        b.before_fmt = vec![(b"ds64".to_vec(), ds64)];
        b.data_size = Some(0xFFFF_FFFF);
        b.before_data = vec![];
        let mut bytes = b.build();
        bytes.extend_from_slice(b"LIST\x04\x00\x00\x00abcd"); // a trailing chunk, not audio
        let wav = read(&bytes).unwrap();
        assert_eq!(wav.info.frames, 3);
        assert!(!wav.info.streamed);
    }

    #[test]
    fn truncated_files_are_refused() {
        let full = Builder::pcm16(1, 16000, &[1; 100]).build();
        // Cut inside the data: the declared size no longer fits.
        let err = read(&full[..full.len() - 10]).unwrap_err();
        assert!(matches!(err, WavError::Truncated { .. }), "{err}");
        assert!(err.to_string().contains("declares 200 bytes but only 190"));
        // Cut inside the header, the fmt chunk, before the data chunk.
        for cut in [4, 11, 20, 36, 40] {
            let err = read(&full[..cut]).unwrap_err();
            assert!(
                matches!(err, WavError::Truncated { .. }),
                "cut {cut}: {err}"
            );
        }
    }

    #[test]
    fn non_wav_inputs_are_named() {
        let cases: [(&[u8], &str); 5] = [
            (b"OggS\0\x02\0\0\0\0\0\0\0\0", "Ogg"),
            (b"fLaC\0\0\0\x22\0\0\0\0\0\0", "FLAC"),
            (b"ID3\x04\0\0\0\0\0\0\0\0\0", "MP3"),
            (b"RIFF\x10\0\0\0AVI LIST", "another kind"),
            (b"hello, world!", "68 65 6c 6c"),
        ];
        for (bytes, expect) in cases {
            let err = read(bytes).unwrap_err();
            assert!(matches!(err, WavError::NotWav { .. }), "{err}");
            let msg = err.to_string();
            assert!(msg.contains(expect), "{msg}");
            assert!(msg.contains("ffmpeg -i in.wav -ar 16000 -ac 1 -c:a pcm_s16le"));
        }
        assert!(matches!(read(b"").unwrap_err(), WavError::Empty { .. }));
        assert!(matches!(read(b"abc").unwrap_err(), WavError::NotWav { .. }));
    }

    #[test]
    fn compressed_codecs_are_refused_with_ffmpeg_hint() {
        for (tag, name) in [(2u16, "ADPCM"), (7, "μ-law"), (6, "A-law"), (0x55, "MP3")] {
            let mut b = Builder::pcm16(1, 8000, &[0; 4]);
            b.tag = tag;
            b.bits = 4;
            b.block_align = Some(256);
            let err = read(&b.build()).unwrap_err();
            let msg = err.to_string();
            assert!(matches!(err, WavError::UnsupportedCodec { .. }), "{msg}");
            assert!(msg.contains(name) && msg.contains("ffmpeg"), "{msg}");
        }
        let mut b = Builder::pcm16(1, 8000, &[0; 4]);
        b.bits = 12;
        b.block_align = Some(2);
        // 12-bit PCM in 16-bit containers is decodable as 16-bit.
        assert_eq!(read(&b.build()).unwrap().info.format, SampleFormat::I16);
        b.tag = 3;
        b.bits = 16;
        assert!(read(&b.build())
            .unwrap_err()
            .to_string()
            .contains("16-bit float"));
    }

    #[test]
    fn zero_channels_zero_rate_and_bad_align_are_refused() {
        let mut b = Builder::pcm16(1, 16000, &[0; 4]);
        b.channels = 0;
        b.block_align = Some(2);
        assert!(read(&b.build())
            .unwrap_err()
            .to_string()
            .contains("0 channels"));
        let mut b = Builder::pcm16(1, 0, &[0; 4]);
        b.rate = 0;
        assert!(read(&b.build()).unwrap_err().to_string().contains("0 Hz"));
        let mut b = Builder::pcm16(2, 16000, &[0; 4]);
        b.block_align = Some(3);
        assert!(read(&b.build())
            .unwrap_err()
            .to_string()
            .contains("block align"));
    }

    #[test]
    fn zero_length_data_is_refused() {
        let b = Builder::pcm16(1, 16000, &[]);
        let err = read(&b.build()).unwrap_err();
        assert!(matches!(err, WavError::NoSamples { .. }), "{err}");
        let mut b = Builder::pcm16(1, 16000, &[]);
        b.data = vec![0]; // less than one frame
        assert!(matches!(
            read(&b.build()).unwrap_err(),
            WavError::NoSamples { .. }
        ));
    }

    #[test]
    fn missing_fmt_is_refused() {
        let bytes = [b"RIFF\x0c\0\0\0WAVEdata\x02\0\0\0\x01\x00".as_slice()].concat();
        let err = read(&bytes).unwrap_err();
        assert!(err.to_string().contains("no 'fmt ' chunk"), "{err}");
    }

    #[test]
    fn limits_are_checked_before_decoding() {
        let bytes = Builder::pcm16(1, 8000, &[0; 16000]).build(); // 2 s
        let limits = WavLimits {
            max_bytes: 1 << 20,
            max_seconds: 1.5,
        };
        let err = read_bytes(&bytes, "long.wav", &limits).unwrap_err();
        assert!(matches!(err, WavError::TooLong { .. }), "{err}");
        // A streamed header claiming 0xFFFFFFFF bytes is judged by what is actually there.
        let mut b = Builder::pcm16(1, 8000, &[0; 100]);
        b.data_size = Some(0xFFFF_FFFF);
        assert!(read_bytes(&b.build(), "s.wav", &limits).is_ok());
        let limits = WavLimits {
            max_bytes: 100,
            max_seconds: 60.0,
        };
        let err = read_bytes(&bytes, "big.wav", &limits).unwrap_err();
        assert!(matches!(err, WavError::TooLarge { .. }), "{err}");
    }

    #[test]
    fn read_file_checks_size_and_names_the_path() {
        let dir = std::env::temp_dir().join(format!("adaptd-wav-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("a.wav");
        std::fs::write(&path, encode_pcm16(&[0.5, -0.5], 16000)).unwrap();
        let wav = read_file(&path, &WavLimits::default()).unwrap();
        assert_eq!(wav.samples, vec![0.5, -0.5]);
        let err = read_file(&dir.join("missing.wav"), &WavLimits::default()).unwrap_err();
        assert!(err.to_string().contains("missing.wav"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn encode_round_trips() {
        let x: Vec<f32> = (0..100).map(|i| (i as f32 / 50.0) - 1.0).collect();
        let wav = read(&encode_pcm16(&x, 22050)).unwrap();
        assert_eq!(wav.info.sample_rate, 22050);
        for (a, b) in x.iter().zip(&wav.samples) {
            assert!((a - b).abs() <= 1.0 / 32768.0, "{a} {b}");
        }
        let info = probe_bytes(&encode_pcm16(&x, 22050), "p").unwrap();
        assert_eq!(info.frames, 100);
    }
}
