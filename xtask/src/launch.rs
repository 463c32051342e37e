//! `cargo xtask launch render`: launch scripts and domain XML.

use std::process::ExitCode;

use anyhow::Result;

use crate::{default_artifacts, flags::LaunchCommand};

pub fn run(command: LaunchCommand) -> Result<ExitCode> {
    match command {
        LaunchCommand::Render(args) => {
            let model = cvm_core::model::load_for_command(args.model.config.as_deref())?;
            let artifacts = args
                .artifacts
                .unwrap_or_else(|| default_artifacts(&model.model.deployment.name));
            let out = args.out.unwrap_or_else(|| artifacts.clone());
            let written = guest_image::launch::render(&model, &artifacts, &out)?;
            for path in written {
                eprintln!("{:>12} {}", "Rendered", path.display());
                println!("{}", path.display());
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
