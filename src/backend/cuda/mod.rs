//! The CUDA backend (`--device cuda[:N]`, Cargo feature `cuda`): the model's forward pass on
//! candle's CUDA device, with the paged KV cache and attention ours (`kernels/*.cu`, compiled
//! to PTX by `build.rs`): `write_kv_f32` stores a step's K/V at its slots, and
//! `paged_attention_f32` attends every token through its sequence's block table.
//!
//! Owns: the device KV cache (f32, per layer `(num_blocks, kv_heads, block_size, head_dim)`),
//! the per-step metadata uploaded once in `prepare`, and the kernel launches.
//! Must not: gather K/V into contiguous copies, or run on a hot path without a step prepared.

use candle_core::cuda_backend::cudarc::driver::{CudaSlice, CudaView, LaunchConfig, PushKernelArg};
use candle_core::cuda_backend::{CudaDevice, CudaStorage, WrapErr};
use candle_core::op::BackpropOp;
use candle_core::{bail, DType, Device, Storage, Tensor};

use super::{BackendError, ExecutorOptions, KvGeometry, ModelExecutor};
use crate::batch::Batch;
use crate::config::Config;
use crate::model::KvAttention;
use crate::weights::Weights;

const KV_PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/kv_cache.ptx"));
const ATTN_PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/paged_attention.ptx"));
/// Threads per block of both kernels (and the attention's tile of positions).
const THREADS: u32 = 128;
/// `MAX_DIMS_PER_THREAD` in paged_attention.cu.
const MAX_DIMS_PER_THREAD: usize = 8;

/// One step's metadata on the device.
struct Step {
    tokens: usize,
    max_blocks: usize,
    slots: CudaSlice<u32>,     // (tokens)
    positions: CudaSlice<u32>, // (tokens)
    token_seq: CudaSlice<u32>, // (tokens)
    tables: CudaSlice<u32>,    // (seqs, max_blocks)
}

pub struct CudaKv {
    dev: CudaDevice,
    geo: KvGeometry,
    k: Vec<CudaSlice<f32>>, // per layer: (num_blocks, kv_heads, block_size, head_dim)
    v: Vec<CudaSlice<f32>>, // per layer: (num_blocks, kv_heads, block_size, head_dim)
    step: Option<Step>,
}

/// Run `f` on a contiguous f32 CUDA tensor's elements.
fn with_view<R>(t: &Tensor, f: impl FnOnce(CudaView<'_, f32>) -> candle_core::Result<R>) -> candle_core::Result<R> {
    let t = t.to_dtype(DType::F32)?.contiguous()?;
    let (storage, layout) = t.storage_and_layout();
    let Storage::Cuda(cs) = &*storage else {
        bail!("CUDA paged attention got a tensor on another device")
    };
    let Some((a, b)) = layout.contiguous_offsets() else {
        bail!("CUDA paged attention needs contiguous tensors")
    };
    f(cs.as_cuda_slice::<f32>()?.slice(a..b))
}

impl CudaKv {
    pub fn new(device: &Device, geo: KvGeometry) -> candle_core::Result<CudaKv> {
        let dev = device.as_cuda_device()?.clone();
        let n = geo.layer_elems();
        let alloc = || {
            (0..geo.num_layers)
                .map(|_| dev.alloc_zeros::<f32>(n))
                .collect::<candle_core::Result<Vec<_>>>()
        };
        let (k, v) = (alloc()?, alloc()?);
        Ok(CudaKv {
            dev,
            geo,
            k,
            v,
            step: None,
        })
    }

    /// `write_kv_f32` for one layer. k, v: (tokens, kv_heads, head_dim)
    fn write(&mut self, layer: usize, k: &Tensor, v: &Tensor) -> candle_core::Result<()> {
        let Some(step) = &self.step else {
            bail!("CUDA attention before prepare")
        };
        let g = self.geo;
        let func = self
            .dev
            .get_or_load_custom_func("write_kv_f32", "aisle_kv_cache", KV_PTX)?;
        let (kc, vc) = (&mut self.k[layer], &mut self.v[layer]);
        with_view(k, |k| {
            with_view(v, |v| {
                let mut b = func.builder();
                b.arg(kc).arg(vc).arg(&k).arg(&v).arg(&step.slots);
                let (kvh, hd, bs) = (g.num_kv_heads as i32, g.head_dim as i32, g.block_size as i32);
                b.arg(&kvh).arg(&hd).arg(&bs);
                let cfg = LaunchConfig {
                    grid_dim: (step.tokens as u32, 1, 1),
                    block_dim: (THREADS, 1, 1),
                    shared_mem_bytes: 0,
                };
                // SAFETY: argument types and count match write_kv_f32; every index is in
                // range because `Batch::validate` checked the slots against the geometry.
                unsafe { b.launch(cfg) }.w()?;
                Ok(())
            })
        })
    }

    /// `paged_attention_f32` for one layer. q: (tokens, heads, head_dim) → (tokens, heads, head_dim)
    fn attention(&self, layer: usize, q: &Tensor, window: Option<usize>) -> candle_core::Result<CudaSlice<f32>> {
        let Some(step) = &self.step else {
            bail!("CUDA attention before prepare")
        };
        let g = self.geo;
        let (t, heads, hd) = q.dims3()?;
        let func = self
            .dev
            .get_or_load_custom_func("paged_attention_f32", "aisle_paged_attention", ATTN_PTX)?;
        // SAFETY: every element is written by the kernel before it is read.
        let mut out = unsafe { self.dev.alloc::<f32>(t * heads * hd) }?;
        with_view(q, |q| {
            let mut b = func.builder();
            b.arg(&mut out).arg(&q).arg(&self.k[layer]).arg(&self.v[layer]);
            b.arg(&step.tables).arg(&step.positions).arg(&step.token_seq);
            let ints = [
                heads,
                g.num_kv_heads,
                hd,
                g.block_size,
                step.max_blocks,
                window.unwrap_or(0),
            ]
            .map(|x| x as i32);
            for x in &ints {
                b.arg(x);
            }
            let scale = 1.0 / (hd as f32).sqrt();
            b.arg(&scale);
            let cfg = LaunchConfig {
                grid_dim: (t as u32, heads as u32, 1),
                block_dim: (THREADS, 1, 1),
                shared_mem_bytes: ((hd + THREADS as usize + 32) * 4) as u32,
            };
            // SAFETY: argument types and count match paged_attention_f32; block tables and
            // positions were validated against the cache geometry.
            unsafe { b.launch(cfg) }.w()?;
            Ok(())
        })?;
        Ok(out)
    }
}

impl KvAttention for CudaKv {
    fn prepare(&mut self, batch: &Batch) -> candle_core::Result<()> {
        let (mut slots, mut seq) = (Vec::new(), Vec::new());
        batch.fill_slots(self.geo.block_size, &mut slots, &mut seq);
        let slots: Vec<u32> = slots.iter().map(|&s| s as u32).collect();
        let max_blocks = batch.seqs.iter().map(|s| s.block_table.len()).max().unwrap_or(0).max(1);
        let mut tables = vec![0u32; batch.seqs.len() * max_blocks];
        for (row, s) in tables.chunks_mut(max_blocks).zip(&batch.seqs) {
            row[..s.block_table.len()].copy_from_slice(&s.block_table);
        }
        self.step = Some(Step {
            tokens: slots.len(),
            max_blocks,
            slots: self.dev.clone_htod(&slots)?,
            positions: self.dev.clone_htod(&batch.positions)?,
            token_seq: self.dev.clone_htod(&seq)?,
            tables: self.dev.clone_htod(&tables)?,
        });
        Ok(())
    }

    fn attend(
        &mut self,
        layer: usize,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        window: Option<usize>,
    ) -> candle_core::Result<Tensor> {
        let (t, heads, hd) = q.dims3()?; // (tokens, heads, head_dim)
        if hd != self.geo.head_dim || hd > THREADS as usize * MAX_DIMS_PER_THREAD {
            bail!(
                "head_dim {hd} does not fit the cache ({}) or the kernel",
                self.geo.head_dim
            )
        }
        self.write(layer, k, v)?;
        let out = self.attention(layer, q, window)?;
        let storage = Storage::Cuda(CudaStorage::wrap_cuda_slice(out, self.dev.clone()));
        let out = Tensor::from_storage(storage, (t, heads * hd), BackpropOp::none(), false);
        out.to_dtype(q.dtype())
    }
}

/// The CUDA executor: the candle model on GPU `ordinal` with our paged KV cache.
pub fn create(
    weights: &Weights,
    cfg: &Config,
    opts: &ExecutorOptions,
    ordinal: usize,
) -> Result<ModelExecutor, BackendError> {
    let device = Device::new_cuda(ordinal)?;
    let kv = CudaKv::new(&device, opts.kv_geometry(cfg))?;
    ModelExecutor::with_kv(weights, cfg, opts, device, Box::new(kv))
}
