//! `/v1/completions` as scoring clients use it (lm-eval's `local-completions`, LangChain's
//! `OpenAI.batch`): prompt lists of strings or token ids (choices prompt-major), `echo` with
//! legacy logprobs equal to transformers' (golden fixture, 1e-4), `max_tokens: 0`, `best_of`,
//! vLLM's `prompt_logprobs` on both endpoints, and the 400s for what is not served. In-process
//! through `app(state)` on the mistral fixture.

use crate::common;

use axum::http::StatusCode;
use common::http::{error_of, json_of, post, send, server, sse};
use common::Golden;
use serde_json::{json, Value};

/// HF's logprob of each prompt token after the first (log-softmax of the golden logits).
fn golden_logprobs(g: &Golden, i: usize) -> Vec<f64> {
    g.prompt_scores(i).into_iter().map(|(lp, _)| lp).collect()
}

async fn complete(router: &axum::Router, body: Value) -> Value {
    let (st, v) = json_of(router, post("/v1/completions", body)).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_scores_token_id_prompts_as_transformers_does() {
    let (s, g) = (server(), Golden::load("mistral"));
    let prompts: Vec<Vec<u32>> = (0..3).map(|i| g.ids(i, "input_ids")).collect();
    let v = complete(
        &s.router,
        json!({"model": "shop", "prompt": prompts, "echo": true, "logprobs": 1, "max_tokens": 0, "temperature": 0}),
    )
    .await;
    let choices = v["choices"].as_array().unwrap();
    assert_eq!(choices.len(), 3, "{v}");
    for (i, c) in choices.iter().enumerate() {
        assert_eq!(c["index"], json!(i));
        assert_eq!(c["finish_reason"], json!("length"));
        let lp = &c["logprobs"];
        let token_lps = lp["token_logprobs"].as_array().unwrap();
        assert_eq!(
            token_lps.len(),
            prompts[i].len(),
            "prompt tokens only, nothing generated"
        );
        assert!(
            token_lps[0].is_null() && lp["top_logprobs"][0].is_null(),
            "first token unscored"
        );
        for (j, (ours, hf)) in token_lps[1..].iter().zip(golden_logprobs(&g, i)).enumerate() {
            let d = (ours.as_f64().unwrap() - hf).abs();
            assert!(d <= 1e-4, "prompt {i} token {}: {ours} vs HF {hf}", j + 1);
        }
        let tops = lp["top_logprobs"][1].as_object().unwrap();
        assert_eq!(tops.len(), 1, "logprobs: 1 gives one alternative");
        let tok = &s.state.model().unwrap().tokenizer;
        assert_eq!(
            c["text"],
            json!(tok.decode(&prompts[i], false).unwrap()),
            "echo of token ids"
        );
    }
    let total: usize = prompts.iter().map(Vec::len).sum();
    assert_eq!(v["usage"]["prompt_tokens"], json!(total));
    assert_eq!(v["usage"]["completion_tokens"], json!(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prompt_lists_run_together_and_number_choices_prompt_major() {
    let s = server();
    let texts = ["The cordless drill has a", "Is the café grinder in stock?"];
    let one = |p: &str| json!({"prompt": p, "max_tokens": 5, "temperature": 0, "n": 2});
    let mut expected = Vec::new();
    for t in texts {
        let v = complete(&s.router, one(t)).await;
        expected.extend(v["choices"].as_array().unwrap().iter().map(|c| c["text"].clone()));
    }
    let v = complete(
        &s.router,
        json!({"prompt": texts, "max_tokens": 5, "temperature": 0, "n": 2}),
    )
    .await;
    let got: Vec<Value> = v["choices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["text"].clone())
        .collect();
    assert_eq!(got, expected, "prompt 0's two choices, then prompt 1's");
    let idx: Vec<u64> = v["choices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["index"].as_u64().unwrap())
        .collect();
    assert_eq!(idx, [0, 1, 2, 3]);
    assert_eq!(v["usage"]["completion_tokens"], json!(20));
    // Echo puts each prompt before its completion; logprobs then cover both.
    let v = complete(
        &s.router,
        json!({"prompt": texts, "max_tokens": 2, "temperature": 0, "echo": true, "logprobs": 0}),
    )
    .await;
    for (i, c) in v["choices"].as_array().unwrap().iter().enumerate() {
        let text = c["text"].as_str().unwrap();
        assert!(text.starts_with(texts[i]), "{text}");
        let completion = &text[texts[i].len()..];
        assert!(!completion.is_empty() && expected[2 * i].as_str().unwrap().starts_with(completion));
        let lps = c["logprobs"]["token_logprobs"].as_array().unwrap();
        let ids = s.state.model().unwrap().tokenizer.encode(texts[i], true).unwrap();
        assert_eq!(lps.len(), ids.len() + 2, "prompt tokens then the two generated");
        assert!(lps[1..].iter().all(Value::is_f64));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_echo_equals_the_whole_answer() {
    let s = server();
    let body = json!({"prompt": ["The cordless drill", "Emoji test"], "max_tokens": 4, "temperature": 0,
                      "echo": true, "logprobs": 1});
    let whole = complete(&s.router, body.clone()).await;
    let mut stream = body;
    stream["stream"] = json!(true);
    let (st, _, text) = send(&s.router, post("/v1/completions", stream)).await;
    assert_eq!(st, StatusCode::OK);
    let mut texts = [String::new(), String::new()];
    let mut lps: [Vec<Value>; 2] = [vec![], vec![]];
    for p in sse(&text).iter().filter(|p| *p != "[DONE]") {
        let c: Value = serde_json::from_str(p).unwrap();
        let c = &c["choices"][0];
        let i = c["index"].as_u64().unwrap() as usize;
        texts[i].push_str(c["text"].as_str().unwrap());
        if let Some(l) = c["logprobs"]["token_logprobs"].as_array() {
            lps[i].extend(l.iter().cloned());
        }
    }
    for i in 0..2 {
        let w = &whole["choices"][i];
        assert_eq!(texts[i], w["text"].as_str().unwrap());
        assert_eq!(Value::from(lps[i].clone()), w["logprobs"]["token_logprobs"]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn best_of_keeps_the_most_likely_candidates() {
    let s = server();
    let base = json!({"prompt": "The cordless drill has a", "max_tokens": 6, "temperature": 1.0, "seed": 7,
                      "logprobs": 0});
    // Choice i of a seeded request draws with seed + i: n = 4 shows the candidates best_of sees.
    let mut all = base.clone();
    all["n"] = json!(4);
    let all = complete(&s.router, all).await;
    let total = |c: &Value| -> f64 {
        c["logprobs"]["token_logprobs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .sum()
    };
    let mut cands: Vec<(f64, String)> = all["choices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (total(c), c["text"].as_str().unwrap().to_string()))
        .collect();
    cands.sort_by(|a, b| b.0.total_cmp(&a.0));
    let mut best = base;
    best["n"] = json!(2);
    best["best_of"] = json!(4);
    let v = complete(&s.router, best).await;
    let got: Vec<&str> = v["choices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["text"].as_str().unwrap())
        .collect();
    assert_eq!(got, [cands[0].1.as_str(), cands[1].1.as_str()], "{cands:?}");
    assert_eq!(v["choices"][1]["index"], json!(1));
    assert_eq!(
        v["usage"]["completion_tokens"], all["usage"]["completion_tokens"],
        "all candidates count"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vllm_prompt_logprobs_on_both_endpoints() {
    let (s, g) = (server(), Golden::load("mistral"));
    let ids = g.ids(1, "input_ids");
    let v = complete(&s.router, json!({"prompt": ids, "max_tokens": 1, "prompt_logprobs": 2})).await;
    let pl = v["choices"][0]["prompt_logprobs"].as_array().unwrap();
    assert_eq!(pl.len(), ids.len());
    assert!(pl[0].is_null());
    for (j, hf) in golden_logprobs(&g, 1).into_iter().enumerate() {
        let e = &pl[j + 1][ids[j + 1].to_string()];
        assert!((e["logprob"].as_f64().unwrap() - hf).abs() <= 1e-4, "{e}");
        assert!(e["rank"].as_u64().unwrap() >= 1 && e["decoded_token"].is_string());
        let ranks: Vec<u64> = pl[j + 1]
            .as_object()
            .unwrap()
            .values()
            .map(|x| x["rank"].as_u64().unwrap())
            .collect();
        assert!(
            ranks.contains(&1) && ranks.contains(&2),
            "the two best are listed: {ranks:?}"
        );
    }
    assert!(
        v["choices"][0]["logprobs"].is_null(),
        "no completion logprobs were asked for"
    );
    let (st, c) = json_of(
        &s.router,
        post(
            "/v1/chat/completions",
            json!({"messages": [{"role": "user", "content": "Hi"}],
                                             "max_tokens": 1, "prompt_logprobs": 0}),
        ),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{c}");
    let pl = c["prompt_logprobs"].as_array().unwrap();
    assert!(pl.len() > 3 && pl[0].is_null() && pl[1..].iter().all(|e| e.as_object().is_some_and(|m| m.len() == 1)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_is_not_served_is_a_400_naming_it() {
    let s = server();
    let cases = [
        (json!({"prompt": "a", "suffix": "b"}), "suffix"),
        (json!({"prompt": "a", "best_of": 1, "n": 2}), "best_of"),
        (json!({"prompt": "a", "best_of": 2, "stream": true}), "best_of"),
        (
            json!({"prompt": "a", "prompt_logprobs": 1, "stream": true}),
            "prompt_logprobs",
        ),
        (json!({"prompt": "a", "prompt_logprobs": 21}), "prompt_logprobs"),
        (json!({"prompt": "a", "max_tokens": 0}), "max_tokens"),
        (json!({"prompt": []}), "prompt"),
        (json!({"prompt": [[1, 2], []]}), "prompt"),
        (json!({"prompt": [[1, 2], [999999]]}), "prompt"),
    ];
    for (body, param) in cases {
        let (st, e) = error_of(&s.router, post("/v1/completions", body.clone())).await;
        assert_eq!(
            (st, e["param"].as_str()),
            (StatusCode::BAD_REQUEST, Some(param)),
            "{body}: {e}"
        );
    }
    // `null` is how SDKs send an unset field: absent, not unsupported.
    complete(&s.router, json!({"prompt": "a", "suffix": null, "max_tokens": 1})).await;
}
