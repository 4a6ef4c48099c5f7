//! The evaluation harness behind `aisle eval`: a dataset of chat requests with expected key
//! facts, sent greedily to the engine in this process or to a running server, scored and timed.
//!
//! Reading order: `dataset` (items and scoring) → `target` (sending one request) → `judge`
//! (an LLM grading the answer, optional) → `report` (figures). Owns: running a dataset with bounded concurrency and a progress bar.
//! Must not: build engines or parse command lines (`cli/eval.rs` does).

pub mod dataset;
pub mod judge;
pub mod report;
pub mod target;

use std::time::Instant;

use futures_util::stream::{self, StreamExt};
use indicatif::{ProgressBar, ProgressStyle};

pub use dataset::{load, normalise, EvalItem};
pub use judge::{Judge, Verdict};
pub use report::{ItemResult, Report};
pub use target::{Outcome, Target};

#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error("{path}{}: {message}", if *.line > 0 { format!(" line {line}") } else { String::new() })]
    Dataset { path: String, line: usize, message: String },
    #[error("evaluation server: {0}")]
    Http(String),
}

/// How to run a dataset.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Requests in flight at once.
    pub concurrency: usize,
    pub max_tokens: usize,
    /// Draw a progress bar on stderr (it hides itself when stderr is not a terminal).
    pub progress: bool,
}

/// Run every item through `target` (at most `concurrency` at a time), in dataset order.
pub async fn run(target: &Target, items: &[EvalItem], opts: &RunOptions) -> (Vec<ItemResult>, std::time::Duration) {
    run_judged(target, items, opts, None).await
}

/// `run`, with every answer also graded by `judge`.
pub async fn run_judged(
    target: &Target,
    items: &[EvalItem],
    opts: &RunOptions,
    judge: Option<&Judge>,
) -> (Vec<ItemResult>, std::time::Duration) {
    let bar = if opts.progress {
        ProgressBar::new(items.len() as u64)
    } else {
        ProgressBar::hidden()
    };
    if let Ok(style) = ProgressStyle::with_template("{bar:40} {pos}/{len} {per_sec} eta {eta} {msg}") {
        bar.set_style(style);
    }
    let start = Instant::now();
    let results: Vec<ItemResult> = stream::iter(items)
        .map(|item| {
            let bar = &bar;
            async move {
                let outcome = target.ask(item, opts.max_tokens).await;
                let mut result = ItemResult::new(item, outcome);
                if let (Some(j), None) = (judge, &result.error) {
                    match j.grade(item, &result.output).await {
                        Ok(v) => result.judge = Some(v),
                        Err(e) => result.judge_error = Some(e),
                    }
                }
                bar.inc(1);
                result
            }
        })
        .buffered(opts.concurrency.max(1))
        .collect()
        .await;
    bar.finish_and_clear();
    (results, start.elapsed())
}
