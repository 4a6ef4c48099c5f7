//! `--model org/name` resolves offline through the Hugging Face cache layout
//! (`$HF_HOME/hub/models--org--name/{refs/main,snapshots/<rev>/...}`), with the settings read
//! from the environment. Its own test binary, because it sets HF_HOME and HF_HUB_OFFLINE for
//! the process (one test, so no other thread reads the environment meanwhile).

mod common;

use aisle::runtime::LoadedModel;

#[test]
fn org_name_resolves_from_local_hf_cache() {
    let home = tempfile::tempdir().unwrap();
    let repo = home.path().join("hub/models--aisle-test--tiny-llama");
    let rev = "0123456789abcdef0123456789abcdef01234567";
    let snap = repo.join("snapshots").join(rev);
    std::fs::create_dir_all(&snap).unwrap();
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs/main"), rev).unwrap();
    for entry in std::fs::read_dir(common::fixture("llama")).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, snap.join(path.file_name().unwrap())).unwrap();
    }
    std::env::set_var("HF_HOME", home.path());
    std::env::set_var("HF_HUB_OFFLINE", "1");
    let model = LoadedModel::load("aisle-test/tiny-llama").expect("cached model loads offline");
    assert_eq!(model.dir, snap);
    assert_eq!(model.config.num_layers, 2);
    let err = LoadedModel::load("aisle-test/not-cached").err().unwrap().to_string();
    assert!(err.contains(&home.path().join("hub").display().to_string()), "{err}");
    assert!(err.contains("HF_HUB_OFFLINE is set"), "{err}");
}
