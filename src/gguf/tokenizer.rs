//! `tokenizer.ggml.*` → a Hugging Face `tokenizer.json` (and the `tokenizer_config.json`
//! fields Aisle reads), so a GGUF model encodes exactly as the tokenizer it was converted from.
//!
//! Owns: the pre-tokenizer table (llama.cpp's `tokenizer.ggml.pre` names → the split regexes
//! both llama.cpp and the original `tokenizer.json` apply), byte-level BPE from tokens and
//! merges, and SentencePiece BPE (`llama`) with merges rebuilt from the piece scores.
//! candle's `TokenizerFromGguf` is not used: it has no SentencePiece models, and maps
//! `smollm` and `llama-bpe` to plain GPT-2 splitting, which changes ids around digits.
//! Must not: encode anything itself (the `tokenizers` crate does).

use serde_json::{json, Map, Value};

use super::{as_i64, GgufError, GgufFile};
use candle_core::quantized::gguf_file::Value as GValue;

/// GPT-2's split (HF ByteLevel's own regex).
const GPT2: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";
/// Llama 3's split: digits in groups of up to three.
const LLAMA3: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Qwen 2's split: single digits.
const QWEN2: &str =
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const DIGIT: &str = r"\p{N}";

/// How one `tokenizer.ggml.pre` family pre-tokenizes byte-level BPE text.
struct PreTokenizer {
    names: &'static [&'static str],
    /// Regexes applied in order, each isolating its matches within the pieces so far.
    splits: &'static [&'static str],
    nfc: bool,
    ignore_merges: bool,
}

const PRE_TOKENIZERS: &[PreTokenizer] = &[
    PreTokenizer {
        names: &["gpt-2", "gpt2", "phi-2", "mpt", "olmo", "jais"],
        splits: &[GPT2],
        nfc: false,
        ignore_merges: false,
    },
    PreTokenizer {
        names: &[
            "smollm",
            "starcoder",
            "refact",
            "command-r",
            "codeshell",
            "exaone",
            "minerva-7b",
        ],
        splits: &[DIGIT, GPT2],
        nfc: false,
        ignore_merges: false,
    },
    PreTokenizer {
        names: &["llama-bpe", "llama3", "llama-v3", "falcon3"],
        splits: &[LLAMA3],
        nfc: false,
        ignore_merges: true,
    },
    PreTokenizer {
        names: &["dbrx", "smaug-bpe"],
        splits: &[LLAMA3],
        nfc: false,
        ignore_merges: false,
    },
    PreTokenizer {
        names: &["qwen2", "deepseek-r1-qwen"],
        splits: &[QWEN2],
        nfc: true,
        ignore_merges: false,
    },
    PreTokenizer {
        names: &["stablelm2", "hunyuan"],
        splits: &[QWEN2],
        nfc: false,
        ignore_merges: false,
    },
    PreTokenizer {
        names: &["default"],
        splits: &[r"[\p{P}\$\+<=>\^~\|]+", GPT2, r"\p{N}+", "[0-9][0-9][0-9]"],
        nfc: false,
        ignore_merges: false,
    },
];

/// llama.cpp's token types.
const TYPE_UNKNOWN: i64 = 2;
const TYPE_CONTROL: i64 = 3;
const TYPE_USER_DEFINED: i64 = 4;

/// A tokenizer rebuilt from GGUF metadata, in Hugging Face's two files' terms.
pub struct GgufTokenizer {
    /// `tokenizer.json`.
    pub json: Value,
    /// The `tokenizer_config.json` fields Aisle reads: special tokens and `chat_template`.
    pub config: Value,
}

struct Vocab {
    tokens: Vec<String>,
    types: Vec<i64>,
}

impl GgufFile {
    /// Build the tokenizer the metadata describes.
    pub fn tokenizer(&self) -> Result<GgufTokenizer, GgufError> {
        let model = self.require("tokenizer.ggml.model", self.string("tokenizer.ggml.model"))?;
        let tokens = self.require("tokenizer.ggml.tokens", self.array("tokenizer.ggml.tokens", string))?;
        let types = self
            .array("tokenizer.ggml.token_type", as_i64)?
            .unwrap_or_else(|| vec![1; tokens.len()]);
        if types.len() != tokens.len() {
            return Err(self.tok_err(format!("{} token types for {} tokens", types.len(), tokens.len())));
        }
        let vocab = Vocab { tokens, types };
        let (model_json, pipeline, add_bos_default) = match model {
            "gpt2" => (self.byte_level_bpe(&vocab)?, self.byte_level_pipeline()?, false),
            "llama" => (self.sentencepiece_bpe(&vocab)?, self.sentencepiece_pipeline()?, true),
            other => {
                return Err(GgufError::Unsupported {
                    path: self.path.clone(),
                    message: format!(
                    "tokenizer model `{other}` is not supported (supported: gpt2 byte-level BPE, llama SentencePiece)"
                ),
                })
            }
        };
        let add_bos = self.boolean("tokenizer.ggml.add_bos_token")?.unwrap_or(add_bos_default);
        let add_eos = self.boolean("tokenizer.ggml.add_eos_token")?.unwrap_or(false);
        let mut json = pipeline;
        json.insert("version".into(), json!("1.0"));
        json.insert("truncation".into(), Value::Null);
        json.insert("padding".into(), Value::Null);
        json.insert("added_tokens".into(), added_tokens(&vocab));
        json.insert("model".into(), model_json);
        json.insert("post_processor".into(), self.post_processor(&vocab, add_bos, add_eos)?);
        Ok(GgufTokenizer {
            json: Value::Object(json),
            config: self.tokenizer_config(&vocab)?,
        })
    }

    fn tok_err(&self, message: String) -> GgufError {
        GgufError::Metadata {
            path: self.path.clone(),
            key: "tokenizer.ggml.*".into(),
            message,
        }
    }

    /// The token of special id `key`, if set and in range.
    fn special(&self, vocab: &Vocab, key: &str) -> Result<Option<(u64, String)>, GgufError> {
        let Some(id) = self.uint(key)? else { return Ok(None) };
        match vocab.tokens.get(id as usize) {
            Some(t) => Ok(Some((id, t.clone()))),
            None => Err(GgufError::Metadata {
                path: self.path.clone(),
                key: key.into(),
                message: format!("id {id} is outside the {}-token vocabulary", vocab.tokens.len()),
            }),
        }
    }

    fn byte_level_bpe(&self, vocab: &Vocab) -> Result<Value, GgufError> {
        let merges = self.require("tokenizer.ggml.merges", self.array("tokenizer.ggml.merges", string))?;
        let pairs: Vec<Value> = merges
            .iter()
            .map(|m| {
                m.split_once(' ')
                    .map(|(a, b)| json!([a, b]))
                    .ok_or_else(|| self.tok_err(format!("merge `{m}` is not two tokens")))
            })
            .collect::<Result<_, _>>()?;
        Ok(bpe_model(vocab, pairs, self.pre()?.ignore_merges, false, None))
    }

    fn pre(&self) -> Result<&'static PreTokenizer, GgufError> {
        let pre = self.string("tokenizer.ggml.pre")?.unwrap_or("default");
        PRE_TOKENIZERS
            .iter()
            .find(|p| p.names.contains(&pre))
            .ok_or_else(|| GgufError::Unsupported {
                path: self.path.clone(),
                message: format!(
                    "pre-tokenizer `{pre}` (tokenizer.ggml.pre) is not supported (supported: {})",
                    PRE_TOKENIZERS
                        .iter()
                        .flat_map(|p| p.names.iter().copied())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            })
    }

    fn byte_level_pipeline(&self) -> Result<Map<String, Value>, GgufError> {
        let pre = self.pre()?;
        let mut steps: Vec<Value> = pre
            .splits
            .iter()
            .map(|r| json!({"type": "Split", "pattern": {"Regex": r}, "behavior": "Isolated", "invert": false}))
            .collect();
        steps.push(json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false}));
        let mut m = Map::new();
        m.insert(
            "normalizer".into(),
            if pre.nfc { json!({"type": "NFC"}) } else { Value::Null },
        );
        m.insert(
            "pre_tokenizer".into(),
            json!({"type": "Sequence", "pretokenizers": steps}),
        );
        m.insert(
            "decoder".into(),
            json!({"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true}),
        );
        Ok(m)
    }

    /// SentencePiece BPE: merges are every split of a piece into two pieces, ranked by the
    /// merged piece's score (what SentencePiece's BPE maximises), ties by id.
    fn sentencepiece_bpe(&self, vocab: &Vocab) -> Result<Value, GgufError> {
        let scores = self
            .array("tokenizer.ggml.scores", |v| match v {
                GValue::F32(x) => Some(*x),
                _ => None,
            })?
            .unwrap_or_else(|| vec![0.0; vocab.tokens.len()]);
        let ids: std::collections::HashMap<&str, usize> =
            vocab.tokens.iter().enumerate().map(|(i, t)| (t.as_str(), i)).collect();
        let mut merges: Vec<(f32, usize, usize, usize)> = Vec::new();
        for (id, piece) in vocab.tokens.iter().enumerate() {
            if vocab.types[id] != 1 && vocab.types[id] != TYPE_USER_DEFINED {
                continue;
            }
            for (cut, _) in piece.char_indices().skip(1) {
                if let (Some(&l), Some(&r)) = (ids.get(&piece[..cut]), ids.get(&piece[cut..])) {
                    merges.push((scores.get(id).copied().unwrap_or(0.0), id, l, r));
                }
            }
        }
        merges.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
        let pairs = merges
            .iter()
            .map(|&(_, _, l, r)| json!([vocab.tokens[l], vocab.tokens[r]]))
            .collect();
        let unk = self.special(vocab, "tokenizer.ggml.unknown_token_id")?.map(|(_, t)| t);
        Ok(bpe_model(vocab, pairs, false, true, unk))
    }

    /// SentencePiece's own text handling (HF's "legacy" Llama tokenizer and llama.cpp agree):
    /// spaces become `▁`, and every text piece between special tokens gets a leading `▁`
    /// when `add_space_prefix` is on.
    fn sentencepiece_pipeline(&self) -> Result<Map<String, Value>, GgufError> {
        let prefix = self.boolean("tokenizer.ggml.add_space_prefix")?.unwrap_or(true);
        let replace = json!({"type": "Replace", "pattern": {"String": " "}, "content": "\u{2581}"});
        let mut normalizers = Vec::new();
        if prefix {
            normalizers.push(json!({"type": "Prepend", "prepend": "\u{2581}"}));
        }
        normalizers.push(replace);
        let mut decoders = vec![
            json!({"type": "Replace", "pattern": {"String": "\u{2581}"}, "content": " "}),
            json!({"type": "ByteFallback"}),
            json!({"type": "Fuse"}),
        ];
        if prefix {
            decoders.push(json!({"type": "Strip", "content": " ", "start": 1, "stop": 0}));
        }
        let mut m = Map::new();
        m.insert(
            "normalizer".into(),
            json!({"type": "Sequence", "normalizers": normalizers}),
        );
        m.insert("pre_tokenizer".into(), Value::Null);
        m.insert("decoder".into(), json!({"type": "Sequence", "decoders": decoders}));
        Ok(m)
    }

    /// BOS/EOS added around each encoded text, as `add_bos_token`/`add_eos_token` say.
    fn post_processor(&self, vocab: &Vocab, add_bos: bool, add_eos: bool) -> Result<Value, GgufError> {
        let bos = self.special(vocab, "tokenizer.ggml.bos_token_id")?.filter(|_| add_bos);
        let eos = self.special(vocab, "tokenizer.ggml.eos_token_id")?.filter(|_| add_eos);
        if bos.is_none() && eos.is_none() {
            return Ok(Value::Null);
        }
        let mut specials = Map::new();
        let piece = |t: &(u64, String), specials: &mut Map<String, Value>| {
            specials.insert(t.1.clone(), json!({"id": t.1, "ids": [t.0], "tokens": [t.1]}));
            json!({"SpecialToken": {"id": t.1, "type_id": 0}})
        };
        let mut single = Vec::new();
        single.extend(bos.as_ref().map(|t| piece(t, &mut specials)));
        single.push(json!({"Sequence": {"id": "A", "type_id": 0}}));
        single.extend(eos.as_ref().map(|t| piece(t, &mut specials)));
        let mut pair = single.clone();
        pair.extend(bos.as_ref().map(|t| piece(t, &mut specials)));
        pair.push(json!({"Sequence": {"id": "B", "type_id": 0}}));
        pair.extend(eos.as_ref().map(|t| piece(t, &mut specials)));
        Ok(json!({"type": "TemplateProcessing", "single": single, "pair": pair, "special_tokens": specials}))
    }

    fn tokenizer_config(&self, vocab: &Vocab) -> Result<Value, GgufError> {
        let mut cfg = Map::new();
        for (key, field) in [
            ("tokenizer.ggml.bos_token_id", "bos_token"),
            ("tokenizer.ggml.eos_token_id", "eos_token"),
            ("tokenizer.ggml.padding_token_id", "pad_token"),
            ("tokenizer.ggml.unknown_token_id", "unk_token"),
        ] {
            if let Some((_, t)) = self.special(vocab, key)? {
                cfg.insert(field.into(), json!(t));
            }
        }
        if let Some(t) = self.string("tokenizer.chat_template")? {
            cfg.insert("chat_template".into(), json!(t));
        }
        Ok(Value::Object(cfg))
    }
}

fn string(v: &GValue) -> Option<String> {
    match v {
        GValue::String(s) => Some(s.clone()),
        _ => None,
    }
}

/// Control and unknown tokens are special added tokens; user-defined ones are added
/// (matched whole) but not special.
fn added_tokens(vocab: &Vocab) -> Value {
    let list = vocab
        .types
        .iter()
        .enumerate()
        .filter(|(_, &t)| matches!(t, TYPE_UNKNOWN | TYPE_CONTROL | TYPE_USER_DEFINED))
        .map(|(id, &t)| {
            json!({"id": id, "content": vocab.tokens[id], "single_word": false, "lstrip": false,
                   "rstrip": false, "normalized": false, "special": t != TYPE_USER_DEFINED})
        })
        .collect();
    Value::Array(list)
}

fn bpe_model(vocab: &Vocab, merges: Vec<Value>, ignore_merges: bool, spm: bool, unk: Option<String>) -> Value {
    let ids: Map<String, Value> = vocab
        .tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), json!(i)))
        .collect();
    json!({"type": "BPE", "dropout": null, "unk_token": unk, "continuing_subword_prefix": null,
           "end_of_word_suffix": null, "fuse_unk": spm, "byte_fallback": spm,
           "ignore_merges": ignore_merges, "vocab": ids, "merges": merges})
}
