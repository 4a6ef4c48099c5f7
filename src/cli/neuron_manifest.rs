//! `aisle neuron-manifest`: write `manifest.json` for a model's NEFFs once they are compiled
//! (one `context_<L>.neff` per context bucket and one `token_<K>.neff` per token bucket).
//!
//! Owns: the command's flags and writing the file.
//! Must not: compile anything or load NEFFs (the `neuron` device does, and checks them).

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;

use aisle::backend::neuron::manifest::{DType, Manifest};
use aisle::runtime::LoadedModel;

/// The KV cache element types a NEFF's state may have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum KvDType {
    Float32,
    Bfloat16,
}

#[derive(Args)]
pub struct NeuronManifestArgs {
    /// The model, and the plan the NEFFs were compiled for: --max-batch (slots), --max-len
    /// (positions per slot, default the model's context) and --min-bucket.
    #[command(flatten)]
    model: super::args::ModelArgs,
    /// Folder holding the NEFFs (default: <model>/neuron); the manifest is written there.
    #[arg(long)]
    neff_dir: Option<PathBuf>,
    /// Element type of the KV cache state.
    #[arg(long, value_enum, default_value_t = KvDType::Float32)]
    kv_dtype: KvDType,
}

pub fn run(args: NeuronManifestArgs) -> Result<()> {
    let model = LoadedModel::load(&args.model.spec()?)?;
    let dir = args.neff_dir.clone().unwrap_or_else(|| model.dir.join("neuron"));
    let cfg = &model.config;
    let shape = args.model.executor_options(16, 0).static_shape;
    let plan = shape.plan(cfg)?;
    let kv = match args.kv_dtype {
        KvDType::Float32 => DType::Float32,
        KvDType::Bfloat16 => DType::Bfloat16,
    };
    let manifest = Manifest::for_neffs(&dir, cfg, plan, kv)?;
    manifest.check(&dir.join("manifest.json"), cfg)?;
    let path = dir.join("manifest.json");
    std::fs::write(&path, serde_json::to_string_pretty(&manifest)? + "\n")
        .with_context(|| format!("writing {}", path.display()))?;
    println!("wrote {} ({} graphs)", path.display(), manifest.graphs.len());
    Ok(())
}
