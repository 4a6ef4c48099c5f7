//! Single-sequence generation straight on an executor: prefill the prompt, then decode one
//! token per step until a stop id or the token limit.
//!
//! Owns: the simplest correct driver of the `Executor` seam (used by `aisle generate` and the
//! golden tests). Must not: batch several requests or manage a shared block pool; that is the
//! engine's job.

use std::time::{Duration, Instant};

use crate::backend::{BackendError, Executor};
use crate::batch::{Batch, LogitsWanted};
use crate::sampling::{Sampler, SamplingParams};

/// Why generation ended (OpenAI's `finish_reason` values).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    Stop,
    Length,
}

impl FinishReason {
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
        }
    }
}

#[derive(Debug, Clone)]
pub struct GenerateRequest {
    pub prompt: Vec<u32>,
    pub max_tokens: usize,
    pub sampling: SamplingParams,
    pub stop_ids: Vec<u32>,
}

#[derive(Debug, Clone)]
pub struct GenerateOutput {
    pub tokens: Vec<u32>,
    pub finish: FinishReason,
    pub prefill_time: Duration,
    pub decode_time: Duration,
    /// Forward passes after the prefill (each one decode step).
    pub decode_steps: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    #[error("empty prompt")]
    EmptyPrompt,
    #[error("prompt has {prompt} tokens but the model's context is {context}")]
    PromptTooLong { prompt: usize, context: usize },
    #[error("prompt plus {max_tokens} new tokens needs {needed} KV blocks but the cache has {available}")]
    CacheTooSmall {
        max_tokens: usize,
        needed: usize,
        available: usize,
    },
    #[error(transparent)]
    Backend(#[from] BackendError),
}

/// Generate for one prompt using KV blocks `0..n`. `on_token` sees each new token as it is
/// chosen; stop ids end generation and are not passed to `on_token` nor returned.
pub fn generate(
    exec: &mut dyn Executor,
    req: &GenerateRequest,
    mut on_token: impl FnMut(u32),
) -> Result<GenerateOutput, GenerateError> {
    let context = exec.config().max_position_embeddings;
    let geo = exec.kv_geometry();
    let n = req.prompt.len();
    if n == 0 {
        return Err(GenerateError::EmptyPrompt);
    }
    if n >= context {
        return Err(GenerateError::PromptTooLong { prompt: n, context });
    }
    let max_tokens = req.max_tokens.min(context - n);
    let needed = (n + max_tokens).div_ceil(geo.block_size);
    if needed > geo.num_blocks {
        return Err(GenerateError::CacheTooSmall {
            max_tokens,
            needed,
            available: geo.num_blocks,
        });
    }
    let table: Vec<u32> = (0..needed as u32).collect();
    let mut sampler = Sampler::new(req.sampling.clone());
    let mut tokens = Vec::new();
    let start = Instant::now();
    let mut batch = Batch::default();
    batch.push(&req.prompt, 0, table.clone(), LogitsWanted::Last);
    let mut out = exec.execute(&batch)?;
    let prefill_time = start.elapsed();
    let mut finish = FinishReason::Length;
    let mut decode_steps = 0;
    while tokens.len() < max_tokens {
        let next = sampler.sample(out.row(0));
        if req.stop_ids.contains(&next) {
            finish = FinishReason::Stop;
            break;
        }
        tokens.push(next);
        on_token(next);
        if tokens.len() == max_tokens {
            break;
        }
        let mut step = Batch::default();
        step.push(&[next], n + tokens.len() - 1, table.clone(), LogitsWanted::Last);
        out = exec.execute(&step)?;
        decode_steps += 1;
    }
    Ok(GenerateOutput {
        tokens,
        finish,
        prefill_time,
        decode_time: start.elapsed() - prefill_time,
        decode_steps,
    })
}
