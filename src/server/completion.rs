//! `/v1/completions` validation: prompt lists (strings, token ids, lists of either) become one
//! engine request each; `echo`, `max_tokens: 0` (score only), `best_of`, and the prompt
//! scores they need. Part of the one validation step (`validate`), in its order.
//!
//! Owns: what the completions endpoint adds to the shared checks. Must not: run, route or
//! shape responses.

use super::api::{CompletionRequest, Endpoint, PromptInput};
use super::errors::ApiError;
use super::validate::{
    check_prompt, check_text_bytes, constraint, generation, prompt_logprobs, valid, Limits, ValidRequest, MAX_CHOICES,
};
use crate::sampling::MAX_TOP_LOGPROBS;

/// Most prompts in one completions request.
pub const MAX_PROMPTS: usize = 256;

/// `/v1/completions`: one engine request per prompt.
pub fn completion(body: &CompletionRequest, limits: &Limits) -> Result<ValidRequest, ApiError> {
    let prompts = completion_prompts(&body.prompt, limits)?;
    let logprobs = match body.logprobs {
        None => None,
        Some(k) if (0..=MAX_TOP_LOGPROBS as i64).contains(&k) => Some(k as usize),
        Some(_) => {
            return Err(ApiError::invalid(
                "logprobs",
                format!("logprobs must be between 0 and {MAX_TOP_LOGPROBS}"),
            ))
        }
    };
    let echo = body.echo.unwrap_or(false);
    let score_only = body.common.max_tokens == Some(0);
    if score_only && !echo {
        return Err(ApiError::invalid(
            "max_tokens",
            "max_tokens must be at least 1 (0 is allowed with `echo: true`, to score the prompt only)",
        ));
    }
    let scores = prompt_logprobs(&body.common)?.max(logprobs.filter(|_| echo));
    let best_of = best_of(body)?;
    let max_tokens = if score_only { Some(1) } else { body.common.max_tokens };
    let mut gens = Vec::with_capacity(prompts.len());
    for (text, ids) in prompts {
        let mut g = generation(&body.common, ids, max_tokens, logprobs, limits)?;
        if score_only {
            g.max_tokens = 0;
        }
        g.prompt_logprobs = scores;
        if let Some(b) = best_of {
            g.n = b;
            g.sampling.logprobs.get_or_insert(0); // candidates are ranked by total logprob
        }
        gens.push((text, g));
    }
    let grammar = constraint(&body.common, limits)?;
    for (_, g) in &mut gens {
        g.grammar = grammar.clone();
    }
    let route_text = gens.iter().map(|(t, _)| t.as_str()).collect::<Vec<_>>().join(" ");
    let mut v = valid(Endpoint::Completion, &body.common, route_text, gens, logprobs)?;
    v.shape.echo = echo;
    v.shape.best_of = best_of.map(|_| body.common.n.unwrap_or(1) as usize);
    Ok(v)
}

/// The prompts of a completions request as (text, token ids): a string, a list of strings,
/// a list of ids or a list of id lists.
fn completion_prompts(input: &PromptInput, limits: &Limits) -> Result<Vec<(String, Vec<u32>)>, ApiError> {
    let tok = limits.tokenizer;
    let encode = |t: &String| {
        check_text_bytes(t.len(), limits)?;
        tok.encode(t, true)
            .map(|ids| (t.clone(), ids))
            .map_err(|e| ApiError::invalid("prompt", e.to_string()))
    };
    let decode = |ids: &Vec<u32>| (tok.decode(ids, false).unwrap_or_default(), ids.clone());
    let prompts = match input {
        PromptInput::Text(t) => vec![encode(t)?],
        PromptInput::Texts(v) => v.iter().map(encode).collect::<Result<_, _>>()?,
        PromptInput::Tokens(ids) => vec![decode(ids)],
        PromptInput::TokenLists(v) => v.iter().map(decode).collect(),
    };
    if prompts.is_empty() {
        return Err(ApiError::invalid("prompt", "the prompt list is empty"));
    }
    if prompts.len() > MAX_PROMPTS {
        return Err(ApiError::invalid(
            "prompt",
            format!("at most {MAX_PROMPTS} prompts per request, got {}", prompts.len()),
        ));
    }
    prompts
        .into_iter()
        .map(|(text, ids)| Ok((text, check_prompt(ids, limits, "prompt")?)))
        .collect()
}

/// `best_of` candidates per prompt when more than `n` (`None`: just the `n`).
fn best_of(body: &CompletionRequest) -> Result<Option<usize>, ApiError> {
    let n = body.common.n.unwrap_or(1);
    match body.best_of {
        None => Ok(None),
        Some(b) if b < n || b > MAX_CHOICES => Err(ApiError::invalid(
            "best_of",
            format!("best_of must be at least n ({n}) and at most {MAX_CHOICES}"),
        )),
        Some(_) if body.common.stream.unwrap_or(false) => Err(ApiError::invalid(
            "best_of",
            "best_of cannot be used with `stream: true`",
        )),
        Some(b) if b == n => Ok(None),
        Some(b) => Ok(Some(b as usize)),
    }
}
