//! Unit tests for the scheduler.

use super::*;

fn sched(budget: usize, seqs: usize, blocks: usize, bs: usize) -> Scheduler {
    let cfg = SchedulerConfig {
        max_batched_tokens: budget,
        max_seqs: seqs,
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
