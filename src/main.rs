//! The `aisle` command line: parse the arguments, set up logging, dispatch to a subcommand in
//! `cli/`, and turn its error into an exit message.
//!
//! Owns: the subcommand list and the exit code (`anyhow` lives in the binary only).
//! Must not: contain command logic; each subcommand's flags and driver are in `cli/`.

use clap::{Parser, Subcommand};

mod cli;

use cli::args::{init_logging, LogFormat, ModelArgs};

#[derive(Parser)]
#[command(name = "aisle", version, about = "Serve and run small Llama-family models")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generate text for one or more prompts (run concurrently); one prompt streams to stdout.
    Generate(Box<cli::generate::GenerateArgs>),
    /// Print a model's resolved configuration, size and memory footprint.
    Inspect(ModelArgs),
    /// Serve the model over an OpenAI-compatible HTTP API.
    Serve(Box<cli::serve::ServeArgs>),
    /// Score a dataset of chat requests (key-fact accuracy, latency, tokens/s), in-process or
    /// against a running server.
    Eval(Box<cli::eval::EvalArgs>),
    /// Load a running server with concurrent streaming clients; print throughput and TTFT /
    /// inter-token / end-to-end latency percentiles (as `vllm bench serve` does).
    BenchServe(Box<cli::bench_serve::BenchServeArgs>),
    /// Write the Neuron manifest (`manifest.json`: per bucket the NEFF, its sha256 and its
    /// tensors) for a model's compiled NEFFs.
    NeuronManifest(Box<cli::neuron_manifest::NeuronManifestArgs>),
    /// Build, edit and query the product catalog database behind the built-in tools.
    Catalog(cli::catalog::CatalogArgs),
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => {
            init_logging("warn,aisle=info", args.log_format);
            cli::serve::run(*args)
        }
        Command::Generate(args) => {
            init_logging("warn", LogFormat::Text);
            cli::generate::run(*args)
        }
        Command::Inspect(args) => {
            init_logging("warn", LogFormat::Text);
            cli::inspect::run(args)
        }
        Command::Eval(args) => {
            init_logging("warn", LogFormat::Text);
            cli::eval::run(*args)
        }
        Command::BenchServe(args) => {
            init_logging("warn", LogFormat::Text);
            cli::bench_serve::run(*args)
        }
        Command::Catalog(args) => {
            init_logging("warn", LogFormat::Text);
            cli::catalog::run(args)
        }
        Command::NeuronManifest(args) => {
            init_logging("warn", LogFormat::Text);
            cli::neuron_manifest::run(*args)
        }
    };
    if let Err(e) = result {
        // A reader that closed our stdout (`aisle inspect | head`) is a normal end, not an error.
        let closed_pipe = e
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe);
        if !closed_pipe {
            eprintln!("error: {}", message(&e));
            std::process::exit(1);
        }
    }
}

/// The error and its causes, skipping a cause its parent's message already quotes (our
/// error types write `{source}` into their own message).
fn message(e: &anyhow::Error) -> String {
    let mut out = e.to_string();
    for cause in e.chain().skip(1) {
        let text = cause.to_string();
        if !out.contains(&text) {
            out = format!("{out}: {text}");
        }
    }
    out
}
