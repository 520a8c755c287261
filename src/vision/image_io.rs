//! Decoding untrusted image bytes into RGB frames, with limits checked before any allocation.
//!
//! Images arrive from files, MQTT payloads and pipes; a PNG header can claim 30000x30000
//! pixels in a few dozen bytes. The header is read first and the claimed size checked against
//! the configured limits, so a hostile or broken image costs nothing but an error message.

use crate::bounded::{read_capped_as, CappedReadError};
use std::io::Cursor;
use std::path::Path;

use image::{ImageFormat, ImageReader, Limits, RgbImage};

/// Limits applied to every image before it is decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeLimits {
    /// Largest encoded size accepted.
    pub max_bytes: u64,
    /// Largest width * height accepted (the decoded buffer is 3 bytes per pixel).
    pub max_pixels: u64,
}

impl Default for DecodeLimits {
    /// 64 MiB and 50 megapixels: above any camera a Pi or Jetson is paired with, far below
    /// what would exhaust a 1 GB board.
    fn default() -> Self {
        DecodeLimits {
            max_bytes: 64 << 20,
            max_pixels: 50_000_000,
        }
    }
}

/// Why an image could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("{name}: could not read: {source}")]
    Io {
        name: String,
        source: std::io::Error,
    },
    #[error("{name}: empty file (0 bytes)")]
    Empty { name: String },
    #[error("{name}: {bytes} bytes is over the {max}-byte limit ([image].max_bytes)")]
    TooManyBytes { name: String, bytes: u64, max: u64 },
    #[error(
        "{name}: {width}x{height} pixels is over the limit of {max} pixels ([image].max_pixels); \
         refused before decoding"
    )]
    TooManyPixels {
        name: String,
        width: u32,
        height: u32,
        max: u64,
    },
    #[error("{name}: unsupported image format ({what}); adaptd reads JPEG and PNG")]
    Unsupported { name: String, what: String },
    #[error("{name}: corrupt or truncated image: {detail}")]
    Corrupt { name: String, detail: String },
}

/// Reads and decodes an image file.
pub fn decode_file(path: &Path, limits: &DecodeLimits) -> Result<RgbImage, ImageError> {
    let bytes: Vec<u8> = read_capped_as::<ImageError>(path, limits.max_bytes)?;
    decode_bytes(&bytes, &path.display().to_string(), limits)
}

impl CappedReadError for ImageError {
    fn io(name: String, source: std::io::Error) -> Self {
        ImageError::Io { name, source }
    }
    fn too_large(name: String, bytes: u64, max: u64) -> Self {
        ImageError::TooManyBytes { name, bytes, max }
    }
}

/// Decodes JPEG or PNG bytes; `name` identifies the image in errors.
pub fn decode_bytes(
    bytes: &[u8],
    name: &str,
    limits: &DecodeLimits,
) -> Result<RgbImage, ImageError> {
    if bytes.is_empty() {
        return Err(ImageError::Empty { name: name.into() });
    }
    if bytes.len() as u64 > limits.max_bytes {
        return Err(ImageError::TooManyBytes {
            name: name.into(),
            bytes: bytes.len() as u64,
            max: limits.max_bytes,
        });
    }
    let format = image::guess_format(bytes).map_err(|_| ImageError::Unsupported {
        name: name.into(),
        what: "not a recognised image signature".into(),
    })?;
    if !matches!(format, ImageFormat::Jpeg | ImageFormat::Png) {
        return Err(ImageError::Unsupported {
            name: name.into(),
            what: format!("{format:?}"),
        });
    }
    let corrupt = |e: image::ImageError| ImageError::Corrupt {
        name: name.into(),
        detail: e.to_string(),
    };
    // Header only: no pixel buffer is allocated by `into_dimensions`. A PNG's size is read
    // straight from its IHDR, so even a file cut right after the header is judged by it.
    let (width, height) = match png_ihdr_size(bytes) {
        Some(size) if format == ImageFormat::Png => size,
        _ => ImageReader::with_format(Cursor::new(bytes), format)
            .into_dimensions()
            .map_err(corrupt)?,
    };
    if width == 0 || height == 0 || u64::from(width) * u64::from(height) > limits.max_pixels {
        return Err(ImageError::TooManyPixels {
            name: name.into(),
            width,
            height,
            max: limits.max_pixels,
        });
    }
    let mut reader = ImageReader::with_format(Cursor::new(bytes), format);
    let mut l = Limits::default();
    l.max_image_width = Some(width);
    l.max_image_height = Some(height);
    // 16-bit RGBA is the largest intermediate a PNG can decode to.
    l.max_alloc = Some(u64::from(width) * u64::from(height) * 8 + (1 << 20));
    reader.limits(l);
    let img = reader.decode().map_err(corrupt)?;
    if format == ImageFormat::Jpeg && !jpeg_is_complete(bytes) {
        // The JPEG decoder pads a truncated scan with grey instead of failing; a sample or a
        // frame that is half grey must not pass as an image.
        return Err(ImageError::Corrupt {
            name: name.into(),
            detail: "the JPEG stream ends before its end-of-image marker (truncated file)".into(),
        });
    }
    Ok(img.into_rgb8())
}

/// Width and height from a PNG's IHDR chunk (signature, length, "IHDR", then the size).
fn png_ihdr_size(bytes: &[u8]) -> Option<(u32, u32)> {
    if bytes.len() < 24 || &bytes[12..16] != b"IHDR" {
        return None;
    }
    let w = u32::from_be_bytes([bytes[16], bytes[17], bytes[18], bytes[19]]);
    let h = u32::from_be_bytes([bytes[20], bytes[21], bytes[22], bytes[23]]);
    Some((w, h))
}

/// True when an end-of-image marker (FF D9) follows the last start-of-scan (FF DA). Inside
/// entropy-coded data every FF byte is stuffed (FF 00), so FF D9 there is a real marker; an
/// EXIF thumbnail's own EOI comes before the main scan and does not count.
fn jpeg_is_complete(bytes: &[u8]) -> bool {
    let last = |marker: u8| {
        bytes
            .windows(2)
            .rposition(|w| w[0] == 0xFF && w[1] == marker)
    };
    match (last(0xDA), last(0xD9)) {
        (Some(sos), Some(eoi)) => eoi > sos,
        _ => false,
    }
}

/// Shorter side of stored thumbnails: enough to re-embed them through a 256-then-crop-224
/// backbone without upscaling, small enough (about 20 KB as JPEG) to keep thousands.
pub const THUMBNAIL_SHORT_SIDE: u32 = 256;

/// A JPEG thumbnail (shorter side at most [`THUMBNAIL_SHORT_SIDE`]) so a sample can be
/// re-embedded when the backbone changes.
/// `img` shrunk so its longest side is `max_side` (aspect kept, Triangle filter), or `None`
/// when it already fits (never enlarged): snapshots and kept crops are bounded this way.
pub fn fit_within(img: &RgbImage, max_side: u32) -> Option<RgbImage> {
    let (w, h) = img.dimensions();
    let longest = w.max(h);
    if max_side == 0 || longest <= max_side {
        return None;
    }
    let f = f64::from(max_side) / f64::from(longest);
    let nw = ((f64::from(w) * f).round() as u32).clamp(1, max_side);
    let nh = ((f64::from(h) * f).round() as u32).clamp(1, max_side);
    Some(image::imageops::resize(
        img,
        nw,
        nh,
        image::imageops::FilterType::Triangle,
    ))
}

pub fn thumbnail_jpeg(img: &RgbImage) -> Result<Vec<u8>, ImageError> {
    let (w, h) = img.dimensions();
    let short = w.min(h).max(1);
    let scaled;
    let src = if short > THUMBNAIL_SHORT_SIDE {
        let f = f64::from(THUMBNAIL_SHORT_SIDE) / f64::from(short);
        let (nw, nh) = (
            ((f64::from(w) * f).round() as u32).max(1),
            ((f64::from(h) * f).round() as u32).max(1),
        );
        scaled = image::imageops::resize(img, nw, nh, image::imageops::FilterType::Triangle);
        &scaled
    } else {
        img
    };
    let mut out = Cursor::new(Vec::new());
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 85)
        .encode_image(src)
        .map_err(|e| ImageError::Corrupt {
            name: "thumbnail".into(),
            detail: e.to_string(),
        })?;
    Ok(out.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png_bytes(w: u32, h: u32) -> Vec<u8> {
        let img = RgbImage::from_pixel(w, h, image::Rgb([10, 20, 30]));
        let mut out = Cursor::new(Vec::new());
        img.write_to(&mut out, ImageFormat::Png).unwrap();
        out.into_inner()
    }

    /// A PNG whose IHDR claims `w x h`; the CRC is recomputed so only the size is a lie.
    pub(crate) fn png_claiming(w: u32, h: u32) -> Vec<u8> {
        let mut bytes = png_bytes(4, 4);
        bytes[16..20].copy_from_slice(&w.to_be_bytes());
        bytes[20..24].copy_from_slice(&h.to_be_bytes());
        let crc = crc32(&bytes[12..29]);
        bytes[29..33].copy_from_slice(&crc.to_be_bytes());
        bytes
    }

    fn crc32(data: &[u8]) -> u32 {
        let mut crc = 0xffff_ffffu32;
        for &b in data {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = if crc & 1 != 0 {
                    (crc >> 1) ^ 0xedb8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }

    #[test]
    fn decodes_png() {
        let img = decode_bytes(&png_bytes(5, 3), "x", &DecodeLimits::default()).unwrap();
        assert_eq!(img.dimensions(), (5, 3));
        assert_eq!(img.get_pixel(4, 2).0, [10, 20, 30]);
    }

    #[test]
    fn huge_claimed_size_is_refused_before_decoding() {
        let err = decode_bytes(
            &png_claiming(30000, 30000),
            "big.png",
            &DecodeLimits::default(),
        )
        .unwrap_err();
        assert!(
            matches!(err, ImageError::TooManyPixels { width: 30000, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("big.png"));
    }

    #[test]
    fn empty_truncated_and_foreign_bytes_are_errors() {
        let l = DecodeLimits::default();
        assert!(matches!(
            decode_bytes(b"", "e", &l),
            Err(ImageError::Empty { .. })
        ));
        let png = png_bytes(64, 64);
        let err = decode_bytes(&png[..png.len() / 2], "t.png", &l).unwrap_err();
        assert!(matches!(err, ImageError::Corrupt { .. }), "{err}");
        let err = decode_bytes(b"GIF89a\x01\x00\x01\x00", "g.gif", &l).unwrap_err();
        assert!(matches!(err, ImageError::Unsupported { .. }), "{err}");
        let err = decode_bytes(b"hello world, not an image", "h", &l).unwrap_err();
        assert!(matches!(err, ImageError::Unsupported { .. }), "{err}");
    }

    #[test]
    fn byte_limit() {
        let l = DecodeLimits {
            max_bytes: 10,
            max_pixels: 100,
        };
        assert!(matches!(
            decode_bytes(&png_bytes(2, 2), "x", &l),
            Err(ImageError::TooManyBytes { .. })
        ));
    }
}
