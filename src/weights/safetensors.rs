//! safetensors files: one `model.safetensors` or the shards a `model.safetensors.index.json`
//! names, each header validated against its file.
//!
//! Owns: reading headers into the shared index. Must not: convert tensors (`mod.rs` does).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use safetensors::tensor::{Dtype as StDtype, SafeTensors};

use super::{map_file, DiskType, Entry, Weights, WeightsError};

/// `model.safetensors`, else the sharded index.
pub fn open_dir(dir: &Path) -> Result<Weights, WeightsError> {
    let single = dir.join("model.safetensors");
    if single.exists() {
        return open_files(&[single]);
    }
    let index = dir.join("model.safetensors.index.json");
    if index.exists() {
        return open_index(&index);
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
fn open_index(index: &Path) -> Result<Weights, WeightsError> {
    let bad = |message: String| WeightsError::BadIndex {
        path: index.to_path_buf(),
        message,
    };
    let text = crate::model_dir::read_text(index).map_err(|source| WeightsError::Io {
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
        let inside = Path::new(f)
            .components()
            .all(|c| matches!(c, std::path::Component::Normal(_)));
        if !inside {
            return Err(bad(format!(
                "shard `{f}` is not a file name inside the model directory"
            )));
        }
        if !files.iter().any(|x| x == f) {
            files.push(f.to_string());
        }
    }
    files.sort();
    let dir = index.parent().unwrap_or(Path::new("."));
    let paths: Vec<PathBuf> = files.iter().map(|f| dir.join(f)).collect();
    open_files(&paths)
}

/// Map the given safetensors files and index their tensors.
pub fn open_files(paths: &[PathBuf]) -> Result<Weights, WeightsError> {
    let mut maps = Vec::with_capacity(paths.len());
    let mut index = HashMap::new();
    for (file_idx, path) in paths.iter().enumerate() {
        let mmap = map_file(path)?;
        index_file(path, &mmap, file_idx, &mut index)?;
        maps.push(mmap);
    }
    Ok(Weights {
        paths: paths.to_vec(),
        maps,
        index,
    })
}

fn disk_type(d: StDtype) -> DiskType {
    match d {
        StDtype::F32 => DiskType::F32,
        StDtype::BF16 => DiskType::Bf16,
        StDtype::F16 => DiskType::F16,
        other => DiskType::Unsupported(other),
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
        let bits = info
            .shape
            .iter()
            .try_fold(info.dtype.bitsize(), |n, &d| n.checked_mul(d));
        let expected = bits.map_or(usize::MAX, |b| b / 8);
        if end - start != expected {
            return Err(corrupt(format!(
                "tensor `{name}` has {} bytes but shape {:?} of {:?} needs {expected}",
                end - start,
                info.shape,
                info.dtype
            )));
        }
        let earlier = index.insert(
            name.clone(),
            Entry {
                file,
                dtype: disk_type(info.dtype),
                shape: info.shape.clone(),
                start: data_start + start,
                end: data_start + end,
                permute_heads: None,
            },
        );
        if earlier.is_some() {
            return Err(corrupt(format!(
                "tensor `{name}` is also in an earlier shard; a name must be unique"
            )));
        }
    }
    Ok(())
}
