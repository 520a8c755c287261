//! Boxes and labels drawn on the `snapshot` image.
//!
//! Home Assistant shows the snapshot as a camera-like image entity; a bare frame does not say
//! what adaptd saw, so each detection is outlined and captioned with its label (the head's
//! sub-label when there is one) and score, and a classifier's scene label is written in the
//! corner. The captions use a built-in 5x7 bitmap font rather than a font crate and a TTF
//! file: labels are `[a-z0-9_-]` and COCO class names, and the binary stays self-contained.

use image::{Rgb, RgbImage};

use super::pipeline::{FrameResult, Item};

/// A head's own label, trusted.
const KNOWN: Rgb<u8> = Rgb([40, 200, 70]);
/// The backbone's label, or a head that said `unknown`.
const OTHER: Rgb<u8> = Rgb([255, 150, 0]);
const INK: Rgb<u8> = Rgb([0, 0, 0]);

/// Glyph rows, 5 bits wide (bit 4 is the leftmost column), 7 rows tall.
const GLYPH_W: u32 = 5;
const GLYPH_H: u32 = 7;

/// Draws every item of `result` onto `img` (a copy of the frame it was computed on).
pub fn annotate(img: &mut RgbImage, result: &FrameResult) {
    // Captions stay legible from a 320-pixel frame to a 4K one.
    let scale = (img.width().max(img.height()) / 480).clamp(1, 6);
    for item in &result.items {
        let (text, colour) = caption(item);
        match item.bbox {
            Some(b) => {
                let [x1, y1, x2, y2] = b.map(|v| if v.is_finite() { v.max(0.0) } else { 0.0 });
                let (x1, y1, x2, y2) = (x1 as u32, y1 as u32, x2 as u32, y2 as u32);
                outline(img, x1, y1, x2, y2, scale, colour);
                let th = (GLYPH_H + 2) * scale;
                // Above the box when there is room, else inside its top edge.
                let ty = if y1 >= th { y1 - th } else { y1 };
                text_box(img, x1, ty, &text, scale, colour);
            }
            None => text_box(img, 0, 0, &text, scale, colour),
        }
    }
}

/// What a box says: the head's label when it knows the object, else the backbone's.
fn caption(item: &Item) -> (String, Rgb<u8>) {
    match &item.head {
        Some(h) if !h.unknown => (format!("{} {:.2}", h.label, h.score), KNOWN),
        Some(_) => (format!("{}? {:.2}", item.label, item.score), OTHER),
        None => (format!("{} {:.2}", item.label, item.score), OTHER),
    }
}

/// A rectangle `thickness` pixels wide, clipped to the image.
fn outline(img: &mut RgbImage, x1: u32, y1: u32, x2: u32, y2: u32, thickness: u32, c: Rgb<u8>) {
    let t = thickness;
    fill(img, x1, y1, x2.saturating_add(1), y1.saturating_add(t), c);
    fill(
        img,
        x1,
        y2.saturating_sub(t - 1),
        x2.saturating_add(1),
        y2.saturating_add(1),
        c,
    );
    fill(img, x1, y1, x1.saturating_add(t), y2.saturating_add(1), c);
    fill(
        img,
        x2.saturating_sub(t - 1),
        y1,
        x2.saturating_add(1),
        y2.saturating_add(1),
        c,
    );
}

/// Fills `[x1, x2) x [y1, y2)`, clipped.
fn fill(img: &mut RgbImage, x1: u32, y1: u32, x2: u32, y2: u32, c: Rgb<u8>) {
    let (w, h) = img.dimensions();
    for y in y1.min(h)..y2.min(h) {
        for x in x1.min(w)..x2.min(w) {
            img.put_pixel(x, y, c);
        }
    }
}

/// `text` in black on a `bg` band whose top-left corner is `(x, y)`.
fn text_box(img: &mut RgbImage, x: u32, y: u32, text: &str, scale: u32, bg: Rgb<u8>) {
    let n = text.chars().count() as u32;
    let w = (n * (GLYPH_W + 1) + 1) * scale;
    let h = (GLYPH_H + 2) * scale;
    fill(img, x, y, x.saturating_add(w), y.saturating_add(h), bg);
    for (i, ch) in text.chars().enumerate() {
        let gx = x + (1 + i as u32 * (GLYPH_W + 1)) * scale;
        let gy = y + scale;
        for (row, bits) in glyph(ch).iter().enumerate() {
            for col in 0..GLYPH_W {
                if bits & (1 << (GLYPH_W - 1 - col)) != 0 {
                    let px = gx + col * scale;
                    let py = gy + row as u32 * scale;
                    fill(img, px, py, px + scale, py + scale, INK);
                }
            }
        }
    }
}

/// The 5x7 glyph of `c`; upper case is drawn as lower case, anything unknown as `?`.
fn glyph(c: char) -> [u8; 7] {
    match c.to_ascii_lowercase() {
        '0' => [0x0E, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0E],
        '1' => [0x04, 0x0C, 0x04, 0x04, 0x04, 0x04, 0x0E],
        '2' => [0x0E, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1F],
        '3' => [0x1F, 0x02, 0x04, 0x02, 0x01, 0x11, 0x0E],
        '4' => [0x02, 0x06, 0x0A, 0x12, 0x1F, 0x02, 0x02],
        '5' => [0x1F, 0x10, 0x1E, 0x01, 0x01, 0x11, 0x0E],
        '6' => [0x06, 0x08, 0x10, 0x1E, 0x11, 0x11, 0x0E],
        '7' => [0x1F, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08],
        '8' => [0x0E, 0x11, 0x11, 0x0E, 0x11, 0x11, 0x0E],
        '9' => [0x0E, 0x11, 0x11, 0x0F, 0x01, 0x02, 0x0C],
        'a' => [0x00, 0x00, 0x0E, 0x01, 0x0F, 0x11, 0x0F],
        'b' => [0x10, 0x10, 0x16, 0x19, 0x11, 0x11, 0x1E],
        'c' => [0x00, 0x00, 0x0E, 0x10, 0x10, 0x11, 0x0E],
        'd' => [0x01, 0x01, 0x0D, 0x13, 0x11, 0x11, 0x0F],
        'e' => [0x00, 0x00, 0x0E, 0x11, 0x1F, 0x10, 0x0E],
        'f' => [0x06, 0x09, 0x08, 0x1C, 0x08, 0x08, 0x08],
        'g' => [0x00, 0x0F, 0x11, 0x11, 0x0F, 0x01, 0x0E],
        'h' => [0x10, 0x10, 0x16, 0x19, 0x11, 0x11, 0x11],
        'i' => [0x04, 0x00, 0x0C, 0x04, 0x04, 0x04, 0x0E],
        'j' => [0x02, 0x00, 0x06, 0x02, 0x02, 0x12, 0x0C],
        'k' => [0x10, 0x10, 0x12, 0x14, 0x18, 0x14, 0x12],
        'l' => [0x0C, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0E],
        'm' => [0x00, 0x00, 0x1A, 0x15, 0x15, 0x11, 0x11],
        'n' => [0x00, 0x00, 0x16, 0x19, 0x11, 0x11, 0x11],
        'o' => [0x00, 0x00, 0x0E, 0x11, 0x11, 0x11, 0x0E],
        'p' => [0x00, 0x00, 0x1E, 0x11, 0x1E, 0x10, 0x10],
        'q' => [0x00, 0x00, 0x0D, 0x13, 0x0F, 0x01, 0x01],
        'r' => [0x00, 0x00, 0x16, 0x19, 0x10, 0x10, 0x10],
        's' => [0x00, 0x00, 0x0E, 0x10, 0x0E, 0x01, 0x1E],
        't' => [0x08, 0x08, 0x1C, 0x08, 0x08, 0x09, 0x06],
        'u' => [0x00, 0x00, 0x11, 0x11, 0x11, 0x13, 0x0D],
        'v' => [0x00, 0x00, 0x11, 0x11, 0x11, 0x0A, 0x04],
        'w' => [0x00, 0x00, 0x11, 0x11, 0x15, 0x15, 0x0A],
        'x' => [0x00, 0x00, 0x11, 0x0A, 0x04, 0x0A, 0x11],
        'y' => [0x00, 0x00, 0x11, 0x11, 0x0F, 0x01, 0x0E],
        'z' => [0x00, 0x00, 0x1F, 0x02, 0x04, 0x08, 0x1F],
        '-' => [0x00, 0x00, 0x00, 0x1F, 0x00, 0x00, 0x00],
        '_' => [0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x1F],
        '.' => [0x00, 0x00, 0x00, 0x00, 0x00, 0x0C, 0x0C],
        ' ' => [0x00; 7],
        _ => [0x0E, 0x11, 0x01, 0x02, 0x04, 0x00, 0x04],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::pipeline::HeadLabel;

    fn result(items: Vec<Item>) -> FrameResult {
        FrameResult {
            frame_id: 1,
            time_unix_ms: 0,
            width: 200,
            height: 100,
            utterance: None,
            items,
            inference_ms: 1.0,
            events: Vec::new(),
            objects: Vec::new(),
            embeddings: Vec::new(),
        }
    }

    fn item(bbox: Option<[f32; 4]>, head: Option<(&str, bool)>) -> Item {
        Item {
            label: "person".into(),
            score: 0.7,
            bbox,
            id: None,
            head: head.map(|(l, unknown)| HeadLabel {
                label: l.into(),
                score: 0.9,
                unknown,
                head_version: 1,
            }),
        }
    }

    #[test]
    fn boxes_are_outlined_in_the_colour_of_their_label() {
        let mut img = RgbImage::new(200, 100);
        let r = result(vec![
            item(Some([20.0, 30.0, 60.0, 90.0]), Some(("alice", false))),
            item(Some([100.0, 40.0, 150.0, 80.0]), Some(("x", true))),
        ]);
        annotate(&mut img, &r);
        // Edges of the first box are green, its inside untouched.
        assert_eq!(*img.get_pixel(20, 60), KNOWN);
        assert_eq!(*img.get_pixel(60, 60), KNOWN);
        assert_eq!(*img.get_pixel(40, 90), KNOWN);
        assert_eq!(*img.get_pixel(40, 60), Rgb([0, 0, 0]));
        // The unknown one is orange.
        assert_eq!(*img.get_pixel(100, 60), OTHER);
        // A caption band sits above the first box, with ink in it.
        let band = (21..40).flat_map(|y| (20..60).map(move |x| (x, y)));
        let (mut bg, mut ink) = (0, 0);
        for (x, y) in band {
            match *img.get_pixel(x, y) {
                KNOWN => bg += 1,
                INK => ink += 1,
                _ => {}
            }
        }
        assert!(
            bg > 100 && ink > 20,
            "caption band: {bg} background, {ink} ink"
        );
    }

    #[test]
    fn a_classifier_label_goes_in_the_corner() {
        let mut img = RgbImage::from_pixel(100, 50, Rgb([255, 255, 255]));
        annotate(&mut img, &result(vec![item(None, None)]));
        assert_eq!(*img.get_pixel(0, 0), OTHER);
        assert_eq!(*img.get_pixel(99, 49), Rgb([255, 255, 255]));
    }

    #[test]
    fn boxes_outside_the_frame_or_not_numbers_do_not_panic() {
        let mut img = RgbImage::new(50, 40);
        let r = result(vec![
            item(Some([-10.0, -10.0, 500.0, 500.0]), None),
            item(Some([f32::NAN, f32::INFINITY, 3.0, 2.0]), None),
            item(
                Some([49.0, 39.0, 49.0, 39.0]),
                Some(("a_very_long_label-name", false)),
            ),
        ]);
        annotate(&mut img, &r);
        annotate(&mut RgbImage::new(1, 1), &r);
    }

    #[test]
    fn every_label_character_has_its_own_glyph() {
        let unknown = glyph('\u{1}');
        for c in ('a'..='z').chain('0'..='9').chain(['-', '_', '.']) {
            assert_ne!(glyph(c), unknown, "{c}");
        }
        assert_eq!(glyph('A'), glyph('a'));
    }
}
