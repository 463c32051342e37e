//! `cargo xtask bench measure`: sev-snp-measure's whole-process time / ours, per input.

use std::{
    path::Path,
    process::ExitCode,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use cvm_core::cmd::Cmd;
use guest_image::measure::{
    self,
    reference::{self, SevSnpMeasure},
    SnpRequest, Vcpu, Vmm,
};
use xshell::{cmd, Shell};

use crate::{flags::BenchMeasureArgs, project_root};

/// The inputs both tools measure: the shared test firmware (and Debian's OVMF.fd when the ovmf
/// package is installed), with and without kernel hashes, a few vCPU counts and models.
fn measure_inputs(root: &Path, scratch: &Path) -> Result<Vec<(String, SnpRequest)>> {
    let firmware = reference::test_firmware_dir(root)
        .context("shared/test-data/firmware is missing beside the repository")?;
    let amdsev = firmware.join("ovmf-noble-2024.02-2ubuntu0.10-OVMF.amdsev.fd");
    let plucky = firmware.join("ovmf-plucky-2025.02-3ubuntu2-OVMF.fd");
    let fixtures = root.join("guest-image/tests/data/measure");
    // A kernel of a realistic size (a UKI is tens of MiB): both tools must hash all of it.
    let big_kernel = scratch.join("kernel-32m.bin");
    if !big_kernel.is_file() {
        let block: Vec<u8> = (0..=255u8).cycle().take(1 << 20).collect();
        std::fs::write(&big_kernel, block.repeat(32))
            .with_context(|| format!("writing {}", big_kernel.display()))?;
    }
    let base = |ovmf: &Path, vcpus: u32, vcpu_type: &str| SnpRequest {
        ovmf: ovmf.to_owned(),
        vcpus,
        vcpu: Vcpu::Type(vcpu_type.to_owned()),
        kernel: None,
        initrd: None,
        append: None,
        guest_features: 1,
        vmm: Vmm::Qemu,
        policy: None,
    };
    let mut inputs = vec![
        (
            "noble amdsev, 1 vCPU EPYC-v4".to_owned(),
            base(&amdsev, 1, "EPYC-v4"),
        ),
        (
            "noble amdsev, 64 vCPU EPYC-Milan, 0x21".to_owned(),
            SnpRequest {
                guest_features: 0x21,
                ..base(&amdsev, 64, "EPYC-Milan")
            },
        ),
        (
            "noble amdsev, 8 vCPU EPYC-Genoa, small kernel+initrd+append".to_owned(),
            SnpRequest {
                kernel: Some(fixtures.join("kernel.bin")),
                initrd: Some(fixtures.join("initrd.bin")),
                append: Some("console=ttyS0".to_owned()),
                ..base(&amdsev, 8, "EPYC-Genoa")
            },
        ),
        (
            "noble amdsev, 4 vCPU EPYC-Genoa, 32 MiB kernel".to_owned(),
            SnpRequest {
                kernel: Some(big_kernel),
                ..base(&amdsev, 4, "EPYC-Genoa")
            },
        ),
        (
            "plucky OVMF.fd, 4 vCPU EPYC-v4".to_owned(),
            base(&plucky, 4, "EPYC-v4"),
        ),
    ];
    let debian = Path::new("/usr/share/ovmf/OVMF.fd");
    if debian.is_file() {
        inputs.push((
            "Debian OVMF.fd, 2 vCPU EPYC-Rome".to_owned(),
            base(debian, 2, "EPYC-Rome"),
        ));
    }
    Ok(inputs)
}

/// The speed-up the measurement issue asks for.
const TARGET_RATIO: f64 = 8.0;

/// The median and the best wall time of `runs` runs of `command`.
fn wall_times(command: &Cmd, runs: u32) -> Result<(Duration, Duration)> {
    let mut times = Vec::new();
    for _ in 0..runs.max(1) {
        let started = Instant::now();
        command.run()?;
        times.push(started.elapsed());
    }
    times.sort_unstable();
    Ok((times[times.len() / 2], times[0]))
}

fn milliseconds(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e3
}

pub fn measure(args: BenchMeasureArgs) -> Result<ExitCode> {
    let root = project_root();
    let binary = root.join("target/release/xtask");
    if !binary.is_file() {
        eprintln!(
            "{:>12} the release xtask (cargo build --release -p xtask)",
            "Building"
        );
        let sh = Shell::new()?;
        sh.change_dir(&root);
        cmd!(sh, "cargo build --release --quiet -p xtask")
            .run()
            .context("building the release xtask")?;
    }
    let venv = SevSnpMeasure::default_venv(&root);
    eprintln!("{:>12} sev-snp-measure in {}", "Preparing", venv.display());
    let reference = SevSnpMeasure::ensure(&venv)
        .context("bench measure compares against sev-snp-measure from PyPI")?;
    let scratch = root.join("target/bench-measure");
    std::fs::create_dir_all(&scratch).with_context(|| format!("creating {}", scratch.display()))?;
    let inputs = measure_inputs(&root, &scratch)?;

    eprintln!(
        "{:>12} {} inputs, {} runs each, whole-process wall time ({}; load average {})",
        "Timing",
        inputs.len(),
        args.runs,
        reference
            .version()
            .unwrap_or_else(|_| reference::PACKAGE.to_owned()),
        std::fs::read_to_string("/proc/loadavg")
            .map(|text| text
                .split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" "))
            .unwrap_or_else(|_| "unknown".to_owned())
    );
    println!(
        "{:<58} {:>20} {:>18} {:>8} {:>8}",
        "input", "sev-snp-measure", "ours", "median", "best"
    );
    println!(
        "{:<58} {:>20} {:>18} {:>8} {:>8}",
        "", "median / best ms", "median / best ms", "ratio", "ratio"
    );
    let mut ratios = Vec::new();
    // The median ratios of the inputs whose kernel hashing does not bound them below the target.
    let mut unbounded_ratios = Vec::new();
    for (label, request) in &inputs {
        let ours = Cmd::new(&binary)
            .args(["measure", "snp"])
            .args(reference::our_args(request));
        let theirs = Cmd::new(&reference.program)
            .args(["--mode", "snp"])
            .args(reference::reference_args(request));
        let our_digest = ours.read()?;
        let their_digest = theirs.read()?;
        if our_digest.lines().last() != their_digest.lines().last() {
            bail!("{label}: ours {our_digest} differs from sev-snp-measure's {their_digest}");
        }
        let (their_median, their_best) = wall_times(&theirs, args.runs)?;
        let (our_median, our_best) = wall_times(&ours, args.runs)?;
        let median_ratio = their_median.as_secs_f64() / our_median.as_secs_f64().max(1e-9);
        let best_ratio = their_best.as_secs_f64() / our_best.as_secs_f64().max(1e-9);
        ratios.push(median_ratio);
        println!(
            "{:<58} {:>9.1} / {:>6.1} {:>8.1} / {:>6.1} {:>7.1}x {:>7.1}x",
            label,
            milliseconds(their_median),
            milliseconds(their_best),
            milliseconds(our_median),
            milliseconds(our_best),
            median_ratio,
            best_ratio
        );
        // Both tools must SHA-256 the whole kernel and initrd, one stream each: that time bounds
        // the ratio however fast the rest is.
        let files: Vec<&Path> = [&request.kernel, &request.initrd]
            .into_iter()
            .flatten()
            .map(|path| path.as_path())
            .collect();
        let file_bytes: u64 = files
            .iter()
            .filter_map(|file| std::fs::metadata(file).ok())
            .map(|metadata| metadata.len())
            .sum();
        let mut unbounded = true;
        if file_bytes >= 1 << 20 {
            let mut floor = Duration::MAX;
            for _ in 0..3 {
                let started = Instant::now();
                for file in &files {
                    measure::file_sha256(file, "kernel")?;
                }
                floor = floor.min(started.elapsed());
            }
            let bound = their_median.as_secs_f64() / floor.as_secs_f64().max(1e-9);
            unbounded = bound >= TARGET_RATIO;
            println!(
                "{:<58} floor: SHA-256 of the kernel and initrd alone takes {:.1} ms here, so no tool can be more than {bound:.1}x faster than sev-snp-measure on this input",
                "",
                milliseconds(floor),
            );
        }
        if unbounded {
            unbounded_ratios.push(median_ratio);
        }
    }
    let smallest = |ratios: &[f64]| ratios.iter().copied().fold(f64::INFINITY, f64::min);
    println!(
        "same digest as sev-snp-measure on every input; smallest median ratio {:.1}x, {:.1}x where no kernel hash bounds it below the {TARGET_RATIO}x target",
        smallest(&ratios),
        smallest(&unbounded_ratios)
    );
    Ok(ExitCode::SUCCESS)
}
