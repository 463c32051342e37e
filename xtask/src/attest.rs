//! `cargo xtask attest …`: reference values and key release with the attestation service.

use std::process::ExitCode;

use anyhow::Result;

use crate::{flags::AttestCommand, not_implemented};

pub fn run(command: AttestCommand) -> Result<ExitCode> {
    match command {
        AttestCommand::Register(_) => Err(not_implemented("attest register", 9)),
        AttestCommand::Check(_) => Err(not_implemented("attest check", 9)),
    }
}
