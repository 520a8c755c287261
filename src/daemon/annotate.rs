//! Boxes and labels drawn on the `snapshot` image.
//!
//! Home Assistant shows the snapshot as a camera-like image entity; a bare frame does not say
//! what adaptd saw, so each detection is outlined and captioned with its label (the head's
//! sub-label when there is one) and score, and a classifier's scene label is written in the
//! corner. The captions use a built-in 5x7 bitmap font rather than a font crate and a TTF
//! file: labels are `[a-z0-9_-]` and COCO class names, and the binary stays self-contained.

use image::{Rgb, RgbImage};

// Wire items, not the pipeline's frame result: the event snapshots (src/daemon/snapshots.rs)
// draw with this module too, and the pipeline hands them their jobs.
use crate::wire::Item;

/// A head's own label, trusted.
pub(crate) const KNOWN: Rgb<u8> = Rgb([40, 200, 70]);
/// The backbone's label, or a head that said `unknown`.
pub(crate) const OTHER: Rgb<u8> = Rgb([255, 150, 0]);
const INK: Rgb<u8> = Rgb([0, 0, 0]);

/// Glyph rows, 5 bits wide (bit 4 is the leftmost column), 7 rows tall.
const GLYPH_W: u32 = 5;
const GLYPH_H: u32 = 7;

/// Draws every item onto `img` (a copy of the frame they were computed on).
pub fn annotate(img: &mut RgbImage, items: &[Item]) {
    let labels: Vec<Label> = items
        .iter()
        .map(|item| {
            let (text, colour) = caption(item);
            Label {
                bbox: item.bbox,
                text,
                colour,
            }
        })
        .collect();
    draw_labels(img, &labels);
}

/// Outlines `bbox` (frame pixels `[x1, y1, x2, y2]`, clipped to the image)
/// and captions it with `text`, in the style of [`annotate`], so an event snapshot looks like
/// the live `snapshot` image. `known`: the head recognised the object (KNOWN colour), else the
/// OTHER colour.
pub fn draw_labelled_box(img: &mut RgbImage, bbox: [f32; 4], text: &str, known: bool) {
    let label = Label {
        bbox: Some(bbox),
        text: text.to_owned(),
        colour: if known { KNOWN } else { OTHER },
    };
    draw_labels(img, std::slice::from_ref(&label));
}

/// One thing to draw: a box and its caption, or (no box) a whole-frame label.
struct Label {
    bbox: Option<[f32; 4]>,
    text: String,
    colour: Rgb<u8>,
}

/// Outlines every box, then writes the captions where [`place_captions`] puts them: boxes
/// first so that no outline is drawn over an earlier caption's text.
fn draw_labels(img: &mut RgbImage, labels: &[Label]) {
    // Captions stay legible from a 320-pixel frame to a 4K one.
    let scale = (img.width().max(img.height()) / 480).clamp(1, 6);
    let boxes: Vec<Option<[u32; 4]>> = labels.iter().map(|l| l.bbox.map(pixel_box)).collect();
    let sizes: Vec<(u32, u32)> = labels
        .iter()
        .map(|l| caption_size(&l.text, scale))
        .collect();
    for (b, l) in boxes.iter().zip(labels) {
        if let Some([x1, y1, x2, y2]) = *b {
            outline(img, x1, y1, x2, y2, scale, l.colour);
        }
    }
    let places = place_captions(&sizes, &boxes, img.width(), img.height());
    for ((x, y), l) in places.into_iter().zip(labels) {
        text_box(img, x, y, &l.text, scale, l.colour);
    }
}

/// A box in whole pixels: negative coordinates, NaN and -inf count as 0, huge ones and +inf
/// saturate (drawing clips them), the way the clean crop of a snapshot clips them.
fn pixel_box(b: [f32; 4]) -> [u32; 4] {
    // `f32::max` returns the number for NaN, and `as` saturates.
    b.map(|v| v.max(0.0) as u32)
}

/// Width and height of the band [`text_box`] draws for `text`.
fn caption_size(text: &str, scale: u32) -> (u32, u32) {
    let n = u32::try_from(text.chars().count()).unwrap_or(u32::MAX);
    let w = n
        .saturating_mul(GLYPH_W + 1)
        .saturating_add(1)
        .saturating_mul(scale);
    (w, (GLYPH_H + 2) * scale)
}

/// Top-left corners of the captions: `sizes[i]` is caption i's band, `boxes[i]` its box in
/// pixels (`None`: a whole-frame label, which goes in the top-left corner), in a `w` x `h`
/// image.
///
/// Boxes of a crowd (people side by side, a car and its driver) are often close or nested,
/// and captions all drawn above their boxes then cover each other. So each caption, in order,
/// takes the first place whose band overlaps no caption already placed and lies inside the
/// image: above the box's top-left corner, inside it, below the bottom-left corner, inside
/// the bottom-left corner, then further down from the first of those one caption height at
/// a time. When every place collides (a very crowded frame) it takes the first one, as before
/// this search existed: overlapping beats a caption far from its box. A caption is also moved
/// left so it does not run off the right edge. Whole-frame labels are placed first, since
/// they cannot move.
pub fn place_captions(
    sizes: &[(u32, u32)],
    boxes: &[Option<[u32; 4]>],
    w: u32,
    h: u32,
) -> Vec<(u32, u32)> {
    let n = sizes.len().min(boxes.len());
    let mut places = vec![(0, 0); n];
    let mut placed: Vec<[u32; 4]> = Vec::with_capacity(n);
    for i in 0..n {
        if boxes[i].is_none() {
            placed.push(band((0, 0), sizes[i]));
        }
    }
    for i in 0..n {
        let Some([x1, y1, _, y2]) = boxes[i] else {
            continue;
        };
        let (cw, ch) = sizes[i];
        // The box clipped to the image, so a box hanging off it still gets a visible caption.
        let (x1, y1, y2) = (
            x1.min(w.saturating_sub(1)),
            y1.min(h.saturating_sub(1)),
            y2.min(h.saturating_sub(1)),
        );
        let x = x1.min(w.saturating_sub(cw));
        let below = y2.saturating_add(1);
        let mut ys = Vec::with_capacity(4);
        if y1 >= ch {
            ys.push(y1 - ch);
        }
        ys.push(y1);
        ys.push(below);
        if below >= ch {
            ys.push(below - ch);
        }
        let first = ys[0];
        let fits = |y: u32| y.saturating_add(ch) <= h;
        let free = |y: u32| {
            let r = band((x, y), (cw, ch));
            !placed.iter().any(|p| intersects(p, &r))
        };
        let down = (1..)
            .map(|k: u32| first.saturating_add(k.saturating_mul(ch.max(1))))
            .take_while(|&y| fits(y));
        let y = ys
            .iter()
            .copied()
            .chain(down)
            .find(|&y| fits(y) && free(y))
            .unwrap_or(first);
        places[i] = (x, y);
        placed.push(band((x, y), (cw, ch)));
    }
    places
}

/// `[x1, y1, x2, y2)` of a band at `at` of size `size`.
fn band(at: (u32, u32), size: (u32, u32)) -> [u32; 4] {
    [
        at.0,
        at.1,
        at.0.saturating_add(size.0),
        at.1.saturating_add(size.1),
    ]
}

/// Whether two half-open rectangles share a pixel.
fn intersects(a: &[u32; 4], b: &[u32; 4]) -> bool {
    a[0] < b[2] && b[0] < a[2] && a[1] < b[3] && b[1] < a[3]
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
    let (w, h) = caption_size(text, scale);
    fill(img, x, y, x.saturating_add(w), y.saturating_add(h), bg);
    for (i, ch) in text.chars().enumerate() {
        let gx = x.saturating_add((1 + i as u32 * (GLYPH_W + 1)) * scale);
        if gx >= img.width() {
            // The rest is clipped anyway.
            break;
        }
        let gy = y.saturating_add(scale);
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
    use crate::wire::HeadLabel;

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
            suppressed: false,
        }
    }

    #[test]
    fn boxes_are_outlined_in_the_colour_of_their_label() {
        let mut img = RgbImage::new(200, 100);
        let r = vec![
            item(Some([20.0, 30.0, 60.0, 90.0]), Some(("alice", false))),
            item(Some([100.0, 40.0, 150.0, 80.0]), Some(("x", true))),
        ];
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
        annotate(&mut img, &[item(None, None)]);
        assert_eq!(*img.get_pixel(0, 0), OTHER);
        assert_eq!(*img.get_pixel(99, 49), Rgb([255, 255, 255]));
    }

    #[test]
    fn boxes_outside_the_frame_or_not_numbers_do_not_panic() {
        let mut img = RgbImage::new(50, 40);
        let r = vec![
            item(Some([-10.0, -10.0, 500.0, 500.0]), None),
            item(Some([f32::NAN, f32::INFINITY, 3.0, 2.0]), None),
            item(
                Some([49.0, 39.0, 49.0, 39.0]),
                Some(("a_very_long_label-name", false)),
            ),
        ];
        annotate(&mut img, &r);
        annotate(&mut RgbImage::new(1, 1), &r);
    }

    fn bands(places: &[(u32, u32)], sizes: &[(u32, u32)]) -> Vec<[u32; 4]> {
        places
            .iter()
            .zip(sizes)
            .map(|(&p, &s)| band(p, s))
            .collect()
    }

    #[test]
    fn captions_of_nearly_identical_boxes_do_not_overlap() {
        let sizes = [(60, 9), (70, 9), (50, 9)];
        let boxes = [
            Some([20, 30, 80, 90]),
            Some([22, 31, 81, 90]),
            Some([21, 29, 79, 91]),
        ];
        let places = place_captions(&sizes, &boxes, 200, 100);
        // The first keeps its usual place above the box.
        assert_eq!(places[0], (20, 21));
        let b = bands(&places, &sizes);
        for i in 0..b.len() {
            assert!(
                b[i][2] <= 200 && b[i][3] <= 100,
                "{i} leaves the image: {b:?}"
            );
            for j in 0..i {
                assert!(!intersects(&b[i], &b[j]), "{i} and {j} overlap: {b:?}");
            }
        }
    }

    #[test]
    fn a_caption_near_the_right_edge_is_moved_left_into_the_image() {
        let sizes = [(61, 9)];
        let places = place_captions(&sizes, &[Some([180, 50, 199, 90])], 200, 100);
        assert_eq!(places, vec![(139, 41)]);
        // A box entirely off to the right still gets its caption inside.
        let places = place_captions(&sizes, &[Some([500, 50, 600, 90])], 200, 100);
        assert_eq!(places[0].0 + 61, 200);
    }

    #[test]
    fn a_box_at_the_top_gets_its_caption_inside_and_the_next_one_below() {
        let sizes = [(40, 9), (40, 9)];
        let boxes = [Some([10, 0, 60, 50]), Some([10, 0, 60, 50])];
        assert_eq!(
            place_captions(&sizes, &boxes, 200, 100),
            vec![(10, 0), (10, 51)]
        );
    }

    #[test]
    fn captions_avoid_the_whole_frame_label_in_the_corner() {
        let sizes = [(60, 9), (60, 9)];
        let boxes = [Some([0, 0, 50, 50]), None];
        let places = place_captions(&sizes, &boxes, 200, 100);
        assert_eq!(places[1], (0, 0));
        // No room above, the corner taken inside: below the box.
        assert_eq!(places[0], (0, 51));
    }

    #[test]
    fn when_every_place_is_taken_the_caption_goes_above_its_box() {
        // An image one caption tall: the second caption has nowhere free to go.
        let sizes = [(40, 9), (40, 9)];
        let boxes = [Some([0, 9, 50, 9]), Some([0, 9, 50, 9])];
        let places = place_captions(&sizes, &boxes, 50, 10);
        assert_eq!(places, vec![(0, 0), (0, 0)]);
    }

    #[test]
    fn a_labelled_box_is_drawn_like_a_detection() {
        let mut img = RgbImage::new(200, 100);
        draw_labelled_box(&mut img, [20.0, 30.0, 60.0, 90.0], "alice", true);
        assert_eq!(*img.get_pixel(20, 60), KNOWN);
        assert_eq!(*img.get_pixel(20, 25), KNOWN, "caption band above the box");
        let mut img = RgbImage::new(200, 100);
        draw_labelled_box(&mut img, [20.0, 30.0, 60.0, 90.0], "car", false);
        assert_eq!(*img.get_pixel(60, 60), OTHER);
        draw_labelled_box(&mut img, [f32::NAN, -5.0, f32::INFINITY, 1e30], "x", false);
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
