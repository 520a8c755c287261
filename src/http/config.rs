//! `[http]`: where the web page and the JSON API listen, and who may use them.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// `[http]` of the configuration file (docs/http.md).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// `host:port` to listen on; `""` turns the server off. Loopback by default: the page is
    /// off the LAN until the owner says otherwise (and then sets a password or a token).
    pub listen: String,
    /// An argon2 PHC string (`adaptd http-password` prints one): the password of the page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password_hash: Option<String>,
    /// A file holding one bearer token (at least 32 characters), for scripts and Prometheus.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
    /// How long a login lasts, hours.
    pub session_hours: f64,
    /// The largest sample upload, MiB.
    pub max_upload_mb: u32,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: "127.0.0.1:8080".into(),
            password_hash: None,
            token_file: None,
            session_hours: 168.0,
            max_upload_mb: 16,
        }
    }
}

/// The shortest token a token file may hold: 32 characters of base64 are 192 bits.
pub const MIN_TOKEN_CHARS: usize = 32;

impl HttpConfig {
    /// The address to bind, or `None` when the server is off. Errors name the key.
    pub fn addr(&self) -> Result<Option<SocketAddr>, String> {
        let listen = self.listen.trim();
        if listen.is_empty() {
            return Ok(None);
        }
        listen.parse::<SocketAddr>().map(Some).map_err(|_| {
            format!(
                "[http].listen = {:?} is not an address; give host:port, e.g. \"127.0.0.1:8080\" \
                 (this device only) or \"0.0.0.0:8080\" (the LAN, with a password_hash or \
                 token_file), or \"\" for no web page",
                self.listen
            )
        })
    }

    /// Whether someone must log in (a password or a token is configured).
    pub fn requires_login(&self) -> bool {
        self.password_hash.is_some() || self.token_file.is_some()
    }

    /// Range and consistency rules; each message names the key and what to do.
    pub fn validate(&self) -> Vec<String> {
        let mut p = Vec::new();
        match self.addr() {
            Err(e) => p.push(e),
            Ok(Some(addr)) if !addr.ip().is_loopback() && !self.requires_login() => {
                p.push(format!(
                "[http].listen = {:?} reaches beyond this device, so the page needs a login: set \
                 [http].password_hash (make one with `adaptd http-password`) or \
                 [http].token_file, or listen on \"127.0.0.1:{}\" behind a reverse proxy",
                self.listen,
                addr.port()
            ))
            }
            Ok(_) => {}
        }
        if let Some(h) = &self.password_hash {
            if let Err(e) = super::auth::PasswordHash::parse(h) {
                p.push(format!("[http].password_hash: {e}"));
            }
        }
        if !(self.session_hours.is_finite()
            && self.session_hours > 0.0
            && self.session_hours <= 24.0 * 366.0)
        {
            p.push(format!(
                "[http].session_hours = {} is out of range; allowed: above 0 up to 8784 (a year)",
                self.session_hours
            ));
        }
        if !(1..=1024).contains(&self.max_upload_mb) {
            p.push(format!(
                "[http].max_upload_mb = {} is out of range; allowed: 1 to 1024",
                self.max_upload_mb
            ));
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_needs_no_login_and_the_lan_does() {
        let cfg = HttpConfig::default();
        assert!(cfg.validate().is_empty(), "{:?}", cfg.validate());
        let lan = HttpConfig {
            listen: "0.0.0.0:8080".into(),
            ..HttpConfig::default()
        };
        let p = lan.validate();
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].contains("password_hash"), "{p:?}");
        let with_token = HttpConfig {
            token_file: Some("/etc/adaptd/http.token".into()),
            ..lan
        };
        assert!(with_token.validate().is_empty());
    }

    #[test]
    fn bad_values_are_named() {
        let cfg = HttpConfig {
            listen: "localhost".into(),
            password_hash: Some("plain text".into()),
            session_hours: 0.0,
            max_upload_mb: 0,
            ..HttpConfig::default()
        };
        let p = cfg.validate().join("\n");
        for key in [
            "[http].listen",
            "[http].password_hash",
            "[http].session_hours",
            "[http].max_upload_mb",
        ] {
            assert!(p.contains(key), "{key} not in {p}");
        }
        let off = HttpConfig {
            listen: String::new(),
            ..HttpConfig::default()
        };
        assert_eq!(off.addr(), Ok(None));
    }
}
