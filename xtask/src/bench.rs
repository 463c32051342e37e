//! `cargo xtask bench …`: benchmarks that print ratios measured in one run (never pass/fail targets).

mod host_check;
mod measure;

use std::process::ExitCode;

use anyhow::Result;

use crate::{flags::BenchCommand, not_implemented};

pub fn run(command: BenchCommand) -> Result<ExitCode> {
    match command {
        BenchCommand::Image(_) => Err(not_implemented("bench image", 3)),
        BenchCommand::Measure(args) => measure::measure(args),
        BenchCommand::HostCheck(args) => host_check::host_check(args),
    }
}
