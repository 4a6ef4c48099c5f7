//! Tool calling: the functions a request offers, how each model family writes a call
//! (`format`), the grammar that constrains calls (`lark`), and turning generated text into
//! OpenAI `tool_calls` as it streams (`scan`, `stream`).
//!
//! Owns: the typed tool request (`Function`, `ToolChoice`). Must not: know HTTP (the server
//! validates request JSON into these types and shapes the responses) or run the engine.

pub mod format;
pub mod lark;
pub mod scan;
pub mod stream;

use serde_json::Value;

pub use format::ToolFormat;
pub use stream::{parse, ToolCall, ToolDelta, ToolStream, Turn};

/// A function the model may call.
#[derive(Debug, Clone, PartialEq)]
pub struct Function {
    pub name: String,
    /// JSON Schema of the arguments object (`Null` when the tool gave none).
    pub parameters: Value,
}

/// Which calls the model must make (`none` never reaches here: it needs no grammar).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToolChoice {
    /// Text or calls, as the model decides; a call is constrained once it starts.
    Auto,
    /// At least one call.
    Required,
    /// Exactly one call of this function.
    Named(String),
}

/// The tool-call format a model directory's chat template writes, if any, read without loading
/// the tokenizer: what decides whether the model can use built-in tools.
pub fn detect_in_dir(dir: &std::path::Path) -> Option<ToolFormat> {
    crate::tokenizer::template_source(dir).and_then(|t| ToolFormat::detect(&t))
}

/// `--tool-call-parser`: a fixed format, detection from the chat template, or no tool calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ParserChoice {
    #[default]
    Auto,
    Off,
    Fixed(ToolFormat),
}

impl std::str::FromStr for ParserChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<ParserChoice, String> {
        match s {
            "auto" => Ok(ParserChoice::Auto),
            "none" => Ok(ParserChoice::Off),
            other => other.parse().map(ParserChoice::Fixed),
        }
    }
}

impl ParserChoice {
    /// The format in use, given what detection found in the template.
    pub fn resolve(self, detected: Option<ToolFormat>) -> Option<ToolFormat> {
        match self {
            ParserChoice::Auto => detected,
            ParserChoice::Off => None,
            ParserChoice::Fixed(f) => Some(f),
        }
    }
}
