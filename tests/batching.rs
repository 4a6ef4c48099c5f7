//! Batched equals unbatched: sequences of different lengths at different positions, sharing
//! steps (staggered starts, a chunked prefill beside decodes, scattered block tables), give
//! the same logits (within 1e-5 in f32) and the same greedy tokens as each run alone.

use crate::common;

use aisle::backend::Executor;
use aisle::batch::{Batch, LogitsWanted};
use aisle::runtime::LoadedModel;
use aisle::sampling::argmax;
use candle_core::DType;
use common::*;

const STEPS: usize = 12;

/// One sequence's progress in the shared run.
struct Seq {
    prompt: Vec<u32>,
    start_step: usize,
    chunk: usize,
    done_prompt: usize,
    tokens: Vec<u32>,
    logits: Vec<Vec<f32>>,
    table: Vec<u32>,
}

impl Seq {
    /// Append this sequence's work for the step to `batch`; false when it has nothing to do.
    fn push_work(&self, step: usize, batch: &mut Batch) -> bool {
        if step < self.start_step || self.tokens.len() == STEPS {
            return false;
        }
        if self.done_prompt < self.prompt.len() {
            let end = (self.done_prompt + self.chunk).min(self.prompt.len());
            let wanted = if end == self.prompt.len() {
                LogitsWanted::Last
            } else {
                LogitsWanted::None
            };
            batch.push(
                &self.prompt[self.done_prompt..end],
                self.done_prompt,
                self.table.clone(),
                wanted,
            );
        } else {
            let pos = self.prompt.len() + self.tokens.len() - 1;
            batch.push(
                &[*self.tokens.last().unwrap()],
                pos,
                self.table.clone(),
                LogitsWanted::Last,
            );
        }
        true
    }

    /// Consume this sequence's logits row (if its work produced one).
    fn update(&mut self, row: Option<&[f32]>) {
        if self.done_prompt < self.prompt.len() {
            self.done_prompt = (self.done_prompt + self.chunk).min(self.prompt.len());
        }
        if let Some(row) = row {
            self.tokens.push(argmax(row));
            self.logits.push(row.to_vec());
        }
    }
}

/// Run all prompts together; seq i joins at step 2*i; the last one prefills in chunks of 3.
fn run_together(exec: &mut dyn Executor, prompts: &[Vec<u32>]) -> Vec<Seq> {
    let bs = exec.kv_geometry().block_size;
    let per_seq = 32;
    let mut seqs: Vec<Seq> = prompts
        .iter()
        .enumerate()
        .map(|(i, p)| Seq {
            prompt: p.clone(),
            start_step: 2 * i,
            chunk: if i + 1 == prompts.len() { 3 } else { p.len() },
            done_prompt: 0,
            tokens: Vec::new(),
            logits: Vec::new(),
            // Interleaved, descending block ids: seq i owns blocks i, i+n, i+2n, ... reversed.
            table: (0..per_seq).rev().map(|k| (k * prompts.len() + i) as u32).collect(),
        })
        .collect();
    assert!(prompts.iter().all(|p| p.len() + STEPS <= per_seq * bs));
    for step in 0.. {
        let mut batch = Batch::default();
        let active: Vec<usize> = (0..seqs.len())
            .filter(|&i| seqs[i].push_work(step, &mut batch))
            .collect();
        if active.is_empty() && seqs.iter().all(|s| s.tokens.len() == STEPS) {
            break;
        }
        if active.is_empty() {
            continue;
        }
        let out = exec.execute(&batch).expect("batched step");
        let mut row = 0;
        for (&i, entry) in active.iter().zip(&batch.seqs) {
            let r = match entry.logits {
                LogitsWanted::Last => {
                    row += 1;
                    Some(out.row(row - 1))
                }
                _ => None,
            };
            seqs[i].update(r);
        }
    }
    seqs
}

fn prompts_for(name: &str, model: &LoadedModel) -> Vec<Vec<u32>> {
    let golden = Golden::load(name);
    let mut prompts: Vec<Vec<u32>> = (0..golden.prompts().len())
        .map(|i| golden.ids(i, "input_ids"))
        .collect();
    let messages: Vec<aisle::chat_template::ChatMessage> =
        serde_json::from_value(golden.json["chat_messages"].clone()).unwrap();
    prompts.push(model.tokenizer.encode_chat(&messages, None).unwrap());
    prompts
}

fn check(dtype: DType, tol: f32) {
    for name in FAMILIES {
        let model = LoadedModel::load_dir(&fixture(name)).unwrap();
        let prompts = prompts_for(name, &model);
        let mut exec = executor(&model, dtype, 128);
        let together = run_together(exec.as_mut(), &prompts);
        let mut worst = 0.0f32;
        for (i, seq) in together.iter().enumerate() {
            let mut solo_exec = executor(&model, dtype, 128);
            let (tokens, logits) = greedy_steps(solo_exec.as_mut(), &prompts[i], STEPS, 0);
            assert_eq!(seq.tokens, tokens, "{name} {dtype:?}: seq {i} tokens batched vs alone");
            for (a, b) in seq.logits.iter().zip(&logits) {
                worst = worst.max(max_abs_diff(a, b));
            }
        }
        assert!(
            worst <= tol,
            "{name} {dtype:?}: batched logits differ from solo by {worst}"
        );
        println!("{name} {dtype:?}: batched vs alone max |logit difference| = {worst:.3e}");
    }
}

#[test]
fn batched_equals_unbatched_f32() {
    check(DType::F32, 1e-5);
}

#[test]
fn batched_equals_unbatched_bf16() {
    check(DType::BF16, 0.35);
}

#[test]
fn prompt_batch_logits_equal_single_prompts() {
    for name in FAMILIES {
        let model = LoadedModel::load_dir(&fixture(name)).unwrap();
        let prompts = prompts_for(name, &model);
        let mut batch = Batch::default();
        let mut solo = Vec::new();
        for (i, p) in prompts.iter().enumerate() {
            let table: Vec<u32> = (0..24).map(|k| (k * prompts.len() + i) as u32).collect();
            batch.push(p, 0, table, LogitsWanted::All);
            let mut one = Batch::default();
            one.push(p, 0, (0..24).collect(), LogitsWanted::All);
            solo.extend(executor(&model, DType::F32, 128).execute(&one).unwrap().logits);
        }
        let together = executor(&model, DType::F32, 128).execute(&batch).unwrap().logits;
        let d = max_abs_diff(&together, &solo);
        assert!(d <= 1e-5, "{name}: prompt batch differs from single prompts by {d}");
    }
}
