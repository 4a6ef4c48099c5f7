//! Rendering a model's Jinja chat template the way Hugging Face `transformers` does.
//!
//! Owns: the minijinja environment configured like HF's (`trim_blocks`, `lstrip_blocks`,
//! Python string methods, `raise_exception`, `strftime_now`, non-escaping `tojson`).
//! Must not: tokenize; it produces the prompt text only.

use minijinja::{Environment, ErrorKind, Value};
use serde::{Deserialize, Serialize};
use serde_json::Value as JsonValue;

/// One chat turn as OpenAI's API and HF templates see it. Fields a message does not have are
/// left out (templates test them with `is defined`); `content` is `null` only when the
/// client sent none with tool calls.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: String,
    pub content: Option<String>,
    /// An assistant's calls, `function.arguments` as an object (as HF templates expect).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<JsonValue>>,
    /// A `tool` message: which call it answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

impl ChatMessage {
    pub fn new(role: &str, content: &str) -> ChatMessage {
        ChatMessage {
            role: role.to_string(),
            content: Some(content.to_string()),
            tool_calls: None,
            tool_call_id: None,
            name: None,
        }
    }
}

pub struct ChatTemplate {
    env: Environment<'static>,
}

fn raise_exception(msg: String) -> Result<Value, minijinja::Error> {
    Err(minijinja::Error::new(ErrorKind::InvalidOperation, msg))
}

fn strftime_now(fmt: String) -> String {
    chrono::Local::now().format(&fmt).to_string()
}

/// `tojson` as HF registers it: `json.dumps(x, ensure_ascii=False)`, no HTML escaping.
fn tojson(value: Value, indent: Option<usize>) -> Result<Value, minijinja::Error> {
    let json =
        serde_json::to_value(&value).map_err(|e| minijinja::Error::new(ErrorKind::InvalidOperation, e.to_string()))?;
    Ok(Value::from_safe_string(crate::pyjson::dumps(&json, indent)))
}

impl ChatTemplate {
    /// Compile a template source; errors carry minijinja's description (line and cause).
    pub fn new(source: &str) -> Result<ChatTemplate, String> {
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", raise_exception);
        env.add_function("strftime_now", strftime_now);
        env.add_filter("tojson", tojson);
        env.add_template_owned("chat", source.to_string())
            .map_err(|e| e.to_string())?;
        Ok(ChatTemplate { env })
    }

    /// Render `messages` (and `tools`, a list of OpenAI tool objects, passed as
    /// `apply_chat_template(tools=...)` does: `none` when absent) into the prompt text.
    pub fn render(
        &self,
        messages: &[ChatMessage],
        tools: Option<&JsonValue>,
        add_generation_prompt: bool,
        bos: Option<&str>,
        eos: Option<&str>,
    ) -> Result<String, String> {
        let tmpl = self.env.get_template("chat").map_err(|e| e.to_string())?;
        let ctx = minijinja::context! {
            messages => messages,
            tools => Value::from_serialize(tools),
            add_generation_prompt => add_generation_prompt,
            bos_token => bos.unwrap_or(""),
            eos_token => eos.unwrap_or(""),
        };
        tmpl.render(ctx).map_err(|e| {
            let mut msg = e.to_string();
            let mut src = std::error::Error::source(&e);
            while let Some(s) = src {
                msg.push_str(&format!(": {s}"));
                src = s.source();
            }
            msg
        })
    }
}
