//! `cargo xtask model check`: load and validate a deployment model.

use std::{io::Write, process::ExitCode};

use anyhow::{Context, Result};

use crate::{flags::ModelCommand, print_json};

pub fn run(command: ModelCommand) -> Result<ExitCode> {
    match command {
        ModelCommand::Check(args) => {
            let loaded = cvm_core::model::load(args.model.config.as_deref())?;
            if args.json {
                print_json(&loaded.model)?;
            } else {
                let text =
                    toml::to_string_pretty(&loaded.model).context("printing the model as TOML")?;
                std::io::stdout().lock().write_all(text.as_bytes())?;
            }
            eprintln!("{}: valid", loaded.source_name());
            Ok(ExitCode::SUCCESS)
        }
    }
}
