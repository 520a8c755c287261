//! The RTSP source proper: connect, read, decode, reconnect (see the module docs).

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use retina::client::{
    Credentials, Demuxed, PlayOptions, Session, SessionOptions, SetupOptions, Transport,
};
use retina::codec::{CodecItem, FrameFormat, VideoFrame};
use tracing::{info, warn};

use super::address::RtspAddress;
use super::h264::{DecodeProblem, Decoded, H264};
use crate::backoff::Backoff;
use crate::source::config::{DecodePolicy, RtspTransport};
use crate::source::frame::Frame;
use crate::source::pace::Demand;
use crate::source::reopen::whole_secs;
use crate::source::stats::{should_log, SourceState, SourceStats};
use crate::source::stop::StopSignal;
use crate::source::{Source, SourceError};
use crate::vision::image_io::DecodeLimits;

/// Longest wait for each step of connecting (DESCRIBE, SETUP, PLAY).
const STEP_TIMEOUT: Duration = Duration::from_secs(10);
/// A session that delivers no video for this long is taken for dead (retina's own keepalive
/// notices a frozen server only after about a minute).
const STALL: Duration = Duration::from_secs(15);
/// How often a wait for the next packet looks at the stop signal.
const POLL: Duration = Duration::from_millis(250);
/// Undecodable access units in a row that make the source reconnect.
const BAD_BURST: u32 = 25;

/// What the source is configured with.
pub struct RtspSettings {
    pub address: RtspAddress,
    pub transport: RtspTransport,
    pub policy: DecodePolicy,
    pub limits: DecodeLimits,
}

/// An RTSP camera as a [`Source`].
pub struct RtspSource {
    settings: RtspSettings,
    runtime: tokio::runtime::Runtime,
    stats: Arc<SourceStats>,
    stop: StopSignal,
    demand: Demand,
    playing: Option<Playing>,
    backoff: Backoff,
    /// Failed connections (or lost sessions) since the last frame.
    failures: u32,
    /// The wait before the next attempt, set when an attempt fails.
    retry_in: Duration,
    ever_streamed: bool,
    seq: u64,
}

/// A session in `PLAY` and its decoder.
struct Playing {
    demuxed: Demuxed,
    decoder: H264,
    bad_in_a_row: u32,
}

/// What reading gave.
enum Read {
    Frame(VideoFrame),
    Lost(String),
    Stopped,
}

/// Why connecting failed.
enum ConnectError {
    /// Retrying may help (the message says what happened).
    Retry(String),
    /// Only a configuration change helps.
    Fatal(SourceError),
}

impl RtspSource {
    /// Prepares the source; nothing connects until the first [`Source::next_frame`], on the
    /// capture thread.
    pub fn open(
        settings: RtspSettings,
        stop: StopSignal,
        demand: Demand,
    ) -> Result<RtspSource, SourceError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|source| SourceError::Runtime {
                name: settings.address.to_string(),
                source,
            })?;
        let stats = SourceStats::new();
        stats.set_state(SourceState::Connecting);
        Ok(RtspSource {
            settings,
            runtime,
            stats,
            stop,
            demand,
            playing: None,
            backoff: Backoff::camera(),
            failures: 0,
            retry_in: Duration::ZERO,
            ever_streamed: false,
            seq: 0,
        })
    }

    /// Notes a failure and when the next attempt is.
    fn retry(&mut self, why: String) {
        self.close();
        if self.ever_streamed && self.failures == 0 {
            self.stats.reconnected();
        }
        self.failures = self.failures.saturating_add(1);
        self.retry_in = self.backoff.next_delay();
        warn!(
            camera = %self.settings.address,
            "{why}; retrying in {:.1} s (attempt {})",
            self.retry_in.as_secs_f64(),
            self.failures
        );
        self.stats.set_state(SourceState::Reconnecting {
            attempt: self.failures,
            last_error: why,
            retry_in_s: whole_secs(self.retry_in),
        });
    }

    /// Drops the session inside the runtime: retina spawns its TEARDOWN on it, and panics
    /// without one.
    fn close(&mut self) {
        let _inside = self.runtime.enter();
        self.playing = None;
    }

    fn connect(&mut self) -> Result<(), ConnectError> {
        let address = &self.settings.address;
        let creds = address
            .credentials()
            .map(|(username, password)| Credentials {
                username: username.to_owned(),
                password: password.to_owned(),
            });
        let options = SessionOptions::default()
            .creds(creds)
            .user_agent(format!("adaptd/{}", env!("CARGO_PKG_VERSION")));
        let transport = match self.settings.transport {
            RtspTransport::Tcp => Transport::Tcp(Default::default()),
            RtspTransport::Udp => Transport::Udp(Default::default()),
        };
        let url = address.url().clone();
        let shown = address.to_string();
        let host_port = address.host_port();
        let demuxed = self.runtime.block_on(async move {
            let host_port = host_port.as_str();
            let step = |what: &'static str| move |e: retina::Error| explain(what, &e, host_port);
            let mut session = timed("DESCRIBE", Session::describe(url, options))
                .await?
                .map_err(step("DESCRIBE"))?;
            let video = pick_video(&session, &shown)?;
            let setup = SetupOptions::default()
                .transport(transport)
                .frame_format(FrameFormat::SIMPLE);
            timed("SETUP", session.setup(video, setup))
                .await?
                .map_err(step("SETUP"))?;
            let playing = timed("PLAY", session.play(PlayOptions::default()))
                .await?
                .map_err(step("PLAY"))?;
            playing
                .demuxed()
                .map_err(|e| ConnectError::Retry(first_line(&e.to_string())))
        })?;
        let decoder = H264::new().map_err(|e| {
            ConnectError::Fatal(SourceError::Decoder {
                name: self.settings.address.to_string(),
                problem: e.to_string(),
            })
        })?;
        info!(camera = %self.settings.address, "RTSP session playing");
        self.playing = Some(Playing {
            demuxed,
            decoder,
            bad_in_a_row: 0,
        });
        Ok(())
    }

    /// The next video frame of the session in hand.
    fn read(&mut self) -> Read {
        let Some(playing) = self.playing.as_mut() else {
            return Read::Lost("no session".into());
        };
        let stop = &self.stop;
        self.runtime.block_on(async {
            let since = Instant::now();
            loop {
                if stop.is_stopped() {
                    return Read::Stopped;
                }
                match tokio::time::timeout(POLL, playing.demuxed.next()).await {
                    Err(_) if since.elapsed() >= STALL => {
                        return Read::Lost(format!(
                            "no video from the camera for {} s",
                            STALL.as_secs()
                        ))
                    }
                    Err(_) => {}
                    Ok(None) => return Read::Lost("the camera ended the stream".into()),
                    Ok(Some(Err(e))) => return Read::Lost(first_line(&e.to_string())),
                    Ok(Some(Ok(CodecItem::VideoFrame(f)))) => return Read::Frame(f),
                    Ok(Some(Ok(_))) => {}
                }
            }
        })
    }
}

impl Source for RtspSource {
    fn next_frame(&mut self) -> Result<Option<Frame>, SourceError> {
        loop {
            if self.stop.is_stopped() {
                return Ok(None);
            }
            if self.playing.is_none() {
                if self.failures > 0 && !self.stop.sleep(self.retry_in) {
                    return Ok(None);
                }
                match self.connect() {
                    Ok(()) => {}
                    Err(ConnectError::Retry(why)) => {
                        self.retry(why);
                        continue;
                    }
                    Err(ConnectError::Fatal(e)) => {
                        self.stats.set_state(SourceState::Failed {
                            error: e.to_string(),
                        });
                        return Err(e);
                    }
                }
            }
            let frame = match self.read() {
                Read::Frame(f) => f,
                Read::Stopped => return Ok(None),
                Read::Lost(why) => {
                    self.retry(why);
                    continue;
                }
            };
            if self.settings.policy == DecodePolicy::Keyframes && !frame.is_random_access_point() {
                continue;
            }
            let Some(playing) = self.playing.as_mut() else {
                continue;
            };
            let demand = &self.demand;
            let started = Instant::now();
            let decoded = playing
                .decoder
                .decode(frame.data(), &self.settings.limits, || {
                    demand.wants(Instant::now())
                });
            self.stats.decoded(started.elapsed());
            match decoded {
                Ok(Decoded::Picture(image)) => {
                    playing.bad_in_a_row = 0;
                    if self.failures > 0 || !self.ever_streamed {
                        info!(
                            camera = %self.settings.address,
                            "streaming {}x{}",
                            image.width(),
                            image.height()
                        );
                    }
                    self.failures = 0;
                    self.backoff.reset();
                    self.ever_streamed = true;
                    self.stats.frame_delivered();
                    let f = Frame::now(self.seq, image, self.settings.address.to_string());
                    self.seq += 1;
                    return Ok(Some(f));
                }
                Ok(Decoded::NotWanted) => {
                    playing.bad_in_a_row = 0;
                    self.stats.rate_dropped();
                }
                Ok(Decoded::Nothing) => {}
                Err(e) => {
                    playing.bad_in_a_row += 1;
                    let n = self.stats.decode_error(e.to_string());
                    if should_log(n) {
                        warn!(camera = %self.settings.address, "{e} ({n} so far)");
                    }
                    if let DecodeProblem::TooLarge { .. } = e {
                        let e = SourceError::Decoder {
                            name: self.settings.address.to_string(),
                            problem: e.to_string(),
                        };
                        self.stats.set_state(SourceState::Failed {
                            error: e.to_string(),
                        });
                        return Err(e);
                    }
                    if playing.bad_in_a_row >= BAD_BURST {
                        self.retry(format!(
                            "{BAD_BURST} frames in a row could not be decoded (last: {e})"
                        ));
                    }
                }
            }
        }
    }

    fn describe(&self) -> String {
        let policy = match self.settings.policy {
            DecodePolicy::All => "",
            DecodePolicy::Keyframes => ", key frames only",
        };
        let transport = match self.settings.transport {
            RtspTransport::Tcp => "tcp",
            RtspTransport::Udp => "udp",
        };
        format!("rtsp {} ({transport}{policy})", self.settings.address)
    }

    fn stats(&self) -> Arc<SourceStats> {
        self.stats.clone()
    }
}

impl Drop for RtspSource {
    fn drop(&mut self) {
        self.close();
    }
}

/// `fut`, or a retryable error after [`STEP_TIMEOUT`].
async fn timed<T>(
    what: &str,
    fut: impl std::future::Future<Output = T>,
) -> Result<T, ConnectError> {
    tokio::time::timeout(STEP_TIMEOUT, fut).await.map_err(|_| {
        ConnectError::Retry(format!(
            "no answer to {what} within {} s",
            STEP_TIMEOUT.as_secs()
        ))
    })
}

/// The H.264 video stream of a described session; H.265 or no video is a configuration
/// problem no retry fixes.
fn pick_video(
    session: &Session<retina::client::Described>,
    shown: &str,
) -> Result<usize, ConnectError> {
    let streams = session.streams();
    if let Some(i) = streams
        .iter()
        .position(|s| s.media() == "video" && s.encoding_name().eq_ignore_ascii_case("h264"))
    {
        return Ok(i);
    }
    let offered: Vec<String> = streams
        .iter()
        .map(|s| format!("{}/{}", s.media(), s.encoding_name()))
        .collect();
    let h265 = streams.iter().any(|s| {
        s.media() == "video"
            && (s.encoding_name().eq_ignore_ascii_case("h265")
                || s.encoding_name().eq_ignore_ascii_case("hevc"))
    });
    Err(ConnectError::Fatal(SourceError::RtspCodec {
        name: shown.to_owned(),
        offered: offered.join(", "),
        hint: if h265 {
            "adaptd decodes H.264 only: switch the camera's stream to H.264 in its web page, \
             use its H.264 sub-stream (often .../stream2 or subtype=1), or transcode with \
             kind = \"command\" (ffmpeg to MJPEG)"
        } else {
            "point [source].url at the camera's H.264 video stream"
        },
    }))
}

/// A retina error in words a person can act on.
fn explain(step: &str, e: &retina::Error, host_port: &str) -> ConnectError {
    let text = first_line(&e.to_string());
    ConnectError::Retry(match e.status_code() {
        Some(401) => format!(
            "the camera refused the login (401 Unauthorized to {step}): check the user name in \
             [source].url and the password ([source].password_file)"
        ),
        Some(403) => format!("the camera forbids this stream (403 to {step}): {text}"),
        Some(404) => {
            format!("the camera has no such stream (404 to {step}): check the path of [source].url")
        }
        _ if text.contains("Connection refused") => format!(
            "nothing accepts RTSP connections at {host_port} (is the camera on, and is the port \
             in [source].url right?)"
        ),
        _ => text,
    })
}

/// retina's messages carry connection details on later lines; logs and `state` want one.
fn first_line(text: &str) -> String {
    text.lines().next().unwrap_or(text).trim().to_owned()
}
