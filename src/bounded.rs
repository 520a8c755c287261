//! Reading untrusted input files whole, with a size cap checked before anything is allocated:
//! a multi-gigabyte file named by mistake (or on purpose) is refused from its metadata, never
//! read into memory. Images and WAV clips share this; each caller turns the outcome into its
//! own error, which names the limit's configuration key.

use std::io;
use std::path::Path;

/// Why a capped read failed.
#[derive(Debug)]
pub enum CappedRead {
    /// Opening, stat-ing or reading the file failed.
    Io(io::Error),
    /// The file is larger than the cap; `bytes` is its size.
    TooLarge { bytes: u64 },
}

/// The contents of `path`, if it is at most `max_bytes` long.
pub fn read_capped(path: &Path, max_bytes: u64) -> Result<Vec<u8>, CappedRead> {
    let len = std::fs::metadata(path).map_err(CappedRead::Io)?.len();
    if len > max_bytes {
        return Err(CappedRead::TooLarge { bytes: len });
    }
    std::fs::read(path).map_err(CappedRead::Io)
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
}
