//! Numerics against Hugging Face transformers golden outputs (tests/fixtures/*/golden.*,
//! made by scripts/make_golden.py): f32 logits within 1e-4 and identical greedy tokens;
//! bf16 greedy tokens identical on the first 8 steps with logits within a stated tolerance.

use crate::common;

use aisle::runtime::LoadedModel;
use candle_core::DType;
use common::*;

const F32_TOL: f32 = 1e-4;
/// bf16 runs differ from HF's bf16 run by rounding order (we accumulate attention and norms
/// in f32; HF rounds between ops). The fixtures' logits reach about ±20, where one bf16 ulp is
/// 0.125: the tolerance is just under 3 ulps.
const BF16_TOL: f32 = 0.35;

/// Compare prompt logits (all positions) and every greedy step's logits for one dtype.
/// Returns the largest difference seen.
fn check_family(name: &str, dtype: DType, tag: &str, tol: f32, exact_steps: usize) -> f32 {
    let model = LoadedModel::load_dir(&fixture(name)).expect("load fixture");
    let golden = Golden::load(name);
    let steps = golden.json["gen_steps"].as_u64().unwrap() as usize;
    let mut worst = 0.0f32;
    for i in 0..golden.prompts().len() {
        let text = golden.prompts()[i]["text"].as_str().unwrap();
        let ids = golden.ids(i, "input_ids");
        assert_eq!(
            model.tokenizer.encode(text, true).unwrap(),
            ids,
            "{name}: token ids of prompt {i}"
        );

        let mut exec = executor(&model, dtype, 64);
        let mut batch = aisle::batch::Batch::default();
        batch.push(&ids, 0, (0..16).collect(), aisle::batch::LogitsWanted::All);
        let ours = exec.execute(&batch).unwrap().logits;
        let theirs = golden.logits(&format!("p{i}.{tag}.prompt_logits"), ids.len());
        let d = max_abs_diff(&ours, &theirs);
        assert!(d <= tol, "{name} {tag} prompt {i}: prompt logits differ by {d} > {tol}");
        worst = worst.max(d);

        let mut exec = executor(&model, dtype, 64);
        let (tokens, logits) = greedy_steps(exec.as_mut(), &ids, steps, 3);
        let expected = golden.ids(i, &format!("{tag}_greedy"));
        assert_eq!(
            tokens[..exact_steps],
            expected[..exact_steps],
            "{name} {tag} prompt {i}: greedy tokens"
        );
        let gen = golden.logits(&format!("p{i}.{tag}.gen_logits"), steps);
        // Compare step logits while our tokens agree with HF's (after a divergence the
        // contexts differ and logits are not comparable).
        let agree = tokens.iter().zip(&expected).take_while(|(a, b)| a == b).count();
        for (s, row) in logits.iter().enumerate().take((agree + 1).min(steps)) {
            let d = max_abs_diff(row, &gen[s * golden.vocab..(s + 1) * golden.vocab]);
            assert!(
                d <= tol,
                "{name} {tag} prompt {i} step {s}: logits differ by {d} > {tol}"
            );
            worst = worst.max(d);
        }
    }
    println!("{name} {tag}: max |logit difference| vs transformers = {worst:.3e}");
    worst
}

#[test]
fn golden_f32_all_families() {
    for name in FAMILIES {
        check_family(name, DType::F32, "f32", F32_TOL, 32);
    }
}

#[test]
fn golden_bf16_all_families() {
    for name in FAMILIES {
        check_family(name, DType::BF16, "bf16", BF16_TOL, 8);
    }
}

#[test]
fn chat_template_matches_transformers() {
    for name in FAMILIES {
        let model = LoadedModel::load_dir(&fixture(name)).unwrap();
        let golden = Golden::load(name);
        let messages: Vec<aisle::chat_template::ChatMessage> =
            serde_json::from_value(golden.json["chat_messages"].clone()).unwrap();
        let rendered = model.tokenizer.render_chat(&messages, None, true).unwrap();
        assert_eq!(
            rendered,
            golden.json["chat_rendered"].as_str().unwrap(),
            "{name}: rendered chat"
        );
        let ids: Vec<u32> = serde_json::from_value(golden.json["chat_input_ids"].clone()).unwrap();
        assert_eq!(
            model.tokenizer.encode_chat(&messages, None).unwrap(),
            ids,
            "{name}: chat token ids"
        );
    }
}
