//! One open ALSA capture device: negotiated S16_LE interleaved at the nearest rate and
//! channel count, read in non-blocking mode so that a stop request or a silent device is
//! noticed within [`WAIT_MS`].

use std::ffi::{c_int, c_uint, CString};
use std::ptr;

use super::library::{
    Library, RawHwParams, RawPcm, ACCESS_RW_INTERLEAVED, FORMAT_S16_LE, NONBLOCK, STREAM_CAPTURE,
};
use super::AlsaError;

/// Longest single wait for audio, ms: the granularity of stopping.
pub const WAIT_MS: c_int = 200;

/// Ring buffer asked of the device: 500 ms absorbs a busy moment of the capture thread
/// (the resampler and voice gate run on it) without an overrun.
const BUFFER_US: c_uint = 500_000;
/// Period: 50 ms, so audio arrives in small steps and a stop is seen quickly.
const PERIOD_US: c_uint = 50_000;

/// What a read gave.
#[derive(Debug, PartialEq, Eq)]
pub enum Read {
    /// This many frames were written to the front of the buffer.
    Frames(usize),
    /// Nothing within [`WAIT_MS`]; ask again.
    Nothing,
    /// The capture thread fell behind and ALSA dropped audio; the device was recovered and
    /// capture goes on.
    Overrun,
}

/// An open capture PCM. Closed on drop.
pub struct Capture {
    lib: &'static Library,
    pcm: *mut RawPcm,
    device: String,
    rate: u32,
    channels: u16,
}

// SAFETY: an ALSA PCM handle may be used from any one thread at a time; `Capture` is owned by
// the capture thread and every method takes `&mut self`.
unsafe impl Send for Capture {}

/// hw params freed on drop.
pub(super) struct HwParams<'a> {
    lib: &'a Library,
    pub(super) raw: *mut RawHwParams,
}

impl<'a> HwParams<'a> {
    pub(super) fn new(lib: &'a Library, device: &str) -> Result<HwParams<'a>, AlsaError> {
        let mut raw = ptr::null_mut();
        // SAFETY: snd_pcm_hw_params_malloc writes a fresh allocation to `raw`.
        let rc = unsafe { (lib.hw_params_malloc)(&mut raw) };
        if rc < 0 || raw.is_null() {
            return Err(AlsaError::call(
                lib,
                device,
                "allocating hardware parameters",
                rc,
            ));
        }
        Ok(HwParams { lib, raw })
    }
}

impl Drop for HwParams<'_> {
    fn drop(&mut self) {
        // SAFETY: allocated by snd_pcm_hw_params_malloc and freed once.
        unsafe { (self.lib.hw_params_free)(self.raw) }
    }
}

impl Capture {
    /// Opens `device` (`default`, `hw:1,0`, `plughw:CARD=Device,DEV=0`, a name from an
    /// asoundrc) for capture at the rate and channel count nearest to those asked: a `hw:`
    /// device that only does 48 kHz stereo gives that, and the caller resamples and mixes
    /// down. Fails when the device does not exist, is busy, or cannot give 16-bit samples
    /// (a `hw:` device with 24/32-bit only: use its `plughw:` twin, which converts).
    pub fn open(device: &str, rate: u32, channels: u16) -> Result<Capture, AlsaError> {
        let lib = Library::get()?;
        let name = CString::new(device).map_err(|_| AlsaError::BadName(device.to_owned()))?;
        let mut pcm = ptr::null_mut();
        // SAFETY: `name` is NUL-terminated; on success `pcm` is a PCM we own and close.
        let rc = unsafe { (lib.pcm_open)(&mut pcm, name.as_ptr(), STREAM_CAPTURE, NONBLOCK) };
        if rc < 0 || pcm.is_null() {
            return Err(AlsaError::open(lib, device, rc));
        }
        let mut capture = Capture {
            lib,
            pcm,
            device: device.to_owned(),
            rate,
            channels,
        };
        capture.configure(rate, channels)?;
        Ok(capture)
    }

    fn configure(&mut self, rate: u32, channels: u16) -> Result<(), AlsaError> {
        let lib = self.lib;
        let params = HwParams::new(lib, &self.device)?;
        let check = |rc: c_int, what: &'static str| -> Result<(), AlsaError> {
            if rc < 0 {
                Err(AlsaError::call(lib, &self.device, what, rc))
            } else {
                Ok(())
            }
        };
        // SAFETY (this block): `self.pcm` is open and `params.raw` allocated; the out
        // pointers are to locals that live through each call.
        unsafe {
            check(
                (lib.hw_params_any)(self.pcm, params.raw),
                "reading its capabilities",
            )?;
            check(
                (lib.hw_params_set_access)(self.pcm, params.raw, ACCESS_RW_INTERLEAVED),
                "setting interleaved access",
            )?;
            let rc = (lib.hw_params_set_format)(self.pcm, params.raw, FORMAT_S16_LE);
            if rc < 0 {
                return Err(AlsaError::NoS16 {
                    device: self.device.clone(),
                    why: lib.error_text(rc),
                });
            }
            let mut ch = c_uint::from(channels);
            check(
                (lib.hw_params_set_channels_near)(self.pcm, params.raw, &mut ch),
                "setting the channel count",
            )?;
            let mut r: c_uint = rate;
            let mut dir: c_int = 0;
            check(
                (lib.hw_params_set_rate_near)(self.pcm, params.raw, &mut r, &mut dir),
                "setting the sample rate",
            )?;
            // Buffer and period are wishes: a device that cannot meet them keeps its own.
            let mut buffer = BUFFER_US;
            let _ =
                (lib.hw_params_set_buffer_time_near)(self.pcm, params.raw, &mut buffer, &mut dir);
            let mut period = PERIOD_US;
            let _ =
                (lib.hw_params_set_period_time_near)(self.pcm, params.raw, &mut period, &mut dir);
            check(
                (lib.hw_params)(self.pcm, params.raw),
                "applying the parameters",
            )?;
            self.rate = r;
            self.channels = u16::try_from(ch).unwrap_or(u16::MAX);
            check((lib.pcm_start)(self.pcm), "starting capture")?;
        }
        if self.rate == 0 || self.channels == 0 {
            return Err(AlsaError::Negotiated {
                device: self.device.clone(),
                rate: self.rate,
                channels: self.channels,
            });
        }
        Ok(())
    }

    /// The sample rate the device gives, Hz.
    pub fn rate(&self) -> u32 {
        self.rate
    }

    /// Interleaved channels per frame.
    pub fn channels(&self) -> u16 {
        self.channels
    }

    /// The device name as opened.
    pub fn device(&self) -> &str {
        &self.device
    }

    /// Reads up to `buf.len() / channels` frames of interleaved samples into `buf`. Waits at
    /// most [`WAIT_MS`] for them. An error is a lost device (unplugged, driver gone): close
    /// this and open again later.
    pub fn read(&mut self, buf: &mut [i16]) -> Result<Read, AlsaError> {
        let lib = self.lib;
        let frames = buf.len() / usize::from(self.channels.max(1));
        if frames == 0 {
            return Ok(Read::Frames(0));
        }
        // SAFETY: the PCM is open.
        let ready = unsafe { (lib.pcm_wait)(self.pcm, WAIT_MS) };
        if ready == 0 {
            return Ok(Read::Nothing);
        }
        let rc = if ready < 0 {
            ready as std::ffi::c_long
        } else {
            // SAFETY: `buf` holds at least `frames * channels` samples of 16 bits, the
            // negotiated frame size.
            unsafe {
                (lib.pcm_readi)(
                    self.pcm,
                    buf.as_mut_ptr().cast(),
                    frames as std::ffi::c_ulong,
                )
            }
        };
        if rc >= 0 {
            return Ok(Read::Frames(usize::try_from(rc).unwrap_or(0)));
        }
        let code = c_int::try_from(rc).unwrap_or(-libc::EIO);
        if code == -libc::EAGAIN {
            return Ok(Read::Nothing);
        }
        // An overrun (EPIPE) or a suspend (ESTRPIPE) is recovered in place; anything else
        // means the device is gone.
        // SAFETY: the PCM is open; `silent = 1` keeps alsa-lib from printing to stderr.
        let recovered = unsafe { (lib.pcm_recover)(self.pcm, code, 1) };
        if recovered < 0 {
            return Err(AlsaError::Lost {
                device: self.device.clone(),
                why: lib.error_text(code),
            });
        }
        // SAFETY: the PCM is open; recovery leaves a capture stream prepared, not running.
        let started = unsafe { (lib.pcm_start)(self.pcm) };
        if started < 0 {
            return Err(AlsaError::Lost {
                device: self.device.clone(),
                why: lib.error_text(started),
            });
        }
        Ok(if code == -libc::EPIPE {
            Read::Overrun
        } else {
            Read::Nothing
        })
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        // SAFETY: opened by snd_pcm_open and closed once.
        unsafe { (self.lib.pcm_close)(self.pcm) };
    }
}

impl std::fmt::Debug for Capture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Capture")
            .field("device", &self.device)
            .field("rate", &self.rate)
            .field("channels", &self.channels)
            .finish()
    }
}
