//! Tokenizers rebuilt from GGUF metadata encode as the original Hugging Face tokenizers do:
//! llama.cpp's vocabulary-only GGUFs with their test texts and the ids the original
//! `tokenizer.json` gave them (`*.gguf.out`), for every pre-tokenizer family Aisle supports.

use crate::common;

use aisle::gguf::GgufFile;
use aisle::tokenizer::TextTokenizer;

/// (vocabulary file stem, its `tokenizer.ggml.pre` / model family)
const VOCABS: &[&str] = &[
    "gpt-2",
    "llama-bpe",
    "qwen2",
    "starcoder",
    "refact",
    "command-r",
    "mpt",
    "llama-spm",
    "phi-3",
];

fn load(stem: &str) -> TextTokenizer {
    let path = common::fetched(&format!("llama-vocab/ggml-vocab-{stem}.gguf"));
    let file = GgufFile::open(&path).unwrap_or_else(|e| panic!("{e}"));
    let tok = file.tokenizer().unwrap_or_else(|e| panic!("{e}"));
    TextTokenizer::from_json(&tok.json, &tok.config, &path).unwrap_or_else(|e| panic!("{e}"))
}

/// The (text, expected ids) pairs of one vocabulary, split as llama.cpp's test does.
fn cases(stem: &str) -> Vec<(String, Vec<u32>)> {
    let inp = std::fs::read_to_string(common::fetched(&format!("llama-vocab/ggml-vocab-{stem}.gguf.inp"))).unwrap();
    let out = std::fs::read_to_string(common::fetched(&format!("llama-vocab/ggml-vocab-{stem}.gguf.out"))).unwrap();
    let texts: Vec<&str> = inp.split("\n__ggml_vocab_test__\n").collect();
    let texts = match texts.last() {
        Some(&"") => &texts[..texts.len() - 1],
        _ => &texts[..],
    };
    let ids: Vec<Vec<u32>> = out
        .lines()
        .map(|l| l.split_whitespace().map(|x| x.parse().unwrap()).collect())
        .collect();
    assert_eq!(
        texts.len(),
        ids.len(),
        "{stem}: .inp and .out disagree on the number of tests"
    );
    texts.iter().map(|t| t.to_string()).zip(ids).collect()
}

#[test]
fn every_supported_vocabulary_encodes_like_the_original_tokenizer() {
    let mut failures = Vec::new();
    let mut total = 0;
    for stem in VOCABS {
        let tok = load(stem);
        for (text, want) in cases(stem) {
            total += 1;
            let got = tok.encode(&text, false).unwrap();
            if got != want {
                failures.push(format!("{stem}: {text:?}\n  want {want:?}\n  got  {got:?}"));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {total} texts differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn decoding_gives_the_text_back() {
    for stem in VOCABS {
        let tok = load(stem);
        for (text, ids) in cases(stem).into_iter().take(25) {
            let back = tok.decode(&ids, false).unwrap();
            // SentencePiece drops the leading space it adds; byte-level BPE is lossless.
            assert_eq!(back.trim_start(), text.trim_start(), "{stem}: {text:?}");
        }
    }
}
