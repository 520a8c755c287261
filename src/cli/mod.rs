//! The `adaptd` command line: argument definitions and dispatch.
//!
//! Commands live in submodules by area; each returns `anyhow::Result` because this is the
//! binary's edge, where library errors become one line for a person. Usage mistakes are
//! wrapped in [`UsageError`] so that `main` exits with 2 for them and 1 for failures.

mod adapt_cmds;
mod bench_cmds;
mod bench_finetune;
#[cfg(feature = "rtsp")]
mod bench_h264;
mod bench_objects;
mod bench_track;
mod events_cmds;
mod vision_cmds;

pub use adapt_cmds::default_state_dir;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};

use crate::config::Config;
use crate::model::{ModelDirs, ResolvedModel};

/// A mistake in how adaptd was invoked (exit code 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

#[derive(Debug, Parser)]
#[command(
    name = "adaptd",
    version,
    about = "Edge inference and on-device adaptation daemon"
)]
pub struct Cli {
    /// Configuration file (TOML); defaults apply without one.
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Directory searched first for model files.
    #[arg(long, global = true, value_name = "DIR")]
    model_dir: Option<PathBuf>,
    /// More logging (-v info, -vv debug); RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

/// Output format for people or programs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Json,
    Text,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Classify or detect objects in images; one JSON object per image.
    Infer {
        /// A built-in model name or a manifest path (default: the config's).
        #[arg(long)]
        model: Option<String>,
        #[arg(long, value_enum, default_value = "json")]
        format: Format,
        /// Classes to print per image (default: the config's [classify].top_k).
        #[arg(long)]
        top_k: Option<usize>,
        /// Images per backbone run (default: the config's [model].batch).
        #[arg(long)]
        batch: Option<usize>,
        #[arg(required = true, value_name = "IMAGE")]
        images: Vec<PathBuf>,
    },
    /// Write the backbone's embeddings of images to a NumPy .npy file (row i = image i).
    Embed {
        #[arg(long)]
        model: Option<String>,
        /// Output .npy file (float32, shape [images, dim]); `-` for stdout.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        #[arg(long)]
        batch: Option<usize>,
        #[arg(required = true, value_name = "IMAGE")]
        images: Vec<PathBuf>,
    },
    /// Validate a configuration file: exit 0, or list every problem and exit 1.
    CheckConfig {
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
    /// List the cameras (V4L2) and microphones (ALSA) of this machine, what each can give,
    /// and a config entry for each.
    Devices {
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
    },
    /// List a model's tensors (to find the embedding tensor for your own manifest).
    Inspect {
        #[arg(long)]
        model: Option<String>,
        /// Show every node, not only the likely embedding candidates.
        #[arg(long)]
        all: bool,
    },
    /// Per-stage latency (median, p95) against onnxruntime on the same input.
    Bench(bench_cmds::BenchArgs),
    /// Train a head on given .npy embeddings and report test accuracy and time (for
    /// benches/head_vs_sklearn.py).
    BenchHead(bench_cmds::HeadBenchArgs),
    /// Fine-tune the backbone's last block with the head on a folder of labeled images and
    /// compare with head-only training (for benches/finetune.py).
    BenchFinetune(bench_finetune::FinetuneBenchArgs),
    /// Decode an H.264 file with the RTSP source's decoder and report the cost per frame
    /// (for benches/h264_decode.py).
    #[cfg(feature = "rtsp")]
    BenchH264(bench_h264::H264BenchArgs),
    /// Identity tracking on a generated scene with ground truth, through the real detector:
    /// IDF1 and identity switches of the tracker and of the IoU tracker on the same boxes.
    BenchTrack(bench_track::TrackBenchArgs),
    /// Tracked objects the daemon stored: list, show.
    Events(events_cmds::EventsArgs),
    /// Read a password from standard input and print the `[http].password_hash` line for it
    /// (argon2id), for a web page reachable beyond this device.
    HttpPassword,
    /// Labeled samples: add, import, list, rm, export.
    Samples {
        #[command(flatten)]
        target: adapt_cmds::Target,
        #[command(subcommand)]
        cmd: adapt_cmds::SamplesCmd,
    },
    /// Train a new classifier head on the stored samples; deploy it if not worse.
    Train {
        #[command(flatten)]
        target: adapt_cmds::Target,
        #[command(flatten)]
        args: adapt_cmds::TrainArgs,
    },
    /// Accuracy, macro-F1 and confusion matrix of the current head on a labeled folder.
    Eval {
        #[command(flatten)]
        target: adapt_cmds::Target,
        /// DIR/<label>/*.jpg|png
        #[arg(long, value_name = "DIR")]
        data: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Backbone + current head: the label of each image, with its score.
    Classify {
        #[command(flatten)]
        target: adapt_cmds::Target,
        #[arg(long, value_enum, default_value = "json")]
        format: Format,
        #[arg(required = true, value_name = "IMAGE")]
        images: Vec<PathBuf>,
    },
    /// Run the daemon: the configured source through the model, MQTT control (see
    /// docs/configuration.md). `--config FILE` may come before or after `run`.
    Run,
    /// A live terminal view of a device: detections, labels, fps, training (from MQTT; uses
    /// the config's [mqtt] table to connect).
    Watch {
        /// Device id to watch (default: the config's [mqtt].device_id, else this host's).
        #[arg(long)]
        device: Option<String>,
        /// Broker URL (default: the config's [mqtt].url).
        #[arg(long)]
        broker: Option<String>,
        /// No colours and no redraw in place: print whole screens one after another.
        #[arg(long)]
        plain: bool,
        /// Seconds between redraws.
        #[arg(long, default_value_t = 0.5)]
        interval: f64,
        /// With --plain: stop after printing this many screens.
        #[arg(long)]
        frames: Option<u64>,
        /// Show only this camera (or microphone), by its name in the config's [[cameras]].
        #[arg(long, value_name = "NAME")]
        camera: Option<String>,
    },
    /// Trained head versions: list, show, rollback.
    Heads {
        #[command(flatten)]
        target: adapt_cmds::Target,
        #[command(subcommand)]
        cmd: adapt_cmds::HeadsCmd,
    },
}

/// Parses the command line and runs the command.
pub fn main() -> anyhow::Result<ExitCode> {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if e.use_stderr() => {
            let _ = e.print();
            return Ok(ExitCode::from(2));
        }
        Err(e) => {
            let _ = e.print();
            return Ok(ExitCode::SUCCESS);
        }
    };
    init_logging(cli.verbose);
    let ctx = Context::new(cli.config.as_deref(), cli.model_dir.clone())?;
    let config_path = cli.config.clone();
    match cli.command {
        Command::Infer {
            model,
            format,
            top_k,
            batch,
            images,
        } => vision_cmds::infer(&ctx, model.as_deref(), format, top_k, batch, &images),
        Command::Embed {
            model,
            out,
            batch,
            images,
        } => vision_cmds::embed(&ctx, model.as_deref(), &out, batch, &images),
        Command::CheckConfig { file } => {
            let config = Config::load(&file)?;
            let dirs = ModelDirs::new(config.model.dir.as_deref(), config.state_dir.as_deref());
            crate::model::load_manifest(&config.model.name, &dirs)
                .with_context(|| format!("{}: [model].name", file.display()))?;
            check_backend(&file, &config)?;
            check_alsa(&file, &config)?;
            println!("{}: ok", file.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Devices { format } => {
            let inventory = crate::source::devices::inventory();
            match format {
                Format::Json => println!("{}", serde_json::to_string_pretty(&inventory)?),
                Format::Text => print!("{}", crate::source::devices::render_text(&inventory)),
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Inspect { model, all } => vision_cmds::inspect(&ctx, model.as_deref(), all),
        Command::Bench(args) => bench_cmds::run(&ctx, &args),
        Command::BenchHead(args) => bench_cmds::run_head(&args),
        #[cfg(feature = "rtsp")]
        Command::BenchH264(args) => bench_h264::run(&args),
        Command::BenchTrack(args) => bench_track::run(&ctx, &args),
        Command::BenchFinetune(args) => bench_finetune::run(&ctx, &args),
        Command::Events(args) => events_cmds::run(&ctx, &args),
        Command::HttpPassword => http_password(),
        Command::Samples { target, cmd } => adapt_cmds::samples(&ctx, &target, &cmd),
        Command::Train { target, args } => adapt_cmds::train(&ctx, &target, &args),
        Command::Eval { target, data, json } => adapt_cmds::eval(&ctx, &target, &data, json),
        Command::Classify {
            target,
            format,
            images,
        } => adapt_cmds::classify(&ctx, &target, &images, format),
        Command::Heads { target, cmd } => adapt_cmds::heads(&ctx, &target, &cmd),
        Command::Run => {
            // A configuration the daemon refuses is a usage error (exit 2): systemd's
            // RestartPreventExitStatus=2 then leaves the unit failed with the reason in
            // `systemctl status`, instead of restarting it into the same error forever.
            let outcome = crate::daemon::run_blocking(
                ctx.config.clone(),
                ctx.dirs.clone(),
                config_path.as_deref(),
            )
            .map_err(|e| match e {
                crate::daemon::DaemonError::Config(why) => anyhow::Error::new(UsageError(why)),
                other => anyhow::Error::new(other),
            })?;
            Ok(match outcome {
                crate::daemon::Outcome::Stopped => ExitCode::SUCCESS,
                crate::daemon::Outcome::SourcesFailed => ExitCode::FAILURE,
            })
        }
        Command::Watch {
            device,
            broker,
            plain,
            interval,
            frames,
            camera,
        } => watch(
            &ctx,
            WatchArgs {
                device,
                broker,
                plain,
                interval,
                frames,
                camera,
            },
        ),
    }
}

/// `check-config`'s microphone check: an enabled `kind = "alsa"` microphone needs ALSA's
/// library, which the daemon loads at run time. The device itself is not required (a USB
/// microphone may be plugged in after start; the daemon waits for it).
fn check_alsa(file: &Path, config: &Config) -> anyhow::Result<()> {
    let resolved = config.resolved_streams();
    let alsa = resolved
        .streams
        .iter()
        .find(|s| s.enabled && matches!(s.source, crate::source::SourceConfig::Alsa { .. }));
    if let Some(s) = alsa {
        crate::source::alsa::Library::get()
            .with_context(|| format!("{}: microphone {:?}", file.display(), s.name))?;
    }
    Ok(())
}

/// `check-config`'s backend check: with `onnxruntime`, the library must load (the daemon
/// would refuse to start otherwise); with `auto`, says which backend the daemon would use.
fn check_backend(file: &Path, config: &Config) -> anyhow::Result<()> {
    use crate::runtime::BackendChoice;
    let m = &config.model;
    let choices = [Some(m.backend), m.sublabel_backend];
    if !choices.iter().flatten().any(|c| *c != BackendChoice::Tract) {
        return Ok(());
    }
    let probe = crate::runtime::probe_onnxruntime(&m.backend_options());
    let strict = choices.contains(&Some(BackendChoice::Onnxruntime));
    match probe {
        Ok(lib) => println!("{}: [model].backend: {lib}", file.display()),
        Err(e) if strict => {
            return Err(
                anyhow::Error::new(e).context(format!("{}: [model].backend", file.display()))
            )
        }
        Err(e) => println!(
            "{}: [model].backend = \"auto\" will use tract: {e}",
            file.display()
        ),
    }
    Ok(())
}

/// The arguments of `adaptd watch`.
struct WatchArgs {
    device: Option<String>,
    broker: Option<String>,
    plain: bool,
    interval: f64,
    frames: Option<u64>,
    camera: Option<String>,
}

/// `adaptd watch`: a small runtime of its own, the view until Ctrl-C.
fn watch(ctx: &Context, args: WatchArgs) -> anyhow::Result<ExitCode> {
    let WatchArgs {
        device,
        broker,
        plain,
        interval,
        frames,
        camera,
    } = args;
    if !(interval.is_finite() && (0.05..=60.0).contains(&interval)) {
        anyhow::bail!("--interval {interval}: give a number of seconds from 0.05 to 60");
    }
    if let Some(name) = &camera {
        if let Err(reason) = crate::wire::check_stream_name(name) {
            anyhow::bail!("--camera {name:?}: {reason}");
        }
    }
    let mut mqtt = ctx.config.mqtt.clone();
    if let Some(url) = broker {
        mqtt.url = url;
    }
    let opts = crate::watch::WatchOptions {
        device: device.unwrap_or_else(|| mqtt.device_id()),
        plain,
        interval: Duration::from_secs_f64(interval),
        frames,
        camera,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(crate::watch::watch(&mqtt, &opts))?;
    Ok(ExitCode::SUCCESS)
}

/// `adaptd http-password`: the first line of standard input, hashed.
fn http_password() -> anyhow::Result<ExitCode> {
    use std::io::{BufRead as _, IsTerminal as _};
    if std::io::stdin().is_terminal() {
        eprintln!("password (it is shown as you type; end with Enter):");
    }
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("cannot read the password from standard input")?;
    let password = line.trim_end_matches(['\n', '\r']);
    if password.chars().count() < 8 {
        return Err(UsageError("the password must have at least 8 characters".into()).into());
    }
    let hash = crate::http::auth::hash_password(password).map_err(anyhow::Error::msg)?;
    println!("password_hash = \"{hash}\"");
    Ok(ExitCode::SUCCESS)
}

fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    use tracing_subscriber::Layer as _;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    // stderr at the chosen level; the in-memory tail (the web page's Status) at info for our
    // own lines (warnings for the libraries') whatever that level is.
    let _ = tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_filter(filter),
        )
        .with(
            crate::logtail::layer().with_filter(
                tracing_subscriber::filter::Targets::new()
                    .with_target("adaptd", tracing::Level::INFO)
                    .with_default(tracing::Level::WARN),
            ),
        )
        .try_init();
}

/// What every command needs: the configuration and where models are.
pub struct Context {
    pub config: Config,
    pub dirs: ModelDirs,
}

impl Context {
    fn new(config_path: Option<&Path>, model_dir: Option<PathBuf>) -> anyhow::Result<Context> {
        let config = match config_path {
            Some(p) => Config::load(p)?,
            None => Config::default(),
        };
        let explicit = model_dir.or_else(|| config.model.dir.clone());
        let dirs = ModelDirs::new(explicit.as_deref(), config.state_dir.as_deref());
        Ok(Context { config, dirs })
    }

    /// Resolves `--model` (or the config's model), verifying its files.
    pub fn resolve_model(&self, name: Option<&str>) -> anyhow::Result<ResolvedModel> {
        let name = name.unwrap_or(&self.config.model.name);
        ResolvedModel::resolve(name, &self.dirs).map_err(|e| match e {
            crate::model::ModelError::UnknownModel { .. } => {
                anyhow::Error::new(UsageError(e.to_string()))
            }
            other => anyhow::Error::new(other),
        })
    }
}
