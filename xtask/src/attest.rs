//! `cargo xtask attest …`: reference values and key release with the attestation service.
//!
//! Loads the model, fills in the settings from the flags and calls `validation::attest::run`,
//! which prints everything itself.

use std::{process::ExitCode, time::Duration};

use anyhow::Result;
use validation::attest::{
    run::{self, CheckOptions, RegisterOptions},
    Env, Settings,
};

use crate::flags::{AttestCommand, AttestServiceArgs};

pub fn run(command: AttestCommand) -> Result<ExitCode> {
    let mut stdout = std::io::stdout().lock();
    let mut stderr = std::io::stderr();
    match command {
        AttestCommand::Register(args) => {
            let model = cvm_core::model::load(args.model.config.as_deref())?;
            let artifacts = args
                .artifacts
                .clone()
                .unwrap_or_else(|| crate::default_artifacts(&model.model.deployment.name));
            let mut settings = settings(&args.service);
            settings.ccm_credentials_env = args.ccm_credentials_env;
            let options = RegisterOptions {
                model: &model,
                artifacts: &artifacts,
                dry_run: args.dry_run,
                json: args.json,
                settings,
                rtmrs: validation::attest::reference::parse_operator_rtmrs(&args.rtmr)?,
            };
            run::register(&options, Env::Process, &mut stdout, &mut stderr)?;
            Ok(ExitCode::SUCCESS)
        }
        AttestCommand::Check(args) => {
            let model = cvm_core::model::load(args.model.config.as_deref())?;
            let workload = args.workload.identity();
            let options = CheckOptions {
                model: &model,
                json: args.json,
                settings: Settings {
                    workload,
                    ..settings(&args.service)
                },
            };
            let restricted = run::check(&options, Env::Process, &mut stdout, &mut stderr)?;
            Ok(if restricted {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
    }
}

fn settings(args: &AttestServiceArgs) -> Settings {
    Settings {
        ca_file: args.ca_file.clone(),
        timeout: Duration::from_secs(args.timeout),
        ..Settings::default()
    }
}
