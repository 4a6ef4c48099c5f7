//! NEFF graphs on NeuronCores (feature `neuron`): the `StaticGraphs` of a Neuron model.
//!
//! Owns: loading a model's buckets from its manifest (sha256-checked NEFFs, whose tensors
//! must match the manifest), the device KV state shared by every graph (bound as input and
//! output, so each call updates it in place), and moving each call's inputs and logits.
//! Must not: pick buckets or slots (`static_shape` does) or build masks.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use super::manifest::{self, GraphEntry, GraphKind, Manifest, ManifestError, TensorSpec};
use super::nrt::{self, Model, NrtError, Runtime, Tensor, TensorSet};

use crate::backend::static_shape::{BucketPlan, ContextInputs, StaticGraphs, TokenInputs};
use crate::backend::BackendError;
use crate::config::Config;

#[derive(Debug, thiserror::Error)]
pub enum NeuronError {
    #[error(transparent)]
    Nrt(#[from] NrtError),
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error("NEFF {path}: {why}")]
    Neff { path: PathBuf, why: String },
}

/// Where the model's compiled graphs are and how to place them.
#[derive(Debug, Clone)]
pub struct NeuronOptions {
    pub manifest: PathBuf,
    /// libnrt locations to try, in order (`nrt::candidate_paths()` by default).
    pub libnrt: Vec<PathBuf>,
    /// First NeuronCore (-1: the runtime picks) and how many (-1: as compiled).
    pub start_nc: i32,
    pub nc_count: i32,
}

/// One loaded bucket with its bound tensors. Field order is drop order: the sets go before
/// the tensors they name, and the model before the runtime its handle belongs to.
struct Graph {
    inputs: TensorSet,
    outputs: TensorSet,
    model: Model,
    io: HashMap<String, Tensor>, // this graph's own tensors (not the KV state)
}

pub struct NeuronGraphs {
    graphs: HashMap<(GraphKind, usize), Graph>,
    kv: HashMap<String, Tensor>, // (max_batch, kv_heads, max_len, head_dim) each
    plan: BucketPlan,
    cfg: Config,
    slot_bytes: usize,
    rt: Arc<Runtime>,
}

fn bytes_of_u32(v: &[u32]) -> Vec<u8> {
    v.iter().flat_map(|&x| (x as i32).to_le_bytes()).collect()
}

fn bytes_of_f32(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Check the loaded NEFF declares exactly the manifest's tensors.
fn check_tensors(path: &std::path::Path, model: &Model, g: &GraphEntry) -> Result<(), NeuronError> {
    let bad = |why: String| NeuronError::Neff {
        path: path.to_path_buf(),
        why,
    };
    let infos = model.tensor_info()?;
    let expected: Vec<(&TensorSpec, i32)> = (g.inputs.iter().map(|s| (s, nrt::USAGE_INPUT)))
        .chain(g.outputs.iter().map(|s| (s, nrt::USAGE_OUTPUT)))
        .collect();
    if infos.len() != expected.len() {
        return Err(bad(format!(
            "declares {} tensors, the manifest {}",
            infos.len(),
            expected.len()
        )));
    }
    for (spec, usage) in expected {
        let info = infos
            .iter()
            .find(|i| i.name == spec.name && i.usage == usage)
            .ok_or_else(|| bad(format!("has no tensor `{}`", spec.name)))?;
        let shape: Vec<usize> = info.shape.iter().map(|&d| d as usize).collect();
        if shape != spec.shape || info.dtype != spec.dtype.nrt() || info.size != spec.bytes() {
            return Err(bad(format!(
                "tensor `{}` is {:?} of nrt dtype {} ({} bytes); the manifest says {:?} {:?}",
                spec.name, shape, info.dtype, info.size, spec.shape, spec.dtype
            )));
        }
    }
    Ok(())
}

impl NeuronGraphs {
    pub fn load(cfg: &Config, opts: &NeuronOptions) -> Result<NeuronGraphs, NeuronError> {
        let rt = Runtime::open(&opts.libnrt)?;
        let manifest = Manifest::read(&opts.manifest)?;
        manifest.check(&opts.manifest, cfg)?;
        let plan = manifest.plan.clone();
        let mut kv = HashMap::new();
        let [inputs, _] =
            manifest::expected_io(GraphKind::TokenGeneration, plan.max_len, cfg, &plan, manifest.kv_dtype);
        for spec in inputs.iter().filter(|s| s.name.starts_with("kv_cache.")) {
            let t = Tensor::allocate(&rt, opts.start_nc.max(0), spec.bytes(), &spec.name)?;
            t.write(&vec![0u8; spec.bytes()], 0)?;
            kv.insert(spec.name.clone(), t);
        }
        let slot_bytes = cfg.num_kv_heads * plan.max_len * cfg.head_dim * manifest.kv_dtype.size();
        let mut graphs = HashMap::new();
        let dir = opts.manifest.parent().map(PathBuf::from).unwrap_or_default();
        for g in &manifest.graphs {
            let graph = Self::load_graph(&rt, &dir.join(&g.neff), g, &kv, opts)?;
            graphs.insert((g.kind, g.bucket), graph);
        }
        Ok(NeuronGraphs {
            graphs,
            kv,
            plan,
            cfg: cfg.clone(),
            slot_bytes,
            rt,
        })
    }

    /// Load one NEFF (after its sha256 check) and bind its tensors.
    fn load_graph(
        rt: &Arc<Runtime>,
        path: &std::path::Path,
        g: &GraphEntry,
        kv: &HashMap<String, Tensor>,
        opts: &NeuronOptions,
    ) -> Result<Graph, NeuronError> {
        let neff_err = |why: String| NeuronError::Neff {
            path: path.to_path_buf(),
            why,
        };
        let bytes = std::fs::read(path).map_err(|e| neff_err(format!("cannot read: {e}")))?;
        let sum = manifest::sha256_hex(&bytes);
        if sum != g.sha256 {
            return Err(neff_err(format!("sha256 is {sum}, the manifest says {}", g.sha256)));
        }
        let model = Model::load(rt, &bytes, opts.start_nc, opts.nc_count)?;
        check_tensors(path, &model, g)?;
        let mut io = HashMap::new();
        for spec in g.inputs.iter().chain(&g.outputs).filter(|s| !kv.contains_key(&s.name)) {
            io.insert(
                spec.name.clone(),
                Tensor::allocate(rt, opts.start_nc.max(0), spec.bytes(), &spec.name)?,
            );
        }
        let (mut inputs, mut outputs) = (TensorSet::new(rt)?, TensorSet::new(rt)?);
        for (set, specs) in [(&mut inputs, &g.inputs), (&mut outputs, &g.outputs)] {
            for s in specs {
                set.add(
                    &s.name,
                    kv.get(&s.name).or_else(|| io.get(&s.name)).expect("allocated above"),
                )?;
            }
        }
        Ok(Graph {
            inputs,
            outputs,
            model,
            io,
        })
    }

    /// Write `inputs` into graph (kind, bucket)'s tensors, run it, read its logits.
    fn call(&self, kind: GraphKind, bucket: usize, inputs: &[(&str, Vec<u8>)]) -> Result<Vec<f32>, NeuronError> {
        let missing = |what: String| NrtError::Invalid(format!("no {what} for the {kind:?} graph of bucket {bucket}"));
        let g = self.graphs.get(&(kind, bucket)).ok_or_else(|| missing("NEFF".into()))?;
        let tensor = |name: &str| g.io.get(name).ok_or_else(|| missing(format!("tensor `{name}`")));
        for (name, bytes) in inputs {
            tensor(name)?.write(bytes, 0)?;
        }
        g.model.execute(&g.inputs, &g.outputs)?;
        let logits = tensor("logits")?;
        let mut buf = vec![0u8; logits.size()];
        logits.read(&mut buf, 0)?;
        Ok(buf
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect())
    }

    pub fn library(&self) -> &str {
        self.rt.path()
    }
}

impl StaticGraphs for NeuronGraphs {
    fn plan(&self) -> &BucketPlan {
        &self.plan
    }

    fn config(&self) -> &Config {
        &self.cfg
    }

    fn reset_slot(&mut self, slot: usize) -> Result<(), BackendError> {
        let zeros = vec![0u8; self.slot_bytes];
        for t in self.kv.values() {
            t.write(&zeros, slot * self.slot_bytes).map_err(NeuronError::from)?;
        }
        Ok(())
    }

    fn run_context(&mut self, inp: &ContextInputs) -> Result<Vec<f32>, BackendError> {
        let inputs = [
            ("input_ids", bytes_of_u32(&inp.input_ids)),
            ("position_ids", bytes_of_u32(&inp.position_ids)),
            ("slot", bytes_of_u32(&[inp.slot as u32])),
            ("attention_mask", bytes_of_f32(&inp.mask)),
        ];
        Ok(self.call(GraphKind::ContextEncoding, inp.bucket(), &inputs)?)
    }

    fn run_token(&mut self, inp: &TokenInputs) -> Result<Vec<f32>, BackendError> {
        let inputs = [
            ("input_ids", bytes_of_u32(&inp.input_ids)),
            ("position_ids", bytes_of_u32(&inp.position_ids)),
            ("attention_mask", bytes_of_f32(&inp.mask)),
        ];
        Ok(self.call(GraphKind::TokenGeneration, inp.bucket, &inputs)?)
    }

    fn describe(&self) -> String {
        format!("neuron (libnrt {})", self.rt.path())
    }
}
