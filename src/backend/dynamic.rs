//! The dynamic-shape executor: any number of tokens and sequences per step, KV in a paged
//! cache. Runs the model on a candle device with the matching `KvAttention` implementation.
//!
//! Owns: the loaded `Model`, its KV cache, and turning a `Batch` into host logits.
//! Must not: decide what runs (the scheduler does) or sample.

use candle_core::Device;

use super::{new_cpu_kv, BackendError, Executor, ExecutorOptions, KvGeometry, StepOutput};
use crate::batch::Batch;
use crate::config::Config;
use crate::model::{KvAttention, Model};
use crate::weights::Weights;

pub struct ModelExecutor {
    model: Model,
    kv: Box<dyn KvAttention + Send>,
    geo: KvGeometry,
    device: Device,
}

impl ModelExecutor {
    pub fn new(weights: &Weights, cfg: &Config, opts: &ExecutorOptions, device: Device) -> Result<Self, BackendError> {
        let kv = new_cpu_kv(opts.kv_geometry(cfg), opts.dtype)?;
        Self::with_kv(weights, cfg, opts, device, kv)
    }

    /// The model on `device` with a KV cache of the caller's (`kv` must have the geometry
    /// `opts.kv_geometry(cfg)`).
    pub fn with_kv(
        weights: &Weights,
        cfg: &Config,
        opts: &ExecutorOptions,
        device: Device,
        kv: Box<dyn KvAttention + Send>,
    ) -> Result<Self, BackendError> {
        let model = Model::load(weights, cfg, opts.dtype, &device)?;
        let geo = opts.kv_geometry(cfg);
        Ok(ModelExecutor { model, kv, geo, device })
    }
}

impl Executor for ModelExecutor {
    fn execute(&mut self, batch: &Batch) -> Result<StepOutput, BackendError> {
        let cfg = self.model.config();
        batch.validate(
            cfg.vocab_size,
            cfg.max_position_embeddings,
            self.geo.block_size,
            self.geo.num_blocks,
        )?;
        let logits = self.model.forward(batch, self.kv.as_mut())?; // (rows, vocab)
        let vocab = cfg.vocab_size;
        let logits = logits.flatten_all()?.to_vec1::<f32>()?;
        Ok(StepOutput { logits, vocab })
    }

    fn kv_geometry(&self) -> KvGeometry {
        self.geo
    }

    fn config(&self) -> &Config {
        self.model.config()
    }

    fn describe(&self) -> String {
        format!("{:?} ({:?})", self.device, self.model.dtype())
    }
}
