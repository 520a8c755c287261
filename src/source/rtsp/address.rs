//! Where an RTSP camera is, and who adaptd logs in as: the URL without its password, the
//! credentials apart, and the URL as logs show it (password masked).
//!
//! Parsed without the `rtsp` feature too, so a configuration is checked the same way by every
//! build. The password comes from the URL or from a file ([`RtspAddress::load`]), never both;
//! it is held in a [`Password`] whose `Debug` is redacted and which has no `Display`.

use std::fmt;
use std::path::{Path, PathBuf};

use url::Url;

/// The scheme adaptd reads (retina has no RTSP over TLS).
const SCHEME: &str = "rtsp";

/// A camera password. `Debug` prints `Password(***)`; there is no `Display`.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(String);

impl Password {
    /// The password itself, for the RTSP client only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(***)")
    }
}

/// Why an RTSP address cannot be used. Every message shows the URL with its password masked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    #[error(
        "[source].url = {shown:?} is not a URL ({why}); give the camera's RTSP URL, such as \
         \"rtsp://user@192.168.1.20:554/stream2\""
    )]
    NotAUrl { shown: String, why: String },
    #[error(
        "[source].url = {shown:?} is a {scheme}:// URL, not rtsp://; kind = \"rtsp\" reads \
         IP cameras over RTSP (for a pipe or a program use kind = \"mjpeg\" or \"command\")"
    )]
    NotRtsp { shown: String, scheme: String },
    #[error("[source].url = {shown:?} names no host; give rtsp://HOST[:PORT]/PATH")]
    NoHost { shown: String },
    #[error(
        "[source].url = {shown:?} holds a password and [source].password_file is set too: \
         keep the password in one place (the file, so the config can be shared)"
    )]
    TwoPasswords { shown: String },
    #[error(
        "[source].password_file is set but [source].url = {shown:?} names no user: write \
         rtsp://USER@host/... (the file holds the password only)"
    )]
    FileWithoutUser { shown: String },
    #[error(
        "{}: cannot read the camera password ([source].password_file): {reason}; check the \
         path and that the user running adaptd may read it", path.display()
    )]
    PasswordFile { path: PathBuf, reason: String },
}

/// An RTSP camera's address and credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtspAddress {
    /// The URL without user or password (retina takes credentials apart).
    url: Url,
    username: Option<String>,
    password: Option<Password>,
}

impl RtspAddress {
    /// Checks `text` without touching the file system: scheme, host, and that the password
    /// is given at most once (`has_password_file`: `[source].password_file` is set).
    pub fn check(text: &str, has_password_file: bool) -> Result<(), AddressError> {
        Self::parse(text, has_password_file).map(|_| ())
    }

    /// Parses the URL and reads the password file, if any.
    pub fn load(text: &str, password_file: Option<&Path>) -> Result<RtspAddress, AddressError> {
        let mut address = Self::parse(text, password_file.is_some())?;
        if let Some(path) = password_file {
            let bad = |reason: String| AddressError::PasswordFile {
                path: path.to_owned(),
                reason,
            };
            let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
            let password = text.lines().next().unwrap_or("").trim_end_matches('\r');
            if password.is_empty() {
                return Err(bad(
                    "the file is empty; write the password on its first line".into(),
                ));
            }
            address.password = Some(Password(password.to_owned()));
        }
        Ok(address)
    }

    fn parse(text: &str, has_password_file: bool) -> Result<RtspAddress, AddressError> {
        let shown = mask(text);
        let mut url = Url::parse(text.trim()).map_err(|e| AddressError::NotAUrl {
            shown: shown.clone(),
            why: e.to_string(),
        })?;
        if url.scheme() != SCHEME {
            return Err(AddressError::NotRtsp {
                shown,
                scheme: url.scheme().to_owned(),
            });
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(AddressError::NoHost { shown });
        }
        let username = Some(decode(url.username())).filter(|u| !u.is_empty());
        let password = url.password().map(|p| Password(decode(p)));
        if password.is_some() && has_password_file {
            return Err(AddressError::TwoPasswords { shown });
        }
        if has_password_file && username.is_none() {
            return Err(AddressError::FileWithoutUser { shown });
        }
        // Infallible for a URL with a host; the credentials travel apart from here on.
        let _ = url.set_username("");
        let _ = url.set_password(None);
        Ok(RtspAddress {
            url,
            username,
            password,
        })
    }

    /// The URL to connect to, without credentials.
    pub fn url(&self) -> &Url {
        &self.url
    }

    /// User and password, when a user is given (a missing password is an empty one).
    pub fn credentials(&self) -> Option<(&str, &str)> {
        self.username.as_deref().map(|u| {
            let p = self.password.as_ref().map_or("", Password::expose);
            (u, p)
        })
    }

    /// `host:port` (554 when the URL gives none), for messages about the connection.
    pub fn host_port(&self) -> String {
        format!(
            "{}:{}",
            self.url.host_str().unwrap_or(""),
            self.url.port().unwrap_or(554)
        )
    }
}

impl fmt::Display for RtspAddress {
    /// The URL as logs and `state` show it: the user, never the password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut shown = self.url.clone();
        if let Some(user) = &self.username {
            let _ = shown.set_username(user);
            if self.password.is_some() {
                let _ = shown.set_password(Some("***"));
            }
        }
        write!(f, "{shown}")
    }
}

/// `text` with the password of a `scheme://user:password@host` URL replaced by `***`; other
/// text is returned as it is. For messages about a URL that may not even parse.
pub fn mask(text: &str) -> String {
    let Some((scheme, rest)) = text.split_once("://") else {
        return text.to_owned();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    let Some((userinfo, host)) = authority.rsplit_once('@') else {
        return text.to_owned();
    };
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}{path}"),
        None => text.to_owned(),
    }
}

/// Percent-decoding of the URL's user and password (`p%40ss` is `p@ss`).
fn decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_leave_the_url_and_logs_see_no_password() {
        let a =
            RtspAddress::load("rtsp://admin:s%40cret@10.0.0.5:8554/stream2", None).expect("valid");
        assert_eq!(a.url().as_str(), "rtsp://10.0.0.5:8554/stream2");
        assert_eq!(a.credentials(), Some(("admin", "s@cret")));
        assert_eq!(a.to_string(), "rtsp://admin:***@10.0.0.5:8554/stream2");
        assert!(!format!("{a:?}").contains("cret"), "{a:?}");
        assert_eq!(a.host_port(), "10.0.0.5:8554");
        let plain = RtspAddress::load("rtsp://cam.lan/live", None).expect("valid");
        assert_eq!(plain.credentials(), None);
        assert_eq!(plain.to_string(), "rtsp://cam.lan/live");
        assert_eq!(plain.host_port(), "cam.lan:554");
    }

    #[test]
    fn the_password_file_gives_the_password_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("cam.pass");
        std::fs::write(&file, "hunter2\n").expect("write");
        let a = RtspAddress::load("rtsp://viewer@cam/s", Some(&file)).expect("valid");
        assert_eq!(a.credentials(), Some(("viewer", "hunter2")));
        assert_eq!(a.to_string(), "rtsp://viewer:***@cam/s");
        let e = RtspAddress::load("rtsp://viewer:x@cam/s", Some(&file)).unwrap_err();
        assert!(matches!(e, AddressError::TwoPasswords { .. }), "{e}");
        assert!(!e.to_string().contains(":x@"), "{e}");
        let e = RtspAddress::load("rtsp://cam/s", Some(&file)).unwrap_err();
        assert!(matches!(e, AddressError::FileWithoutUser { .. }), "{e}");
        std::fs::write(&file, "\n").expect("write");
        let e = RtspAddress::load("rtsp://viewer@cam/s", Some(&file)).unwrap_err();
        assert!(e.to_string().contains("empty"), "{e}");
        let e =
            RtspAddress::load("rtsp://viewer@cam/s", Some(&dir.path().join("nope"))).unwrap_err();
        assert!(e.to_string().contains("nope"), "{e}");
    }

    #[test]
    fn a_url_that_is_not_rtsp_is_named_with_its_password_masked() {
        let e = RtspAddress::check("http://u:pw@cam/video.mjpg", false).unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("\"http://u:***@cam/video.mjpg\"") && text.contains("not rtsp://"),
            "{text}"
        );
        assert!(!text.contains("pw"), "{text}");
        let e = RtspAddress::check("camera.lan:554/stream", false).unwrap_err();
        assert!(e.to_string().contains("camera.lan:554/stream"), "{e}");
        assert!(RtspAddress::check("rtsp:///path", false).is_err());
        assert_eq!(mask("no url here"), "no url here");
        assert_eq!(mask("rtsp://u@h/p"), "rtsp://u@h/p");
        assert_eq!(mask("rtsp://u:p@h/x@y"), "rtsp://u:***@h/x@y");
    }
}
