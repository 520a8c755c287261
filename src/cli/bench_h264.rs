//! `adaptd bench-h264 FILE`: the cost of an RTSP camera's frames on this machine, measured on
//! a recorded H.264 elementary stream (Annex B), with the decoder the `rtsp` source uses.
//! `benches/h264_decode.py` runs it beside `ffmpeg -threads 1` on the same file.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;

use crate::source::rtsp::h264::{Decoded, H264};
use crate::vision::image_io::DecodeLimits;

/// Arguments of `adaptd bench-h264`.
#[derive(Debug, clap::Args)]
pub struct H264BenchArgs {
    /// An H.264 elementary stream (`ffmpeg ... -f h264 FILE`).
    file: PathBuf,
    /// Passes over the file; the fastest one is reported.
    #[arg(long, default_value_t = 3)]
    passes: usize,
}

/// One pass: pictures, seconds.
fn pass(bytes: &[u8], convert: bool) -> anyhow::Result<(usize, f64, (usize, usize))> {
    let mut decoder = H264::new()?;
    let limits = DecodeLimits::default();
    let mut pictures = 0;
    let mut size = (0, 0);
    let start = Instant::now();
    for nal in openh264::nal_units(bytes) {
        match decoder.decode(nal, &limits, || convert)? {
            Decoded::Picture(img) => {
                pictures += 1;
                size = (img.width() as usize, img.height() as usize);
            }
            Decoded::NotWanted => pictures += 1,
            Decoded::Nothing => {}
        }
    }
    Ok((pictures, start.elapsed().as_secs_f64(), size))
}

pub fn run(args: &H264BenchArgs) -> anyhow::Result<ExitCode> {
    let bytes = std::fs::read(&args.file)
        .with_context(|| format!("cannot read {}", args.file.display()))?;
    let passes = args.passes.max(1);
    let mut decode_best = f64::INFINITY;
    let mut full_best = f64::INFINITY;
    let (mut frames, mut size) = (0, (0, 0));
    for _ in 0..passes {
        let (n, secs, _) = pass(&bytes, false)?;
        decode_best = decode_best.min(secs);
        frames = n;
        let (_, secs, s) = pass(&bytes, true)?;
        full_best = full_best.min(secs);
        size = s;
    }
    anyhow::ensure!(frames > 0, "{}: no picture decoded", args.file.display());
    let per = |secs: f64| secs * 1e3 / frames as f64;
    let report = serde_json::json!({
        "file": args.file.display().to_string(),
        "frames": frames,
        "width": size.0,
        "height": size.1,
        "decode_ms_per_frame": per(decode_best),
        "decode_and_rgb_ms_per_frame": per(full_best),
        "rgb_ms_per_frame": per(full_best - decode_best).max(0.0),
    });
    println!("{report}");
    Ok(ExitCode::SUCCESS)
}
