//! ALSA's `libasound.so.2`, loaded at run time: the table of the C functions adaptd calls.
//!
//! Why not link it: the binary then needs neither `libasound2-dev` at build time nor the
//! armhf/arm64 variants of it in every cross build (the `--glibc 2.27` zig build and the musl
//! build have no such sysroot at all), and a board without ALSA still runs its cameras; only a
//! microphone asks for the library, with what to install. onnxruntime is loaded the same way.
//!
//! The table is looked up once per process ([`Library::get`]); every function is resolved at
//! that moment, so a library too old for one of them fails at load with the symbol's name,
//! never later in the middle of a capture.

use std::ffi::{c_char, c_int, c_long, c_uint, c_ulong, c_void, CStr};
use std::sync::OnceLock;

/// The file names tried, newest ABI first (the only one since 2003).
const NAMES: [&str; 1] = ["libasound.so.2"];

/// `snd_pcm_stream_t`: `SND_PCM_STREAM_CAPTURE`.
pub const STREAM_CAPTURE: c_int = 1;
/// `snd_pcm_open` mode: `SND_PCM_NONBLOCK` (open and reads never block; `snd_pcm_wait`
/// waits with a timeout, so a stop request is seen within one).
pub const NONBLOCK: c_int = 1;
/// `snd_pcm_access_t`: `SND_PCM_ACCESS_RW_INTERLEAVED`.
pub const ACCESS_RW_INTERLEAVED: c_int = 3;
/// `snd_pcm_format_t`: `SND_PCM_FORMAT_S16_LE`.
pub const FORMAT_S16_LE: c_int = 2;

/// `snd_pcm_t`, opaque.
#[repr(C)]
pub struct RawPcm {
    _private: [u8; 0],
}

/// `snd_pcm_hw_params_t`, opaque.
#[repr(C)]
pub struct RawHwParams {
    _private: [u8; 0],
}

/// The ALSA functions adaptd uses, with their C signatures (alsa-lib's `pcm.h`, `control.h`).
#[allow(missing_docs)]
pub struct Library {
    pub pcm_open: unsafe extern "C" fn(*mut *mut RawPcm, *const c_char, c_int, c_int) -> c_int,
    pub pcm_close: unsafe extern "C" fn(*mut RawPcm) -> c_int,
    pub pcm_start: unsafe extern "C" fn(*mut RawPcm) -> c_int,
    pub pcm_wait: unsafe extern "C" fn(*mut RawPcm, c_int) -> c_int,
    pub pcm_readi: unsafe extern "C" fn(*mut RawPcm, *mut c_void, c_ulong) -> c_long,
    pub pcm_recover: unsafe extern "C" fn(*mut RawPcm, c_int, c_int) -> c_int,
    pub hw_params_malloc: unsafe extern "C" fn(*mut *mut RawHwParams) -> c_int,
    pub hw_params_free: unsafe extern "C" fn(*mut RawHwParams),
    pub hw_params_any: unsafe extern "C" fn(*mut RawPcm, *mut RawHwParams) -> c_int,
    pub hw_params_set_access: unsafe extern "C" fn(*mut RawPcm, *mut RawHwParams, c_int) -> c_int,
    pub hw_params_set_format: unsafe extern "C" fn(*mut RawPcm, *mut RawHwParams, c_int) -> c_int,
    pub hw_params_test_format: unsafe extern "C" fn(*mut RawPcm, *mut RawHwParams, c_int) -> c_int,
    pub hw_params_set_channels_near:
        unsafe extern "C" fn(*mut RawPcm, *mut RawHwParams, *mut c_uint) -> c_int,
    pub hw_params_set_rate_near:
        unsafe extern "C" fn(*mut RawPcm, *mut RawHwParams, *mut c_uint, *mut c_int) -> c_int,
    pub hw_params_set_buffer_time_near:
        unsafe extern "C" fn(*mut RawPcm, *mut RawHwParams, *mut c_uint, *mut c_int) -> c_int,
    pub hw_params_set_period_time_near:
        unsafe extern "C" fn(*mut RawPcm, *mut RawHwParams, *mut c_uint, *mut c_int) -> c_int,
    pub hw_params_get_channels_min: unsafe extern "C" fn(*const RawHwParams, *mut c_uint) -> c_int,
    pub hw_params_get_channels_max: unsafe extern "C" fn(*const RawHwParams, *mut c_uint) -> c_int,
    pub hw_params_get_rate_min:
        unsafe extern "C" fn(*const RawHwParams, *mut c_uint, *mut c_int) -> c_int,
    pub hw_params_get_rate_max:
        unsafe extern "C" fn(*const RawHwParams, *mut c_uint, *mut c_int) -> c_int,
    pub hw_params: unsafe extern "C" fn(*mut RawPcm, *mut RawHwParams) -> c_int,
    pub strerror: unsafe extern "C" fn(c_int) -> *const c_char,
    pub device_name_hint:
        unsafe extern "C" fn(c_int, *const c_char, *mut *mut *mut c_void) -> c_int,
    pub device_name_get_hint: unsafe extern "C" fn(*const c_void, *const c_char) -> *mut c_char,
    pub device_name_free_hint: unsafe extern "C" fn(*mut *mut c_void) -> c_int,
    pub version: unsafe extern "C" fn() -> *const c_char,
    /// Keeps the code behind the pointers above mapped; never used otherwise.
    _library: libloading::Library,
}

/// Why libasound could not be loaded; the text says what to install.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LoadError {
    /// No file of that name on the library path.
    #[error(
        "cannot load ALSA's library libasound.so.2 ({0}); install it (Debian, Raspberry Pi OS, \
         Ubuntu: apt-get install libasound2) to use microphones"
    )]
    Missing(String),
    /// The library lacks a function adaptd needs.
    #[error(
        "ALSA's library {file} has no {symbol} ({why}); it is older than alsa-lib 1.0.16 or \
         not ALSA's: install the distribution's libasound2"
    )]
    Symbol {
        file: &'static str,
        symbol: &'static str,
        why: String,
    },
}

/// A function pointer out of `lib`, named by its C symbol.
macro_rules! sym {
    ($lib:expr, $file:expr, $name:literal) => {{
        // SAFETY: the type the caller's field gives is alsa-lib's documented prototype of
        // `$name`; the pointer is only called while `_library` keeps the code mapped.
        let s = unsafe { $lib.get(concat!($name, "\0").as_bytes()) };
        match s {
            Ok(s) => *s,
            Err(e) => {
                return Err(LoadError::Symbol {
                    file: $file,
                    symbol: $name,
                    why: e.to_string(),
                })
            }
        }
    }};
}

impl Library {
    /// The process's one copy of the table, loaded at the first call.
    pub fn get() -> Result<&'static Library, LoadError> {
        static LOADED: OnceLock<Result<Library, LoadError>> = OnceLock::new();
        LOADED
            .get_or_init(Library::load)
            .as_ref()
            .map_err(Clone::clone)
    }

    fn load() -> Result<Library, LoadError> {
        let mut last = String::from("not found");
        for file in NAMES {
            // SAFETY: loading libasound runs its ELF constructors, which only initialise
            // alsa-lib's own globals; it is the library every ALSA program loads.
            match unsafe { libloading::Library::new(file) } {
                Ok(lib) => return Library::resolve(lib, file),
                Err(e) => last = e.to_string(),
            }
        }
        Err(LoadError::Missing(last))
    }

    fn resolve(lib: libloading::Library, file: &'static str) -> Result<Library, LoadError> {
        Ok(Library {
            pcm_open: sym!(lib, file, "snd_pcm_open"),
            pcm_close: sym!(lib, file, "snd_pcm_close"),
            pcm_start: sym!(lib, file, "snd_pcm_start"),
            pcm_wait: sym!(lib, file, "snd_pcm_wait"),
            pcm_readi: sym!(lib, file, "snd_pcm_readi"),
            pcm_recover: sym!(lib, file, "snd_pcm_recover"),
            hw_params_malloc: sym!(lib, file, "snd_pcm_hw_params_malloc"),
            hw_params_free: sym!(lib, file, "snd_pcm_hw_params_free"),
            hw_params_any: sym!(lib, file, "snd_pcm_hw_params_any"),
            hw_params_set_access: sym!(lib, file, "snd_pcm_hw_params_set_access"),
            hw_params_set_format: sym!(lib, file, "snd_pcm_hw_params_set_format"),
            hw_params_test_format: sym!(lib, file, "snd_pcm_hw_params_test_format"),
            hw_params_set_channels_near: sym!(lib, file, "snd_pcm_hw_params_set_channels_near"),
            hw_params_set_rate_near: sym!(lib, file, "snd_pcm_hw_params_set_rate_near"),
            hw_params_set_buffer_time_near: sym!(
                lib,
                file,
                "snd_pcm_hw_params_set_buffer_time_near"
            ),
            hw_params_set_period_time_near: sym!(
                lib,
                file,
                "snd_pcm_hw_params_set_period_time_near"
            ),
            hw_params_get_channels_min: sym!(lib, file, "snd_pcm_hw_params_get_channels_min"),
            hw_params_get_channels_max: sym!(lib, file, "snd_pcm_hw_params_get_channels_max"),
            hw_params_get_rate_min: sym!(lib, file, "snd_pcm_hw_params_get_rate_min"),
            hw_params_get_rate_max: sym!(lib, file, "snd_pcm_hw_params_get_rate_max"),
            hw_params: sym!(lib, file, "snd_pcm_hw_params"),
            strerror: sym!(lib, file, "snd_strerror"),
            device_name_hint: sym!(lib, file, "snd_device_name_hint"),
            device_name_get_hint: sym!(lib, file, "snd_device_name_get_hint"),
            device_name_free_hint: sym!(lib, file, "snd_device_name_free_hint"),
            version: sym!(lib, file, "snd_asoundlib_version"),
            _library: lib,
        })
    }

    /// ALSA's words for a negative return code (`snd_strerror`).
    pub fn error_text(&self, code: c_int) -> String {
        // SAFETY: snd_strerror returns a pointer to a static string for any code.
        let p = unsafe { (self.strerror)(code) };
        if p.is_null() {
            return format!("error {code}");
        }
        // SAFETY: non-null, NUL-terminated, static.
        unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
    }

    /// alsa-lib's version, e.g. `1.2.8`.
    pub fn version_text(&self) -> String {
        // SAFETY: returns a pointer to a static version string.
        let p = unsafe { (self.version)() };
        if p.is_null() {
            return "unknown".into();
        }
        // SAFETY: non-null, NUL-terminated, static.
        unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
    }
}

/// The library for a test, or `None` (the test then returns, saying why) where it is not
/// installed: under qemu for another architecture there is no libasound of that
/// architecture. `ADAPTD_REQUIRE_ALSA=1` (CI's host run, .ci/run) makes its absence a failure.
#[cfg(test)]
pub(crate) fn for_tests() -> Option<&'static Library> {
    match Library::get() {
        Ok(lib) => Some(lib),
        Err(e) if std::env::var_os("ADAPTD_REQUIRE_ALSA").is_some_and(|v| v == "1") => {
            panic!("ADAPTD_REQUIRE_ALSA=1 but {e}")
        }
        Err(e) => {
            eprintln!("skipped: {e}");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_library_loads_and_knows_its_errors() {
        let Some(lib) = for_tests() else { return };
        assert!(
            lib.version_text().starts_with("1."),
            "{}",
            lib.version_text()
        );
        assert_eq!(lib.error_text(-libc::ENOENT), "No such file or directory");
        // Loaded once: the same table twice.
        let again = Library::get().expect("loaded");
        assert!(std::ptr::eq(lib, again));
    }
}
