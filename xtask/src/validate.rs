//! `cargo xtask validate`: the end-to-end validation suite and its reports.

use std::process::ExitCode;

use anyhow::Result;
use validation::{
    node_facts::{DirFacts, NoFacts, NodeFacts},
    report::{Input, RunInfo},
    stages::{self, Context},
};

use crate::{default_artifacts, flags::ValidateArgs};

pub fn run(args: ValidateArgs) -> Result<ExitCode> {
    let model = cvm_core::model::load_for_command(args.model.config.as_deref())?;
    let profile = validation::profile::load(&args.profile)?;
    let facts: Box<dyn NodeFacts> = match &args.facts {
        Some(dir) => Box::new(DirFacts::open(dir)?),
        None => Box::new(NoFacts(
            "this host's facts were not collected: collecting is not implemented in this build; pass --facts DIR".to_owned(),
        )),
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
                    || "not collected".to_owned(),
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
