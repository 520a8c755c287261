//! The real `adaptd` binary on real photos with the real pretrained models.

mod common;

use common::*;
use serde_json::Value;

fn json_lines(o: &std::process::Output) -> Vec<Value> {
    stdout(o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

fn top_labels(v: &Value, n: usize) -> Vec<String> {
    v["top"].as_array().unwrap()[..n]
        .iter()
        .map(|t| t["label"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn classifiers_recognise_the_cat_and_the_espresso() {
    for model in ["mobilenetv2", "mobilenetv2-int8", "efficientnet-lite0"] {
        let chelsea = image("chelsea.png");
        let coffee = image("coffee.png");
        let o = run(&[
            "infer",
            "--model",
            model,
            chelsea.to_str().unwrap(),
            coffee.to_str().unwrap(),
        ]);
        assert!(o.status.success(), "{model}: {}", stderr(&o));
        let out = json_lines(&o);
        assert_eq!(out.len(), 2);
        let cat = top_labels(&out[0], 3);
        assert!(
            cat.iter()
                .any(|l| ["Egyptian cat", "tabby", "tiger cat"].contains(&l.as_str())),
            "{model}: chelsea top-3 {cat:?}"
        );
        assert_eq!(top_labels(&out[1], 1), vec!["espresso"], "{model}");
        // Probabilities, timings and the image size are all there.
        let p = out[1]["top"][0]["score"].as_f64().unwrap();
        assert!(p > 0.5 && p <= 1.0, "{model}: espresso p = {p}");
        assert_eq!(out[0]["width"], 451);
        assert!(out[0]["decode_ms"].as_f64().unwrap() >= 0.0);
        for key in ["preprocess_ms", "inference_ms", "postprocess_ms"] {
            assert!(out[0]["timings"][key].as_f64().unwrap() >= 0.0, "{key}");
        }
    }
}

#[test]
fn mobilenet_top5_matches_onnxruntime() {
    let r = reference();
    let o = run(&[
        "infer",
        "--model",
        "mobilenetv2",
        image("chelsea.png").to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let ours = &json_lines(&o)[0]["top"];
    let theirs = &r["models"]["mobilenetv2"]["images"]["chelsea.png"]["top5"];
    for i in 0..3 {
        assert_eq!(ours[i]["index"], theirs[i]["index"], "rank {i}");
        let (a, b) = (
            ours[i]["score"].as_f64().unwrap(),
            theirs[i]["prob"].as_f64().unwrap(),
        );
        // Pixel-level resize rounding moves probabilities by well under a percent point.
        assert!((a - b).abs() < 0.01, "rank {i}: {a} vs {b}");
    }
}

#[test]
fn nanodet_finds_the_astronaut_and_the_cup() {
    let astronaut = image("astronaut.png");
    let coffee = image("coffee.png");
    let o = run(&[
        "infer",
        "--model",
        "nanodet-m",
        astronaut.to_str().unwrap(),
        coffee.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = json_lines(&o);
    let person = out[0]["detections"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["label"] == "person")
        .unwrap_or_else(|| panic!("no person in {}", out[0]));
    assert!(person["score"].as_f64().unwrap() > 0.5, "{person}");
    // The astronaut fills most of the 512x512 photo: the box must cover its centre and be
    // large, and lie inside the image.
    let b: Vec<f64> = person["box"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    assert!(
        b[0] >= 0.0 && b[1] >= 0.0 && b[2] <= 512.0 && b[3] <= 512.0,
        "{b:?}"
    );
    assert!(
        b[0] < 256.0 && b[2] > 256.0 && b[1] < 256.0 && b[3] > 256.0,
        "{b:?}"
    );
    assert!(
        (b[2] - b[0]) * (b[3] - b[1]) > 0.25 * 512.0 * 512.0,
        "{b:?}"
    );
    let cup = out[1]["detections"]
        .as_array()
        .unwrap()
        .iter()
        .any(|d| d["label"] == "cup");
    assert!(cup, "no cup on coffee.png: {}", out[1]);
}

#[test]
fn text_format_is_for_people() {
    let o = run(&[
        "infer",
        "--model",
        "mobilenetv2",
        "--format",
        "text",
        image("coffee.png").to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    assert!(
        text.contains("coffee.png") && text.contains("espresso") && text.contains("inference"),
        "{text}"
    );
}

#[test]
fn batches_give_the_same_answers_as_single_images() {
    let imgs: Vec<String> = ["chelsea.png", "coffee.png", "rocket.jpg"]
        .iter()
        .map(|n| image(n).display().to_string())
        .collect();
    let mut args1 = vec!["infer", "--model", "mobilenetv2", "--batch", "1"];
    let mut args2 = vec!["infer", "--model", "mobilenetv2", "--batch", "2"];
    args1.extend(imgs.iter().map(String::as_str));
    args2.extend(imgs.iter().map(String::as_str));
    let (a, b) = (run(&args1), run(&args2));
    assert!(
        a.status.success() && b.status.success(),
        "{} {}",
        stderr(&a),
        stderr(&b)
    );
    let (a, b) = (json_lines(&a), json_lines(&b));
    assert_eq!(a.len(), 3);
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x["image"], y["image"]);
        assert_eq!(top_labels(x, 3), top_labels(y, 3));
        let (p, q) = (
            x["top"][0]["score"].as_f64().unwrap(),
            y["top"][0]["score"].as_f64().unwrap(),
        );
        assert!((p - q).abs() < 1e-4, "{p} vs {q}");
    }
}

/// Cosine similarity and largest absolute difference.
fn compare(a: &[f32], b: &[f64]) -> (f64, f64) {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * y).sum();
    let na: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|y| y * y).sum::<f64>().sqrt();
    let max = a
        .iter()
        .zip(b)
        .map(|(x, y)| (*x as f64 - y).abs())
        .fold(0.0, f64::max);
    (dot / (na * nb), max)
}

#[test]
fn embeddings_are_1280_d_and_match_onnxruntime() {
    let r = reference();
    let dir = tempfile::tempdir().unwrap();
    for (model, min_cos) in [
        ("mobilenetv2", 0.999),
        ("efficientnet-lite0", 0.999),
        ("mobilenetv2-int8", 0.99),
    ] {
        let out = dir.path().join(format!("{model}.npy"));
        let mut args = vec!["embed", "--model", model, "--out", out.to_str().unwrap()];
        let imgs = [image("chelsea.png"), image("coffee.png")];
        let imgs: Vec<&str> = imgs.iter().map(|p| p.to_str().unwrap()).collect();
        args.extend(&imgs);
        let o = run(&args);
        assert!(o.status.success(), "{model}: {}", stderr(&o));
        let (shape, data) = adaptd::npy::read(&out).unwrap();
        assert_eq!(shape, vec![2, 1280], "{model}");
        for (i, name) in ["chelsea.png", "coffee.png"].iter().enumerate() {
            let Some(reference) = r["models"][model]["images"][name]["embedding"].as_array() else {
                continue;
            };
            let reference: Vec<f64> = reference.iter().map(|v| v.as_f64().unwrap()).collect();
            let (cos, max) = compare(&data[i * 1280..(i + 1) * 1280], &reference);
            // Tolerance: the reference tensor is Pillow's resize, ours fast_image_resize's;
            // the two agree to within one 8-bit level on a few pixels (tested exactly in
            // tests/preprocess_reference.rs), and one-level noise moves these embeddings by
            // a cosine of at most 1e-3 (measured: >= 0.991 for the worst random noise on
            // every pixel). tract and onnxruntime themselves agree to 5e-5 on equal input.
            // The int8 model amplifies one-level differences through re-quantisation.
            assert!(
                cos > min_cos,
                "{model} {name}: cosine {cos}, max abs diff {max}"
            );
        }
    }
}

#[test]
fn embed_to_stdout_is_a_valid_npy() {
    let o = run(&[
        "embed",
        "--model",
        "mobilenetv2",
        "--out",
        "-",
        image("coffee.png").to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(&o.stdout[..6], b"\x93NUMPY");
    assert_eq!(o.stdout.len() % 16, 0, "1280 f32 after a 64-aligned header");
}

#[test]
fn inspect_lists_the_embedding_tensor_by_its_onnx_name() {
    for (model, tensor) in [
        ("mobilenetv2", "/Flatten_output_0"),
        ("efficientnet-lite0", "/Reshape_output_0"),
    ] {
        let o = run(&["inspect", "--model", model]);
        assert!(o.status.success(), "{}", stderr(&o));
        let line = stdout(&o)
            .lines()
            .find(|l| l.starts_with(tensor))
            .map(str::to_string)
            .unwrap_or_else(|| panic!("{model}: no {tensor} in\n{}", stdout(&o)));
        assert!(line.contains("1,1280"), "{line}");
    }
}

/// `adaptd bench` with the interleaved comparisons: int8 against fp32 (`--baseline`) and
/// adaptd's depthwise kernel against tract's (`--compare-depthwise`), on tract only.
#[test]
fn bench_reports_interleaved_comparisons() {
    let o = run(&[
        "bench",
        "--model",
        "mobilenetv2-int8",
        "--baseline",
        "mobilenetv2",
        "--compare-depthwise",
        "--image",
        image("chelsea.png").to_str().unwrap(),
        "--iters",
        "2",
        "--warmup",
        "0",
        "--block",
        "1",
        "--threads",
        "1",
        "--backend",
        "tract",
        "--python",
        "none",
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let reports = json_lines(&o);
    let r = &reports[0];
    assert_eq!(r["baseline"], "mobilenetv2");
    let pairs = [("speedup", &r["speedup"]), ("depthwise", &r["depthwise"])];
    for (what, v) in pairs {
        let v = v.as_array().unwrap_or_else(|| panic!("{what}: {r}"));
        assert_eq!(v.len(), 1, "{what}: one thread count, one backend");
        assert_eq!(v[0]["backend"], "tract");
        let (m, b) = (&v[0]["model"]["median_ms"], &v[0]["baseline"]["median_ms"]);
        let speedup = v[0]["speedup"].as_f64().unwrap();
        let ratio = b.as_f64().unwrap() / m.as_f64().unwrap();
        assert!(
            (speedup - ratio).abs() < 1e-9,
            "{what}: {speedup} vs {ratio}"
        );
    }
    let expected = if cfg!(target_arch = "aarch64") {
        "tract"
    } else {
        "adaptd"
    };
    assert_eq!(r["depthwise_auto"], expected);
}
