//! `cargo xtask bench host-check`: the time of `host check --facts` over a full bundle.

use std::{process::ExitCode, time::Instant};

use anyhow::{Context, Result};
use cvm_core::cmd::Cmd;
use host_setup::{
    checks::{self, Options},
    facts::Bundle,
};

use crate::{flags::BenchHostCheckArgs, project_root};

/// Times `host check --facts` (open the bundle, evaluate every check, render) in this process.
pub fn host_check(args: BenchHostCheckArgs) -> Result<ExitCode> {
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
    let in_process = median(&mut times);
    // The whole command as a user runs it: process start, bundle, checks, output.
    let exe = std::env::current_exe().context("finding the xtask binary")?;
    let mut process_times = Vec::with_capacity(runs as usize);
    for _ in 0..runs {
        let started = Instant::now();
        let output = Cmd::new(&exe)
            .args(["host", "check", "--json", "--facts"])
            .arg(&dir)
            .output()?;
        process_times.push(started.elapsed().as_secs_f64());
        if !matches!(output.status.code(), Some(0 | 1)) {
            anyhow::bail!(
                "`host check --facts {}` exited with {}: {}",
                dir.display(),
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
    }
    let whole = median(&mut process_times);
    println!(
        "host check --facts {} ({checks_run} checks, median of {runs} runs): whole command {:.1} ms, evaluation alone {:.2} ms; whole command / 0.5 s budget = {:.3}",
        dir.display(),
        whole * 1e3,
        in_process * 1e3,
        whole / 0.5
    );
    Ok(ExitCode::SUCCESS)
}

fn median(times: &mut [f64]) -> f64 {
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}
