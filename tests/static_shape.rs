//! The static-shape executor (`--device cpu-static`, Neuron's execution model on CPU) against
//! the dynamic executor: the same sequences, admitted and finished over time, give logits
//! within 1e-4 and identical greedy tokens, across context- and token-bucket edges, padding
//! rows and slot reuse. Also its errors for batches it cannot run.

use crate::common;

use aisle::backend::{BackendError, DeviceSpec, Executor, ExecutorOptions, StaticError, StaticOptions};
use aisle::batch::{Batch, LogitsWanted};
use aisle::runtime::LoadedModel;
use aisle::sampling::argmax;
use candle_core::DType;
use common::*;

const BS: usize = 4;
const MAX_LEN: usize = 48; // buckets 8, 16, 32, 48

fn exec(model: &LoadedModel, device: DeviceSpec, max_batch: usize) -> Box<dyn Executor> {
    let opts = ExecutorOptions {
        device,
        dtype: DType::F32,
        block_size: BS,
        num_blocks: max_batch * MAX_LEN / BS,
        static_shape: StaticOptions {
            max_batch,
            max_len: MAX_LEN,
            min_bucket: 8,
        },
        ..Default::default()
    };
    model.executor(&opts).expect("executor")
}

/// A sequence of the script: it arrives before step `arrival` and decodes `steps` tokens.
struct Seq {
    arrival: usize,
    prompt: Vec<u32>,
    steps: usize,
}

/// Per sequence: its prompt's logits rows, then one row per decode step; and its tokens.
type Trace = Vec<(Vec<Vec<f32>>, Vec<u32>)>;

/// Run the script like a scheduler with `regions` KV regions (one per slot): admit arrived
/// sequences while a region is free (whole prompt, all logits), decode the running ones in
/// the same step, release finished ones in the next batch.
fn drive(exec: &mut dyn Executor, script: &[Seq], regions: usize) -> Trace {
    let per = MAX_LEN / BS; // blocks per region
    let mut trace: Trace = script.iter().map(|_| (Vec::new(), Vec::new())).collect();
    let mut region: Vec<Option<usize>> = vec![None; script.len()];
    let (mut free, mut released, mut done) = ((0..regions).rev().collect::<Vec<_>>(), Vec::new(), 0);
    for step in 0.. {
        assert!(step < 500, "script did not finish");
        let mut batch = Batch {
            released: std::mem::take(&mut released),
            ..Batch::default()
        };
        let mut order = Vec::new();
        for (i, s) in script.iter().enumerate() {
            let table = |r: usize| (r * per..(r + 1) * per).map(|b| b as u32).collect::<Vec<_>>();
            let (_, toks) = &trace[i];
            if let Some(r) = region[i] {
                let pos = s.prompt.len() + toks.len() - 1;
                batch.push_seq(i as u64, &toks[toks.len() - 1..], pos, table(r), LogitsWanted::Last);
                order.push(i);
            } else if toks.is_empty() && s.arrival <= step {
                let Some(r) = free.pop() else { continue };
                region[i] = Some(r);
                batch.push_seq(i as u64, &s.prompt, 0, table(r), LogitsWanted::All);
                order.push(i);
            }
        }
        if batch.seqs.is_empty() {
            if done == script.len() {
                break;
            }
            continue;
        }
        let out = exec.execute(&batch).expect("step");
        let mut row = 0;
        for (&i, e) in order.iter().zip(&batch.seqs) {
            let n = if e.logits == LogitsWanted::All { e.num_tokens } else { 1 };
            let (rows, toks) = &mut trace[i];
            rows.extend((row..row + n).map(|r| out.row(r).to_vec()));
            toks.push(argmax(out.row(row + n - 1)));
            row += n;
            if toks.len() == script[i].steps {
                free.push(region[i].take().expect("running"));
                released.push(i as u64);
                done += 1;
            }
        }
    }
    trace
}

fn prompt(n: usize, salt: usize, vocab: usize) -> Vec<u32> {
    (0..n).map(|i| ((i * 11 + salt * 29 + 5) % vocab) as u32).collect()
}

/// Compare two traces: logits within 1e-4, identical tokens.
fn assert_same(name: &str, got: &Trace, want: &Trace) {
    for (s, ((rows, toks), (want_rows, want_toks))) in got.iter().zip(want).enumerate() {
        assert_eq!(toks, want_toks, "{name} seq {s}: greedy tokens");
        assert_eq!(rows.len(), want_rows.len(), "{name} seq {s}: logits rows");
        let worst = rows
            .iter()
            .zip(want_rows)
            .map(|(a, b)| max_abs_diff(a, b))
            .fold(0f32, f32::max);
        assert!(worst <= 1e-4, "{name} seq {s}: logits differ by {worst}");
    }
}

#[test]
fn static_equals_dynamic_across_bucket_edges() {
    // Prompts on both sides of the 8/16/32 context buckets; decodes that cross the 16/32
    // token buckets; four sequences in four slots, arriving at different steps.
    for name in FAMILIES {
        let model = LoadedModel::load_dir(&fixture(name)).expect("fixture");
        let vocab = model.config.vocab_size;
        let script: Vec<Seq> = [(1, 0, 12), (8, 0, 10), (9, 2, 24), (17, 5, 20), (33, 1, 15)]
            .iter()
            .enumerate()
            .map(|(s, &(n, arrival, steps))| Seq {
                arrival,
                prompt: prompt(n, s, vocab),
                steps,
            })
            .collect();
        let want = drive(exec(&model, DeviceSpec::Cpu, 5).as_mut(), &script, 5);
        let got = drive(exec(&model, DeviceSpec::CpuStatic, 5).as_mut(), &script, 5);
        assert_same(name, &got, &want);
    }
}

#[test]
fn static_equals_dynamic_across_slot_reuse() {
    // Two slots, six sequences: each later one takes a slot a longer one left (its KV
    // zeroed), while the other slot decodes beside it or sits idle as a padding row.
    for name in ["llama", "mistral", "qwen3"] {
        let model = LoadedModel::load_dir(&fixture(name)).expect("fixture");
        let vocab = model.config.vocab_size;
        let script: Vec<Seq> = [(40, 8), (3, 30), (5, 6), (20, 4), (2, 9), (31, 17)]
            .iter()
            .enumerate()
            .map(|(s, &(n, steps))| Seq {
                arrival: 0,
                prompt: prompt(n, s + 7, vocab),
                steps,
            })
            .collect();
        let want = drive(exec(&model, DeviceSpec::Cpu, 2).as_mut(), &script, 2);
        let got = drive(exec(&model, DeviceSpec::CpuStatic, 2).as_mut(), &script, 2);
        assert_same(name, &got, &want);
    }
}

fn expect_static(r: Result<aisle::backend::StepOutput, BackendError>) -> StaticError {
    match r {
        Err(BackendError::Static(e)) => e,
        other => panic!("expected a static-shape error, got {other:?}"),
    }
}

#[test]
fn batches_a_static_executor_cannot_run_are_refused() {
    let model = LoadedModel::load_dir(&fixture("llama")).expect("fixture");
    let mut e = exec(&model, DeviceSpec::CpuStatic, 2);
    // A third sequence with two slots.
    let mut b = Batch::default();
    for s in 0..3 {
        b.push_seq(s, &[1, 2, 3], 0, vec![s as u32], LogitsWanted::Last);
    }
    let err = expect_static(e.execute(&b));
    assert!(err.to_string().contains("all 2 KV slots are in use"), "{err}");
    // A decode for a sequence that never had its prompt encoded (a prefix-cache hit).
    let mut b = Batch::default();
    b.push_seq(9, &[4], 12, vec![0, 1, 2, 3], LogitsWanted::Last);
    assert!(matches!(
        expect_static(e.execute(&b)),
        StaticError::NoSlot { seq: 9, pos: 12 }
    ));
    // A prompt chunk continuing at position 3.
    let mut b = Batch::default();
    b.push_seq(0, &[1, 2, 3], 0, vec![0], LogitsWanted::None);
    e.execute(&b).expect("first chunk");
    let mut b = Batch::default();
    b.push_seq(0, &[4, 5], 3, vec![0, 1], LogitsWanted::Last);
    assert!(matches!(expect_static(e.execute(&b)), StaticError::Chunked { .. }));
    // Past max_len: the batch is rejected before anything runs.
    let mut b = Batch::default();
    b.push_seq(0, &[4], MAX_LEN, (0..12).collect(), LogitsWanted::Last);
    assert!(matches!(e.execute(&b), Err(BackendError::Batch(_))));
    // Sequences released by a refused batch still give their slots back.
    let mut b = Batch {
        released: vec![0, 1],
        ..Batch::default()
    };
    b.push_seq(5, &[100_000], 0, vec![0], LogitsWanted::Last);
    assert!(matches!(e.execute(&b), Err(BackendError::Batch(_))));
    let mut b = Batch::default();
    for s in [6, 7] {
        b.push_seq(s, &[1, 2], 0, vec![s as u32], LogitsWanted::Last);
    }
    assert_eq!(e.execute(&b).expect("both slots free").rows(), 2);
}
