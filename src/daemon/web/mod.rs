//! The daemon's web face: the page, the JSON API and `/metrics` (docs/http.md), served by axum
//! on the daemon's tokio runtime beside the MQTT link.
//!
//! It is a second door to the same rooms, never a second copy of them: commands go through
//! [`Control::execute`] (the MQTT commands, with the same replies), samples through the same
//! decode-embed-store path, the live stream is a mirror of what the daemon publishes on MQTT
//! ([`crate::mqtt::Publisher::mirror`]) and `/metrics` encodes the registry `stats` reads.
//! Nothing here runs a model or holds a lock across an await; blocking store and file work
//! goes to `spawn_blocking`.
//!
//! Layout: [`gate`] (who may do what: sessions, tokens, CSRF, security headers),
//! [`live`] (the server-sent stream and the latest frames as JPEG), [`reads`] (state, events,
//! samples, training, status, metrics), [`writes`] (commands, uploads, relabel, delete, event
//! actions).
//!
//! A server that cannot bind (the port is taken) is logged as an error and the daemon goes on
//! without it: cameras and MQTT matter more than the page.

mod gate;
mod live;
mod reads;
mod writes;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info};

use super::control::{Control, ControlError};
use crate::http::auth::{Access, PasswordHash};
use crate::http::HttpConfig;

/// The shared state of every handler.
pub struct Web {
    pub control: Arc<Control>,
    pub access: Access,
    pub state_dir: PathBuf,
    pub session_ttl: Duration,
    pub frames: live::FrameCache,
    pub shutdown: CancellationToken,
    /// One password check at a time: argon2 is meant to be expensive, so a flood of logins
    /// (parallel, from many addresses) queues here instead of taking every core.
    pub logins: tokio::sync::Semaphore,
    /// `[http].max_upload_mb`, bytes: read by the upload route itself, so the error says so.
    pub max_upload: usize,
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum WebError {
    #[error("[http].token_file {path}: {why}")]
    Token { path: PathBuf, why: String },
    #[error("[http].password_hash: {0}")]
    Password(String),
    #[error("{0}")]
    Config(String),
}

/// An error answer: `{"ok": false, "error": ...}` with a status.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
    }

    pub fn bad(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, message)
    }

    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(json!({"ok": false, "error": self.message})),
        )
            .into_response()
    }
}

/// The status of a failed command: what the client should do differs (fix the request, find
/// the camera, wait, give up).
pub fn status_of(e: &ControlError) -> StatusCode {
    match e {
        ControlError::UnknownCamera { .. } | ControlError::Disabled(_) => StatusCode::NOT_FOUND,
        ControlError::Train(_) => StatusCode::CONFLICT,
        ControlError::WorkerStopped => StatusCode::SERVICE_UNAVAILABLE,
        ControlError::EmbedTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
        ControlError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        _ => StatusCode::BAD_REQUEST,
    }
}

/// Reads the secrets of `[http]`: the password hash and the token file.
pub fn access(cfg: &HttpConfig) -> Result<Access, WebError> {
    let password = cfg
        .password_hash
        .as_deref()
        .map(PasswordHash::parse)
        .transpose()
        .map_err(WebError::Password)?;
    let token = match &cfg.token_file {
        None => None,
        Some(path) => {
            let text = crate::bounded::read_capped(path, 4096).map_err(|e| WebError::Token {
                path: path.clone(),
                why: format!(
                    "cannot read it ({e:?}); create it with one line of at least {} characters",
                    crate::http::config::MIN_TOKEN_CHARS
                ),
            })?;
            let token = String::from_utf8_lossy(&text).trim().to_owned();
            if token.chars().count() < crate::http::config::MIN_TOKEN_CHARS
                || token.contains(char::is_whitespace)
            {
                return Err(WebError::Token {
                    path: path.clone(),
                    why: format!(
                        "the token must be one line of at least {} characters with no spaces (e.g. `head -c 32 /dev/urandom | base64`)",
                        crate::http::config::MIN_TOKEN_CHARS
                    ),
                });
            }
            Some(token)
        }
    };
    Ok(Access::new(
        password,
        token,
        Duration::from_secs_f64(cfg.session_hours * 3600.0),
    ))
}

/// The routes. Bodies are capped at 256 KiB (commands, labels, logins), except uploads, which
/// read their own body up to `[http].max_upload_mb`.
fn router(web: Arc<Web>) -> Router {
    Router::new()
        .route("/", get(gate::asset))
        .route("/app.js", get(gate::asset))
        .route("/app.css", get(gate::asset))
        .route("/api/session", get(gate::session))
        .route("/api/login", post(gate::login))
        .route("/api/logout", post(gate::logout))
        .route("/api/state", get(reads::state))
        .route("/api/stream", get(live::stream))
        .route("/api/cameras/{camera}/latest.jpg", get(live::latest_jpg))
        .route("/api/events", get(reads::events))
        .route(
            "/api/events/{id}",
            get(reads::event).delete(writes::drop_event),
        )
        .route("/api/events/{id}/snapshot.jpg", get(reads::event_snapshot))
        .route("/api/events/{id}/crop.jpg", get(reads::event_crop))
        .route("/api/events/{id}/label", post(writes::label_event))
        .route(
            "/api/events/{id}/false_positive",
            post(writes::false_positive_event),
        )
        .route("/api/samples", get(reads::samples))
        .route(
            "/api/samples/{model}/{id}/thumbnail.jpg",
            get(reads::thumbnail),
        )
        .route("/api/samples/{model}/{id}/clip.wav", get(reads::clip))
        .route("/api/samples/{model}/{id}/relabel", post(writes::relabel))
        .route(
            "/api/samples/{model}/{id}",
            axum::routing::delete(writes::delete_sample),
        )
        .route("/api/training", get(reads::training))
        .route("/api/status", get(reads::status))
        .route("/api/cmd/{verb}", post(writes::command))
        .route("/metrics", get(reads::metrics))
        .layer(DefaultBodyLimit::max(256 * 1024))
        .route("/api/samples/{label}", post(writes::upload))
        .fallback(gate::not_found)
        .layer(axum::middleware::from_fn_with_state(
            web.clone(),
            gate::guard,
        ))
        .layer(axum::middleware::map_response(gate::finish))
        .with_state(web)
}

/// Binds `[http].listen` and serves until `shutdown`; the bound address, or `None` when the
/// server is off or could not bind (logged).
pub async fn start(
    control: Arc<Control>,
    cfg: &HttpConfig,
    state_dir: PathBuf,
    shutdown: CancellationToken,
    tracker: &TaskTracker,
) -> Result<Option<SocketAddr>, WebError> {
    let Some(addr) = cfg.addr().map_err(WebError::Config)? else {
        return Ok(None);
    };
    let access = access(cfg)?;
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) => {
            error!(
                "no web page: cannot listen on {addr} ({e}); set [http].listen to a free \
                 address (or \"\" to turn it off)"
            );
            return Ok(None);
        }
    };
    let bound = listener.local_addr().unwrap_or(addr);
    let web = Arc::new(Web {
        control,
        access,
        state_dir,
        session_ttl: Duration::from_secs_f64(cfg.session_hours * 3600.0),
        frames: live::FrameCache::default(),
        shutdown: shutdown.clone(),
        logins: tokio::sync::Semaphore::new(1),
        max_upload: cfg.max_upload_mb as usize * 1024 * 1024,
    });
    let app = router(web).into_make_service_with_connect_info::<SocketAddr>();
    info!("web page on http://{bound}/");
    tracker.spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await;
        if let Err(e) = served {
            error!("the web server stopped: {e}");
        }
    });
    Ok(Some(bound))
}

/// A JSON body, or the error that says what is wrong with it.
pub fn to_json<T: serde::Serialize>(v: &T) -> Result<Response, ApiError> {
    let body = serde_json::to_vec(v).map_err(|e| ApiError::internal(e.to_string()))?;
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}
