//! Tool calling over the API on the random-weight fixture, sampled at temperature 1: with
//! `required` or a named function every call parses and validates against its parameters
//! in each format (hermes, llama3_json, mistral); `parallel_tool_calls: false` gives one
//! call; `auto` never leaks markup into `content`; streamed deltas reassemble to the
//! non-streamed answer; the grammars themselves accept valid calls and refuse invalid ones;
//! and the 400s name the field.

use crate::common;

use aisle::grammar::{Grammar, GrammarSpec, Grammars};
use aisle::runtime::LoadedModel;
use aisle::server::ServerConfig;
use aisle::tools::{lark, Function, ParserChoice, ToolChoice, ToolFormat};
use common::fixture;
use common::http::{config, error_of, json_of, post, send, server_with, sse, Server};
use serde_json::{json, Value};

const FORMATS: [ToolFormat; 3] = [ToolFormat::Hermes, ToolFormat::Llama3Json, ToolFormat::Mistral];

fn tools() -> Value {
    json!([
        {"type": "function", "function": {"name": "get_price", "description": "Price of a product",
            "parameters": {"type": "object", "properties": {"sku": {"type": "string", "pattern": "^[A-Z]{2}-[0-9]{3}$"}},
                           "required": ["sku"], "additionalProperties": false}}},
        {"type": "function", "function": {"name": "get_stock", "description": "Units in a store",
            "parameters": {"type": "object", "properties": {"sku": {"type": "string", "pattern": "^[A-Z]{2}-[0-9]{3}$"},
                                                            "store": {"enum": ["Zürich", "Bern"]},
                                                            "min": {"type": "integer", "minimum": 1, "maximum": 9}},
                           "required": ["sku", "store"], "additionalProperties": false}}}
    ])
}

fn schema_of(name: &str) -> Value {
    tools()
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["function"]["name"] == name)
        .map(|t| t["function"]["parameters"].clone())
        .unwrap_or_else(|| panic!("unknown tool {name}"))
}

fn tool_server(format: ToolFormat) -> Server {
    let cfg = ServerConfig {
        tool_parser: ParserChoice::Fixed(format),
        ..config()
    };
    server_with(cfg, 8)
}

fn request(choice: Value, seed: u64, extra: Value) -> Value {
    let mut body = json!({"messages": [{"role": "user", "content": "Is the drill DR-750 in stock in Bern?"}],
                          "tools": tools(), "tool_choice": choice, "temperature": 1.0, "seed": seed, "max_tokens": 200});
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    body
}

/// Every call names a tool and its arguments validate against that tool's parameters.
fn check_calls(calls: &[Value]) {
    for c in calls {
        assert_eq!(c["type"], "function");
        assert!(c["id"].as_str().is_some_and(|id| !id.is_empty()), "{c}");
        let name = c["function"]["name"].as_str().unwrap();
        let args: Value = serde_json::from_str(c["function"]["arguments"].as_str().unwrap())
            .unwrap_or_else(|e| panic!("arguments are JSON: {e}: {c}"));
        let schema = schema_of(name);
        let v = jsonschema::validator_for(&schema).unwrap();
        assert!(v.is_valid(&args), "{name} arguments {args} validate against {schema}");
    }
}

#[tokio::test]
async fn required_and_named_calls_parse_and_validate_in_every_format() {
    for format in FORMATS {
        let s = tool_server(format);
        for seed in 0..6 {
            let named = json!({"type": "function", "function": {"name": "get_stock"}});
            for (choice, parallel) in [(json!("required"), true), (json!("required"), false), (named, true)] {
                let body = request(choice.clone(), seed, json!({"parallel_tool_calls": parallel}));
                let (st, r) = json_of(&s.router, post("/v1/chat/completions", body)).await;
                assert_eq!(st, 200, "{r}");
                let c = &r["choices"][0];
                let calls = c["message"]["tool_calls"].as_array().cloned().unwrap_or_default();
                assert!(!calls.is_empty(), "{format:?} {choice}: {r}");
                let single = !parallel || choice.is_object();
                if single {
                    assert_eq!(c["finish_reason"], "tool_calls", "{format:?} {choice}: {r}");
                    assert_eq!(calls.len(), 1, "{r}");
                    check_calls(&calls);
                } else if c["finish_reason"] == "tool_calls" {
                    check_calls(&calls);
                } else {
                    assert_eq!(c["finish_reason"], "length");
                    check_calls(&calls[..calls.len() - 1]);
                }
                if choice.is_object() {
                    assert_eq!(calls[0]["function"]["name"], "get_stock");
                }
                assert!(c["message"]["content"].is_null(), "only calls: {r}");
            }
        }
    }
}

/// The streamed deltas of one choice put back together: content and (id, name, arguments).
fn reassemble(payloads: &[String]) -> (String, Vec<(String, String, String)>, String) {
    let (mut content, mut calls, mut finish) = (String::new(), Vec::<(String, String, String)>::new(), String::new());
    for p in payloads.iter().filter(|p| p.as_str() != "[DONE]") {
        let v: Value = serde_json::from_str(p).unwrap();
        let Some(c) = v["choices"].get(0) else { continue };
        let d = &c["delta"];
        content.push_str(d["content"].as_str().unwrap_or(""));
        for t in d["tool_calls"].as_array().into_iter().flatten() {
            let i = t["index"].as_u64().unwrap() as usize;
            if i == calls.len() {
                assert!(
                    t["id"].is_string() && t["type"] == "function",
                    "first delta of a call: {t}"
                );
                let name = t["function"]["name"].as_str().unwrap().to_string();
                calls.push((t["id"].as_str().unwrap().to_string(), name, String::new()));
            } else {
                assert!(t.get("id").is_none(), "later deltas carry arguments only: {t}");
            }
            calls[i].2.push_str(t["function"]["arguments"].as_str().unwrap_or(""));
        }
        if let Some(f) = c["finish_reason"].as_str() {
            finish = f.to_string();
        }
    }
    (content, calls, finish)
}

#[tokio::test]
async fn streamed_tool_calls_reassemble_to_the_non_streamed_answer() {
    for format in FORMATS {
        let s = tool_server(format);
        for (seed, choice) in [
            (1, json!("required")),
            (2, json!("auto")),
            (3, json!("required")),
            (4, json!("auto")),
        ] {
            let body = request(choice.clone(), seed, json!({}));
            let (_, whole) = json_of(&s.router, post("/v1/chat/completions", body.clone())).await;
            let mut streamed = body;
            streamed["stream"] = json!(true);
            let (st, _, text) = send(&s.router, post("/v1/chat/completions", streamed)).await;
            assert_eq!(st, 200);
            let (content, calls, finish) = reassemble(&sse(&text));
            let m = &whole["choices"][0]["message"];
            assert_eq!(content, m["content"].as_str().unwrap_or(""), "{format:?} {choice}");
            let want: Vec<(String, String)> = m["tool_calls"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|c| {
                    (
                        c["function"]["name"].as_str().unwrap().into(),
                        c["function"]["arguments"].as_str().unwrap().into(),
                    )
                })
                .collect();
            let got: Vec<(String, String)> = calls.iter().map(|c| (c.1.clone(), c.2.clone())).collect();
            assert_eq!(got, want, "{format:?} {choice}");
            assert_eq!(finish, whole["choices"][0]["finish_reason"].as_str().unwrap());
            for marker in format.markers() {
                assert!(!content.contains(marker), "markup leaked into content: {content:?}");
            }
        }
    }
}

#[tokio::test]
async fn auto_text_never_carries_markup_and_none_never_calls() {
    let s = tool_server(ToolFormat::Hermes);
    for seed in 0..8 {
        let (_, r) = json_of(
            &s.router,
            post("/v1/chat/completions", request(json!("auto"), seed, json!({}))),
        )
        .await;
        let m = &r["choices"][0]["message"];
        assert!(!m["content"].as_str().unwrap_or("").contains("<tool_call>"), "{r}");
        if let Some(calls) = m["tool_calls"].as_array() {
            let complete = r["choices"][0]["finish_reason"] == "tool_calls";
            check_calls(if complete { calls } else { &calls[..calls.len() - 1] });
        }
        let (_, r) = json_of(
            &s.router,
            post("/v1/chat/completions", request(json!("none"), seed, json!({}))),
        )
        .await;
        assert!(r["choices"][0]["message"].get("tool_calls").is_none(), "{r}");
        assert_ne!(r["choices"][0]["finish_reason"], "tool_calls");
    }
}

fn grammars() -> (Grammars, aisle::tokenizer::TextTokenizer) {
    let model = LoadedModel::load_dir(&fixture("mistral")).unwrap();
    let g = Grammars::new(model.tokenizer.clone(), model.config.vocab_size, model.eos_token_ids());
    g.prepare();
    (g, model.tokenizer.clone())
}

/// How many tokens of `text` the grammar accepts (all of them: `None`).
fn refused_at(tok: &aisle::tokenizer::TextTokenizer, g: &Grammar, text: &str) -> Option<usize> {
    let ids = tok.encode(text, false).unwrap();
    let mut c = g.start();
    for (i, &t) in ids.iter().enumerate() {
        if !c.mask().unwrap().is_allowed(t) {
            return Some(i);
        }
        c.accept(t).unwrap();
    }
    None
}

fn functions() -> Vec<Function> {
    tools()
        .as_array()
        .unwrap()
        .iter()
        .map(|t| Function {
            name: t["function"]["name"].as_str().unwrap().into(),
            parameters: t["function"]["parameters"].clone(),
        })
        .collect()
}

#[test]
fn grammars_accept_valid_calls_and_refuse_invalid_ones() {
    let (gs, tok) = grammars();
    let no_special = |_: &str| None;
    let compile = |f: ToolFormat, c: ToolChoice, parallel: bool| {
        gs.compile(&GrammarSpec::Lark(lark::grammar(
            f,
            &functions(),
            &c,
            parallel,
            &no_special,
        )))
        .unwrap()
    };
    let call = r#"{"name": "get_price", "arguments": {"sku": "DR-750"}}"#;
    let bad = r#"{"name": "get_price", "arguments": {"sku": "drill"}}"#;
    let hermes = |c: &str| format!("<tool_call>\n{c}\n</tool_call>");
    let g = compile(ToolFormat::Hermes, ToolChoice::Required, true);
    assert_eq!(
        refused_at(&tok, &g, &format!("{}\n{}", hermes(call), hermes(call))),
        None
    );
    assert!(refused_at(&tok, &g, &hermes(bad)).is_some());
    assert!(refused_at(&tok, &g, "Sure").is_some(), "required: no text first");
    let g = compile(ToolFormat::Hermes, ToolChoice::Auto, false);
    assert_eq!(refused_at(&tok, &g, "The drill costs 5 <b>euros</b>."), None);
    assert_eq!(refused_at(&tok, &g, &format!("Let me check.{}", hermes(call))), None);
    assert!(
        refused_at(&tok, &g, &format!("Let me check.{}", hermes(bad))).is_some(),
        "auto constrains a started call"
    );
    assert!(
        refused_at(&tok, &g, &format!("{}\n{}", hermes(call), hermes(call))).is_some(),
        "one call when not parallel"
    );
    let g = compile(ToolFormat::Hermes, ToolChoice::Named("get_stock".into()), true);
    assert!(
        refused_at(&tok, &g, &hermes(call)).is_some(),
        "named: only that function"
    );
    let g = compile(ToolFormat::Llama3Json, ToolChoice::Auto, true);
    let ll = r#"{"name": "get_price", "parameters": {"sku": "DR-750"}}"#;
    assert_eq!(refused_at(&tok, &g, &format!("{ll}; {ll}")), None);
    assert_eq!(refused_at(&tok, &g, "It is 750 W."), None);
    assert!(refused_at(&tok, &g, r#"{"name": "nope"}"#).is_some());
    let g = compile(ToolFormat::Mistral, ToolChoice::Required, true);
    assert_eq!(refused_at(&tok, &g, &format!("[TOOL_CALLS][{call}, {call}]")), None);
    assert!(refused_at(&tok, &g, &format!("[TOOL_CALLS][{bad}]")).is_some());
}

#[tokio::test]
async fn tool_fields_that_cannot_be_honoured_are_400s_naming_them() {
    let plain = server_with(config(), 4);
    let (st, e) = error_of(
        &plain.router,
        post("/v1/chat/completions", request(json!("auto"), 0, json!({}))),
    )
    .await;
    assert_eq!(
        (st.as_u16(), e["param"].as_str()),
        (400, Some("tools")),
        "no format detected: {e}"
    );
    let (st, _) = json_of(
        &plain.router,
        post("/v1/chat/completions", request(json!("none"), 0, json!({}))),
    )
    .await;
    assert_eq!(st, 200, "tool_choice none needs no parser");
    let s = tool_server(ToolFormat::Hermes);
    let user = json!([{"role": "user", "content": "hi"}]);
    let cases = [
        (json!({"messages": user, "tool_choice": "required"}), "tool_choice"),
        (
            json!({"messages": user, "parallel_tool_calls": false}),
            "parallel_tool_calls",
        ),
        (json!({"messages": user, "tools": []}), "tools"),
        (
            json!({"messages": user, "tools": [{"type": "retrieval"}]}),
            "tools[0].type",
        ),
        (
            json!({"messages": user, "tools": [{"type": "function", "function": {"name": "a b"}}]}),
            "tools[0].function.name",
        ),
        (
            json!({"messages": user, "tools": tools(), "tool_choice": "sometimes"}),
            "tool_choice",
        ),
        (
            json!({"messages": user, "tools": tools(), "tool_choice": {"type": "function", "function": {"name": "nope"}}}),
            "tool_choice",
        ),
        (
            json!({"messages": user, "tools": tools(), "response_format": {"type": "json_object"}}),
            "response_format",
        ),
        (
            json!({"messages": user, "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {"a": {"not": {"type": "string"}}}}}}]}),
            "tools",
        ),
        (
            json!({"messages": [{"role": "tool", "content": "5"}]}),
            "messages[0].tool_call_id",
        ),
        (
            json!({"messages": [{"role": "assistant", "content": null, "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "{oops"}}]}]}),
            "messages[0].tool_calls[0].function.arguments",
        ),
    ];
    for (body, param) in cases {
        let (st, e) = error_of(&s.router, post("/v1/chat/completions", body.clone())).await;
        assert_eq!((st.as_u16(), e["param"].as_str()), (400, Some(param)), "{body}: {e}");
    }
}

#[tokio::test]
async fn fields_the_server_does_not_implement_are_400s_naming_them() {
    let s = tool_server(ToolFormat::Hermes);
    let user = json!([{"role": "user", "content": "hi"}]);
    for field in ["functions", "function_call", "audio", "unknown_field", "prompt"] {
        let body = json!({"messages": user, field: 1});
        let (st, e) = error_of(&s.router, post("/v1/chat/completions", body)).await;
        assert_eq!((st.as_u16(), e["param"].as_str()), (400, Some(field)), "{e}");
    }
    for field in ["suffix", "messages", "tools", "functions"] {
        let body = json!({"prompt": "hi", field: 1});
        let (st, e) = error_of(&s.router, post("/v1/completions", body)).await;
        assert_eq!((st.as_u16(), e["param"].as_str()), (400, Some(field)), "{e}");
    }
    // A served field with a value of the wrong type is a 400 naming it too.
    for (field, value) in [
        ("echo", json!(1)),
        ("best_of", json!("two")),
        ("temperature", json!("hot")),
    ] {
        let body = json!({"prompt": "hi", field: value});
        let (st, e) = error_of(&s.router, post("/v1/completions", body)).await;
        assert_eq!((st.as_u16(), e["param"].as_str()), (400, Some(field)), "{e}");
    }
}

/// A golden conversation's messages as an OpenAI client sends them: call arguments as JSON
/// strings.
fn openai_messages(messages: &Value) -> Value {
    let mut m = messages.clone();
    for msg in m.as_array_mut().unwrap() {
        for c in msg["tool_calls"].as_array_mut().into_iter().flatten() {
            let args = c["function"]["arguments"].to_string();
            c["function"]["arguments"] = json!(args);
        }
    }
    m
}

/// The trained fixture answers with tool calls greedily, as transformers does: the prompt
/// (tools, call history and tool answers rendered by its Qwen2.5-style template) matches
/// transformers' token for token, the hermes parser is detected from the template, and the
/// parsed calls and the final text answer equal those parsed from transformers' output.
#[tokio::test]
async fn a_trained_model_calls_tools_as_transformers_does() {
    let golden: Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("hermes-tools").join("golden.json")).unwrap()).unwrap();
    let model = LoadedModel::load_dir(&fixture("hermes-tools")).unwrap();
    let (served, _engine) = common::served(&model, 16, 256, 512, 4, std::time::Duration::ZERO);
    assert_eq!(served.detected_tools, Some(ToolFormat::Hermes));
    let state = aisle::server::AppState::new(config());
    state.set_model(served);
    let router = aisle::server::app(state);
    for conv in golden["conversations"].as_array().unwrap() {
        let body = json!({"messages": openai_messages(&conv["messages"]), "tools": golden["tools"],
                          "temperature": 0, "max_tokens": 80});
        let (st, r) = json_of(&router, post("/v1/chat/completions", body.clone())).await;
        assert_eq!(st, 200, "{r}");
        assert_eq!(
            r["usage"]["prompt_tokens"],
            conv["input_ids"].as_array().unwrap().len(),
            "prompt length"
        );
        let c = &r["choices"][0];
        let calls: Vec<Value> = c["message"]["tool_calls"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|t| json!({"name": t["function"]["name"], "arguments": t["function"]["arguments"]}))
            .collect();
        assert_eq!(Value::from(calls.clone()), conv["tool_calls"], "{r}");
        assert_eq!(c["message"]["content"], conv["content"], "{r}");
        let want_finish = if calls.is_empty() { "stop" } else { "tool_calls" };
        assert_eq!(c["finish_reason"], want_finish);
        let mut streamed = body;
        streamed["stream"] = json!(true);
        let (_, _, text) = send(&router, post("/v1/chat/completions", streamed)).await;
        let (content, scalls, finish) = reassemble(&sse(&text));
        let scalls: Vec<Value> = scalls.iter().map(|c| json!({"name": c.1, "arguments": c.2})).collect();
        assert_eq!(
            (Value::from(scalls), finish.as_str()),
            (Value::from(calls), want_finish)
        );
        assert_eq!(content, conv["content"].as_str().unwrap_or(""));
    }
}

#[test]
fn tools_and_call_history_render_as_transformers_renders_them() {
    let golden: Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("hermes-tools").join("golden.json")).unwrap()).unwrap();
    let model = LoadedModel::load_dir(&fixture("hermes-tools")).unwrap();
    for conv in golden["conversations"].as_array().unwrap() {
        let messages: Vec<aisle::chat_template::ChatMessage> =
            serde_json::from_value(conv["messages"].clone()).unwrap();
        let text = model
            .tokenizer
            .render_chat(&messages, Some(&golden["tools"]), true)
            .unwrap();
        assert_eq!(text, conv["rendered"].as_str().unwrap());
        let ids = model.tokenizer.encode_chat(&messages, Some(&golden["tools"])).unwrap();
        let want: Vec<u32> = serde_json::from_value(conv["input_ids"].clone()).unwrap();
        assert_eq!(ids, want);
    }
}
