//! The tool fields of a chat request: `tools`, `tool_choice`, `parallel_tool_calls`, and the
//! tool-call history in `messages` (assistant `tool_calls`, `role: "tool"` answers).
//!
//! Owns: checking them (400s naming the field), the grammar that constrains calls, and the
//! special tokens the format needs kept in the text. Must not: render templates (the
//! tokenizer does, with the `tools` list passed through as the client sent it) or shape
//! responses.

use serde_json::Value;

use super::api::{ChatMessageIn, ChatRequest};
use super::errors::ApiError;
use crate::chat_template::ChatMessage;
use crate::grammar::{Grammar, GrammarSpec, Grammars};
use crate::tokenizer::TextTokenizer;
use crate::tools::{lark, Function, ToolChoice, ToolFormat};

/// How a request uses tools, once checked.
#[derive(Debug, Clone)]
pub struct ToolPlan {
    /// The tool objects for the chat template (`None` when the request has no tools).
    pub template_tools: Option<Value>,
    /// Output is read as calls in this format (`None` with `tool_choice: "none"`).
    pub parse: Option<ToolFormat>,
    pub grammar: Option<Grammar>,
    pub keep_special: Vec<u32>,
}

fn function(i: usize, t: &Value) -> Result<Function, ApiError> {
    let at = |f: &str| format!("tools[{i}]{f}");
    if t.get("type").and_then(Value::as_str) != Some("function") {
        return Err(ApiError::invalid(
            &at(".type"),
            "only tools of type `function` are supported",
        ));
    }
    let f = t
        .get("function")
        .filter(|f| f.is_object())
        .ok_or_else(|| ApiError::invalid(&at(".function"), "a function tool needs a `function` object"))?;
    let name = f.get("name").and_then(Value::as_str).unwrap_or_default();
    let valid =
        (1..=64).contains(&name.len()) && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if !valid {
        return Err(ApiError::invalid(
            &at(".function.name"),
            "a function name is 1 to 64 letters, digits, `_` or `-`",
        ));
    }
    let parameters = f.get("parameters").cloned().unwrap_or(Value::Null);
    if !parameters.is_null() && !parameters.is_object() {
        return Err(ApiError::invalid(
            &at(".function.parameters"),
            "parameters must be a JSON Schema object",
        ));
    }
    Ok(Function {
        name: name.to_string(),
        parameters,
    })
}

pub fn functions(tools: &Value) -> Result<Vec<Function>, ApiError> {
    let list = tools
        .as_array()
        .filter(|l| !l.is_empty())
        .ok_or_else(|| ApiError::invalid("tools", "tools must be a non-empty array of tool objects"))?;
    let fns = list
        .iter()
        .enumerate()
        .map(|(i, t)| function(i, t))
        .collect::<Result<Vec<_>, _>>()?;
    for (i, f) in fns.iter().enumerate() {
        if fns[..i].iter().any(|g| g.name == f.name) {
            return Err(ApiError::invalid(
                &format!("tools[{i}].function.name"),
                format!("two tools are named `{}`", f.name),
            ));
        }
    }
    Ok(fns)
}

/// `tool_choice`: `None` means `"none"`.
fn choice(v: Option<&Value>, fns: &[Function]) -> Result<Option<ToolChoice>, ApiError> {
    let bad = || {
        ApiError::invalid(
            "tool_choice",
            "tool_choice is \"none\", \"auto\", \"required\" or {\"type\": \"function\", \"function\": {\"name\": ...}}",
        )
    };
    match v {
        None | Some(Value::Null) => Ok(Some(ToolChoice::Auto)),
        Some(Value::String(s)) => match s.as_str() {
            "none" => Ok(None),
            "auto" => Ok(Some(ToolChoice::Auto)),
            "required" => Ok(Some(ToolChoice::Required)),
            _ => Err(bad()),
        },
        Some(o) if o.get("type").and_then(Value::as_str) == Some("function") => {
            let name = o.pointer("/function/name").and_then(Value::as_str).ok_or_else(bad)?;
            if !fns.iter().any(|f| f.name == name) {
                return Err(ApiError::invalid(
                    "tool_choice",
                    format!("tool_choice names `{name}`, which is not in `tools`"),
                ));
            }
            Ok(Some(ToolChoice::Named(name.to_string())))
        }
        Some(_) => Err(bad()),
    }
}

/// Check the tool fields and build what the engine and the response need.
pub fn plan(
    body: &ChatRequest,
    format: Option<ToolFormat>,
    tok: &TextTokenizer,
    grammars: &Grammars,
) -> Result<ToolPlan, ApiError> {
    let none = ToolPlan {
        template_tools: None,
        parse: None,
        grammar: None,
        keep_special: Vec::new(),
    };
    let Some(tools) = body.tools.as_ref().filter(|t| !t.is_null()) else {
        let asked = |v: &Option<Value>| v.as_ref().is_some_and(|v| !v.is_null() && v != "none");
        if asked(&body.tool_choice) {
            return Err(ApiError::invalid("tool_choice", "tool_choice needs `tools`"));
        }
        if body.parallel_tool_calls.is_some() {
            return Err(ApiError::invalid(
                "parallel_tool_calls",
                "parallel_tool_calls needs `tools`",
            ));
        }
        return Ok(none);
    };
    let fns = functions(tools)?;
    let Some(choice) = choice(body.tool_choice.as_ref(), &fns)? else {
        return Ok(ToolPlan {
            template_tools: Some(tools.clone()),
            ..none
        });
    };
    let format = format.ok_or_else(|| {
        ApiError::invalid(
            "tools",
            "this model's chat template has no tool-call format Aisle recognises; start the server with --tool-call-parser hermes|llama3_json|mistral",
        )
    })?;
    let special = |t: &str| tok.special_token_id(t);
    let parallel = body.parallel_tool_calls.unwrap_or(true);
    let lark = lark::grammar(format, &fns, &choice, parallel, &special);
    let grammar = grammars.compile(&GrammarSpec::Lark(lark)).map_err(|e| {
        ApiError::invalid(
            "tools",
            format!("tools: a function's parameters cannot be enforced: {e}"),
        )
    })?;
    Ok(ToolPlan {
        template_tools: Some(tools.clone()),
        parse: Some(format),
        grammar: Some(grammar),
        keep_special: format.markers().iter().filter_map(|m| special(m)).collect(),
    })
}

/// An assistant message's `tool_calls` as templates expect them: `arguments` parsed from
/// the JSON string OpenAI sends into an object.
pub fn history_calls(i: usize, m: &ChatMessageIn) -> Result<Option<Vec<Value>>, ApiError> {
    let Some(calls) = m.tool_calls.as_ref().filter(|c| !c.is_null()) else {
        return Ok(None);
    };
    let list = calls
        .as_array()
        .ok_or_else(|| ApiError::invalid(&format!("messages[{i}].tool_calls"), "tool_calls must be an array"))?;
    let mut out = Vec::with_capacity(list.len());
    for (j, c) in list.iter().enumerate() {
        let at = format!("messages[{i}].tool_calls[{j}].function");
        let mut c = c.clone();
        let f = c
            .get_mut("function")
            .filter(|f| f.get("name").is_some_and(Value::is_string))
            .ok_or_else(|| ApiError::invalid(&at, "a tool call needs `function` with a `name`"))?;
        if let Some(Value::String(args)) = f.get("arguments") {
            let parsed: Value = serde_json::from_str(args)
                .map_err(|e| ApiError::invalid(&format!("{at}.arguments"), format!("arguments are not JSON: {e}")))?;
            f["arguments"] = parsed;
        }
        out.push(c);
    }
    Ok(Some(out))
}

/// One message with its tool fields, `content` as flattened text.
pub fn message(i: usize, m: &ChatMessageIn, content: Option<String>) -> Result<ChatMessage, ApiError> {
    let tool_calls = history_calls(i, m)?;
    if m.role == "tool" && m.tool_call_id.is_none() {
        return Err(ApiError::invalid(
            &format!("messages[{i}].tool_call_id"),
            "a tool message needs the `tool_call_id` it answers",
        ));
    }
    let content = match (content, &tool_calls) {
        (None, Some(_)) => None,
        (c, _) => Some(c.unwrap_or_default()),
    };
    // OpenAI's `developer` is the system message of its newer models; templates know `system`.
    let role = match m.role.as_str() {
        "developer" => "system".to_string(),
        r => r.to_string(),
    };
    Ok(ChatMessage {
        role,
        content,
        tool_calls,
        tool_call_id: m.tool_call_id.clone(),
        name: m.name.clone(),
    })
}
