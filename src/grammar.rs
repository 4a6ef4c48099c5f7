//! Grammar-constrained decoding with llguidance.
//!
//! Owns: `GrammarSpec` (what a request constrains its output to: a JSON schema, any JSON
//! object, a regex, one of several strings, or a Lark grammar), `Grammars` (the model's
//! tokenizer as llguidance sees it, built on first use; it compiles specs), `Grammar` (a
//! compiled constraint a request carries to the engine) and `Constrained` (one sequence's
//! parser state: the allowed-token mask, advanced on every accepted token).
//! Must not: sample or know HTTP field names. The sampler applies the masks; validation turns
//! a `GrammarError` into a 400 naming the field.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, OnceLock};

use llguidance::api::TopLevelGrammar;
use llguidance::toktrie::{SimpleVob, TokEnv, TokRxInfo, TokTrie, TokenizerEnv};
use llguidance::{Matcher, ParserFactory, TokenParser};
use serde_json::{json, Value};

use crate::tokenizer::TextTokenizer;

/// What a request's output must match.
#[derive(Debug, Clone, PartialEq)]
pub enum GrammarSpec {
    /// JSON valid against this schema.
    JsonSchema(Value),
    /// Any JSON object (`response_format: {"type": "json_object"}`).
    JsonObject,
    /// Text fully matched by this regex (Rust `regex` syntax).
    Regex(String),
    /// Exactly one of these strings.
    Choice(Vec<String>),
    /// A Lark grammar in llguidance's dialect (may inline `%json {…}` schemas).
    Lark(String),
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GrammarError {
    #[error("constrained decoding is not available for this tokenizer: {0}")]
    Tokenizer(String),
    #[error("{0}")]
    Compile(String),
    #[error("`choice` needs at least one string")]
    EmptyChoice,
    #[error("the grammar failed while decoding: {0}")]
    Decode(String),
}

/// JSON is generated compactly with one space after `,` and `:` (as `json.dumps` writes it):
/// free whitespace lets a small model wander off into blank space instead of closing.
fn json_options() -> Value {
    json!({"whitespace_flexible": false, "item_separator": ", ", "key_separator": ": "})
}

impl GrammarSpec {
    /// The llguidance grammar for this spec.
    fn to_llguidance(&self) -> Result<TopLevelGrammar, GrammarError> {
        Ok(match self {
            GrammarSpec::JsonSchema(schema) => TopLevelGrammar::from_json_schema(with_json_options(schema)),
            GrammarSpec::JsonObject => TopLevelGrammar::from_json_schema(with_json_options(&json!({"type": "object"}))),
            GrammarSpec::Regex(rx) => TopLevelGrammar::from_regex(rx),
            GrammarSpec::Choice(options) => {
                if options.is_empty() {
                    return Err(GrammarError::EmptyChoice);
                }
                let alts: Vec<String> = options.iter().map(|o| regex::escape(o)).collect();
                TopLevelGrammar::from_regex(&alts.join("|"))
            }
            GrammarSpec::Lark(src) => TopLevelGrammar::from_lark(src.clone()),
        })
    }
}

/// Our whitespace options, unless the schema sets its own under `x-guidance`. A schema that
/// is not an object (e.g. `true`) is wrapped so the options can be attached.
fn with_json_options(schema: &Value) -> Value {
    match schema {
        Value::Object(map) if map.contains_key("x-guidance") => schema.clone(),
        Value::Object(map) => {
            let mut map = map.clone();
            map.insert("x-guidance".into(), json_options());
            Value::Object(map)
        }
        other => json!({"allOf": [other], "x-guidance": json_options()}),
    }
}

/// The model's tokenizer for llguidance: its trie of token bytes, and our tokenizer for the
/// text llguidance needs tokenized.
struct Env {
    trie: TokTrie,
    tokenizer: TextTokenizer,
}

impl TokenizerEnv for Env {
    fn tok_trie(&self) -> &TokTrie {
        &self.trie
    }

    fn tokenize_bytes(&self, s: &[u8]) -> Vec<u32> {
        let text = String::from_utf8_lossy(s);
        self.tokenizer.encode(&text, false).unwrap_or_default()
    }
}

/// Compiles grammars for one model. The llguidance factory (a token trie over the whole
/// vocabulary) is built on the first constrained request.
pub struct Grammars {
    tokenizer: TextTokenizer,
    vocab: usize,
    eos: Vec<u32>,
    factory: OnceLock<Result<ParserFactory, GrammarError>>,
    /// The last few compiled grammars: a tool loop's rounds and clients that send the same
    /// tools or schema every time compile once.
    recent: Mutex<VecDeque<Grammar>>,
}

/// Compiled grammars kept for reuse.
const RECENT: usize = 16;

impl Grammars {
    /// `vocab` is the model's logits width (at least the tokenizer's); `eos` the ids that end
    /// generation, which a grammar allows where it may end.
    pub fn new(tokenizer: TextTokenizer, vocab: usize, eos: Vec<u32>) -> Grammars {
        Grammars {
            tokenizer,
            vocab,
            eos,
            factory: OnceLock::new(),
            recent: Mutex::new(VecDeque::new()),
        }
    }

    /// Build the token trie now (at load time) rather than on the first constrained request.
    /// A tokenizer llguidance cannot use is logged here and reported to each such request.
    pub fn prepare(&self) {
        if let Err(e) = self.factory() {
            tracing::warn!("structured outputs are unavailable: {e}");
        }
    }

    fn factory(&self) -> Result<&ParserFactory, GrammarError> {
        self.factory
            .get_or_init(|| self.build_factory())
            .as_ref()
            .map_err(Clone::clone)
    }

    fn build_factory(&self) -> Result<ParserFactory, GrammarError> {
        let json = self.tokenizer.to_json().map_err(GrammarError::Tokenizer)?;
        let mut words =
            llguidance::token_bytes_from_tokenizer_json(&json).map_err(|e| GrammarError::Tokenizer(e.to_string()))?;
        if words.len() > self.vocab {
            return Err(GrammarError::Tokenizer(format!(
                "the tokenizer has {} tokens, the model {}",
                words.len(),
                self.vocab
            )));
        }
        words.resize(self.vocab, Vec::new()); // padding ids have no bytes: never allowed
        let first_eos = self.eos.first().copied().unwrap_or(0);
        let mut trie = TokTrie::from(&TokRxInfo::new(self.vocab as u32, first_eos), &words);
        if !self.eos.is_empty() {
            trie = trie.with_eos_tokens(&self.eos);
        }
        let env: TokEnv = Arc::new(Env {
            trie,
            tokenizer: self.tokenizer.clone(),
        });
        let mut factory = ParserFactory::new_simple(&env).map_err(|e| GrammarError::Tokenizer(e.to_string()))?;
        factory.quiet();
        Ok(factory)
    }

    /// Compile `spec`; an error says what in it llguidance cannot use.
    pub fn compile(&self, spec: &GrammarSpec) -> Result<Grammar, GrammarError> {
        let hit = self.recent().iter().find(|g| *g.spec == *spec).cloned();
        if let Some(g) = hit {
            return Ok(g);
        }
        let parser = self
            .factory()?
            .create_parser(spec.to_llguidance()?)
            .map_err(|e| GrammarError::Compile(e.to_string()))?;
        let g = Grammar {
            spec: Arc::new(spec.clone()),
            parser,
        };
        let mut recent = self.recent();
        recent.truncate(RECENT - 1);
        recent.push_front(g.clone());
        Ok(g)
    }

    /// The kept grammars. A panic elsewhere cannot leave the list inconsistent: keep using it.
    fn recent(&self) -> std::sync::MutexGuard<'_, VecDeque<Grammar>> {
        self.recent.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A compiled constraint. Each sequence that uses it starts its own `Constrained` state.
#[derive(Clone)]
pub struct Grammar {
    spec: Arc<GrammarSpec>,
    parser: TokenParser,
}

impl std::fmt::Debug for Grammar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Grammar").field(&self.spec).finish()
    }
}

impl PartialEq for Grammar {
    fn eq(&self, other: &Self) -> bool {
        self.spec == other.spec
    }
}

impl Grammar {
    pub fn spec(&self) -> &GrammarSpec {
        &self.spec
    }

    /// Fresh parser state for one sequence, at the start of its output.
    pub fn start(&self) -> Constrained {
        Constrained {
            matcher: Matcher::new(Ok(self.parser.deep_clone())),
        }
    }
}

/// One sequence's position in its grammar.
pub struct Constrained {
    matcher: Matcher,
}

impl Constrained {
    /// The tokens allowed next (an end-of-sequence id where the grammar may end).
    pub fn mask(&mut self) -> Result<SimpleVob, GrammarError> {
        let mask = self
            .matcher
            .compute_mask_or_eos()
            .map_err(|e| GrammarError::Decode(e.to_string()))?;
        if mask.is_zero() {
            return Err(GrammarError::Decode("no token can continue the output".into()));
        }
        Ok(mask)
    }

    /// Advance past an accepted token.
    pub fn accept(&mut self, token: u32) -> Result<(), GrammarError> {
        self.matcher
            .consume_token(token)
            .map_err(|e| GrammarError::Decode(e.to_string()))
    }

    /// The grammar is complete and allows nothing more.
    pub fn is_done(&self) -> bool {
        self.matcher.is_stopped()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grammars() -> Grammars {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/llama");
        let tok = TextTokenizer::load(&dir).unwrap();
        let vocab = tok.vocab_size() + 7;
        let eos = tok
            .eos_token
            .as_deref()
            .and_then(|t| tok.token_id(t))
            .into_iter()
            .collect();
        Grammars::new(tok, vocab, eos)
    }

    /// Walk the grammar greedily by always taking the lowest allowed id; the text must match.
    fn walk(g: &Grammar, tok: &TextTokenizer, limit: usize) -> (String, bool) {
        let mut c = g.start();
        let mut ids = Vec::new();
        for _ in 0..limit {
            if c.is_done() {
                break;
            }
            let mask = c.mask().unwrap();
            let t = mask.first_bit_set().unwrap() as u32;
            c.accept(t).unwrap();
            ids.push(t);
        }
        (tok.decode(&ids, true).unwrap(), c.is_done())
    }

    #[test]
    fn choice_and_regex_constrain_every_token() {
        let gs = grammars();
        let g = gs
            .compile(&GrammarSpec::Choice(vec!["in stock".into(), "sold out".into()]))
            .unwrap();
        let (text, done) = walk(&g, &gs.tokenizer, 50);
        assert!(done);
        assert!(text == "in stock" || text == "sold out", "{text:?}");
        let g = gs.compile(&GrammarSpec::Regex("[0-9]{3} W".into())).unwrap();
        let (text, done) = walk(&g, &gs.tokenizer, 50);
        assert!(done);
        assert!(regex::Regex::new("^[0-9]{3} W$").unwrap().is_match(&text), "{text:?}");
    }

    #[test]
    fn compiled_grammars_are_reused_and_each_start_is_fresh() {
        let gs = grammars();
        let spec = GrammarSpec::Regex("[0-9]{2} kg".into());
        let first = gs.compile(&spec).unwrap();
        let (text, done) = walk(&first, &gs.tokenizer, 50);
        assert!(done && text.ends_with(" kg"), "{text:?}");
        // The second compile is the kept one; walking the first left it untouched.
        let again = gs.compile(&spec).unwrap();
        assert_eq!(gs.recent.lock().unwrap().len(), 1);
        assert_eq!(walk(&again, &gs.tokenizer, 50), (text, true));
        for i in 0..RECENT + 3 {
            gs.compile(&GrammarSpec::Choice(vec![format!("option {i}")])).unwrap();
        }
        assert_eq!(gs.recent.lock().unwrap().len(), RECENT);
        assert!(
            gs.recent.lock().unwrap().iter().all(|g| *g.spec != spec),
            "the oldest is dropped"
        );
    }

    #[test]
    fn padding_ids_are_never_allowed() {
        let gs = grammars();
        let mut c = gs.compile(&GrammarSpec::JsonObject).unwrap().start();
        let mask = c.mask().unwrap();
        let real = gs.tokenizer.vocab_size();
        assert_eq!(mask.len(), gs.vocab);
        assert!((real..gs.vocab).all(|i| !mask.is_allowed(i as u32)));
        assert!(mask.num_set() > 0);
    }

    #[test]
    fn bad_specs_are_errors_not_panics() {
        let gs = grammars();
        assert_eq!(
            gs.compile(&GrammarSpec::Choice(vec![])).unwrap_err(),
            GrammarError::EmptyChoice
        );
        assert!(matches!(
            gs.compile(&GrammarSpec::Regex("(".into())),
            Err(GrammarError::Compile(_))
        ));
        assert!(matches!(
            gs.compile(&GrammarSpec::Lark("start: nope".into())),
            Err(GrammarError::Compile(_))
        ));
        let schema = json!({"type": "object", "properties": {"a": {"type": "integer", "minimum": 5, "maximum": 1}}, "required": ["a"]});
        assert!(matches!(
            gs.compile(&GrammarSpec::JsonSchema(schema)),
            Err(GrammarError::Compile(_))
        ));
        // A keyword llguidance does not implement is refused, never ignored.
        let unique = json!({"type": "array", "uniqueItems": true});
        let err = gs.compile(&GrammarSpec::JsonSchema(unique)).unwrap_err();
        assert!(err.to_string().contains("uniqueItems"), "{err}");
    }
}
