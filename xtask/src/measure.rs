//! `cargo xtask measure [snp|tdx]`: launch measurements.

use std::process::ExitCode;

use anyhow::Result;

use crate::{
    flags::{MeasureArgs, MeasureCommand},
    not_implemented,
};

pub fn run(args: MeasureArgs) -> Result<ExitCode> {
    match args.command {
        Some(MeasureCommand::Snp(_)) => Err(not_implemented("measure snp", 4)),
        Some(MeasureCommand::Tdx(_)) => Err(not_implemented("measure tdx", 4)),
        None => Err(not_implemented("measure", 4)),
    }
}
