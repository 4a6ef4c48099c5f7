//! Evaluation figures: accuracy (overall and per kind), latency percentiles and throughput,
//! printed as a table or as JSON.
//!
//! Owns: aggregation of per-item outcomes into a `Report`. Must not: send requests.

use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;

use super::dataset::{EvalItem, Score};
use super::target::Outcome;

/// One evaluated item (also written to `--results` as a JSON line).
#[derive(Debug, Clone, Serialize)]
pub struct ItemResult {
    pub id: String,
    pub kind: String,
    pub expected: Vec<String>,
    pub output: String,
    pub key_fact: bool,
    pub exact: bool,
    pub latency_ms: f64,
    pub ttft_ms: Option<f64>,
    pub completion_tokens: usize,
    pub error: Option<String>,
    /// The server's tool calls for this item (`aisle_tools.calls`).
    pub tool_calls: Vec<serde_json::Value>,
    /// Model turns the answer took.
    pub rounds: usize,
    /// The LLM judge's verdict (`--judge-url`), or why there is none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub judge: Option<super::Verdict>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub judge_error: Option<String>,
}

impl ItemResult {
    /// Calls that named a tool with arguments fitting its schema.
    pub fn valid_calls(&self) -> usize {
        self.tool_calls
            .iter()
            .filter(|c| c["valid"].as_bool().unwrap_or(false))
            .count()
    }

    pub fn new(item: &EvalItem, outcome: Outcome) -> ItemResult {
        let score = match outcome.error {
            Some(_) => Score {
                key_fact: false,
                exact: false,
            },
            None => item.score(&outcome.text),
        };
        ItemResult {
            id: item.id.clone(),
            kind: item.kind.clone(),
            expected: item.expected.all().iter().map(|s| s.to_string()).collect(),
            output: outcome.text,
            key_fact: score.key_fact,
            exact: score.exact,
            latency_ms: ms(outcome.latency),
            ttft_ms: outcome.ttft.map(ms),
            completion_tokens: outcome.completion_tokens,
            error: outcome.error,
            tool_calls: outcome.calls,
            rounds: outcome.rounds,
            judge: None,
            judge_error: None,
        }
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Percentiles {
    pub mean: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
}

/// Nearest-rank percentiles of `values` (zeros when empty).
pub fn percentiles(mut values: Vec<f64>) -> Percentiles {
    if values.is_empty() {
        return Percentiles::default();
    }
    values.sort_by(f64::total_cmp);
    let at = |p: f64| values[((p / 100.0 * values.len() as f64).ceil() as usize).clamp(1, values.len()) - 1];
    Percentiles {
        mean: values.iter().sum::<f64>() / values.len() as f64,
        p50: at(50.0),
        p90: at(90.0),
        p99: at(99.0),
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct GroupRow {
    pub group: String,
    pub items: usize,
    pub key_fact_accuracy: f64,
    pub exact_match: f64,
    /// Share the LLM judge graded correct (when a judge ran).
    pub judge_accuracy: Option<f64>,
}

/// Share of `rows` the judge graded correct; `None` when no row was judged.
fn judged(rows: &[&ItemResult]) -> Option<f64> {
    let graded = rows
        .iter()
        .filter(|r| r.judge.is_some() || r.judge_error.is_some())
        .count();
    let correct = rows
        .iter()
        .filter(|r| r.judge.as_ref().is_some_and(|v| v.correct()))
        .count();
    (graded > 0).then(|| rate(correct, rows.len()))
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub dataset: String,
    pub target: String,
    pub items: usize,
    pub errors: usize,
    pub key_fact_accuracy: f64,
    pub exact_match: f64,
    pub groups: Vec<GroupRow>,
    pub latency_ms: Percentiles,
    pub ttft_ms: Percentiles,
    pub output_tokens: usize,
    pub output_tokens_per_s: f64,
    pub requests_per_s: f64,
    pub wall_s: f64,
    pub concurrency: usize,
    /// Tool calls the server ran, and the share that were valid.
    pub tool_calls: usize,
    pub tool_calls_valid: f64,
    /// Model turns per answer.
    pub rounds: Percentiles,
    /// LLM judge: share graded correct, and answers it could not grade.
    pub judge_accuracy: Option<f64>,
    pub judge_errors: usize,
}

fn rate(n: usize, of: usize) -> f64 {
    if of == 0 {
        0.0
    } else {
        n as f64 / of as f64
    }
}

fn group_rows(items: &[EvalItem], results: &[ItemResult]) -> Vec<GroupRow> {
    let mut groups: Vec<String> = items.iter().map(|i| i.group().to_string()).collect();
    groups.sort();
    groups.dedup();
    groups
        .into_iter()
        .map(|g| {
            let rows: Vec<&ItemResult> = items
                .iter()
                .zip(results)
                .filter(|(i, _)| i.group() == g)
                .map(|(_, r)| r)
                .collect();
            GroupRow {
                items: rows.len(),
                key_fact_accuracy: rate(rows.iter().filter(|r| r.key_fact).count(), rows.len()),
                exact_match: rate(rows.iter().filter(|r| r.exact).count(), rows.len()),
                judge_accuracy: judged(&rows),
                group: g,
            }
        })
        .collect()
}

impl Report {
    pub fn new(
        dataset: String,
        target: String,
        concurrency: usize,
        items: &[EvalItem],
        results: &[ItemResult],
        wall: Duration,
    ) -> Report {
        let n = results.len();
        let wall_s = wall.as_secs_f64().max(1e-9);
        let output_tokens = results.iter().map(|r| r.completion_tokens).sum();
        Report {
            dataset,
            target,
            items: n,
            errors: results.iter().filter(|r| r.error.is_some()).count(),
            key_fact_accuracy: rate(results.iter().filter(|r| r.key_fact).count(), n),
            exact_match: rate(results.iter().filter(|r| r.exact).count(), n),
            groups: group_rows(items, results),
            latency_ms: percentiles(results.iter().map(|r| r.latency_ms).collect()),
            ttft_ms: percentiles(results.iter().filter_map(|r| r.ttft_ms).collect()),
            output_tokens,
            output_tokens_per_s: output_tokens as f64 / wall_s,
            requests_per_s: n as f64 / wall_s,
            wall_s,
            concurrency,
            tool_calls: results.iter().map(|r| r.tool_calls.len()).sum(),
            tool_calls_valid: rate(
                results.iter().map(ItemResult::valid_calls).sum(),
                results.iter().map(|r| r.tool_calls.len()).sum(),
            ),
            rounds: percentiles(results.iter().map(|r| r.rounds as f64).collect()),
            judge_accuracy: judged(&results.iter().collect::<Vec<_>>()),
            judge_errors: results.iter().filter(|r| r.judge_error.is_some()).count(),
        }
    }

    /// The human-readable table.
    pub fn table(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "dataset   {}", self.dataset);
        let _ = writeln!(s, "target    {} (concurrency {})", self.target, self.concurrency);
        let judge = self.judge_accuracy.is_some();
        let head = if judge {
            format!("{:>11}", "judge")
        } else {
            String::new()
        };
        let _ = writeln!(
            s,
            "\n{:<14}{:>7}{:>11}{:>11}{head}",
            "kind", "items", "key fact", "exact"
        );
        let pct = |x: Option<f64>| x.map_or(String::new(), |x| format!("{:>10.1}%", 100.0 * x));
        let mut row = |name: &str, items: usize, kf: f64, em: f64, j: Option<f64>| {
            let _ = writeln!(
                s,
                "{name:<14}{items:>7}{:>10.1}%{:>10.1}%{}",
                100.0 * kf,
                100.0 * em,
                pct(j)
            );
        };
        for g in &self.groups {
            row(&g.group, g.items, g.key_fact_accuracy, g.exact_match, g.judge_accuracy);
        }
        row(
            "all",
            self.items,
            self.key_fact_accuracy,
            self.exact_match,
            self.judge_accuracy,
        );
        if judge && self.judge_errors > 0 {
            let _ = writeln!(s, "judge could not grade {} answers", self.judge_errors);
        }
        let _ = writeln!(s, "errors    {}", self.errors);
        if self.tool_calls > 0 {
            let _ = writeln!(
                s,
                "tools     {} calls, {:.1}% valid; rounds per answer mean {:.2}, p99 {}",
                self.tool_calls,
                100.0 * self.tool_calls_valid,
                self.rounds.mean,
                self.rounds.p99
            );
        }
        let _ = writeln!(s, "\n{:<14}{:>9}{:>9}{:>9}{:>9}", "ms", "mean", "p50", "p90", "p99");
        for (name, p) in [("latency", &self.latency_ms), ("ttft", &self.ttft_ms)] {
            let _ = writeln!(s, "{name:<14}{:>9.1}{:>9.1}{:>9.1}{:>9.1}", p.mean, p.p50, p.p90, p.p99);
        }
        let _ = writeln!(
            s,
            "\n{} requests in {:.2}s: {:.2} req/s, {} output tokens, {:.1} tok/s",
            self.items, self.wall_s, self.requests_per_s, self.output_tokens, self.output_tokens_per_s
        );
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let p = percentiles((1..=100).map(f64::from).collect());
        assert_eq!((p.p50, p.p90, p.p99), (50.0, 90.0, 99.0));
        assert!((p.mean - 50.5).abs() < 1e-9);
        let one = percentiles(vec![7.0]);
        assert_eq!((one.p50, one.p99), (7.0, 7.0));
        assert_eq!(percentiles(Vec::new()).p90, 0.0);
    }
}
