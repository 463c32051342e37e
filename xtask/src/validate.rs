//! `cargo xtask validate`: the end-to-end validation suite and its reports.

use std::process::ExitCode;

use anyhow::Result;
use host_setup::facts::{self, Bundle};
use validation::{
    report::{Input, RunInfo},
    stages::{self, Context},
};

use crate::{default_artifacts, flags::ValidateArgs};

pub fn run(args: ValidateArgs) -> Result<ExitCode> {
    let model = cvm_core::model::load_for_command(args.model.config.as_deref())?;
    let profile = validation::profile::load(&args.profile)?;
    // Without --facts, this host is collected (read only) into a temporary bundle that lives
    // until the reports are written; it also records whether the profile's firmware exists.
    let (_live_dir, facts) = match &args.facts {
        Some(dir) => (None, Bundle::open(dir)?),
        None => {
            eprintln!("{:>12} this host's facts", "Collecting");
            let (dir, bundle) =
                facts::collect_live_temp_with_markers(vec![profile.ovmf.path.clone()])?;
            (Some(dir), bundle)
        }
    };
    let endpoint = stages::endpoint_target(
        &model,
        args.endpoint.as_deref(),
        args.endpoint_ca.as_deref(),
    )?;
    let artifacts = args
        .artifacts
        .clone()
        .unwrap_or_else(|| default_artifacts(&model.model.deployment.name));
    let info = RunInfo {
        suite: format!("cvm-validate {}", profile.name),
        inputs: vec![
            input("profile", format!("{} ({})", profile.name, profile.title)),
            input("model", model.source_name()),
            input(
                "facts",
                args.facts.as_ref().map_or_else(
                    || "collected live from this host".to_owned(),
                    |dir| dir.display().to_string(),
                ),
            ),
            input("artifacts", artifacts.display().to_string()),
            input(
                "mode",
                if args.emulate {
                    "emulated boot"
                } else {
                    "CVM launch"
                }
                .to_owned(),
            ),
        ],
    };
    let context = Context {
        model,
        profile,
        facts,
        artifacts,
        emulate: args.emulate,
        endpoint,
        attest: validation::attest::Settings {
            workload: args.workload.identity(),
            ..validation::attest::Settings::default()
        },
    };
    let report = stages::run(&context, &mut |verb, what| eprintln!("{verb:>12} {what}"));
    let written = validation::report::write_all(&report, &info, &args.report_dir)?;
    for check in &report.checks {
        println!(
            "{:<4}  {:<28}  {}",
            check.status.as_str(),
            check.id,
            check.detail
        );
    }
    let summary = report.summary;
    eprintln!(
        "{:>12} {} passed, {} failed, {} warnings, {} skipped; reports: {}, {}, {}, {}",
        "Finished",
        summary.pass,
        summary.fail,
        summary.warn,
        summary.skip,
        written.junit.display(),
        written.json.display(),
        written.html.display(),
        written.markdown.display()
    );
    Ok(ExitCode::from(report.exit_code()))
}

fn input(name: &str, value: String) -> Input {
    Input {
        name: name.to_owned(),
        value,
    }
}
