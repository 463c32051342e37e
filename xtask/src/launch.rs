//! `cargo xtask launch render`: launch scripts and domain XML.

use std::process::ExitCode;

use anyhow::Result;

use crate::{flags::LaunchCommand, not_implemented};

pub fn run(command: LaunchCommand) -> Result<ExitCode> {
    match command {
        LaunchCommand::Render(_) => Err(not_implemented("launch render", 5)),
    }
}
