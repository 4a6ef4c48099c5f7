//! The real SmolLM2-135M-Instruct's goldens (tests/fixtures/smollm2-gguf/golden.json, from
//! transformers' f32 run of the dequantized GGUF) and how close a run comes to them.

use aisle::backend::{DeviceSpec, ExecutorOptions};
use aisle::runtime::LoadedModel;
use candle_core::DType;
use serde_json::Value;

pub fn golden() -> Value {
    let text = std::fs::read_to_string(super::fixture("smollm2-gguf/golden.json")).expect("golden.json");
    serde_json::from_str(&text).expect("golden.json parses")
}

pub fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .expect("ids")
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

pub fn log_softmax(row: &[f32]) -> Vec<f64> {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let norm = max + row.iter().map(|&x| (x as f64 - max).exp()).sum::<f64>().ln();
    row.iter().map(|&x| x as f64 - norm).collect()
}

/// One golden prompt's run: its greedy tokens and every step's logits.
pub type Run = (Vec<u32>, Vec<Vec<f32>>);

/// Every golden prompt run greedily for the golden's step count on `device` in `dtype` with
/// `quantize`.
pub fn greedy_runs(
    m: &LoadedModel,
    device: DeviceSpec,
    dtype: DType,
    quantize: Option<aisle::backend::Quantize>,
) -> Vec<Run> {
    let g = golden();
    let steps = g["steps"].as_u64().unwrap() as usize;
    let prompts = g["prompts"].as_array().unwrap();
    prompts
        .iter()
        .map(|p| {
            let prompt = ids(&p["input_ids"]);
            let opts = ExecutorOptions {
                device,
                dtype,
                block_size: 16,
                num_blocks: (prompt.len() + steps).div_ceil(16) + 1,
                quantize,
                ..Default::default()
            };
            let mut exec = m.executor(&opts).expect("executor");
            super::greedy_steps(exec.as_mut(), &prompt, steps, 0)
        })
        .collect()
}

/// A run in `dtype` with `quantize` against the f32 goldens: the largest step-0 top-20
/// logprob error, greedy tokens agreeing before the first difference, tokens in all, and
/// whether the first token agrees on every prompt where transformers' top two are 1.0
/// or more apart.
pub fn measure(m: &LoadedModel, dtype: DType, quantize: Option<aisle::backend::Quantize>) -> (f64, usize, usize, bool) {
    let g = golden();
    let runs = greedy_runs(m, DeviceSpec::Cpu, dtype, quantize);
    let (mut worst, mut agree, mut total, mut first) = (0f64, 0, 0, true);
    for (p, (tokens, logits)) in g["prompts"].as_array().unwrap().iter().zip(runs) {
        let want = ids(&p["greedy"]);
        agree += tokens.iter().zip(&want).take_while(|(a, b)| a == b).count();
        total += want.len();
        let top = p["top_logprobs"]["0"].as_array().unwrap();
        let gap = top[0][1].as_f64().unwrap() - top[1][1].as_f64().unwrap();
        first &= tokens[0] == want[0] || gap < 1.0;
        let lp = log_softmax(&logits[0]);
        for pair in top {
            let (id, w) = (pair[0].as_u64().unwrap() as usize, pair[1].as_f64().unwrap());
            worst = worst.max((lp[id] - w).abs());
        }
    }
    eprintln!("{dtype:?} {quantize:?}: step-0 top-20 logprob error {worst:.3}; greedy agreement {agree}/{total}");
    (worst, agree, total, first)
}
