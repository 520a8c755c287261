//! Who may do what: every request passes [`guard`] (a session, a token, or open access on
//! loopback; for changes, the CSRF token and the same origin), every answer gets the security
//! headers of [`security_headers`]; the session routes and the page's files live here too.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::json;

use super::{ApiError, Web};
use crate::http::auth::{self, Caller, LoginError};

/// Routes anyone may call: the page itself and the way in.
fn is_public(path: &str) -> bool {
    matches!(
        path,
        "/" | "/app.js" | "/app.css" | "/api/session" | "/api/login"
    )
}

fn header_str(headers: &HeaderMap, name: header::HeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Finds the caller, refuses strangers (401) and unguarded changes (403), and hands the
/// caller to the handlers as an extension.
pub async fn guard(State(web): State<Arc<Web>>, mut req: Request, next: Next) -> Response {
    let headers = req.headers();
    let bearer = header_str(headers, header::AUTHORIZATION).and_then(|v| {
        v.strip_prefix("Bearer ")
            .or_else(|| v.strip_prefix("bearer "))
    });
    let cookie =
        header_str(headers, header::COOKIE).and_then(|c| auth::cookie_value(c, auth::COOKIE));
    let caller = web.access.caller(bearer, cookie);
    let changes = !matches!(*req.method(), Method::GET | Method::HEAD);
    let path = req.uri().path();
    let origin = header_str(headers, header::ORIGIN);
    let host = header_str(headers, header::HOST);
    if is_public(path) {
        // Logging in from another site would plant a session of the attacker's choosing.
        if changes {
            if let Err(e) = auth::check_origin(origin, host) {
                return ApiError::new(StatusCode::FORBIDDEN, e.to_string()).into_response();
            }
        }
    } else {
        let Some(c) = &caller else {
            return ApiError::new(
                StatusCode::UNAUTHORIZED,
                "log in first: POST /api/login with the password, or send \
                 Authorization: Bearer <token>",
            )
            .into_response();
        };
        if changes {
            let csrf = header_str(headers, header::HeaderName::from_static(auth::CSRF_HEADER));
            if let Err(e) = auth::check_write(c, origin, host, csrf) {
                return ApiError::new(StatusCode::FORBIDDEN, e.to_string()).into_response();
            }
        }
    }
    req.extensions_mut().insert(caller);
    next.run(req).await
}

/// Every answer leaves here: an error that axum itself wrote as plain text (a malformed JSON
/// body, a path segment that is not a number, a body over the limit) becomes the API's JSON
/// error, so a client parses every error the same way; and every answer gets the security
/// headers: no sniffing, no framing by other sites, scripts and styles only from the page
/// itself (the page inlines nothing).
pub async fn finish(res: Response) -> Response {
    let failed = res.status().is_client_error() || res.status().is_server_error();
    let json = res
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|c| c.starts_with("application/json"));
    let mut res = if failed && !json {
        let status = res.status();
        let text = axum::body::to_bytes(res.into_body(), 64 * 1024)
            .await
            .map(|b| String::from_utf8_lossy(&b).trim().to_owned())
            .unwrap_or_default();
        let message = if text.is_empty() {
            status.canonical_reason().unwrap_or("error").to_owned()
        } else {
            text
        };
        ApiError::new(status, message).into_response()
    } else {
        res
    };
    let h = res.headers_mut();
    let set = |h: &mut HeaderMap, k: &'static str, v: &'static str| {
        h.insert(
            header::HeaderName::from_static(k),
            HeaderValue::from_static(v),
        );
    };
    set(h, "x-content-type-options", "nosniff");
    set(h, "x-frame-options", "DENY");
    set(h, "referrer-policy", "same-origin");
    set(
        h,
        "content-security-policy",
        "default-src 'self'; img-src 'self' blob: data:; media-src 'self' blob:; \
         connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    );
    if !h.contains_key(header::CACHE_CONTROL) {
        set(h, "cache-control", "no-store");
    }
    res
}

/// The page's files.
pub async fn asset(uri: Uri) -> Response {
    match crate::http::assets::find(uri.path()) {
        Some(a) => ([(header::CONTENT_TYPE, a.content_type)], a.body).into_response(),
        None => not_found(uri).await,
    }
}

pub async fn not_found(uri: Uri) -> Response {
    ApiError::not_found(format!(
        "no such page or API route: {} (docs/http.md lists them)",
        uri.path()
    ))
    .into_response()
}

fn auth_kind(web: &Web) -> &'static str {
    if !web.access.required() {
        "none"
    } else if web.access.has_password() {
        "password"
    } else {
        "token"
    }
}

fn with_cookie(body: serde_json::Value, cookie: String) -> Response {
    let mut res = Json(body).into_response();
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        res.headers_mut().insert(header::SET_COOKIE, v);
    }
    res
}

/// `GET /api/session`: who the caller is, and the CSRF token of its session (opening one
/// where nobody needs to log in).
pub async fn session(
    State(web): State<Arc<Web>>,
    Extension(caller): Extension<Option<Caller>>,
) -> Response {
    let auth = auth_kind(&web);
    match caller {
        Some(Caller::Session { csrf, .. }) => {
            Json(json!({"auth": auth, "logged_in": true, "csrf": csrf})).into_response()
        }
        Some(Caller::Token) => {
            Json(json!({"auth": auth, "logged_in": true, "csrf": null})).into_response()
        }
        Some(Caller::Open) => match web.access.open_session() {
            Ok((id, csrf)) => with_cookie(
                json!({"auth": auth, "logged_in": true, "csrf": csrf}),
                auth::session_cookie(&id, web.session_ttl),
            ),
            Err(e) => ApiError::internal(e.to_string()).into_response(),
        },
        None => Json(json!({"auth": auth, "logged_in": false, "csrf": null})).into_response(),
    }
}

#[derive(Deserialize)]
pub struct LoginBody {
    password: String,
}

/// `POST /api/login`: the password, checked off the runtime after the brake's wait.
pub async fn login(
    State(web): State<Arc<Web>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    body: Result<Json<LoginBody>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Ok(Json(LoginBody { password })) = body else {
        return ApiError::bad("send {\"password\": \"...\"} as JSON").into_response();
    };
    if password.len() > 1024 {
        return ApiError::bad("that password is longer than 1024 bytes").into_response();
    }
    let ip = peer.ip();
    // Wait out the brake without holding the turn (a guesser's wait must not block the
    // owner's login), then check it again with the turn: guesses sent in parallel each see
    // the failures of the ones checked before them.
    let mut waited = std::time::Duration::ZERO;
    let _turn = loop {
        let wait = web.access.login_delay(ip);
        if wait > waited {
            tokio::time::sleep(wait - waited).await;
            waited = wait;
        }
        let Ok(turn) = web.logins.acquire().await else {
            return ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "the daemon is stopping")
                .into_response();
        };
        if web.access.login_delay(ip) <= waited {
            break turn;
        }
    };
    let checker = web.clone();
    let outcome = tokio::task::spawn_blocking(move || checker.access.login(ip, &password)).await;
    match outcome {
        Ok(Ok((id, csrf))) => with_cookie(
            json!({"logged_in": true, "csrf": csrf}),
            auth::session_cookie(&id, web.session_ttl),
        ),
        Ok(Err(e @ (LoginError::Wrong | LoginError::NoPassword))) => {
            tracing::warn!(peer = %ip, "web login refused: {e}");
            ApiError::new(StatusCode::UNAUTHORIZED, e.to_string()).into_response()
        }
        Ok(Err(e)) => ApiError::internal(e.to_string()).into_response(),
        Err(e) => ApiError::internal(e.to_string()).into_response(),
    }
}

/// `POST /api/logout`.
pub async fn logout(
    State(web): State<Arc<Web>>,
    Extension(caller): Extension<Option<Caller>>,
) -> Response {
    if let Some(Caller::Session { id, .. }) = caller {
        web.access.close_session(&id);
    }
    with_cookie(
        json!({"logged_in": false}),
        auth::session_cookie("", std::time::Duration::ZERO),
    )
}
