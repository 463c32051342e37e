//! `cargo xtask bench …`: benchmarks that print ratios measured in one run (never pass/fail targets).

use std::process::ExitCode;

use anyhow::{Context, Result};
use cvm_core::deps::InstallPolicy;
use guest_image::image;

use crate::{flags::BenchCommand, not_implemented, print_json, project_root};

pub fn run(command: BenchCommand) -> Result<ExitCode> {
    match command {
        BenchCommand::Image(args) => {
            let model = cvm_core::model::load(args.model.config.as_deref())?;
            cvm_core::deps::ensure(image::BUILD_REQUIREMENTS, InstallPolicy::Install)
                .context("checking the host tools the image build needs")?;
            let cvm_status = image::build_cvm_status(&project_root())?;
            let work = project_root().join("target/cvm-bench");
            let lock_path = image::default_lock_path(&model, &project_root().join("target"));
            let options = |out, no_cache| image::BuildOptions {
                out,
                cache: project_root().join("target/cvm-cache"),
                lock_path: lock_path.clone(),
                locked: false,
                offline: false,
                no_cache,
                cvm_status: cvm_status.clone(),
                lock_only: false,
                post_stages: Vec::new(),
            };
            let bench = image::bench::run(&model, options, &work)?;
            eprintln!("{}", image::bench::table(&bench));
            print_json(&bench)?;
            Ok(ExitCode::SUCCESS)
        }
        BenchCommand::Measure(_) => Err(not_implemented("bench measure", 4)),
        BenchCommand::HostCheck(_) => Err(not_implemented("bench host-check", 6)),
    }
}
