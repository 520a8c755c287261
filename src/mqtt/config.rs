//! The `[mqtt]` table of adaptd's TOML config, its validation, and loading of the secrets and
//! TLS material it points to.
//!
//! The config holds only *paths* to the password and keys, never their contents, so it can be
//! printed (`check-config`, debug logs) without leaking anything. The password is read when
//! the link starts, into a [`Secret`] whose `Debug` output is redacted.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::{Deserialize, Serialize};

/// Errors of the MQTT link: each message says what is wrong and what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum MqttError {
    /// The `[mqtt]` table failed [`MqttConfig::validate`].
    #[error("invalid [mqtt] configuration:\n  - {}", .0.join("\n  - "))]
    Config(Vec<String>),
    /// A file named in the config could not be read.
    #[error("cannot read {what} {path}: {source}; check the path and that the user running adaptd may read it")]
    ReadFile {
        /// Which setting named the file, e.g. `[mqtt].ca_file`.
        what: String,
        /// The path as configured.
        path: PathBuf,
        /// The underlying I/O error.
        source: io::Error,
    },
    /// A PEM file held nothing usable.
    #[error("{what} {path}: {problem}")]
    Pem {
        /// Which setting named the file.
        what: String,
        /// The path as configured.
        path: PathBuf,
        /// What is wrong and what was expected.
        problem: String,
    },
    /// rustls refused the TLS material (for instance a key that does not match the certificate).
    #[error("TLS setup failed: {0}; check that [mqtt].client_cert and [mqtt].client_key belong together and are PEM files")]
    Tls(#[from] rustls::Error),
    /// An outgoing message would exceed the packet size limit; rumqttc would drop the whole
    /// connection on it, so it is refused before it reaches rumqttc.
    #[error("message for {topic} is {size} bytes, over the limit of {max} bytes ([mqtt].max_packet_bytes); raise max_packet_bytes (and the broker's message_size_limit) or send less")]
    PayloadTooLarge {
        /// The topic of the refused message.
        topic: String,
        /// The size of the MQTT packet it would have become.
        size: usize,
        /// The configured limit.
        max: usize,
    },
    /// A topic name contains `+`, `#` or is empty.
    #[error("cannot publish to {0:?}: a topic name must be non-empty and contain no `+` or `#`")]
    InvalidTopic(String),
    /// The per-frame queue is full; the message was dropped (and counted in the stats).
    #[error("the MQTT send queue is full; the message was dropped")]
    QueueFull,
    /// Not connected right now; retained state is republished on reconnect, so the message was
    /// dropped instead of piling up.
    #[error("not connected to the MQTT broker; the message was dropped (retained state is republished on reconnect)")]
    NotConnected,
    /// The queue stayed full for too long (the broker does not keep up).
    #[error("timed out after {0:?} waiting for room in the MQTT send queue; the broker or the network is too slow")]
    Timeout(std::time::Duration),
    /// The link was shut down.
    #[error("the MQTT link has shut down; nothing more can be published")]
    Closed,
}

/// The `[mqtt]` table. Every key has a default, so an empty table (or none) connects to a
/// broker on the local host without TLS or password.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MqttConfig {
    /// `mqtt://host[:port]` (default port 1883), `mqtts://host[:port]` (default 8883), or
    /// `embedded`: run the in-process broker on `embedded_bind` and connect to it.
    pub url: String,
    /// Where the embedded broker listens (`url = "embedded"` only). Loopback by default: the
    /// embedded broker has no authentication.
    pub embedded_bind: String,
    /// MQTT client id; unset means `adaptd-<device_id>`. Two clients with one id kick each other
    /// off the broker, hence the device id in the default.
    pub client_id: Option<String>,
    /// Broker user name.
    pub username: Option<String>,
    /// File holding the broker password (trailing newline ignored). When unset, the systemd
    /// credential `$CREDENTIALS_DIRECTORY/mqtt-password` is used if it exists (LoadCredential=).
    /// A path rather than the password itself, so the config file can be world-readable.
    pub password_file: Option<PathBuf>,
    /// PEM file with the CA certificate(s) that signed the broker's certificate. Required for
    /// `mqtts://`; for a broker with a public certificate point it at the system bundle
    /// (`/etc/ssl/certs/ca-certificates.crt`).
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate chain for mutual TLS (needs `client_key`).
    pub client_cert: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) for `client_cert`.
    pub client_key: Option<PathBuf>,
    /// Seconds between keep-alive pings; the broker publishes the last will (`offline`) after
    /// 1.5 times this without a word from adaptd.
    pub keep_alive_secs: u64,
    /// QoS of subscriptions and publishes: 0 or 1 (2 buys nothing for this traffic).
    pub qos: u8,
    /// Largest MQTT packet sent or accepted, in bytes (rumqttc's default of 10 KiB is far too
    /// small for snapshots and samples).
    pub max_packet_bytes: usize,
    /// First topic level(s); the base topic is `<prefix>/<device_id>`.
    pub prefix: String,
    /// Second topic level and Home Assistant device id; unset means the host name
    /// (from `/etc/hostname`, lower-cased, other characters than `[a-z0-9_-]` replaced by `-`),
    /// or `adaptd` when there is none.
    pub device_id: Option<String>,
    /// Publish Home Assistant discovery and listen to `<discovery_prefix>/status`.
    pub discovery: bool,
    /// Home Assistant's discovery prefix.
    pub discovery_prefix: String,
    /// Seconds between `stats` messages (read by the daemon's stats timer, which publishes
    /// them with [`crate::mqtt::Publisher::try_publish`]).
    pub stats_interval_secs: u64,
}

impl Default for MqttConfig {
    fn default() -> Self {
        MqttConfig {
            url: "mqtt://127.0.0.1:1883".to_owned(),
            embedded_bind: "127.0.0.1:1883".to_owned(),
            client_id: None,
            username: None,
            password_file: None,
            ca_file: None,
            client_cert: None,
            client_key: None,
            keep_alive_secs: 30,
            qos: 1,
            max_packet_bytes: 8 * 1024 * 1024,
            prefix: "adaptd".to_owned(),
            device_id: None,
            discovery: true,
            discovery_prefix: "homeassistant".to_owned(),
            stats_interval_secs: 10,
        }
    }
}

/// The `[mqtt].url` that selects the embedded broker.
pub const EMBEDDED: &str = "embedded";

/// The MQTT protocol's largest remaining length (256 MiB - 1).
const MQTT_MAX_PACKET: usize = 268_435_455;
/// Below this, the discovery message (about 3 KB) and a state with many labels do not fit;
/// snapshots need far more anyway.
const MIN_PACKET: usize = 16 * 1024;

/// A parsed `[mqtt].url`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerUrl {
    /// `mqtts://`.
    pub tls: bool,
    /// Host name or address as written (IPv6 literals keep their brackets, which is what
    /// rumqttc's address lookup needs).
    pub host: String,
    /// Port, defaulted from the scheme.
    pub port: u16,
}

impl fmt::Display for BrokerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.tls { "mqtts" } else { "mqtt" };
        write!(f, "{scheme}://{}:{}", self.host, self.port)
    }
}

impl BrokerUrl {
    /// Parses `mqtt://host[:port]` or `mqtts://host[:port]`; the error names the problem.
    pub fn parse(url: &str) -> Result<BrokerUrl, BadSetting> {
        let bad = |problem: String| BadSetting {
            key: "url",
            value: url.to_owned(),
            problem,
        };
        let (tls, rest) = if let Some(rest) = url.strip_prefix("mqtts://") {
            (true, rest)
        } else if let Some(rest) = url.strip_prefix("mqtt://") {
            (false, rest)
        } else {
            return Err(bad("the scheme must be mqtt:// or mqtts:// (websockets and unix sockets are not supported)".to_owned()));
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains(['/', '?', '#', '@']) {
            return Err(bad("only scheme://host[:port] is allowed (no path, query or user@; credentials go in [mqtt].username and [mqtt].password_file)".to_owned()));
        }
        let default_port = if tls { 8883 } else { 1883 };
        let (host, port) = if let Some(after_bracket) = rest.strip_prefix('[') {
            let Some((addr, tail)) = after_bracket.split_once(']') else {
                return Err(bad("an IPv6 address needs a closing `]`".to_owned()));
            };
            let host = format!("[{addr}]");
            match tail {
                "" => (host, None),
                t => match t.strip_prefix(':') {
                    Some(p) => (host, Some(p)),
                    None => return Err(bad("expected `:port` after the IPv6 address".to_owned())),
                },
            }
        } else {
            match rest.rsplit_once(':') {
                Some((h, p)) => (h.to_owned(), Some(p)),
                None => (rest.to_owned(), None),
            }
        };
        if host.is_empty() || host == "[]" {
            return Err(bad("the host is missing".to_owned()));
        }
        let port = match port {
            None => default_port,
            Some(p) => match p.parse::<u16>() {
                Ok(0) | Err(_) => {
                    return Err(bad("the port must be a number from 1 to 65535".to_owned()))
                }
                Ok(p) => p,
            },
        };
        Ok(BrokerUrl { tls, host, port })
    }
}

/// One `[mqtt]` setting whose value adaptd cannot use; the message names the key, the value
/// and what is allowed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("[mqtt].{key} = {value:?}: {problem}")]
pub struct BadSetting {
    /// The key under `[mqtt]`.
    pub key: &'static str,
    /// The value as configured.
    pub value: String,
    /// What is wrong and what is allowed.
    pub problem: String,
}

/// A password read from a file. `Debug` prints `Secret(***)`, and there is no `Display`, so it
/// cannot end up in a log line by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// The password itself, for handing to the MQTT client.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// The systemd credential name looked up in `$CREDENTIALS_DIRECTORY`.
pub const CREDENTIAL_NAME: &str = "mqtt-password";

impl MqttConfig {
    /// The device id in force: the configured one, else the host name, else `adaptd`.
    pub fn device_id(&self) -> String {
        match &self.device_id {
            Some(id) => id.clone(),
            None => std::fs::read_to_string("/etc/hostname")
                .ok()
                .and_then(|h| sanitize_device_id(&h))
                .unwrap_or_else(|| "adaptd".to_owned()),
        }
    }

    /// The client id in force: the configured one, else `adaptd-<device_id>`.
    pub fn client_id(&self) -> String {
        match &self.client_id {
            Some(id) => id.clone(),
            None => format!("adaptd-{}", self.device_id()),
        }
    }

    /// Checks every key and returns one message per problem (empty when all is well). Each
    /// message names the key as `[mqtt].key` and says what is allowed.
    pub fn validate(&self) -> Vec<String> {
        let mut errors = Vec::new();
        if self.is_embedded() && !cfg!(feature = "embedded-broker") {
            errors.push(
                "[mqtt].url = \"embedded\": this adaptd was built without the embedded broker (cargo feature `embedded-broker`); point url at a broker such as Mosquitto (mqtt://127.0.0.1:1883)".to_owned(),
            );
        }
        if self.is_embedded() || self.embedded_bind != MqttConfig::default().embedded_bind {
            if let Err(e) = self.embedded_addr() {
                errors.push(e.to_string());
            }
        }
        let url = match self.broker_url_text() {
            Ok(u) => Some(u),
            Err(e) => {
                errors.push(e.to_string());
                None
            }
        };
        if let Some(id) = &self.client_id {
            if id.is_empty() || id.len() > 256 || id.chars().any(char::is_control) {
                errors.push(format!(
                    "[mqtt].client_id = {id:?}: must be 1 to 256 printable characters (or leave it unset for adaptd-<device_id>)"
                ));
            }
        }
        if let Some(user) = &self.username {
            if user.is_empty() {
                errors.push(
                    "[mqtt].username is empty: remove the key for anonymous access".to_owned(),
                );
            }
        }
        if self.password_file.is_some() && self.username.is_none() {
            errors.push(
                "[mqtt].password_file is set but [mqtt].username is not: MQTT 3.1.1 sends a password only with a user name".to_owned(),
            );
        }
        check_file(&mut errors, "password_file", self.password_file.as_deref());
        check_file(&mut errors, "ca_file", self.ca_file.as_deref());
        check_file(&mut errors, "client_cert", self.client_cert.as_deref());
        check_file(&mut errors, "client_key", self.client_key.as_deref());
        let tls = url.as_ref().is_some_and(|u| u.tls);
        if self.client_cert.is_some() != self.client_key.is_some() {
            errors.push(
                "[mqtt].client_cert and [mqtt].client_key go together: set both for mutual TLS, or neither".to_owned(),
            );
        }
        if url.is_some() && !tls {
            for (key, set) in [
                ("ca_file", self.ca_file.is_some()),
                ("client_cert", self.client_cert.is_some()),
                ("client_key", self.client_key.is_some()),
            ] {
                if set {
                    errors.push(format!(
                        "[mqtt].{key} is set but [mqtt].url uses mqtt:// (no TLS): use mqtts:// or remove {key}"
                    ));
                }
            }
        }
        if tls && self.ca_file.is_none() {
            errors.push(
                "[mqtt].url uses mqtts:// but [mqtt].ca_file is unset: name the PEM file of the CA that signed the broker's certificate (/etc/ssl/certs/ca-certificates.crt for a public one)".to_owned(),
            );
        }
        if !(5..=65535).contains(&self.keep_alive_secs) {
            errors.push(format!(
                "[mqtt].keep_alive_secs = {}: must be 5 to 65535 (seconds)",
                self.keep_alive_secs
            ));
        }
        if self.qos > 1 {
            errors.push(format!(
                "[mqtt].qos = {}: must be 0 or 1 (QoS 2 is not supported)",
                self.qos
            ));
        }
        if !(MIN_PACKET..=MQTT_MAX_PACKET).contains(&self.max_packet_bytes) {
            errors.push(format!(
                "[mqtt].max_packet_bytes = {}: must be {MIN_PACKET} to {MQTT_MAX_PACKET} (the MQTT maximum)",
                self.max_packet_bytes
            ));
        }
        if let Err(e) = check_topic_prefix(&self.prefix) {
            errors.push(format!("[mqtt].prefix = {:?}: {e}", self.prefix));
        }
        if let Some(id) = &self.device_id {
            if let Err(e) = check_device_id(id) {
                errors.push(format!("[mqtt].device_id = {id:?}: {e}"));
            }
        }
        if let Err(e) = check_topic_prefix(&self.discovery_prefix) {
            errors.push(format!(
                "[mqtt].discovery_prefix = {:?}: {e}",
                self.discovery_prefix
            ));
        }
        if !(1..=86_400).contains(&self.stats_interval_secs) {
            errors.push(format!(
                "[mqtt].stats_interval_secs = {}: must be 1 to 86400 (seconds)",
                self.stats_interval_secs
            ));
        }
        errors
    }

    /// The broker URL, parsed. Fails like [`MqttConfig::validate`] does.
    pub fn broker_url(&self) -> Result<BrokerUrl, MqttError> {
        self.broker_url_text()
            .map_err(|e| MqttError::Config(vec![e.to_string()]))
    }

    /// `url = "embedded"`: adaptd runs its own broker.
    pub fn is_embedded(&self) -> bool {
        self.url == EMBEDDED
    }

    /// The embedded broker's listening address.
    pub fn embedded_addr(&self) -> Result<std::net::SocketAddr, BadSetting> {
        self.embedded_bind.parse().map_err(|_| BadSetting {
            key: "embedded_bind",
            value: self.embedded_bind.clone(),
            problem: "give an address and port such as \"127.0.0.1:1883\" (an IPv6 address in brackets: \"[::1]:1883\")".to_owned(),
        })
    }

    /// The broker to connect to: the configured URL, or the embedded broker's address (its
    /// loopback address when it listens on all interfaces).
    fn broker_url_text(&self) -> Result<BrokerUrl, BadSetting> {
        if !self.is_embedded() {
            return BrokerUrl::parse(&self.url);
        }
        let addr = self.embedded_addr()?;
        let host = match addr.ip() {
            std::net::IpAddr::V4(ip) if ip.is_unspecified() => "127.0.0.1".to_owned(),
            std::net::IpAddr::V6(ip) if ip.is_unspecified() => "[::1]".to_owned(),
            std::net::IpAddr::V4(ip) => ip.to_string(),
            std::net::IpAddr::V6(ip) => format!("[{ip}]"),
        };
        Ok(BrokerUrl {
            tls: false,
            host,
            port: addr.port(),
        })
    }

    /// Reads the password: from `password_file`, else from the systemd credential
    /// `$CREDENTIALS_DIRECTORY/mqtt-password` if that file exists, else none.
    pub fn load_password(&self) -> Result<Option<Secret>, MqttError> {
        let creds = std::env::var_os("CREDENTIALS_DIRECTORY").map(PathBuf::from);
        self.load_password_from(creds.as_deref())
    }

    /// [`MqttConfig::load_password`] with the credentials directory given, for tests.
    pub(crate) fn load_password_from(
        &self,
        credentials_dir: Option<&Path>,
    ) -> Result<Option<Secret>, MqttError> {
        let (path, what) = match (&self.password_file, credentials_dir) {
            (Some(p), _) => (p.clone(), "[mqtt].password_file".to_owned()),
            (None, Some(dir)) => {
                let p = dir.join(CREDENTIAL_NAME);
                if !p.exists() {
                    return Ok(None);
                }
                (p, format!("systemd credential {CREDENTIAL_NAME}"))
            }
            (None, None) => return Ok(None),
        };
        let text = std::fs::read_to_string(&path).map_err(|source| MqttError::ReadFile {
            what: what.clone(),
            path: path.clone(),
            source,
        })?;
        warn_if_world_readable(&path, &what);
        let password = text.trim_end_matches(['\n', '\r']);
        if password.is_empty() {
            return Err(MqttError::Pem {
                what,
                path,
                problem: "the file is empty: write the broker password into it, or remove [mqtt].password_file".to_owned(),
            });
        }
        Ok(Some(Secret(password.to_owned())))
    }

    /// Builds the rustls client config from `ca_file` (and `client_cert`/`client_key` for
    /// mutual TLS) with the ring provider; `None` for `mqtt://`.
    ///
    /// Built here rather than with rumqttc's `tls_with_default_config`, which panics on a
    /// system without a usable CA store and silently trusts every system CA.
    pub fn tls_client_config(&self) -> Result<Option<Arc<rustls::ClientConfig>>, MqttError> {
        if !self.broker_url()?.tls {
            return Ok(None);
        }
        let Some(ca_file) = &self.ca_file else {
            return Err(MqttError::Config(vec![
                "[mqtt].url uses mqtts:// but [mqtt].ca_file is unset".to_owned(),
            ]));
        };
        let ca_certs = read_certs(ca_file, "[mqtt].ca_file")?;
        let mut roots = rustls::RootCertStore::empty();
        let (_added, ignored) = roots.add_parsable_certificates(ca_certs);
        if roots.is_empty() {
            return Err(MqttError::Pem {
                what: "[mqtt].ca_file".to_owned(),
                path: ca_file.clone(),
                problem: format!(
                    "none of the {ignored} certificate(s) could be used as a trust anchor; expected a PEM CA certificate"
                ),
            });
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots);
        let config = match (&self.client_cert, &self.client_key) {
            (Some(cert), Some(key)) => {
                let chain = read_certs(cert, "[mqtt].client_cert")?;
                let key_der = read_key(key)?;
                builder.with_client_auth_cert(chain, key_der)?
            }
            (None, None) => builder.with_no_client_auth(),
            _ => {
                return Err(MqttError::Config(vec![
                    "[mqtt].client_cert and [mqtt].client_key go together: set both for mutual TLS, or neither".to_owned(),
                ]))
            }
        };
        Ok(Some(Arc::new(config)))
    }
}

/// Makes a host name usable as a device id (a topic level and a Home Assistant object id):
/// lower case, characters outside `[a-z0-9_-]` become `-`, at most 64 characters.
pub fn sanitize_device_id(hostname: &str) -> Option<String> {
    let first = hostname.lines().next()?.trim();
    let id: String = first
        .chars()
        .map(|c| c.to_ascii_lowercase())
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .take(64)
        .collect();
    let id = id.trim_matches('-').to_owned();
    (!id.is_empty()).then_some(id)
}

/// What is wrong with a device id or a topic prefix (the message follows the key and value).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
enum NameProblem {
    #[error("must be 1 to {max} characters")]
    Length { max: usize },
    #[error("{0:?} is not allowed: use letters, digits, `_` and `-` only (it is one MQTT topic level and the Home Assistant device id)")]
    Character(char),
    #[error("must not contain the MQTT wildcards `+` or `#`")]
    Wildcard,
    #[error("must not start with `$` (reserved for broker topics)")]
    Reserved,
    #[error("must not start or end with `/` or contain an empty level (`//`)")]
    EmptyLevel,
}

/// A device id is one topic level and Home Assistant's object id, whose allowed characters are
/// `[a-zA-Z0-9_-]`.
fn check_device_id(id: &str) -> Result<(), NameProblem> {
    if id.is_empty() || id.len() > 64 {
        return Err(NameProblem::Length { max: 64 });
    }
    if let Some(bad) = id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '-'))
    {
        return Err(NameProblem::Character(bad));
    }
    Ok(())
}

/// A prefix is one or more topic levels that a subscriber can match literally.
fn check_topic_prefix(prefix: &str) -> Result<(), NameProblem> {
    if prefix.is_empty() || prefix.len() > 128 {
        return Err(NameProblem::Length { max: 128 });
    }
    if prefix.contains(['+', '#']) || prefix.contains('\0') {
        return Err(NameProblem::Wildcard);
    }
    if prefix.starts_with('$') {
        return Err(NameProblem::Reserved);
    }
    if prefix.starts_with('/') || prefix.ends_with('/') || prefix.contains("//") {
        return Err(NameProblem::EmptyLevel);
    }
    Ok(())
}

fn check_file(errors: &mut Vec<String>, key: &str, path: Option<&Path>) {
    if let Some(path) = path {
        match std::fs::metadata(path) {
            Ok(m) if m.is_file() => {}
            Ok(_) => errors.push(format!(
                "[mqtt].{key} = {}: not a regular file",
                path.display()
            )),
            Err(e) => errors.push(format!("[mqtt].{key} = {}: {e}", path.display())),
        }
    }
}

#[cfg(unix)]
fn warn_if_world_readable(path: &Path, what: &str) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path) {
        if meta.permissions().mode() & 0o004 != 0 {
            tracing::warn!(
                "{what} {} is readable by every user; restrict it with `chmod 600`",
                path.display()
            );
        }
    }
}

#[cfg(not(unix))]
fn warn_if_world_readable(_path: &Path, _what: &str) {}

fn read_bytes(path: &Path, what: &str) -> Result<Vec<u8>, MqttError> {
    std::fs::read(path).map_err(|source| MqttError::ReadFile {
        what: what.to_owned(),
        path: path.to_owned(),
        source,
    })
}

fn read_certs(path: &Path, what: &str) -> Result<Vec<CertificateDer<'static>>, MqttError> {
    let bytes = read_bytes(path, what)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| MqttError::Pem {
            what: what.to_owned(),
            path: path.to_owned(),
            problem: format!("not a valid PEM file ({e})"),
        })?;
    if certs.is_empty() {
        return Err(MqttError::Pem {
            what: what.to_owned(),
            path: path.to_owned(),
            problem: "no `-----BEGIN CERTIFICATE-----` block found; expected PEM certificate(s)"
                .to_owned(),
        });
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, MqttError> {
    let what = "[mqtt].client_key";
    let bytes = read_bytes(path, what)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| MqttError::Pem {
        what: what.to_owned(),
        path: path.to_owned(),
        problem: format!(
            "no usable private key ({e}); expected an unencrypted PEM key (PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY)"
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn with(f: impl FnOnce(&mut MqttConfig)) -> MqttConfig {
        let mut c = MqttConfig {
            device_id: Some("cam1".into()),
            ..MqttConfig::default()
        };
        f(&mut c);
        c
    }

    fn one_error_mentions(c: &MqttConfig, needle: &str) {
        let errors = c.validate();
        assert!(
            errors.iter().any(|e| e.contains(needle)),
            "expected an error mentioning {needle:?}, got {errors:?}"
        );
    }

    #[test]
    fn defaults_are_valid() {
        let c = with(|_| {});
        assert_eq!(c.validate(), Vec::<String>::new());
        assert_eq!(c.client_id(), "adaptd-cam1");
        assert_eq!(c.max_packet_bytes, 8 * 1024 * 1024);
        assert_eq!(c.keep_alive_secs, 30);
        assert_eq!(c.qos, 1);
        let url = c.broker_url().expect("default url parses");
        assert_eq!(
            (url.tls, url.host.as_str(), url.port),
            (false, "127.0.0.1", 1883)
        );
    }

    #[test]
    fn default_device_id_is_never_empty_or_invalid() {
        let c = MqttConfig::default();
        let id = c.device_id();
        assert!(check_device_id(&id).is_ok(), "{id:?}");
        assert!(c.client_id().starts_with("adaptd-"));
    }

    #[test]
    fn hostnames_are_sanitized() {
        assert_eq!(
            sanitize_device_id("Pi-Kitchen\n").as_deref(),
            Some("pi-kitchen")
        );
        assert_eq!(
            sanitize_device_id("cam.local").as_deref(),
            Some("cam-local")
        );
        assert_eq!(sanitize_device_id("a/b+c#d").as_deref(), Some("a-b-c-d"));
        assert_eq!(sanitize_device_id("\n"), None);
        assert_eq!(sanitize_device_id("..."), None);
    }

    #[test]
    fn toml_like_input_rejects_unknown_keys_and_fills_defaults() {
        let c: MqttConfig =
            serde_json::from_str(r#"{"url": "mqtts://broker:8884", "qos": 0}"#).expect("valid");
        assert_eq!(c.qos, 0);
        assert_eq!(c.prefix, "adaptd");
        assert_eq!(c.stats_interval_secs, 10);
        let err = serde_json::from_str::<MqttConfig>(r#"{"passwd": "x"}"#)
            .expect_err("unknown key must fail");
        assert!(err.to_string().contains("passwd"), "{err}");
    }

    #[test]
    fn the_embedded_broker_is_reached_on_its_bind_address() {
        let c = with(|c| c.url = "embedded".into());
        assert!(c.is_embedded());
        if cfg!(feature = "embedded-broker") {
            assert_eq!(c.validate(), Vec::<String>::new());
        } else {
            one_error_mentions(&c, "embedded-broker");
        }
        let u = c.broker_url().expect("url");
        assert_eq!((u.tls, u.host.as_str(), u.port), (false, "127.0.0.1", 1883));
        let c = with(|c| {
            c.url = "embedded".into();
            c.embedded_bind = "0.0.0.0:18830".into();
        });
        let u = c.broker_url().expect("url");
        assert_eq!((u.host.as_str(), u.port), ("127.0.0.1", 18830));
        let c = with(|c| {
            c.url = "embedded".into();
            c.embedded_bind = "[::1]:1884".into();
        });
        assert_eq!(c.broker_url().expect("url").host, "[::1]");
        one_error_mentions(
            &with(|c| {
                c.url = "embedded".into();
                c.embedded_bind = "localhost".into();
            }),
            "[mqtt].embedded_bind",
        );
    }

    #[test]
    fn urls() {
        let u = BrokerUrl::parse("mqtts://broker.lan").expect("ok");
        assert_eq!((u.tls, u.host.as_str(), u.port), (true, "broker.lan", 8883));
        let u = BrokerUrl::parse("mqtt://[::1]:1884").expect("ok");
        assert_eq!((u.host.as_str(), u.port), ("[::1]", 1884));
        let u = BrokerUrl::parse("mqtt://h:1/").expect("ok");
        assert_eq!(u.port, 1);
        for bad in [
            "tcp://h:1883",
            "http://h",
            "mqtt://",
            "mqtt://:1883",
            "mqtt://h:0",
            "mqtt://h:99999",
            "mqtt://h:x",
            "mqtt://h/path",
            "mqtt://user:pw@h",
            "mqtt://[::1",
            "h:1883",
        ] {
            assert!(BrokerUrl::parse(bad).is_err(), "{bad} should be rejected");
        }
        one_error_mentions(&with(|c| c.url = "ws://h".into()), "[mqtt].url");
    }

    #[test]
    fn each_bad_key_is_named() {
        one_error_mentions(&with(|c| c.qos = 2), "[mqtt].qos = 2: must be 0 or 1");
        for bad in ["a/b", "a+b", "a#", "", "has space"] {
            one_error_mentions(
                &with(|c| c.device_id = Some(bad.into())),
                "[mqtt].device_id",
            );
        }
        for bad in ["a/+", "#", "/lead", "trail/", "a//b", "$SYS", ""] {
            one_error_mentions(&with(|c| c.prefix = bad.into()), "[mqtt].prefix");
            one_error_mentions(
                &with(|c| c.discovery_prefix = bad.into()),
                "[mqtt].discovery_prefix",
            );
        }
        assert!(with(|c| c.prefix = "home/adaptd".into())
            .validate()
            .is_empty());
        one_error_mentions(&with(|c| c.keep_alive_secs = 0), "[mqtt].keep_alive_secs");
        one_error_mentions(
            &with(|c| c.max_packet_bytes = 10),
            "[mqtt].max_packet_bytes",
        );
        one_error_mentions(
            &with(|c| c.max_packet_bytes = 300 * 1024 * 1024),
            "[mqtt].max_packet_bytes",
        );
        one_error_mentions(
            &with(|c| c.stats_interval_secs = 0),
            "[mqtt].stats_interval_secs",
        );
        one_error_mentions(
            &with(|c| c.client_id = Some(String::new())),
            "[mqtt].client_id",
        );
        one_error_mentions(
            &with(|c| c.username = Some(String::new())),
            "[mqtt].username",
        );
    }

    #[test]
    fn tls_keys_are_checked_together() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = dir.path().join("x.pem");
        std::fs::write(&f, "x").expect("write");
        one_error_mentions(
            &with(|c| c.url = "mqtts://h".into()),
            "[mqtt].ca_file is unset",
        );
        one_error_mentions(
            &with(|c| {
                c.url = "mqtts://h".into();
                c.ca_file = Some(f.clone());
                c.client_cert = Some(f.clone());
            }),
            "go together",
        );
        one_error_mentions(
            &with(|c| c.ca_file = Some(f.clone())),
            "[mqtt].ca_file is set but [mqtt].url uses mqtt://",
        );
        one_error_mentions(
            &with(|c| {
                c.url = "mqtts://h".into();
                c.ca_file = Some(dir.path().join("missing.pem"));
            }),
            "[mqtt].ca_file = ",
        );
        one_error_mentions(
            &with(|c| c.password_file = Some(f.clone())),
            "[mqtt].username is not",
        );
    }

    #[test]
    fn password_file_is_trimmed_and_never_printed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("pw");
        let mut file = std::fs::File::create(&p).expect("create");
        file.write_all(b"s3cr3t pass\r\n").expect("write");
        let c = with(|c| {
            c.username = Some("u".into());
            c.password_file = Some(p.clone());
        });
        let secret = c.load_password_from(None).expect("ok").expect("some");
        assert_eq!(secret.expose(), "s3cr3t pass");
        assert_eq!(format!("{secret:?}"), "Secret(***)");
        assert!(!format!("{c:?}").contains("s3cr3t"));
    }

    #[test]
    fn password_from_systemd_credentials() {
        let dir = tempfile::tempdir().expect("tempdir");
        let c = with(|c| c.username = Some("u".into()));
        assert!(c
            .load_password_from(Some(dir.path()))
            .expect("ok")
            .is_none());
        std::fs::write(dir.path().join(CREDENTIAL_NAME), "fromcred\n").expect("write");
        let s = c
            .load_password_from(Some(dir.path()))
            .expect("ok")
            .expect("some");
        assert_eq!(s.expose(), "fromcred");
        // An explicit password_file wins over the credential.
        let p = dir.path().join("explicit");
        std::fs::write(&p, "explicit").expect("write");
        let c = with(|c| {
            c.username = Some("u".into());
            c.password_file = Some(p.clone());
        });
        let s = c
            .load_password_from(Some(dir.path()))
            .expect("ok")
            .expect("some");
        assert_eq!(s.expose(), "explicit");
    }

    #[test]
    fn password_errors_say_what_to_do() {
        let dir = tempfile::tempdir().expect("tempdir");
        let empty = dir.path().join("empty");
        std::fs::write(&empty, "\n").expect("write");
        let c = with(|c| {
            c.username = Some("u".into());
            c.password_file = Some(empty.clone());
        });
        let e = c.load_password_from(None).expect_err("empty");
        assert!(e.to_string().contains("the file is empty"), "{e}");
        let c = with(|c| {
            c.username = Some("u".into());
            c.password_file = Some(dir.path().join("missing"));
        });
        let e = c.load_password_from(None).expect_err("missing");
        assert!(
            e.to_string().contains("cannot read [mqtt].password_file"),
            "{e}"
        );
    }

    #[test]
    fn tls_material_errors_name_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "not a certificate\n").expect("write");
        let c = with(|c| {
            c.url = "mqtts://127.0.0.1".into();
            c.ca_file = Some(junk.clone());
        });
        let e = c.tls_client_config().expect_err("junk CA");
        assert!(e.to_string().contains("[mqtt].ca_file"), "{e}");
        assert!(e.to_string().contains("BEGIN CERTIFICATE"), "{e}");
        let c = with(|c| {
            c.url = "mqtts://127.0.0.1".into();
            c.ca_file = Some(dir.path().join("nope.pem"));
        });
        let e = c.tls_client_config().expect_err("missing CA");
        assert!(e.to_string().contains("cannot read [mqtt].ca_file"), "{e}");
        assert!(with(|_| {}).tls_client_config().expect("plain").is_none());
    }
}
