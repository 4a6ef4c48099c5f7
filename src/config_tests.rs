//! Unit tests for config parsing and resolution.

use super::*;

const V5: &str = r#"{
  "architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 100,
  "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
  "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 512,
  "rope_parameters": {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0,
     "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 64},
  "dtype": "bfloat16", "eos_token_id": [5, 6], "bos_token_id": 1, "unknown_field": {"x": 1}
}"#;

const V4: &str = r#"{
  "architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 100,
  "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
  "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 512,
  "rope_theta": 500000.0,
  "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
     "high_freq_factor": 4.0, "original_max_position_embeddings": 64},
  "torch_dtype": "bfloat16", "eos_token_id": [5, 6], "bos_token_id": 1
}"#;

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::from_json(text, "config.json")
}

#[test]
fn both_config_styles_resolve_identically() {
    let (a, b) = (parse(V5).unwrap(), parse(V4).unwrap());
    assert_eq!(a.rope_theta, 500000.0);
    assert_eq!(a.rope_scaling, b.rope_scaling);
    assert_eq!(a.rope_inv_freq(), b.rope_inv_freq());
    assert_eq!(a.declared_dtype.as_deref(), Some("bfloat16"));
    assert_eq!(b.declared_dtype, a.declared_dtype);
    assert_eq!(a.eos_token_ids, vec![5, 6]);
    assert_eq!(a.bos_token_id, Some(1));
    assert_eq!(a.head_dim, 16);
    assert_eq!(a.group_size(), 2);
}

#[test]
fn llama3_scaling_covers_all_three_bands() {
    let cfg = parse(V5).unwrap();
    let plain = Config {
        rope_scaling: RopeScaling::None,
        ..cfg.clone()
    };
    let (scaled, base) = (cfg.rope_inv_freq(), plain.rope_inv_freq());
    // wavelength 2π (< 16): unchanged; ≈ 32 (between 16 and 64): smoothed; longer: divided by 8.
    assert_eq!(scaled[0], base[0]);
    assert!(scaled[1] < base[1] && scaled[1] > base[1] / 8.0);
    assert!((scaled[4] - base[4] / 8.0).abs() < 1e-12);
}

#[test]
fn defaults_when_fields_are_absent() {
    let cfg = parse(
        r#"{"model_type": "mistral", "vocab_size": 10, "hidden_size": 8, "intermediate_size": 16,
            "num_hidden_layers": 3, "num_attention_heads": 2, "sliding_window": 4}"#,
    )
    .unwrap();
    assert_eq!(cfg.num_kv_heads, 2);
    assert_eq!(cfg.rope_theta, 10000.0);
    assert!(!cfg.tie_word_embeddings);
    assert_eq!(cfg.sliding_window, vec![Some(4); 3]);
    assert!(!cfg.qkv_bias && !cfg.qk_norm);
}

#[test]
fn qwen_flags_and_sliding_layers() {
    let q2 = parse(
        r#"{"model_type": "qwen2", "vocab_size": 10, "hidden_size": 8, "intermediate_size": 16,
            "num_hidden_layers": 4, "num_attention_heads": 2, "num_key_value_heads": 1,
            "use_sliding_window": true, "sliding_window": 32, "max_window_layers": 2}"#,
    )
    .unwrap();
    assert!(q2.qkv_bias && !q2.o_bias && !q2.qk_norm);
    assert_eq!(q2.sliding_window, vec![None, None, Some(32), Some(32)]);
    let q3 = parse(
        r#"{"model_type": "qwen3", "vocab_size": 10, "hidden_size": 8, "intermediate_size": 16,
            "num_hidden_layers": 2, "num_attention_heads": 2, "head_dim": 32, "sliding_window": 8,
            "layer_types": ["sliding_attention", "full_attention"]}"#,
    )
    .unwrap();
    assert!(q3.qk_norm && !q3.qkv_bias);
    assert_eq!(q3.head_dim, 32);
    assert_eq!(q3.sliding_window, vec![Some(8), None]);
}

#[test]
fn architecture_from_architectures_list() {
    let cfg = parse(
        r#"{"architectures": ["Qwen2ForCausalLM"], "vocab_size": 10, "hidden_size": 8,
            "intermediate_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2}"#,
    )
    .unwrap();
    assert_eq!(cfg.family, Family::Qwen2);
}

#[test]
fn invalid_configs_explain_themselves() {
    let base = r#""vocab_size": 10, "hidden_size": 8, "intermediate_size": 16, "num_hidden_layers": 1"#;
    let err = |extra: &str| parse(&format!("{{{base}, {extra}}}")).unwrap_err().to_string();
    assert!(
        err(r#""model_type": "llama", "num_attention_heads": 3, "num_key_value_heads": 2"#)
            .contains("must be a positive multiple")
    );
    assert!(
        err(r#""model_type": "llama", "num_attention_heads": 2, "hidden_act": "gelu""#)
            .contains("unsupported hidden_act `gelu`")
    );
    assert!(err(
        r#""model_type": "llama", "num_attention_heads": 2, "rope_scaling": {"type": "dynamic", "factor": 2.0}"#
    )
    .contains("unsupported rope scaling type `dynamic`"));
    assert!(
        err(r#""model_type": "llama", "num_attention_heads": 2, "rope_scaling": {"rope_type": "llama3"}"#)
            .contains("needs a numeric `factor`")
    );
    assert!(err(r#""model_type": "phi3", "num_attention_heads": 2"#).contains("unknown architecture `phi3`"));
    let missing = parse(r#"{"model_type": "llama"}"#).unwrap_err().to_string();
    assert!(
        missing.contains("config.json") && missing.contains("missing field `vocab_size`"),
        "{missing}"
    );
}

#[test]
fn hostile_numbers_are_refused_before_anything_is_allocated() {
    let base = r#""model_type": "llama", "vocab_size": 10, "hidden_size": 8, "intermediate_size": 16, "num_attention_heads": 2"#;
    let err = |extra: &str| {
        parse(&format!("{{{base}, {extra}}}"))
            .map(|_| String::new())
            .unwrap_or_else(|e| e.to_string())
    };
    for (extra, says) in [
        (
            r#""num_hidden_layers": 9223372036854775808"#,
            "num_hidden_layers must be between 1 and 1024",
        ),
        (
            r#""num_hidden_layers": 100000000"#,
            "num_hidden_layers must be between 1 and 1024",
        ),
        (
            r#""num_hidden_layers": 1, "max_position_embeddings": 1000000000000"#,
            "max_position_embeddings",
        ),
        (
            r#""num_hidden_layers": 1, "head_dim": 1000000"#,
            "head_dim must be between",
        ),
        (
            r#""num_hidden_layers": 1, "rms_norm_eps": 0"#,
            "rms_norm_eps must be a positive",
        ),
        (
            r#""num_hidden_layers": 1, "rms_norm_eps": -1e-5"#,
            "rms_norm_eps must be a positive",
        ),
        (
            r#""num_hidden_layers": 1, "rope_theta": 0"#,
            "rope_theta must be a positive",
        ),
        (
            r#""num_hidden_layers": 1, "rope_theta": -10000.0"#,
            "rope_theta must be a positive",
        ),
        (
            r#""num_hidden_layers": 1, "sliding_window": 0"#,
            "sliding_window must be at least 1",
        ),
        (
            r#""num_hidden_layers": 1, "eos_token_id": 10"#,
            "eos_token_id 10 is outside",
        ),
        (
            r#""num_hidden_layers": 1, "eos_token_id": -1"#,
            "eos_token_id must be a token id",
        ),
        (
            r#""num_hidden_layers": 1, "eos_token_id": [2, "x"]"#,
            "eos_token_id must be a token id",
        ),
        (
            r#""num_hidden_layers": 1, "bos_token_id": 1.5"#,
            "bos_token_id must be a token id",
        ),
        (
            r#""num_hidden_layers": 1, "rope_scaling": {"factor": 2.0}"#,
            "a `factor` but no `rope_type`",
        ),
        (
            r#""num_hidden_layers": 1, "rope_scaling": "linear""#,
            "rope_scaling must be an object or null",
        ),
        (
            r#""num_hidden_layers": 1, "bos_token_id": 4294967301"#,
            "is outside the vocabulary",
        ),
        (
            r#""num_hidden_layers": 1, "rope_scaling": {"type": "linear", "factor": -2.0}"#,
            "rope scaling numbers must be positive",
        ),
    ] {
        let e = err(extra);
        assert!(e.contains("config.json") && e.contains(says), "{extra}: `{e}`");
    }
    assert_eq!(
        err(r#""num_hidden_layers": 1, "eos_token_id": 9, "rms_norm_eps": 1e-6"#),
        ""
    );
}
