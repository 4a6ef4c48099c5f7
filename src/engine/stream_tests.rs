use std::sync::mpsc::channel;

use tokio::sync::mpsc::unbounded_channel;

use super::*;
use crate::engine::request::FinishReason;
use crate::engine::EventSink;
use crate::sampling::ScoredToken;

/// A stream over `k` fake requests of `n` choices, with their sinks and the command channel.
fn streams(
    k: usize,
    n: usize,
    death: Option<&str>,
) -> (RequestStream, Vec<EventSink>, std::sync::mpsc::Receiver<Command>) {
    let (tx, cmds) = channel();
    let dead = Arc::new(OnceLock::new());
    if let Some(why) = death {
        let _ = dead.set(why.to_string());
    }
    let mut parts = Vec::new();
    let mut sinks = Vec::new();
    for id in 0..k {
        let (sink, rx) = unbounded_channel();
        parts.push(Part {
            id: id as u64 + 10,
            rx,
            done: false,
        });
        sinks.push(sink);
    }
    (RequestStream::new(parts, n, tx, dead), sinks, cmds)
}

fn token(choice: usize, text: &str) -> Event {
    Event::Token {
        choice,
        token: 1,
        text: text.into(),
        logprobs: None,
    }
}

fn usage(p: usize, c: usize) -> Usage {
    Usage {
        prompt_tokens: p,
        completion_tokens: c,
        cached_tokens: 0,
    }
}

#[test]
fn a_stream_closed_before_done_ends_with_one_error() {
    let (mut s, mut sinks, _cmds) = streams(1, 1, None);
    sinks[0].send(Event::Started).unwrap();
    sinks.clear();
    assert_eq!(s.blocking_next(), Some(Event::Started));
    assert_eq!(s.blocking_next(), Some(Event::Error(EngineError::Lost)));
    assert_eq!(s.blocking_next(), None);
    let (s, sinks, _cmds) = streams(1, 1, Some("the engine thread panicked: boom"));
    drop(sinks);
    let e = s.collect_blocking().unwrap_err();
    assert_eq!(e, EngineError::Stopped("the engine thread panicked: boom".into()));
}

#[test]
fn nothing_follows_done() {
    let (mut s, sinks, _cmds) = streams(1, 1, None);
    sinks[0].send(Event::Done(Default::default())).unwrap();
    drop(sinks);
    assert!(matches!(s.blocking_next(), Some(Event::Done(_))));
    assert_eq!(s.blocking_next(), None);
}

#[test]
fn several_requests_merge_prompt_major_with_one_started_and_summed_usage() {
    let (s, sinks, cmds) = streams(2, 2, None);
    let score = ScoredToken {
        logprob: -1.0,
        rank: 2,
        top: vec![],
    };
    for (i, sink) in sinks.iter().enumerate() {
        sink.send(Event::Started).unwrap();
        sink.send(Event::PromptLogprobs {
            prompt: 0,
            logprobs: vec![None, Some(score.clone())],
        })
        .unwrap();
        for c in 0..2 {
            sink.send(token(c, &format!("p{i}c{c}"))).unwrap();
            sink.send(Event::Finished {
                choice: c,
                reason: FinishReason::Length,
                text: String::new(),
            })
            .unwrap();
        }
        sink.send(Event::Done(usage(3 + i, 2))).unwrap();
    }
    let out = s.collect_blocking().unwrap();
    let texts: Vec<&str> = out.choices.iter().map(|c| c.text.as_str()).collect();
    assert_eq!(texts, ["p0c0", "p0c1", "p1c0", "p1c1"]);
    assert_eq!(out.usage, usage(7, 4));
    assert_eq!(out.prompt_logprobs.len(), 2);
    assert!(out.prompt_logprobs.iter().all(|p| p[1] == Some(score.clone())));
    assert!(cmds.try_recv().is_err(), "a finished submission aborts nothing");
}

#[test]
fn one_request_failing_ends_the_stream_and_dropping_it_aborts_the_rest() {
    let (mut s, sinks, cmds) = streams(3, 1, None);
    sinks[0].send(Event::Done(usage(1, 1))).unwrap();
    sinks[1]
        .send(Event::Error(EngineError::Executor("boom".into())))
        .unwrap();
    let mut seen = Vec::new();
    while let Some(e) = s.blocking_next() {
        seen.push(e);
    }
    assert_eq!(seen, [Event::Error(EngineError::Executor("boom".into()))]);
    drop(s);
    let aborted: Vec<u64> = cmds
        .try_iter()
        .map(|c| match c {
            Command::Abort(id) => id,
            _ => u64::MAX,
        })
        .collect();
    assert_eq!(aborted, [12], "only the request still running is aborted");
}
