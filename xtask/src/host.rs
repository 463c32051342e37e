//! `cargo xtask host …`: provisioning plans, facts collection and preflight checks.

use std::process::ExitCode;

use anyhow::Result;

use crate::{flags::HostCommand, not_implemented};

pub fn run(command: HostCommand) -> Result<ExitCode> {
    match command {
        HostCommand::Plan(_) => Err(not_implemented("host plan", 7)),
        HostCommand::Apply(_) => Err(not_implemented("host apply", 7)),
        HostCommand::Collect(_) => Err(not_implemented("host collect", 6)),
        HostCommand::Check(_) => Err(not_implemented("host check", 6)),
    }
}
