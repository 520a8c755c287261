//! The two-person replay of the feedback and zones tests: the astronaut on the left half
//! and the cameraman on the right half of a grey canvas, taking turns, each pasted at a
//! slightly different place in each frame.

use std::path::{Path, PathBuf};

use image::{imageops, Rgb, RgbImage};
use serde_json::Value;

use super::image;

/// The frame size.
pub const CANVAS: (u32, u32) = (900, 460);

/// `<dir>/frames` with the replay: six frames of the astronaut on the left, then six of the
/// cameraman on the right (replayed in name order, so the turns loop).
pub fn two_person_frames(dir: &Path) -> PathBuf {
    let frames = dir.join("frames");
    std::fs::create_dir_all(&frames).expect("mkdir");
    write_turn("astronaut.png", false, 6, &frames, "a");
    write_turn("camera.png", true, 6, &frames, "c");
    frames
}

/// Writes `n` frames of `photo` pasted (430 pixels square) on the left or right half.
pub fn write_turn(photo: &str, right: bool, n: usize, dir: &Path, prefix: &str) {
    let img = image::open(image(photo)).expect("photo").to_rgb8();
    let person = imageops::resize(&img, 430, 430, imageops::FilterType::Triangle);
    for i in 0..n {
        let mut canvas = RgbImage::from_pixel(CANVAS.0, CANVAS.1, Rgb([128, 128, 128]));
        let x = if right { 460 } else { 5 } + 2 * i as i64;
        imageops::overlay(&mut canvas, &person, x, 5 + (i % 3) as i64);
        canvas
            .save(dir.join(format!("{prefix}{i:02}.jpg")))
            .expect("write frame");
    }
}

fn centre_x(b: &Value) -> f64 {
    (b[0].as_f64().unwrap_or(0.0) + b[2].as_f64().unwrap_or(0.0)) / 2.0
}

/// A box of a whole person (the cameraman's photo also has a passer-by far in the
/// background: a small, separate detection).
fn tall(b: &Value) -> bool {
    b[3].as_f64().unwrap_or(0.0) - b[1].as_f64().unwrap_or(0.0) > 200.0
}

/// Whether a box is the astronaut on the left half.
pub fn on_left(b: &Value) -> bool {
    tall(b) && centre_x(b) < f64::from(CANVAS.0) / 2.0
}

/// Whether a box is the person on the right half.
pub fn on_right(b: &Value) -> bool {
    tall(b) && centre_x(b) > f64::from(CANVAS.0) / 2.0
}
