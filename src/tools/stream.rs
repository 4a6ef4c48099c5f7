//! One choice's text becoming OpenAI's tool-call deltas as it is generated, and the whole
//! turn it amounts to at the end.
//!
//! Owns: `ToolStream` (what has been sent: content bytes, per call the id, name and argument
//! bytes; where splitting resumes, so each token costs the text after the last closed call,
//! not the whole answer) and call ids. Non-streamed answers go through the same `ToolStream`
//! (`parse`), so a streamed answer reassembles to exactly the non-streamed one.
//! Must not: know HTTP or JSON response shapes (`server::shape` does).

use rand::distr::{Alphanumeric, SampleString};

use super::format::{Cursor, ToolFormat};
use super::scan;

/// Something to send for one choice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToolDelta {
    Content(String),
    /// A call begins: its first delta carries `index`, `id`, `type` and the name.
    Start {
        index: usize,
        id: String,
        name: String,
    },
    /// More of a call's `function.arguments` text.
    Args {
        index: usize,
        fragment: String,
    },
}

/// One parsed call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    pub arguments: String,
}

/// The turn as the client sees it: text (trimmed; `None` when empty) and calls.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Turn {
    pub content: Option<String>,
    pub calls: Vec<ToolCall>,
}

pub struct ToolStream {
    format: ToolFormat,
    text: String,
    /// Where the next split starts, and how many calls and content bytes lie before it.
    cursor: Cursor,
    settled_calls: usize,
    settled_raw: usize,
    /// The content text as split (untrimmed); what was sent is its trimmed form.
    raw: String,
    content: String,
    calls: Vec<ToolCall>,
    finished: bool,
}

/// A whole answer as one turn (what a non-streamed response returns).
pub fn parse(format: ToolFormat, text: &str) -> Turn {
    let mut s = ToolStream::new(format);
    s.push(text);
    s.finish();
    s.turn()
}

/// A new call id: Mistral's templates require 9 alphanumerics, others get OpenAI's style.
fn call_id(format: ToolFormat) -> String {
    let mut rng = rand::rng();
    match format {
        ToolFormat::Mistral => Alphanumeric.sample_string(&mut rng, 9),
        _ => format!("call_{}", Alphanumeric.sample_string(&mut rng, 24)),
    }
}

impl ToolStream {
    pub fn new(format: ToolFormat) -> ToolStream {
        ToolStream {
            format,
            text: String::new(),
            cursor: Cursor::default(),
            settled_calls: 0,
            settled_raw: 0,
            raw: String::new(),
            content: String::new(),
            calls: Vec::new(),
            finished: false,
        }
    }

    /// Add generated text; returns what can be sent now.
    pub fn push(&mut self, text: &str) -> Vec<ToolDelta> {
        self.text.push_str(text);
        self.emit(false)
    }

    /// The text has ended: send what was held back.
    pub fn finish(&mut self) -> Vec<ToolDelta> {
        if self.finished {
            return Vec::new();
        }
        let out = self.emit(true);
        self.finished = true;
        out
    }

    /// Everything sent so far, as one turn.
    pub fn turn(&self) -> Turn {
        Turn {
            content: Some(self.content.clone()).filter(|c| !c.is_empty()),
            calls: self.calls.clone(),
        }
    }

    fn emit(&mut self, complete: bool) -> Vec<ToolDelta> {
        let seg = self.format.split(&self.text, self.cursor, complete);
        let mut out = Vec::new();
        self.raw.truncate(self.settled_raw);
        self.raw.push_str(&seg.content);
        // Content: leading whitespace dropped, trailing whitespace held until more follows.
        let shown = self.raw.trim();
        if let Some(new) = shown.get(self.content.len()..).filter(|n| !n.is_empty()) {
            self.content.push_str(new);
            out.push(ToolDelta::Content(new.to_string()));
        }
        let mut done = 0;
        for (k, (body, closed)) in seg.calls.iter().enumerate() {
            match self.call_deltas(self.settled_calls + k, body, *closed, &mut out) {
                true if done == k => done += 1,
                true => {}
                false => break,
            }
        }
        // Resume after the settled calls only when each was sent whole.
        if done >= seg.settled_calls {
            self.cursor = seg.settled;
            self.settled_calls += seg.settled_calls;
            self.settled_raw += seg.settled_content;
        }
        out
    }

    /// Send what is new of call `index`; false when it has no name yet (nothing after it can
    /// be sent), true when it is sent and, if `closed`, sent whole.
    fn call_deltas(&mut self, index: usize, body: &str, closed: bool, out: &mut Vec<ToolDelta>) -> bool {
        let scan = scan::call(body, self.format.arg_keys(), closed);
        if index == self.calls.len() {
            let Some(name) = scan.name.clone() else { return false };
            let id = call_id(self.format);
            out.push(ToolDelta::Start {
                index,
                id: id.clone(),
                name: name.clone(),
            });
            self.calls.push(ToolCall {
                id,
                name,
                arguments: String::new(),
            });
        }
        let args = sendable_args(&scan, closed);
        let sent = &mut self.calls[index].arguments;
        if let Some(new) = args
            .get(sent.len()..)
            .filter(|n| !n.is_empty() && args.starts_with(sent.as_str()))
        {
            sent.push_str(new);
            out.push(ToolDelta::Args {
                index,
                fragment: new.to_string(),
            });
        }
        !closed || *sent == args
    }
}

/// The argument text that can be sent: an object or array as it grows; a JSON string holding
/// JSON only once complete (decoded); `{}` for a finished call that gave none.
fn sendable_args(scan: &scan::CallScan, closed: bool) -> String {
    match &scan.args {
        Some(raw) if scan.args_quoted => match scan.args_complete {
            true => serde_json::from_str::<String>(raw).unwrap_or_default(),
            false => String::new(),
        },
        Some(raw) if raw.starts_with(['{', '[']) || scan.args_complete => raw.clone(),
        Some(_) => String::new(),
        None if closed && scan.name.is_some() => "{}".to_string(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(format: ToolFormat, text: &str, step: usize) -> (Vec<ToolDelta>, Turn) {
        let mut s = ToolStream::new(format);
        let mut all = Vec::new();
        let chars: Vec<char> = text.chars().collect();
        for piece in chars.chunks(step) {
            all.extend(s.push(&piece.iter().collect::<String>()));
        }
        all.extend(s.finish());
        (all, s.turn())
    }

    /// The deltas, ids aside, reassembled into a turn.
    fn reassemble(deltas: &[ToolDelta]) -> (String, Vec<(String, String)>) {
        let mut content = String::new();
        let mut calls: Vec<(String, String)> = Vec::new();
        for d in deltas {
            match d {
                ToolDelta::Content(c) => content.push_str(c),
                ToolDelta::Start { index, name, .. } => {
                    assert_eq!(*index, calls.len());
                    calls.push((name.clone(), String::new()));
                }
                ToolDelta::Args { index, fragment } => calls[*index].1.push_str(fragment),
            }
        }
        (content, calls)
    }

    #[test]
    fn any_split_gives_the_same_turn() {
        let cases = [
            (ToolFormat::Hermes, "Checking.\n<tool_call>\n{\"name\": \"price\", \"arguments\": {\"sku\": \"D-1\"}}\n</tool_call>\n<tool_call>\n{\"name\": \"stock\", \"arguments\": {\"sku\": \"D-1\", \"store\": \"Zürich\"}}\n</tool_call>"),
            (ToolFormat::Llama3Json, "<|python_tag|>{\"name\": \"price\", \"parameters\": {\"sku\": \"D-1\"}}; {\"name\": \"stock\", \"parameters\": {}}"),
            (ToolFormat::Mistral, "[TOOL_CALLS][{\"name\": \"price\", \"arguments\": {\"sku\": \"D-1\"}}, {\"name\": \"stock\", \"arguments\": {\"n\": 3}}]"),
        ];
        for (format, text) in cases {
            let (whole, turn) = run(format, text, usize::MAX);
            let (content, calls) = reassemble(&whole);
            assert_eq!(calls.len(), 2, "{format:?}");
            assert_eq!(calls[0], ("price".into(), "{\"sku\": \"D-1\"}".into()));
            assert_eq!(turn.calls.len(), 2);
            for step in [1, 2, 3, 7] {
                let (deltas, t) = run(format, text, step);
                assert_eq!(
                    reassemble(&deltas),
                    (content.clone(), calls.clone()),
                    "{format:?} step {step}"
                );
                assert_eq!(t.content, turn.content);
            }
            if format == ToolFormat::Hermes {
                assert_eq!(turn.content.as_deref(), Some("Checking."));
            } else {
                assert_eq!(turn.content, None);
            }
        }
    }

    #[test]
    fn plain_text_stays_content_and_markup_never_leaks() {
        for step in [1, 4] {
            let (deltas, turn) = run(ToolFormat::Hermes, "  It costs 5 <tool", step);
            assert_eq!(turn.content.as_deref(), Some("It costs 5 <tool"));
            assert!(deltas.iter().all(|d| matches!(d, ToolDelta::Content(_))));
            let (deltas, _) = run(
                ToolFormat::Hermes,
                "<tool_call>\n{\"name\": \"f\", \"arguments\": {}}\n</tool_call>",
                step,
            );
            assert!(deltas.iter().all(|d| !matches!(d, ToolDelta::Content(_))), "{deltas:?}");
        }
        let (_, turn) = run(ToolFormat::Llama3Json, "The drill has 750 W.", 3);
        assert_eq!(
            (turn.content.as_deref(), turn.calls.len()),
            (Some("The drill has 750 W."), 0)
        );
    }

    #[test]
    fn ids_and_missing_or_quoted_arguments() {
        let (_, t) = run(ToolFormat::Mistral, "[TOOL_CALLS][{\"name\": \"a\"}]", 2);
        assert_eq!(t.calls[0].arguments, "{}");
        assert_eq!(t.calls[0].id.len(), 9);
        let (_, t) = run(
            ToolFormat::Hermes,
            "<tool_call>{\"name\": \"a\", \"arguments\": \"{\\\"x\\\": 1}\"}</tool_call>",
            3,
        );
        assert_eq!(t.calls[0].arguments, "{\"x\": 1}");
        assert!(t.calls[0].id.starts_with("call_") && t.calls[0].id.len() == 29);
    }
}
