//! The Neuron manifest (`models/<name>/neuron/manifest.json`): which compiled NEFF serves
//! each bucket, its sha256, and the exact input/output tensors (names, shapes, dtypes) the
//! executor binds.
//!
//! Owns: reading, checking and writing manifests, and `expected_io`, the one definition of a
//! graph's tensor interface (the manifest must agree with it, and a loaded NEFF with both).
//! Must not: load NEFFs onto devices (`neuron/mod.rs` does) or talk to libnrt.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::backend::static_shape::BucketPlan;
use crate::config::Config;

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("cannot read the Neuron manifest {path}: {why}. Compile the model's buckets for Neuron and write the manifest there (see the README, \"Neuron\")")]
    Read { path: PathBuf, why: String },
    #[error("Neuron manifest {path}: {why}")]
    Invalid { path: PathBuf, why: String },
}

/// Element types, spelled as in the manifest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DType {
    Float32,
    Bfloat16,
    Int32,
}

impl DType {
    pub fn size(self) -> usize {
        match self {
            DType::Float32 | DType::Int32 => 4,
            DType::Bfloat16 => 2,
        }
    }

    /// `nrt_dtype_t` of this type.
    pub fn nrt(self) -> i32 {
        match self {
            DType::Float32 => 1,
            DType::Bfloat16 => 3,
            DType::Int32 => 8,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TensorSpec {
    pub name: String,
    pub dtype: DType,
    pub shape: Vec<usize>,
}

impl TensorSpec {
    fn new(name: impl Into<String>, dtype: DType, shape: &[usize]) -> Self {
        TensorSpec {
            name: name.into(),
            dtype,
            shape: shape.to_vec(),
        }
    }

    pub fn bytes(&self) -> usize {
        self.shape.iter().product::<usize>() * self.dtype.size()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GraphKind {
    ContextEncoding,
    TokenGeneration,
}

/// One compiled bucket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GraphEntry {
    pub kind: GraphKind,
    pub bucket: usize,
    /// NEFF file, relative to the manifest's directory.
    pub neff: String,
    pub sha256: String,
    pub inputs: Vec<TensorSpec>,
    pub outputs: Vec<TensorSpec>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Manifest format version (1).
    pub format: u32,
    pub plan: BucketPlan,
    /// Element type of the KV cache state the graphs share.
    pub kv_dtype: DType,
    pub graphs: Vec<GraphEntry>,
}

/// Names of layer `l`'s KV cache state tensors, bound as both input and output of every
/// graph so that the graphs update one cache in place.
pub fn kv_names(layer: usize) -> [String; 2] {
    [format!("kv_cache.{layer}.key"), format!("kv_cache.{layer}.value")]
}

/// The tensors a graph of `kind` and `bucket` takes and returns, for a model of `cfg` under
/// `plan`. Inputs: token ids, positions, (context encoding: the slot,) the additive mask,
/// then the KV state; outputs: f32 logits, then the KV state.
pub fn expected_io(kind: GraphKind, bucket: usize, cfg: &Config, plan: &BucketPlan, kv: DType) -> [Vec<TensorSpec>; 2] {
    let (b, v) = (plan.max_batch, cfg.vocab_size);
    let mut inputs = match kind {
        GraphKind::ContextEncoding => vec![
            TensorSpec::new("input_ids", DType::Int32, &[1, bucket]),
            TensorSpec::new("position_ids", DType::Int32, &[1, bucket]),
            TensorSpec::new("slot", DType::Int32, &[1]),
            TensorSpec::new("attention_mask", DType::Float32, &[1, bucket, bucket]),
        ],
        GraphKind::TokenGeneration => vec![
            TensorSpec::new("input_ids", DType::Int32, &[b, 1]),
            TensorSpec::new("position_ids", DType::Int32, &[b, 1]),
            TensorSpec::new("attention_mask", DType::Float32, &[b, 1, bucket]),
        ],
    };
    let logits = match kind {
        GraphKind::ContextEncoding => TensorSpec::new("logits", DType::Float32, &[1, bucket, v]),
        GraphKind::TokenGeneration => TensorSpec::new("logits", DType::Float32, &[b, 1, v]),
    };
    let kv_shape = [b, cfg.num_kv_heads, plan.max_len, cfg.head_dim]; // (max_batch, kv_heads, max_len, head_dim)
    let state: Vec<TensorSpec> = (0..cfg.num_layers)
        .flat_map(kv_names)
        .map(|n| TensorSpec::new(n, kv, &kv_shape))
        .collect();
    inputs.extend(state.iter().cloned());
    let mut outputs = vec![logits];
    outputs.extend(state);
    [inputs, outputs]
}

/// Hex sha256 of a file's bytes.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

impl Manifest {
    pub fn read(path: &Path) -> Result<Manifest, ManifestError> {
        let read_err = |why: String| ManifestError::Read {
            path: path.to_path_buf(),
            why,
        };
        let text = std::fs::read_to_string(path).map_err(|e| read_err(e.to_string()))?;
        serde_json::from_str(&text).map_err(|e| ManifestError::Invalid {
            path: path.to_path_buf(),
            why: e.to_string(),
        })
    }

    /// A manifest for NEFFs `<dir>/<kind>_<bucket>.neff` already compiled for `plan`.
    pub fn for_neffs(dir: &Path, cfg: &Config, plan: BucketPlan, kv_dtype: DType) -> Result<Manifest, ManifestError> {
        let mut graphs = Vec::new();
        let kinds = [
            (GraphKind::ContextEncoding, "context", &plan.context),
            (GraphKind::TokenGeneration, "token", &plan.token),
        ];
        for (kind, stem, buckets) in kinds {
            for &bucket in buckets {
                let neff = format!("{stem}_{bucket}.neff");
                let path = dir.join(&neff);
                let bytes = std::fs::read(&path).map_err(|e| ManifestError::Read {
                    path: path.clone(),
                    why: e.to_string(),
                })?;
                let [inputs, outputs] = expected_io(kind, bucket, cfg, &plan, kv_dtype);
                graphs.push(GraphEntry {
                    kind,
                    bucket,
                    neff,
                    sha256: sha256_hex(&bytes),
                    inputs,
                    outputs,
                });
            }
        }
        Ok(Manifest {
            format: 1,
            plan,
            kv_dtype,
            graphs,
        })
    }

    /// Check the manifest against the model: a sound plan, one graph per bucket, and every
    /// graph's tensors exactly as `expected_io` says.
    pub fn check(&self, path: &Path, cfg: &Config) -> Result<(), ManifestError> {
        let bad = |why: String| ManifestError::Invalid {
            path: path.to_path_buf(),
            why,
        };
        if self.format != 1 {
            return Err(bad(format!("format {} is not supported (expected 1)", self.format)));
        }
        self.plan.check().map_err(|e| bad(e.to_string()))?;
        let kinds = [
            (GraphKind::ContextEncoding, &self.plan.context),
            (GraphKind::TokenGeneration, &self.plan.token),
        ];
        for (kind, buckets) in kinds {
            for &bucket in buckets {
                let g = self
                    .graph(kind, bucket)
                    .ok_or_else(|| bad(format!("no {kind:?} graph for bucket {bucket}")))?;
                let [inputs, outputs] = expected_io(kind, bucket, cfg, &self.plan, self.kv_dtype);
                if g.inputs != inputs || g.outputs != outputs {
                    return Err(bad(format!(
                        "{}: tensors do not match this model (expected inputs {:?} and outputs {:?})",
                        g.neff,
                        names(&inputs),
                        names(&outputs)
                    )));
                }
            }
        }
        Ok(())
    }

    pub fn graph(&self, kind: GraphKind, bucket: usize) -> Option<&GraphEntry> {
        self.graphs.iter().find(|g| g.kind == kind && g.bucket == bucket)
    }
}

fn names(specs: &[TensorSpec]) -> Vec<String> {
    specs.iter().map(|s| format!("{}{:?}", s.name, s.shape)).collect()
}
