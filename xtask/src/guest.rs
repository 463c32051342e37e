//! `cargo xtask guest …`: build, lock, boot and inspect the guest image.

use std::{io::Write, path::PathBuf, process::ExitCode, time::Duration};

use anyhow::{Context, Result};
use cvm_core::deps::InstallPolicy;
use guest_image::image::{self, boot};

use crate::{
    flags::{Accel, GuestCommand},
    print_json, project_root,
};

fn lock_path(model: &cvm_core::model::LoadedModel) -> PathBuf {
    image::default_lock_path(model, &project_root().join("target"))
}

fn options(
    model: &cvm_core::model::LoadedModel,
    out: Option<PathBuf>,
    locked: bool,
    offline: bool,
    no_cache: bool,
    no_install_deps: bool,
    lock_only: bool,
) -> Result<image::BuildOptions> {
    let policy = if no_install_deps {
        InstallPolicy::Refuse
    } else {
        InstallPolicy::Install
    };
    cvm_core::deps::ensure(image::BUILD_REQUIREMENTS, policy)
        .context("checking the host tools the image build needs")?;
    let binaries = image::build_guest_binaries(&project_root(), offline)?;
    Ok(image::BuildOptions {
        out: out.unwrap_or_else(|| crate::default_artifacts(&model.model.deployment.name)),
        cache: project_root().join("target/cvm-cache"),
        lock_path: lock_path(model),
        locked,
        offline,
        no_cache,
        binaries,
        lock_only,
        distro: image::Distro::Ubuntu,
    })
}

pub fn run(command: GuestCommand) -> Result<ExitCode> {
    match command {
        GuestCommand::Build(args) => {
            let model = cvm_core::model::load(args.model.config.as_deref())?;
            let options = options(
                &model,
                args.out,
                args.locked,
                args.offline,
                args.no_cache,
                args.no_install_deps,
                false,
            )?;
            let report = image::build(&model, options)?;
            image::print_report(&report);
            println!("{}", report.out.display());
            Ok(ExitCode::SUCCESS)
        }
        GuestCommand::Lock(args) => {
            let model = cvm_core::model::load(args.model.config.as_deref())?;
            let options = options(&model, None, false, false, false, false, true)?;
            let report = image::build(&model, options)?;
            println!("{}", report.out.display());
            Ok(ExitCode::SUCCESS)
        }
        GuestCommand::Boot(args) => {
            let model = cvm_core::model::load(args.model.config.as_deref())?;
            let artifacts = args
                .artifacts
                .unwrap_or_else(|| crate::default_artifacts(&model.model.deployment.name));
            image::require_artifacts(&artifacts)?;
            cvm_core::deps::ensure(image::BOOT_REQUIREMENTS, InstallPolicy::Refuse)?;
            let work = project_root().join("target/cvm-boot");
            std::fs::create_dir_all(&work)?;
            let accel = match args.accel {
                Accel::Auto => boot::Accel::Auto,
                Accel::Kvm => boot::Accel::Kvm,
                Accel::Tcg => boot::Accel::Tcg,
            };
            let kvm = boot::resolve_accel(accel, &work)?;
            eprintln!(
                "{:>12} accelerator {}",
                "Using",
                if kvm {
                    "kvm"
                } else {
                    "tcg (KVM cannot run firmware here)"
                }
            );
            let mut failed = false;
            let mut results = Vec::new();
            for mode in [boot::BootMode::Disk, boot::BootMode::Direct] {
                eprintln!(
                    "{:>12} {} boot of {}{}",
                    "Booting",
                    mode.as_str(),
                    artifacts.display(),
                    if mode == boot::BootMode::Direct {
                        format!(
                            " with {} (firmware.fd loads -kernel only under SEV)",
                            boot::HOST_OVMF
                        )
                    } else {
                        String::new()
                    }
                );
                let outcome = boot::boot(&boot::BootRequest {
                    model: &model,
                    artifacts: &artifacts,
                    disk: artifacts.join("disk.qcow2"),
                    mode,
                    kvm,
                    timeout: Duration::from_secs(args.timeout),
                    serial_log: work.join(format!("serial-{}.log", mode.as_str())),
                })?;
                if outcome.ok() {
                    eprintln!(
                        "{:>12} {} boot: CVM-STATUS after {:.1}s",
                        "Ready",
                        mode.as_str(),
                        outcome.seconds
                    );
                } else {
                    failed = true;
                    eprintln!(
                        "{:>12} {} boot after {:.1}s: {}\n--- last lines of {} ---\n{}",
                        "FAILED",
                        mode.as_str(),
                        outcome.seconds,
                        outcome.failure.as_deref().unwrap_or("unknown"),
                        outcome.serial_log.display(),
                        boot::log_tail(&outcome.serial_log, 30)
                    );
                }
                results.push(serde_json::json!({
                    "mode": mode.as_str(),
                    "seconds": outcome.seconds,
                    "status": outcome.status,
                    "failure": outcome.failure,
                }));
            }
            print_json(&results)?;
            Ok(if failed {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            })
        }
        GuestCommand::Inspect(args) if args.default_model => {
            std::io::stdout()
                .lock()
                .write_all(cvm_core::model::DEFAULT_MODEL_TOML.as_bytes())?;
            Ok(ExitCode::SUCCESS)
        }
        GuestCommand::Inspect(args) => {
            let model = cvm_core::model::load(args.model.config.as_deref())?;
            let artifacts = args
                .artifacts
                .unwrap_or_else(|| crate::default_artifacts(&model.model.deployment.name));
            image::require_artifacts(&artifacts)?;
            let inspection = image::inspect(&artifacts)?;
            if args.json {
                print_json(&inspection)?;
            } else {
                println!("{}", image::inspection_text(&inspection));
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
