//! `cargo xtask`: the command-line front of cvm-stack. It parses flags (flags.rs), loads the model
//! and calls the library crates; one module per command group. No logic lives here.

mod attest;
mod bench;
mod ci;
mod flags;
mod guest;
mod host;
mod launch;
mod measure;
mod model;
mod validate;

use std::{
    io::Write,
    path::{Path, PathBuf},
    process::ExitCode,
};

use clap::Parser;

use crate::flags::{Cli, Command};

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => {
            let _ = err.print();
            // Help and version are successes; every usage error is bad input (exit 2).
            return if err.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("CVM_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .without_time()
        .init();
    match run(cli) {
        Ok(code) => code,
        Err(err) => {
            if is_broken_pipe(&err) {
                return ExitCode::SUCCESS;
            }
            let mut stderr = std::io::stderr().lock();
            let _ = writeln!(stderr, "error: {err:#}");
            if cvm_core::error::is_bad_input(&err) {
                ExitCode::from(2)
            } else {
                ExitCode::from(1)
            }
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Guest(command) => guest::run(command),
        Command::Measure(args) => measure::run(args),
        Command::Launch(command) => launch::run(command),
        Command::Host(command) => host::run(command),
        Command::Validate(args) => validate::run(args),
        Command::Attest(command) => attest::run(command),
        Command::Model(command) => model::run(command),
        Command::Ci(args) => ci::run(args),
        Command::Bench(command) => bench::run(command),
    }
}

fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// The repository root (where Cargo.toml of the workspace is).
pub fn project_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the workspace root")
        .to_owned()
}

/// The default artifacts directory of a model: target/cvm/<name>.
pub fn default_artifacts(name: &str) -> PathBuf {
    project_root().join("target/cvm").join(name)
}

/// The error of a command whose issue has not landed yet: bad input (exit 2), never a fake success.
pub fn not_implemented(command: &str, issue: u32) -> anyhow::Error {
    cvm_core::error::bad_input(format!(
        "`cargo xtask {command}` is not implemented yet (tracked in issue {issue})"
    ))
}

/// Prints `value` as pretty JSON on stdout.
pub fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut stdout, value)?;
    writeln!(stdout)?;
    Ok(())
}

#[cfg(test)]
mod tests;
