//! `adaptd bench`: per-stage latency of a model on a real image, against onnxruntime.
//!
//! Absolute milliseconds on a shared, noisy machine mean little; a ratio against a reference
//! measured in the same run on the same input tensor means a lot. The reference is Python
//! onnxruntime (`benches/ort_reference.py`), fed the exact tensor our preprocessing produced,
//! so only the backbone runtime differs. adaptd's own backends are measured on that same
//! tensor too: tract always, and the onnxruntime backend (the same library as the Python
//! reference when it is found through it), so the cost of going through the `ort` crate is
//! a ratio against Python onnxruntime measured in the same run.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use serde::{Deserialize, Serialize};

use super::Context;
use crate::runtime::depthwise::DepthwiseKernels;
use crate::vision::{image_io, AnalyzeOptions, VisionModel};

/// Arguments of `adaptd bench`.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Models to measure (names or manifest paths); repeatable.
    #[arg(long = "model", required = true)]
    models: Vec<String>,
    /// The image every run uses.
    #[arg(long)]
    image: PathBuf,
    /// Timed iterations per stage.
    #[arg(long, default_value_t = 30)]
    iters: usize,
    /// Untimed iterations first.
    #[arg(long, default_value_t = 3)]
    warmup: usize,
    /// Thread counts to measure the backbone with.
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    threads: Vec<usize>,
    /// Python interpreter for the onnxruntime reference; `none` skips it.
    #[arg(long, default_value = "python3")]
    python: String,
    /// The reference script.
    #[arg(long, default_value = "benches/ort_reference.py")]
    reference: PathBuf,
    /// adaptd backends to time (`tract`, `onnxruntime`); default: tract, plus onnxruntime
    /// when its library loads.
    #[arg(long = "backend", value_delimiter = ',', value_enum)]
    backends: Option<Vec<crate::runtime::BackendChoice>>,
    /// onnxruntime library for the onnxruntime backend (default: [model].onnxruntime_library,
    /// ORT_DYLIB_PATH, then the wheel that --python imports).
    #[arg(long)]
    ort_library: Option<PathBuf>,
    /// Also time this model's backbone, interleaved with each `--model`'s on every backend and
    /// thread count, and report the speedup (for example `--model mobilenetv2-int8 --baseline
    /// mobilenetv2`: what int8 buys on this machine).
    #[arg(long)]
    baseline: Option<String>,
    /// Also time tract with adaptd's depthwise kernel against tract with its own, interleaved,
    /// at every thread count (`[model].tract_depthwise`: which one `auto` picks here).
    #[arg(long)]
    compare_depthwise: bool,
    /// Runs per block when interleaving (`--baseline`, `--compare-depthwise`; the first run of
    /// each block is untimed).
    #[arg(long, default_value_t = 10)]
    block: usize,
    /// Also print tract's time per operator type.
    #[arg(long)]
    profile: bool,
    /// One JSON object per model instead of a table.
    #[arg(long)]
    json: bool,
}

/// Median and 95th percentile of a set of timings, in milliseconds.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, Default)]
pub struct Latency {
    pub median_ms: f64,
    pub p95_ms: f64,
}

impl Latency {
    /// Nearest-rank percentiles of `samples`.
    pub fn of(samples: &mut [Duration]) -> Latency {
        if samples.is_empty() {
            return Latency::default();
        }
        samples.sort();
        let at = |q: f64| {
            let rank = ((q * samples.len() as f64).ceil() as usize).clamp(1, samples.len());
            samples[rank - 1].as_secs_f64() * 1e3
        };
        Latency {
            median_ms: at(0.5),
            p95_ms: at(0.95),
        }
    }
}

/// The reference script's answer.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct OrtResult {
    pub version: String,
    pub threads: usize,
    pub median_ms: f64,
    pub p95_ms: f64,
}

/// One thread count's figures.
#[derive(Debug, Serialize)]
pub struct ThreadResult {
    pub threads: usize,
    /// adaptd's tract backend.
    pub tract: Option<Latency>,
    /// adaptd's onnxruntime backend.
    pub onnxruntime_backend: Option<Latency>,
    /// Python onnxruntime (the reference).
    pub onnxruntime: Option<OrtResult>,
    /// tract median / Python onnxruntime median (above 1: tract is slower).
    pub ratio: Option<f64>,
    /// onnxruntime backend median / Python onnxruntime median.
    pub backend_ratio: Option<f64>,
}

/// A model against `--baseline` on one backend and thread count, timed interleaved.
#[derive(Debug, Serialize)]
pub struct Speedup {
    /// `tract` or `onnxruntime` (adaptd's backends).
    pub backend: &'static str,
    pub threads: usize,
    pub model: Latency,
    pub baseline: Latency,
    /// Baseline median / model median (above 1: the model is faster).
    pub speedup: f64,
}

impl Speedup {
    fn of(backend: &'static str, threads: usize, model: Latency, baseline: Latency) -> Speedup {
        Speedup {
            backend,
            threads,
            speedup: baseline.median_ms / model.median_ms,
            model,
            baseline,
        }
    }
}

/// Everything measured for one model.
#[derive(Debug, Serialize)]
pub struct ModelReport {
    pub model: String,
    pub image: String,
    pub load_ms: f64,
    /// Load time of the onnxruntime backend (library already loaded), when measured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub onnxruntime_load_ms: Option<f64>,
    /// The onnxruntime library the backend used.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub onnxruntime_library: Option<String>,
    pub decode: Latency,
    pub preprocess: Latency,
    pub postprocess: Latency,
    pub backbone: Vec<ThreadResult>,
    /// (preprocess + postprocess) median / 1-thread inference median, in percent.
    pub pre_post_percent_of_inference: f64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub profile: Vec<(String, usize, f64)>,
    /// The `--baseline` model, when given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub baseline: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub speedup: Vec<Speedup>,
    /// `--compare-depthwise`: tract with adaptd's depthwise kernel (`model`) against tract
    /// with its own (`baseline`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub depthwise: Vec<Speedup>,
    /// What `[model].tract_depthwise = "auto"` picks on this machine.
    pub depthwise_auto: DepthwiseKernels,
}

fn time(
    iters: usize,
    warmup: usize,
    mut f: impl FnMut() -> anyhow::Result<()>,
) -> anyhow::Result<Latency> {
    for _ in 0..warmup {
        f()?;
    }
    let mut samples = Vec::with_capacity(iters);
    for _ in 0..iters {
        let t = Instant::now();
        f()?;
        samples.push(t.elapsed());
    }
    Ok(Latency::of(&mut samples))
}

/// Times `a` and `b` in alternating blocks (a b b a a b ...), `iters` timed runs each.
///
/// Why not one after the other: on a shared machine a neighbour's load comes in steps of tens
/// of seconds and moves a whole block of runs by 30 %, so two separately measured medians can
/// disagree by more than the difference being measured. Interleaved, both see the same load.
/// Blocks rather than single runs, and the first run of each block untimed: onnxruntime's
/// intra-op threads keep spinning for a while after a run, and would steal the core from the
/// other engine's first run.
fn time_pair(
    iters: usize,
    warmup: usize,
    block: usize,
    mut a: impl FnMut() -> anyhow::Result<()>,
    mut b: impl FnMut() -> anyhow::Result<()>,
) -> anyhow::Result<(Latency, Latency)> {
    for _ in 0..warmup {
        a()?;
        b()?;
    }
    let block = block.max(1);
    let (mut ta, mut tb) = (Vec::with_capacity(iters), Vec::with_capacity(iters));
    let mut round = 0usize;
    while ta.len() < iters || tb.len() < iters {
        let order: [bool; 2] = if round.is_multiple_of(2) {
            [true, false]
        } else {
            [false, true]
        };
        for first in order {
            let (f, samples): (&mut dyn FnMut() -> anyhow::Result<()>, _) = if first {
                (&mut a, &mut ta)
            } else {
                (&mut b, &mut tb)
            };
            let todo = iters.saturating_sub(samples.len()).min(block);
            if todo == 0 {
                continue;
            }
            f()?;
            for _ in 0..todo {
                let t = Instant::now();
                f()?;
                samples.push(t.elapsed());
            }
        }
        round += 1;
    }
    Ok((Latency::of(&mut ta), Latency::of(&mut tb)))
}

/// Runs the benchmark for every `--model`.
pub fn run(ctx: &Context, args: &BenchArgs) -> anyhow::Result<ExitCode> {
    if args.iters == 0 || args.block == 0 || args.threads.iter().any(|t| *t == 0 || *t > 64) {
        return Err(super::UsageError(
            "--iters and --block must be >= 1 and --threads 1..=64".into(),
        )
        .into());
    }
    for name in &args.models {
        let report = bench_model(ctx, name, args)?;
        if args.json {
            println!("{}", serde_json::to_string(&report)?);
        } else {
            print_report(&report);
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn bench_model(ctx: &Context, name: &str, args: &BenchArgs) -> anyhow::Result<ModelReport> {
    let resolved = ctx.resolve_model(Some(name))?;
    let model_path = resolved.model_path.clone();
    let limits = ctx.config.image.limits();
    let bytes =
        std::fs::read(&args.image).with_context(|| format!("reading {}", args.image.display()))?;
    let label = args.image.display().to_string();
    let img = image_io::decode_bytes(&bytes, &label, &limits)?;
    let decode = time(args.iters, args.warmup, || {
        image_io::decode_bytes(&bytes, &label, &limits)?;
        Ok(())
    })?;

    // tract on one thread, with the configured depthwise kernels (the thread count varies below).
    let tract_opts = crate::runtime::BackendOptions {
        tract_depthwise: ctx.config.model.tract_depthwise,
        ..Default::default()
    };
    let mut vm = VisionModel::load_with(resolved, 1, &tract_opts)?;
    let load_ms = vm.backbone().load_time.as_secs_f64() * 1e3;
    let preprocess = time(args.iters, args.warmup, || {
        vm.preprocess(&img)?;
        Ok(())
    })?;
    let opts = AnalyzeOptions {
        top_k: ctx.config.classify.top_k,
        detect: ctx.config.detect.for_manifest(&vm.model.manifest),
    };
    // Postprocess = the whole analysis minus its own preprocess and inference stages.
    let mut post = Vec::with_capacity(args.iters);
    for _ in 0..args.iters.max(1) {
        let a = vm.analyze(&[&img], &opts)?;
        let ms = a.first().map(|a| a.timings.postprocess_ms).unwrap_or(0.0);
        post.push(Duration::from_secs_f64(ms / 1e3));
    }
    let postprocess = Latency::of(&mut post);

    vm.preprocess(&img)?;
    let input_file = tempfile::Builder::new().suffix(".npy").tempfile()?;
    let shape = vm.backbone().input_shape().to_vec();
    crate::npy::write(input_file.path(), &shape, vm.last_input())?;
    let input = vm.last_input().to_vec();

    use crate::runtime::BackendChoice;
    let wanted = args
        .backends
        .clone()
        .unwrap_or_else(|| vec![BackendChoice::Tract, BackendChoice::Auto]);
    let measure_tract = wanted.contains(&BackendChoice::Tract);
    let mut ort_backbone = None;
    let mut ort_options = None;
    let (mut onnxruntime_load_ms, mut onnxruntime_library) = (None, None);
    if let Some(choice) = wanted.iter().find(|c| **c != BackendChoice::Tract) {
        let library = args
            .ort_library
            .clone()
            .or_else(|| ctx.config.model.onnxruntime_library.clone())
            .or_else(|| {
                let env = std::env::var_os("ORT_DYLIB_PATH").filter(|v| !v.is_empty());
                env.is_none()
                    .then(|| crate::runtime::find_wheel_library(&args.python))
                    .flatten()
            });
        let opts = crate::runtime::BackendOptions {
            choice: BackendChoice::Onnxruntime,
            threads: 1,
            library,
            ..Default::default()
        };
        match crate::runtime::backbone::Backbone::load_with(&vm.model, 1, &opts) {
            Ok(b) => {
                onnxruntime_load_ms = Some(b.load_time.as_secs_f64() * 1e3);
                onnxruntime_library = crate::runtime::probe_onnxruntime(&opts).ok();
                ort_backbone = Some(b);
                ort_options = Some(opts);
            }
            // Asked for by name: its failure is the answer. By default: tract only.
            Err(e) if *choice == BackendChoice::Onnxruntime => return Err(e.into()),
            Err(e) => eprintln!("{name}: onnxruntime backend not measured: {e}"),
        }
    }

    let mut backbone = Vec::new();
    for &threads in &args.threads {
        let tract = if measure_tract {
            vm.backbone_mut().set_threads(threads)?;
            Some(time(args.iters, args.warmup, || {
                vm.infer()?;
                Ok(())
            })?)
        } else {
            None
        };
        let onnxruntime_backend = match ort_backbone.as_mut() {
            Some(b) => {
                b.set_threads(threads)?;
                Some(time(args.iters, args.warmup, || {
                    b.run(&input)?;
                    Ok(())
                })?)
            }
            None => None,
        };
        let onnxruntime = if args.python == "none" {
            None
        } else {
            Some(ort_reference(
                args,
                &model_path,
                input_file.path(),
                threads,
            )?)
        };
        let over =
            |l: &Option<Latency>| Some(l.as_ref()?.median_ms / onnxruntime.as_ref()?.median_ms);
        backbone.push(ThreadResult {
            threads,
            ratio: over(&tract),
            backend_ratio: over(&onnxruntime_backend),
            tract,
            onnxruntime_backend,
            onnxruntime,
        });
    }
    let mut speedup = Vec::new();
    if let Some(base_name) = &args.baseline {
        let mut base = VisionModel::load_with(ctx.resolve_model(Some(base_name))?, 1, &tract_opts)?;
        // The baseline's own preprocessing of the same image: models may differ in it.
        base.preprocess(&img)?;
        let base_input = base.last_input().to_vec();
        let mut base_ort = match (&ort_backbone, &ort_options) {
            (Some(_), Some(opts)) => Some(
                crate::runtime::backbone::Backbone::load_with(&base.model, 1, opts)
                    .with_context(|| format!("loading the baseline {base_name} on onnxruntime"))?,
            ),
            _ => None,
        };
        let (iters, warmup, block) = (args.iters, args.warmup, args.block);
        for &threads in &args.threads {
            if measure_tract {
                vm.backbone_mut().set_threads(threads)?;
                base.backbone_mut().set_threads(threads)?;
                let (model, baseline) = time_pair(
                    iters,
                    warmup,
                    block,
                    || vm.infer().map(drop).map_err(Into::into),
                    || base.infer().map(drop).map_err(Into::into),
                )?;
                speedup.push(Speedup::of("tract", threads, model, baseline));
            }
            if let (Some(m), Some(b)) = (ort_backbone.as_mut(), base_ort.as_mut()) {
                m.set_threads(threads)?;
                b.set_threads(threads)?;
                let (model, baseline) = time_pair(
                    iters,
                    warmup,
                    block,
                    || m.run(&input).map(drop).map_err(Into::into),
                    || b.run(&base_input).map(drop).map_err(Into::into),
                )?;
                speedup.push(Speedup::of("onnxruntime", threads, model, baseline));
            }
        }
    }
    let mut depthwise = Vec::new();
    if args.compare_depthwise {
        let load = |kernels| {
            let opts = crate::runtime::BackendOptions {
                tract_depthwise: kernels,
                ..Default::default()
            };
            crate::runtime::backbone::Backbone::load_with(&vm.model, 1, &opts)
        };
        let (mut ours, mut theirs) = (
            load(DepthwiseKernels::Adaptd)?,
            load(DepthwiseKernels::Tract)?,
        );
        for &threads in &args.threads {
            ours.set_threads(threads)?;
            theirs.set_threads(threads)?;
            let (a, b) = time_pair(
                args.iters,
                args.warmup,
                args.block,
                || ours.run(&input).map(drop).map_err(Into::into),
                || theirs.run(&input).map(drop).map_err(Into::into),
            )?;
            depthwise.push(Speedup::of("tract", threads, a, b));
        }
    }
    vm.backbone_mut().set_threads(1)?;
    let inference_1t = backbone
        .first()
        .and_then(|b| b.tract.or(b.onnxruntime_backend))
        .map(|l| l.median_ms)
        .unwrap_or(f64::NAN);
    let pre_post_percent_of_inference =
        100.0 * (preprocess.median_ms + postprocess.median_ms) / inference_1t;

    let mut profile = Vec::new();
    if args.profile {
        let input = vm.last_input().to_vec();
        let mut totals: std::collections::HashMap<String, (usize, Duration)> = Default::default();
        let runs = args.iters.clamp(1, 10);
        for _ in 0..runs {
            for p in vm.backbone_mut().profile(&input)? {
                let e = totals.entry(p.op).or_default();
                e.0 = p.nodes;
                e.1 += p.total;
            }
        }
        profile = totals
            .into_iter()
            .map(|(op, (nodes, total))| (op, nodes, total.as_secs_f64() * 1e3 / runs as f64))
            .collect();
        profile.sort_by(|a, b| b.2.total_cmp(&a.2));
    }
    Ok(ModelReport {
        model: name.to_string(),
        image: label,
        load_ms,
        onnxruntime_load_ms,
        onnxruntime_library,
        decode,
        preprocess,
        postprocess,
        backbone,
        pre_post_percent_of_inference,
        profile,
        baseline: args.baseline.clone(),
        speedup,
        depthwise,
        depthwise_auto: DepthwiseKernels::Auto.resolved(),
    })
}

fn ort_reference(
    args: &BenchArgs,
    model: &Path,
    input: &Path,
    threads: usize,
) -> anyhow::Result<OrtResult> {
    let output = Command::new(&args.python)
        .arg(&args.reference)
        .arg("--model")
        .arg(model)
        .arg("--input")
        .arg(input)
        .args(["--threads", &threads.to_string()])
        .args(["--iters", &args.iters.to_string()])
        .args(["--warmup", &args.warmup.to_string()])
        .output()
        .with_context(|| {
            format!(
                "running the onnxruntime reference ({} {}); install it with `pip install onnxruntime numpy` or pass --python none",
                args.python,
                args.reference.display()
            )
        })?;
    if !output.status.success() {
        bail!(
            "the onnxruntime reference failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    let text = String::from_utf8_lossy(&output.stdout);
    let line = text.lines().last().unwrap_or_default();
    serde_json::from_str(line).with_context(|| format!("unexpected reference output: {line}"))
}

/// `speedup` (baseline time / this time) in words a person reads right: "1.52x faster" or
/// "2.44x slower", never a ratio below 1 called faster.
fn speed_words(speedup: f64) -> String {
    if !(speedup.is_finite() && speedup > 0.0) {
        return "not measured".into();
    }
    if speedup >= 1.0 {
        format!("{speedup:.2}x faster")
    } else {
        format!("{:.2}x slower", 1.0 / speedup)
    }
}

fn print_report(r: &ModelReport) {
    println!(
        "== {} on {} (load + optimise {:.0} ms)",
        r.model, r.image, r.load_ms
    );
    let row = |stage: &str, l: &Latency| {
        println!(
            "  {stage:<22} median {:8.2} ms   p95 {:8.2} ms",
            l.median_ms, l.p95_ms
        )
    };
    row("decode", &r.decode);
    row("preprocess", &r.preprocess);
    row("postprocess", &r.postprocess);
    if let (Some(ms), Some(lib)) = (r.onnxruntime_load_ms, &r.onnxruntime_library) {
        println!("  onnxruntime backend: {lib}, session created in {ms:.0} ms");
    }
    let vs = |ratio: Option<f64>| {
        ratio
            .map(|x| format!("   /python = {x:.2}x"))
            .unwrap_or_default()
    };
    for b in &r.backbone {
        if let Some(t) = &b.tract {
            println!(
                "  {:<22} median {:8.2} ms   p95 {:8.2} ms{}",
                format!("tract {}t", b.threads),
                t.median_ms,
                t.p95_ms,
                vs(b.ratio)
            );
        }
        if let Some(o) = &b.onnxruntime_backend {
            println!(
                "  {:<22} median {:8.2} ms   p95 {:8.2} ms{}",
                format!("onnxruntime (adaptd) {}t", b.threads),
                o.median_ms,
                o.p95_ms,
                vs(b.backend_ratio)
            );
        }
        if let Some(o) = &b.onnxruntime {
            println!(
                "  {:<22} median {:8.2} ms   p95 {:8.2} ms",
                format!("python ort {} {}t", o.version, o.threads),
                o.median_ms,
                o.p95_ms
            );
        }
    }
    if let Some(base) = &r.baseline {
        for x in &r.speedup {
            println!(
                "  vs {base} ({} {}t, interleaved): {:.2} ms against {:.2} ms = {}",
                x.backend,
                x.threads,
                x.model.median_ms,
                x.baseline.median_ms,
                speed_words(x.speedup)
            );
        }
    }
    for x in &r.depthwise {
        println!(
            "  tract, adaptd's depthwise vs tract's ({}t, interleaved): {:.2} ms against {:.2} ms \
             = {} (auto picks {}'s here)",
            x.threads,
            x.model.median_ms,
            x.baseline.median_ms,
            speed_words(x.speedup),
            r.depthwise_auto
        );
    }
    println!(
        "  preprocess + postprocess = {:.1} % of 1-thread inference (tract if measured)",
        r.pre_post_percent_of_inference
    );
    if !r.profile.is_empty() {
        let total: f64 = r.profile.iter().map(|p| p.2).sum();
        println!("  tract profile (per run, by operator):");
        for (op, nodes, ms) in &r.profile {
            println!(
                "    {op:<28} {nodes:4} nodes {ms:8.2} ms {:5.1} %",
                100.0 * ms / total
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ratio_below_one_is_slower_not_faster() {
        assert_eq!(speed_words(1.52), "1.52x faster");
        assert_eq!(speed_words(0.41), "2.44x slower");
        assert_eq!(speed_words(1.0), "1.00x faster");
        assert_eq!(speed_words(f64::NAN), "not measured");
    }

    #[test]
    fn pairs_are_timed_in_alternating_blocks_after_an_untimed_run() {
        let calls = std::cell::RefCell::new(String::new());
        let (a, b) = time_pair(
            5,
            1,
            2,
            || {
                calls.borrow_mut().push('a');
                Ok(())
            },
            || {
                calls.borrow_mut().push('b');
                Ok(())
            },
        )
        .unwrap();
        // warm-up "ab"; then blocks of 1 untimed + 2 timed, a b | b a | a b (1 timed left each)
        assert_eq!(
            calls.into_inner(),
            concat!("ab", "aaa", "bbb", "bbb", "aaa", "aa", "bb")
        );
        assert!(a.median_ms >= 0.0 && b.median_ms >= 0.0);
    }

    #[test]
    fn a_failing_run_stops_the_pair() {
        let mut n = 0;
        let r = time_pair(
            3,
            0,
            1,
            || Ok(()),
            || {
                n += 1;
                if n == 2 {
                    anyhow::bail!("engine gone")
                }
                Ok(())
            },
        );
        assert_eq!(r.unwrap_err().to_string(), "engine gone");
    }

    #[test]
    fn nearest_rank_percentiles() {
        let mut s: Vec<Duration> = (1..=20).map(Duration::from_millis).collect();
        let l = Latency::of(&mut s);
        assert_eq!(l.median_ms, 10.0);
        assert_eq!(l.p95_ms, 19.0);
        assert_eq!(Latency::of(&mut []).median_ms, 0.0);
    }
}

/// Arguments of `adaptd bench-head`: the head trainer on given embeddings, so a reference
/// (scikit-learn, `benches/head_vs_sklearn.py`) can train on exactly the same arrays.
#[derive(Debug, clap::Args)]
pub struct HeadBenchArgs {
    /// Training embeddings, float32 `.npy` of shape [n, dim].
    #[arg(long)]
    train: PathBuf,
    /// Training labels, float32 `.npy` of shape [n] holding class indices.
    #[arg(long)]
    train_y: PathBuf,
    /// Holdout embeddings for early stopping and calibration (optional).
    #[arg(long, requires = "holdout_y")]
    holdout: Option<PathBuf>,
    #[arg(long)]
    holdout_y: Option<PathBuf>,
    /// Test embeddings, never seen by training.
    #[arg(long)]
    test: PathBuf,
    #[arg(long)]
    test_y: PathBuf,
    #[arg(long, value_enum, default_value = "softmax")]
    head: HeadKindArg,
    #[arg(long, default_value_t = 0x5eed_ada9)]
    seed: u64,
    /// Overrides of the trainer's defaults, for tuning experiments.
    #[arg(long)]
    learning_rate: Option<f32>,
    #[arg(long)]
    weight_decay: Option<f32>,
    #[arg(long)]
    c: Option<f32>,
    #[arg(long)]
    batch_size: Option<usize>,
    #[arg(long)]
    early_stopping: Option<bool>,
    #[arg(long)]
    epochs_max: Option<usize>,
}

/// Head architecture on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum HeadKindArg {
    Softmax,
    Mlp,
}

fn dataset(x: &Path, y: &Path, classes: &[String]) -> anyhow::Result<crate::adapt::Dataset> {
    let (xs, xd) = crate::npy::read(x)?;
    let (_, yd) = crate::npy::read(y)?;
    let [n, dim] = xs[..] else {
        bail!(
            "{}: expected a [n, dim] array, got shape {xs:?}",
            x.display()
        );
    };
    if yd.len() != n {
        bail!("{}: {} labels for {n} embeddings", y.display(), yd.len());
    }
    let labels = yd.iter().map(|v| *v as usize).collect();
    Ok(crate::adapt::Dataset::new(
        dim,
        xd,
        labels,
        classes.to_vec(),
    )?)
}

/// Trains one head and prints one JSON line: test accuracy, macro-F1 and training time.
pub fn run_head(args: &HeadBenchArgs) -> anyhow::Result<ExitCode> {
    let (_, yd) = crate::npy::read(&args.train_y)?;
    let k = yd.iter().map(|v| *v as usize).max().map_or(0, |m| m + 1);
    let classes: Vec<String> = (0..k).map(|i| format!("c{i}")).collect();
    let train = dataset(&args.train, &args.train_y, &classes)?;
    let holdout = match (&args.holdout, &args.holdout_y) {
        (Some(x), Some(y)) => dataset(x, y, &classes)?,
        _ => crate::adapt::Dataset::empty(train.dim, classes.clone()),
    };
    let test = dataset(&args.test, &args.test_y, &classes)?;
    let mut config = match args.head {
        HeadKindArg::Softmax => crate::adapt::TrainConfig::default(),
        HeadKindArg::Mlp => crate::adapt::TrainConfig::mlp(),
    };
    config.seed = args.seed;
    config.learning_rate = args.learning_rate.unwrap_or(config.learning_rate);
    config.weight_decay = args.weight_decay.unwrap_or(config.weight_decay);
    config.c = args.c.or(config.c);
    config.batch_size = args.batch_size.unwrap_or(config.batch_size);
    config.early_stopping = args.early_stopping.unwrap_or(config.early_stopping);
    config.epochs_max = args.epochs_max.unwrap_or(config.epochs_max);
    let start = Instant::now();
    let (head, report) = crate::adapt::train(&train, &holdout, &config, None)?;
    let train_ms = start.elapsed().as_secs_f64() * 1e3;
    let metrics = crate::adapt::evaluate(&head, &test)?;
    println!(
        "{}",
        serde_json::json!({
            "accuracy": metrics.accuracy,
            "macro_f1": metrics.macro_f1,
            "train_ms": train_ms,
            "epochs": report.epochs_run,
            "stopped_because": report.stopped_because,
            "n_train": train.len(),
            "n_holdout": holdout.len(),
            "dim": train.dim,
            "classes": k,
        })
    );
    Ok(ExitCode::SUCCESS)
}
