//! `cargo xtask guest …`: build, lock, boot and inspect the guest image.

use std::{io::Write, process::ExitCode};

use anyhow::Result;

use crate::{flags::GuestCommand, not_implemented};

pub fn run(command: GuestCommand) -> Result<ExitCode> {
    match command {
        GuestCommand::Build(_) => Err(not_implemented("guest build", 3)),
        GuestCommand::Lock(_) => Err(not_implemented("guest lock", 3)),
        GuestCommand::Boot(_) => Err(not_implemented("guest boot", 3)),
        GuestCommand::Inspect(args) if args.default_model => {
            std::io::stdout()
                .lock()
                .write_all(cvm_core::model::DEFAULT_MODEL_TOML.as_bytes())?;
            Ok(ExitCode::SUCCESS)
        }
        GuestCommand::Inspect(_) => Err(not_implemented("guest inspect --artifacts", 3)),
    }
}
