//! `cargo xtask bench …`: benchmarks that print ratios measured in one run (never pass/fail targets).

use std::process::ExitCode;

use anyhow::Result;

use crate::{flags::BenchCommand, not_implemented};

pub fn run(command: BenchCommand) -> Result<ExitCode> {
    match command {
        BenchCommand::Image(_) => Err(not_implemented("bench image", 3)),
        BenchCommand::Measure(_) => Err(not_implemented("bench measure", 4)),
        BenchCommand::HostCheck(_) => Err(not_implemented("bench host-check", 6)),
    }
}
