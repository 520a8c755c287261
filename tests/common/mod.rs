//! Shared test helpers: where the real models and photos are, and running the real binary.
//!
//! Models come from `models/` in the checkout; when they are not there yet, they are placed
//! by the project's own `models/fetch --mirror ../shared/models` (checksums verified), the
//! same path CI takes. `ADAPTD_TEST_MODEL_DIR` and `ADAPTD_TEST_IMAGES` override both.
#![allow(dead_code)]

pub mod mosquitto;
pub mod turns;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Cosine similarity of two equal-length vectors.
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let n = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (n(a) * n(b))
}

/// The largest element-wise difference of two vectors.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max)
}

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The directory holding the five ONNX files and label files, fetched once per test binary.
pub fn models_dir() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        if let Some(d) = std::env::var_os("ADAPTD_TEST_MODEL_DIR") {
            return PathBuf::from(d);
        }
        let dir = repo().join("models");
        let mirror = repo().join("../shared/models");
        let status = Command::new(repo().join("models/fetch"))
            .arg("--mirror")
            .arg(&mirror)
            .arg("--dest")
            .arg(&dir)
            .status()
            .expect("run models/fetch");
        assert!(
            status.success(),
            "models/fetch --mirror {} failed",
            mirror.display()
        );
        dir
    })
    .clone()
}

pub fn images_dir() -> PathBuf {
    std::env::var_os("ADAPTD_TEST_IMAGES")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("../shared/images"))
}

pub fn image(name: &str) -> PathBuf {
    images_dir().join(name)
}

/// The `adaptd` binary with the model directory set.
pub fn adaptd() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_adaptd"));
    c.arg("--model-dir").arg(models_dir());
    c.env_remove("RUST_LOG");
    c
}

pub fn run(args: &[&str]) -> Output {
    adaptd().args(args).output().expect("run adaptd")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Asserts a failure with `code`, one line on stderr naming `needle`, and no panic.
pub fn assert_clean_failure(o: &Output, code: i32, needle: &str) {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(code), "stderr: {err}");
    assert!(err.contains(needle), "stderr should name {needle:?}: {err}");
    assert!(!err.contains("panicked"), "panic: {err}");
    assert!(!err.contains("RUST_BACKTRACE"), "panic: {err}");
}

pub fn reference() -> serde_json::Value {
    let text = std::fs::read_to_string(repo().join("tests/reference/reference.json"))
        .expect("reference.json");
    serde_json::from_str(&text).expect("parse reference.json")
}

pub fn copy(from: &Path, to: &Path) {
    std::fs::copy(from, to)
        .unwrap_or_else(|e| panic!("copy {} -> {}: {e}", from.display(), to.display()));
}

/// A child process killed on drop (broker, subscriber, daemon after a failed assertion).
pub struct Guard(pub Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `adaptd --config <config> run`, its log on the test's stderr, killed on drop.
pub fn start_daemon(config: &Path) -> Guard {
    Guard(
        adaptd()
            .arg("--config")
            .arg(config)
            .arg("run")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .expect("start adaptd run"),
    )
}

/// Waits up to `limit` for the process to exit and returns its exit code.
pub fn wait_exit(child: &mut Guard, what: &str, limit: Duration) -> Option<i32> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(s) = child.0.try_wait().expect("try_wait") {
            return s.code();
        }
        assert!(
            Instant::now() < deadline,
            "{what} did not exit within {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A loopback port nothing listens on (free when this returns).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// `kill -SIG pid`.
pub fn send_signal(child: &Guard, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &child.0.id().to_string()])
        .status()
        .expect("kill");
    assert!(ok.success(), "kill {sig}");
}

/// The onnxruntime library for tests of the onnxruntime backend: `ADAPTD_TEST_ORT_LIBRARY`,
/// `ORT_DYLIB_PATH`, else the wheel `python3` imports; or why there is none.
pub fn ort_library() -> Result<PathBuf, String> {
    static LIB: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    LIB.get_or_init(|| {
        for var in ["ADAPTD_TEST_ORT_LIBRARY", "ORT_DYLIB_PATH"] {
            if let Some(p) = std::env::var_os(var).filter(|v| !v.is_empty()) {
                return Ok(PathBuf::from(p));
            }
        }
        adaptd::runtime::find_wheel_library("python3").ok_or_else(|| {
            "no onnxruntime library: ADAPTD_TEST_ORT_LIBRARY and ORT_DYLIB_PATH are unset and \
             python3 cannot import onnxruntime (pip install onnxruntime==1.32.0)"
                .to_string()
        })
    })
    .clone()
}

/// The library, or `None` after printing why `test` is skipped. With
/// `ADAPTD_REQUIRE_ONNXRUNTIME=1` (CI) a missing library fails the test instead.
pub fn ort_library_or_skip(test: &str) -> Option<PathBuf> {
    match ort_library() {
        Ok(p) => Some(p),
        Err(why) if std::env::var("ADAPTD_REQUIRE_ONNXRUNTIME").as_deref() == Ok("1") => {
            panic!("{test}: ADAPTD_REQUIRE_ONNXRUNTIME=1 but {why}")
        }
        Err(why) => {
            eprintln!("SKIPPED {test}: {why}");
            None
        }
    }
}
