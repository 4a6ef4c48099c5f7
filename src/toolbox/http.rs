//! A tool that is a URL: the call's arguments are POSTed as JSON and the response body is
//! what the model reads (live stock, prices, order history from another service).
//!
//! Owns: the request, the response size cap and the mapping of failures to messages the
//! model can answer from. Must not: time out (the toolbox bounds every call).

use serde::Deserialize;
use serde_json::{json, Value};

/// Largest response body a tool may return to the model.
const MAX_BODY: usize = 16 << 10;

/// `[[tools.http]]` in the config file.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HttpToolConfig {
    pub name: String,
    pub description: Option<String>,
    pub url: String,
    /// JSON Schema of the arguments (default: any object).
    pub parameters: Option<Value>,
    pub timeout_ms: Option<u64>,
}

pub struct HttpTool {
    name: String,
    url: String,
    client: reqwest::Client,
}

impl HttpTool {
    pub fn new(cfg: &HttpToolConfig) -> Result<HttpTool, String> {
        if !(cfg.url.starts_with("http://") || cfg.url.starts_with("https://")) {
            return Err(format!("`{}`: url must start with http:// or https://", cfg.name));
        }
        if let Some(p) = &cfg.parameters {
            if !p.is_object() {
                return Err(format!("`{}`: parameters must be a JSON Schema object", cfg.name));
            }
        }
        let client = reqwest::Client::builder()
            .build()
            .map_err(|e| format!("`{}`: {e}", cfg.name))?;
        Ok(HttpTool {
            name: cfg.name.clone(),
            url: cfg.url.clone(),
            client,
        })
    }

    /// POST the arguments; the JSON body and its row count, or what went wrong.
    pub async fn call(&self, args: &Value) -> super::catalog::Outcome {
        let failed = |why: String| {
            tracing::warn!(target: "aisle::tools", tool = %self.name, url = %self.url, %why, "HTTP tool failed");
            super::catalog::CallError::Failed(format!("{} is not available right now", self.name))
        };
        let resp = self
            .client
            .post(&self.url)
            .json(args)
            .send()
            .await
            .map_err(|e| failed(e.to_string()))?;
        let status = resp.status();
        if !status.is_success() {
            return Err(failed(format!("HTTP {status}")));
        }
        let body = read_capped(resp).await.map_err(failed)?;
        let value = serde_json::from_slice::<Value>(&body)
            .unwrap_or_else(|_| json!({"result": String::from_utf8_lossy(&body)}));
        let rows = match &value {
            Value::Array(a) => a.len(),
            Value::Object(o) => o.get("results").and_then(Value::as_array).map_or(1, Vec::len),
            _ => 1,
        };
        Ok((value, rows))
    }
}

async fn read_capped(mut resp: reqwest::Response) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| e.to_string())? {
        body.extend_from_slice(&chunk);
        if body.len() > MAX_BODY {
            return Err(format!("response larger than {MAX_BODY} bytes"));
        }
    }
    Ok(body)
}
