//! `cargo xtask bench …`: benchmarks that print ratios measured in one run (never pass/fail targets).

mod host_check;
mod image;
mod measure;

use std::process::ExitCode;

use anyhow::Result;

use crate::flags::BenchCommand;

pub fn run(command: BenchCommand) -> Result<ExitCode> {
    match command {
        BenchCommand::Image(args) => image::image(args),
        BenchCommand::Measure(args) => measure::measure(args),
        BenchCommand::HostCheck(args) => host_check::host_check(args),
    }
}
