//! `kind = "command"`: a camera program adaptd starts and supervises itself.
//!
//! `rpicam-vid -t 0 --codec mjpeg -o -`, `ffmpeg ... -f mjpeg -`, `gst-launch-1.0 ... ! jpegenc
//! ! fdsink`: the program writes MJPEG to its stdout, which is read like any MJPEG stream
//! ([`super::mjpeg`]). Its stderr goes to adaptd's log, line by line (rate-limited). When it
//! exits, for whatever reason, it is started again after a backoff (1 s doubling to 30 s,
//! reset once frames flow), and the camera's `state` says `reconnecting` with its exit status
//! and last stderr line meanwhile. At shutdown it gets SIGTERM, then SIGKILL after 2 s: no
//! orphaned camera process holds the sensor after adaptd exits.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use tracing::{info, warn};

use crate::backoff::Backoff;
use crate::source::frame::Frame;
use crate::source::mjpeg::MjpegSource;
use crate::source::reopen::whole_secs;
use crate::source::stats::{should_log, SourceState, SourceStats};
use crate::source::stop::StopSignal;
use crate::source::{Source, SourceError};
use crate::vision::image_io::DecodeLimits;

/// How long a program has to exit after SIGTERM before it gets SIGKILL.
const TERM_GRACE: Duration = Duration::from_secs(2);

/// How long an exit waits for the stderr reader to reach the end of the pipe, so the last
/// words are in `state` even when the machine is busy. Bounded: a grandchild that inherited
/// stderr can hold the pipe open forever.
const LAST_WORDS_WAIT: Duration = Duration::from_millis(500);

/// The last stderr line and whether the pipe has closed, shared with the reader thread.
#[derive(Default)]
struct StderrTail {
    state: Mutex<(String, bool)>,
    closed: Condvar,
}

impl StderrTail {
    fn line(&self, line: String) {
        if let Ok(mut s) = self.state.lock() {
            s.0 = line;
        }
    }

    fn close(&self) {
        if let Ok(mut s) = self.state.lock() {
            s.1 = true;
        }
        self.closed.notify_all();
    }

    /// The last line, after waiting up to `wait` for the pipe to close.
    fn last(&self, wait: Duration) -> String {
        let Ok(guard) = self.state.lock() else {
            return String::new();
        };
        match self.closed.wait_timeout_while(guard, wait, |s| !s.1) {
            Ok((s, _)) => s.0.clone(),
            Err(_) => String::new(),
        }
    }
}

/// A supervised camera program as a [`Source`].
pub struct CommandSource {
    argv: Vec<String>,
    fps_limit: Option<f64>,
    limits: DecodeLimits,
    stop: StopSignal,
    stats: Arc<SourceStats>,
    running: Option<Running>,
    backoff: Backoff,
    failures: u32,
    retry_in: Duration,
    ever_streamed: bool,
    seq: u64,
}

/// The program in hand and the MJPEG reader on its stdout.
struct Running {
    child: Arc<Mutex<Child>>,
    mjpeg: MjpegSource,
    /// The last line it wrote to stderr (for `state` when it exits).
    last_err: Arc<StderrTail>,
    /// Set once the child is reaped, so the stop watcher never signals a reused pid.
    reaped: Arc<AtomicBool>,
}

impl CommandSource {
    /// Nothing is started until the first [`Source::next_frame`], on the capture thread.
    pub fn new(
        argv: Vec<String>,
        fps_limit: Option<f64>,
        limits: DecodeLimits,
        stop: StopSignal,
    ) -> CommandSource {
        CommandSource {
            argv,
            fps_limit,
            limits,
            stop,
            stats: SourceStats::new(),
            running: None,
            backoff: Backoff::camera(),
            failures: 0,
            retry_in: Duration::ZERO,
            ever_streamed: false,
            seq: 0,
        }
    }

    fn program(&self) -> &str {
        self.argv.first().map_or("", String::as_str)
    }

    fn start(&mut self) -> Result<(), String> {
        let mut child = Command::new(self.program())
            .args(&self.argv[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start {:?}: {e}", self.program()))?;
        let stdout = child.stdout.take().ok_or("no stdout pipe")?;
        let last_err = Arc::new(StderrTail::default());
        if let Some(stderr) = child.stderr.take() {
            let (last, program) = (last_err.clone(), self.program().to_owned());
            let reader = std::thread::Builder::new()
                .name("command-stderr".into())
                .spawn(move || {
                    let mut n = 0u64;
                    for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                        n += 1;
                        if should_log(n) {
                            info!(program = %program, "{line}");
                        }
                        last.line(line);
                    }
                    last.close();
                });
            if reader.is_err() {
                last_err.close();
            }
        } else {
            last_err.close();
        }
        info!(program = %self.program(), pid = child.id(), "camera command started");
        let child = Arc::new(Mutex::new(child));
        let reaped = Arc::new(AtomicBool::new(false));
        watch_stop(self.stop.clone(), child.clone(), reaped.clone());
        let mjpeg = MjpegSource::from_reader(
            self.program().to_owned(),
            Box::new(stdout),
            self.fps_limit,
            self.limits,
            self.stop.clone(),
        )
        .sharing_stats(self.stats.clone());
        self.running = Some(Running {
            child,
            mjpeg,
            last_err,
            reaped,
        });
        Ok(())
    }

    /// Reaps the program (its stdout has closed, or reading failed) and schedules a restart.
    fn restart_later(&mut self, why: Option<String>) {
        let mut status = String::from("exited");
        if let Some(r) = self.running.take() {
            if let Ok(mut child) = r.child.lock() {
                let _ = child.kill();
                if let Ok(s) = child.wait() {
                    status = format!("exited ({s})");
                }
                r.reaped.store(true, Ordering::SeqCst);
            }
            let last = r.last_err.last(LAST_WORDS_WAIT);
            if !last.is_empty() {
                status = format!("{status}; its last words: {last}");
            }
        }
        let why = why.unwrap_or_else(|| format!("{:?} {status}", self.program()));
        if self.ever_streamed && self.failures == 0 {
            self.stats.reconnected();
        }
        self.failures = self.failures.saturating_add(1);
        self.retry_in = self.backoff.next_delay();
        warn!(
            "{why}; starting it again in {:.1} s (attempt {})",
            self.retry_in.as_secs_f64(),
            self.failures
        );
        self.stats.set_state(SourceState::Reconnecting {
            attempt: self.failures,
            last_error: why,
            retry_in_s: whole_secs(self.retry_in),
        });
    }
}

/// Terminates the program when the daemon stops, even while the capture thread is blocked
/// reading its stdout (the read then ends with the pipe).
fn watch_stop(stop: StopSignal, child: Arc<Mutex<Child>>, reaped: Arc<AtomicBool>) {
    let _ = std::thread::Builder::new()
        .name("command-watch".into())
        .spawn(move || {
            while stop.sleep(Duration::from_millis(200)) {
                if reaped.load(Ordering::SeqCst) {
                    return;
                }
            }
            if reaped.load(Ordering::SeqCst) {
                return;
            }
            let Ok(mut child) = child.lock() else {
                return;
            };
            if let Ok(pid) = libc::pid_t::try_from(child.id()) {
                // SAFETY: a plain syscall on the pid of a child that is not reaped yet (we
                // hold its lock and `reaped` is false), so the pid cannot have been reused.
                unsafe {
                    libc::kill(pid, libc::SIGTERM);
                }
            }
            let deadline = std::time::Instant::now() + TERM_GRACE;
            while std::time::Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    reaped.store(true, Ordering::SeqCst);
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
            reaped.store(true, Ordering::SeqCst);
        });
}

impl Source for CommandSource {
    fn next_frame(&mut self) -> Result<Option<Frame>, SourceError> {
        loop {
            if self.stop.is_stopped() {
                return Ok(None);
            }
            if self.running.is_none() {
                if self.failures > 0 && !self.stop.sleep(self.retry_in) {
                    return Ok(None);
                }
                if let Err(why) = self.start() {
                    self.restart_later(Some(why));
                    continue;
                }
            }
            let Some(running) = self.running.as_mut() else {
                continue;
            };
            match running.mjpeg.next_frame() {
                Ok(Some(mut frame)) => {
                    self.failures = 0;
                    self.backoff.reset();
                    self.ever_streamed = true;
                    frame.seq = self.seq;
                    self.seq += 1;
                    return Ok(Some(frame));
                }
                Ok(None) if self.stop.is_stopped() => return Ok(None),
                Ok(None) => self.restart_later(None),
                Err(e) => self.restart_later(Some(e.to_string())),
            }
        }
    }

    fn describe(&self) -> String {
        format!("command {}", self.argv.join(" "))
    }

    fn stats(&self) -> Arc<SourceStats> {
        self.stats.clone()
    }
}

impl Drop for CommandSource {
    fn drop(&mut self) {
        if let Some(r) = self.running.take() {
            if let Ok(mut child) = r.child.lock() {
                let _ = child.kill();
                let _ = child.wait();
            }
            r.reaped.store(true, Ordering::SeqCst);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_words_wait_for_a_reader_that_is_behind() {
        let tail = Arc::new(StderrTail::default());
        let reader = tail.clone();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            reader.line("sensor went away".into());
            reader.close();
        });
        assert_eq!(tail.last(Duration::from_secs(30)), "sensor went away");
        t.join().expect("reader");
    }

    #[test]
    fn a_pipe_held_open_gives_what_was_read_after_the_bound() {
        let tail = StderrTail::default();
        tail.line("still talking".into());
        assert_eq!(tail.last(Duration::from_millis(10)), "still talking");
    }
}
