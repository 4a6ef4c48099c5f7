//! LLM-as-judge: any OpenAI-compatible model grades a free-form answer against the catalog's
//! facts with a fixed rubric, and answers with a verdict constrained by `response_format`
//! `json_schema` (so the verdict always parses).
//!
//! Owns: the rubric, the judge request and reading its verdict. Must not: run the evaluated
//! model or aggregate figures (`report` does).

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::dataset::EvalItem;
use super::EvalError;

const RUBRIC: &str = "You grade a shopping assistant's answer against the store catalog's facts.\n\
The reference answer was written from the catalog and is correct. Grade the assistant's answer:\n\
- \"correct\": it states every fact the question asks for with the reference's values (wording may \
differ) and invents nothing; when the reference says the product is not in the catalog or cannot be \
checked, the answer must say so too, without inventing a price or spec.\n\
- \"partial\": some asked-for facts are right, others are missing or wrong.\n\
- \"incorrect\": the asked-for fact is wrong or missing, a value is invented, or it refuses where the \
reference answers.\n\
Reply with the verdict and a one-sentence reason.";

/// The judge's answer for one item.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    pub verdict: String,
    pub reason: String,
}

impl Verdict {
    pub fn correct(&self) -> bool {
        self.verdict == "correct"
    }
}

/// An OpenAI-compatible judge model.
pub struct Judge {
    client: reqwest::Client,
    url: String,
    model: String,
    api_key: Option<String>,
}

fn schema() -> Value {
    json!({
        "type": "json_schema",
        "json_schema": {
            "name": "verdict",
            "strict": true,
            "schema": {
                "type": "object",
                "properties": {
                    "verdict": {"type": "string", "enum": ["correct", "partial", "incorrect"]},
                    "reason": {"type": "string"}
                },
                "required": ["verdict", "reason"],
                "additionalProperties": false
            }
        }
    })
}

/// The conversation the evaluated model saw, as plain lines.
fn transcript(item: &EvalItem) -> String {
    item.messages
        .iter()
        .map(|m| format!("{}: {}", m.role, m.content.as_deref().unwrap_or("")))
        .collect::<Vec<_>>()
        .join("\n")
}

impl Judge {
    /// `url` is the judge's base URL (with or without `/v1`).
    pub fn new(url: &str, model: &str, api_key: Option<String>) -> Result<Judge, EvalError> {
        let client = reqwest::Client::builder()
            .build()
            .map_err(|e| EvalError::Http(e.to_string()))?;
        let base = url.trim_end_matches('/').trim_end_matches("/v1");
        Ok(Judge {
            client,
            url: format!("{base}/v1/chat/completions"),
            model: model.to_string(),
            api_key,
        })
    }

    /// The request body for one item and answer.
    pub fn request(&self, item: &EvalItem, answer: &str) -> Value {
        let reference = item.answer.clone().unwrap_or_else(|| item.expected.all().join(" / "));
        let user = format!(
            "Conversation:\n{}\n\nReference answer (from the catalog): {reference}\nKey fact: {}\n\nAssistant's answer: {answer}",
            transcript(item),
            item.expected.all().join(" / ")
        );
        json!({
            "model": self.model, "temperature": 0, "max_tokens": 200,
            "messages": [{"role": "system", "content": RUBRIC}, {"role": "user", "content": user}],
            "response_format": schema(),
        })
    }

    /// Ask the judge; a transport error, a non-2xx answer or a verdict outside the schema is an
    /// error (reported per item, never counted as correct).
    pub async fn grade(&self, item: &EvalItem, answer: &str) -> Result<Verdict, String> {
        let mut req = self.client.post(&self.url).json(&self.request(item, answer));
        if let Some(k) = &self.api_key {
            req = req.bearer_auth(k);
        }
        let resp = req.send().await.map_err(|e| format!("judge: {e}"))?;
        let status = resp.status();
        let body: Value = resp.json().await.map_err(|e| format!("judge: {e}"))?;
        if !status.is_success() {
            return Err(format!("judge answered {status}: {body}"));
        }
        let content = body["choices"][0]["message"]["content"].as_str().unwrap_or_default();
        let v: Verdict = serde_json::from_str(content)
            .map_err(|e| format!("judge verdict is not the schema's JSON: {e}: {content}"))?;
        match v.verdict.as_str() {
            "correct" | "partial" | "incorrect" => Ok(v),
            other => Err(format!("judge verdict `{other}` is not correct/partial/incorrect")),
        }
    }
}
