//! `aisle generate`: run prompts through the engine in-process; one prompt streams to stdout,
//! several run concurrently and print in order.
//!
//! Owns: the command's flags, its sampling defaults (flags, then generation_config.json, then
//! greedy) and the output. Must not: hold engine or model logic.

use std::io::Write;

use anyhow::{Context, Result};
use clap::Args;

use super::args::{EngineArgs, ModelArgs};
use aisle::chat_template::ChatMessage;
use aisle::engine::{Engine, EngineCore, Event, GenerationRequest, RequestOutput, RequestStream};
use aisle::runtime::LoadedModel;
use aisle::sampling::SamplingParams;

#[derive(Args)]
pub struct GenerateArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// A prompt; repeat for several prompts, which run concurrently through the engine.
    #[arg(long)]
    prompt: Vec<String>,
    /// A file with one prompt per line (added after any --prompt).
    #[arg(long)]
    prompts_file: Option<std::path::PathBuf>,
    /// Wrap the prompt as a user message in the model's chat template.
    #[arg(long)]
    chat: bool,
    /// Optional system message (with --chat).
    #[arg(long)]
    system: Option<String>,
    #[arg(long, default_value_t = 128)]
    max_tokens: usize,
    /// 0 = greedy. Default: the model's generation_config.json, else greedy.
    #[arg(long)]
    temperature: Option<f32>,
    #[arg(long)]
    top_p: Option<f32>,
    #[arg(long)]
    top_k: Option<usize>,
    #[arg(long)]
    min_p: Option<f32>,
    #[arg(long)]
    repetition_penalty: Option<f32>,
    #[arg(long, default_value_t = 0.0)]
    presence_penalty: f32,
    #[arg(long, default_value_t = 0.0)]
    frequency_penalty: f32,
    /// Stop string (repeatable); not included in the output.
    #[arg(long)]
    stop: Vec<String>,
    #[arg(long)]
    seed: Option<u64>,
    /// Keep generating past end-of-sequence tokens.
    #[arg(long)]
    ignore_eos: bool,
    #[command(flatten)]
    engine: EngineArgs,
}

/// Sampling parameters: flags first, then generation_config.json, then greedy.
fn sampling(args: &GenerateArgs, model: &LoadedModel) -> SamplingParams {
    let g = &model.generation;
    let sampled = g.do_sample.unwrap_or(false);
    let default_temp = if sampled {
        g.temperature.unwrap_or(1.0) as f32
    } else {
        0.0
    };
    SamplingParams {
        temperature: args.temperature.unwrap_or(default_temp),
        top_p: args
            .top_p
            .unwrap_or(if sampled { g.top_p.unwrap_or(1.0) as f32 } else { 1.0 }),
        top_k: args.top_k.unwrap_or(if sampled {
            g.top_k.unwrap_or(0).max(0) as usize
        } else {
            0
        }),
        seed: args.seed,
        ..SamplingParams::default()
    }
}

/// All prompts: `--prompt` values, then the lines of `--prompts-file`.
fn prompts(args: &GenerateArgs) -> Result<Vec<String>> {
    let mut all = args.prompt.clone();
    if let Some(path) = &args.prompts_file {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        all.extend(text.lines().filter(|l| !l.trim().is_empty()).map(str::to_string));
    }
    if all.is_empty() {
        anyhow::bail!("give at least one --prompt or a --prompts-file");
    }
    Ok(all)
}

fn encode(model: &LoadedModel, args: &GenerateArgs, text: &str) -> Result<Vec<u32>> {
    let tok = &model.tokenizer;
    if !args.chat {
        return Ok(tok.encode(text, true)?);
    }
    let mut messages = Vec::new();
    if let Some(s) = &args.system {
        messages.push(ChatMessage::new("system", s));
    }
    messages.push(ChatMessage::new("user", text));
    Ok(tok.encode_chat(&messages, None)?)
}

pub fn run(args: GenerateArgs) -> Result<()> {
    let model = args.model.load()?;
    let texts = prompts(&args)?;
    let encoded = texts
        .iter()
        .map(|t| encode(&model, &args, t))
        .collect::<Result<Vec<_>>>()?;
    let context = model.config.max_position_embeddings;
    let tokens: usize = encoded.iter().map(|p| (p.len() + args.max_tokens).min(context)).sum();
    let blocks = tokens.div_ceil(args.engine.block_size) + encoded.len();
    let opts = args.model.executor_options(args.engine.block_size, blocks);
    let sched = args.engine.scheduler()?;
    let core = EngineCore::new(
        model.executor(&opts)?,
        model.tokenizer.clone(),
        model.eos_token_ids(),
        sched,
    );
    let engine = Engine::spawn(core);
    let start = std::time::Instant::now();
    let streams = encoded
        .iter()
        .map(|prompt| {
            let req = GenerationRequest {
                prompt: prompt.clone(),
                sampling: sampling(&args, &model),
                max_tokens: args.max_tokens,
                stop: args.stop.clone(),
                ignore_eos: args.ignore_eos,
                ..GenerationRequest::default()
            };
            engine.handle().submit(req)
        })
        .collect::<Result<Vec<_>, _>>()?;
    let single = streams.len() == 1;
    let mut generated = 0;
    for (i, stream) in streams.into_iter().enumerate() {
        generated += print_output(i, stream, single)?;
    }
    let secs = start.elapsed().as_secs_f64();
    eprintln!(
        "{} prompt(s): {generated} tokens generated in {secs:.3}s ({:.1} tok/s aggregate)",
        texts.len(),
        generated as f64 / secs.max(1e-9)
    );
    engine.shutdown();
    Ok(())
}

/// Print one prompt's output (streamed as it comes when it is the only one); returns the
/// tokens generated.
fn print_output(i: usize, mut stream: RequestStream, single: bool) -> Result<usize> {
    let mut stdout = std::io::stdout().lock();
    let mut out = RequestOutput::default();
    if !single {
        writeln!(stdout, "=== prompt {} ===", i + 1)?;
    }
    while let Some(event) = stream.blocking_next() {
        if let Event::Token { text, .. } | Event::Finished { text, .. } = &event {
            if single {
                stdout.write_all(text.as_bytes())?;
                stdout.flush()?;
            }
        }
        out.apply(event)?;
    }
    let choice = out.choices.first().cloned().unwrap_or_default();
    if !single {
        stdout.write_all(choice.text.as_bytes())?;
    }
    writeln!(stdout)?;
    let reason = choice.finish_reason.map(|r| r.as_str()).unwrap_or("none");
    eprintln!(
        "[{}] prompt {} tokens, generated {} tokens, finish_reason: {reason}",
        i + 1,
        out.usage.prompt_tokens,
        out.usage.completion_tokens
    );
    Ok(out.usage.completion_tokens)
}
