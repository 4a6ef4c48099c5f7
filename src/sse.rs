//! Reading OpenAI-style server-sent events, for every client in Aisle (the remote fallback,
//! `aisle eval` over HTTP, `aisle bench-serve`).
//!
//! Owns: `SseDecoder`, which splits a byte stream into events (LF, CRLF or CR line ends, `data:`
//! lines joined, comments and other fields skipped) and decodes UTF-8 only once an event is
//! whole, so a multi-byte character split across network chunks arrives intact; and
//! `read_events`, the loop over a `reqwest` response that stops at `[DONE]` and turns an
//! `{"error": …}` event into an error. Must not: interpret the events' content.

use futures_util::StreamExt;
use serde_json::Value;

/// Why an SSE stream could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SseError {
    #[error("HTTP {status}: {body}")]
    Status { status: u16, body: String },
    #[error("the stream broke: {0}")]
    Transport(String),
    #[error("a stream event is not valid UTF-8")]
    Utf8,
    #[error("bad stream event {data}: {message}")]
    Json { data: String, message: String },
    #[error("server error: {0}")]
    Server(String),
    #[error("stream ended without [DONE]")]
    NoDone,
}

/// Incremental SSE parser over raw bytes. Feed chunks with `push`, take whole events' `data`
/// with `next_data`.
#[derive(Debug, Default)]
pub struct SseDecoder {
    /// Bytes not yet split into lines.
    buf: Vec<u8>,
    /// Where the next line starts in `buf`.
    pos: usize,
    /// The current event's `data` lines, joined by `\n`.
    data: Vec<u8>,
    has_data: bool,
}

impl SseDecoder {
    pub fn new() -> SseDecoder {
        SseDecoder::default()
    }

    pub fn push(&mut self, chunk: &[u8]) {
        if self.pos > 0 && self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        }
        self.buf.extend_from_slice(chunk);
    }

    /// The next line (without its end), or `None` until one is complete. A CR at the end of
    /// the buffer waits for the next chunk: it may be the first half of a CRLF.
    fn next_line(&mut self) -> Option<Vec<u8>> {
        let rest = &self.buf[self.pos..];
        let end = rest.iter().position(|&b| b == b'\n' || b == b'\r')?;
        let skip = match (rest[end], rest.get(end + 1)) {
            (b'\r', Some(b'\n')) => 2,
            (b'\r', None) => return None,
            _ => 1,
        };
        let line = rest[..end].to_vec();
        self.pos += end + skip;
        if self.pos > 64 << 10 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        Some(line)
    }

    /// The next whole event's data. An event without `data` lines is skipped.
    pub fn next_data(&mut self) -> Option<Result<String, SseError>> {
        while let Some(line) = self.next_line() {
            if line.is_empty() {
                if std::mem::take(&mut self.has_data) {
                    let data = std::mem::take(&mut self.data);
                    return Some(String::from_utf8(data).map_err(|_| SseError::Utf8));
                }
                continue;
            }
            let (field, value) = match line.iter().position(|&b| b == b':') {
                Some(0) => continue, // a comment
                Some(i) => (&line[..i], line[i + 1..].strip_prefix(b" ").unwrap_or(&line[i + 1..])),
                None => (&line[..], &[][..]),
            };
            if field == b"data" {
                if self.has_data {
                    self.data.push(b'\n');
                }
                self.data.extend_from_slice(value);
                self.has_data = true;
            }
        }
        None
    }
}

/// Parse one event's data as JSON; an `{"error": …}` object is the server's error.
pub fn parse_event(data: &str) -> Result<Value, SseError> {
    let event: Value = serde_json::from_str(data).map_err(|e| SseError::Json {
        data: data.to_string(),
        message: e.to_string(),
    })?;
    match event.get("error") {
        Some(err) => Err(SseError::Server(err.to_string())),
        None => Ok(event),
    }
}

/// Feed every JSON event of `resp` to `on_event` until `[DONE]`. A non-2xx status, a broken
/// stream, an unparsable event, an error event or a stream that ends without `[DONE]` is an
/// error.
pub async fn read_events(resp: reqwest::Response, on_event: impl FnMut(Value)) -> Result<(), SseError> {
    let status = resp.status();
    if !status.is_success() {
        let body = resp.text().await.unwrap_or_default();
        return Err(SseError::Status {
            status: status.as_u16(),
            body,
        });
    }
    read_stream(resp.bytes_stream(), on_event).await
}

/// `read_events` on a body already known to be a 2xx stream (an in-process response too).
pub async fn read_stream<S, B, E>(mut bytes: S, mut on_event: impl FnMut(Value)) -> Result<(), SseError>
where
    S: futures_util::Stream<Item = Result<B, E>> + Unpin,
    B: AsRef<[u8]>,
    E: std::fmt::Display,
{
    let mut decoder = SseDecoder::new();
    while let Some(chunk) = bytes.next().await {
        decoder.push(chunk.map_err(|e| SseError::Transport(e.to_string()))?.as_ref());
        while let Some(data) = decoder.next_data() {
            let data = data?;
            if data.trim() == "[DONE]" {
                return Ok(());
            }
            on_event(parse_event(&data)?);
        }
    }
    Err(SseError::NoDone)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feed `bytes` split at every given offset; collect the events.
    fn decode(bytes: &[u8], cuts: &[usize]) -> Vec<Result<String, SseError>> {
        let mut d = SseDecoder::new();
        let mut out = Vec::new();
        let mut from = 0;
        for &c in cuts.iter().chain(std::iter::once(&bytes.len())) {
            d.push(&bytes[from..c]);
            from = c;
            out.extend(std::iter::from_fn(|| d.next_data()));
        }
        out
    }

    #[test]
    fn multibyte_characters_split_across_chunks_survive() {
        let text = "data: {\"t\":\"é€\"}\r\n\r\ndata: [DONE]\r\n\r\n".as_bytes();
        // Cut inside "é" (2 bytes), inside "€" (3 bytes) and between CR and LF.
        let e = text.iter().position(|&b| b == 0xC3).unwrap();
        let euro = text.iter().position(|&b| b == 0xE2).unwrap();
        let cr = text.iter().position(|&b| b == b'\r').unwrap();
        for cuts in [
            vec![e + 1],
            vec![euro + 1, euro + 2],
            vec![cr + 1],
            (1..text.len()).collect(),
        ] {
            let got = decode(text, &cuts);
            assert_eq!(
                got,
                vec![Ok("{\"t\":\"é€\"}".to_string()), Ok("[DONE]".to_string())],
                "cuts {cuts:?}"
            );
        }
    }

    #[test]
    fn line_ends_comments_and_multiline_data() {
        let text = b": keep-alive\n\nevent: x\rdata: a\rdata:b\r\rid: 3\ndata\n\n";
        let got = decode(text, &[]);
        assert_eq!(got, vec![Ok("a\nb".to_string()), Ok(String::new())]);
    }

    #[test]
    fn invalid_utf8_is_an_error_not_a_replacement_character() {
        let got = decode(b"data: \xff\xfe\n\n", &[]);
        assert_eq!(got, vec![Err(SseError::Utf8)]);
    }

    #[test]
    fn error_events_are_errors() {
        assert!(matches!(
            parse_event(r#"{"error": {"message": "x"}}"#),
            Err(SseError::Server(_))
        ));
        assert!(matches!(parse_event("{nope"), Err(SseError::Json { .. })));
        assert_eq!(parse_event(r#"{"a": 1}"#), Ok(serde_json::json!({"a": 1})));
    }
}
