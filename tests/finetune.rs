//! Fine-tuning the backbone's tail, on the real MobileNetV2 and EfficientNet-Lite0 files:
//! the tail read out of the ONNX graph, our forward pass against tract's embedding, the
//! fine-tuned file run by tract and onnxruntime, `lr_ratio = 0` leaving the tail as it was,
//! training that lowers the held-out loss, and every refusal (a cut that names no tensor, an
//! op we cannot differentiate, a memory budget) leaving nothing changed.

mod common;

use adaptd::adapt::finetune::{self, CutSet, FinetuneConfig, FinetuneError, TailParams};
use adaptd::adapt::{train, Dataset, TrainConfig};
use adaptd::model::onnx_graph::with_initializers;
use adaptd::model::tail::{cut_model, Tail, TailError, TailOp};
use adaptd::model::{ModelDirs, ResolvedModel};
use adaptd::vision::{image_io, AnalyzeOptions, VisionModel};
use common::*;
use image::imageops;

fn resolve(name: &str) -> ResolvedModel {
    let dirs = ModelDirs::new(Some(&models_dir()), None);
    ResolvedModel::resolve(name, &dirs).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn read_tail(m: &ResolvedModel) -> Tail {
    let bytes = std::fs::read(&m.model_path).expect("read model");
    let f = m.manifest.finetune.as_ref().expect("[finetune]");
    let e = m.manifest.embedding.as_ref().expect("[embedding]");
    Tail::read(&bytes, &f.cut, &e.tensor).expect("tail")
}

/// Crops of the shared photos: `per` per photo, each a slightly different window.
fn crops(photo: &str, per: usize) -> Vec<image::RgbImage> {
    let img = image_io::decode_file(&image(photo), &Default::default()).expect(photo);
    let (w, h) = img.dimensions();
    (0..per)
        .map(|k| {
            let f = 0.7 + 0.05 * (k % 5) as f32;
            let (cw, ch) = ((w as f32 * f) as u32, (h as f32 * f) as u32);
            let x = ((w - cw) as usize * (k % 3) / 2) as u32;
            let y = ((h - ch) as usize * ((k / 3) % 3) / 2) as u32;
            imageops::crop_imm(&img, x, y, cw, ch).to_image()
        })
        .collect()
}

/// The embedding and the cut activations of each image, both from tract.
fn run(m: &ResolvedModel, images: &[image::RgbImage]) -> (Vec<Vec<f32>>, Vec<Vec<f32>>) {
    let mut full = VisionModel::load(m.clone(), 1).expect("load");
    let mut cut = VisionModel::load(cut_model(m).expect("cut model"), 1).expect("load cut");
    let opts = AnalyzeOptions {
        top_k: 0,
        detect: None,
    };
    images
        .iter()
        .map(|img| {
            let e = full.analyze(&[img], &opts).expect("run").remove(0);
            let c = cut.analyze(&[img], &opts).expect("run cut").remove(0);
            (e.embedding.expect("embedding"), c.embedding.expect("cut"))
        })
        .unzip()
}

#[test]
fn the_tails_of_mobilenetv2_and_efficientnet_are_read_from_their_graphs() {
    for name in ["mobilenetv2", "efficientnet-lite0"] {
        let t = read_tail(&resolve(name));
        assert!(
            matches!(
                &t.ops[..],
                [
                    TailOp::Pointwise {
                        out_channels: 1280,
                        in_channels: 320,
                        ..
                    },
                    TailOp::Clip { lo, hi },
                    TailOp::GlobalAveragePool,
                    TailOp::Flatten,
                ] if *lo == 0.0 && *hi == 6.0
            ),
            "{name}: {:?}",
            t.ops.iter().map(std::mem::discriminant).collect::<Vec<_>>()
        );
        assert_eq!(t.initializers().len(), 2, "{name}: weight and bias");
    }
}

#[test]
fn our_tail_forward_matches_tracts_embedding() {
    let m = resolve("mobilenetv2");
    let tail = read_tail(&m);
    let imgs: Vec<_> = ["chelsea.png", "coffee.png", "rocket.jpg"]
        .iter()
        .flat_map(|p| crops(p, 1))
        .collect();
    let (emb, cut) = run(&m, &imgs);
    let dims = m.manifest.finetune.as_ref().expect("finetune").cut_dims();
    for (e, c) in emb.iter().zip(&cut) {
        let ours = finetune::embed(&tail, dims, 1280, c).expect("embed");
        let d = max_abs_diff(&ours, e);
        assert!(d < 1e-4, "max |ours - tract| = {d}");
    }
}

#[test]
fn a_fine_tuned_file_runs_on_tract_and_onnxruntime_with_our_outputs() {
    let m = resolve("mobilenetv2");
    let mut tail = read_tail(&m);
    // A changed tail: every weight and bias moved.
    for op in &mut tail.ops {
        if let TailOp::Pointwise { w, b, .. } = op {
            w.iter_mut()
                .enumerate()
                .for_each(|(i, v)| *v *= 1.0 + 0.3 * ((i % 7) as f32 - 3.0) / 3.0);
            b.iter_mut().for_each(|v| *v += 0.05);
        }
    }
    let bytes = std::fs::read(&m.model_path).expect("read");
    let tuned = with_initializers(&bytes, &tail.initializers()).expect("rewrite");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("tuned.onnx");
    std::fs::write(&path, &tuned).expect("write");
    let mut tuned_model = m.clone();
    tuned_model.model_path = path;

    let imgs = crops("astronaut.png", 2);
    let (_, cut) = run(&m, &imgs);
    let (tract_emb, _) = run(&tuned_model, &imgs);
    let dims = m.manifest.finetune.as_ref().expect("finetune").cut_dims();
    for (c, t) in cut.iter().zip(&tract_emb) {
        let ours = finetune::embed(&tail, dims, 1280, c).expect("embed");
        let d = max_abs_diff(&ours, t);
        assert!(d < 1e-4, "tract on the tuned file vs ours: {d}");
    }
    #[cfg(feature = "onnxruntime")]
    if let Some(lib) = ort_library_or_skip("a_fine_tuned_file_runs_on_onnxruntime") {
        let opts = adaptd::runtime::BackendOptions {
            choice: adaptd::runtime::BackendChoice::Onnxruntime,
            threads: 1,
            library: Some(lib),
            ..Default::default()
        };
        let mut ort = VisionModel::load_with(tuned_model.clone(), 1, &opts).expect("ort");
        let a = AnalyzeOptions {
            top_k: 0,
            detect: None,
        };
        for (img, t) in imgs.iter().zip(&tract_emb) {
            let o = ort.analyze(&[img], &a).expect("ort run").remove(0);
            let cos = cosine(&o.embedding.expect("embedding"), t);
            assert!(
                cos >= 0.9999,
                "onnxruntime vs tract on the tuned file: {cos}"
            );
        }
    }
}

#[test]
fn a_cut_that_names_no_tensor_or_crosses_an_op_we_cannot_train_is_refused() {
    let m = resolve("mobilenetv2");
    let bytes = std::fs::read(&m.model_path).expect("read");
    let e = "/Flatten_output_0";
    let err = Tail::read(&bytes, "/no/such/tensor", e).expect_err("no tensor");
    assert!(matches!(err, TailError::NoCut(_)), "{err}");
    assert!(err.to_string().contains("/no/such/tensor"), "{err}");
    // Before the last block's depthwise convolution: a grouped convolution is not supported.
    let err = Tail::read(
        &bytes,
        "/features/features.17/conv/conv.0/conv.0.2/Clip_output_0",
        e,
    )
    .expect_err("depthwise");
    let msg = err.to_string();
    assert!(
        msg.contains("/features/features.17/conv/conv.1/conv.1.0/Conv")
            && msg.contains("ungrouped"),
        "{msg}"
    );
    // Before block 16's residual add: the tensor feeds two nodes.
    let err = Tail::read(&bytes, "/features/features.15/Add_output_0", e).expect_err("branch");
    assert!(err.to_string().contains("more than one node"), "{err}");
    // Garbage is an error, not a panic.
    let err = Tail::read(b"not onnx", "x", e).expect_err("garbage");
    assert!(matches!(err, TailError::Proto(_)), "{err}");
}

/// Cut activations and embeddings of crops of three photos, split train / holdout.
struct Data {
    tail: Tail,
    dims: (usize, usize),
    train_cut: CutSet,
    hold_cut: CutSet,
    train_emb: Dataset,
    hold_emb: Dataset,
}

fn data() -> Data {
    let m = resolve("mobilenetv2");
    let tail = read_tail(&m);
    let dims = m.manifest.finetune.as_ref().expect("finetune").cut_dims();
    let classes: Vec<String> = ["cat", "coffee", "rocket"].map(String::from).to_vec();
    let mut split = [(vec![], vec![], vec![]), (vec![], vec![], vec![])];
    for (y, photo) in ["chelsea.png", "coffee.png", "rocket.jpg"]
        .iter()
        .enumerate()
    {
        let (emb, cut) = run(&m, &crops(photo, 6));
        for (k, (e, c)) in emb.into_iter().zip(cut).enumerate() {
            let s = &mut split[usize::from(k >= 4)];
            s.0.extend(c);
            s.1.extend(e);
            s.2.push(y);
        }
    }
    let [(tc, te, ty), (hc, he, hy)] = split;
    let set = |x, y: &Vec<usize>| CutSet {
        channels: dims.0,
        positions: dims.1,
        x,
        y: y.clone(),
        classes: classes.clone(),
    };
    Data {
        train_cut: set(tc, &ty),
        hold_cut: set(hc, &hy),
        train_emb: Dataset::new(1280, te, ty, classes.clone()).expect("train"),
        hold_emb: Dataset::new(1280, he, hy, classes.clone()).expect("holdout"),
        tail,
        dims,
    }
}

#[test]
fn fine_tuning_lowers_the_held_out_loss_and_lr_ratio_zero_keeps_the_tail() {
    let d = data();
    // A head stopped after one small step: the photos are easy, and a fully trained head
    // leaves nothing to improve (its held-out loss is ~1e-6).
    let weak = TrainConfig {
        epochs_max: 1,
        learning_rate: 1e-4,
        early_stopping: false,
        ..TrainConfig::default()
    };
    let (head, _) = train(&d.train_emb, &d.hold_emb, &weak, None).expect("head");
    let cfg = FinetuneConfig {
        epochs_max: 6,
        ..FinetuneConfig::default()
    };
    let (tuned, tuned_head, report) =
        finetune::finetune(&d.tail, &head, &d.train_cut, &d.hold_cut, &cfg, None).expect("ft");
    eprintln!("{report:?}");
    assert!(report.best_loss <= report.start_loss, "{report:?}");
    assert!(report.best_epoch > 0, "{report:?}");
    assert!(tuned != d.tail, "the tail trained");
    assert_eq!(tuned_head.classes(), head.classes());
    let emb = finetune::embed(&tuned, d.dims, 1280, &d.hold_cut.x).expect("embed");
    assert!(emb.iter().all(|v| v.is_finite()));

    for params in [TailParams::All, TailParams::Biases] {
        let frozen = FinetuneConfig {
            lr_ratio: 0.0,
            params,
            ..cfg
        };
        let (same, _, _) =
            finetune::finetune(&d.tail, &head, &d.train_cut, &d.hold_cut, &frozen, None)
                .expect("lr 0");
        assert!(same == d.tail, "lr_ratio = 0 leaves the tail bit-identical");
    }
    let biases = FinetuneConfig {
        params: TailParams::Biases,
        ..cfg
    };
    let (b, _, br) =
        finetune::finetune(&d.tail, &head, &d.train_cut, &d.hold_cut, &biases, None).expect("b");
    for (new, old) in b.ops.iter().zip(&d.tail.ops) {
        if let (TailOp::Pointwise { w: w1, .. }, TailOp::Pointwise { w: w0, .. }) = (new, old) {
            assert!(w1 == w0, "biases only: the weights are the pretrained ones");
        }
    }
    assert!(
        br.memory_bytes < report.memory_bytes,
        "{br:?} vs {report:?}"
    );
}

#[test]
fn a_run_over_the_memory_budget_or_without_holdout_is_refused() {
    let d = data();
    let (head, _) = train(&d.train_emb, &d.hold_emb, &TrainConfig::default(), None).expect("head");
    let cfg = FinetuneConfig {
        max_memory_bytes: 1 << 20,
        ..FinetuneConfig::default()
    };
    let err = finetune::finetune(&d.tail, &head, &d.train_cut, &d.hold_cut, &cfg, None)
        .expect_err("budget");
    assert!(matches!(err, FinetuneError::Memory { .. }), "{err}");
    assert!(err.to_string().contains("max_memory_mb"), "{err}");
    let empty = CutSet {
        x: vec![],
        y: vec![],
        ..d.hold_cut.clone()
    };
    let err = finetune::finetune(
        &d.tail,
        &head,
        &d.train_cut,
        &empty,
        &FinetuneConfig::default(),
        None,
    )
    .expect_err("no holdout");
    assert!(matches!(err, FinetuneError::NoHoldout), "{err}");
}
