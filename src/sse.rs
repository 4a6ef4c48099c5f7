//! Reading an OpenAI-style server-sent-event stream from a `reqwest` response.
//!
//! Owns: splitting the byte stream into `data:` lines, stopping at `[DONE]`, and turning an
//! `{"error": …}` event into an error. Must not: interpret the events' content.

use futures_util::StreamExt;
use serde_json::Value;

/// Feed every JSON event of `resp` to `on_event` until `[DONE]`. A non-2xx status, a broken
/// stream, an unparsable event, an error event or a stream that ends without `[DONE]` is an
/// error (as text a user can read).
pub async fn read_events(resp: reqwest::Response, mut on_event: impl FnMut(Value)) -> Result<(), String> {
    let status = resp.status();
    if !status.is_success() {
        let body = resp.text().await.unwrap_or_default();
        return Err(format!("HTTP {status}: {body}"));
    }
    let mut bytes = resp.bytes_stream();
    // Bytes, not text: a chunk may end inside a multi-byte character; a whole line cannot.
    let mut pending: Vec<u8> = Vec::new();
    while let Some(chunk) = bytes.next().await {
        pending.extend_from_slice(&chunk.map_err(|e| e.to_string())?);
        while let Some(end) = pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            let line = String::from_utf8_lossy(&line);
            let Some(data) = line.trim().strip_prefix("data:").map(str::trim) else {
                continue;
            };
            if data == "[DONE]" {
                return Ok(());
            }
            let event: Value = serde_json::from_str(data).map_err(|e| format!("bad stream event {data}: {e}"))?;
            if let Some(err) = event.get("error") {
                return Err(format!("server error: {err}"));
            }
            on_event(event);
        }
    }
    Err("stream ended without [DONE]".into())
}
