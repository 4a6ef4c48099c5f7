//! The grammar that makes a tool call parse and validate: a Lark grammar for llguidance with
//! each function's call object as an inline `%json` schema.
//!
//! Owns: the call grammar per format and `tool_choice`: `required` and a named function
//! force calls from the first token; `auto` lets text run freely until the format's call
//! marker appears (a lazy lexeme), then constrains the call.
//! Must not: compile grammars (`crate::grammar` does) or parse output (`stream`).

use serde_json::{json, Value};

use super::format::{ToolFormat, HERMES_CLOSE, HERMES_OPEN, MISTRAL_CALLS, PYTHON_TAG};
use super::{Function, ToolChoice};

/// Separators as the grammar prints JSON (the same as structured outputs).
fn x_guidance() -> Value {
    json!({"whitespace_flexible": false, "item_separator": ", ", "key_separator": ": "})
}

/// The call object of one function, `name` first.
fn call_schema(format: ToolFormat, f: &Function) -> Value {
    let key = format.arg_keys()[0];
    let params = match &f.parameters {
        Value::Null => json!({"type": "object"}),
        p => p.clone(),
    };
    json!({
        "x-guidance": x_guidance(),
        "type": "object",
        "properties": {"name": {"const": f.name}, key: params},
        "required": ["name", key],
        "additionalProperties": false,
    })
}

/// A marker in a rule: a special token by id where the tokenizer has one, else its text.
fn marker(text: &str, special: &dyn Fn(&str) -> Option<u32>) -> String {
    match special(text) {
        Some(id) => format!("<[{id}]>"),
        None => serde_json::to_string(text).unwrap_or_default(),
    }
}

/// The Lark grammar for a request's tools. `special` finds a special token's id.
pub fn grammar(
    format: ToolFormat,
    functions: &[Function],
    choice: &ToolChoice,
    parallel: bool,
    special: &dyn Fn(&str) -> Option<u32>,
) -> String {
    let chosen: Vec<&Function> = match choice {
        ToolChoice::Named(n) => functions.iter().filter(|f| &f.name == n).collect(),
        _ => functions.iter().collect(),
    };
    let mut rules: Vec<String> = chosen
        .iter()
        .enumerate()
        .map(|(i, f)| format!("fn_{i}: %json {}", call_schema(format, f)))
        .collect();
    let fns: Vec<String> = (0..chosen.len()).map(|i| format!("fn_{i}")).collect();
    rules.push(format!("fn: {}", fns.join(" | ")));
    let many = parallel && !matches!(choice, ToolChoice::Named(_));
    let forced = !matches!(choice, ToolChoice::Auto);
    rules.extend(format_rules(format, many, forced, special));
    rules.push(r"TEXT: /(.|\n)*/".to_string());
    rules.join("\n")
}

/// `start` and the call rules of one format. `calls` is one call or (`many`) several.
fn format_rules(format: ToolFormat, many: bool, forced: bool, special: &dyn Fn(&str) -> Option<u32>) -> Vec<String> {
    let rep = |sep: &str, item: &str| match many {
        true => format!("{item} ({sep:?} {item})*"),
        false => item.to_string(),
    };
    match format {
        ToolFormat::Hermes => {
            let (open, close) = (marker(HERMES_OPEN, special), marker(HERMES_CLOSE, special));
            let body = format!("\"\\n\" fn \"\\n\" {close}");
            let mut r = vec![format!("call: {open} {body}"), format!("calls: {}", rep("\n", "call"))];
            let more = if many { r#" ("\n" call)*"# } else { "" };
            match (forced, special(HERMES_OPEN).is_some()) {
                (true, _) => r.push("start: calls".into()),
                (false, true) => r.push(format!("start: TEXT | TEXT? {open} {body}{more}")),
                (false, false) => {
                    r.push(format!("lead[lazy]: TEXT {open}"));
                    r.push(format!("start: TEXT | lead {body}{more}"));
                }
            }
            r
        }
        ToolFormat::Mistral => {
            let open = marker(MISTRAL_CALLS, special);
            let mut r = vec![format!("calls: {open} \"[\" {} \"]\"", rep(", ", "fn"))];
            r.push(match forced {
                true => "start: calls".into(),
                // Text may not open with `[`, so it cannot hide an unconstrained call.
                false => "start: PLAIN | calls\nPLAIN: /([^\\[](.|\\n)*)?/".into(),
            });
            r
        }
        ToolFormat::Llama3Json => {
            let tag = match special(PYTHON_TAG) {
                Some(id) => format!("(<[{id}]>)?"),
                None => String::new(),
            };
            let mut r = vec![format!("calls: {tag} {}", rep("; ", "fn"))];
            r.push(match forced {
                true => "start: calls".into(),
                false => r"start: PLAIN | calls
PLAIN: /([^{](.|\n)*)?/"
                    .into(),
            });
            r
        }
    }
}
