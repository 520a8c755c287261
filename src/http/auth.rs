//! Who may use the web page and the API: passwords (argon2id), bearer tokens, cookie sessions
//! with a CSRF token each, and a brake on password guessing.
//!
//! The rules (docs/http.md, Access):
//! - a browser logs in once and gets a session cookie (`HttpOnly`, `SameSite=Strict`); with
//!   nothing to ask (loopback, no password) a session is opened on request, because the CSRF
//!   protection below needs one: a page on another site can make a browser POST to
//!   `127.0.0.1`, so loopback alone is no defence against cross-site requests;
//! - every state-changing request with a session must carry that session's CSRF token in a
//!   header (a cross-site form or `fetch` cannot read it) and, when the browser says where it
//!   comes from (`Origin`), come from this page;
//! - a bearer token authenticates scripts; browsers never attach one by themselves, so such
//!   requests need no CSRF token;
//! - after [`FREE_FAILURES`] wrong passwords from one address each further attempt waits,
//!   doubling up to [`MAX_DELAY`], so an 8-character password is not guessable over the LAN.
//!
//! Secrets are compared in constant time; session ids and CSRF tokens are 256 random bits
//! from the operating system ([`ring::rand::SystemRandom`]).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use argon2::password_hash::{PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use ring::rand::{SecureRandom, SystemRandom};

/// Name of the session cookie.
pub const COOKIE: &str = "adaptd_session";
/// Header that carries the CSRF token.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// Sessions kept at most; the one closest to expiry goes first.
const MAX_SESSIONS: usize = 1024;
/// Wrong passwords from one address before attempts are slowed down.
pub const FREE_FAILURES: u32 = 5;
/// The longest wait before a login attempt is answered.
pub const MAX_DELAY: Duration = Duration::from_secs(30);
/// Addresses whose failures are remembered at most.
const MAX_TRACKED: usize = 4096;

/// A configured argon2 password hash (a PHC string), checked when the config is read.
#[derive(Debug, Clone)]
pub struct PasswordHash(String);

impl PasswordHash {
    /// Parses a PHC string; the error says what to do.
    pub fn parse(phc: &str) -> Result<PasswordHash, String> {
        let parsed = argon2::password_hash::PasswordHash::new(phc).map_err(|e| {
            format!(
                "not an argon2 hash ({e}); make one with `adaptd http-password` and paste the \
                 whole line it prints"
            )
        })?;
        if !parsed.algorithm.as_str().starts_with("argon2") {
            return Err(format!(
                "the hash is {}, not argon2; make one with `adaptd http-password`",
                parsed.algorithm
            ));
        }
        Ok(PasswordHash(phc.to_owned()))
    }

    /// Whether `password` is the one hashed (argon2: tens of milliseconds by design; call it
    /// off the async runtime).
    pub fn verify(&self, password: &str) -> bool {
        argon2::password_hash::PasswordHash::new(&self.0).is_ok_and(|h| {
            Argon2::default()
                .verify_password(password.as_bytes(), &h)
                .is_ok()
        })
    }
}

/// Hashes a password for `[http].password_hash` (argon2id, its default cost, a random salt).
pub fn hash_password(password: &str) -> Result<String, String> {
    let mut salt = [0u8; 16];
    SystemRandom::new()
        .fill(&mut salt)
        .map_err(|_| "the operating system gave no random bytes".to_string())?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| e.to_string())?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| format!("cannot hash the password: {e}"))
}

/// 256 random bits as 64 hex digits.
fn random_token(rng: &SystemRandom) -> Option<String> {
    let mut bytes = [0u8; 32];
    rng.fill(&mut bytes).ok()?;
    Some(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Equality that takes the same time wherever the strings differ.
pub fn constant_time_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// One logged-in browser.
#[derive(Debug, Clone)]
pub struct Session {
    pub csrf: String,
    expires: Instant,
}

/// What authenticated a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// A browser session (its id and CSRF token).
    Session { id: String, csrf: String },
    /// A bearer token.
    Token,
    /// Nobody needs to log in here (loopback, no password or token), and no session is open.
    Open,
}

/// Why a login failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoginError {
    #[error("wrong password")]
    Wrong,
    #[error("no password is set for this page ([http].password_hash); use the token")]
    NoPassword,
    #[error("the operating system gave no random bytes for a session")]
    NoRandom,
}

/// Why a state-changing request is refused (HTTP 403).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error(
        "the request comes from another site (Origin {origin}); this page only takes changes \
         from itself"
    )]
    Origin { origin: String },
    #[error(
        "missing or wrong CSRF token: send the session's token (GET /api/session) in the \
         X-CSRF-Token header"
    )]
    Csrf,
}

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    last: Instant,
}

/// Sessions, the password, the token and the login brake of one server.
pub struct Access {
    password: Option<PasswordHash>,
    token: Option<String>,
    ttl: Duration,
    rng: SystemRandom,
    sessions: Mutex<HashMap<String, Session>>,
    failures: Mutex<HashMap<IpAddr, Failures>>,
}

impl Access {
    pub fn new(password: Option<PasswordHash>, token: Option<String>, ttl: Duration) -> Access {
        Access {
            password,
            token,
            ttl,
            rng: SystemRandom::new(),
            sessions: Mutex::new(HashMap::new()),
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// Whether anyone must log in.
    pub fn required(&self) -> bool {
        self.password.is_some() || self.token.is_some()
    }

    /// Whether a password login exists (the page shows its form).
    pub fn has_password(&self) -> bool {
        self.password.is_some()
    }

    fn sessions(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        // Every change under this lock is one insert or remove: a poisoned map is consistent.
        self.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Opens a session: (id, CSRF token).
    pub fn open_session(&self) -> Result<(String, String), LoginError> {
        let id = random_token(&self.rng).ok_or(LoginError::NoRandom)?;
        let csrf = random_token(&self.rng).ok_or(LoginError::NoRandom)?;
        let now = Instant::now();
        let mut sessions = self.sessions();
        sessions.retain(|_, s| s.expires > now);
        if sessions.len() >= MAX_SESSIONS {
            if let Some(oldest) = sessions
                .iter()
                .min_by_key(|(_, s)| s.expires)
                .map(|(k, _)| k.clone())
            {
                sessions.remove(&oldest);
            }
        }
        sessions.insert(
            id.clone(),
            Session {
                csrf: csrf.clone(),
                expires: now + self.ttl,
            },
        );
        Ok((id, csrf))
    }

    /// The live session `id`, if any.
    pub fn session(&self, id: &str) -> Option<Session> {
        let sessions = self.sessions();
        sessions
            .get(id)
            .filter(|s| s.expires > Instant::now())
            .cloned()
    }

    pub fn close_session(&self, id: &str) {
        self.sessions().remove(id);
    }

    /// Whether `bearer` is the configured token.
    pub fn token_ok(&self, bearer: &str) -> bool {
        self.token
            .as_deref()
            .is_some_and(|t| constant_time_eq(t, bearer.trim()))
    }

    /// Who is calling: a valid bearer token, else a live session cookie, else (where no
    /// login is required) [`Caller::Open`]; `None`: nobody we know.
    pub fn caller(&self, bearer: Option<&str>, cookie: Option<&str>) -> Option<Caller> {
        if bearer.is_some_and(|b| self.token_ok(b)) {
            return Some(Caller::Token);
        }
        if let Some(id) = cookie {
            if let Some(s) = self.session(id) {
                return Some(Caller::Session {
                    id: id.to_owned(),
                    csrf: s.csrf,
                });
            }
        }
        (!self.required()).then_some(Caller::Open)
    }

    /// How long a login attempt from `ip` must wait before it is answered.
    pub fn login_delay(&self, ip: IpAddr) -> Duration {
        let failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        failures
            .get(&ip)
            .map_or(Duration::ZERO, |f| delay_for(f.count))
    }

    /// Checks a password (slow: argon2) and opens a session when it is right.
    pub fn login(&self, ip: IpAddr, password: &str) -> Result<(String, String), LoginError> {
        let Some(hash) = &self.password else {
            return Err(LoginError::NoPassword);
        };
        if !hash.verify(password) {
            let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
            if failures.len() >= MAX_TRACKED {
                // Forget the addresses that failed longest ago; a flood of addresses cannot
                // grow memory, and a real guesser keeps its own count up.
                let cutoff = Instant::now() - Duration::from_secs(3600);
                failures.retain(|_, f| f.last > cutoff);
                if failures.len() >= MAX_TRACKED {
                    failures.clear();
                }
            }
            let f = failures.entry(ip).or_insert(Failures {
                count: 0,
                last: Instant::now(),
            });
            f.count = f.count.saturating_add(1);
            f.last = Instant::now();
            return Err(LoginError::Wrong);
        }
        self.failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&ip);
        self.open_session()
    }
}

/// The wait after `count` failures: none for the first [`FREE_FAILURES`], then 1 s, 2 s,
/// 4 s... up to [`MAX_DELAY`].
pub fn delay_for(count: u32) -> Duration {
    if count < FREE_FAILURES {
        return Duration::ZERO;
    }
    let exp = (count - FREE_FAILURES).min(16);
    Duration::from_secs(1u64 << exp).min(MAX_DELAY)
}

/// The value of cookie `name` in a `Cookie` header.
pub fn cookie_value<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header.split(';').find_map(|part| {
        let (k, v) = part.trim().split_once('=')?;
        (k == name).then_some(v)
    })
}

/// The `Set-Cookie` value of a session (`max_age`: its lifetime; 0 clears it).
pub fn session_cookie(id: &str, max_age: Duration) -> String {
    format!(
        "{COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}",
        max_age.as_secs()
    )
}

/// A request's `Origin`, when the browser sent one, must be this server (`host`: the request's
/// `Host` header).
pub fn check_origin(origin: Option<&str>, host: Option<&str>) -> Result<(), Refusal> {
    let Some(origin) = origin else {
        return Ok(());
    };
    let same = host.is_some_and(|h| {
        origin
            .strip_prefix("http://")
            .or_else(|| origin.strip_prefix("https://"))
            .is_some_and(|o| o.eq_ignore_ascii_case(h))
    });
    if same {
        Ok(())
    } else {
        Err(Refusal::Origin {
            origin: origin.to_owned(),
        })
    }
}

/// The checks of a state-changing request made by `caller`: same origin (when the browser
/// names one) and, for a session, its CSRF token. A bearer token needs neither.
pub fn check_write(
    caller: &Caller,
    origin: Option<&str>,
    host: Option<&str>,
    csrf: Option<&str>,
) -> Result<(), Refusal> {
    match caller {
        Caller::Token => Ok(()),
        Caller::Session { csrf: want, .. } => {
            check_origin(origin, host)?;
            match csrf {
                Some(got) if constant_time_eq(want, got) => Ok(()),
                _ => Err(Refusal::Csrf),
            }
        }
        // No session, no token: nothing a cross-site page could not also send.
        Caller::Open => {
            check_origin(origin, host)?;
            Err(Refusal::Csrf)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn access(password: Option<&str>, token: Option<&str>) -> Access {
        let hash = password.map(|p| PasswordHash::parse(&hash_password(p).unwrap()).unwrap());
        Access::new(hash, token.map(str::to_owned), Duration::from_secs(60))
    }

    #[test]
    fn a_password_opens_a_session_and_a_wrong_one_does_not() {
        let a = access(Some("correct horse"), None);
        let ip: IpAddr = "10.0.0.7".parse().unwrap();
        assert_eq!(a.login(ip, "wrong"), Err(LoginError::Wrong));
        let (id, csrf) = a.login(ip, "correct horse").expect("login");
        assert_eq!(id.len(), 64);
        assert_ne!(id, csrf);
        match a.caller(None, Some(&id)) {
            Some(Caller::Session { csrf: c, .. }) => assert_eq!(c, csrf),
            other => panic!("{other:?}"),
        }
        assert_eq!(a.caller(None, Some("forged")), None);
        assert_eq!(a.caller(None, None), None);
        a.close_session(&id);
        assert_eq!(a.caller(None, Some(&id)), None);
    }

    #[test]
    fn tokens_and_open_access() {
        let a = access(None, Some("t0ken-t0ken-t0ken-t0ken-t0ken-t0k"));
        assert_eq!(
            a.caller(Some("t0ken-t0ken-t0ken-t0ken-t0ken-t0k"), None),
            Some(Caller::Token)
        );
        assert_eq!(a.caller(Some("nope"), None), None);
        assert_eq!(
            a.login("::1".parse().unwrap(), "x"),
            Err(LoginError::NoPassword)
        );
        let open = access(None, None);
        assert!(!open.required());
        assert_eq!(open.caller(None, None), Some(Caller::Open));
    }

    #[test]
    fn guessing_slows_down_and_a_success_resets_it() {
        let a = access(Some("pw"), None);
        let ip: IpAddr = "192.168.1.9".parse().unwrap();
        for _ in 0..FREE_FAILURES {
            assert_eq!(a.login_delay(ip), Duration::ZERO);
            let _ = a.login(ip, "guess");
        }
        assert_eq!(a.login_delay(ip), Duration::from_secs(1));
        let _ = a.login(ip, "guess");
        assert_eq!(a.login_delay(ip), Duration::from_secs(2));
        assert_eq!(
            a.login_delay("192.168.1.10".parse().unwrap()),
            Duration::ZERO
        );
        assert_eq!(delay_for(100), MAX_DELAY);
        a.login(ip, "pw").expect("login");
        assert_eq!(a.login_delay(ip), Duration::ZERO);
    }

    #[test]
    fn writes_need_the_csrf_token_and_the_same_origin() {
        let s = Caller::Session {
            id: "i".into(),
            csrf: "abc".into(),
        };
        let host = Some("127.0.0.1:8080");
        assert_eq!(check_write(&s, None, host, Some("abc")), Ok(()));
        assert_eq!(
            check_write(&s, Some("http://127.0.0.1:8080"), host, Some("abc")),
            Ok(())
        );
        assert_eq!(check_write(&s, None, host, None), Err(Refusal::Csrf));
        assert_eq!(check_write(&s, None, host, Some("abd")), Err(Refusal::Csrf));
        assert!(matches!(
            check_write(&s, Some("http://evil.example"), host, Some("abc")),
            Err(Refusal::Origin { .. })
        ));
        assert_eq!(
            check_write(&Caller::Open, None, host, None),
            Err(Refusal::Csrf)
        );
        assert_eq!(
            check_write(&Caller::Token, Some("http://evil.example"), host, None),
            Ok(())
        );
    }

    #[test]
    fn cookies_and_hashes() {
        assert_eq!(
            cookie_value("a=1; adaptd_session=xyz; b=2", COOKIE),
            Some("xyz")
        );
        assert_eq!(cookie_value("adaptd_session_x=1", COOKIE), None);
        assert!(session_cookie("id", Duration::from_secs(5)).contains("HttpOnly; SameSite=Strict"));
        assert!(PasswordHash::parse("not a hash").is_err());
        let h = hash_password("s3cret").unwrap();
        assert!(h.starts_with("$argon2id$"), "{h}");
        assert!(PasswordHash::parse(&h).unwrap().verify("s3cret"));
        assert!(!PasswordHash::parse(&h).unwrap().verify("s3cre"));
        assert!(constant_time_eq("abc", "abc") && !constant_time_eq("abc", "abcd"));
    }
}
