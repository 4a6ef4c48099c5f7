//! The tools the server itself runs for its model (`aisle serve --catalog`, or `[tools]` in
//! the config file): the catalog tools and HTTP tools declared in the config, each with its
//! JSON-schema parameters, a timeout, and a result the model can always read.
//!
//! Reading order: `catalog` (the two catalog tools) → `http` (a tool that is a URL) → here
//! (the set of tools, one call, several calls at once). A failing, slow or unknown tool
//! gives a result `{"error": "..."}`, never an error to the caller.
//! Owns: `ToolsConfig`, `Toolbox`, `CallRecord`. Must not: run the model or speak HTTP to
//! clients (`server::grounded` runs the loop).

pub mod catalog;
mod http;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::{json, Value};

use crate::catalog::{Catalog, CatalogError};
use crate::tools::Function;
use catalog::CallError;
pub use http::HttpToolConfig;

fn default_rounds() -> usize {
    4
}
fn default_timeout_ms() -> u64 {
    5_000
}

/// `[tools]` in the config file.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ToolsConfig {
    /// A catalog (`.db`, read live, or `.json`): enables `search_products` and `get_product`.
    pub catalog: Option<PathBuf>,
    /// Most model turns one request may spend calling tools before it must answer.
    #[serde(default = "default_rounds")]
    pub max_rounds: usize,
    /// Per-call timeout for tools that do not set their own.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    #[serde(default)]
    pub http: Vec<HttpToolConfig>,
}

impl Default for ToolsConfig {
    fn default() -> Self {
        ToolsConfig {
            catalog: None,
            max_rounds: default_rounds(),
            timeout_ms: default_timeout_ms(),
            http: Vec::new(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ToolboxError {
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error("tools: {0}")]
    Invalid(String),
}

enum Runner {
    Search(Arc<Catalog>),
    Get(Arc<Catalog>),
    Http(http::HttpTool),
}

struct Tool {
    function: Function,
    description: String,
    timeout: Duration,
    runner: Runner,
}

/// One call as it ran: what the model asked, what it read back, how long it took.
#[derive(Debug, Clone, PartialEq)]
pub struct CallRecord {
    pub name: String,
    pub arguments: Value,
    /// The tool message's content (compact JSON).
    pub content: String,
    /// Rows the tool returned (0 for an error).
    pub rows: usize,
    pub error: Option<String>,
    /// The call named a tool and its arguments fit it (a valid call may still fail).
    pub valid: bool,
    pub latency: Duration,
}

impl CallRecord {
    /// The record for the response's `aisle_tools` list.
    pub fn json(&self) -> Value {
        json!({"name": self.name, "arguments": self.arguments, "rows": self.rows, "valid": self.valid,
               "latency_ms": (self.latency.as_secs_f64() * 1e4).round() / 10.0, "error": self.error,
               "result": self.content})
    }
}

/// The server's tools.
pub struct Toolbox {
    tools: Vec<Tool>,
    pub max_rounds: usize,
}

fn valid_name(n: &str) -> bool {
    (1..=64).contains(&n.len()) && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

impl Toolbox {
    pub fn new(cfg: &ToolsConfig) -> Result<Toolbox, ToolboxError> {
        if !(1..=16).contains(&cfg.max_rounds) {
            return Err(ToolboxError::Invalid("max_rounds must be between 1 and 16".into()));
        }
        let timeout = Duration::from_millis(cfg.timeout_ms.max(1));
        let mut tools = Vec::new();
        if let Some(path) = &cfg.catalog {
            let cat = Arc::new(Catalog::open(path)?);
            tools.extend(catalog_tools(cat, timeout)?);
        }
        for h in &cfg.http {
            if !valid_name(&h.name) {
                return Err(ToolboxError::Invalid(format!(
                    "`{}`: a tool name is 1 to 64 letters, digits, `_` or `-`",
                    h.name
                )));
            }
            if tools.iter().any(|t: &Tool| t.function.name == h.name) {
                return Err(ToolboxError::Invalid(format!("two tools are named `{}`", h.name)));
            }
            let tool = http::HttpTool::new(h).map_err(ToolboxError::Invalid)?;
            tools.push(Tool {
                function: Function {
                    name: h.name.clone(),
                    parameters: h.parameters.clone().unwrap_or_else(|| json!({"type": "object"})),
                },
                description: h.description.clone().unwrap_or_default(),
                timeout: h.timeout_ms.map_or(timeout, |ms| Duration::from_millis(ms.max(1))),
                runner: Runner::Http(tool),
            });
        }
        if tools.is_empty() {
            return Err(ToolboxError::Invalid(
                "[tools] declares no tool (set `catalog` or add [[tools.http]])".into(),
            ));
        }
        Ok(Toolbox {
            tools,
            max_rounds: cfg.max_rounds,
        })
    }

    /// The tools as an OpenAI `tools` array (what the chat template and grammar get).
    pub fn definitions(&self) -> Value {
        Value::Array(
            self.tools
                .iter()
                .map(|t| {
                    json!({"type": "function", "function": {"name": t.function.name,
                           "description": t.description, "parameters": t.function.parameters}})
                })
                .collect(),
        )
    }

    pub fn names(&self) -> Vec<&str> {
        self.tools.iter().map(|t| t.function.name.as_str()).collect()
    }

    /// Run one call; `arguments` is the JSON text the model wrote.
    pub async fn call(&self, name: &str, arguments: &str) -> CallRecord {
        let t0 = Instant::now();
        let args: Result<Value, CallError> =
            serde_json::from_str(arguments).map_err(|e| CallError::Invalid(format!("the arguments are not JSON: {e}")));
        let outcome = match (self.tools.iter().find(|t| t.function.name == name), &args) {
            (None, _) => Err(CallError::Invalid(format!("there is no tool named `{name}`"))),
            (_, Err(e)) => Err(e.clone()),
            (Some(tool), Ok(a)) => run(tool, a.clone()).await,
        };
        let valid = !matches!(outcome, Err(CallError::Invalid(_)));
        let (content, rows, error) = match outcome {
            Ok((v, rows)) => (v.to_string(), rows, None),
            Err(e) => (
                json!({"error": e.message()}).to_string(),
                0,
                Some(e.message().to_string()),
            ),
        };
        CallRecord {
            name: name.to_string(),
            arguments: args.unwrap_or(Value::String(arguments.to_string())),
            content,
            rows,
            error,
            valid,
            latency: t0.elapsed(),
        }
    }

    /// Run several calls at once; the records come back in call order.
    pub async fn call_all(&self, calls: &[(String, String)]) -> Vec<CallRecord> {
        futures_util::future::join_all(calls.iter().map(|(n, a)| self.call(n, a))).await
    }
}

fn catalog_tools(cat: Arc<Catalog>, timeout: Duration) -> Result<Vec<Tool>, ToolboxError> {
    let cats = cat.categories()?;
    let fields = cat.fields()?;
    let [(search, search_desc), (get, get_desc)] = catalog::descriptions();
    Ok(vec![
        Tool {
            function: Function {
                name: search.into(),
                parameters: catalog::search_schema(&cats, &fields),
            },
            description: search_desc.into(),
            timeout,
            runner: Runner::Search(cat.clone()),
        },
        Tool {
            function: Function {
                name: get.into(),
                parameters: catalog::get_schema(&fields),
            },
            description: get_desc.into(),
            timeout,
            runner: Runner::Get(cat),
        },
    ])
}

/// One tool's outcome within its timeout.
async fn run(tool: &Tool, args: Value) -> catalog::Outcome {
    let name = tool.function.name.clone();
    let work = async {
        match &tool.runner {
            Runner::Search(c) => blocking(c.clone(), args, catalog::search).await,
            Runner::Get(c) => blocking(c.clone(), args, catalog::get).await,
            Runner::Http(h) => h.call(&args).await,
        }
    };
    match tokio::time::timeout(tool.timeout, work).await {
        Ok(r) => r,
        Err(_) => Err(CallError::Failed(format!(
            "{name} did not answer within {} ms",
            tool.timeout.as_millis()
        ))),
    }
}

/// A catalog query on the blocking pool (SQLite is synchronous).
async fn blocking(c: Arc<Catalog>, args: Value, query: fn(&Catalog, Value) -> catalog::Outcome) -> catalog::Outcome {
    tokio::task::spawn_blocking(move || query(&c, args))
        .await
        .unwrap_or_else(|_| Err(CallError::Failed("the catalog query failed".into())))
}

#[cfg(test)]
mod tests;
