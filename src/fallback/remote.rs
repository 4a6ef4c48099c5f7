//! A remote OpenAI-compatible backend: JSON and streaming calls with connect / first-byte /
//! total timeouts, retries (exponential backoff with jitter, honouring `Retry-After` on 429 and
//! 503) and a circuit breaker.
//!
//! Owns: HTTP to one remote, turning its SSE (through `crate::sse::SseDecoder`) into chunks,
//! and classifying failures. Retries happen only before the first byte of a response body
//! reaches the caller. Must not: decide routing or rewrite responses into Aisle's format (the
//! server does).

use std::pin::Pin;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures_util::{Stream, StreamExt};
use serde_json::Value;

use super::breaker::Breaker;
use super::config::RemoteConfig;
use super::retry::{backoff, parse_retry_after};
use crate::sse::SseDecoder;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RemoteError {
    #[error("remote `{0}` is failing (circuit open); not tried")]
    CircuitOpen(String),
    #[error("remote `{name}`: cannot connect: {message}")]
    Connect { name: String, message: String },
    #[error("remote `{name}`: no response within {ms} ms ({stage})")]
    Timeout { name: String, stage: &'static str, ms: u64 },
    #[error("remote `{name}` answered HTTP {status}: {body}")]
    Status {
        name: String,
        status: u16,
        body: String,
        retry_after: Option<Duration>,
    },
    #[error("remote `{name}` sent malformed data: {message}")]
    Malformed { name: String, message: String },
    #[error("remote `{name}` dropped the stream: {message}")]
    Dropped { name: String, message: String },
}

impl RemoteError {
    fn retryable(&self) -> bool {
        match self {
            RemoteError::Connect { .. } | RemoteError::Timeout { .. } => true,
            RemoteError::Status { status, .. } => *status == 429 || *status >= 500,
            _ => false,
        }
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            RemoteError::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

/// Parsed `data:` payloads of an SSE response, ending before `[DONE]`.
pub type ChunkStream = Pin<Box<dyn Stream<Item = Result<Value, RemoteError>> + Send>>;

pub struct RemoteBackend {
    pub cfg: RemoteConfig,
    http: reqwest::Client,
    api_key: Option<String>,
    breaker: Mutex<Breaker>,
}

impl RemoteBackend {
    /// Build the client; the API key is read from `api_key_env` now.
    pub fn new(cfg: RemoteConfig) -> Result<RemoteBackend, String> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_millis(cfg.connect_timeout_ms))
            .build()
            .map_err(|e| format!("remote `{}`: {e}", cfg.name))?;
        let api_key = cfg.api_key_env.as_ref().and_then(|v| std::env::var(v).ok());
        if cfg.api_key_env.is_some() && api_key.is_none() {
            tracing::warn!(
                "remote `{}`: environment variable {:?} is not set",
                cfg.name,
                cfg.api_key_env
            );
        }
        let breaker = Mutex::new(Breaker::new(
            cfg.breaker_failures,
            Duration::from_millis(cfg.breaker_cooldown_ms),
        ));
        Ok(RemoteBackend {
            cfg,
            http,
            api_key,
            breaker,
        })
    }

    /// 0 closed, 1 open, 2 half-open.
    pub fn breaker_code(&self) -> i64 {
        self.breaker.lock().map(|b| b.code()).unwrap_or(1)
    }

    fn allow(&self) -> bool {
        self.breaker
            .lock()
            .map(|mut b| b.allow(Instant::now()))
            .unwrap_or(false)
    }

    fn record(&self, ok: bool) {
        if let Ok(mut b) = self.breaker.lock() {
            if ok {
                b.on_success()
            } else {
                b.on_failure(Instant::now())
            }
        }
    }

    /// Send once and wait for the response head (status and headers) within the first-byte
    /// timeout. Non-2xx statuses become `RemoteError::Status` with the body text.
    async fn send(&self, path: &str, body: &Value) -> Result<reqwest::Response, RemoteError> {
        let name = self.cfg.name.clone();
        let url = format!("{}/{}", self.cfg.base_url.trim_end_matches('/'), path);
        let mut body = body.clone();
        body["model"] = Value::from(self.cfg.model.clone());
        let mut req = self.http.post(url).json(&body);
        if let Some(k) = &self.api_key {
            req = req.bearer_auth(k);
        }
        let ms = self.cfg.first_byte_timeout_ms;
        let resp = match tokio::time::timeout(Duration::from_millis(ms), req.send()).await {
            Err(_) => {
                return Err(RemoteError::Timeout {
                    name,
                    stage: "first byte",
                    ms,
                })
            }
            Ok(Err(e)) => {
                return Err(RemoteError::Connect {
                    name,
                    message: e.to_string(),
                })
            }
            Ok(Ok(r)) => r,
        };
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let retry_after = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        let text = resp.text().await.unwrap_or_default();
        Err(RemoteError::Status {
            name,
            status: status.as_u16(),
            body: text.chars().take(500).collect(),
            retry_after,
        })
    }

    /// `send` with the breaker and retries; bounded by the total timeout.
    async fn send_with_retries(&self, path: &str, body: &Value) -> Result<reqwest::Response, RemoteError> {
        let deadline = Instant::now() + Duration::from_millis(self.cfg.total_timeout_ms);
        let mut attempt = 0;
        loop {
            if !self.allow() {
                return Err(RemoteError::CircuitOpen(self.cfg.name.clone()));
            }
            let err = match self.send(path, body).await {
                Ok(resp) => return Ok(resp),
                Err(e) => e,
            };
            self.record(false);
            let wait = backoff(
                attempt,
                Duration::from_millis(200),
                Duration::from_secs(5),
                err.retry_after(),
                rand::random(),
            );
            if !err.retryable() || attempt >= self.cfg.max_retries || Instant::now() + wait >= deadline {
                return Err(err);
            }
            tracing::info!(
                "remote `{}`: retry {} in {:?} after: {err}",
                self.cfg.name,
                attempt + 1,
                wait
            );
            tokio::time::sleep(wait).await;
            attempt += 1;
        }
    }

    /// A non-streaming call; returns the remote's JSON body.
    pub async fn complete(&self, path: &str, body: &Value) -> Result<Value, RemoteError> {
        let name = self.cfg.name.clone();
        let resp = self.send_with_retries(path, body).await?;
        let total = Duration::from_millis(self.cfg.total_timeout_ms);
        let bytes = match tokio::time::timeout(total, resp.bytes()).await {
            Err(_) => {
                self.record(false);
                return Err(RemoteError::Timeout {
                    name,
                    stage: "body",
                    ms: self.cfg.total_timeout_ms,
                });
            }
            Ok(Err(e)) => {
                self.record(false);
                return Err(RemoteError::Dropped {
                    name,
                    message: e.to_string(),
                });
            }
            Ok(Ok(b)) => b,
        };
        match serde_json::from_slice::<Value>(&bytes) {
            Ok(v) if v.get("choices").is_some() => {
                self.record(true);
                Ok(v)
            }
            Ok(_) => Err(RemoteError::Malformed {
                name,
                message: "response has no `choices`".into(),
            }),
            Err(e) => {
                self.record(false);
                Err(RemoteError::Malformed {
                    name,
                    message: e.to_string(),
                })
            }
        }
    }

    /// A streaming call; yields each chunk's JSON. A stream that ends without `[DONE]` or
    /// carries invalid JSON ends with an error item.
    pub async fn stream(&self, path: &str, body: &Value) -> Result<ChunkStream, RemoteError> {
        let mut body = body.clone();
        body["stream"] = Value::Bool(true);
        let deadline = Instant::now() + Duration::from_millis(self.cfg.total_timeout_ms);
        let resp = self.send_with_retries(path, &body).await?;
        self.record(true);
        let total = (deadline, self.cfg.total_timeout_ms);
        Ok(Box::pin(sse_chunks(self.cfg.name.clone(), resp.bytes_stream(), total)))
    }
}

/// Turn a byte stream into parsed SSE `data:` JSON payloads (through the shared, byte-safe
/// `SseDecoder`), ending with a timeout error if the stream outlives `total` (its deadline and
/// the configured milliseconds).
fn sse_chunks<S>(name: String, bytes: S, total: (Instant, u64)) -> impl Stream<Item = Result<Value, RemoteError>> + Send
where
    S: Stream<Item = reqwest::Result<bytes::Bytes>> + Send + Unpin + 'static,
{
    struct St<S> {
        bytes: S,
        sse: SseDecoder,
        done: bool,
        name: String,
    }
    let st = St {
        bytes,
        sse: SseDecoder::new(),
        done: false,
        name,
    };
    futures_util::stream::unfold(st, move |mut st| async move {
        loop {
            if st.done {
                return None;
            }
            if let Some(data) = st.sse.next_data() {
                let malformed = |message: String| RemoteError::Malformed {
                    name: st.name.clone(),
                    message,
                };
                let item = match data {
                    Ok(d) if d.trim() == "[DONE]" => return None,
                    Ok(d) => serde_json::from_str::<Value>(&d).map_err(|e| malformed(format!("bad SSE chunk: {e}"))),
                    Err(e) => Err(malformed(e.to_string())),
                };
                st.done = item.is_err();
                return Some((item, st));
            }
            let Ok(next) = tokio::time::timeout_at(total.0.into(), st.bytes.next()).await else {
                st.done = true;
                let err = RemoteError::Timeout {
                    name: st.name.clone(),
                    stage: "total",
                    ms: total.1,
                };
                return Some((Err(err), st));
            };
            let message = match next {
                Some(Ok(b)) => {
                    st.sse.push(&b);
                    continue;
                }
                Some(Err(e)) => e.to_string(),
                None => "connection closed before [DONE]".to_string(),
            };
            st.done = true;
            let name = st.name.clone();
            return Some((Err(RemoteError::Dropped { name, message }), st));
        }
    })
}
