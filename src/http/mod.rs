//! The parts of the web server that know nothing of the daemon: `[http]` ([`config`]), who may
//! use it ([`auth`]) and the page itself ([`assets`], embedded in the binary). The routes, which
//! read the daemon's state, are `daemon::web`.

pub mod assets;
pub mod auth;
pub mod config;

pub use config::HttpConfig;
