//! `aisle catalog`: build the catalog database, edit it while a server reads it, print the
//! tool definitions, and run tool calls from the command line (the training scripts use it so
//! their tool results are exactly what the server returns).
//!
//! Owns: the subcommands' flags and output. Must not: hold catalog logic (`aisle::catalog`)
//! or tool logic (`aisle::toolbox`).

use std::io::{BufRead, Write};
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use serde_json::Value;

use aisle::catalog::Catalog;
use aisle::toolbox::{Toolbox, ToolsConfig};

#[derive(Args)]
pub struct CatalogArgs {
    #[command(subcommand)]
    command: CatalogCommand,
}

#[derive(Subcommand)]
enum CatalogCommand {
    /// Build a SQLite catalog database from a catalog.json.
    Build {
        /// The catalog.json to import.
        json: PathBuf,
        /// The database to write (replaced).
        #[arg(long)]
        out: PathBuf,
    },
    /// Change one field of one product in a catalog database (a running server sees it at its
    /// next tool call): `aisle catalog set shop.db "Ironhand Edge N20" price 299.99`.
    Set {
        db: PathBuf,
        /// The product's id (SKU) or exact name.
        product: String,
        /// price, in_stock, rating, colour, warranty_years, or one of the product's specs.
        field: String,
        value: String,
    },
    /// Print the catalog tools as an OpenAI `tools` array (for clients that run tools
    /// themselves).
    Tools { catalog: PathBuf },
    /// Run tool calls read from stdin, one JSON object per line (`{"name": ..., "arguments":
    /// {...}}`); print each tool message's content on its own line.
    Call { catalog: PathBuf },
}

fn toolbox(catalog: PathBuf) -> Result<Toolbox> {
    let cfg = ToolsConfig {
        catalog: Some(catalog),
        ..ToolsConfig::default()
    };
    Ok(Toolbox::new(&cfg)?)
}

fn call_lines(tb: &Toolbox) -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let mut out = std::io::stdout().lock();
    for (i, line) in std::io::stdin().lock().lines().enumerate() {
        let line = line.context("reading stdin")?;
        if line.trim().is_empty() {
            continue;
        }
        let call: Value = serde_json::from_str(&line).with_context(|| format!("stdin line {}", i + 1))?;
        let name = call["name"].as_str().unwrap_or_default();
        let args = match &call["arguments"] {
            Value::String(s) => s.clone(),
            v => v.to_string(),
        };
        let record = rt.block_on(tb.call(name, &args));
        writeln!(out, "{}", record.content)?;
    }
    Ok(())
}

pub fn run(args: CatalogArgs) -> Result<()> {
    match args.command {
        CatalogCommand::Build { json, out } => {
            let n = Catalog::build(&json, &out)?;
            println!("{n} products -> {}", out.display());
        }
        CatalogCommand::Set {
            db,
            product,
            field,
            value,
        } => {
            if db.extension().is_some_and(|e| e.eq_ignore_ascii_case("json")) {
                anyhow::bail!(
                    "{}: edit a catalog database (build one with `aisle catalog build`)",
                    db.display()
                );
            }
            Catalog::open(&db)?.set(&product, &field, &value)?;
            println!("{product}: {field} = {value}");
        }
        CatalogCommand::Tools { catalog } => {
            println!("{}", serde_json::to_string_pretty(&toolbox(catalog)?.definitions())?);
        }
        CatalogCommand::Call { catalog } => call_lines(&toolbox(catalog)?)?,
    }
    Ok(())
}
