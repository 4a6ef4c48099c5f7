//! Memory-mapped model weights, indexed by Hugging Face tensor name: safetensors (one
//! `model.safetensors` or a sharded index; see `safetensors.rs`) or one GGUF file (its
//! llama.cpp names mapped to HF names at open; see `gguf.rs`).
//!
//! Owns: the name → location index, validating every byte range against its file, and
//! turning one named tensor into a candle `Tensor` or f32 rows of the expected shape,
//! dequantizing GGUF blocks and undoing llama.cpp's q/k row permutation on the way.
//! Must not: know model structure (the model asks for names and shapes) or keep heap copies
//! of whole models.

mod dequant;
mod gguf;
mod safetensors;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use candle_core::quantized::GgmlDType;
use candle_core::{DType, Device, Tensor};
use memmap2::Mmap;

pub use gguf::{hf_name, GgufLayout};

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
    #[error("{path}: tensor `{name}` has unsupported dtype {dtype} (supported: F32, BF16, F16, and GGUF's F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K)")]
    Dtype { path: PathBuf, name: String, dtype: String },
    #[error("{path}: tensor `{name}`: {message}")]
    Tensor {
        path: PathBuf,
        name: String,
        message: String,
    },
}

/// How one tensor is stored on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskType {
    F32,
    Bf16,
    F16,
    /// A GGUF block-quantized type (Q4_0 … Q6_K).
    Ggml(GgmlDType),
    /// A safetensors dtype Aisle cannot run (reported when the tensor is asked for).
    Unsupported(::safetensors::Dtype),
}

/// "A ×3, B ×1": names with their counts, as `inspect` and the logs print them.
pub fn describe_counts<'a>(counts: impl IntoIterator<Item = (&'a String, &'a usize)>) -> String {
    let parts: Vec<String> = counts.into_iter().map(|(name, n)| format!("{name} ×{n}")).collect();
    parts.join(", ")
}

impl DiskType {
    pub fn name(self) -> String {
        match self {
            DiskType::F32 => "F32".into(),
            DiskType::Bf16 => "BF16".into(),
            DiskType::F16 => "F16".into(),
            DiskType::Ggml(t) => ggml_name(t).into(),
            DiskType::Unsupported(d) => format!("{d:?}"),
        }
    }
}

/// GGUF's spelling of a block type.
pub fn ggml_name(t: GgmlDType) -> &'static str {
    match t {
        GgmlDType::F32 => "F32",
        GgmlDType::F16 => "F16",
        GgmlDType::BF16 => "BF16",
        GgmlDType::Q4_0 => "Q4_0",
        GgmlDType::Q4_1 => "Q4_1",
        GgmlDType::Q5_0 => "Q5_0",
        GgmlDType::Q5_1 => "Q5_1",
        GgmlDType::Q8_0 => "Q8_0",
        GgmlDType::Q8_1 => "Q8_1",
        GgmlDType::Q2K => "Q2_K",
        GgmlDType::Q3K => "Q3_K",
        GgmlDType::Q4K => "Q4_K",
        GgmlDType::Q5K => "Q5_K",
        GgmlDType::Q6K => "Q6_K",
        GgmlDType::Q8K => "Q8_K",
    }
}

/// Where one tensor's bytes live.
struct Entry {
    file: usize,
    dtype: DiskType,
    shape: Vec<usize>,
    /// Byte range inside the mapped file.
    start: usize,
    end: usize,
    /// llama.cpp stores llama q/k rows interleaved per head; `Some(heads)` undoes that.
    permute_heads: Option<usize>,
}

/// All weight files of a model, mapped, with a name → location index.
pub struct Weights {
    paths: Vec<PathBuf>,
    maps: Vec<Mmap>,
    index: HashMap<String, Entry>,
}

/// Map `path` read-only.
fn map_file(path: &Path) -> Result<Mmap, WeightsError> {
    let io = |source| WeightsError::Io {
        path: path.to_path_buf(),
        source,
    };
    // Checked before opening: opening a FIFO for reading blocks until a writer appears.
    if !std::fs::metadata(path).map_err(io)?.is_file() {
        return Err(io(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a regular file",
        )));
    }
    let file = std::fs::File::open(path).map_err(io)?;
    // SAFETY: the file is opened read-only; like every mmap-based loader we rely on it not
    // being truncated by another process while the model runs.
    unsafe { Mmap::map(&file) }.map_err(io)
}

impl Weights {
    /// Open a model directory's weights: `model.safetensors`, else the sharded index.
    pub fn open_dir(dir: &Path) -> Result<Weights, WeightsError> {
        safetensors::open_dir(dir)
    }

    /// Map the given safetensors files and index their tensors.
    pub fn open_files(paths: &[PathBuf]) -> Result<Weights, WeightsError> {
        safetensors::open_files(paths)
    }

    /// Open the tensors of a GGUF file whose header `content` was read by `crate::gguf`.
    pub fn open_gguf(
        path: &Path,
        content: &candle_core::quantized::gguf_file::Content,
        layout: &GgufLayout,
    ) -> Result<Weights, WeightsError> {
        let map = map_file(path)?;
        let index = gguf::index(path, &map, content, layout)?;
        Ok(Weights {
            paths: vec![path.to_path_buf()],
            maps: vec![map],
            index,
        })
    }

    pub fn contains(&self, name: &str) -> bool {
        self.index.contains_key(name)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.index.keys().map(String::as_str)
    }

    /// Every on-disk dtype with how many tensors use it, by name.
    pub fn disk_types(&self) -> Vec<(String, usize)> {
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        for e in self.index.values() {
            *counts.entry(e.dtype.name()).or_default() += 1;
        }
        counts.into_iter().collect()
    }

    /// "F32 ×61, Q4_1 ×210, Q8_0 ×1": every on-disk type with its tensor count.
    pub fn describe_disk_types(&self) -> String {
        describe_counts(self.disk_types().iter().map(|(d, n)| (d, n)))
    }

    /// The on-disk type of tensor `name`, if present.
    pub fn disk_type(&self, name: &str) -> Option<DiskType> {
        self.index.get(name).map(|e| e.dtype)
    }

    /// Find tensor `name` and check it has `shape` and a supported dtype.
    fn locate(&self, name: &str, shape: &[usize]) -> Result<&Entry, WeightsError> {
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
        if matches!(
            entry.dtype,
            DiskType::Unsupported(_) | DiskType::Ggml(GgmlDType::Q8_1 | GgmlDType::Q8K)
        ) {
            return Err(WeightsError::Dtype {
                path: path.clone(),
                name: name.to_string(),
                dtype: entry.dtype.name(),
            });
        }
        Ok(entry)
    }

    /// Load tensor `name`, check it has `shape`, convert to `dtype` on `device`.
    pub fn get(&self, name: &str, shape: &[usize], dtype: DType, device: &Device) -> Result<Tensor, WeightsError> {
        let entry = self.locate(name, shape)?;
        let wrap = |e: candle_core::Error| self.tensor_error(entry, name, e.to_string());
        let t = match (entry.dtype, entry.permute_heads) {
            (DiskType::F32 | DiskType::Bf16 | DiskType::F16, None) => {
                let disk = match entry.dtype {
                    DiskType::Bf16 => DType::BF16,
                    DiskType::F16 => DType::F16,
                    _ => DType::F32,
                };
                Tensor::from_raw_buffer(self.bytes(entry), disk, shape, &Device::Cpu).map_err(wrap)?
            }
            _ => Tensor::from_vec(self.vec_f32(name, shape)?, shape, &Device::Cpu).map_err(wrap)?,
        };
        t.to_dtype(dtype).and_then(|t| t.to_device(device)).map_err(wrap)
    }

    /// Tensor `name` of `shape` read row by row (the last dimension is a row) as f32,
    /// straight from the mapping (block-quantized rows are dequantized one at a time).
    pub fn rows(&self, name: &str, shape: &[usize]) -> Result<Rows<'_>, WeightsError> {
        let entry = self.locate(name, shape)?;
        let cols = shape.last().copied().unwrap_or(1);
        let rows = shape.iter().product::<usize>() / cols.max(1); // 1 for a vector
        Ok(Rows {
            bytes: self.bytes(entry),
            dtype: entry.dtype,
            cols,
            row_bytes: (entry.end - entry.start) / rows.max(1),
            permute: entry.permute_heads.map(|h| (h, rows)),
        })
    }

    /// Tensor `name` of `shape` as one f32 vector (row-major).
    pub fn vec_f32(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>, WeightsError> {
        let rows = self.rows(name, shape)?;
        let mut all = vec![0f32; shape.iter().product()];
        for (r, out) in all.chunks_mut(rows.cols.max(1)).enumerate() {
            rows.read(r, out);
        }
        Ok(all)
    }

    /// Refuse weights with layers the config does not have (`model.layers.{i}.` with
    /// `i >= num_layers`): a config with fewer layers than its checkpoint would run a
    /// truncated model without a word.
    pub fn check_layers(&self, num_layers: usize) -> Result<(), WeightsError> {
        let extra = self.index.keys().find(|name| {
            name.strip_prefix("model.layers.")
                .and_then(|rest| rest.split('.').next())
                .and_then(|i| i.parse::<usize>().ok())
                .is_some_and(|i| i >= num_layers)
        });
        match extra {
            Some(name) => Err(self.invalid(
                name,
                &format!("the weights have more layers than config.json's num_hidden_layers ({num_layers})"),
            )),
            None => Ok(()),
        }
    }

    /// An error about tensor `name`'s values, naming its file.
    pub fn invalid(&self, name: &str, message: &str) -> WeightsError {
        let path = self
            .index
            .get(name)
            .map(|e| self.paths[e.file].clone())
            .unwrap_or_default();
        WeightsError::Tensor {
            path,
            name: name.to_string(),
            message: message.to_string(),
        }
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

    fn bytes(&self, e: &Entry) -> &[u8] {
        &self.maps[e.file][e.start..e.end]
    }

    fn tensor_error(&self, e: &Entry, name: &str, message: String) -> WeightsError {
        WeightsError::Tensor {
            path: self.paths[e.file].clone(),
            name: name.to_string(),
            message,
        }
    }

    fn file_list(&self) -> String {
        let names: Vec<String> = self.paths.iter().map(|p| p.display().to_string()).collect();
        names.join(", ")
    }
}

/// One tensor's rows as f32, in Hugging Face row order.
pub struct Rows<'a> {
    bytes: &'a [u8],
    dtype: DiskType,
    cols: usize,
    row_bytes: usize,
    /// (heads, rows) of a llama.cpp-permuted q/k matrix.
    permute: Option<(usize, usize)>,
}

impl<'a> Rows<'a> {
    /// The file's bytes of HF row `r`.
    fn raw_row(&self, r: usize) -> &'a [u8] {
        let r = match self.permute {
            Some((heads, rows)) => gguf::unpermuted_row(r, heads, rows),
            None => r,
        };
        &self.bytes[r * self.row_bytes..(r + 1) * self.row_bytes]
    }

    /// Row `r` as GGUF blocks (type and bytes), when the tensor is block-quantized.
    pub fn blocks(&self, r: usize) -> Option<(GgmlDType, &'a [u8])> {
        match self.dtype {
            DiskType::Ggml(t) => Some((t, self.raw_row(r))),
            _ => None,
        }
    }

    /// Row `r` into `out` (`cols` values).
    pub fn read(&self, r: usize, out: &mut [f32]) {
        let row = self.raw_row(r);
        let size = match self.dtype {
            DiskType::Ggml(t) => {
                dequant::row(t, row, out);
                return;
            }
            DiskType::F32 => 4,
            _ => 2,
        };
        for (o, b) in out.iter_mut().zip(row.chunks_exact(size)) {
            *o = match self.dtype {
                DiskType::Bf16 => half::bf16::from_le_bytes([b[0], b[1]]).to_f32(),
                DiskType::F16 => half::f16::from_le_bytes([b[0], b[1]]).to_f32(),
                _ => f32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            };
        }
    }
}
