//! `adaptd bench-finetune`: fine-tuning the backbone's tail against head-only training, on a
//! folder of labeled images (for benches/finetune.py).
//!
//! The folder has `pool/<label>/*` (the images a user could label) and `test/<label>/*` (never
//! trained on). Every image goes through the frozen trunk once, to the manifest's cut; then,
//! for each seed, `--per-class` images per label are drawn from the pool and split into train
//! and holdout by the sample store's rule, a head is trained head-only, the tail and head are
//! fine-tuned from it, and both are scored on the test images. The guard is the daemon's: the
//! fine-tuned model counts only when its held-out macro-F1 beats head-only's.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context as _;

use crate::adapt::finetune::{self, CutSet, FinetuneConfig, TailParams};
use crate::adapt::{evaluate, train, Dataset, TrainConfig};
use crate::model::tail::{cut_model, Tail};
use crate::rng::SplitMix64;
use crate::vision::{image_io, AnalyzeOptions, VisionModel};

use super::Context;

#[derive(Debug, clap::Args)]
pub struct FinetuneBenchArgs {
    /// A folder with `pool/<label>/` and `test/<label>/` image folders.
    #[arg(long)]
    images: PathBuf,
    #[arg(long, default_value = "mobilenetv2")]
    model: String,
    /// Labeled images per class drawn from the pool for each seed.
    #[arg(long, default_value_t = 20)]
    per_class: usize,
    #[arg(long, default_value_t = 5)]
    seeds: u64,
    #[arg(long, value_enum, default_value = "all")]
    params: ParamsArg,
    #[arg(long, default_value_t = 20)]
    epochs: usize,
    #[arg(long)]
    lr_ratio: Option<f32>,
    #[arg(long)]
    learning_rate: Option<f32>,
    #[arg(long)]
    l2sp: Option<f32>,
    #[arg(long)]
    patience: Option<usize>,
    #[arg(long)]
    weight_decay: Option<f32>,

    /// Keep the last epoch instead of the best held-out loss.
    #[arg(long)]
    no_early_stopping: bool,
    /// Views per labeled image the trunk runs on (1: the image; 2: and its mirror; more:
    /// crops), all in the training split (the holdout and test use the image itself).
    #[arg(long, default_value_t = 1)]
    views: usize,
    /// One JSON object instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ParamsArg {
    All,
    Biases,
}

/// Images of `dir/<label>/`, labels sorted, files sorted.
fn listing(dir: &Path) -> anyhow::Result<Vec<(String, Vec<PathBuf>)>> {
    let mut out = Vec::new();
    let mut labels: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("read {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    labels.sort();
    for l in labels {
        let mut files: Vec<PathBuf> = std::fs::read_dir(&l)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file())
            .collect();
        files.sort();
        let name = l
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        out.push((name, files));
    }
    Ok(out)
}

/// The cut activations of every image of a listing, per class.
/// The cut activations of every image of a listing, per class, per image, per view: the
/// image itself, then (with `views` > 1) its mirror image, then centre-weighted crops of 85 %
/// of each side at alternating corners. Views stand for what a labeling path could cache per
/// sample (a few trunk passes at labeling time), so training sees new views at no cost.
fn activations(
    model: &mut VisionModel,
    list: &[(String, Vec<PathBuf>)],
    views: usize,
) -> anyhow::Result<Vec<Vec<Vec<Vec<f32>>>>> {
    let opts = AnalyzeOptions {
        top_k: 0,
        detect: None,
    };
    let mut out = Vec::new();
    for (_, files) in list {
        let mut class = Vec::new();
        for f in files {
            let img = image_io::decode_file(f, &Default::default())
                .with_context(|| format!("decode {}", f.display()))?;
            let mut per = Vec::with_capacity(views);
            for v in 0..views.max(1) {
                let view = match v {
                    0 => img.clone(),
                    1 => image::imageops::flip_horizontal(&img),
                    k => {
                        let (w, h) = img.dimensions();
                        let (cw, ch) = ((w * 85 / 100).max(1), (h * 85 / 100).max(1));
                        let (x, y) = match k % 4 {
                            0 => (0, 0),
                            1 => (w - cw, 0),
                            2 => (0, h - ch),
                            _ => (w - cw, h - ch),
                        };
                        let c = image::imageops::crop_imm(&img, x, y, cw, ch).to_image();
                        if k % 2 == 1 {
                            image::imageops::flip_horizontal(&c)
                        } else {
                            c
                        }
                    }
                };
                let a = model.analyze(&[&view], &opts)?.remove(0);
                per.push(a.embedding.context("no cut activations")?);
            }
            class.push(per);
        }
        out.push(class);
    }
    Ok(out)
}

/// Peak resident memory of this process (VmHWM), MiB.
fn peak_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|v| v.parse::<f64>().ok())
            })
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

pub fn run(ctx: &Context, args: &FinetuneBenchArgs) -> anyhow::Result<ExitCode> {
    let m = ctx.resolve_model(Some(&args.model))?;
    let spec =
        m.manifest.finetune.clone().with_context(|| {
            format!("{} has no [finetune] cut in its manifest", m.manifest.name)
        })?;
    let emb_spec = m.manifest.embedding.clone().context("no [embedding]")?;
    let tail = Tail::read(&std::fs::read(&m.model_path)?, &spec.cut, &emb_spec.tensor)?;
    let dims = spec.cut_dims();
    let dim = emb_spec.dim;
    let pool_list = listing(&args.images.join("pool"))?;
    let test_list = listing(&args.images.join("test"))?;
    let classes: Vec<String> = pool_list.iter().map(|(l, _)| l.clone()).collect();
    anyhow::ensure!(
        test_list.iter().map(|(l, _)| l).eq(classes.iter()),
        "pool/ and test/ must hold the same label folders"
    );
    let mut trunk = VisionModel::load(cut_model(&m).context("cut model")?, 1)?;
    let t0 = Instant::now();
    let pool = activations(&mut trunk, &pool_list, args.views)?;
    let test = activations(&mut trunk, &test_list, 1)?;
    let trunk_s = t0.elapsed().as_secs_f64();
    drop(trunk);
    let (mut test_x, mut test_y) = (Vec::new(), Vec::new());
    for (y, c) in test.iter().enumerate() {
        for a in c {
            test_x.extend_from_slice(&a[0]);
            test_y.push(y);
        }
    }
    let test_emb = finetune::embed(&tail, dims, dim, &test_x)?;
    let test_ds = Dataset::new(dim, test_emb, test_y, classes.clone())?;
    let mut cfg = FinetuneConfig {
        epochs_max: args.epochs,
        params: match args.params {
            ParamsArg::All => TailParams::All,
            ParamsArg::Biases => TailParams::Biases,
        },
        max_memory_bytes: u64::MAX,
        ..FinetuneConfig::default()
    };
    cfg.lr_ratio = args.lr_ratio.unwrap_or(cfg.lr_ratio);
    cfg.learning_rate = args.learning_rate.unwrap_or(cfg.learning_rate);
    cfg.l2sp = args.l2sp.unwrap_or(cfg.l2sp);
    cfg.patience = args.patience.unwrap_or(cfg.patience);
    cfg.weight_decay = args.weight_decay.unwrap_or(cfg.weight_decay);
    cfg.early_stopping = !args.no_early_stopping;
    let before = peak_mib();
    let mut runs = Vec::new();
    for seed in 0..args.seeds {
        let mut rng = SplitMix64::new(0xf7_5eed ^ seed);
        let n = args.per_class;
        // The store's split: max(1, floor(n / 5)) of each label held out, at most n - 1.
        let hold = (n / 5).max(1).min(n.saturating_sub(1));
        let (mut tx, mut ty, mut hx, mut hy) = (vec![], vec![], vec![], vec![]);
        for (y, c) in pool.iter().enumerate() {
            anyhow::ensure!(
                c.len() >= n,
                "pool/{} has {} images, fewer than {n}",
                classes[y],
                c.len()
            );
            let mut idx: Vec<usize> = (0..c.len()).collect();
            rng.shuffle(&mut idx);
            for (k, &i) in idx.iter().take(n).enumerate() {
                if k < hold {
                    hx.extend_from_slice(&c[i][0]);
                    hy.push(y);
                } else {
                    for v in &c[i] {
                        tx.extend_from_slice(v);
                        ty.push(y);
                    }
                }
            }
        }
        let set = |x: Vec<f32>, y: Vec<usize>| CutSet {
            channels: dims.0,
            positions: dims.1,
            x,
            y,
            classes: classes.clone(),
        };
        let (train_cut, hold_cut) = (set(tx, ty), set(hx, hy));
        let emb = |s: &CutSet| -> anyhow::Result<Dataset> {
            Ok(Dataset::new(
                dim,
                finetune::embed(&tail, dims, dim, &s.x)?,
                s.y.clone(),
                classes.clone(),
            )?)
        };
        let (train_ds, hold_ds) = (emb(&train_cut)?, emb(&hold_cut)?);
        let head_cfg = TrainConfig {
            seed,
            ..TrainConfig::default()
        };
        let t = Instant::now();
        let (head, _) = train(&train_ds, &hold_ds, &head_cfg, None)?;
        let head_ms = t.elapsed().as_secs_f64() * 1e3;
        let head_test = evaluate(&head, &test_ds)?;
        let head_hold = evaluate(&head, &hold_ds)?;
        let cfg = FinetuneConfig { seed, ..cfg };
        let (tuned, tuned_head, report) =
            finetune::finetune(&tail, &head, &train_cut, &hold_cut, &cfg, None)?;
        let tuned_test_emb = finetune::embed(&tuned, dims, dim, &test_x)?;
        let tuned_test = evaluate(
            &tuned_head,
            &Dataset::new(dim, tuned_test_emb, test_ds.y.clone(), classes.clone())?,
        )?;
        let tuned_hold_emb = finetune::embed(&tuned, dims, dim, &hold_cut.x)?;
        let tuned_hold = evaluate(
            &tuned_head,
            &Dataset::new(dim, tuned_hold_emb, hold_cut.y.clone(), classes.clone())?,
        )?;
        let (choice, _) = finetune::guard(tuned_hold.macro_f1, head_hold.macro_f1, None);
        let deployed = choice == finetune::Choice::FineTuned;
        runs.push(serde_json::json!({
            "seed": seed,
            "head_only_accuracy": head_test.accuracy,
            "finetuned_accuracy": tuned_test.accuracy,
            "head_only_holdout_f1": head_hold.macro_f1,
            "finetuned_holdout_f1": tuned_hold.macro_f1,
            "guard_deploys_finetuned": deployed,
            "served_accuracy": if deployed { tuned_test.accuracy } else { head_test.accuracy },
            "head_ms": head_ms,
            "finetune_s": report.train_time.as_secs_f64(),
            "epochs": report.epochs,
            "best_epoch": report.best_epoch,
            "memory_estimate_mib": report.memory_bytes as f64 / (1 << 20) as f64,
            "start_holdout_loss": report.start_loss,
            "holdout_losses": report.holdout_losses,
            "train_losses": report.train_losses,
        }));
        if !args.json {
            eprintln!(
                "seed {seed}: head-only {:.3}, fine-tuned {:.3} (held-out F1 {:.3} vs {:.3}: {}), \
                 {:.1} s, {} epochs (best {})",
                head_test.accuracy,
                tuned_test.accuracy,
                tuned_hold.macro_f1,
                head_hold.macro_f1,
                if deployed {
                    "deployed"
                } else {
                    "kept head-only"
                },
                report.train_time.as_secs_f64(),
                report.epochs,
                report.best_epoch
            );
            eprintln!(
                "  held-out loss {:.3} -> {:?}\n  train loss {:?}",
                report.start_loss,
                report
                    .holdout_losses
                    .iter()
                    .map(|l| (l * 1000.0).round() / 1000.0)
                    .collect::<Vec<_>>(),
                report
                    .train_losses
                    .iter()
                    .map(|l| (l * 1000.0).round() / 1000.0)
                    .collect::<Vec<_>>()
            );
        }
    }
    let pick = |k: &str| -> Vec<f64> { runs.iter().filter_map(|r| r[k].as_f64()).collect() };
    let summary = serde_json::json!({
        "model": m.manifest.name,
        "params": format!("{:?}", cfg.params).to_lowercase(),
        "classes": classes.len(),
        "per_class": args.per_class,
        "seeds": args.seeds,
        "epochs_max": cfg.epochs_max,
        "views": args.views,
        "lr_ratio": cfg.lr_ratio,
        "l2sp": cfg.l2sp,
        "test_images": test_ds.len(),
        "trunk_seconds": trunk_s,
        "head_only_accuracy": mean(&pick("head_only_accuracy")),
        "finetuned_accuracy": mean(&pick("finetuned_accuracy")),
        "served_accuracy": mean(&pick("served_accuracy")),
        "gain_points": 100.0 * (mean(&pick("finetuned_accuracy")) - mean(&pick("head_only_accuracy"))),
        "finetune_seconds": mean(&pick("finetune_s")),
        "head_ms": mean(&pick("head_ms")),
        "guard_deployed": runs.iter().filter(|r| r["guard_deploys_finetuned"] == true).count(),
        "peak_rss_mib": peak_mib(),
        "peak_rss_before_training_mib": before,
        "runs": runs,
    });
    if args.json {
        println!("{summary}");
    } else {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    }
    Ok(ExitCode::SUCCESS)
}
