//! NumPy `.npy` files (format version 1.0) of little-endian f32 matrices.
//!
//! `.npy` is what the Python ML ecosystem reads without thinking (`numpy.load`), so embeddings
//! written here go straight into scikit-learn, notebooks or another tool. Only the case adaptd
//! needs is implemented: C-order `<f4` arrays.

use std::io::{self, Read, Write};
use std::path::Path;

/// Errors reading an `.npy` file.
#[derive(Debug, thiserror::Error)]
pub enum NpyError {
    #[error("{path}: {source}")]
    Io { path: String, source: io::Error },
    #[error("{path}: not a float32 C-order .npy file: {problem}")]
    Format { path: String, problem: String },
}

/// Serialises `data` with `shape` as `.npy` bytes.
pub fn to_bytes(shape: &[usize], data: &[f32]) -> Vec<u8> {
    let dims = match shape {
        [one] => format!("({one},)"),
        _ => format!(
            "({})",
            shape
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {dims}, }}");
    // Magic (6) + version (2) + length (2) + header + '\n' is padded to a multiple of 64.
    let unpadded = 10 + header.len() + 1;
    header.push_str(&" ".repeat((64 - unpadded % 64) % 64));
    header.push('\n');
    let mut out = Vec::with_capacity(10 + header.len() + data.len() * 4);
    out.extend_from_slice(b"\x93NUMPY\x01\x00");
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    for v in data {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

/// Writes an `.npy` file atomically (a reader never sees half a file).
pub fn write(path: &Path, shape: &[usize], data: &[f32]) -> io::Result<()> {
    crate::durable::write_atomic(path, &to_bytes(shape, data))
}

/// Reads a float32 `.npy` file: (shape, data).
pub fn read(path: &Path) -> Result<(Vec<usize>, Vec<f32>), NpyError> {
    let name = path.display().to_string();
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .map_err(|source| NpyError::Io {
            path: name.clone(),
            source,
        })?;
    parse(&bytes, &name)
}

/// Parses `.npy` bytes; `name` names the file in errors.
fn parse(bytes: &[u8], name: &str) -> Result<(Vec<usize>, Vec<f32>), NpyError> {
    let bad = |problem: String| NpyError::Format {
        path: name.to_owned(),
        problem,
    };
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err(bad("missing the \\x93NUMPY magic".into()));
    }
    let (header_len, start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 if bytes.len() >= 12 => (
            u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
            12,
        ),
        v => return Err(bad(format!("unsupported version {v}"))),
    };
    let header = bytes
        .get(start..start + header_len)
        .and_then(|h| std::str::from_utf8(h).ok())
        .ok_or_else(|| bad("truncated header".into()))?;
    if !header.contains("'descr': '<f4'") || !header.contains("'fortran_order': False") {
        return Err(bad(format!("header {header:?} is not '<f4' C order")));
    }
    let shape_text = header
        .split("'shape': (")
        .nth(1)
        .and_then(|s| s.split(')').next())
        .ok_or_else(|| bad("no shape in header".into()))?;
    let shape = shape_text
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<usize>()
                .map_err(|e| bad(format!("bad dimension {s:?}: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let body = &bytes[start + header_len..];
    let count: usize = shape.iter().product();
    if body.len() != count * 4 {
        return Err(bad(format!(
            "{} data bytes for shape {shape:?} ({} expected)",
            body.len(),
            count * 4
        )));
    }
    let data = body
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    Ok((shape, data))
}

/// Writes into any writer (stdout).
pub fn write_to(mut w: impl Write, shape: &[usize], data: &[f32]) -> io::Result<()> {
    w.write_all(&to_bytes(shape, data))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_header_alignment() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("e.npy");
        write(&p, &[2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, -6.5]).unwrap();
        let bytes = std::fs::read(&p).unwrap();
        let header_len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
        assert_eq!((10 + header_len) % 64, 0);
        let (shape, data) = read(&p).unwrap();
        assert_eq!(shape, vec![2, 3]);
        assert_eq!(data[5], -6.5);
    }

    #[test]
    fn rejects_garbage() {
        assert!(parse(b"hello", "x.npy").is_err());
        let mut b = to_bytes(&[4], &[1.0; 4]);
        b.truncate(b.len() - 1);
        let e = parse(&b, "x.npy").unwrap_err().to_string();
        assert!(e.contains("x.npy") && e.contains("data bytes"), "{e}");
    }
}
