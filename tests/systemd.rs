//! The systemd unit and the installer, checked here where PID 1 is not systemd:
//! `systemd-analyze verify` and `security --offline=true` on the unit (exposure at most 2.0),
//! and `systemd/install.sh` run in a scratch root with the real binary (see the scripts for
//! every step they check).

use std::path::PathBuf;
use std::process::Command;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn run_script(script: &str, args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new("sh")
        .arg(repo().join(script))
        .args(args)
        .current_dir(repo())
        .output()
        .unwrap_or_else(|e| panic!("run {script}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text)
}

#[test]
fn the_unit_verifies_and_scores_2_or_lower() {
    let (code, text) = run_script("systemd/check-unit.sh", &[]);
    assert_ne!(
        code,
        Some(77),
        "systemd-analyze is missing: apt-get install systemd (it need not run)\n{text}"
    );
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("exposure"), "the score is reported: {text}");
}

#[test]
fn install_sh_in_a_scratch_root() {
    let (code, text) = run_script("systemd/test-install.sh", &[env!("CARGO_BIN_EXE_adaptd")]);
    assert_eq!(code, Some(0), "{text}");
}
