//! Rendering a model's Jinja chat template the way Hugging Face `transformers` does.
//!
//! Owns: the minijinja environment configured like HF's (`trim_blocks`, `lstrip_blocks`,
//! Python string methods, `raise_exception`, `strftime_now`, non-escaping `tojson`).
//! Templates are untrusted input (they come with model files): a render is bounded in work
//! (`FUEL`), in output (`MAX_OUTPUT`) and by minijinja's recursion limit, and nothing in it
//! can panic (`strftime_now` with a bad format is an error).
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

/// Most template instructions one render may run. A real template over a long chat with tools
/// needs well under 1% of it; `range(100000)` nested twice runs out in a fraction of a second.
const FUEL: u64 = 20_000_000;
/// Most bytes one render may produce (far above any context this engine serves).
pub const MAX_OUTPUT: usize = 32 << 20;

pub struct ChatTemplate {
    env: Environment<'static>,
}

fn raise_exception(msg: String) -> Result<Value, minijinja::Error> {
    Err(minijinja::Error::new(ErrorKind::InvalidOperation, msg))
}

/// `strftime_now(fmt)`; a format chrono cannot write (`%Q`) is an error, not a panic.
fn strftime_now(fmt: String) -> Result<String, minijinja::Error> {
    use std::fmt::Write;
    let mut out = String::new();
    write!(out, "{}", chrono::Local::now().format(&fmt))
        .map_err(|_| minijinja::Error::new(ErrorKind::InvalidOperation, format!("strftime_now: bad format `{fmt}`")))?;
    Ok(out)
}

/// The render's output, refusing to grow past `MAX_OUTPUT`.
struct Capped(Vec<u8>);

impl std::io::Write for Capped {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.0.len() + buf.len() > MAX_OUTPUT {
            return Err(std::io::Error::other(format!(
                "the template's output exceeds {} MiB",
                MAX_OUTPUT >> 20
            )));
        }
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
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
        env.set_fuel(Some(FUEL));
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
        let mut out = Capped(Vec::new());
        tmpl.render_captured_to(ctx, &mut out).map_err(|e| {
            let mut msg = e.to_string();
            let mut src = std::error::Error::source(&e);
            while let Some(s) = src {
                msg.push_str(&format!(": {s}"));
                src = s.source();
            }
            msg
        })?;
        String::from_utf8(out.0).map_err(|_| "the template's output is not UTF-8".to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(source: &str, content: &str) -> Result<String, String> {
        ChatTemplate::new(source)?.render(&[ChatMessage::new("user", content)], None, true, None, None)
    }

    #[test]
    fn hostile_templates_end_in_errors_not_hangs_blowups_or_panics() {
        let looping = "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}";
        let e = render(looping, "hi").unwrap_err();
        assert!(e.contains("fuel"), "{e}");
        let huge = "{% for m in messages %}{% for i in range(1000) %}{{ m.content }}{% endfor %}{% endfor %}";
        let e = render(huge, &"y".repeat(40 << 10)).unwrap_err();
        assert!(e.contains("exceeds 32 MiB"), "{e}");
        let e = render("{{ strftime_now('%Q%Z%Y') }}", "hi").unwrap_err();
        assert!(e.contains("bad format"), "{e}");
        let e = render("{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}", "hi").unwrap_err();
        assert!(e.contains("recursion"), "{e}");
        // The same shapes within bounds still render.
        assert_eq!(render(huge, "ab").unwrap().len(), 2000);
        assert_eq!(render("{{ strftime_now('%Y') }}", "hi").unwrap().len(), 4);
    }
}
