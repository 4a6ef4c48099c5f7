//! Unit tests for the scheduler.

use super::*;
use crate::engine::draft::PromptLookup;

fn sched(budget: usize, seqs: usize, blocks: usize, bs: usize) -> Scheduler {
    let cfg = SchedulerConfig {
        max_batched_tokens: budget,
        max_seqs: seqs,
        step_time_target: None,
        speculation: None,
    };
    Scheduler::new(cfg, BlockManager::new(blocks, bs))
}

/// Run one step, "sampling" token 7 for every sequence that samples.
fn step(s: &mut Scheduler) -> Step {
    let st = s.schedule().expect("work to do");
    let sampled: Vec<(SeqId, u32)> = st.seqs.iter().filter(|x| x.samples).map(|x| (x.id, 7)).collect();
    s.update(&st, &sampled);
    st
}

fn shape(st: &Step) -> Vec<(SeqId, usize, usize, bool)> {
    st.seqs
        .iter()
        .map(|x| (x.id, x.start, x.num_tokens, x.samples))
        .collect()
}

#[test]
fn long_prompt_is_chunked_under_the_budget_beside_running_decodes() {
    let mut s = sched(8, 4, 64, 4);
    s.add(1, vec![1; 5], 0, None);
    assert_eq!(shape(&step(&mut s)), vec![(1, 0, 5, true)]);
    s.add(2, vec![2; 20], 0, None);
    // Decode of seq 1 first, then as much of seq 2's prompt as the budget allows.
    assert_eq!(shape(&step(&mut s)), vec![(1, 5, 1, true), (2, 0, 7, false)]);
    assert_eq!(shape(&step(&mut s)), vec![(1, 6, 1, true), (2, 7, 7, false)]);
    assert_eq!(shape(&step(&mut s)), vec![(1, 7, 1, true), (2, 14, 6, true)]);
    assert_eq!(shape(&step(&mut s)), vec![(1, 8, 1, true), (2, 20, 1, true)]);
    let b = step(&mut s).batch;
    assert_eq!(b.positions, vec![9, 21]);
    assert!(b.seqs.iter().all(|e| e.logits == LogitsWanted::Last));
}

#[test]
fn preemption_frees_the_latest_sequence_and_recomputes_it_later() {
    // 4 blocks of 2 tokens: two sequences of 3 tokens fit (2 blocks each) until both grow.
    let mut s = sched(64, 4, 4, 2);
    s.add(1, vec![1, 1, 1], 0, None);
    s.add(2, vec![2, 2, 2], 0, None);
    assert_eq!(shape(&step(&mut s)), vec![(1, 0, 3, true), (2, 0, 3, true)]);
    // Both now hold 4 tokens; growing to 5 needs a third block each: seq 2 is preempted.
    assert_eq!(shape(&step(&mut s)), vec![(1, 3, 1, true), (2, 3, 1, true)]);
    let st = step(&mut s);
    assert_eq!(st.preempted, vec![2]);
    assert_eq!(shape(&st), vec![(1, 4, 1, true)]);
    assert_eq!(s.num_waiting(), 1);
    assert_eq!(s.num_preemptions, 1);
    s.finish(1);
    // Seq 2 resumes by recomputing its 5 tokens (prompt + 2 generated); its first full block
    // stayed in the prefix cache after preemption, so only tokens 2..5 run.
    assert_eq!(shape(&step(&mut s)), vec![(2, 2, 3, true)]);
    s.finish(2);
    assert_eq!(s.blocks.num_free(), 4, "no block leaked");
}

#[test]
fn priority_orders_admission_and_max_seqs_limits_it() {
    let mut s = sched(64, 2, 64, 4);
    s.add(1, vec![1; 3], 5, None);
    s.add(2, vec![2; 3], 0, None);
    s.add(3, vec![3; 3], 1, None);
    let st = step(&mut s);
    let ids: Vec<SeqId> = st.seqs.iter().map(|x| x.id).collect();
    assert_eq!(ids, vec![2, 3], "lower priority value first; max_seqs 2");
    assert_eq!(s.num_waiting(), 1);
}

#[test]
fn prefix_cache_hits_skip_computed_blocks() {
    let mut s = sched(64, 4, 64, 4);
    let prompt: Vec<u32> = (0..14).collect();
    s.add(1, prompt.clone(), 0, None);
    step(&mut s);
    s.finish(1);
    s.add(2, prompt, 0, None);
    assert_eq!(shape(&step(&mut s)), vec![(2, 12, 2, true)]);
    assert_eq!(s.blocks.stats.hits, 12);
    assert_eq!(s.blocks.stats.queries, 28);
}

#[test]
fn fan_out_children_wait_for_the_first_prompt_then_share_it() {
    let mut s = sched(64, 4, 64, 4);
    let prompt: Vec<u32> = (0..10).collect();
    s.add(1, prompt.clone(), 0, None);
    s.add(2, prompt, 0, Some(1));
    assert_eq!(shape(&step(&mut s)), vec![(1, 0, 10, true)]);
    assert_eq!(shape(&step(&mut s)), vec![(1, 10, 1, true), (2, 8, 2, true)]);
    assert_eq!(s.blocks.table(1)[..2], s.blocks.table(2)[..2]);
}

fn timed(budget: usize, target_ms: u64) -> Scheduler {
    let cfg = SchedulerConfig {
        max_batched_tokens: budget,
        max_seqs: 16,
        step_time_target: Some(Duration::from_millis(target_ms)),
        speculation: None,
    };
    Scheduler::new(cfg, BlockManager::new(256, 16))
}

/// Run one step and report that it took `ms`.
fn timed_step(s: &mut Scheduler, ms: u64) -> Step {
    let st = step(s);
    s.record_step(&st, Duration::from_millis(ms));
    st
}

#[test]
fn prompt_chunks_shrink_to_the_step_time_target_while_streams_decode() {
    let mut s = timed(512, 75);
    s.add(1, vec![1; 100], 0, None);
    // Nothing decodes yet: the whole prompt in one step (0.5 ms per token).
    assert_eq!(shape(&timed_step(&mut s, 50)), vec![(1, 0, 100, true)]);
    assert_eq!(shape(&timed_step(&mut s, 2)), vec![(1, 100, 1, true)]); // 2 ms per decode
    s.add(2, vec![2; 400], 0, None);
    // (75 ms − 2 ms) / 0.5 ms = 146 prompt tokens beside the decode, not 511.
    let st = timed_step(&mut s, 75);
    assert_eq!(shape(&st), vec![(1, 101, 1, true), (2, 0, 146, false)]);
    assert_eq!((st.decodes, st.prefill_tokens), (1, 146));
    assert_eq!(
        shape(&timed_step(&mut s, 75)),
        vec![(1, 102, 1, true), (2, 146, 146, false)]
    );
    assert_eq!(s.num_capped_steps, 2);
    // With no stream decoding the rest of the prompt runs whole.
    s.finish(1);
    assert_eq!(shape(&timed_step(&mut s, 54)), vec![(2, 292, 108, true)]);
    assert_eq!(s.num_capped_steps, 2);
}

#[test]
fn decodes_are_never_cut_and_prefill_keeps_a_minimum_chunk() {
    let mut s = timed(512, 75);
    for id in 1..=8 {
        s.add(id, vec![id as u32; 10], 0, None);
    }
    timed_step(&mut s, 40); // 80 prompt tokens: 0.5 ms each
    timed_step(&mut s, 80); // 8 decodes at 10 ms: already past the target alone
    s.add(9, vec![9; 300], 0, None);
    let st = timed_step(&mut s, 96);
    assert_eq!(st.decodes, 8, "every running stream decodes");
    assert_eq!(st.prefill_tokens, super::super::step_cost::MIN_PREFILL_CHUNK);
}

#[test]
fn without_a_target_or_before_any_measurement_the_budget_is_whole() {
    let mut s = timed(512, 75);
    s.add(1, vec![1; 10], 0, None);
    step(&mut s);
    s.add(2, vec![2; 600], 0, None);
    // No step time recorded yet: no cost model, so no cap.
    assert_eq!(shape(&step(&mut s)), vec![(1, 10, 1, true), (2, 0, 511, false)]);
    let mut s = sched(512, 4, 256, 16);
    s.add(1, vec![1; 10], 0, None);
    timed_step(&mut s, 500);
    s.add(2, vec![2; 600], 0, None);
    timed_step(&mut s, 500);
    assert_eq!(shape(&step(&mut s)), vec![(1, 11, 1, true), (2, 511, 89, true)]);
}

fn speculating(budget: usize, num_tokens: usize) -> Scheduler {
    let cfg = SchedulerConfig {
        max_batched_tokens: budget,
        max_seqs: 4,
        step_time_target: None,
        speculation: Some(PromptLookup {
            num_tokens,
            max_ngram: 2,
            min_ngram: 1,
        }),
    };
    Scheduler::new(cfg, BlockManager::new(64, 4))
}

#[test]
fn a_decode_drafts_from_its_prompt_and_keeps_only_what_verification_accepts() {
    let mut s = speculating(64, 3);
    s.add(1, vec![10, 11, 12, 13, 14, 10, 11], 0, None);
    s.speculate(1, 20);
    let st = s.schedule().expect("prefill");
    assert_eq!(st.seqs[0].drafted, 0, "a prompt chunk does not draft");
    s.update(&st, &[(1, 12)]);
    // "11 12" occurred at 1, followed by 13 14 10: drafted after the decode's own token.
    let st = s.schedule().expect("decode");
    assert_eq!(st.draft(0), &[13, 14, 10]);
    assert_eq!(st.batch.token_ids, vec![12, 13, 14, 10]);
    assert_eq!(st.batch.positions, vec![7, 8, 9, 10]);
    assert_eq!(st.batch.seqs[0].logits, LogitsWanted::All);
    assert_eq!(st.seqs[0].logit_rows(), 4);
    assert_eq!((st.decodes, st.prefill_tokens, st.drafted), (1, 0, 3));
    // Verification accepted 13 and 14, then drew 99 where the draft said 10.
    s.update(&st, &[(1, 13), (1, 14), (1, 99)]);
    // K/V is kept through 14 (position 9); 99 runs at position 10, over the rejected slot.
    let st = s.schedule().expect("decode");
    assert_eq!(
        shape(&st),
        vec![(1, 10, 1, true)],
        "nothing matches \"14 99\" or \"99\""
    );
    assert_eq!(st.batch.token_ids, vec![99]);
    // Only fully computed blocks of the kept tokens are cached.
    s.update(&st, &[(1, 5)]);
    let kept = [10, 11, 12, 13, 14, 10, 11, 12, 13, 14, 99, 5];
    assert_eq!(s.blocks.lookup_prefix(&kept).1, 8);
}

#[test]
fn drafts_need_permission_and_stop_at_the_output_limit_and_the_leftover_budget() {
    let mut s = speculating(64, 3);
    s.add(1, vec![5, 6, 7, 5, 6], 0, None);
    s.add(2, vec![5, 6, 7, 5, 6], 0, None);
    s.speculate(1, 8); // the prompt's 5 tokens and at most 3 more
    step(&mut s); // both prompts; 7 sampled: "6 7" occurred at 1, followed by 5 6 7
    let st = step(&mut s);
    // Seq 1 may end at 8 tokens: it holds 6, this step keeps at most 1 + 1.
    assert_eq!(st.draft(0), &[5]);
    assert_eq!(st.seqs[1].drafted, 0, "seq 2 may not speculate");
    let mut s = speculating(3, 3);
    s.add(1, vec![5, 6, 7, 8, 9], 0, None);
    s.speculate(1, 100);
    step(&mut s);
    step(&mut s); // the prompt in chunks of 3 and 2; 7 sampled
                  // "7" occurred at 2, followed by 8 9 7; beside the decode the budget leaves 2.
    let st = step(&mut s);
    assert_eq!(st.draft(0), &[8, 9]);
    assert_eq!(st.batch.num_tokens(), 3);
}

#[test]
fn a_step_that_preempts_drafts_nothing() {
    let cfg = speculating(64, 3).config();
    let mut s = Scheduler::new(cfg, BlockManager::new(3, 4));
    s.add(1, vec![7, 8, 9, 7, 7], 0, None); // 2 blocks
    s.add(2, vec![5, 6, 5, 6], 0, None); // 1 block: the pool is full
    s.speculate(1, 100);
    s.speculate(2, 100);
    step(&mut s); // 7 sampled: seq 1 could draft "7" ("7 7" occurred at 3) inside its block
    let st = step(&mut s);
    assert_eq!(st.preempted, vec![2], "seq 2's decode needs a fifth slot's block");
    assert_eq!(shape(&st), vec![(1, 5, 1, true)], "no draft beside a preemption");
}
