//! Microphones on a sound card, through ALSA: `kind = "alsa"`, `device = "default"`,
//! `"hw:1,0"`, `"plughw:CARD=Device,DEV=0"` or any PCM an asoundrc defines.
//!
//! ALSA's own library is loaded at run time ([`library`]: no build-time dependency, nothing
//! for the cross builds to provide), the device opened for 16-bit capture at the nearest rate
//! and channel count it offers ([`capture`]), and [`reader`] turns it into the mono chunks the
//! microphone pipeline ([`crate::source::microphone`]) resamples and segments, reopening the
//! device with backoff when it goes away (a USB microphone unplugged, a card not there yet at
//! boot). [`devices`] lists what can be captured from, for `adaptd devices`.

pub mod capture;
pub mod devices;
pub mod library;
pub mod reader;

use std::ffi::c_int;

pub use capture::Capture;
pub use devices::{capture_devices, CaptureDevice};
pub use library::{Library, LoadError};
pub use reader::AlsaReader;

/// Why an ALSA device cannot be used; each message names the device and what to do.
#[derive(Debug, thiserror::Error)]
pub enum AlsaError {
    /// libasound could not be loaded.
    #[error(transparent)]
    Library(#[from] LoadError),
    /// The name cannot be passed to ALSA.
    #[error(
        "ALSA device {0:?} contains a NUL byte; give a name such as \"default\" or \"hw:1,0\""
    )]
    BadName(String),
    /// snd_pcm_open failed: no such device, busy, no permission.
    #[error("cannot open ALSA capture device {device:?}: {why}; {hint}")]
    Open {
        device: String,
        why: String,
        hint: &'static str,
    },
    /// The device cannot deliver 16-bit samples.
    #[error(
        "ALSA device {device:?} cannot capture 16-bit samples ({why}); use its plughw: twin \
         (e.g. \"plughw:1,0\" for \"hw:1,0\"), which converts"
    )]
    NoS16 { device: String, why: String },
    /// The device refused a setting or a call.
    #[error("ALSA device {device:?}: {what} failed: {why}")]
    Call {
        device: String,
        what: &'static str,
        why: String,
    },
    /// The device accepted parameters that cannot be captured from.
    #[error("ALSA device {device:?} negotiated {rate} Hz with {channels} channels")]
    Negotiated {
        device: String,
        rate: u32,
        channels: u16,
    },
    /// A read failed in a way recovery could not fix: the device is gone.
    #[error("ALSA device {device:?} was lost: {why}")]
    Lost { device: String, why: String },
}

impl AlsaError {
    fn call(lib: &Library, device: &str, what: &'static str, rc: c_int) -> AlsaError {
        AlsaError::Call {
            device: device.to_owned(),
            what,
            why: lib.error_text(rc),
        }
    }

    fn open(lib: &Library, device: &str, rc: c_int) -> AlsaError {
        let hint = match -rc {
            libc::EBUSY => "another program is recording from it (stop it, or use a dsnoop device)",
            libc::EACCES | libc::EPERM => {
                "the user running adaptd may not use it: add it to the audio group"
            }
            _ => {
                "`adaptd devices` lists the capture devices there are (a USB microphone \
                  must be plugged in)"
            }
        };
        AlsaError::Open {
            device: device.to_owned(),
            why: lib.error_text(rc),
            hint,
        }
    }

    /// Whether trying again later can help: a device that is missing, busy or lost may come
    /// back; a missing library or a device that cannot give 16-bit samples will not.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            AlsaError::Open { .. } | AlsaError::Lost { .. } | AlsaError::Call { .. }
        )
    }
}
