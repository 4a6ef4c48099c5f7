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

/// Where splitting resumes: everything before `pos` has been split and sent for good (its
/// content and every call in it, closed), and `mode` is what the text at `pos` is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cursor {
    pub pos: usize,
    pub mode: Mode,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Mode {
    /// The start of the answer (Llama 3 decides here between content and calls).
    #[default]
    Start,
    /// Text that may hold call markers (Hermes, and Mistral before `[TOOL_CALLS]`).
    Text,
    /// Between call objects (Llama 3 after the first call, Mistral inside its array).
    Objects,
    /// Everything from here on is content (text after the calls, or an answer without any).
    Content,
}

/// The text from a cursor split into what the user reads and the raw text of each call.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Segments {
    pub content: String,
    /// Each call's body text (JSON, maybe incomplete) and whether the call has ended.
    pub calls: Vec<(String, bool)>,
    /// The furthest point that is settled: no held-back text and no open call before it.
    pub settled: Cursor,
    /// How many of `calls`, and how many bytes of `content`, come before `settled`.
    pub settled_calls: usize,
    pub settled_content: usize,
}

impl Segments {
    fn at(from: Cursor) -> Segments {
        Segments {
            settled: from,
            ..Segments::default()
        }
    }

    /// Everything so far (content, closed calls) ends before `pos`, where `mode` begins.
    fn settle(&mut self, pos: usize, mode: Mode) {
        self.settled = Cursor { pos, mode };
        self.settled_calls = self.calls.len();
        self.settled_content = self.content.len();
    }
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

    /// Split the text generated so far, from `from` (a previous split's `settled`, or the
    /// default for the whole text). Unless `complete`, text that may still become a marker is
    /// held back from `content`.
    pub fn split(self, text: &str, from: Cursor, complete: bool) -> Segments {
        let mut out = Segments::at(from);
        match (self, from.mode) {
            (_, Mode::Content) => content_rest(text, from.pos, &mut out),
            (_, Mode::Objects) => objects(text, from.pos, self.separators(), complete, &mut out),
            (ToolFormat::Hermes, _) => split_hermes(text, from.pos, complete, &mut out),
            (ToolFormat::Llama3Json, _) => split_llama3(text, from.pos, complete, &mut out),
            (ToolFormat::Mistral, _) => split_mistral(text, from.pos, complete, &mut out),
        }
        out
    }

    /// Between call objects: the separator, and the byte that may close the list.
    fn separators(self) -> (u8, Option<u8>) {
        match self {
            ToolFormat::Mistral => (b',', Some(b']')),
            _ => (b';', None),
        }
    }
}

fn content_rest(text: &str, pos: usize, out: &mut Segments) {
    out.content.push_str(&text[pos..]);
    out.settle(text.len(), Mode::Content);
}

/// Text with markers from `pos`: content up to a marker (or up to text that may become one),
/// and what follows the marker.
fn marked_text(text: &str, pos: usize, marker: &str, complete: bool, out: &mut Segments) -> Option<usize> {
    let rest = &text[pos..];
    match rest.find(marker) {
        Some(k) => {
            out.content.push_str(&rest[..k]);
            out.settle(pos + k, Mode::Text);
            Some(pos + k + marker.len())
        }
        None => {
            let hold = if complete { 0 } else { partial_suffix(rest, marker) };
            out.content.push_str(&rest[..rest.len() - hold]);
            out.settle(text.len() - hold, Mode::Text);
            None
        }
    }
}

fn split_hermes(text: &str, mut pos: usize, complete: bool, out: &mut Segments) {
    while let Some(body) = marked_text(text, pos, HERMES_OPEN, complete, out) {
        let Some(e) = text[body..].find(HERMES_CLOSE) else {
            out.calls.push((text[body..].to_string(), complete));
            return;
        };
        out.calls.push((text[body..body + e].to_string(), true));
        pos = body + e + HERMES_CLOSE.len();
        out.settle(pos, Mode::Text);
    }
}

/// Call objects one after another from `i`, each optionally after `sep` (and whitespace);
/// after the last one an optional `close` byte, and what follows is content.
fn objects(text: &str, mut i: usize, (sep, close): (u8, Option<u8>), complete: bool, out: &mut Segments) {
    let s = text.as_bytes();
    loop {
        i = scan::skip_ws(s, i);
        if s.get(i) == Some(&sep) {
            i = scan::skip_ws(s, i + 1);
        }
        match s.get(i) {
            None => return,
            Some(b'{') => {}
            Some(&b) => {
                let after = i + usize::from(Some(b) == close);
                return content_rest(text, after, out);
            }
        }
        let Some(end) = scan::value_end(s, i, complete) else {
            out.calls.push((text[i..].to_string(), complete));
            return;
        };
        out.calls.push((text[i..end].to_string(), true));
        out.settle(end, Mode::Objects);
        i = end;
    }
}

fn split_llama3(text: &str, pos: usize, complete: bool, out: &mut Segments) {
    let t = text[pos..].trim_start();
    if !complete && PYTHON_TAG.starts_with(t) {
        return; // undecided: nothing but whitespace or part of the tag yet
    }
    let start = text.len() - t.len() + if t.starts_with(PYTHON_TAG) { PYTHON_TAG.len() } else { 0 };
    match text[start..].trim_start().starts_with('{') {
        true => objects(text, start, (b';', None), complete, out),
        false => content_rest(text, pos, out),
    }
}

fn split_mistral(text: &str, pos: usize, complete: bool, out: &mut Segments) {
    let Some(after) = marked_text(text, pos, MISTRAL_CALLS, complete, out) else {
        return;
    };
    let s = text.as_bytes();
    let i = scan::skip_ws(s, after);
    match s.get(i) {
        Some(b'[') => objects(text, i + 1, ToolFormat::Mistral.separators(), complete, out),
        _ => objects(text, i, ToolFormat::Mistral.separators(), complete, out),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn whole(format: ToolFormat, text: &str, complete: bool) -> Segments {
        format.split(text, Cursor::default(), complete)
    }

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
        let s = whole(ToolFormat::Hermes, "Let me look.<tool_c", false);
        assert_eq!(s.content, "Let me look.");
        let s = whole(ToolFormat::Hermes, "a <tool_c", true);
        assert_eq!(s.content, "a <tool_c");
        let s = whole(
            ToolFormat::Hermes,
            "x<tool_call>\n{\"a\"}\n</tool_call>\n<tool_call>{",
            false,
        );
        assert_eq!(s.content, "x\n");
        assert_eq!(
            s.calls,
            vec![("\n{\"a\"}\n".to_string(), true), ("{".to_string(), false)]
        );
    }

    #[test]
    fn llama3_and_mistral_split() {
        assert_eq!(whole(ToolFormat::Llama3Json, " <|python", false), Segments::default());
        let s = whole(ToolFormat::Llama3Json, r#"{"name": "a"}; {"name": "b""#, false);
        assert_eq!(s.calls.len(), 2);
        assert_eq!(s.calls[1], (r#"{"name": "b""#.to_string(), false));
        assert_eq!(whole(ToolFormat::Llama3Json, "Hi {x}", false).content, "Hi {x}");
        let s = whole(
            ToolFormat::Mistral,
            r#"ok[TOOL_CALLS] [{"name": "a"}, {"name": "b"}]"#,
            true,
        );
        assert_eq!(s.content, "ok");
        assert_eq!(s.calls.iter().filter(|c| c.1).count(), 2);
    }

    /// Resuming from each split's `settled` cursor, prefix by prefix, adds up to the split
    /// of the whole text: nothing before a cursor is ever needed again.
    #[test]
    fn resumed_splits_add_up_to_the_whole() {
        let cases = [
            (ToolFormat::Hermes, "Let me see.\n<tool_call>\n{\"name\": \"a\"}\n</tool_call>\nand <tool_call>{\"name\": \"b\"}</tool_call> done"),
            (ToolFormat::Llama3Json, " <|python_tag|>{\"name\": \"a\"}; {\"name\": \"b\", \"parameters\": {\"x\": [1, 2]}} ok"),
            (ToolFormat::Llama3Json, "Plain {text} answer"),
            (ToolFormat::Mistral, "Hm [TOOL_CALLS] [{\"name\": \"a\"}, {\"name\": \"b\"}] after"),
        ];
        for (format, text) in cases {
            let full = whole(format, text, true);
            let (mut cursor, mut content, mut calls) = (Cursor::default(), String::new(), Vec::new());
            for end in (1..=text.len()).filter(|&e| text.is_char_boundary(e)) {
                let seg = format.split(&text[..end], cursor, end == text.len());
                if end == text.len() {
                    content.push_str(&seg.content);
                    calls.extend(seg.calls);
                    break;
                }
                assert!(
                    seg.settled.pos >= cursor.pos && seg.settled.pos <= end,
                    "{format:?} at {end}"
                );
                content.push_str(&seg.content[..seg.settled_content]);
                calls.extend(seg.calls[..seg.settled_calls].iter().cloned());
                assert!(seg.calls[..seg.settled_calls].iter().all(|c| c.1));
                cursor = seg.settled;
            }
            assert_eq!((content, calls), (full.content, full.calls), "{format:?}");
        }
        let s = whole(ToolFormat::Mistral, "[TOOL_CALLS][{\"name\": \"a\"}]", false);
        assert_eq!((s.settled.mode, s.settled_calls), (Mode::Content, 1));
    }
}
