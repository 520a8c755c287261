//! Turning what a camera driver hands over into RGB: YUYV arithmetic and MJPEG touch-ups.
//!
//! USB (UVC) webcams offer two formats worth having: YUYV (uncompressed, so limited to small
//! sizes or low frame rates over USB 2) and MJPEG (a JPEG per frame). YUYV is converted here
//! with integer arithmetic because on a Pi it runs for every pixel of every frame; MJPEG goes
//! through the same size-limited decoder as every other image, after [`ensure_huffman_tables`]
//! supplies the tables that many webcams leave out.

use std::borrow::Cow;

use image::RgbImage;

use crate::vision::image_io::{decode_bytes, DecodeLimits, ImageError};

/// A camera buffer that cannot be a frame of the announced size.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConvertError {
    #[error(
        "YUYV frame of {got} bytes is too short for {width}x{height} with {stride}-byte rows \
         (needs {needed}); the driver delivered a partial frame, which is skipped"
    )]
    TooShort {
        width: u32,
        height: u32,
        stride: usize,
        needed: usize,
        got: usize,
    },
    #[error(
        "YUYV needs an even width (two pixels share their colour), got {width}: \
         set [source].width to an even number"
    )]
    OddWidth { width: u32 },
    #[error(
        "the driver reported {stride}-byte rows for a {width}-pixel-wide YUYV frame \
         (at least {} needed); the camera's format is not what it claims", *width as usize * 2
    )]
    StrideTooSmall { width: u32, stride: usize },
    #[error("frame size {width}x{height} is empty")]
    Empty { width: u32, height: u32 },
}

/// Converts packed YUYV 4:2:2 (bytes `Y0 U Y1 V` per two pixels, BT.601 limited range, as UVC
/// cameras send it) to RGB.
///
/// `stride` is the driver's bytes per line (`bytesperline`), at least `width * 2`; some drivers
/// pad rows. `data` may be longer than needed (a driver's buffer is often rounded up) but not
/// shorter: a short buffer is a partial frame and an error, never a panic.
///
/// Integer BT.601: with `c = Y - 16`, `d = U - 128`, `e = V - 128`,
/// `R = (298c + 409e + 128) >> 8`, `G = (298c - 100d - 208e + 128) >> 8`,
/// `B = (298c + 516d + 128) >> 8`, clamped to 0..=255 (the coefficients are 1.164, 1.596,
/// 0.391, 0.813 and 2.018 scaled by 256).
pub fn yuyv_to_rgb(
    data: &[u8],
    width: u32,
    height: u32,
    stride: usize,
) -> Result<RgbImage, ConvertError> {
    if width == 0 || height == 0 {
        return Err(ConvertError::Empty { width, height });
    }
    if !width.is_multiple_of(2) {
        return Err(ConvertError::OddWidth { width });
    }
    let row_bytes = width as usize * 2;
    if stride < row_bytes {
        return Err(ConvertError::StrideTooSmall { width, stride });
    }
    // The last row need not be padded.
    let needed = stride * (height as usize - 1) + row_bytes;
    if data.len() < needed {
        return Err(ConvertError::TooShort {
            width,
            height,
            stride,
            needed,
            got: data.len(),
        });
    }
    let mut out = vec![0u8; width as usize * height as usize * 3];
    for (src_row, dst_row) in data
        .chunks(stride)
        .zip(out.chunks_exact_mut(width as usize * 3))
    {
        for (s, d) in src_row[..row_bytes]
            .chunks_exact(4)
            .zip(dst_row.chunks_exact_mut(6))
        {
            let u = i32::from(s[1]) - 128;
            let v = i32::from(s[3]) - 128;
            let r_add = 409 * v + 128;
            let g_add = -100 * u - 208 * v + 128;
            let b_add = 516 * u + 128;
            let c0 = 298 * (i32::from(s[0]) - 16);
            let c1 = 298 * (i32::from(s[2]) - 16);
            d[0] = clamp8((c0 + r_add) >> 8);
            d[1] = clamp8((c0 + g_add) >> 8);
            d[2] = clamp8((c0 + b_add) >> 8);
            d[3] = clamp8((c1 + r_add) >> 8);
            d[4] = clamp8((c1 + g_add) >> 8);
            d[5] = clamp8((c1 + b_add) >> 8);
        }
    }
    // The buffer has exactly width * height * 3 bytes, so this cannot fail; map it anyway
    // rather than unwrap.
    RgbImage::from_raw(width, height, out).ok_or(ConvertError::Empty { width, height })
}

#[inline(always)]
fn clamp8(v: i32) -> u8 {
    v.clamp(0, 255) as u8
}

/// Decodes one MJPEG frame from a camera or a pipe: supplies missing Huffman tables, then the
/// shared size-limited decoder.
pub fn decode_mjpeg_frame(
    bytes: &[u8],
    name: &str,
    limits: &DecodeLimits,
) -> Result<RgbImage, ImageError> {
    decode_bytes(&ensure_huffman_tables(bytes), name, limits)
}

/// Inserts the standard Huffman tables (JPEG spec, Annex K.3) when a JPEG has none before its
/// first scan.
///
/// Motion-JPEG as many UVC webcams send it (the AVI1 convention) omits the DHT segment to save
/// bandwidth and expects the decoder to assume the standard tables; the JPEG decoder used here
/// only does that when it also sees an `AVI1` APP0 marker, which not every camera writes. This
/// is what ffmpeg's `mjpeg2jpeg` filter does. Anything else (tables present, or a structure
/// this walk does not understand) is returned untouched for the decoder to judge.
pub fn ensure_huffman_tables(jpeg: &[u8]) -> Cow<'_, [u8]> {
    if jpeg.len() < 4 || jpeg[0] != 0xFF || jpeg[1] != 0xD8 {
        return Cow::Borrowed(jpeg);
    }
    let mut i = 2;
    while i + 1 < jpeg.len() {
        if jpeg[i] != 0xFF {
            return Cow::Borrowed(jpeg);
        }
        let marker = jpeg[i + 1];
        match marker {
            0xFF => i += 1, // fill byte
            0xC4 | 0xD9 => return Cow::Borrowed(jpeg),
            0xDA => {
                let mut out = Vec::with_capacity(jpeg.len() + 420);
                out.extend_from_slice(&jpeg[..i]);
                out.extend_from_slice(&standard_dht_segment());
                out.extend_from_slice(&jpeg[i..]);
                return Cow::Owned(out);
            }
            0x01 | 0xD0..=0xD7 => i += 2,
            _ => {
                let Some(len) = jpeg.get(i + 2..i + 4) else {
                    return Cow::Borrowed(jpeg);
                };
                i += 2 + usize::from(u16::from_be_bytes([len[0], len[1]]));
            }
        }
    }
    Cow::Borrowed(jpeg)
}

/// One DHT segment holding the four standard tables (luma DC and AC, chroma DC and AC).
fn standard_dht_segment() -> Vec<u8> {
    let tables: [(u8, &[u8; 16], &[u8]); 4] = [
        (0x00, &LUMA_DC_LENGTHS, &DC_VALUES),
        (0x10, &LUMA_AC_LENGTHS, &LUMA_AC_VALUES),
        (0x01, &CHROMA_DC_LENGTHS, &DC_VALUES),
        (0x11, &CHROMA_AC_LENGTHS, &CHROMA_AC_VALUES),
    ];
    let len: usize = 2 + tables.iter().map(|t| 17 + t.2.len()).sum::<usize>();
    let mut seg = Vec::with_capacity(len + 2);
    seg.extend_from_slice(&[0xFF, 0xC4]);
    seg.extend_from_slice(&(len as u16).to_be_bytes());
    for (class_id, lengths, values) in tables {
        seg.push(class_id);
        seg.extend_from_slice(lengths);
        seg.extend_from_slice(values);
    }
    seg
}

// Annex K.3, tables K.3 to K.6.
const LUMA_DC_LENGTHS: [u8; 16] = [0, 1, 5, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0];
const CHROMA_DC_LENGTHS: [u8; 16] = [0, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0];
const DC_VALUES: [u8; 12] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11];
const LUMA_AC_LENGTHS: [u8; 16] = [0, 2, 1, 3, 3, 2, 4, 3, 5, 5, 4, 4, 0, 0, 1, 0x7D];
const LUMA_AC_VALUES: [u8; 162] = [
    0x01, 0x02, 0x03, 0x00, 0x04, 0x11, 0x05, 0x12, 0x21, 0x31, 0x41, 0x06, 0x13, 0x51, 0x61, 0x07,
    0x22, 0x71, 0x14, 0x32, 0x81, 0x91, 0xA1, 0x08, 0x23, 0x42, 0xB1, 0xC1, 0x15, 0x52, 0xD1, 0xF0,
    0x24, 0x33, 0x62, 0x72, 0x82, 0x09, 0x0A, 0x16, 0x17, 0x18, 0x19, 0x1A, 0x25, 0x26, 0x27, 0x28,
    0x29, 0x2A, 0x34, 0x35, 0x36, 0x37, 0x38, 0x39, 0x3A, 0x43, 0x44, 0x45, 0x46, 0x47, 0x48, 0x49,
    0x4A, 0x53, 0x54, 0x55, 0x56, 0x57, 0x58, 0x59, 0x5A, 0x63, 0x64, 0x65, 0x66, 0x67, 0x68, 0x69,
    0x6A, 0x73, 0x74, 0x75, 0x76, 0x77, 0x78, 0x79, 0x7A, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89,
    0x8A, 0x92, 0x93, 0x94, 0x95, 0x96, 0x97, 0x98, 0x99, 0x9A, 0xA2, 0xA3, 0xA4, 0xA5, 0xA6, 0xA7,
    0xA8, 0xA9, 0xAA, 0xB2, 0xB3, 0xB4, 0xB5, 0xB6, 0xB7, 0xB8, 0xB9, 0xBA, 0xC2, 0xC3, 0xC4, 0xC5,
    0xC6, 0xC7, 0xC8, 0xC9, 0xCA, 0xD2, 0xD3, 0xD4, 0xD5, 0xD6, 0xD7, 0xD8, 0xD9, 0xDA, 0xE1, 0xE2,
    0xE3, 0xE4, 0xE5, 0xE6, 0xE7, 0xE8, 0xE9, 0xEA, 0xF1, 0xF2, 0xF3, 0xF4, 0xF5, 0xF6, 0xF7, 0xF8,
    0xF9, 0xFA,
];
const CHROMA_AC_LENGTHS: [u8; 16] = [0, 2, 1, 2, 4, 4, 3, 4, 7, 5, 4, 4, 0, 1, 2, 0x77];
const CHROMA_AC_VALUES: [u8; 162] = [
    0x00, 0x01, 0x02, 0x03, 0x11, 0x04, 0x05, 0x21, 0x31, 0x06, 0x12, 0x41, 0x51, 0x07, 0x61, 0x71,
    0x13, 0x22, 0x32, 0x81, 0x08, 0x14, 0x42, 0x91, 0xA1, 0xB1, 0xC1, 0x09, 0x23, 0x33, 0x52, 0xF0,
    0x15, 0x62, 0x72, 0xD1, 0x0A, 0x16, 0x24, 0x34, 0xE1, 0x25, 0xF1, 0x17, 0x18, 0x19, 0x1A, 0x26,
    0x27, 0x28, 0x29, 0x2A, 0x35, 0x36, 0x37, 0x38, 0x39, 0x3A, 0x43, 0x44, 0x45, 0x46, 0x47, 0x48,
    0x49, 0x4A, 0x53, 0x54, 0x55, 0x56, 0x57, 0x58, 0x59, 0x5A, 0x63, 0x64, 0x65, 0x66, 0x67, 0x68,
    0x69, 0x6A, 0x73, 0x74, 0x75, 0x76, 0x77, 0x78, 0x79, 0x7A, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87,
    0x88, 0x89, 0x8A, 0x92, 0x93, 0x94, 0x95, 0x96, 0x97, 0x98, 0x99, 0x9A, 0xA2, 0xA3, 0xA4, 0xA5,
    0xA6, 0xA7, 0xA8, 0xA9, 0xAA, 0xB2, 0xB3, 0xB4, 0xB5, 0xB6, 0xB7, 0xB8, 0xB9, 0xBA, 0xC2, 0xC3,
    0xC4, 0xC5, 0xC6, 0xC7, 0xC8, 0xC9, 0xCA, 0xD2, 0xD3, 0xD4, 0xD5, 0xD6, 0xD7, 0xD8, 0xD9, 0xDA,
    0xE2, 0xE3, 0xE4, 0xE5, 0xE6, 0xE7, 0xE8, 0xE9, 0xEA, 0xF2, 0xF3, 0xF4, 0xF5, 0xF6, 0xF7, 0xF8,
    0xF9, 0xFA,
];

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// RGB to BT.601 limited-range YCbCr with the textbook floating-point formulas, independent
    /// of the integer decoder under test.
    fn ycbcr(rgb: [u8; 3]) -> (u8, u8, u8) {
        let [r, g, b] = rgb.map(|c| f64::from(c) / 255.0);
        let y = 16.0 + 65.481 * r + 128.553 * g + 24.966 * b;
        let cb = 128.0 - 37.797 * r - 74.203 * g + 112.0 * b;
        let cr = 128.0 + 112.0 * r - 93.786 * g - 18.214 * b;
        let q = |v: f64| v.round().clamp(0.0, 255.0) as u8;
        (q(y), q(cb), q(cr))
    }

    /// Encodes an image to YUYV, averaging chroma over each pixel pair, rows padded to `stride`.
    pub(crate) fn to_yuyv(img: &RgbImage, stride: usize) -> Vec<u8> {
        let (w, h) = img.dimensions();
        let mut out = vec![0u8; stride * h as usize];
        for y in 0..h {
            for x in (0..w).step_by(2) {
                let (y0, u0, v0) = ycbcr(img.get_pixel(x, y).0);
                let (y1, u1, v1) = ycbcr(img.get_pixel(x + 1, y).0);
                let o = y as usize * stride + x as usize * 2;
                out[o] = y0;
                out[o + 1] = (u16::from(u0) + u16::from(u1)).div_ceil(2) as u8;
                out[o + 2] = y1;
                out[o + 3] = (u16::from(v0) + u16::from(v1)).div_ceil(2) as u8;
            }
        }
        out
    }

    const PATCHES: [[u8; 3]; 9] = [
        [255, 0, 0],
        [0, 255, 0],
        [0, 0, 255],
        [255, 255, 255],
        [0, 0, 0],
        [128, 128, 128],
        [255, 255, 0],
        [0, 255, 255],
        [200, 100, 50],
    ];

    /// Vertical stripes, two pixels wide so each YUYV pair holds one colour.
    fn patches(height: u32) -> RgbImage {
        let w = PATCHES.len() as u32 * 2;
        RgbImage::from_fn(w, height, |x, _| image::Rgb(PATCHES[(x / 2) as usize]))
    }

    fn assert_close(got: &RgbImage, want: &RgbImage, tol: u8) {
        assert_eq!(got.dimensions(), want.dimensions());
        for (x, y, p) in want.enumerate_pixels() {
            let q = got.get_pixel(x, y);
            for c in 0..3 {
                assert!(
                    p.0[c].abs_diff(q.0[c]) <= tol,
                    "pixel ({x},{y}) channel {c}: want {:?} got {:?}",
                    p.0,
                    q.0
                );
            }
        }
    }

    #[test]
    fn known_colours_round_trip_within_two_levels() {
        let img = patches(3);
        let yuyv = to_yuyv(&img, img.width() as usize * 2);
        let rgb = yuyv_to_rgb(&yuyv, img.width(), img.height(), img.width() as usize * 2)
            .expect("valid buffer");
        assert_close(&rgb, &img, 2);
    }

    #[test]
    fn textbook_values_of_pure_colours() {
        // Limited range: black is Y=16, white Y=235, neutral chroma 128.
        assert_eq!(ycbcr([0, 0, 0]), (16, 128, 128));
        assert_eq!(ycbcr([255, 255, 255]), (235, 128, 128));
        assert_eq!(ycbcr([255, 0, 0]), (81, 90, 240));
        let rgb = yuyv_to_rgb(&[81, 90, 81, 240], 2, 1, 4).expect("valid");
        assert_close(
            &rgb,
            &RgbImage::from_pixel(2, 1, image::Rgb([255, 0, 0])),
            2,
        );
        // Out-of-range luma (full-range cameras, noise) clamps instead of wrapping.
        let rgb = yuyv_to_rgb(&[0, 128, 255, 128], 2, 1, 4).expect("valid");
        assert_eq!(rgb.get_pixel(0, 0).0, [0, 0, 0]);
        assert_eq!(rgb.get_pixel(1, 0).0, [255, 255, 255]);
    }

    #[test]
    fn padded_rows_and_oversized_buffers_are_fine() {
        let img = patches(4);
        let stride = img.width() as usize * 2 + 12;
        let mut yuyv = to_yuyv(&img, stride);
        yuyv.extend_from_slice(&[0xAB; 100]); // a driver's buffer rounded up
        let rgb = yuyv_to_rgb(&yuyv, img.width(), img.height(), stride).expect("valid");
        assert_close(&rgb, &img, 2);
        // The last row needs no padding.
        let exact = stride * 3 + img.width() as usize * 2;
        assert!(yuyv_to_rgb(&yuyv[..exact], img.width(), 4, stride).is_ok());
    }

    #[test]
    fn short_or_malformed_buffers_are_errors_not_panics() {
        let w = 640;
        let h = 480;
        let short = vec![128u8; w * h * 2 - 1];
        let e = yuyv_to_rgb(&short, w as u32, h as u32, w * 2).err();
        assert!(
            matches!(
                e,
                Some(ConvertError::TooShort {
                    needed: 614_400,
                    got: 614_399,
                    ..
                })
            ),
            "{e:?}"
        );
        let msg = e.map(|e| e.to_string()).unwrap_or_default();
        assert!(msg.contains("too short for 640x480"), "{msg}");
        assert!(yuyv_to_rgb(&[], 2, 1, 4).is_err());
        assert!(matches!(
            yuyv_to_rgb(&[0; 12], 3, 1, 6),
            Err(ConvertError::OddWidth { width: 3 })
        ));
        assert!(matches!(
            yuyv_to_rgb(&[0; 64], 4, 2, 4),
            Err(ConvertError::StrideTooSmall { .. })
        ));
        assert!(matches!(
            yuyv_to_rgb(&[0; 64], 0, 2, 4),
            Err(ConvertError::Empty { .. })
        ));
    }

    /// Encodes a test picture as JPEG with the image crate (which writes the standard tables).
    pub(crate) fn jpeg(img: &RgbImage, quality: u8) -> Vec<u8> {
        let mut out = Vec::new();
        let mut enc = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, quality);
        enc.encode_image(img).expect("encoding to memory");
        out
    }

    /// Removes every DHT segment, as an AVI1-style webcam would send the frame.
    fn strip_dht(jpeg: &[u8]) -> Vec<u8> {
        let mut out = jpeg[..2].to_vec();
        let mut i = 2;
        loop {
            let marker = jpeg[i + 1];
            if marker == 0xDA {
                out.extend_from_slice(&jpeg[i..]);
                return out;
            }
            let len = usize::from(u16::from_be_bytes([jpeg[i + 2], jpeg[i + 3]]));
            if marker != 0xC4 {
                out.extend_from_slice(&jpeg[i..i + 2 + len]);
            }
            i += 2 + len;
        }
    }

    #[test]
    fn frames_without_huffman_tables_decode_with_the_standard_ones() {
        let img = RgbImage::from_fn(32, 24, |x, y| {
            image::Rgb([(x * 8) as u8, (y * 10) as u8, 90])
        });
        let full = jpeg(&img, 90);
        let bare = strip_dht(&full);
        assert!(bare.len() < full.len());
        assert!(!bare.windows(2).any(|w| w == [0xFF, 0xC4]));
        let limits = DecodeLimits::default();
        assert!(
            decode_bytes(&bare, "bare", &limits).is_err(),
            "decoder needs tables"
        );
        let fixed = decode_mjpeg_frame(&bare, "bare", &limits).expect("tables supplied");
        let reference = decode_bytes(&full, "full", &limits).expect("valid");
        assert_eq!(
            fixed, reference,
            "identical to the original with its own tables"
        );
        // A complete JPEG is passed through untouched (no copy).
        assert!(matches!(ensure_huffman_tables(&full), Cow::Borrowed(_)));
        assert!(matches!(ensure_huffman_tables(b"junk"), Cow::Borrowed(_)));
        assert!(matches!(
            ensure_huffman_tables(&full[..40]),
            Cow::Borrowed(_)
        ));
    }
}
