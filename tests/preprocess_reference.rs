//! Preprocessing checked against tensors computed independently with Pillow and numpy
//! (`tests/reference/make_reference.py`): same geometry, same normalisation, same channel
//! order. The only allowed difference is the resizers' fixed-point rounding (Pillow keeps 22
//! fractional bits for 8-bit images, fast_image_resize fewer): at most one 8-bit level, on
//! 5 to 20 % of pixels depending on the scale factor, and no bias on average.

mod common;

use adaptd::model::manifest::{Manifest, ResizeMode};
use adaptd::vision::image_io::{decode_file, DecodeLimits};
use adaptd::vision::preprocess::Preprocessor;
use common::*;

fn check(model: &str, letterbox: bool) {
    let r = reference();
    let entry = &r["models"][model];
    let mut m = Manifest::builtin(model).unwrap().unwrap();
    if letterbox {
        // The reference letterboxes NanoDet's input (the manifest stretches): this checks the
        // letterbox geometry, which user manifests may choose.
        m.input.resize = ResizeMode::Letterbox;
        m.input.pad_value = 0;
    }
    let one_level = m.input.scale / m.input.std.iter().copied().fold(f32::INFINITY, f32::min);
    let indices: Vec<usize> = entry["sample_indices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as usize)
        .collect();
    let mut pre = Preprocessor::new(&m.input, m.input_hw());
    let mut out = vec![0f32; pre.tensor_len()];
    for (name, img_ref) in entry["images"].as_object().unwrap() {
        let img = decode_file(&image(name), &DecodeLimits::default()).unwrap();
        pre.run(&img, &mut out).unwrap();
        let expected = img_ref["input"]["sample_values"].as_array().unwrap();
        let mut exact = 0;
        for (&i, e) in indices.iter().zip(expected) {
            let (got, want) = (out[i], e.as_f64().unwrap() as f32);
            let diff = (got - want).abs();
            assert!(
                diff <= one_level * 1.01 + 1e-5,
                "{model} {name}: index {i}: {got} vs {want} (more than one pixel level)"
            );
            if diff < 1e-5 {
                exact += 1;
            }
        }
        eprintln!("{model} {name}: {exact}/256 samples exact, the rest within one level");
        assert!(
            exact * 100 >= indices.len() * 75,
            "{model} {name}: only {exact}/256 samples exact"
        );
        let plane = out.len() / 3;
        for (c, s) in img_ref["input"]["channel_sums"]
            .as_array()
            .unwrap()
            .iter()
            .enumerate()
        {
            let ours: f64 = out[c * plane..(c + 1) * plane]
                .iter()
                .map(|v| *v as f64)
                .sum();
            let want = s.as_f64().unwrap();
            // Mean per-pixel difference well under a tenth of a level.
            let mean_diff = (ours - want).abs() / plane as f64;
            assert!(
                mean_diff < 0.1 * one_level as f64,
                "{model} {name} channel {c}: sum {ours} vs {want}"
            );
        }
    }
}

#[test]
fn mobilenetv2_center_crop_matches_pillow() {
    check("mobilenetv2", false);
}

#[test]
fn efficientnet_normalisation_matches_pillow() {
    check("efficientnet-lite0", false);
}

#[test]
fn nanodet_letterbox_bgr_matches_pillow() {
    check("nanodet-m", true);
}
