//! Every kind of bad input gets a one-line error naming the file and the problem,
//! exit code 2 for usage errors and 1 for failures, and never a panic.

mod common;

use std::path::Path;

use common::*;

/// A manifest copy of `model` placed in `dir` (its model file next to it), edited by `edit`.
fn manifest_in(dir: &Path, model: &str, edit: impl Fn(String) -> String) -> std::path::PathBuf {
    let text = std::fs::read_to_string(repo().join(format!("models/{model}.toml"))).unwrap();
    let path = dir.join(format!("{model}.toml"));
    std::fs::write(&path, edit(text)).unwrap();
    copy(
        &models_dir().join("imagenet_labels.txt"),
        &dir.join("imagenet_labels.txt"),
    );
    path
}

fn infer_with(manifest: &Path, img: &Path) -> std::process::Output {
    // No --model-dir: the files must be found next to the manifest.
    std::process::Command::new(env!("CARGO_BIN_EXE_adaptd"))
        .current_dir(manifest.parent().unwrap())
        .env_remove("ADAPTD_MODEL_DIR")
        .args(["infer", "--model"])
        .arg(manifest)
        .arg(img)
        .output()
        .unwrap()
}

#[test]
fn missing_model_file() {
    let dir = tempfile::tempdir().unwrap();
    let m = manifest_in(dir.path(), "mobilenetv2", |t| t);
    let o = infer_with(&m, &image("coffee.png"));
    assert_clean_failure(&o, 1, "mobilenetv2_imagenet.onnx");
    assert!(
        stderr(&o).contains("models/fetch"),
        "says what to do: {}",
        stderr(&o)
    );
}

#[test]
fn truncated_non_onnx_and_mismatched_model_files() {
    let dir = tempfile::tempdir().unwrap();
    let real = std::fs::read(models_dir().join("mobilenetv2_imagenet.onnx")).unwrap();
    let cases: [(&str, Vec<u8>); 3] = [
        ("truncated", real[..real.len() / 3].to_vec()),
        ("not onnx", b"this is not a protobuf at all".repeat(100)),
        (
            "other model",
            std::fs::read(models_dir().join("efficientnet_lite0_imagenet.onnx")).unwrap(),
        ),
    ];
    for (what, bytes) in cases {
        std::fs::write(dir.path().join("mobilenetv2_imagenet.onnx"), &bytes).unwrap();
        let m = manifest_in(dir.path(), "mobilenetv2", |t| t);
        let o = infer_with(&m, &image("coffee.png"));
        // Checked against the manifest's sha256 before tract ever parses it.
        assert_clean_failure(&o, 1, "sha256 mismatch");
        assert!(
            stderr(&o).contains("mobilenetv2_imagenet.onnx"),
            "{what}: {}",
            stderr(&o)
        );
        assert_eq!(
            stderr(&o).lines().count(),
            1,
            "{what}: one line: {}",
            stderr(&o)
        );
    }
}

#[test]
fn truncated_and_garbage_onnx_with_a_matching_manifest_are_load_errors() {
    // A user's own manifest that does match the (broken) file: tract must refuse, not panic.
    let dir = tempfile::tempdir().unwrap();
    let real = std::fs::read(models_dir().join("mobilenetv2_imagenet.onnx")).unwrap();
    for (what, bytes) in [
        ("truncated", real[..real.len() / 2].to_vec()),
        ("garbage", vec![0xAB; 4096]),
    ] {
        let file = dir.path().join("mobilenetv2_imagenet.onnx");
        std::fs::write(&file, &bytes).unwrap();
        let sha = adaptd::model::sha256_file(&file).unwrap();
        let m = manifest_in(dir.path(), "mobilenetv2", |t| {
            t.replace(
                "131a148e82c2bebd11d3938189ae0f7bfe571e6aea3540d2c911a0e3d5928bb6",
                &sha,
            )
        });
        let o = infer_with(&m, &image("coffee.png"));
        assert_clean_failure(&o, 1, "not a loadable ONNX model");
        assert!(
            stderr(&o).contains("mobilenetv2_imagenet.onnx"),
            "{what}: {}",
            stderr(&o)
        );
    }
}

#[test]
fn manifest_naming_a_tensor_the_model_lacks() {
    let dir = tempfile::tempdir().unwrap();
    copy(
        &models_dir().join("mobilenetv2_imagenet.onnx"),
        &dir.path().join("mobilenetv2_imagenet.onnx"),
    );
    let m = manifest_in(dir.path(), "mobilenetv2", |t| {
        t.replace("/Flatten_output_0", "/NoSuchTensor")
    });
    let o = infer_with(&m, &image("coffee.png"));
    assert_clean_failure(&o, 1, "/NoSuchTensor");
    assert!(stderr(&o).contains("[embedding].tensor"), "{}", stderr(&o));
    let m = manifest_in(dir.path(), "mobilenetv2", |t| {
        t.replace("name = \"input\"", "name = \"pixels\"")
    });
    let o = infer_with(&m, &image("coffee.png"));
    assert_clean_failure(&o, 1, "pixels");
}

#[test]
fn bad_images_are_named_and_the_others_still_run() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let coffee = std::fs::read(image("coffee.png")).unwrap();
    let rocket = std::fs::read(image("rocket.jpg")).unwrap();
    std::fs::write(d.join("zero.png"), b"").unwrap();
    std::fs::write(d.join("truncated.png"), &coffee[..coffee.len() / 2]).unwrap();
    std::fs::write(d.join("truncated.jpg"), &rocket[..rocket.len() / 3]).unwrap();
    std::fs::write(d.join("corrupt.png"), {
        let mut c = coffee.clone();
        c[100..4000].fill(0x5a);
        c
    })
    .unwrap();
    std::fs::write(d.join("huge.png"), huge_png_header(30000, 30000)).unwrap();
    std::fs::write(d.join("huge-header-only.png"), header_only(30000, 30000)).unwrap();
    std::fs::write(d.join("anim.gif"), b"GIF89a\x01\x00\x01\x00\x00\x00\x00;").unwrap();
    std::fs::write(d.join("notes.txt"), b"just some text").unwrap();
    let names = [
        ("zero.png", "empty"),
        ("truncated.png", "corrupt or truncated"),
        ("truncated.jpg", "corrupt or truncated"),
        ("corrupt.png", "corrupt or truncated"),
        ("huge.png", "30000x30000"),
        ("huge-header-only.png", "30000x30000"),
        ("anim.gif", "unsupported"),
        ("notes.txt", "unsupported"),
        ("missing.png", "could not read"),
    ];
    let mut args: Vec<String> = vec!["infer".into(), "--model".into(), "mobilenetv2".into()];
    args.extend(names.iter().map(|(n, _)| d.join(n).display().to_string()));
    args.push(image("coffee.png").display().to_string());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let o = run(&args);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    for (name, problem) in names {
        let line = err
            .lines()
            .find(|l| l.contains(name))
            .unwrap_or_else(|| panic!("no error line for {name}: {err}"));
        assert!(line.contains(problem), "{name}: {line}");
    }
    assert_eq!(
        err.lines().count(),
        names.len(),
        "one line per bad image: {err}"
    );
    // The good image was still processed.
    assert!(stdout(&o).contains("espresso"), "{}", stdout(&o));
}

/// A small valid PNG whose IHDR is rewritten to claim `w x h` (CRC fixed up): the header is
/// all a decoder sees before it would allocate.
fn huge_png_header(w: u32, h: u32) -> Vec<u8> {
    let mut png = std::io::Cursor::new(Vec::new());
    image::RgbImage::new(4, 4)
        .write_to(&mut png, image::ImageFormat::Png)
        .unwrap();
    let mut png = png.into_inner();
    let header = header_only(w, h);
    png[..33].copy_from_slice(&header);
    png
}

/// Signature and IHDR chunk claiming `w x h`, with a correct CRC.
fn header_only(w: u32, h: u32) -> Vec<u8> {
    let mut ihdr = b"IHDR".to_vec();
    ihdr.extend_from_slice(&w.to_be_bytes());
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    let mut crc = 0xffff_ffffu32;
    for &b in &ihdr {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    out.extend_from_slice(&13u32.to_be_bytes());
    out.extend_from_slice(&ihdr);
    out.extend_from_slice(&(!crc).to_be_bytes());
    out
}

#[test]
fn embed_refuses_to_write_a_misaligned_file() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("e.npy");
    let bad = dir.path().join("bad.png");
    std::fs::write(&bad, b"").unwrap();
    let o = run(&[
        "embed",
        "--model",
        "mobilenetv2",
        "--out",
        out.to_str().unwrap(),
        image("coffee.png").to_str().unwrap(),
        bad.to_str().unwrap(),
    ]);
    assert_clean_failure(&o, 1, "bad.png");
    assert!(!out.exists());
}

#[test]
fn usage_errors_exit_2() {
    let o = run(&[
        "infer",
        "--model",
        "resnet9000",
        image("coffee.png").to_str().unwrap(),
    ]);
    assert_clean_failure(&o, 2, "resnet9000");
    let o = run(&["infer", "--bogus-flag"]);
    assert_eq!(o.status.code(), Some(2));
    let o = run(&[
        "infer",
        "--model",
        "mobilenetv2",
        "--batch",
        "0",
        image("coffee.png").to_str().unwrap(),
    ]);
    assert_clean_failure(&o, 2, "--batch");
    let o = run(&[
        "infer",
        "--model",
        "resemblyzer-ge2e",
        image("coffee.png").to_str().unwrap(),
    ]);
    assert_clean_failure(&o, 1, "audio model");
}

#[test]
fn check_config_accepts_the_example_and_lists_every_problem() {
    let o = run(&[
        "check-config",
        repo().join("systemd/adaptd.toml").to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[model]\nnmae = \"x\"\nbatch = \"one\"\n[camera]\nfps = 5\n",
    )
    .unwrap();
    let o = run(&["check-config", bad.to_str().unwrap()]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    for needle in [
        "bad.toml",
        "[model].nmae",
        "[model].batch",
        "`camera`",
        "3 problems",
    ] {
        assert!(err.contains(needle), "{needle}: {err}");
    }
    std::fs::write(&bad, "[model]\nname = \"resnet9000\"\n").unwrap();
    let o = run(&["check-config", bad.to_str().unwrap()]);
    assert_clean_failure(&o, 1, "resnet9000");
}
