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
    not_implemented, print_json,
};

pub fn run(command: HostCommand) -> Result<ExitCode> {
    match command {
        HostCommand::Plan(_) => Err(not_implemented("host plan", 7)),
        HostCommand::Apply(_) => Err(not_implemented("host apply", 7)),
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
    eprintln!(
        "{:>12} host facts into {}",
        "Collecting",
        args.out.display()
    );
    let meta = facts::collect(&CollectOptions {
        redfish,
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
