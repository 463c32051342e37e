//! `cargo xtask bench image`: bare mmdebstrap vs our cold build, no-op and cmdline-only rebuilds,
//! and the emulated boot, printed as ratios.

use std::process::ExitCode;

use anyhow::{Context, Result};
use cvm_core::deps::InstallPolicy;
use guest_image::image;

use crate::{flags::BenchImageArgs, print_json, project_root};

pub fn image(args: BenchImageArgs) -> Result<ExitCode> {
    let model = cvm_core::model::load(args.model.config.as_deref())?;
    // The benchmark builds and boots: it needs the build's tools and QEMU with OVMF.
    cvm_core::deps::ensure(
        &image::build_and_boot_requirements(),
        InstallPolicy::Install,
    )
    .context("checking the host tools the image build and boot need")?;
    let binaries = image::build_guest_binaries(&project_root(), false)?;
    let work = project_root().join("target/cvm-bench");
    let lock_path = image::default_lock_path(&model, &project_root().join("target"));
    let options = |out, no_cache| image::BuildOptions {
        out,
        cache: project_root().join("target/cvm-cache"),
        lock_path: lock_path.clone(),
        locked: false,
        offline: false,
        no_cache,
        binaries: binaries.clone(),
        lock_only: false,
        distro: image::Distro::Ubuntu,
    };
    let gpu_lock = project_root().join(format!(
        "target/cvm/{}-gpu.packages.lock",
        model.model.deployment.name
    ));
    let gpu_options = |out| image::BuildOptions {
        lock_path: gpu_lock.clone(),
        ..options(out, false)
    };
    let bench = image::bench::run(&model, options, gpu_options, &work)?;
    eprintln!("{}", image::bench::table(&bench));
    print_json(&bench)?;
    Ok(ExitCode::SUCCESS)
}
