//! Evaluation datasets (JSON Lines) and how an answer is scored against them.
//!
//! Owns: `EvalItem` (one chat request with its expected key fact, reference answer and
//! rejected strings), loading a `.jsonl` file with line-numbered errors, text normalisation and
//! the two scores: key-fact match and normalised exact match.
//! Must not: run a model or talk to a server.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::EvalError;
use crate::chat_template::ChatMessage;

/// One expected string or several alternatives (any one counts).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    pub fn all(&self) -> Vec<&str> {
        match self {
            OneOrMany::One(s) => vec![s.as_str()],
            OneOrMany::Many(v) => v.iter().map(String::as_str).collect(),
        }
    }
}

/// One dataset line: `{"id", "kind", "messages", "expected", "answer", "reject"}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalItem {
    #[serde(default)]
    pub id: String,
    /// Grouping for the per-kind table, e.g. `fact/price`; the part before `/` is the group.
    #[serde(default)]
    pub kind: String,
    pub messages: Vec<ChatMessage>,
    /// The key fact the answer must contain (after normalisation).
    pub expected: OneOrMany,
    /// The full reference answer, for the normalised exact-match score.
    #[serde(default)]
    pub answer: Option<String>,
    /// Strings whose presence makes the answer wrong (e.g. the losing product of a comparison).
    #[serde(default)]
    pub reject: Vec<String>,
}

/// Read a JSON Lines dataset; blank lines are skipped, a bad line is named by number.
pub fn load(path: &Path) -> Result<Vec<EvalItem>, EvalError> {
    let text = std::fs::read_to_string(path).map_err(|e| EvalError::Dataset {
        path: path.display().to_string(),
        line: 0,
        message: e.to_string(),
    })?;
    let mut items = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let bad = |message: String| EvalError::Dataset {
            path: path.display().to_string(),
            line: i + 1,
            message,
        };
        let mut item: EvalItem = serde_json::from_str(line).map_err(|e| bad(e.to_string()))?;
        if item.messages.is_empty() {
            return Err(bad("`messages` is empty".into()));
        }
        if item.expected.all().iter().all(|e| normalise(e).is_empty()) {
            return Err(bad("`expected` has no letters or digits".into()));
        }
        if item.id.is_empty() {
            item.id = format!("line-{}", i + 1);
        }
        items.push(item);
    }
    if items.is_empty() {
        return Err(EvalError::Dataset {
            path: path.display().to_string(),
            line: 0,
            message: "no items".into(),
        });
    }
    Ok(items)
}

/// Lower case, digit-group commas dropped (`1,299` → `1299`), every character other than a
/// letter, a digit or a decimal point between digits turned into a space, spaces collapsed.
pub fn normalise(text: &str) -> String {
    let chars: Vec<char> = text.to_lowercase().chars().collect();
    let digit = |i: Option<usize>| i.and_then(|i| chars.get(i)).is_some_and(|c| c.is_ascii_digit());
    let mut out = String::with_capacity(chars.len());
    for (i, &c) in chars.iter().enumerate() {
        let between_digits = digit(i.checked_sub(1)) && digit(Some(i + 1));
        match c {
            ',' if between_digits => {}
            '.' if between_digits => out.push('.'),
            c if c.is_alphanumeric() => out.push(c),
            _ => out.push(' '),
        }
    }
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Whether `needle` occurs in `haystack` as whole words (both already normalised).
fn contains_words(haystack: &str, needle: &str) -> bool {
    !needle.is_empty() && format!(" {haystack} ").contains(&format!(" {needle} "))
}

/// Scores of one answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Score {
    /// An expected key fact is present and no rejected string is.
    pub key_fact: bool,
    /// The whole answer equals the reference answer after normalisation (false without one).
    pub exact: bool,
}

impl EvalItem {
    pub fn score(&self, output: &str) -> Score {
        let out = normalise(output);
        let hit = self.expected.all().iter().any(|e| contains_words(&out, &normalise(e)));
        let rejected = self.reject.iter().any(|r| contains_words(&out, &normalise(r)));
        Score {
            key_fact: hit && !rejected,
            exact: self.answer.as_deref().is_some_and(|a| normalise(a) == out),
        }
    }

    /// The group shown in the per-kind table: `fact/price` → `fact`; empty → `all`.
    pub fn group(&self) -> &str {
        match self.kind.split('/').next() {
            Some(g) if !g.is_empty() => g,
            _ => "all",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(expected: &str, answer: Option<&str>, reject: &[&str]) -> EvalItem {
        EvalItem {
            id: "x".into(),
            kind: "fact/price".into(),
            messages: vec![ChatMessage::new("user", "q")],
            expected: OneOrMany::One(expected.into()),
            answer: answer.map(str::to_string),
            reject: reject.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn normalisation_keeps_numbers_and_drops_punctuation() {
        assert_eq!(normalise("  The Drill costs $1,299.99! "), "the drill costs 1299.99");
        assert_eq!(normalise("3-year warranty."), "3 year warranty");
        assert_eq!(normalise("rated 4.5 out of 5."), "rated 4.5 out of 5");
        assert_eq!(normalise("a, b"), "a b");
    }

    #[test]
    fn key_fact_needs_whole_words_and_no_rejected_string() {
        let it = item("$129.99", Some("It costs $129.99."), &[]);
        assert!(it.score("The X costs $129.99.").key_fact);
        assert!(!it.score("The X costs $1129.99.").key_fact);
        assert!(!it.score("The X costs $129.9.").key_fact);
        assert!(it.score("It costs $129.99").exact);
        assert!(!it.score("The X costs $129.99.").exact);
        let cmp = item("Voltrex Pro X3", None, &["Torqa Max A1"]);
        assert!(cmp.score("The Voltrex Pro X3 is cheaper.").key_fact);
        assert!(
            !cmp.score("The Voltrex Pro X3 is cheaper than the Torqa Max A1.")
                .key_fact
        );
        assert!(
            !cmp.score("The Voltrex Pro X3 is cheaper.").exact,
            "no reference answer: never exact"
        );
        let stock = item("in stock", None, &[]);
        assert!(!stock.score("Sorry, it is out of stock.").key_fact);
    }

    #[test]
    fn groups_come_from_the_kind_prefix() {
        let mut it = item("x", None, &[]);
        assert_eq!(it.group(), "fact");
        it.kind.clear();
        assert_eq!(it.group(), "all");
    }

    #[test]
    fn bad_lines_are_named_by_number() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.jsonl");
        let good = r#"{"messages":[{"role":"user","content":"hi"}],"expected":"x"}"#;
        std::fs::write(&path, format!("{good}\n\n{{\"messages\": []}}\n")).unwrap();
        let err = load(&path).unwrap_err().to_string();
        assert!(err.contains("d.jsonl line 3"), "{err}");
        std::fs::write(&path, format!("{good}\n")).unwrap();
        let items = load(&path).unwrap();
        assert_eq!(items[0].id, "line-1");
        std::fs::write(&path, "\n").unwrap();
        assert!(load(&path).unwrap_err().to_string().contains("no items"));
    }
}
