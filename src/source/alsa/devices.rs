//! The capture devices ALSA knows (`arecord -L`'s list) and what each hardware device can
//! give, for `adaptd devices`: what to write as a microphone's `device`.

use std::ffi::{c_char, c_int, c_uint, c_void, CStr, CString};
use std::ptr;

use serde::Serialize;

use super::capture::HwParams;
use super::library::{Library, RawPcm, NONBLOCK, STREAM_CAPTURE};
use super::AlsaError;

/// One device name usable as `device = "..."`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CaptureDevice {
    /// What to put in the config, e.g. `default`, `plughw:CARD=Device,DEV=0`.
    pub name: String,
    /// ALSA's description, one line (the card and device names).
    pub description: String,
    /// What the device can give, for `hw:` devices (the others convert to anything); `None`
    /// with `busy` when another program holds it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub capabilities: Option<Capabilities>,
    /// Why the capabilities could not be read (busy, permission).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub probe_error: Option<String>,
}

/// The ranges a hardware device accepts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Capabilities {
    pub formats: Vec<&'static str>,
    pub rate_min: u32,
    pub rate_max: u32,
    pub channels_min: u32,
    pub channels_max: u32,
}

/// Sample formats worth naming: (ALSA's `snd_pcm_format_t`, its name).
const FORMATS: [(c_int, &str); 5] = [
    (2, "S16_LE"),
    (6, "S24_LE"),
    (10, "S32_LE"),
    (14, "FLOAT_LE"),
    (32, "S24_3LE"),
];

/// Capture-capable PCM names from ALSA's hints, in ALSA's order, with capabilities for the
/// `hw:` ones.
pub fn capture_devices() -> Result<Vec<CaptureDevice>, AlsaError> {
    let lib = Library::get()?;
    let mut out = Vec::new();
    for (name, description) in hints(lib)? {
        let (capabilities, probe_error) = if name.starts_with("hw:") {
            match probe(lib, &name) {
                Ok(c) => (Some(c), None),
                Err(e) => (None, Some(e.to_string())),
            }
        } else {
            (None, None)
        };
        out.push(CaptureDevice {
            name,
            description,
            capabilities,
            probe_error,
        });
    }
    Ok(out)
}

/// (NAME, DESC) of every PCM hint whose IOID is capture or both.
fn hints(lib: &Library) -> Result<Vec<(String, String)>, AlsaError> {
    let mut list: *mut *mut c_void = ptr::null_mut();
    // SAFETY: -1 = every card; "pcm" is NUL-terminated; `list` receives an array we free below.
    let rc = unsafe { (lib.device_name_hint)(-1, c"pcm".as_ptr(), &mut list) };
    if rc < 0 || list.is_null() {
        return Err(AlsaError::call(lib, "(all cards)", "listing devices", rc));
    }
    let mut out = Vec::new();
    let mut i = 0usize;
    loop {
        // SAFETY: the array is NULL-terminated; `i` stops at the terminator.
        let hint = unsafe { *list.add(i) };
        if hint.is_null() {
            break;
        }
        i += 1;
        let name = take(lib, hint, c"NAME");
        let desc = take(lib, hint, c"DESC");
        let ioid = take(lib, hint, c"IOID");
        let Some(name) = name else { continue };
        if ioid.as_deref().is_some_and(|io| io != "Input") {
            continue;
        }
        let description = desc
            .unwrap_or_default()
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        out.push((name, description));
    }
    // SAFETY: `list` came from snd_device_name_hint and is freed once.
    unsafe { (lib.device_name_free_hint)(list) };
    Ok(out)
}

/// One field of a hint, as an owned string (ALSA hands out a malloc'ed copy).
fn take(lib: &Library, hint: *const c_void, id: &CStr) -> Option<String> {
    // SAFETY: `hint` is an element of a live hint array; `id` is NUL-terminated.
    let p: *mut c_char = unsafe { (lib.device_name_get_hint)(hint, id.as_ptr()) };
    if p.is_null() {
        return None;
    }
    // SAFETY: non-null, NUL-terminated, allocated with malloc by alsa-lib: ours to free.
    let s = unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned();
    // SAFETY: as above; freed once.
    unsafe { libc::free(p.cast()) };
    Some(s)
}

/// Opens `device` without starting it and reads the ranges it accepts.
pub fn probe(lib: &Library, device: &str) -> Result<Capabilities, AlsaError> {
    let name = CString::new(device).map_err(|_| AlsaError::BadName(device.to_owned()))?;
    let mut pcm: *mut RawPcm = ptr::null_mut();
    // SAFETY: as in Capture::open; closed at the end of this function.
    let rc = unsafe { (lib.pcm_open)(&mut pcm, name.as_ptr(), STREAM_CAPTURE, NONBLOCK) };
    if rc < 0 || pcm.is_null() {
        return Err(AlsaError::open(lib, device, rc));
    }
    let result = (|| {
        let params = HwParams::new(lib, device)?;
        // SAFETY: the PCM is open and the params allocated; out pointers are locals.
        unsafe {
            let rc = (lib.hw_params_any)(pcm, params.raw);
            if rc < 0 {
                return Err(AlsaError::call(lib, device, "reading its capabilities", rc));
            }
            let formats = FORMATS
                .iter()
                .filter(|(f, _)| (lib.hw_params_test_format)(pcm, params.raw, *f) == 0)
                .map(|(_, n)| *n)
                .collect();
            let (mut rmin, mut rmax, mut cmin, mut cmax): (c_uint, c_uint, c_uint, c_uint) =
                (0, 0, 0, 0);
            let mut dir = 0;
            (lib.hw_params_get_rate_min)(params.raw, &mut rmin, &mut dir);
            (lib.hw_params_get_rate_max)(params.raw, &mut rmax, &mut dir);
            (lib.hw_params_get_channels_min)(params.raw, &mut cmin);
            (lib.hw_params_get_channels_max)(params.raw, &mut cmax);
            Ok(Capabilities {
                formats,
                rate_min: rmin,
                rate_max: rmax,
                channels_min: cmin,
                channels_max: cmax,
            })
        }
    })();
    // SAFETY: opened above, closed once.
    unsafe { (lib.pcm_close)(pcm) };
    result
}
