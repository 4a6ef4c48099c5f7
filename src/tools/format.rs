//! The tool-call markup of each model family, and which one a chat template uses.
//!
//! Owns: `ToolFormat` (`hermes`, `llama3_json`, `mistral`), its detection from a template's
//! source, and splitting a model's (growing) text into content and call bodies.
//! Must not: scan JSON (`scan`), build grammars (`lark`) or decide what is streamed (`stream`).

use std::str::FromStr;

use super::scan;

/// How a model family writes tool calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ToolFormat {
    /// `<tool_call>\n{"name": ..., "arguments": {...}}\n</tool_call>`, one block per call
    /// (Qwen2.5/3, SmolLM3, Hermes and many fine-tunes).
    Hermes,
    /// `{"name": ..., "parameters": {...}}`, optionally after `<|python_tag|>`, several
    /// separated by `;` (Llama 3.1/3.2 JSON tool calling).
    Llama3Json,
    /// `[TOOL_CALLS][{"name": ..., "arguments": {...}}, ...]` (Mistral v3 tokenizers).
    Mistral,
}

pub const HERMES_OPEN: &str = "<tool_call>";
pub const HERMES_CLOSE: &str = "</tool_call>";
pub const PYTHON_TAG: &str = "<|python_tag|>";
pub const MISTRAL_CALLS: &str = "[TOOL_CALLS]";

/// A model's text split into what the user reads and the raw text of each call.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Segments {
    pub content: String,
    /// Each call's body text (JSON, maybe incomplete) and whether the call has ended.
    pub calls: Vec<(String, bool)>,
}

impl FromStr for ToolFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<ToolFormat, String> {
        match s {
            "hermes" => Ok(ToolFormat::Hermes),
            "llama3_json" => Ok(ToolFormat::Llama3Json),
            "mistral" => Ok(ToolFormat::Mistral),
            _ => Err(format!(
                "unknown tool-call parser `{s}` (hermes, llama3_json or mistral)"
            )),
        }
    }
}

/// Length of the longest suffix of `text` that is a proper prefix of `marker` (text that may
/// still become the marker, so it is held back). Markers are ASCII.
fn partial_suffix(text: &str, marker: &str) -> usize {
    (1..marker.len().min(text.len() + 1))
        .rev()
        .find(|&n| text.is_char_boundary(text.len() - n) && marker.starts_with(&text[text.len() - n..]))
        .unwrap_or(0)
}

impl ToolFormat {
    pub fn name(self) -> &'static str {
        match self {
            ToolFormat::Hermes => "hermes",
            ToolFormat::Llama3Json => "llama3_json",
            ToolFormat::Mistral => "mistral",
        }
    }

    /// The format a chat template writes, when exactly one format's marker is in its source.
    pub fn detect(template: &str) -> Option<ToolFormat> {
        let found: Vec<ToolFormat> = [
            (ToolFormat::Hermes, HERMES_OPEN),
            (ToolFormat::Llama3Json, PYTHON_TAG),
            (ToolFormat::Mistral, MISTRAL_CALLS),
        ]
        .into_iter()
        .filter(|(_, m)| template.contains(m))
        .map(|(f, _)| f)
        .collect();
        match found[..] {
            [one] => Some(one),
            _ => None,
        }
    }

    /// The keys a call object may name its arguments with, preferred first.
    pub fn arg_keys(self) -> &'static [&'static str] {
        match self {
            ToolFormat::Llama3Json => &["parameters", "arguments"],
            _ => &["arguments", "parameters"],
        }
    }

    /// Marker strings that must survive detokenization (they may be special tokens).
    pub fn markers(self) -> &'static [&'static str] {
        match self {
            ToolFormat::Hermes => &[HERMES_OPEN, HERMES_CLOSE],
            ToolFormat::Llama3Json => &[PYTHON_TAG],
            ToolFormat::Mistral => &[MISTRAL_CALLS],
        }
    }

    /// Split the text generated so far. Unless `complete`, text that may still become a
    /// marker is held back from `content`.
    pub fn split(self, text: &str, complete: bool) -> Segments {
        match self {
            ToolFormat::Hermes => split_hermes(text, complete),
            ToolFormat::Llama3Json => split_llama3(text, complete),
            ToolFormat::Mistral => split_mistral(text, complete),
        }
    }
}

fn split_hermes(text: &str, complete: bool) -> Segments {
    let mut out = Segments::default();
    let mut pos = 0;
    loop {
        let rest = &text[pos..];
        let Some(k) = rest.find(HERMES_OPEN) else {
            let hold = if complete { 0 } else { partial_suffix(rest, HERMES_OPEN) };
            out.content.push_str(&rest[..rest.len() - hold]);
            return out;
        };
        out.content.push_str(&rest[..k]);
        let body = pos + k + HERMES_OPEN.len();
        match text[body..].find(HERMES_CLOSE) {
            Some(e) => {
                out.calls.push((text[body..body + e].to_string(), true));
                pos = body + e + HERMES_CLOSE.len();
            }
            None => {
                out.calls.push((text[body..].to_string(), complete));
                return out;
            }
        }
    }
}

/// Call objects one after another from `start`, separated by `sep` (and whitespace); what
/// follows the last one is content.
fn objects(text: &str, mut i: usize, sep: u8, complete: bool, out: &mut Segments) {
    let s = text.as_bytes();
    loop {
        i = scan::skip_ws(s, i);
        if s.get(i) != Some(&b'{') {
            out.content.push_str(&text[i.min(s.len())..]);
            return;
        }
        match scan::value_end(s, i, complete) {
            None => {
                out.calls.push((text[i..].to_string(), complete));
                return;
            }
            Some(end) => {
                out.calls.push((text[i..end].to_string(), true));
                i = scan::skip_ws(s, end);
                if s.get(i) == Some(&sep) {
                    i += 1;
                }
            }
        }
    }
}

fn split_llama3(text: &str, complete: bool) -> Segments {
    let mut out = Segments::default();
    let lead = text.len() - text.trim_start().len();
    let t = &text[lead..];
    if !complete && PYTHON_TAG.starts_with(t) {
        return out; // undecided: nothing but whitespace or part of the tag yet
    }
    let start = lead + if t.starts_with(PYTHON_TAG) { PYTHON_TAG.len() } else { 0 };
    if text[start..].trim_start().starts_with('{') {
        objects(text, start, b';', complete, &mut out);
    } else {
        out.content = text.to_string();
    }
    out
}

fn split_mistral(text: &str, complete: bool) -> Segments {
    let mut out = Segments::default();
    let Some(k) = text.find(MISTRAL_CALLS) else {
        let hold = if complete {
            0
        } else {
            partial_suffix(text, MISTRAL_CALLS)
        };
        out.content = text[..text.len() - hold].to_string();
        return out;
    };
    out.content = text[..k].to_string();
    let s = text.as_bytes();
    let mut i = scan::skip_ws(s, k + MISTRAL_CALLS.len());
    if s.get(i) == Some(&b'[') {
        i += 1;
    }
    objects(text, i, b',', complete, &mut out);
    if let Some(tail) = out.content.get(k..) {
        // What follows the array is not content the model meant to show.
        let tail = tail.trim_start().trim_start_matches(']').to_string();
        out.content.truncate(k);
        out.content.push_str(&tail);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detection_needs_exactly_one_marker() {
        assert_eq!(ToolFormat::detect("{{ '<tool_call>' }}"), Some(ToolFormat::Hermes));
        assert_eq!(ToolFormat::detect("[TOOL_CALLS]"), Some(ToolFormat::Mistral));
        assert_eq!(ToolFormat::detect("<|python_tag|>"), Some(ToolFormat::Llama3Json));
        assert_eq!(ToolFormat::detect("<tool_call>[TOOL_CALLS]"), None);
        assert_eq!(ToolFormat::detect("plain"), None);
    }

    #[test]
    fn hermes_holds_back_a_marker_in_progress() {
        let s = ToolFormat::Hermes.split("Let me look.<tool_c", false);
        assert_eq!(s.content, "Let me look.");
        let s = ToolFormat::Hermes.split("a <tool_c", true);
        assert_eq!(s.content, "a <tool_c");
        let s = ToolFormat::Hermes.split("x<tool_call>\n{\"a\"}\n</tool_call>\n<tool_call>{", false);
        assert_eq!(s.content, "x\n");
        assert_eq!(
            s.calls,
            vec![("\n{\"a\"}\n".to_string(), true), ("{".to_string(), false)]
        );
    }

    #[test]
    fn llama3_and_mistral_split() {
        assert_eq!(ToolFormat::Llama3Json.split(" <|python", false), Segments::default());
        let s = ToolFormat::Llama3Json.split(r#"{"name": "a"}; {"name": "b""#, false);
        assert_eq!(s.calls.len(), 2);
        assert_eq!(s.calls[1], (r#"{"name": "b""#.to_string(), false));
        assert_eq!(ToolFormat::Llama3Json.split("Hi {x}", false).content, "Hi {x}");
        let s = ToolFormat::Mistral.split(r#"ok[TOOL_CALLS] [{"name": "a"}, {"name": "b"}]"#, true);
        assert_eq!(s.content, "ok");
        assert_eq!(s.calls.iter().filter(|c| c.1).count(), 2);
    }
}
