//! `infer`, `embed` and `inspect`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context as _;
use image::RgbImage;
use serde::Serialize;

use super::{Context, Format, UsageError};
use crate::vision::{image_io, Analysis, AnalyzeOptions, VisionModel};

/// A decoded image or the reason it could not be decoded, with the decode time.
struct Decoded {
    path: PathBuf,
    image: Result<RgbImage, image_io::ImageError>,
    decode_ms: f64,
}

fn decode_all<'a>(ctx: &Context, paths: &'a [PathBuf]) -> impl Iterator<Item = Decoded> + 'a {
    let limits = ctx.config.image.limits();
    paths.iter().map(move |p| {
        let t = Instant::now();
        let image = image_io::decode_file(p, &limits);
        Decoded {
            path: p.clone(),
            image,
            decode_ms: t.elapsed().as_secs_f64() * 1e3,
        }
    })
}

fn batch_size(ctx: &Context, batch: Option<usize>) -> anyhow::Result<usize> {
    let b = batch.unwrap_or(ctx.config.model.batch);
    if !(1..=64).contains(&b) {
        return Err(UsageError(format!("--batch {b} is out of range; allowed: 1 to 64")).into());
    }
    Ok(b)
}

fn load(ctx: &Context, model: Option<&str>, batch: usize) -> anyhow::Result<VisionModel> {
    let resolved = ctx.resolve_model(model)?;
    let vm = VisionModel::load_with(resolved, batch, &ctx.config.model.backend_options())?;
    tracing::info!(
        model = %vm.model.manifest.name,
        backend = %vm.backbone().backend(),
        ms = vm.backbone().load_time.as_secs_f64() * 1e3,
        "backbone loaded and optimised"
    );
    Ok(vm)
}

#[derive(Serialize)]
struct InferRecord<'a> {
    image: String,
    model: &'a str,
    #[serde(flatten)]
    analysis: &'a Analysis,
    decode_ms: f64,
}

/// Runs `f` on decoded images, `batch` at a time; undecodable images are reported on stderr
/// and skipped. Returns how many failed.
fn for_each_batch(
    ctx: &Context,
    vm: &mut VisionModel,
    paths: &[PathBuf],
    opts: &AnalyzeOptions,
    mut f: impl FnMut(&Path, f64, &Analysis) -> anyhow::Result<()>,
) -> anyhow::Result<usize> {
    let batch = vm.batch();
    let mut failures = 0;
    let mut pending: Vec<Decoded> = Vec::with_capacity(batch);
    let mut decoded = decode_all(ctx, paths).peekable();
    while decoded.peek().is_some() {
        pending.clear();
        for d in decoded.by_ref() {
            match &d.image {
                Ok(_) => pending.push(d),
                Err(e) => {
                    eprintln!("adaptd: {e}");
                    failures += 1;
                }
            }
            if pending.len() == batch {
                break;
            }
        }
        let images: Vec<&RgbImage> = pending
            .iter()
            .filter_map(|d| d.image.as_ref().ok())
            .collect();
        if images.is_empty() {
            continue;
        }
        let results = vm.analyze(&images, opts)?;
        for (d, a) in pending.iter().zip(&results) {
            f(&d.path, d.decode_ms, a)?;
        }
    }
    Ok(failures)
}

pub fn infer(
    ctx: &Context,
    model: Option<&str>,
    format: Format,
    top_k: Option<usize>,
    batch: Option<usize>,
    paths: &[PathBuf],
) -> anyhow::Result<ExitCode> {
    let batch = batch_size(ctx, batch)?;
    let mut vm = load(ctx, model, batch)?;
    let opts = AnalyzeOptions {
        top_k: top_k.unwrap_or(ctx.config.classify.top_k),
        detect: ctx.config.detect.for_manifest(&vm.model.manifest),
    };
    let name = vm.model.manifest.name.clone();
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let failures = for_each_batch(ctx, &mut vm, paths, &opts, |path, decode_ms, a| {
        match format {
            Format::Json => {
                let rec = InferRecord {
                    image: path.display().to_string(),
                    model: &name,
                    analysis: &without_embedding(a),
                    decode_ms,
                };
                serde_json::to_writer(&mut out, &rec)?;
                writeln!(out)?;
            }
            Format::Text => write_text(&mut out, path, &name, decode_ms, a)?,
        }
        Ok(())
    })?;
    out.flush()?;
    Ok(if failures == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// `infer` prints classes and boxes; the 1280 embedding numbers belong to `embed`.
fn without_embedding(a: &Analysis) -> Analysis {
    Analysis {
        embedding: None,
        ..a.clone()
    }
}

fn write_text(
    out: &mut impl Write,
    path: &Path,
    model: &str,
    decode_ms: f64,
    a: &Analysis,
) -> std::io::Result<()> {
    let t = &a.timings;
    writeln!(
        out,
        "{}  ({}x{}, {model})  decode {decode_ms:.1} ms, preprocess {:.1} ms, inference {:.1} ms, post {:.2} ms",
        path.display(),
        a.width,
        a.height,
        t.preprocess_ms,
        t.inference_ms,
        t.postprocess_ms
    )?;
    for r in &a.top {
        writeln!(out, "  {:6.3}  {}", r.score, r.label)?;
    }
    if let Some(dets) = &a.detections {
        if dets.is_empty() {
            writeln!(out, "  (no detections)")?;
        }
        for d in dets {
            let [x1, y1, x2, y2] = d.bbox;
            writeln!(
                out,
                "  {:6.3}  {:<14} [{x1:.0}, {y1:.0}, {x2:.0}, {y2:.0}]",
                d.score, d.label
            )?;
        }
    }
    Ok(())
}

pub fn embed(
    ctx: &Context,
    model: Option<&str>,
    out: &Path,
    batch: Option<usize>,
    paths: &[PathBuf],
) -> anyhow::Result<ExitCode> {
    let batch = batch_size(ctx, batch)?;
    let mut vm = load(ctx, model, batch)?;
    let Some(spec) = vm.model.manifest.embedding.clone() else {
        return Err(UsageError(format!(
            "model '{}' has no [embedding] in its manifest; add one (see docs/models.md)",
            vm.model.manifest.name
        ))
        .into());
    };
    let opts = AnalyzeOptions {
        top_k: 0,
        detect: None,
    };
    let mut rows: Vec<f32> = Vec::with_capacity(paths.len() * spec.dim);
    let mut n = 0;
    let failures = for_each_batch(ctx, &mut vm, paths, &opts, |_, _, a| {
        let e = a
            .embedding
            .as_ref()
            .context("the backbone produced no embedding")?;
        rows.extend_from_slice(e);
        n += 1;
        Ok(())
    })?;
    if failures > 0 {
        // Row i must be image i: a partial file would silently misalign them.
        anyhow::bail!(
            "{failures} image(s) could not be read; nothing written to {}",
            out.display()
        );
    }
    let shape = [n, spec.dim];
    if out == Path::new("-") {
        crate::npy::write_to(std::io::stdout().lock(), &shape, &rows)?;
    } else {
        crate::npy::write(out, &shape, &rows)
            .with_context(|| format!("writing {}", out.display()))?;
        eprintln!(
            "wrote {n} embeddings of dimension {} to {}",
            spec.dim,
            out.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub fn inspect(ctx: &Context, model: Option<&str>, all: bool) -> anyhow::Result<ExitCode> {
    let resolved = ctx.resolve_model(model)?;
    let nodes = crate::runtime::tract::inspect(&resolved)?;
    let m = &resolved.manifest;
    println!(
        "{} ({}), input {} {:?}",
        m.name,
        resolved.model_path.display(),
        m.input.name,
        m.input.shape
    );
    println!("{:<48} {:<24} output shape", "tensor", "operator");
    for (i, (name, op, shape)) in nodes.iter().enumerate() {
        // The embedding is the input of the final classifier: the tensors just before a
        // Gemm/MatMul near the end, usually after a global pooling and a flatten/reshape.
        let near_end = i + 6 >= nodes.len();
        let candidate =
            near_end || op.contains("Reshape") || op.contains("Flatten") || op.contains("Reduce");
        if all || candidate {
            println!("{name:<48} {op:<24} {shape}");
        }
    }
    if !all {
        println!("(likely embedding candidates and the last nodes; --all for every node)");
    }
    Ok(ExitCode::SUCCESS)
}
