//! `cargo xtask bench …`: benchmarks that print ratios measured in one run (never pass/fail targets).

use std::{process::ExitCode, time::Instant};

use anyhow::Result;
use host_setup::{
    checks::{self, Options},
    facts::Bundle,
};

use crate::{
    flags::{BenchCommand, BenchHostCheckArgs},
    not_implemented, project_root,
};

pub fn run(command: BenchCommand) -> Result<ExitCode> {
    match command {
        BenchCommand::Image(_) => Err(not_implemented("bench image", 3)),
        BenchCommand::Measure(_) => Err(not_implemented("bench measure", 4)),
        BenchCommand::HostCheck(args) => host_check(args),
    }
}

/// Times `host check --facts` (open the bundle, evaluate every check, render) in this process.
fn host_check(args: BenchHostCheckArgs) -> Result<ExitCode> {
    let dir = args
        .facts
        .unwrap_or_else(|| project_root().join("host-setup/tests/data/facts/snp-xe7745"));
    let runs = args.runs.max(1);
    eprintln!(
        "{:>12} host check over {} ({runs} runs)",
        "Timing",
        dir.display()
    );
    let mut times = Vec::with_capacity(runs as usize);
    let mut checks_run = 0;
    for _ in 0..runs {
        let started = Instant::now();
        let bundle = Bundle::open(&dir)?;
        let report = checks::evaluate(&bundle, &Options::default())?;
        let rendered = checks::render_plain(&report);
        times.push(started.elapsed().as_secs_f64());
        checks_run = report.checks.len();
        std::hint::black_box(rendered);
    }
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    println!(
        "host check --facts {}: {checks_run} checks, median {:.2} ms, min {:.2} ms, max {:.2} ms over {runs} runs (budget 500 ms: {:.4} of it)",
        dir.display(),
        median * 1e3,
        times[0] * 1e3,
        times[times.len() - 1] * 1e3,
        median / 0.5
    );
    Ok(ExitCode::SUCCESS)
}
