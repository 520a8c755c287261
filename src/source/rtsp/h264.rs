//! H.264 access units to RGB pictures, through Cisco's openh264 (built from its bundled
//! sources: no system codec to install on the board).
//!
//! retina hands over each access unit in Annex B form (start codes, SPS and PPS repeated
//! before every key frame: `FrameFormat::SIMPLE`), which is what openh264 reads, so a
//! decoder that joins mid-stream or after a reconnect starts at the next key frame.

use image::RgbImage;
use openh264::decoder::Decoder;
use openh264::formats::YUVSource;

use crate::vision::image_io::DecodeLimits;

/// What one access unit gave.
pub enum Decoded {
    /// A picture, converted because it was wanted.
    Picture(RgbImage),
    /// A picture the consumer would not take: decoded (the next P-frames need it) but not
    /// converted.
    NotWanted,
    /// No picture yet (the decoder needs more data, e.g. before the first key frame).
    Nothing,
}

/// Why an access unit could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum DecodeProblem {
    #[error("H.264 decoding failed: {0}")]
    Codec(String),
    #[error(
        "{width}x{height} pixels is over the limit of {max} pixels ([image].max_pixels); pick \
         a smaller sub-stream of the camera"
    )]
    TooLarge {
        width: usize,
        height: usize,
        max: u64,
    },
}

/// One stream's decoder (its state follows the stream: a new session gets a new one).
pub struct H264 {
    decoder: Decoder,
}

impl H264 {
    pub fn new() -> Result<H264, DecodeProblem> {
        Decoder::new()
            .map(|decoder| H264 { decoder })
            .map_err(|e| DecodeProblem::Codec(e.to_string()))
    }

    /// Decodes one Annex B access unit; converts the picture to RGB only if `wanted()` says
    /// the consumer will take it.
    pub fn decode(
        &mut self,
        annex_b: &[u8],
        limits: &DecodeLimits,
        wanted: impl FnOnce() -> bool,
    ) -> Result<Decoded, DecodeProblem> {
        let yuv = match self.decoder.decode(annex_b) {
            Ok(Some(yuv)) => yuv,
            Ok(None) => return Ok(Decoded::Nothing),
            Err(e) => return Err(DecodeProblem::Codec(e.to_string())),
        };
        let (width, height) = yuv.dimensions();
        if (width as u64).saturating_mul(height as u64) > limits.max_pixels {
            return Err(DecodeProblem::TooLarge {
                width,
                height,
                max: limits.max_pixels,
            });
        }
        if !wanted() {
            return Ok(Decoded::NotWanted);
        }
        let mut rgb = vec![0u8; width * height * 3];
        yuv.write_rgb8(&mut rgb);
        let (w, h) = (
            u32::try_from(width).unwrap_or(u32::MAX),
            u32::try_from(height).unwrap_or(u32::MAX),
        );
        RgbImage::from_raw(w, h, rgb)
            .map(Decoded::Picture)
            .ok_or_else(|| DecodeProblem::Codec(format!("odd picture size {width}x{height}")))
    }
}
