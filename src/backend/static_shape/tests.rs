//! The executor's contract with its graphs, seen through a recording fake: bucket choice,
//! right padding, positions, finite masks, idle rows, and slot zeroing on reuse.

use super::*;
use crate::batch::{Batch, LogitsWanted};

/// Records every call; returns zero logits.
struct Spy {
    plan: BucketPlan,
    cfg: Config,
    resets: Vec<usize>,
    contexts: Vec<ContextInputs>,
    tokens: Vec<TokenInputs>,
}

impl StaticGraphs for Spy {
    fn plan(&self) -> &BucketPlan {
        &self.plan
    }
    fn config(&self) -> &Config {
        &self.cfg
    }
    fn reset_slot(&mut self, slot: usize) -> Result<(), BackendError> {
        self.resets.push(slot);
        Ok(())
    }
    fn run_context(&mut self, inp: &ContextInputs) -> Result<Vec<f32>, BackendError> {
        self.contexts.push(inp.clone());
        Ok(vec![0.0; inp.bucket() * self.cfg.vocab_size])
    }
    fn run_token(&mut self, inp: &TokenInputs) -> Result<Vec<f32>, BackendError> {
        self.tokens.push(inp.clone());
        Ok(vec![0.0; self.plan.max_batch * self.cfg.vocab_size])
    }
    fn describe(&self) -> String {
        "spy".into()
    }
}

fn executor() -> StaticExecutor<Spy> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/llama");
    let cfg = crate::model_dir::load_config(&dir).expect("fixture config");
    let spy = Spy {
        plan: BucketPlan::powers_of_two(3, 64, 8).unwrap(),
        cfg,
        resets: Vec::new(),
        contexts: Vec::new(),
        tokens: Vec::new(),
    };
    StaticExecutor::new(spy, 4)
}

fn step(e: &mut StaticExecutor<Spy>, released: Vec<u64>, seqs: &[(u64, Vec<u32>, usize)]) {
    let mut b = Batch {
        released,
        ..Batch::default()
    };
    for (id, toks, start) in seqs {
        let table = (0..16).collect();
        b.push_seq(*id, toks, *start, table, LogitsWanted::Last);
    }
    e.execute(&b).expect("step");
}

#[test]
fn prompts_are_right_padded_into_the_smallest_bucket_with_a_causal_finite_mask() {
    let mut e = executor();
    step(
        &mut e,
        vec![],
        &[(7, vec![5, 6, 7, 8, 9], 0), (8, (1..=9).collect(), 0)],
    );
    let [a, b] = &e.graphs().contexts[..] else {
        panic!("two context calls")
    };
    assert_eq!((a.slot, a.bucket(), b.slot, b.bucket()), (0, 8, 1, 16));
    assert_eq!(a.input_ids, vec![5, 6, 7, 8, 9, 0, 0, 0]);
    assert_eq!(a.position_ids, (0..8).collect::<Vec<u32>>());
    for (i, &m) in a.mask.iter().enumerate() {
        let (q, k) = (i / 8, i % 8);
        assert_eq!(m, if k <= q { 0.0 } else { MASK_MIN }, "mask[{q}][{k}]");
        assert!(m.is_finite());
    }
    assert_eq!(e.graphs().resets, vec![0, 1]);
}

#[test]
fn decodes_share_one_call_with_idle_rows_masked_and_slots_zeroed_on_reuse() {
    let mut e = executor();
    step(&mut e, vec![], &[(1, vec![3; 9], 0), (2, vec![4; 3], 0)]);
    // Sequence 1 decodes at 9, 2 at 3: KV length 10 → bucket 16; slot 2 is idle.
    step(&mut e, vec![], &[(1, vec![11], 9), (2, vec![12], 3)]);
    let t = &e.graphs().tokens[0];
    assert_eq!(t.bucket, 16);
    assert_eq!(t.input_ids, vec![11, 12, 0]);
    assert_eq!(t.position_ids, vec![9, 3, 0]);
    let row = |r: usize| &t.mask[r * 16..(r + 1) * 16];
    assert!(row(0)[..10].iter().all(|&m| m == 0.0) && row(0)[10..].iter().all(|&m| m == MASK_MIN));
    assert!(row(1)[..4].iter().all(|&m| m == 0.0) && row(1)[4..].iter().all(|&m| m == MASK_MIN));
    assert!(row(2).iter().all(|&m| m == MASK_MIN), "idle row attends to nothing");
    // Sequence 2 ends; 3 takes its slot (zeroed) while 1 decodes past the 16 bucket edge.
    step(&mut e, vec![], &[(1, vec![13], 10)]);
    for pos in 11..16 {
        step(&mut e, vec![], &[(1, vec![13], pos)]);
    }
    step(&mut e, vec![2], &[(3, vec![1, 2], 0), (1, vec![14], 16)]);
    assert_eq!(e.graphs().resets, vec![0, 1, 1]);
    let t = e.graphs().tokens.last().unwrap();
    assert_eq!(t.bucket, 32);
    // Slot 1 (sequence 3, just encoded) and idle slot 2 write at their next free position.
    assert_eq!(t.position_ids, vec![16, 2, 0]);
}
