//! Grammar-constrained decoding through the engine and the API: random JSON schemas sampled
//! at temperature 1 always give output that parses and validates (checked with the
//! `jsonschema` crate), alone, batched beside unconstrained requests, with n > 1 and under
//! preemption; `response_format`, `structured_outputs` and `guided_*` over HTTP, streamed
//! and not, and the 400s that name them.

use crate::common;

use aisle::engine::{FinishReason, GenerationRequest, RequestOutput};
use aisle::grammar::{GrammarSpec, Grammars};
use aisle::runtime::LoadedModel;
use aisle::sampling::SamplingParams;
use common::driver::{core, run};
use common::fixture;
use common::http::{error_of, json_of, post, send, server, sse};
use rand::{rngs::StdRng, Rng, SeedableRng};
use serde_json::{json, Map, Value};

/// A random schema: scalars with bounds, enums, consts, strings with length, pattern or
/// format, and (above `depth` 0) nested objects with `required` and
/// `additionalProperties: false`, and bounded arrays. Sizes stay small enough for the
/// fixture's 256-token context.
fn schema(rng: &mut StdRng, depth: usize) -> Value {
    let kinds = if depth >= 2 { 6 } else { 8 };
    match rng.random_range(0..kinds) {
        0 => json!({"type": "boolean"}),
        1 => {
            let lo = rng.random_range(-50..50);
            json!({"type": "integer", "minimum": lo, "maximum": lo + rng.random_range(0..200)})
        }
        2 => json!({"type": "number", "minimum": -10.5, "maximum": rng.random_range(0..100), "multipleOf": 0.5}),
        3 => {
            let all = [json!("drill"), json!("saw"), json!(750), Value::Null, json!(true)];
            json!({"enum": all[..rng.random_range(1..=5)]})
        }
        4 => string_schema(rng),
        5 => {
            let c = ["in stock", "sold out"][rng.random_range(0..2)];
            json!({"const": c})
        }
        6 => object_schema(rng, depth),
        _ => json!({
            "type": "array",
            "items": schema(rng, depth + 1),
            "minItems": rng.random_range(0..=1),
            "maxItems": rng.random_range(1..=3),
        }),
    }
}

fn string_schema(rng: &mut StdRng) -> Value {
    match rng.random_range(0..4) {
        0 => json!({"type": "string", "minLength": 1, "maxLength": rng.random_range(1..=12)}),
        1 => json!({"type": "string", "pattern": "^[A-Z]{2}-[0-9]{3,5}$"}),
        2 => {
            let format = ["date", "uuid", "ipv4", "time"][rng.random_range(0..4)];
            json!({"type": "string", "format": format})
        }
        _ => json!({"type": "string", "enum": ["red", "green", "blue"]}),
    }
}

fn object_schema(rng: &mut StdRng, depth: usize) -> Value {
    let n = rng.random_range(1..=3);
    let mut props = Map::new();
    for i in 0..n {
        props.insert(
            format!("{}{i}", ["sku", "price", "name", "watts"][rng.random_range(0..4)]),
            schema(rng, depth + 1),
        );
    }
    let required: Vec<&String> = props.keys().filter(|_| rng.random_bool(0.7)).collect();
    json!({"type": "object", "properties": props, "required": required, "additionalProperties": false})
}

/// A root schema: mostly objects, as OpenAI's `json_schema` response formats are.
fn root_schema(rng: &mut StdRng) -> Value {
    match rng.random_bool(0.8) {
        true => object_schema(rng, 0),
        false => schema(rng, 0),
    }
}

fn constrained(grammars: &Grammars, schema: &Value, seed: u64, n: usize) -> GenerationRequest {
    let grammar = grammars
        .compile(&GrammarSpec::JsonSchema(schema.clone()))
        .expect("schema compiles");
    GenerationRequest {
        prompt: vec![3, 40 + (seed % 50) as u32, 7, 9],
        max_tokens: 240,
        n,
        sampling: SamplingParams {
            temperature: 1.0,
            seed: Some(seed),
            ..SamplingParams::default()
        },
        grammar: Some(grammar),
        ..GenerationRequest::default()
    }
}

fn unconstrained(seed: u64) -> GenerationRequest {
    GenerationRequest {
        prompt: vec![3, 11, 12, 13],
        max_tokens: 30,
        sampling: SamplingParams {
            temperature: 1.0,
            seed: Some(seed),
            ..SamplingParams::default()
        },
        ..GenerationRequest::default()
    }
}

/// Every choice of `out` ended by its grammar or EOS and is an instance of `schema`.
fn assert_valid(schema: &Value, out: &RequestOutput, what: &str) {
    let validator = jsonschema::options()
        .should_validate_formats(true)
        .build(schema)
        .expect("valid schema");
    for (i, c) in out.choices.iter().enumerate() {
        assert_eq!(
            c.finish_reason,
            Some(FinishReason::Stop),
            "{what} choice {i}: {schema}\n{:?}",
            c.text
        );
        let value: Value = serde_json::from_str(&c.text)
            .unwrap_or_else(|e| panic!("{what} choice {i} is not JSON ({e}): {:?}\nschema {schema}", c.text));
        let errors: Vec<String> = validator.iter_errors(&value).map(|e| e.to_string()).collect();
        assert!(
            errors.is_empty(),
            "{what} choice {i}: {value} fails {schema}: {errors:?}"
        );
    }
}

fn setup() -> (LoadedModel, Grammars) {
    let model = LoadedModel::load_dir(&fixture("llama")).unwrap();
    let grammars = Grammars::new(model.tokenizer.clone(), model.config.vocab_size, model.eos_token_ids());
    (model, grammars)
}

#[test]
fn random_schemas_always_give_valid_json_beside_unconstrained_requests() {
    let (model, grammars) = setup();
    let mut rng = StdRng::seed_from_u64(2024);
    for batch in 0..8 {
        let schemas: Vec<Value> = (0..32).map(|_| root_schema(&mut rng)).collect();
        let mut reqs: Vec<(usize, GenerationRequest)> = schemas
            .iter()
            .enumerate()
            .map(|(i, s)| (i % 4, constrained(&grammars, s, (batch * 100 + i) as u64, 1)))
            .collect();
        reqs.extend((0..6).map(|i| (i, unconstrained(i as u64))));
        let mut c = core(&model, 2048, 256, 48);
        let (outs, _) = run(&mut c, &reqs);
        for (i, s) in schemas.iter().enumerate() {
            assert_valid(s, &outs[i], &format!("batch {batch} request {i}"));
        }
        assert!(c.stats().grammar_masks > 0);
    }
}

#[test]
fn choices_and_preempted_sequences_keep_their_grammar_state() {
    let (model, grammars) = setup();
    let mut rng = StdRng::seed_from_u64(7);
    let schemas: Vec<Value> = (0..12).map(|_| object_schema(&mut rng, 0)).collect();
    let reqs: Vec<(usize, GenerationRequest)> = schemas
        .iter()
        .enumerate()
        .map(|(i, s)| (0, constrained(&grammars, s, i as u64, 3)))
        .collect();
    // 80 blocks of 4 tokens cannot hold 36 sequences: the scheduler preempts and recomputes.
    let mut c = core(&model, 80, 64, 36);
    let (outs, _) = run(&mut c, &reqs);
    assert!(c.stats().preemptions > 0, "the test must preempt");
    for (i, s) in schemas.iter().enumerate() {
        assert_eq!(outs[i].choices.len(), 3);
        assert_valid(s, &outs[i], &format!("request {i}"));
    }
    // The same requests alone, with room to spare, sample the same tokens.
    for (i, (_, req)) in reqs.iter().enumerate().take(3) {
        let mut roomy = core(&model, 512, 64, 8);
        let (alone, _) = run(&mut roomy, &[(0, req.clone())]);
        assert_eq!(alone[0].choices, outs[i].choices, "request {i}");
    }
}

#[test]
fn regex_choice_and_lark_grammars_end_when_complete() {
    let (model, grammars) = setup();
    let specs = [
        (GrammarSpec::Regex("[0-9]{2,4} W".into()), "^[0-9]{2,4} W$"),
        (
            GrammarSpec::Choice(vec!["in stock".into(), "sold out".into()]),
            "^(in stock|sold out)$",
        ),
        (GrammarSpec::Lark("start: \"SKU-\" /[0-9]{3}/".into()), "^SKU-[0-9]{3}$"),
    ];
    for (spec, pattern) in specs {
        for seed in 0..8 {
            let req = GenerationRequest {
                grammar: Some(grammars.compile(&spec).unwrap()),
                ..unconstrained(seed)
            };
            let mut c = core(&model, 128, 64, 8);
            let (outs, _) = run(&mut c, &[(0, req)]);
            let choice = &outs[0].choices[0];
            assert_eq!(choice.finish_reason, Some(FinishReason::Stop));
            assert!(
                regex::Regex::new(pattern).unwrap().is_match(&choice.text),
                "{spec:?}: {:?}",
                choice.text
            );
        }
    }
}

fn chat(extra: Value) -> Value {
    let mut body = json!({
        "messages": [{"role": "user", "content": "What is the wattage of the drill?"}],
        "max_tokens": 150, "temperature": 1.0, "seed": 11,
    });
    body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn response_format_json_schema_is_honoured_streamed_or_not() {
    let s = server();
    let schema = json!({
        "type": "object",
        "properties": {"sku": {"type": "string", "maxLength": 8}, "watts": {"type": "integer", "minimum": 0, "maximum": 2000}},
        "required": ["sku", "watts"], "additionalProperties": false,
    });
    let rf = json!({"response_format": {"type": "json_schema", "json_schema": {"name": "drill", "schema": schema, "strict": true}}, "n": 3});
    let (st, body) = json_of(&s.router, post("/v1/chat/completions", chat(rf.clone()))).await;
    assert_eq!(st, 200, "{body}");
    let validator = jsonschema::validator_for(&schema).unwrap();
    let mut texts = Vec::new();
    for c in body["choices"].as_array().unwrap() {
        assert_eq!(c["finish_reason"], "stop", "{c}");
        let text = c["message"]["content"].as_str().unwrap();
        let v: Value = serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text:?}"));
        assert!(validator.is_valid(&v), "{v}");
        texts.push(text.to_string());
    }
    // The streamed deltas of choice 0 reassemble into the same JSON (same seed).
    let mut streamed = chat(rf);
    streamed["stream"] = json!(true);
    let (st, _, text) = send(&s.router, post("/v1/chat/completions", streamed)).await;
    assert_eq!(st, 200);
    let mut content = vec![String::new(); 3];
    for data in sse(&text).iter().filter(|d| *d != "[DONE]") {
        let chunk: Value = serde_json::from_str(data).unwrap();
        for c in chunk["choices"].as_array().unwrap() {
            let i = c["index"].as_u64().unwrap() as usize;
            content[i].push_str(c["delta"]["content"].as_str().unwrap_or(""));
        }
    }
    assert_eq!(content, texts);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_object_choice_regex_and_grammar_fields_on_both_endpoints() {
    let s = server();
    let (st, body) = json_of(
        &s.router,
        post(
            "/v1/chat/completions",
            chat(json!({"response_format": {"type": "json_object"}})),
        ),
    )
    .await;
    assert_eq!(st, 200, "{body}");
    let text = body["choices"][0]["message"]["content"].as_str().unwrap();
    if body["choices"][0]["finish_reason"] == "stop" {
        assert!(serde_json::from_str::<Value>(text).unwrap().is_object(), "{text:?}");
    } else {
        assert!(text.starts_with('{'), "{text:?}");
    }
    let cases = [
        (
            json!({"guided_choice": ["in stock", "sold out"]}),
            "^(in stock|sold out)$",
        ),
        (json!({"structured_outputs": {"choice": ["yes", "no"]}}), "^(yes|no)$"),
        (json!({"structured_outputs": {"regex": "[0-9]{3} W"}}), "^[0-9]{3} W$"),
        (json!({"guided_regex": "SKU-[0-9]{4}"}), "^SKU-[0-9]{4}$"),
        (
            json!({"guided_grammar": "start: \"price: \" /[1-9][0-9]?/ \" EUR\""}),
            "^price: [1-9][0-9]? EUR$",
        ),
    ];
    for (field, pattern) in cases {
        let rx = regex::Regex::new(pattern).unwrap();
        let (st, body) = json_of(&s.router, post("/v1/chat/completions", chat(field.clone()))).await;
        assert_eq!(st, 200, "{field}: {body}");
        let text = body["choices"][0]["message"]["content"].as_str().unwrap();
        assert!(rx.is_match(text), "{field}: {text:?}");
        let mut completion = json!({"prompt": "The drill", "max_tokens": 40, "temperature": 1.0});
        completion
            .as_object_mut()
            .unwrap()
            .extend(field.as_object().unwrap().clone());
        let (st, body) = json_of(&s.router, post("/v1/completions", completion)).await;
        assert_eq!(st, 200, "{field}: {body}");
        assert!(
            rx.is_match(body["choices"][0]["text"].as_str().unwrap()),
            "{field}: {body}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsupported_constraints_are_400s_naming_the_field() {
    let s = server();
    let cases = [
        (json!({"response_format": {"type": "xml"}}), "response_format"),
        (
            json!({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "array", "uniqueItems": true}}}}),
            "response_format",
        ),
        (
            json!({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "string", "format": "weird"}}}}),
            "response_format",
        ),
        (
            json!({"response_format": {"type": "json_schema", "json_schema": {"schema": {}}}}),
            "response_format",
        ),
        (json!({"guided_regex": "("}), "guided_regex"),
        (json!({"guided_grammar": "start: missing_rule"}), "guided_grammar"),
        (
            json!({"structured_outputs": {"regex": "a", "choice": ["b"]}}),
            "structured_outputs",
        ),
        (
            json!({"response_format": {"type": "json_object"}, "guided_choice": ["a"]}),
            "guided_choice",
        ),
    ];
    for (field, param) in cases {
        let (st, e) = error_of(&s.router, post("/v1/chat/completions", chat(field.clone()))).await;
        assert_eq!(st, 400, "{field}: {e}");
        assert_eq!(e["param"], param, "{field}: {e}");
    }
}
