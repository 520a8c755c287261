//! `samples`, `train`, `eval`, `classify` and `heads`: transfer learning from the command line.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, Subcommand, ValueEnum};
use serde::Serialize;

use super::{Context, Format, UsageError};
use crate::adapt::metrics::Metrics;
use crate::adapt::workspace::{TrainOutcome, Workspace};
use crate::adapt::HeadKind;
use crate::audio::model::{AudioModel, AudioModelError};
use crate::audio::wav::WavLimits;
use crate::model::manifest::ModelKind;
use crate::model::ResolvedModel;
use crate::store::{SampleSource, ThumbnailFilter};
use crate::vision::{image_io, AnalyzeOptions, VisionModel};

/// `--model` and `--state-dir`, shared by every adaptation command.
#[derive(Debug, Clone, Args)]
pub struct Target {
    /// A built-in model name or a manifest path (default: the config's).
    #[arg(long, global = true)]
    model: Option<String>,
    /// Where samples and heads live (default: the config's state_dir, else /var/lib/adaptd
    /// for root and $XDG_DATA_HOME/adaptd otherwise).
    #[arg(long, global = true, value_name = "DIR")]
    state_dir: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum SamplesCmd {
    /// Add images as samples of one label.
    Add {
        #[arg(long)]
        label: String,
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
    },
    /// Import a folder laid out as DIR/<label>/*.jpg|png (the ImageFolder convention).
    Import {
        #[arg(value_name = "DIR")]
        dir: PathBuf,
    },
    /// Samples per label and split.
    List {
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
    },
    /// Remove samples by id, or every sample of a label.
    Rm {
        #[arg(long, conflicts_with = "ids")]
        label: Option<String>,
        #[arg(value_name = "ID")]
        ids: Vec<i64>,
    },
    /// Write every sample's thumbnail to DIR/<label>/<id>.jpg (importable again).
    Export {
        #[arg(value_name = "DIR")]
        dir: PathBuf,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum HeadChoice {
    Softmax,
    Mlp,
    /// Nearest centroid by cosine, for enrolment from one to three samples per label.
    Centroid,
}

#[derive(Debug, Args)]
pub struct TrainArgs {
    /// Import this folder (DIR/<label>/*.jpg|png) before training.
    #[arg(long, value_name = "DIR")]
    data: Option<PathBuf>,
    /// Head architecture (default: the config's [train].head, else softmax).
    #[arg(long, value_enum)]
    head: Option<HeadChoice>,
    /// Deploy even if the new head is worse than the current one on the holdout.
    #[arg(long)]
    force: bool,
    /// Seed of every random choice (same data + seed = same head).
    #[arg(long)]
    seed: Option<u64>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Subcommand)]
pub enum HeadsCmd {
    /// Every saved head version.
    List,
    /// One version's metadata and training report (JSON).
    Show { version: u32 },
    /// Make an earlier version current again.
    Rollback { version: u32 },
}

pub use crate::config::default_state_dir;

impl Target {
    fn state_dir(&self, ctx: &Context) -> PathBuf {
        self.state_dir
            .clone()
            .or_else(|| ctx.config.state_dir.clone())
            .unwrap_or_else(default_state_dir)
    }

    fn workspace(&self, ctx: &Context) -> anyhow::Result<Workspace> {
        let model = ctx.resolve_model(self.model.as_deref())?;
        Ok(Workspace::open(
            &self.state_dir(ctx),
            &model,
            ctx.config.samples.store_options(),
        )?)
    }

    /// The backbone (batch 1) and the workspace.
    fn load(&self, ctx: &Context) -> anyhow::Result<(Embedder, Workspace)> {
        let model = ctx.resolve_model(self.model.as_deref())?;
        let ws = Workspace::open(
            &self.state_dir(ctx),
            &model,
            ctx.config.samples.store_options(),
        )?;
        Ok((Embedder::load(ctx, model)?, ws))
    }
}

/// An embedding, and for images the thumbnail the store keeps for re-embedding.
type Embedded = (Vec<f32>, Option<Vec<u8>>);

/// What turns an input file into an embedding: images for vision models, WAV clips for audio
/// models (the manifest's `kind` decides), so that every sample and head command works the
/// same for cameras and microphones.
enum Embedder {
    Vision(Box<VisionModel>, image_io::DecodeLimits),
    Audio(Box<AudioModel>, WavLimits),
}

impl Embedder {
    fn load(ctx: &Context, model: ResolvedModel) -> anyhow::Result<Embedder> {
        Ok(match model.manifest.kind {
            ModelKind::Vision => Embedder::Vision(
                Box::new(VisionModel::load_with(
                    model,
                    1,
                    &ctx.config.model.backend_options(),
                )?),
                ctx.config.image.limits(),
            ),
            ModelKind::Audio => {
                let opts = ctx.config.model.backend_options();
                Embedder::Audio(
                    Box::new(AudioModel::load_with(model, &opts)?),
                    WavLimits::default(),
                )
            }
        })
    }

    /// File extensions this model reads.
    fn extensions(&self) -> &'static [&'static str] {
        match self {
            Embedder::Vision(..) => &["jpg", "jpeg", "png"],
            Embedder::Audio(..) => &["wav"],
        }
    }

    /// Reads and embeds one file: `Ok(Err(why))` when the file cannot be used (the caller
    /// reports and skips it), `Err` when the model fails. Images also give the
    /// thumbnail the store keeps for re-embedding.
    fn embed_file(&mut self, path: &Path) -> anyhow::Result<Result<Embedded, Unusable>> {
        match self {
            Embedder::Vision(vm, limits) => {
                let img = match image_io::decode_file(path, limits) {
                    Ok(img) => img,
                    Err(e) => return Ok(Err(Unusable::Image(e))),
                };
                let opts = AnalyzeOptions {
                    top_k: 0,
                    detect: None,
                };
                let e = vm
                    .analyze(&[&img], &opts)?
                    .into_iter()
                    .next()
                    .and_then(|a| a.embedding)
                    .context("the backbone produced no embedding")?;
                Ok(Ok((e, Some(image_io::thumbnail_jpeg(&img)?))))
            }
            Embedder::Audio(am, limits) => {
                let samples = match crate::audio::load_16k(path, limits) {
                    Ok(s) => s,
                    Err(source) => {
                        return Ok(Err(Unusable::Audio {
                            path: path.to_owned(),
                            source,
                        }))
                    }
                };
                match am.embed(&samples) {
                    Ok(e) => Ok(Ok((e, None))),
                    Err(AudioModelError::Audio(source)) => Ok(Err(Unusable::Audio {
                        path: path.to_owned(),
                        source,
                    })),
                    Err(e) => Err(e.into()),
                }
            }
        }
    }
}

/// Why a file given to `add`, `evaluate` or `predict` was skipped.
#[derive(Debug, thiserror::Error)]
enum Unusable {
    #[error(transparent)]
    Image(image_io::ImageError),
    #[error("{}: {source}", path.display())]
    Audio {
        path: PathBuf,
        source: crate::audio::AudioError,
    },
}

/// The files of an ImageFolder-style tree (`DIR/<label>/*.<ext>`): (label, path), sorted
/// for reproducibility.
fn labeled_folder(dir: &Path, extensions: &[&str]) -> anyhow::Result<Vec<(String, PathBuf)>> {
    let read = |d: &Path| -> anyhow::Result<Vec<PathBuf>> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(d)
            .with_context(|| format!("{}: cannot list the folder", d.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        v.sort();
        Ok(v)
    };
    let mut out = Vec::new();
    for label_dir in read(dir)?.into_iter().filter(|p| p.is_dir()) {
        let label = label_dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        for file in read(&label_dir)? {
            let ext = file
                .extension()
                .map(|e| e.to_string_lossy().to_ascii_lowercase());
            if ext.as_deref().is_some_and(|e| extensions.contains(&e)) {
                out.push((label.clone(), file));
            }
        }
    }
    if out.is_empty() {
        return Err(UsageError(format!(
            "{}: no files found; expected DIR/<label>/*.{} (one folder per label)",
            dir.display(),
            extensions.join("|")
        ))
        .into());
    }
    Ok(out)
}

/// Adds (label, file) pairs, one committed sample each; prints a line per sample *after* its
/// commit, so whatever was reported is on disk. Undecodable files are listed and skipped.
fn add_files(
    em: &mut Embedder,
    ws: &mut Workspace,
    files: &[(String, PathBuf)],
) -> anyhow::Result<usize> {
    let mut failures = 0;
    let mut checked_labels = std::collections::HashSet::new();
    for (label, path) in files {
        if checked_labels.insert(label.clone()) {
            crate::store::validate_training_label(label)?;
        }
        let (embedding, thumb) = match em.embed_file(path)? {
            Ok(e) => e,
            Err(e) => {
                eprintln!("adaptd: skipped: {e}");
                failures += 1;
                continue;
            }
        };
        let source = SampleSource::File {
            path: path.display().to_string(),
        };
        let sample = ws.sample(label, embedding, thumb, source);
        let outcome = ws.add(sample)?;
        println!(
            "added #{} {} ({}, {}){}",
            outcome.id,
            path.display(),
            label,
            outcome.split.as_str(),
            if outcome.evicted.is_empty() {
                String::new()
            } else {
                format!(", evicted {:?} (per-label cap)", outcome.evicted)
            }
        );
    }
    Ok(failures)
}

pub fn samples(ctx: &Context, target: &Target, cmd: &SamplesCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        SamplesCmd::Add { label, files } => {
            let (mut em, mut ws) = target.load(ctx)?;
            let pairs: Vec<_> = files.iter().map(|f| (label.clone(), f.clone())).collect();
            let failures = add_files(&mut em, &mut ws, &pairs)?;
            Ok(exit(failures))
        }
        SamplesCmd::Import { dir } => {
            let (mut em, mut ws) = target.load(ctx)?;
            let files = labeled_folder(dir, em.extensions())?;
            let failures = add_files(&mut em, &mut ws, &files)?;
            eprintln!(
                "imported {} of {} images from {}",
                files.len() - failures,
                files.len(),
                dir.display()
            );
            Ok(exit(failures))
        }
        SamplesCmd::List { format } => {
            let ws = target.workspace(ctx)?;
            let counts = ws.store.counts()?;
            let stale = ws.store.count_other_backbones(&ws.backbone)?;
            if *format == Format::Json {
                #[derive(Serialize)]
                struct Listing<'a> {
                    labels: &'a [crate::store::LabelCount],
                    other_backbones: usize,
                }
                println!(
                    "{}",
                    serde_json::to_string(&Listing {
                        labels: &counts,
                        other_backbones: stale.samples
                    })?
                );
            } else {
                println!(
                    "{:<24} {:>7} {:>7} {:>7}",
                    "label", "train", "holdout", "total"
                );
                for c in &counts {
                    println!(
                        "{:<24} {:>7} {:>7} {:>7}",
                        c.label,
                        c.train,
                        c.holdout,
                        c.total()
                    );
                }
                if stale.samples > 0 {
                    println!(
                        "({} samples of another backbone need re-embedding)",
                        stale.samples
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        SamplesCmd::Rm { label, ids } => {
            let mut ws = target.workspace(ctx)?;
            match label {
                Some(l) => println!("removed {} samples of '{l}'", ws.store.remove_label(l)?),
                None if ids.is_empty() => {
                    return Err(UsageError("give sample ids or --label".into()).into())
                }
                None => {
                    let mut missing = 0;
                    for id in ids {
                        if ws.store.remove(*id)? {
                            println!("removed #{id}");
                        } else {
                            eprintln!("adaptd: no sample #{id}");
                            missing += 1;
                        }
                    }
                    return Ok(exit(missing));
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        SamplesCmd::Export { dir } => {
            let ws = target.workspace(ctx)?;
            let mut n = 0;
            let mut without = 0;
            for row in ws.store.thumbnails(ThumbnailFilter::All) {
                let row = row?;
                let Some(jpeg) = row.thumbnail_jpeg else {
                    without += 1;
                    continue;
                };
                let label_dir = dir.join(&row.meta.label);
                std::fs::create_dir_all(&label_dir)
                    .with_context(|| format!("creating {}", label_dir.display()))?;
                // A voice sample keeps a WAV clip where a picture keeps its JPEG.
                let ext = if jpeg.starts_with(b"RIFF") {
                    "wav"
                } else {
                    "jpg"
                };
                let path = label_dir.join(format!("{}.{ext}", row.meta.id));
                crate::durable::write_atomic(&path, &jpeg)
                    .with_context(|| format!("writing {}", path.display()))?;
                n += 1;
            }
            println!("exported {n} thumbnails to {}", dir.display());
            if without > 0 {
                println!("({without} samples have no thumbnail)");
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

pub fn train(ctx: &Context, target: &Target, args: &TrainArgs) -> anyhow::Result<ExitCode> {
    let mut failures = 0;
    if let Some(dir) = &args.data {
        let (mut em, mut ws) = target.load(ctx)?;
        let files = labeled_folder(dir, em.extensions())?;
        failures = add_files(&mut em, &mut ws, &files)?;
    }
    let mut ws = target.workspace(ctx)?;
    let head = args.head.map(|h| match h {
        HeadChoice::Softmax => "softmax",
        HeadChoice::Mlp => "mlp",
        HeadChoice::Centroid => "centroid",
    });
    let mut config = ctx.config.train.train_config(head);
    if let Some(seed) = args.seed {
        config.seed = seed;
    }
    let outcome = ws.train(&config, args.force, None)?;
    if args.json {
        println!("{}", serde_json::to_string(&outcome)?);
    } else {
        print_train(&outcome);
    }
    Ok(exit(failures))
}

fn print_train(o: &TrainOutcome) {
    let r = &o.report;
    let kind = match r.head_kind {
        HeadKind::Softmax => "softmax".to_string(),
        HeadKind::Mlp { hidden, .. } => format!("mlp ({hidden} hidden)"),
        HeadKind::Centroid => "centroid (cosine)".to_string(),
    };
    let n_train: usize = r.samples_per_class_train.iter().sum();
    println!(
        "trained v{} ({kind}) on {n_train} samples of {} classes in {} ms: {} epochs, stopped by {:?}",
        o.version,
        r.classes.len(),
        r.train_time_ms,
        r.epochs_run,
        r.stopped_because
    );
    print_metrics("holdout", &r.metrics);
    println!(
        "unknown threshold {:.3} ({})",
        r.threshold, r.threshold_rule
    );
    match o.current_macro_f1 {
        Some(f1) => println!("current head on the same holdout: macro-F1 {f1:.3}"),
        None => println!("no current head"),
    }
    println!(
        "{}: {}",
        if o.decision.deployed {
            "deployed"
        } else {
            "NOT deployed"
        },
        o.decision.reason
    );
    if o.stale_samples > 0 {
        println!(
            "({} samples of another backbone were left out)",
            o.stale_samples
        );
    }
}

fn print_metrics(what: &str, m: &Metrics) {
    println!("{what}:");
    print!("{}", m.render_text());
}

#[derive(Serialize)]
struct EvalReport {
    head_version: u32,
    accuracy: f64,
    macro_f1: f64,
    /// Share of images the open-set rule reported as `unknown` (or `none`).
    unknown_rate: f64,
    metrics: Metrics,
    skipped: usize,
}

pub fn eval(ctx: &Context, target: &Target, data: &Path, json: bool) -> anyhow::Result<ExitCode> {
    let (mut em, ws) = target.load(ctx)?;
    let files = labeled_folder(data, em.extensions())?;
    let (version, head, _) = ws.current_head()?;
    let mut classes: Vec<String> = head.classes().to_vec();
    let (mut y_true, mut y_pred) = (Vec::new(), Vec::new());
    let (mut skipped, mut unknown) = (0, 0);
    for (label, path) in &files {
        let embedding = match em.embed_file(path)? {
            Ok((e, _)) => e,
            Err(e) => {
                eprintln!("adaptd: skipped: {e}");
                skipped += 1;
                continue;
            }
        };
        let p = crate::adapt::workspace::predict(&head, &embedding)?;
        // Closed-set metrics (argmax), like the training report; open-set rejections are
        // reported separately as the unknown rate.
        let argmax = p
            .probabilities
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map(|(i, _)| i)
            .unwrap_or(0);
        unknown += usize::from(p.unknown);
        let truth = match classes.iter().position(|c| c == label) {
            Some(i) => i,
            None => {
                classes.push(label.clone());
                classes.len() - 1
            }
        };
        y_true.push(truth);
        y_pred.push(argmax);
    }
    if y_true.is_empty() {
        anyhow::bail!("{}: no image could be read", data.display());
    }
    let metrics = Metrics::compute(&y_true, &y_pred, &classes)?;
    let report = EvalReport {
        head_version: version,
        accuracy: metrics.accuracy,
        macro_f1: metrics.macro_f1,
        unknown_rate: unknown as f64 / y_true.len() as f64,
        metrics,
        skipped,
    };
    if json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!("head v{version} on {}", data.display());
        print_metrics("eval", &report.metrics);
        println!("reported as unknown: {:.1} %", 100.0 * report.unknown_rate);
    }
    Ok(exit(skipped))
}

pub fn classify(
    ctx: &Context,
    target: &Target,
    images: &[PathBuf],
    format: Format,
) -> anyhow::Result<ExitCode> {
    let (mut em, ws) = target.load(ctx)?;
    let (version, head, _) = ws.current_head()?;
    let mut failures = 0;
    for path in images {
        let embedding = match em.embed_file(path)? {
            Ok((e, _)) => e,
            Err(e) => {
                eprintln!("adaptd: {e}");
                failures += 1;
                continue;
            }
        };
        let p = crate::adapt::workspace::predict(&head, &embedding)?;
        let mut ranked: Vec<(String, f32)> = head
            .classes()
            .iter()
            .cloned()
            .zip(p.probabilities.iter().copied())
            .collect();
        ranked.sort_by(|a, b| b.1.total_cmp(&a.1));
        if format == Format::Json {
            println!(
                "{}",
                serde_json::json!({
                    "image": path.display().to_string(),
                    "label": p.label,
                    "score": p.score,
                    "unknown": p.unknown,
                    "head_version": version,
                    "probabilities": ranked.iter().map(|(l, s)| serde_json::json!({"label": l, "score": s})).collect::<Vec<_>>(),
                })
            );
        } else {
            println!(
                "{}  {} ({:.3}, head v{version})",
                path.display(),
                p.label,
                p.score
            );
        }
    }
    Ok(exit(failures))
}

pub fn heads(ctx: &Context, target: &Target, cmd: &HeadsCmd) -> anyhow::Result<ExitCode> {
    let ws = target.workspace(ctx)?;
    match cmd {
        HeadsCmd::List => {
            let current = ws.registry.current_version()?;
            println!(
                "{:<3}{:<8} {:<10} {:>8} {:>8}  classes / decision",
                "", "version", "kind", "macro-F1", "samples"
            );
            for m in ws.registry.list()? {
                let mark = if Some(m.version) == current { "*" } else { "" };
                let n: usize = m.report.samples_per_class_train.iter().sum();
                println!(
                    "{mark:<3}v{:<7} {:<10} {:>8.3} {:>8}  {} / {}",
                    m.version,
                    m.head_kind.name(),
                    m.report.metrics.macro_f1,
                    n,
                    m.classes.join(","),
                    m.deploy_reason
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        HeadsCmd::Show { version } => {
            let (_, meta) = ws.registry.load(*version)?;
            println!("{}", serde_json::to_string_pretty(&meta)?);
            Ok(ExitCode::SUCCESS)
        }
        HeadsCmd::Rollback { version } => {
            let d = ws.registry.rollback(*version)?;
            println!("current head is now v{}: {}", d.version, d.reason);
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn exit(failures: usize) -> ExitCode {
    if failures == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
