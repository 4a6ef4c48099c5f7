//! The accuracy cost of each weight format, teacher-forced on the golden fixtures: every
//! prompt followed by transformers' own f32 greedy continuation runs as one sequence, and each
//! position's logits are compared with transformers' f32 logits (max and mean |Δ|, and how
//! often the top-1 token agrees). Prints the table the README quotes; asserts floors.

use crate::common;

use aisle::backend::{DeviceSpec, ExecutorOptions, Quantize};
use aisle::batch::{Batch, LogitsWanted};
use aisle::runtime::LoadedModel;
use aisle::sampling::argmax;
use candle_core::DType;
use common::*;

struct Cost {
    max: f32,
    sum: f64,
    n: usize, // logits compared
    agree: usize,
}

fn measure(name: &str, dtype: DType, quantize: Option<Quantize>) -> Cost {
    let model = LoadedModel::load_dir(&fixture(name)).expect("fixture");
    let golden = Golden::load(name);
    let steps = golden.json["gen_steps"].as_u64().unwrap() as usize;
    let mut cost = Cost {
        max: 0.0,
        sum: 0.0,
        n: 0,
        agree: 0,
    };
    for i in 0..golden.prompts().len() {
        let prompt = golden.ids(i, "input_ids");
        let cont = golden.ids(i, "f32_greedy");
        let mut ids = prompt.clone();
        ids.extend_from_slice(&cont[..steps - 1]);
        let mut want = golden.logits(&format!("p{i}.f32.prompt_logits"), prompt.len());
        // gen_logits[0] predicts the first generated token: the prompt's last row again.
        let gen = golden.logits(&format!("p{i}.f32.gen_logits"), steps);
        want.extend_from_slice(&gen[golden.vocab..]);
        let opts = ExecutorOptions {
            device: DeviceSpec::Cpu,
            dtype,
            quantize,
            block_size: 16,
            num_blocks: ids.len().div_ceil(16),
            ..Default::default()
        };
        let mut exec = model.executor(&opts).expect("executor");
        let mut batch = Batch::default();
        batch.push(&ids, 0, (0..opts.num_blocks as u32).collect(), LogitsWanted::All);
        let out = exec.execute(&batch).expect("forward");
        for r in 0..out.rows() {
            let theirs = &want[r * golden.vocab..(r + 1) * golden.vocab];
            let ours = out.row(r);
            for (a, b) in ours.iter().zip(theirs) {
                let d = (a - b).abs();
                cost.max = cost.max.max(d);
                cost.sum += d as f64;
            }
            cost.n += theirs.len();
            cost.agree += (argmax(ours) == argmax(theirs)) as usize;
        }
    }
    cost
}

#[test]
fn quantization_cost_against_transformers_f32() {
    let formats = [
        ("f32", DType::F32, None, 1.0),
        ("bf16", DType::BF16, None, 0.97),
        ("q8_0", DType::F32, Some(Quantize::Q8_0), 0.97),
        ("q4_k", DType::F32, Some(Quantize::Q4K), 0.85),
    ];
    println!("| format | family | max abs logit diff | mean abs logit diff | top-1 agreement |");
    println!("| --- | --- | --- | --- | --- |");
    for (fname, dtype, quantize, floor) in formats {
        let (mut agree, mut positions) = (0, 0);
        for name in FAMILIES {
            let c = measure(name, dtype, quantize);
            let rows = c.n / Golden::load(name).vocab;
            println!(
                "| {fname} | {name} | {:.2e} | {:.2e} | {}/{} |",
                c.max,
                c.sum / c.n as f64,
                c.agree,
                rows
            );
            agree += c.agree;
            positions += rows;
            if fname == "f32" {
                assert!(c.max <= 1e-4, "{name} f32 differs by {}", c.max);
            }
        }
        let rate = agree as f64 / positions as f64;
        println!("| {fname} | all | | | {:.1}% |", 100.0 * rate);
        assert!(rate >= floor, "{fname}: top-1 agreement {rate:.3} below {floor}");
    }
}
