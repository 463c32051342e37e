//! `cargo xtask validate`: the end-to-end validation suite and its reports.

use std::process::ExitCode;

use anyhow::Result;

use crate::{flags::ValidateArgs, not_implemented};

pub fn run(_args: ValidateArgs) -> Result<ExitCode> {
    Err(not_implemented("validate", 8))
}
