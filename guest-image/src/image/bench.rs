//! `cargo xtask bench image`: one run that times a bare mmdebstrap of the same package set, our
//! cold build, a no-op rebuild, a rebuild after changing only the kernel command line, and the
//! emulated boot of the result, and prints ratios and sizes (never pass/fail targets).

use std::{
    fs,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use cvm_core::{cmd::Cmd, model::LoadedModel};
use serde::Serialize;

use super::{boot, rootfs, uki, BuildOptions};

/// The figures of one benchmark run.
#[derive(Debug, Serialize)]
pub struct ImageBench {
    /// Seconds of a bare mmdebstrap of the same package set (same cache, tar to a scratch file).
    pub bare_mmdebstrap_s: f64,
    /// Seconds of our build with every stage rebuilt (downloaded packages kept).
    pub cold_build_s: f64,
    /// Seconds of a rebuild with nothing changed.
    pub noop_rebuild_s: f64,
    /// Seconds of a rebuild after changing only the kernel command line.
    pub cmdline_rebuild_s: f64,
    /// Seconds from QEMU start to CVM-STATUS (direct UKI boot, TCG unless KVM runs firmware).
    pub boot_to_status_s: Option<f64>,
    /// cold build / bare mmdebstrap (target ≤ 1.25).
    pub cold_over_bare: f64,
    /// Size of disk.qcow2 in bytes (target ≤ 100 MB).
    pub qcow2_bytes: u64,
    /// Size of the UKI's initrd in bytes (target ≤ 12 MB).
    pub initrd_bytes: u64,
    /// The stock-initrd boot comparison is not measured by this version (see the README).
    pub stock_initrd_boot_s: Option<f64>,
    /// Size of the gpu profile's disk.qcow2 in bytes (budget ≤ 1.2 GB), when it was built.
    pub gpu_qcow2_bytes: Option<u64>,
    /// Why the gpu image was not built (its build error), when it was not.
    pub gpu_not_built: Option<String>,
}

fn timed<T>(what: &str, f: impl FnOnce() -> Result<T>) -> Result<(T, f64)> {
    eprintln!("{:>12} {what}", "Timing");
    let started = Instant::now();
    let value = f()?;
    let seconds = started.elapsed().as_secs_f64();
    eprintln!("{:>12} {what}: {seconds:.1}s", "Timed");
    Ok((value, seconds))
}

/// Runs the benchmark under `work` (scratch outputs); `options` is a normal build's options,
/// `gpu_options` those of the same model with the gpu profile (its own lock).
pub fn run(
    model: &LoadedModel,
    options: impl Fn(PathBuf, bool) -> BuildOptions,
    gpu_options: impl Fn(PathBuf) -> BuildOptions,
    work: &Path,
) -> Result<ImageBench> {
    fs::create_dir_all(work).with_context(|| format!("creating {}", work.display()))?;
    let guest = &model.model.guest;
    let mut include: Vec<String> = rootfs::BASE_PACKAGES
        .iter()
        .map(|s| s.to_string())
        .collect();
    include.push(guest.kernel.clone());
    include.extend(guest.packages.iter().cloned());
    let tar = work.join("bare.tar");
    let mut bare = Cmd::new("mmdebstrap")
        .args(["--mode=root", "--variant=apt", "--skip=essential/unlink"])
        .arg(format!("--include={}", include.join(",")))
        .env("SOURCE_DATE_EPOCH", guest.source_date_epoch.to_string());
    if rootfs::is_ubuntu_suite(&guest.suite) {
        bare = bare
            .arg("--components=main,universe")
            .arg(format!("--keyring={}", rootfs::UBUNTU_KEYRING));
    }
    let bare = bare
        .arg(&guest.suite)
        .arg(&tar)
        .args(rootfs::mirror_lines(&model.model, "main universe"));
    let (_, bare_s) = timed("bare mmdebstrap", || bare.run().map(|_| ()))?;
    let _ = fs::remove_file(&tar);

    let out = work.join("out");
    let (_, cold_s) = timed("cold build (--no-cache)", || {
        super::build(model, options(out.clone(), true))
    })?;
    let (_, noop_s) = timed("no-op rebuild", || {
        super::build(model, options(out.clone(), false))
    })?;
    let mut changed = model.clone();
    changed
        .model
        .guest
        .extra_cmdline
        .push("cvm.bench=1".to_owned());
    let (_, cmdline_s) = timed("rebuild after a cmdline change", || {
        super::build(&changed, options(out.clone(), false))
    })?;
    // Back to the unchanged image for the boot and the sizes.
    super::build(model, options(out.clone(), false))?;

    let kvm = boot::kvm_runs_firmware(work);
    let outcome = boot::boot(&boot::BootRequest {
        artifacts: &out,
        disk: out.join("disk.qcow2"),
        mode: boot::BootMode::Direct,
        kvm,
        timeout: Duration::from_secs(400),
        serial_log: work.join("serial-bench.log"),
    })?;
    let uki_bytes = fs::read(out.join("uki.efi")).context("reading uki.efi")?;
    let initrd_bytes = uki::section_data(&uki_bytes, ".initrd")?
        .map(|d| d.len() as u64)
        .unwrap_or(0);
    let qcow2_bytes = fs::metadata(out.join("disk.qcow2"))
        .context("reading disk.qcow2")?
        .len();
    // The gpu profile of the same model: its size against the budget (a failed build is
    // reported with its reason, not fatal to the benchmark).
    let mut gpu_model = model.clone();
    gpu_model.model.guest.profile = cvm_core::model::Profile::Gpu;
    let gpu_out = work.join("out-gpu");
    let (gpu_qcow2_bytes, gpu_not_built) = match timed("gpu profile build", || {
        super::build(&gpu_model, gpu_options(gpu_out.clone()))
    }) {
        Ok(_) => (
            Some(
                fs::metadata(gpu_out.join("disk.qcow2"))
                    .context("reading the gpu disk.qcow2")?
                    .len(),
            ),
            None,
        ),
        Err(err) => (None, Some(format!("{err:#}"))),
    };
    Ok(ImageBench {
        gpu_qcow2_bytes,
        gpu_not_built,
        bare_mmdebstrap_s: bare_s,
        cold_build_s: cold_s,
        noop_rebuild_s: noop_s,
        cmdline_rebuild_s: cmdline_s,
        boot_to_status_s: outcome.ok().then_some(outcome.seconds),
        cold_over_bare: cold_s / bare_s,
        qcow2_bytes,
        initrd_bytes,
        stock_initrd_boot_s: None,
    })
}

/// The benchmark's table.
pub fn table(bench: &ImageBench) -> String {
    let boot = bench
        .boot_to_status_s
        .map(|s| format!("{s:.1} s"))
        .unwrap_or_else(|| "failed".to_owned());
    [
        format!(
            "bare mmdebstrap          {:>8.1} s",
            bench.bare_mmdebstrap_s
        ),
        format!(
            "cold build               {:>8.1} s   ratio {:.2} (target <= 1.25)",
            bench.cold_build_s, bench.cold_over_bare
        ),
        format!(
            "no-op rebuild            {:>8.1} s   (target <= 2 s)",
            bench.noop_rebuild_s
        ),
        format!(
            "cmdline-only rebuild     {:>8.1} s   (target <= 10 s)",
            bench.cmdline_rebuild_s
        ),
        format!("boot to CVM-STATUS       {boot:>10}   (stock-initrd comparison: not measured)"),
        format!(
            "disk.qcow2               {:>8.1} MB  (target <= 100 MB)",
            bench.qcow2_bytes as f64 / 1e6
        ),
        format!(
            "initrd                   {:>8.1} MB  (target <= 12 MB)",
            bench.initrd_bytes as f64 / 1e6
        ),
        match (bench.gpu_qcow2_bytes, &bench.gpu_not_built) {
            (Some(bytes), _) => format!(
                "gpu disk.qcow2           {:>8.1} MB  (budget <= 1200 MB)",
                bytes as f64 / 1e6
            ),
            (None, why) => format!(
                "gpu disk.qcow2           not built: {}",
                why.as_deref().unwrap_or("unknown")
            ),
        },
    ]
    .join("\n")
}
