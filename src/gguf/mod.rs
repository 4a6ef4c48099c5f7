//! GGUF files (llama.cpp's single-file format): the header read with candle's maintained
//! `gguf_file` reader, the metadata turned into Aisle's `Config`, tokenizer and chat template.
//!
//! Owns: opening a `.gguf` safely (regular file, header counts checked, duplicate keys and
//! tensor names refused, alignment 0 refused before candle's reader divides by it, any other
//! reader panic turned into an error) and typed metadata access.
//! Must not: read tensor data (`weights` maps and validates it) or run anything.

pub mod config;
pub mod tokenizer;

use std::io::Cursor;
use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file::{Content, Value};

/// Errors in a GGUF file; each names the file and the key or tensor concerned.
#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    #[error("{path}: cannot read: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not a valid GGUF file: {message}")]
    Corrupt { path: PathBuf, message: String },
    #[error("{path}: metadata `{key}`: {message}")]
    Metadata {
        path: PathBuf,
        key: String,
        message: String,
    },
    #[error("{path}: {message}")]
    Unsupported { path: PathBuf, message: String },
}

/// A parsed GGUF header: metadata and tensor directory (tensor data stays on disk).
pub struct GgufFile {
    pub path: PathBuf,
    pub content: Content,
}

/// The first `n` little-endian counts after the magic and version (tensors, metadata).
fn header_counts(bytes: &[u8]) -> Option<(u64, u64)> {
    let version = u32::from_le_bytes(bytes.get(4..8)?.try_into().ok()?);
    let word = |at: usize, wide: bool| -> Option<u64> {
        match wide {
            true => Some(u64::from_le_bytes(bytes.get(at..at + 8)?.try_into().ok()?)),
            false => Some(u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?) as u64),
        }
    };
    match version {
        1 => Some((word(8, false)?, word(12, false)?)),
        _ => Some((word(8, true)?, word(16, true)?)),
    }
}

/// Whether the file sets `general.alignment` to an integer 0, which candle's reader divides
/// by (a panic). Found by its encoding (length-prefixed key, integer type id 0–5, value) so
/// that such a file is refused before candle reads it; any later match counts too, since the
/// reader keeps the last of duplicate keys.
fn zero_alignment(bytes: &[u8], wide_lengths: bool) -> bool {
    const KEY: &[u8] = b"general.alignment";
    let at = |i: usize, n: usize| bytes.get(i..i + n);
    memchr::memmem::find_iter(bytes, KEY).any(|k| {
        let len_ok = match wide_lengths {
            true => k >= 8 && at(k - 8, 8) == Some(&(KEY.len() as u64).to_le_bytes()[..]),
            false => k >= 4 && at(k - 4, 4) == Some(&(KEY.len() as u32).to_le_bytes()[..]),
        };
        let ty = at(k + KEY.len(), 4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
        let width = match ty {
            Some(0 | 1) => 1,
            Some(2 | 3) => 2,
            Some(4 | 5) => 4,
            _ => return false,
        };
        let value = at(k + KEY.len() + 4, width);
        len_ok && value.is_some_and(|v| v.iter().all(|&b| b == 0))
    })
}

impl GgufFile {
    /// Read and check the header of `path`.
    pub fn open(path: &Path) -> Result<GgufFile, GgufError> {
        let io = |source| GgufError::Io {
            path: path.to_path_buf(),
            source,
        };
        let corrupt = |message: String| GgufError::Corrupt {
            path: path.to_path_buf(),
            message,
        };
        // Checked before opening: opening a FIFO for reading blocks until a writer appears.
        if !std::fs::metadata(path).map_err(io)?.is_file() {
            return Err(corrupt("not a regular file".into()));
        }
        let file = std::fs::File::open(path).map_err(io)?;
        // SAFETY: read-only mapping of a file we do not write (see `weights::map_file`).
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io)?;
        let version = map.get(4..8).map(|v| u32::from_le_bytes([v[0], v[1], v[2], v[3]]));
        if zero_alignment(&map, version != Some(1)) {
            return Err(corrupt("`general.alignment` is 0".into()));
        }
        let mut cursor = Cursor::new(&map[..]);
        // candle's reader bounds every length by the file size; the one value known to make
        // it panic (alignment 0) is refused above. Any other panic is a corrupt file too.
        let read = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| Content::read(&mut cursor)));
        let content = match read {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => return Err(corrupt(e.to_string())),
            Err(_) => {
                return Err(corrupt(
                    "the header could not be parsed (bad alignment or sizes)".into(),
                ))
            }
        };
        let (tensors, keys) = header_counts(&map).ok_or_else(|| corrupt("header too short".into()))?;
        if content.tensor_infos.len() as u64 != tensors {
            return Err(corrupt(format!(
                "{tensors} tensors declared but only {} distinct names (duplicate tensor names)",
                content.tensor_infos.len()
            )));
        }
        if content.metadata.len() as u64 != keys {
            return Err(corrupt(format!(
                "{keys} metadata keys declared but only {} distinct (duplicate keys)",
                content.metadata.len()
            )));
        }
        Ok(GgufFile {
            path: path.to_path_buf(),
            content,
        })
    }

    fn meta_err(&self, key: &str, message: String) -> GgufError {
        GgufError::Metadata {
            path: self.path.clone(),
            key: key.to_string(),
            message,
        }
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.content.metadata.get(key)
    }

    /// An unsigned integer of any width (negative values are errors).
    pub fn uint(&self, key: &str) -> Result<Option<u64>, GgufError> {
        let Some(v) = self.get(key) else { return Ok(None) };
        as_u64(v)
            .map(Some)
            .ok_or_else(|| self.meta_err(key, format!("expected a non-negative integer, found {v:?}")))
    }

    /// A number of any type as f64.
    pub fn float(&self, key: &str) -> Result<Option<f64>, GgufError> {
        let Some(v) = self.get(key) else { return Ok(None) };
        let f = match v {
            Value::F32(x) => Some(*x as f64),
            Value::F64(x) => Some(*x),
            v => as_u64(v).map(|x| x as f64),
        };
        f.map(Some)
            .ok_or_else(|| self.meta_err(key, format!("expected a number, found {v:?}")))
    }

    pub fn string(&self, key: &str) -> Result<Option<&str>, GgufError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(v) => Err(self.meta_err(key, format!("expected a string, found {}", kind(v)))),
        }
    }

    pub fn boolean(&self, key: &str) -> Result<Option<bool>, GgufError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(v) => Err(self.meta_err(key, format!("expected a bool, found {}", kind(v)))),
        }
    }

    /// An array, each element converted by `f` (`None`: wrong element type).
    pub fn array<T>(&self, key: &str, f: impl Fn(&Value) -> Option<T>) -> Result<Option<Vec<T>>, GgufError> {
        let Some(v) = self.get(key) else { return Ok(None) };
        let Value::Array(items) = v else {
            return Err(self.meta_err(key, format!("expected an array, found {}", kind(v))));
        };
        items
            .iter()
            .enumerate()
            .map(|(i, x)| {
                f(x).ok_or_else(|| self.meta_err(key, format!("element {i} has the wrong type ({})", kind(x))))
            })
            .collect::<Result<Vec<T>, _>>()
            .map(Some)
    }

    /// A required key.
    pub fn require<T>(&self, key: &str, v: Result<Option<T>, GgufError>) -> Result<T, GgufError> {
        v?.ok_or_else(|| self.meta_err(key, "missing".into()))
    }
}

pub fn as_u64(v: &Value) -> Option<u64> {
    match *v {
        Value::U8(x) => Some(x as u64),
        Value::U16(x) => Some(x as u64),
        Value::U32(x) => Some(x as u64),
        Value::U64(x) => Some(x),
        Value::I8(x) => u64::try_from(x).ok(),
        Value::I16(x) => u64::try_from(x).ok(),
        Value::I32(x) => u64::try_from(x).ok(),
        Value::I64(x) => u64::try_from(x).ok(),
        _ => None,
    }
}

pub fn as_i64(v: &Value) -> Option<i64> {
    match *v {
        Value::I8(x) => Some(x as i64),
        Value::I16(x) => Some(x as i64),
        Value::I32(x) => Some(x as i64),
        Value::I64(x) => Some(x),
        ref v => as_u64(v).and_then(|x| i64::try_from(x).ok()),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Bool(_) => "a bool",
        Value::F32(_) | Value::F64(_) => "a float",
        _ => "an integer",
    }
}

/// The one `.gguf` file a directory holds (`Ok(None)`: none; two or more are an error).
pub fn find_in_dir(dir: &Path) -> Result<Option<PathBuf>, GgufError> {
    let entries = std::fs::read_dir(dir).map_err(|source| GgufError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut found: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x.eq_ignore_ascii_case("gguf")))
        .collect();
    found.sort();
    match found.len() {
        0 => Ok(None),
        1 => Ok(found.pop()),
        _ => Err(GgufError::Unsupported {
            path: dir.to_path_buf(),
            message: format!(
                "holds {} .gguf files ({}); name one with --model DIR/FILE.gguf",
                found.len(),
                found
                    .iter()
                    .filter_map(|p| p.file_name()?.to_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::zero_alignment;

    /// One metadata entry as GGUF writes it: key length (u32 in v1, u64 after), key, type, value.
    fn entry(wide: bool, ty: u32, value: &[u8]) -> Vec<u8> {
        let key = b"general.alignment";
        let mut b = vec![7u8; 24]; // header bytes before the entry
        match wide {
            true => b.extend((key.len() as u64).to_le_bytes()),
            false => b.extend((key.len() as u32).to_le_bytes()),
        }
        b.extend(key);
        b.extend(ty.to_le_bytes());
        b.extend(value);
        b
    }

    #[test]
    fn zero_alignment_is_found_in_every_integer_type_and_version() {
        for wide in [false, true] {
            assert!(zero_alignment(&entry(wide, 4, &[0; 4]), wide), "u32 0");
            assert!(zero_alignment(&entry(wide, 1, &[0]), wide), "i8 0");
            assert!(zero_alignment(&entry(wide, 3, &[0; 2]), wide), "i16 0");
            assert!(!zero_alignment(&entry(wide, 4, &[32, 0, 0, 0]), wide), "u32 32");
            assert!(
                !zero_alignment(&entry(wide, 6, &[0; 4]), wide),
                "f32: candle ignores it"
            );
            assert!(!zero_alignment(&entry(wide, 4, &[0; 2]), wide), "truncated value");
        }
        assert!(!zero_alignment(&entry(false, 4, &[0; 4]), true), "v1 length read as v3");
    }
}
