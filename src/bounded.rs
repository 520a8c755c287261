//! Reading untrusted input files whole, with a size cap: a multi-gigabyte file named by
//! mistake (or on purpose) is refused from its metadata, never read into memory, and a file
//! whose metadata cannot tell (a FIFO, `/dev/zero`, a file still growing) is read at most one
//! byte past the cap. Images and WAV clips share this; each caller's error type says, through
//! [`CappedReadError`], how it names the two failures (its message names the limit's key).

use std::io::{self, Read};
use std::path::Path;

/// Why a capped read failed.
#[derive(Debug)]
pub enum CappedRead {
    /// Opening, stat-ing or reading the file failed.
    Io(io::Error),
    /// The file is larger than the cap; `bytes` is its size (or, for a file of unknown size,
    /// the bytes read when the cap was passed).
    TooLarge { bytes: u64 },
}

/// An error type that can report a failed capped read of the file called `name`.
pub trait CappedReadError: Sized {
    /// The file could not be opened or read.
    fn io(name: String, source: io::Error) -> Self;
    /// The file has `bytes` bytes, over the cap of `max`.
    fn too_large(name: String, bytes: u64, max: u64) -> Self;
}

/// The contents of `path`, if it is at most `max_bytes` long.
pub fn read_capped(path: &Path, max_bytes: u64) -> Result<Vec<u8>, CappedRead> {
    let file = std::fs::File::open(path).map_err(CappedRead::Io)?;
    let len = file.metadata().map_err(CappedRead::Io)?.len();
    if len > max_bytes {
        return Err(CappedRead::TooLarge { bytes: len });
    }
    // The metadata's length is only a hint (0 for a FIFO or a device, stale for a growing
    // file): the read itself stops one byte past the cap.
    let mut bytes = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
    file.take(max_bytes.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(CappedRead::Io)?;
    if bytes.len() as u64 > max_bytes {
        return Err(CappedRead::TooLarge {
            bytes: bytes.len() as u64,
        });
    }
    Ok(bytes)
}

/// [`read_capped`], with the failure in the caller's error type, naming the file by its path.
pub fn read_capped_as<E: CappedReadError>(path: &Path, max_bytes: u64) -> Result<Vec<u8>, E> {
    read_capped(path, max_bytes).map_err(|e| {
        let name = path.display().to_string();
        match e {
            CappedRead::Io(source) => E::io(name, source),
            CappedRead::TooLarge { bytes } => E::too_large(name, bytes, max_bytes),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_is_checked_before_reading() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("f");
        std::fs::write(&p, [7u8; 10]).expect("write");
        assert_eq!(read_capped(&p, 10).expect("at the cap"), vec![7u8; 10]);
        assert!(matches!(
            read_capped(&p, 9),
            Err(CappedRead::TooLarge { bytes: 10 })
        ));
        assert!(matches!(
            read_capped(&dir.path().join("missing"), 10),
            Err(CappedRead::Io(_))
        ));
    }

    #[test]
    fn a_file_of_unknown_size_is_read_only_up_to_the_cap() {
        // /dev/zero reports length 0 and never ends: without the bounded read this would
        // exhaust memory.
        let zero = Path::new("/dev/zero");
        if zero.exists() {
            assert!(matches!(
                read_capped(zero, 1000),
                Err(CappedRead::TooLarge { bytes: 1001 })
            ));
        }
    }

    #[derive(Debug, PartialEq)]
    enum Named {
        Io(String),
        Big(String, u64, u64),
    }

    impl CappedReadError for Named {
        fn io(name: String, _: io::Error) -> Self {
            Named::Io(name)
        }
        fn too_large(name: String, bytes: u64, max: u64) -> Self {
            Named::Big(name, bytes, max)
        }
    }

    #[test]
    fn failures_arrive_in_the_callers_type_with_the_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("f");
        std::fs::write(&p, [1u8; 5]).expect("write");
        let name = p.display().to_string();
        assert_eq!(
            read_capped_as::<Named>(&p, 4),
            Err(Named::Big(name.clone(), 5, 4))
        );
        let missing = dir.path().join("nope");
        assert_eq!(
            read_capped_as::<Named>(&missing, 4),
            Err(Named::Io(missing.display().to_string()))
        );
        assert_eq!(read_capped_as::<Named>(&p, 5), Ok(vec![1u8; 5]));
    }
}
