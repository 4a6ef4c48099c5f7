//! Hub downloads against a loopback stub that speaks the Hugging Face hub's URL layout:
//! `/api/models/{repo}/revision/{rev}` lists files; `/{repo}/resolve/{rev}/{file}` serves small
//! files with their git blob id as ETag and redirects LFS files (absolute URL, `X-Linked-Etag`
//! = sha256) to `/cdn/{sha256}`, which honours `Range`. The stub can require a token, cut the
//! first transfer of a file in half, or serve bytes that do not match the ETag.

use crate::common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use aisle::hub::{fetch, HubOptions, HubSpec};
use aisle::runtime::LoadedModel;
use axum::body::Body;
use axum::http::{header, HeaderMap, Response, StatusCode, Uri};
use sha2::Digest;

const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

#[derive(Default)]
struct Stub {
    /// repo → file → (bytes, stored in LFS)
    repos: BTreeMap<String, BTreeMap<String, (Vec<u8>, bool)>>,
    token: Option<String>,
    /// Files whose next full transfer is cut off halfway.
    interrupt: Mutex<Vec<String>>,
    /// A file served with one byte changed (its ETag still the original's).
    corrupt: Option<String>,
    /// "path range" of every request, in order.
    log: Mutex<Vec<String>>,
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn git_oid(b: &[u8]) -> String {
    let mut h = sha1::Sha1::new();
    h.update(format!("blob {}\0", b.len()).as_bytes());
    h.update(b);
    hex(&h.finalize())
}

impl Stub {
    fn handle(&self, base: &str, uri: &Uri, headers: &HeaderMap) -> Response<Body> {
        let range = headers.get(header::RANGE).and_then(|v| v.to_str().ok()).unwrap_or("");
        self.log.lock().unwrap().push(format!("{} {range}", uri.path()));
        let path = uri.path().trim_start_matches('/');
        if let Some(sha) = path.strip_prefix("cdn/") {
            let found = self
                .repos
                .values()
                .flatten()
                .find(|(_, (b, _))| hex(&sha2::Sha256::digest(b)) == sha);
            return match found {
                Some((name, (bytes, _))) => self.ranged(name, bytes, range, Response::builder()),
                None => status(StatusCode::NOT_FOUND),
            };
        }
        let authorized = self.token.as_ref().is_none_or(|t| {
            headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) == Some(&format!("Bearer {t}"))
        });
        if !authorized {
            return status(StatusCode::UNAUTHORIZED);
        }
        let parts: Vec<&str> = path.splitn(6, '/').collect();
        match parts.as_slice() {
            ["api", "models", org, name, "revision", _rev] => self.listing(&format!("{org}/{name}")),
            [org, name, "resolve", _rev, file @ ..] => {
                self.resolve(base, &format!("{org}/{name}"), &file.join("/"), range)
            }
            _ => status(StatusCode::NOT_FOUND),
        }
    }

    fn listing(&self, repo: &str) -> Response<Body> {
        let Some(files) = self.repos.get(repo) else {
            return status(StatusCode::UNAUTHORIZED);
        };
        let siblings: Vec<_> = files.keys().map(|f| serde_json::json!({ "rfilename": f })).collect();
        let body = serde_json::json!({ "id": repo, "sha": COMMIT, "siblings": siblings });
        Response::new(Body::from(body.to_string()))
    }

    fn resolve(&self, base: &str, repo: &str, file: &str, range: &str) -> Response<Body> {
        let Some((bytes, lfs)) = self.repos.get(repo).and_then(|f| f.get(file)) else {
            return status(StatusCode::NOT_FOUND);
        };
        let b = Response::builder().header("x-repo-commit", COMMIT);
        if *lfs {
            let sha = hex(&sha2::Sha256::digest(bytes));
            return b
                .status(StatusCode::FOUND)
                .header("x-linked-etag", format!("\"{sha}\""))
                .header("x-linked-size", bytes.len())
                .header(header::LOCATION, format!("{base}/cdn/{sha}"))
                .body(Body::empty())
                .unwrap();
        }
        let b = b.header(header::ETAG, format!("\"{}\"", git_oid(bytes)));
        self.ranged(file, bytes, range, b)
    }

    /// `bytes=a-b` / `bytes=a-` of `bytes` as a 206, cut off halfway when asked to.
    fn ranged(&self, name: &str, bytes: &[u8], range: &str, b: axum::http::response::Builder) -> Response<Body> {
        let (start, end) = parse_range(range, bytes.len());
        let mut body = bytes[start..end].to_vec();
        if self.corrupt.as_deref() == Some(name) && !body.is_empty() {
            body[0] ^= 0xff;
        }
        let b = b
            .status(StatusCode::PARTIAL_CONTENT)
            .header(
                header::CONTENT_RANGE,
                format!("bytes {start}-{}/{}", end - 1, bytes.len()),
            )
            .header(header::CONTENT_LENGTH, body.len());
        let mut cut = self.interrupt.lock().unwrap();
        if end - start > 1 && cut.iter().any(|f| f == name) {
            cut.retain(|f| f != name);
            // Half the body, then (after hyper has flushed it: the stream is pending once) a
            // broken connection.
            let half = body[..body.len() / 2].to_vec();
            let stream = futures_util::stream::unfold(0, move |step| {
                let half = half.clone();
                async move {
                    match step {
                        0 => Some((Ok(half), 1)),
                        1 => {
                            tokio::task::yield_now().await;
                            Some((Err(std::io::Error::other("connection cut by the stub")), 2))
                        }
                        _ => None,
                    }
                }
            });
            return b.body(Body::from_stream(stream)).unwrap();
        }
        b.body(Body::from(body)).unwrap()
    }
}

fn parse_range(range: &str, len: usize) -> (usize, usize) {
    let Some((a, b)) = range.strip_prefix("bytes=").and_then(|r| r.split_once('-')) else {
        return (0, len);
    };
    let start = a.parse().unwrap_or(0);
    let end = b.parse::<usize>().map(|e| e + 1).unwrap_or(len).min(len);
    (start, end)
}

fn status(s: StatusCode) -> Response<Body> {
    Response::builder().status(s).body(Body::empty()).unwrap()
}

/// Serve `stub` on a loopback port from a background runtime; returns its base URL.
fn serve(stub: Arc<Stub>) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let b = base.clone();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            let app = axum::Router::new().fallback(move |uri: Uri, headers: HeaderMap| {
                let stub = stub.clone();
                let b = b.clone();
                async move { stub.handle(&b, &uri, &headers) }
            });
            axum::serve(listener, app).await.unwrap();
        });
    });
    base
}

fn fixture_repo() -> BTreeMap<String, (Vec<u8>, bool)> {
    let mut files = BTreeMap::new();
    for f in [
        "config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "generation_config.json",
        "chat_template.jinja",
        "model.safetensors",
    ] {
        let bytes = std::fs::read(common::fixture("llama").join(f)).unwrap();
        files.insert(f.to_string(), (bytes, f.ends_with(".safetensors")));
    }
    files.insert("README.md".into(), (b"# not needed\n".to_vec(), false));
    files
}

/// The hub holding `aisle-test/tiny`: the llama fixture plus a README nothing needs.
fn tiny_repo() -> BTreeMap<String, BTreeMap<String, (Vec<u8>, bool)>> {
    BTreeMap::from([("aisle-test/tiny".to_string(), fixture_repo())])
}

fn options(base: &str, cache: &std::path::Path) -> HubOptions {
    let mut o = HubOptions::from_vars(|_| None);
    (o.endpoint, o.cache_dir, o.progress) = (base.to_string(), cache.to_path_buf(), false);
    o
}

fn spec(s: &str) -> HubSpec {
    HubSpec::parse(s).unwrap()
}

#[test]
fn downloads_through_a_redirect_resume_after_a_cut_and_then_work_offline() {
    let stub = Arc::new(Stub {
        repos: tiny_repo(),
        interrupt: Mutex::new(vec!["model.safetensors".into()]),
        ..Default::default()
    });
    let base = serve(stub.clone());
    let cache = tempfile::tempdir().unwrap();
    let opts = options(&base, cache.path());
    let dir = fetch(&spec("aisle-test/tiny"), &opts).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        dir,
        cache
            .path()
            .join(format!("models--aisle-test--tiny/snapshots/{COMMIT}"))
    );
    for (name, (bytes, _)) in fixture_repo().iter().filter(|(n, _)| *n != "README.md") {
        assert_eq!(&std::fs::read(dir.join(name)).unwrap(), bytes, "{name}");
    }
    let log = stub.log.lock().unwrap().clone();
    assert!(
        log.iter().all(|l| !l.contains("README.md")),
        "only needed files: {log:?}"
    );
    let len = fixture_repo()["model.safetensors"].0.len();
    let resumed = log
        .iter()
        .filter_map(|l| l.strip_prefix("/cdn/"))
        .filter_map(|l| l.split_once(" bytes="))
        .filter_map(|(_, r)| r.strip_suffix('-')?.parse::<usize>().ok());
    assert!(
        resumed.clone().any(|s| s > 0 && s < len),
        "the cut transfer resumed mid-file: {log:?}"
    );
    let model = LoadedModel::load_with("aisle-test/tiny", &opts).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(model.dir, dir);
    // Complete in the cache: no request at all, even when offline.
    let before = stub.log.lock().unwrap().len();
    let offline = HubOptions { offline: true, ..opts };
    assert_eq!(fetch(&spec("aisle-test/tiny"), &offline).unwrap(), dir);
    assert_eq!(stub.log.lock().unwrap().len(), before);
    let err = fetch(&spec("aisle-test/other"), &offline).unwrap_err().to_string();
    assert!(err.contains("HF_HUB_OFFLINE is set"), "{err}");
}

#[test]
fn a_file_that_does_not_match_its_etag_is_refused_and_removed() {
    let stub = Arc::new(Stub {
        repos: tiny_repo(),
        corrupt: Some("tokenizer.json".into()),
        ..Default::default()
    });
    let cache = tempfile::tempdir().unwrap();
    let opts = options(&serve(stub), cache.path());
    let err = fetch(&spec("aisle-test/tiny"), &opts).unwrap_err().to_string();
    assert!(
        err.contains("`tokenizer.json` does not match the hub's checksum"),
        "{err}"
    );
    let snap = cache
        .path()
        .join(format!("models--aisle-test--tiny/snapshots/{COMMIT}"));
    assert!(snap.join("config.json").exists() && !snap.join("tokenizer.json").exists());
}

#[test]
fn gated_repositories_need_the_token() {
    let stub = Arc::new(Stub {
        repos: tiny_repo(),
        token: Some("hf_secret".into()),
        ..Default::default()
    });
    let base = serve(stub);
    let cache = tempfile::tempdir().unwrap();
    let mut opts = options(&base, cache.path());
    let err = fetch(&spec("aisle-test/tiny"), &opts).unwrap_err().to_string();
    assert!(err.contains("answered 401") && err.contains("HF_TOKEN"), "{err}");
    opts.token = Some("hf_secret".into());
    assert!(fetch(&spec("aisle-test/tiny"), &opts)
        .unwrap()
        .join("model.safetensors")
        .exists());
}

#[test]
fn a_gguf_file_is_named_or_the_only_one() {
    let gguf = |tag: &str| (format!("GGUF fake {tag}").into_bytes(), true);
    let stub = Arc::new(Stub {
        repos: BTreeMap::from([
            (
                "o/two".to_string(),
                BTreeMap::from([
                    ("m.Q4_0.gguf".to_string(), gguf("a")),
                    ("m.Q8_0.gguf".to_string(), gguf("b")),
                ]),
            ),
            (
                "o/one".to_string(),
                BTreeMap::from([("sub/m.Q4_K_M.gguf".to_string(), gguf("c"))]),
            ),
        ]),
        ..Default::default()
    });
    let cache = tempfile::tempdir().unwrap();
    let opts = options(&serve(stub), cache.path());
    let err = fetch(&spec("o/two"), &opts).unwrap_err().to_string();
    assert!(
        err.contains("2 GGUF files") && err.contains("o/two/m.Q4_0.gguf"),
        "{err}"
    );
    let named = fetch(&spec("o/two/m.Q8_0.gguf"), &opts).unwrap();
    assert_eq!(std::fs::read(&named).unwrap(), b"GGUF fake b");
    let only = fetch(&spec("o/one"), &opts).unwrap();
    assert!(only.ends_with("sub/m.Q4_K_M.gguf"), "{}", only.display());
    let err = fetch(&spec("o/missing"), &opts).unwrap_err().to_string();
    assert!(err.contains("answered 401"), "{err}");
}

#[test]
fn a_sharded_checkpoint_fetches_every_shard_its_index_names() {
    let mut files = fixture_repo();
    files.remove("model.safetensors");
    let index = r#"{"metadata":{},"weight_map":{"a":"model-00001-of-00002.safetensors","b":"model-00002-of-00002.safetensors","c":"model-00001-of-00002.safetensors"}}"#;
    files.insert(
        "model.safetensors.index.json".into(),
        (index.as_bytes().to_vec(), false),
    );
    for (i, shard) in ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
        .iter()
        .enumerate()
    {
        files.insert(shard.to_string(), (format!("shard {i}").into_bytes(), true));
    }
    files.insert(
        "model-00003-of-00002.safetensors".into(),
        (b"not in the index".to_vec(), true),
    );
    let stub = Arc::new(Stub {
        repos: BTreeMap::from([("o/sharded".to_string(), files)]),
        ..Default::default()
    });
    let cache = tempfile::tempdir().unwrap();
    let dir = fetch(&spec("o/sharded"), &options(&serve(stub.clone()), cache.path())).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        std::fs::read(dir.join("model-00002-of-00002.safetensors")).unwrap(),
        b"shard 1"
    );
    assert!(dir.join("model-00001-of-00002.safetensors").exists());
    assert!(
        !dir.join("model-00003-of-00002.safetensors").exists(),
        "only the shards the index names"
    );
}
