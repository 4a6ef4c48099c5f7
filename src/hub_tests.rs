//! Unit tests for `hub`: spec parsing, settings from variables, the download plan, checksums.

use super::*;

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

fn spec(s: &str) -> HubSpec {
    HubSpec::parse(s).unwrap_or_else(|| panic!("{s} should parse"))
}

#[test]
fn specs_parse_repo_revision_and_file() {
    let s = spec("HuggingFaceTB/SmolLM2-135M-Instruct");
    assert_eq!(
        (s.repo.as_str(), s.revision.as_str(), s.file),
        ("HuggingFaceTB/SmolLM2-135M-Instruct", "main", None)
    );
    let s = spec("org/name@v1.0/sub/model.Q4_K_M.gguf");
    assert_eq!(s.revision, "v1.0");
    assert_eq!(s.file.as_deref(), Some("sub/model.Q4_K_M.gguf"));
    assert_eq!(s.to_string(), "org/name@v1.0/sub/model.Q4_K_M.gguf");
    for bad in [
        "./org/name",
        "/abs/path",
        "org",
        "org/",
        "org/name@",
        "org/name/../x.gguf",
        "org/name/config.json",
        "o rg/name",
    ] {
        assert_eq!(HubSpec::parse(bad), None, "{bad}");
    }
}

#[test]
fn settings_come_from_the_variables() {
    let vars = |pairs: &'static [(&'static str, &'static str)]| {
        move |k: &str| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string())
    };
    let o = HubOptions::from_vars(vars(&[
        ("HF_HOME", "/h"),
        ("HF_TOKEN", "t"),
        ("HF_HUB_OFFLINE", "1"),
        ("HF_ENDPOINT", "http://m"),
    ]));
    assert_eq!(
        (o.cache_dir, o.token.as_deref(), o.offline, o.endpoint.as_str()),
        (PathBuf::from("/h/hub"), Some("t"), true, "http://m")
    );
    let o = HubOptions::from_vars(vars(&[
        ("HF_HOME", "/h"),
        ("HF_HUB_CACHE", "/c"),
        ("HF_HUB_OFFLINE", "0"),
    ]));
    assert_eq!(
        (o.cache_dir, o.offline, o.endpoint.as_str()),
        (PathBuf::from("/c"), false, "https://huggingface.co")
    );
}

#[test]
fn plan_prefers_safetensors_and_picks_side_files() {
    let listed = set(&[
        "config.json",
        "tokenizer.json",
        "generation_config.json",
        "model.safetensors",
        "model.gguf",
        "README.md",
    ]);
    let Plan::Dir { files, index } = plan(&spec("o/n"), &listed).unwrap() else {
        panic!()
    };
    assert_eq!(files, ["tokenizer.json", "generation_config.json", "model.safetensors"]);
    assert_eq!(index, None);
    let listed = set(&[
        "config.json",
        "model.safetensors.index.json",
        "model-00001-of-00002.safetensors",
    ]);
    let Plan::Dir { index, .. } = plan(&spec("o/n"), &listed).unwrap() else {
        panic!()
    };
    assert_eq!(index.as_deref(), Some("model.safetensors.index.json"));
}

/// The message `plan` refuses `names` with.
fn plan_error(s: &str, names: &[&str]) -> String {
    plan(&spec(s), &set(names)).unwrap_err().to_string()
}

#[test]
fn plan_for_gguf_repositories() {
    assert_eq!(
        plan(&spec("o/n"), &set(&["a.Q4_0.gguf", "README.md"])).unwrap(),
        Plan::Gguf("a.Q4_0.gguf".into())
    );
    let many = plan_error("o/n", &["a.Q4_0.gguf", "a.Q8_0.gguf"]);
    assert!(
        many.contains("2 GGUF files") && many.contains("`o/n/a.Q4_0.gguf`"),
        "{many}"
    );
    let missing = plan_error("o/n/b.gguf", &["a.Q4_0.gguf"]);
    assert!(
        missing.contains("no file `b.gguf`") && missing.contains("a.Q4_0.gguf"),
        "{missing}"
    );
    let none = plan_error("o/n", &["config.json", "pytorch_model.bin"]);
    assert!(
        none.contains("no weights Aisle can load") && none.contains("pytorch_model.bin"),
        "{none}"
    );
}

#[test]
fn shard_names_must_stay_inside_the_repository() {
    let s = spec("o/n");
    let dir = tempfile::tempdir().unwrap();
    let idx = dir.path().join("i.json");
    std::fs::write(
        &idx,
        r#"{"weight_map":{"a":"m-1.safetensors","b":"m-1.safetensors","c":"m-2.safetensors"}}"#,
    )
    .unwrap();
    assert_eq!(shards(&s, &idx).unwrap(), set(&["m-1.safetensors", "m-2.safetensors"]));
    std::fs::write(&idx, r#"{"weight_map":{"a":"../../escape.safetensors"}}"#).unwrap();
    assert!(shards(&s, &idx)
        .unwrap_err()
        .to_string()
        .contains("outside the repository"));
}

#[test]
fn git_blob_ids_match_git() {
    // `printf 'hello\n' | git hash-object --stdin`
    assert_eq!(git_blob_sha1(b"hello\n"), "ce013625030ba8dba906f756967f9e9ca394464a");
}

#[test]
fn file_hashes_stream_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f");
    std::fs::write(&path, b"hello\n").unwrap();
    let git = hash_file(&path, sha1::Sha1::new(), Some("blob 6\0".into())).unwrap();
    assert_eq!(git, git_blob_sha1(b"hello\n"));
    // `printf 'hello\n' | sha256sum`
    let sha = hash_file(&path, sha2::Sha256::new(), None).unwrap();
    assert_eq!(sha, "5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03");
}
