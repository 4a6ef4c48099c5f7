//! Memory-mapped safetensors weights: one `model.safetensors` or a sharded
//! `model.safetensors.index.json`, indexed by tensor name.
//!
//! Owns: opening and mapping weight files, validating headers against file sizes, and turning
//! one named tensor into a candle `Tensor` of the expected shape in the run dtype.
//! Must not: know model structure (the model asks for names and shapes) or keep heap copies.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use memmap2::Mmap;
use safetensors::tensor::{Dtype as StDtype, SafeTensors};

/// Weight-file errors; every message names the file and, where known, the tensor.
#[derive(Debug, thiserror::Error)]
pub enum WeightsError {
    #[error("{path}: cannot open weights file: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not a valid safetensors file (truncated or corrupt?): {message}")]
    Corrupt { path: PathBuf, message: String },
    #[error("{path}: malformed sharded index: {message}")]
    BadIndex { path: PathBuf, message: String },
    #[error("missing tensor `{name}` (looked in {files})")]
    Missing { name: String, files: String },
    #[error("{path}: tensor `{name}` has shape {found:?}, expected {expected:?}")]
    Shape {
        path: PathBuf,
        name: String,
        expected: Vec<usize>,
        found: Vec<usize>,
    },
    #[error("{path}: tensor `{name}` has unsupported dtype {dtype} (supported: F32, BF16, F16)")]
    Dtype { path: PathBuf, name: String, dtype: String },
    #[error("{path}: tensor `{name}`: {message}")]
    Tensor {
        path: PathBuf,
        name: String,
        message: String,
    },
}

/// Where one tensor's bytes live.
struct Entry {
    file: usize,
    dtype: StDtype,
    shape: Vec<usize>,
    /// Byte range inside the mapped file (already offset past the header).
    start: usize,
    end: usize,
}

/// All weight files of a model, mapped, with a name → location index.
pub struct Weights {
    paths: Vec<PathBuf>,
    maps: Vec<Mmap>,
    index: HashMap<String, Entry>,
}

impl Weights {
    /// Open a model directory's weights: `model.safetensors`, else the sharded index.
    pub fn open_dir(dir: &Path) -> Result<Weights, WeightsError> {
        let single = dir.join("model.safetensors");
        if single.exists() {
            return Weights::open_files(&[single]);
        }
        let index = dir.join("model.safetensors.index.json");
        if index.exists() {
            return Weights::open_index(&index);
        }
        Err(WeightsError::Io {
            path: single,
            source: std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "neither model.safetensors nor model.safetensors.index.json exists",
            ),
        })
    }

    /// Open the shards named by a `model.safetensors.index.json` `weight_map`.
    pub fn open_index(index: &Path) -> Result<Weights, WeightsError> {
        let bad = |message: String| WeightsError::BadIndex {
            path: index.to_path_buf(),
            message,
        };
        let text = std::fs::read_to_string(index).map_err(|source| WeightsError::Io {
            path: index.to_path_buf(),
            source,
        })?;
        let json: serde_json::Value = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
        let map = json
            .get("weight_map")
            .and_then(|m| m.as_object())
            .ok_or_else(|| bad("no `weight_map` object".into()))?;
        let mut files: Vec<String> = Vec::new();
        for v in map.values() {
            let f = v
                .as_str()
                .ok_or_else(|| bad("weight_map values must be file names".into()))?;
            if !files.iter().any(|x| x == f) {
                files.push(f.to_string());
            }
        }
        files.sort();
        let dir = index.parent().unwrap_or(Path::new("."));
        let paths: Vec<PathBuf> = files.iter().map(|f| dir.join(f)).collect();
        Weights::open_files(&paths)
    }

    /// Map the given safetensors files and index their tensors.
    pub fn open_files(paths: &[PathBuf]) -> Result<Weights, WeightsError> {
        let mut maps = Vec::with_capacity(paths.len());
        let mut index = HashMap::new();
        for (file_idx, path) in paths.iter().enumerate() {
            let io = |source| WeightsError::Io {
                path: path.clone(),
                source,
            };
            let file = File::open(path).map_err(io)?;
            // SAFETY: the file is opened read-only; like every mmap-based loader we rely on
            // it not being truncated by another process while the model runs.
            let mmap = unsafe { Mmap::map(&file) }.map_err(io)?;
            index_file(path, &mmap, file_idx, &mut index)?;
            maps.push(mmap);
        }
        Ok(Weights {
            paths: paths.to_vec(),
            maps,
            index,
        })
    }

    pub fn contains(&self, name: &str) -> bool {
        self.index.contains_key(name)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.index.keys().map(String::as_str)
    }

    /// The on-disk dtype most tensors use (for `inspect`).
    pub fn disk_dtype(&self) -> Option<String> {
        let mut counts: HashMap<String, usize> = HashMap::new();
        for e in self.index.values() {
            *counts.entry(format!("{:?}", e.dtype)).or_default() += 1;
        }
        counts.into_iter().max_by_key(|(_, c)| *c).map(|(d, _)| d)
    }

    /// Find tensor `name`, check it has `shape` and a supported dtype.
    fn locate(&self, name: &str, shape: &[usize]) -> Result<(&Entry, DType), WeightsError> {
        let entry = self.index.get(name).ok_or_else(|| WeightsError::Missing {
            name: name.to_string(),
            files: self.file_list(),
        })?;
        let path = &self.paths[entry.file];
        if entry.shape != shape {
            return Err(WeightsError::Shape {
                path: path.clone(),
                name: name.to_string(),
                expected: shape.to_vec(),
                found: entry.shape.clone(),
            });
        }
        let disk = match entry.dtype {
            StDtype::F32 => DType::F32,
            StDtype::BF16 => DType::BF16,
            StDtype::F16 => DType::F16,
            other => {
                return Err(WeightsError::Dtype {
                    path: path.clone(),
                    name: name.to_string(),
                    dtype: format!("{other:?}"),
                })
            }
        };
        Ok((entry, disk))
    }

    /// Load tensor `name`, check it has `shape`, convert to `dtype` on `device`.
    pub fn get(&self, name: &str, shape: &[usize], dtype: DType, device: &Device) -> Result<Tensor, WeightsError> {
        let (entry, disk) = self.locate(name, shape)?;
        let bytes = &self.maps[entry.file][entry.start..entry.end];
        let wrap = |e: candle_core::Error| WeightsError::Tensor {
            path: self.paths[entry.file].clone(),
            name: name.to_string(),
            message: e.to_string(),
        };
        let t = Tensor::from_raw_buffer(bytes, disk, shape, &Device::Cpu).map_err(wrap)?;
        t.to_dtype(dtype).and_then(|t| t.to_device(device)).map_err(wrap)
    }

    /// Tensor `name` of `shape` read row by row (the last dimension is a row) as f32,
    /// straight from the mapping: no copy of the whole tensor is made.
    pub fn rows(&self, name: &str, shape: &[usize]) -> Result<Rows<'_>, WeightsError> {
        let (entry, dtype) = self.locate(name, shape)?;
        Ok(Rows {
            bytes: &self.maps[entry.file][entry.start..entry.end],
            dtype,
            cols: shape.last().copied().unwrap_or(1),
        })
    }

    /// Let the OS take back the pages of tensor `name` that reading it made resident (once
    /// it has been converted): the file stays mapped, and a later read faults them back in.
    pub fn release(&self, name: &str) {
        #[cfg(unix)]
        if let Some(e) = self.index.get(name) {
            // SAFETY: the mapping is a read-only view of a file we do not write; dropping its
            // pages only makes the next access read them from the file again.
            let _ = unsafe {
                self.maps[e.file].unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, e.start, e.end - e.start)
            };
        }
    }

    fn file_list(&self) -> String {
        let names: Vec<String> = self.paths.iter().map(|p| p.display().to_string()).collect();
        names.join(", ")
    }
}

/// One tensor's rows, converted to f32 on demand.
pub struct Rows<'a> {
    bytes: &'a [u8],
    dtype: DType,
    cols: usize,
}

impl Rows<'_> {
    /// Row `r` into `out` (`cols` values).
    pub fn read(&self, r: usize, out: &mut [f32]) {
        let size = self.dtype.size_in_bytes();
        let row = &self.bytes[r * self.cols * size..(r + 1) * self.cols * size];
        for (o, b) in out.iter_mut().zip(row.chunks_exact(size)) {
            *o = match self.dtype {
                DType::BF16 => half::bf16::from_le_bytes([b[0], b[1]]).to_f32(),
                DType::F16 => half::f16::from_le_bytes([b[0], b[1]]).to_f32(),
                _ => f32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            };
        }
    }
}

/// Parse one file's header and add its tensors to `index`, checking every byte range lies
/// inside the file (a truncated download fails here, not at the first forward pass).
fn index_file(path: &Path, mmap: &[u8], file: usize, index: &mut HashMap<String, Entry>) -> Result<(), WeightsError> {
    let corrupt = |message: String| WeightsError::Corrupt {
        path: path.to_path_buf(),
        message,
    };
    let (header_len, meta) = SafeTensors::read_metadata(mmap).map_err(|e| corrupt(e.to_string()))?;
    let data_start = 8 + header_len;
    let data_len = mmap.len().saturating_sub(data_start);
    for (name, info) in meta.tensors() {
        let (start, end) = info.data_offsets;
        if end > data_len || start > end {
            return Err(corrupt(format!(
                "tensor `{name}` needs bytes {start}..{end} of the data section but the file has only {data_len} (file truncated?)"
            )));
        }
        let elems: usize = info.shape.iter().product();
        let expected = elems * info.dtype.bitsize() / 8;
        if end - start != expected {
            return Err(corrupt(format!(
                "tensor `{name}` has {} bytes but shape {:?} of {:?} needs {expected}",
                end - start,
                info.shape,
                info.dtype
            )));
        }
        index.insert(
            name.clone(),
            Entry {
                file,
                dtype: info.dtype,
                shape: info.shape.clone(),
                start: data_start + start,
                end: data_start + end,
            },
        );
    }
    Ok(())
}
