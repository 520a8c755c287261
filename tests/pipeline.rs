//! The daemon's per-frame pipeline on real models and photos: backbone labels, a head swapped
//! in while running, sub-labels of detections, consensus events.

mod common;

use std::sync::Arc;

use adaptd::adapt::{train, Dataset, TrainConfig};
use adaptd::consensus::{Consensus, ConsensusConfig, EventKind};
use adaptd::daemon::frames::FrameRing;
use adaptd::daemon::objects::CameraObjects;
use adaptd::daemon::pipeline::{crop, HeadSlot, Pin, Pipeline, ServingHead};
use adaptd::model::{ModelDirs, ResolvedModel};
use adaptd::track::TrackerConfig;
use adaptd::vision::image_io::{decode_file, DecodeLimits};
use adaptd::vision::{AnalyzeOptions, VisionModel};
use arc_swap::ArcSwapOption;
use common::*;
use image::RgbImage;

fn model(name: &str) -> VisionModel {
    let r = ResolvedModel::resolve(name, &ModelDirs::only(vec![models_dir()])).unwrap();
    VisionModel::load(r, 1).unwrap()
}

fn photo(name: &str) -> RgbImage {
    decode_file(&image(name), &DecodeLimits::default()).unwrap()
}

/// Crops of a photo at a few offsets and scales: distinct real samples of one label.
fn crops(img: &RgbImage, n: usize) -> Vec<RgbImage> {
    let (w, h) = img.dimensions();
    (0..n)
        .map(|i| {
            let f = 0.6 + 0.05 * (i % 5) as f32;
            let (cw, ch) = ((w as f32 * f) as u32, (h as f32 * f) as u32);
            let (x, y) = ((w - cw) * (i as u32 % 3) / 2, (h - ch) * (i as u32 % 2));
            image::imageops::crop_imm(img, x, y, cw, ch).to_image()
        })
        .collect()
}

/// Trains a two-class head (`cat`, `coffee`) on crop embeddings from `vm`.
fn cat_coffee_head(vm: &mut VisionModel) -> adaptd::adapt::Head {
    let classes = vec!["cat".to_string(), "coffee".to_string()];
    let mut train_set = Dataset::empty(1280, classes.clone());
    let mut holdout = Dataset::empty(1280, classes);
    for (label, name) in [(0, "chelsea.png"), (1, "coffee.png")] {
        for (i, c) in crops(&photo(name), 8).iter().enumerate() {
            let e = vm
                .analyze(
                    &[c],
                    &AnalyzeOptions {
                        top_k: 0,
                        detect: None,
                    },
                )
                .unwrap()
                .remove(0)
                .embedding
                .unwrap();
            let d = if i % 4 == 3 {
                &mut holdout
            } else {
                &mut train_set
            };
            d.x.extend_from_slice(&e);
            d.y.push(label);
        }
    }
    train(&train_set, &holdout, &TrainConfig::default(), None)
        .unwrap()
        .0
}

#[test]
fn classifier_scene_with_consensus_and_a_head_swapped_in_while_running() {
    let slot: HeadSlot = Arc::new(ArcSwapOption::empty());
    let opts = AnalyzeOptions {
        top_k: 1,
        detect: None,
    };
    let cfg = ConsensusConfig {
        n: 2,
        m: 3,
        min_score: 0.5,
    };
    let mut engines = vec![model("mobilenetv2")];
    let mut p = Pipeline::new(0, None, slot.clone(), Consensus::new(cfg), opts, vec![]);
    let cat = photo("chelsea.png");
    // Without a head, the backbone's own label, announced once consensus is reached.
    let r1 = p.process(&mut engines, 1, 0, &cat).unwrap();
    assert_eq!(r1.items[0].label, "Egyptian cat");
    assert!(r1.items[0].head.is_none());
    assert!(r1.events.is_empty(), "one frame is not consensus");
    let r2 = p.process(&mut engines, 2, 0, &cat).unwrap();
    assert_eq!(r2.events.len(), 1);
    assert_eq!(r2.events[0].kind, EventKind::New);
    assert_eq!(r2.embeddings.len(), 1);

    // A head appears (as the training thread would swap it in): the next frame uses it.
    let mut vm = model("mobilenetv2");
    slot.store(Some(Arc::new(ServingHead {
        version: 7,
        head: cat_coffee_head(&mut vm),
    })));
    let r3 = p.process(&mut engines, 3, 0, &cat).unwrap();
    let head = r3.items[0].head.as_ref().expect("head label");
    assert_eq!((head.label.as_str(), head.head_version), ("cat", 7));
    let coffee = photo("coffee.png");
    let mut events = Vec::new();
    for i in 4..8 {
        let r = p.process(&mut engines, i, 0, &coffee).unwrap();
        assert_eq!(r.items[0].head.as_ref().unwrap().label, "coffee");
        events.extend(r.events);
    }
    let last = events.last().expect("the scene changed");
    assert_eq!(
        (last.kind, last.after.as_deref()),
        (EventKind::Update, Some("coffee"))
    );
}

/// A detector's boxes become tracked objects, and only objects of the classes the sub-label
/// model applies to go through it: a few good crops, then the agreed name is the object's.
#[test]
fn detector_objects_get_sub_labels_from_the_head_only_for_their_classes() {
    let slot: HeadSlot = Arc::new(ArcSwapOption::empty());
    let detector = model("nanodet-m");
    let detect = detector.model.manifest.detect.clone();
    let labels = detector.model.labels.clone();
    let mut crop_model = model("mobilenetv2");
    slot.store(Some(Arc::new(ServingHead {
        version: 1,
        head: cat_coffee_head(&mut crop_model),
    })));
    let opts = AnalyzeOptions { top_k: 0, detect };
    let mut engines = vec![detector, crop_model];
    let mut p = Pipeline::new(
        0,
        Some(1),
        slot,
        Consensus::new(ConsensusConfig {
            n: 1,
            m: 1,
            min_score: 0.3,
        }),
        opts,
        vec!["cup".into()],
    )
    .with_objects(CameraObjects::new(
        "kitchen",
        labels,
        &["cup".into()],
        TrackerConfig::default(),
        10,
    ))
    .with_frames(FrameRing::new(10.0, 64));
    let coffee = Arc::new(photo("coffee.png"));
    let mut objects = Vec::new();
    let mut last = None;
    for i in 1..=8u64 {
        let r = p
            .process(&mut engines, i, 1_795_987_200_000 + i as i64 * 250, &coffee)
            .unwrap();
        for item in r.items.iter().filter(|it| it.label != "cup") {
            assert!(item.head.is_none(), "{item:?} went through the head");
        }
        objects.extend(r.objects.clone());
        p.keep(coffee.clone(), &r);
        last = Some(r);
    }
    let r = last.expect("frames");
    let cup = r
        .items
        .iter()
        .find(|i| i.label == "cup")
        .expect("a cup box");
    let id = cup.id.clone().expect("the cup is an object");
    let sub = cup.head.as_ref().expect("the cup object was named");
    assert_eq!(sub.label, "coffee", "{sub:?}");
    let named = objects
        .iter()
        .find(|e| e.after.sub_label.is_some())
        .expect("an update with the name");
    assert_eq!(named.after.id, id);
    assert_eq!(
        named.after.sub_label.as_ref().map(|s| s.0.as_str()),
        Some("coffee")
    );
    // A label names the object's best crop, or a box of an earlier frame.
    let pinned = p
        .pinned(&mut engines, &Pin::Object(id.clone()))
        .expect("the object's crop");
    assert_eq!(pinned.class.as_deref(), Some("cup"));
    assert_eq!(pinned.embedding.len(), 1280);
    let idx = r.items.iter().position(|i| i.label == "cup").unwrap_or(0) as u32;
    let early = p
        .pinned(
            &mut engines,
            &Pin::Detection {
                frame_id: Some(8),
                index: idx,
            },
        )
        .expect("frame 8's cup");
    assert_eq!(early.object.as_deref(), Some(id.as_str()));
    let e = p
        .pinned(&mut engines, &Pin::Frame { frame_id: None })
        .unwrap_err();
    assert!(e.contains("this is a detector"), "{e}");
    // The crop is the box's pixels.
    let b = cup.bbox.unwrap();
    assert_eq!(
        crop(&photo("coffee.png"), b).width(),
        (b[2].ceil() as u32) - (b[0] as u32)
    );
}

/// adaptd's depthwise kernel and tract's own give the same network outputs (float rounding
/// apart) on the real models, and the same answer. `auto` picks ours on x86_64 and 32-bit
/// ARM, so every other test there runs on it too; this one pins both explicitly, also on
/// aarch64, where `auto` keeps tract's.
#[test]
fn adaptd_depthwise_kernel_matches_tracts_own() {
    use adaptd::runtime::depthwise::DepthwiseKernels;
    use adaptd::runtime::BackendOptions;
    let img = photo("chelsea.png");
    let opts = AnalyzeOptions {
        top_k: 5,
        detect: None,
    };
    for name in ["mobilenetv2", "efficientnet-lite0", "mobilenetv2-int8"] {
        let load = |kernels| {
            let r = ResolvedModel::resolve(name, &ModelDirs::only(vec![models_dir()])).unwrap();
            let backend = BackendOptions {
                tract_depthwise: kernels,
                ..Default::default()
            };
            VisionModel::load_with(r, 1, &backend).unwrap()
        };
        let (mut ours, mut theirs) = (
            load(DepthwiseKernels::Adaptd),
            load(DepthwiseKernels::Tract),
        );
        let a = ours.analyze(&[&img], &opts).unwrap().remove(0);
        let b = theirs.analyze(&[&img], &opts).unwrap().remove(0);
        let (ea, eb) = (a.embedding.unwrap(), b.embedding.unwrap());
        let scale = eb.iter().fold(0f32, |m, x| m.max(x.abs()));
        let worst = max_abs_diff(&ea, &eb);
        eprintln!(
            "{name}: embedding max |diff| {worst:.2e} (max |value| {scale:.2}); top-1 {} {:.5} / {} {:.5}",
            a.top[0].label, a.top[0].score, b.top[0].label, b.top[0].score
        );
        if name.ends_with("int8") {
            // Requantised after every layer: a rounding difference can move an activation by a
            // whole quantisation step, as between tract and onnxruntime (backend_parity.rs).
            let cos = cosine(&ea, &eb);
            eprintln!("{name}: embedding cosine {cos:.5}");
            assert!(cos >= 0.99, "{name}: cosine {cos}");
        } else {
            // fp32: a few ulps after 17 layers (measured 3e-6 on values up to 5).
            assert!(
                worst <= 1e-4 * scale.max(1.0),
                "{name}: {worst} vs scale {scale}"
            );
        }
        assert_eq!(a.top[0].label, b.top[0].label, "{name}: top-1");
        assert!(
            (a.top[0].score - b.top[0].score).abs() < 0.05,
            "{name}: top-1 score"
        );
    }
}
