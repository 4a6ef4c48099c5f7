//! Text in and out: the HF `tokenizer.json`, special tokens and chat template from
//! `tokenizer_config.json` (or `chat_template.jinja`; or both built from a GGUF file's
//! metadata by `gguf::tokenizer`), and streaming detokenization.
//!
//! Owns: encoding prompts, rendering chats, and turning a growing list of token ids into text
//! deltas that never split a UTF-8 character.
//! Must not: sample or decide when generation stops.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;

use serde_json::Value;

use crate::chat_template::{ChatMessage, ChatTemplate};
use crate::model_dir::{read_optional, LoadError};

#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    #[error("tokenization failed: {0}")]
    Encode(String),
    #[error("detokenization failed: {0}")]
    Decode(String),
    #[error("this model has no chat template (tokenizer_config.json `chat_template` or chat_template.jinja); use a plain prompt")]
    NoChatTemplate,
    #[error("chat template failed: {0}")]
    Template(String),
}

/// A model's tokenizer with its special tokens and chat template. Cheap to clone.
#[derive(Clone)]
pub struct TextTokenizer {
    inner: Arc<tokenizers::Tokenizer>,
    chat: Option<Arc<ChatTemplate>>,
    /// The template's source (tool-call formats are detected from it).
    chat_source: Option<Arc<str>>,
    /// Added tokens marked special (skipped when decoding unless kept).
    special: Arc<HashMap<String, u32>>,
    pub bos_token: Option<String>,
    pub eos_token: Option<String>,
    pub pad_token: Option<String>,
    pub unk_token: Option<String>,
}

/// A special-token entry is either a string or `{"content": "..."}`.
fn token_text(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o.get("content").and_then(Value::as_str).map(str::to_string),
        _ => None,
    }
}

/// A caught panic's message.
fn panic_text(p: &Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "no message".into())
}

/// A model directory's chat template source, if it has one (read without loading the
/// tokenizer; unreadable files count as none).
pub fn template_source(dir: &Path) -> Option<String> {
    let cfg = crate::model_dir::read_text(&dir.join("tokenizer_config.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<Value>(&t).ok())
        .unwrap_or(Value::Null);
    find_template(dir, &cfg).ok().flatten()
}

/// The template source: `chat_template.jinja`, else `tokenizer_config.json`'s field (string or
/// a list of named templates, taking `default`), else `chat_template.json`.
fn find_template(dir: &Path, cfg: &Value) -> Result<Option<String>, LoadError> {
    if let Some(t) = read_optional(&dir.join("chat_template.jinja"))? {
        return Ok(Some(t));
    }
    match cfg.get("chat_template") {
        Some(Value::String(s)) => return Ok(Some(s.clone())),
        Some(Value::Array(list)) => {
            let pick = list
                .iter()
                .find(|t| t.get("name").and_then(Value::as_str) == Some("default"))
                .or(list.first());
            return Ok(pick
                .and_then(|t| t.get("template"))
                .and_then(Value::as_str)
                .map(str::to_string));
        }
        _ => {}
    }
    let path = dir.join("chat_template.json");
    match read_optional(&path)? {
        None => Ok(None),
        Some(text) => {
            let v: Value = serde_json::from_str(&text).map_err(|source| LoadError::Json { path, source })?;
            Ok(v.get("chat_template").and_then(Value::as_str).map(str::to_string))
        }
    }
}

impl TextTokenizer {
    /// Load `tokenizer.json` (required) and `tokenizer_config.json` (optional) from `dir`.
    pub fn load(dir: &Path) -> Result<TextTokenizer, LoadError> {
        let path = dir.join("tokenizer.json");
        let text = crate::model_dir::read_required(&path, "the model's tokenizer.json")?;
        let inner = text
            .parse::<tokenizers::Tokenizer>()
            .map_err(|e| LoadError::Tokenizer {
                path: path.clone(),
                message: e.to_string(),
            })?;
        let cfg_path = dir.join("tokenizer_config.json");
        let cfg: Value = match read_optional(&cfg_path)? {
            None => Value::Null,
            Some(text) => serde_json::from_str(&text).map_err(|source| LoadError::Json {
                path: cfg_path.clone(),
                source,
            })?,
        };
        let source = find_template(dir, &cfg)?;
        TextTokenizer::from_parts(inner, &cfg, source, dir)
    }

    /// A tokenizer from `tokenizer.json` and `tokenizer_config.json` contents built in memory
    /// (a GGUF file's metadata); `origin` names the file in errors.
    pub fn from_json(tokenizer: &Value, cfg: &Value, origin: &Path) -> Result<TextTokenizer, LoadError> {
        let bad = |message: String| LoadError::Tokenizer {
            path: origin.to_path_buf(),
            message,
        };
        let text = serde_json::to_string(tokenizer).map_err(|e| bad(e.to_string()))?;
        let inner: tokenizers::Tokenizer = text.parse().map_err(|e: tokenizers::Error| bad(e.to_string()))?;
        let source = cfg.get("chat_template").and_then(Value::as_str).map(str::to_string);
        TextTokenizer::from_parts(inner, cfg, source, origin)
    }

    fn from_parts(
        inner: tokenizers::Tokenizer,
        cfg: &Value,
        source: Option<String>,
        origin: &Path,
    ) -> Result<TextTokenizer, LoadError> {
        // Only added tokens: every word of a prompt would be dropped without an error.
        if inner.get_vocab_size(false) == 0 {
            let file = if origin.is_dir() {
                origin.join("tokenizer.json")
            } else {
                origin.to_path_buf()
            };
            return Err(LoadError::Tokenizer {
                path: file,
                message: "the tokenizer's model has an empty vocabulary".into(),
            });
        }
        let chat = match &source {
            None => None,
            Some(src) => Some(Arc::new(ChatTemplate::new(src).map_err(|message| {
                LoadError::ChatTemplate {
                    path: origin.to_path_buf(),
                    message,
                }
            })?)),
        };
        let special = inner
            .get_added_tokens_decoder()
            .into_iter()
            .filter(|(_, t)| t.special)
            .map(|(id, t)| (t.content, id))
            .collect();
        Ok(TextTokenizer {
            inner: Arc::new(inner),
            chat,
            chat_source: source.map(Arc::from),
            special: Arc::new(special),
            bos_token: token_text(cfg.get("bos_token")),
            eos_token: token_text(cfg.get("eos_token")),
            pad_token: token_text(cfg.get("pad_token")),
            unk_token: token_text(cfg.get("unk_token")),
        })
    }

    pub fn has_chat_template(&self) -> bool {
        self.chat.is_some()
    }

    pub fn chat_template_source(&self) -> Option<&str> {
        self.chat_source.as_deref()
    }

    /// The id of `text` when it is one special token.
    pub fn special_token_id(&self, text: &str) -> Option<u32> {
        self.special.get(text).copied()
    }

    /// The longest token's text in bytes, as its vocabulary stores it (byte-level BPE stores
    /// a byte as one or two bytes, so this never under-counts what one token can cover).
    pub fn max_token_bytes(&self) -> usize {
        let longest = self.inner.get_vocab(true).keys().map(String::len).max();
        longest.unwrap_or(1).max(1)
    }

    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// The highest token id the tokenizer can produce (vocabulary and added tokens) and its
    /// text: ids need not be dense, so this can exceed `vocab_size() - 1`.
    pub fn max_token_id(&self) -> Option<(u32, String)> {
        let vocab = self.inner.get_vocab(true);
        vocab.into_iter().max_by_key(|(_, id)| *id).map(|(t, id)| (id, t))
    }

    /// The tokenizer as `tokenizer.json` holds it.
    pub fn to_json(&self) -> Result<Value, String> {
        let text = self.inner.to_string(false).map_err(|e| e.to_string())?;
        serde_json::from_str(&text).map_err(|e| e.to_string())
    }

    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// The vocabulary entry of `id` as the tokenizer stores it (byte-level form, e.g. `Ġthe`).
    pub fn token_str(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// Encode text; `add_special_tokens` applies the tokenizer's post-processor (e.g. BOS).
    /// A panic inside `tokenizers` (a model's pre-tokenizer regex can hit the regex engine's
    /// backtracking limit, which panics) is caught here and becomes this request's error.
    pub fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>, TokenizerError> {
        let run = std::panic::AssertUnwindSafe(|| self.inner.encode(text, add_special_tokens));
        let enc = std::panic::catch_unwind(run)
            .map_err(|p| TokenizerError::Encode(format!("the tokenizer panicked: {}", panic_text(&p))))?
            .map_err(|e| TokenizerError::Encode(e.to_string()))?;
        Ok(enc.get_ids().to_vec())
    }

    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String, TokenizerError> {
        self.inner
            .decode(ids, skip_special_tokens)
            .map_err(|e| TokenizerError::Decode(e.to_string()))
    }

    /// Render a conversation (and the tools it may call) with the model's chat template.
    pub fn render_chat(
        &self,
        messages: &[ChatMessage],
        tools: Option<&Value>,
        add_generation_prompt: bool,
    ) -> Result<String, TokenizerError> {
        let chat = self.chat.as_ref().ok_or(TokenizerError::NoChatTemplate)?;
        chat.render(
            messages,
            tools,
            add_generation_prompt,
            self.bos_token.as_deref(),
            self.eos_token.as_deref(),
        )
        .map_err(TokenizerError::Template)
    }

    /// Render and encode a conversation as HF's `apply_chat_template(tokenize=True)` does
    /// (the template supplies special tokens, so the post-processor is not applied).
    pub fn encode_chat(&self, messages: &[ChatMessage], tools: Option<&Value>) -> Result<Vec<u32>, TokenizerError> {
        let text = self.render_chat(messages, tools, true)?;
        self.encode(&text, false)
    }

    /// A streaming decoder for one sequence of generated tokens.
    pub fn stream(&self, skip_special_tokens: bool) -> StreamDecoder {
        self.stream_keeping(skip_special_tokens, &[])
    }

    /// A streaming decoder that skips special tokens except those in `keep` (tool-call
    /// markers that are special tokens in some tokenizers).
    pub fn stream_keeping(&self, skip_special_tokens: bool, keep: &[u32]) -> StreamDecoder {
        let drop = match (skip_special_tokens, keep.is_empty()) {
            (true, false) => self.special.values().copied().filter(|id| !keep.contains(id)).collect(),
            _ => HashSet::new(),
        };
        StreamDecoder {
            tok: self.clone(),
            ids: Vec::new(),
            prefix_offset: 0,
            read_offset: 0,
            skip_special_tokens: skip_special_tokens && keep.is_empty(),
            drop,
        }
    }
}

/// Incremental detokenizer. Owned (unlike `tokenizers::DecodeStream`, which borrows the
/// tokenizer) so it can live in per-request state on the engine thread. It decodes a short
/// window of recent ids and emits only text that is complete: a delta ending in U+FFFD (a
/// partial UTF-8 sequence of byte-level tokens) is held back until the next token completes it.
pub struct StreamDecoder {
    tok: TextTokenizer,
    ids: Vec<u32>,
    prefix_offset: usize,
    read_offset: usize,
    skip_special_tokens: bool,
    /// Special tokens skipped by hand (when some are kept).
    drop: HashSet<u32>,
}

impl StreamDecoder {
    /// Add one token; returns the new text it completes, if any.
    pub fn step(&mut self, id: u32) -> Result<Option<String>, TokenizerError> {
        if self.drop.contains(&id) {
            return Ok(None);
        }
        self.ids.push(id);
        let skip = self.skip_special_tokens;
        let prefix = self.tok.decode(&self.ids[self.prefix_offset..self.read_offset], skip)?;
        let full = self.tok.decode(&self.ids[self.prefix_offset..], skip)?;
        if full.len() > prefix.len() && !full.ends_with('\u{FFFD}') && full.is_char_boundary(prefix.len()) {
            let delta = full[prefix.len()..].to_string();
            self.prefix_offset = self.read_offset;
            self.read_offset = self.ids.len();
            Ok(Some(delta))
        } else {
            Ok(None)
        }
    }

    /// Text still held back at the end of generation (an incomplete character is emitted
    /// as U+FFFD, as HF's decode does).
    pub fn flush(&mut self) -> Result<Option<String>, TokenizerError> {
        let skip = self.skip_special_tokens;
        let prefix = self.tok.decode(&self.ids[self.prefix_offset..self.read_offset], skip)?;
        let full = self.tok.decode(&self.ids[self.prefix_offset..], skip)?;
        self.prefix_offset = self.ids.len();
        self.read_offset = self.ids.len();
        match full.get(prefix.len()..) {
            Some(rest) if !rest.is_empty() => Ok(Some(rest.to_string())),
            _ => Ok(None),
        }
    }

    pub fn ids(&self) -> &[u32] {
        &self.ids
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture_tokenizer(name: &str) -> TextTokenizer {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name);
        TextTokenizer::load(&dir).unwrap()
    }

    #[test]
    fn stream_never_splits_characters_and_matches_full_decode() {
        for name in ["llama", "qwen2"] {
            let tok = fixture_tokenizer(name);
            let text = "Zürich café 🔨☕ 日本語のテキスト — 49.99 €";
            let ids = tok.encode(text, false).unwrap();
            let mut stream = tok.stream(false);
            let mut out = String::new();
            let mut deltas = 0;
            for &id in &ids {
                if let Some(d) = stream.step(id).unwrap() {
                    assert!(!d.contains('\u{FFFD}'), "{name}: delta {d:?} splits a character");
                    out.push_str(&d);
                    deltas += 1;
                }
            }
            out.extend(stream.flush().unwrap());
            assert_eq!(out, tok.decode(&ids, false).unwrap());
            assert_eq!(out, text);
            assert!(deltas < ids.len(), "{name}: some byte tokens must have been held back");
        }
    }

    #[test]
    fn flush_emits_an_incomplete_tail() {
        let tok = fixture_tokenizer("llama");
        let ids = tok.encode("🔨", false).unwrap();
        assert!(ids.len() > 1, "the emoji is several byte tokens");
        let mut stream = tok.stream(false);
        assert_eq!(stream.step(ids[0]).unwrap(), None);
        assert_eq!(stream.flush().unwrap().as_deref(), Some("\u{FFFD}"));
    }

    #[test]
    fn a_panicking_pre_tokenizer_is_an_encode_error() {
        // Repeated `.*` groups backtrack combinatorially: onig stops at its retry limit, and
        // `tokenizers` panics on that ("retry-limit-in-match over").
        let tok = serde_json::json!({
            "version": "1.0", "truncation": null, "padding": null, "added_tokens": [], "normalizer": null,
            "pre_tokenizer": {"type": "Split", "pattern": {"Regex": "(.*a){12}b"}, "behavior": "Isolated", "invert": false},
            "post_processor": null, "decoder": null,
            "model": {"type": "WordLevel", "vocab": {"[UNK]": 0, "a": 1}, "unk_token": "[UNK]"}
        });
        let tok = TextTokenizer::from_json(&tok, &Value::Null, Path::new("tokenizer.json")).unwrap();
        let e = tok.encode(&"a".repeat(60), false).unwrap_err();
        assert!(e.to_string().contains("panicked"), "{e}");
        assert!(tok.encode("b", false).is_ok(), "the tokenizer still works afterwards");
    }
}
