//! `cargo xtask host …`: provisioning plans, facts collection and preflight checks.

use std::{process::ExitCode, time::Duration};

use anyhow::Result;
use host_setup::{
    checks::{self, Options},
    facts::{self, Bundle, CollectOptions},
    redfish,
};

use crate::{
    flags::{HostCheckArgs, HostCollectArgs, HostCommand},
    print_json,
};

pub fn run(command: HostCommand) -> Result<ExitCode> {
    match command {
        HostCommand::Plan(args) => plan(args),
        HostCommand::Apply(args) => apply(args),
        HostCommand::Collect(args) => collect(args),
        HostCommand::Check(args) => check(args),
    }
}

fn collect(args: HostCollectArgs) -> Result<ExitCode> {
    let redfish = match &args.redfish {
        Some(url) => Some(facts::Redfish {
            url: url.clone(),
            credentials: redfish::Credentials::from_env()?,
            verify_tls: !args.redfish_insecure,
            timeout: Duration::from_secs(args.redfish_timeout),
        }),
        None => None,
    };
    facts::check_markers(&args.marker)?;
    eprintln!(
        "{:>12} host facts into {}",
        "Collecting",
        args.out.display()
    );
    let meta = facts::collect(&CollectOptions {
        redfish,
        markers: args.marker.clone(),
        ..CollectOptions::live(&args.out)
    })?;
    eprintln!(
        "{:>12} {} absent, {} unreadable, {} failed (see {}/facts.json)",
        "Collected",
        meta.absent.len(),
        meta.unreadable.len(),
        meta.failed.len(),
        args.out.display()
    );
    Ok(ExitCode::SUCCESS)
}

fn check(args: HostCheckArgs) -> Result<ExitCode> {
    // Guests of this size boot for minutes on some firmware: say so before the checks run.
    let model = cvm_core::model::load(args.config.as_deref())?;
    for warning in guest_image::launch::boot_time_warnings(&model.model) {
        eprintln!("warning: {}: {warning}", model.source_name());
    }
    let options = Options {
        tee: None,
        only: args.only,
        skip: args.skip,
        strict: args.strict,
    };
    let (_guard, bundle) = match &args.facts {
        Some(dir) => (None, Bundle::open(dir)?),
        None => {
            eprintln!("{:>12} this host's facts", "Collecting");
            let (dir, bundle) = facts::collect_live_temp()?;
            (Some(dir), bundle)
        }
    };
    let report = checks::evaluate(&bundle, &options)?;
    if args.json {
        print_json(&report)?;
    } else {
        print!("{}", checks::render_for_stdout(&report));
    }
    Ok(ExitCode::from(report.exit_code()))
}

/// `host plan`: the provisioning plan for this host (or `--os-release FILE`) and the model's TEE
/// (or `--tee`), as text or JSON on stdout.
fn plan(args: crate::flags::HostPlanArgs) -> Result<ExitCode> {
    use host_setup::provision;
    let loaded = cvm_core::model::load_for_command(args.model.config.as_deref())?;
    let os_release = args
        .os_release
        .unwrap_or_else(|| std::path::PathBuf::from("/etc/os-release"));
    let release = provision::read_release(&os_release)?;
    let tee = args.tee.map(|tee| match tee {
        crate::flags::TeeArg::Snp => cvm_core::model::Tee::Snp,
        crate::flags::TeeArg::Tdx => cvm_core::model::Tee::Tdx,
    });
    let request = provision::PlanRequest::from_model(&loaded.model, release, tee, args.libvirt);
    let plan = provision::plan(&request)?;
    if args.json {
        print_json(&plan)?;
    } else {
        let mut stdout = std::io::stdout().lock();
        std::io::Write::write_all(&mut stdout, plan.render().as_bytes())?;
    }
    Ok(ExitCode::SUCCESS)
}

/// `host apply`: runs the plan against `--root` (default /), asking first unless `--yes`.
fn apply(args: crate::flags::HostApplyArgs) -> Result<ExitCode> {
    use std::io::{BufRead, IsTerminal, Write};

    use anyhow::bail;
    use host_setup::provision::{self, apply as run};
    let loaded = cvm_core::model::load_for_command(args.model.config.as_deref())?;
    if !args.root.is_dir() {
        return Err(cvm_core::error::bad_input(format!(
            "--root {}: not a directory; give the filesystem root to provision (/ for this host)",
            args.root.display()
        )));
    }
    let release = provision::read_release(&args.root.join("etc/os-release"))?;
    let request = provision::PlanRequest::from_model(&loaded.model, release, None, args.libvirt);
    let plan = provision::plan(&request)?;
    let options = run::ApplyOptions::new(&args.root, run::PackageMode::Install);
    let mut runner = run::ChrootRunner;
    let states = run::survey(&plan, &options, &mut runner)?;
    let changes = run::changes(&plan, &states);
    if !changes.is_empty() {
        let mut stderr = std::io::stderr().lock();
        let mut plan_command = "cargo xtask host plan".to_owned();
        if let Some(config) = &args.model.config {
            plan_command.push_str(&format!(" -c {}", config.display()));
        }
        if args.root != std::path::Path::new("/") {
            plan_command.push_str(&format!(
                " --os-release {}",
                args.root.join("etc/os-release").display()
            ));
        }
        if args.libvirt {
            plan_command.push_str(" --libvirt");
        }
        writeln!(
            stderr,
            "host apply will change {} (the full text: `{plan_command}`):",
            args.root.display()
        )?;
        for (id, state) in &states {
            if let (true, run::State::Pending(why)) = (changes.contains(id), state) {
                writeln!(stderr, "  {id}: {why}")?;
            }
        }
        drop(stderr);
        if args.root == std::path::Path::new("/") && !cvm_core::deps::is_root() {
            bail!(
                "host apply changes /etc, /boot and the installed packages: run it as root (sudo)"
            );
        }
        if !args.yes {
            if !std::io::stdin().is_terminal() {
                return Err(cvm_core::error::bad_input(
                    "refusing to change the host without confirmation: stdin is not a terminal; review `cargo xtask host plan` and pass --yes",
                ));
            }
            eprint!("Apply these {} steps? [y/N] ", changes.len());
            let mut answer = String::new();
            std::io::stdin().lock().read_line(&mut answer)?;
            if !matches!(answer.trim(), "y" | "Y" | "yes") {
                eprintln!("Nothing was changed.");
                return Ok(ExitCode::from(1));
            }
        }
    }
    let report = run::apply(&plan, &options, &mut runner)?;
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(report.render().as_bytes())?;
    drop(stdout);
    if let Some(failed) = report.failure() {
        bail!(
            "step {} failed; the steps before it are kept (apply again after fixing it)",
            failed.id
        );
    }
    if !report.changed_anything() && report.after_reboot.is_empty() {
        eprintln!(
            "{:>12} every step already done; nothing changed",
            "Finished"
        );
    }
    Ok(ExitCode::SUCCESS)
}
