//! `cargo xtask bench image`: one run that times a bare mmdebstrap of the same package set, our
//! cold build, a no-op rebuild, a rebuild after changing only the kernel command line, and the
//! emulated boot of the result against the same root booted with a stock initrd, and prints ratios
//! and sizes (never pass/fail targets).
//!
//! The stock initrd is what Ubuntu's initramfs-tools makes by default (`MODULES=most`, udev's
//! hardware database, the DHCP client) plus only what opening the dm-verity root needs
//! (templates/bench/stock-initrd: a hook adding systemd-veritysetup, and a local-top script). The
//! guest has no initramfs-tools, so a rootfs-only build of the same package set plus
//! initramfs-tools makes it. Everything else — kernel, command line, root, disk, firmware, QEMU
//! arguments — is the built image's.

use std::{
    fs,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use cvm_core::{cmd::Cmd, model::LoadedModel};
use serde::Serialize;

use super::{boot, cache, rootfs, uki, BuildOptions};

/// The figures of one benchmark run.
#[derive(Debug, Serialize)]
pub struct ImageBench {
    /// Seconds of a bare mmdebstrap of the same package set (the same package cache synced in, so
    /// nothing is downloaded; tar to a scratch file), as mmdebstrap runs by default: its
    /// temporary tree under TMPDIR or /tmp.
    pub bare_mmdebstrap_s: f64,
    /// Seconds of the same bare mmdebstrap with its temporary tree in RAM (TMPDIR on the tmpfs
    /// the build's scratch trees use), when the build used RAM: the like-for-like baseline.
    pub bare_in_ram_s: Option<f64>,
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
    /// cold build / bare mmdebstrap in RAM.
    pub cold_over_bare_in_ram: Option<f64>,
    /// Size of disk.qcow2 in bytes (target ≤ 100 MB).
    pub qcow2_bytes: u64,
    /// Size of the UKI's initrd in bytes (target ≤ 12 MB).
    pub initrd_bytes: u64,
    /// Seconds from QEMU start to CVM-STATUS for the same image with the stock initrd.
    pub stock_initrd_boot_s: Option<f64>,
    /// Size of the stock initrd in bytes.
    pub stock_initrd_bytes: u64,
    /// our boot / stock-initrd boot (target ≤ 0.5), when both reached CVM-STATUS.
    pub boot_over_stock: Option<f64>,
    /// Size of the gpu profile's disk.qcow2 in bytes (budget ≤ 1.2 GB), when it was built.
    pub gpu_qcow2_bytes: Option<u64>,
    /// Why the gpu image was not built (its build error), when it was not.
    pub gpu_not_built: Option<String>,
}

fn timed<T>(what: &str, f: impl FnOnce() -> Result<T>) -> Result<(T, f64)> {
    eprintln!("{:>12} {what}", "Timing");
    // What the previous step left to write back would otherwise slow this one down (the builds
    // are bound by disk writes on small machines).
    Cmd::new("sync").run().context("sync before a timed step")?;
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
    let out = work.join("out");
    let (cold, cold_s) = timed("cold build (--no-cache)", || {
        super::build(model, options(out.clone(), true))
    })?;
    // The bare mmdebstrap installs the same packages (the kernel's extra modules under the name
    // the cold build resolved) from the same package cache, so neither run downloads anything.
    let kernel_release = fs::read_to_string(cold.rootfs_dir.join("kernel-version"))
        .context("reading the kernel version of the cold build")?;
    let mut include: Vec<String> = rootfs::BASE_PACKAGES
        .iter()
        .map(|s| s.to_string())
        .collect();
    include.push(guest.kernel.clone());
    include.push(format!(
        "{}{}",
        rootfs::EXTRA_MODULES,
        kernel_release.trim()
    ));
    include.extend(guest.packages.iter().cloned());
    let deb_cache = options(out.clone(), false)
        .cache
        .join(super::Distro::Ubuntu.deb_cache_name());
    let tar = work.join("bare.tar");
    let mut bare = Cmd::new("mmdebstrap")
        .args(["--mode=root", "--variant=apt", "--skip=essential/unlink"])
        .arg(format!("--include={}", include.join(",")))
        .arg("--setup-hook=mkdir -p \"$1/var/cache/apt/archives\"")
        .arg(format!(
            "--setup-hook=sync-in {} /var/cache/apt/archives/",
            cvm_core::cmd::shell_quote(&deb_cache.to_string_lossy())
        ))
        .env("SOURCE_DATE_EPOCH", guest.source_date_epoch.to_string());
    if rootfs::is_ubuntu_suite(&guest.suite) {
        bare = bare
            .arg("--components=main,universe")
            .arg(format!("--keyring={}", rootfs::UBUNTU_KEYRING));
    }
    let bare = bare
        .arg(&guest.suite)
        .arg(&tar)
        .args(rootfs::mirror_lines(&model.model, "main universe"))
        // The build's PATH for mmdebstrap, so that both run the same helpers.
        .env(
            "PATH",
            rootfs::system_first_path(std::env::var("PATH").ok().as_deref()),
        );
    let (_, bare_s) = timed("bare mmdebstrap", || bare.run().map(|_| ()))?;
    let _ = fs::remove_file(&tar);
    let ram = super::scratch::Scratch::new(&options(out.clone(), false).cache)?;
    let bare_in_ram_s = if ram.in_ram() {
        let tmp = ram.path("bare-tmp")?;
        fs::create_dir_all(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        let bare = bare.clone().env("TMPDIR", &tmp);
        let (_, seconds) = timed("bare mmdebstrap, temporary tree in RAM", || {
            bare.run().map(|_| ())
        })?;
        let _ = fs::remove_file(&tar);
        Some(seconds)
    } else {
        None
    };
    drop(ram);

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

    let (stock_artifacts, stock_initrd_bytes) = timed("stock-initrd UKI of the same root", || {
        stock_artifacts(
            model,
            options(work.join("stock-out"), false),
            kernel_release.trim(),
            &out,
            work,
        )
    })?
    .0;
    let kvm = boot::kvm_runs_firmware(work);
    let boot_one = |artifacts: &Path, name: &str| -> Result<Option<f64>> {
        let outcome = boot::boot(&boot::BootRequest {
            model,
            artifacts,
            disk: out.join("disk.qcow2"),
            mode: boot::BootMode::Direct,
            kvm,
            timeout: Duration::from_secs(400),
            serial_log: work.join(format!("serial-{name}.log")),
        })?;
        if !outcome.ok() {
            eprintln!(
                "{:>12} {name} boot: {}",
                "Warning",
                outcome.failure.as_deref().unwrap_or("not ready")
            );
        }
        Ok(outcome.ok().then_some(outcome.seconds))
    };
    let (ours, _) = timed("emulated boot", || boot_one(&out, "bench"))?;
    let (stock, _) = timed("emulated boot with the stock initrd", || {
        boot_one(&stock_artifacts, "stock-initrd")
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
    // GPU models use the NVIDIA flavour of the same kernel track (README, gpu profile).
    if let Some(version) = gpu_model
        .model
        .guest
        .kernel
        .strip_prefix(cvm_core::model::KernelFlavour::Virtual.prefix())
    {
        gpu_model.model.guest.kernel = format!(
            "{}{version}",
            cvm_core::model::KernelFlavour::Nvidia.prefix()
        );
    }
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
        boot_to_status_s: ours,
        cold_over_bare: cold_s / bare_s,
        bare_in_ram_s,
        cold_over_bare_in_ram: bare_in_ram_s.map(|bare| cold_s / bare),
        qcow2_bytes,
        initrd_bytes,
        stock_initrd_boot_s: stock,
        stock_initrd_bytes,
        boot_over_stock: ours.zip(stock).map(|(ours, stock)| ours / stock),
    })
}

/// The stock initrd's additions: the least initramfs-tools needs to open the dm-verity root.
const STOCK_INITRD_FILES: &[(&str, &str)] = &[
    (
        "etc/initramfs-tools/hooks/cvm-verity",
        include_str!("../../../templates/bench/stock-initrd/hooks/cvm-verity"),
    ),
    (
        "etc/initramfs-tools/scripts/local-top/cvm-verity",
        include_str!("../../../templates/bench/stock-initrd/scripts/local-top/cvm-verity"),
    ),
];

/// Packages the stock initrd is made with; the guest itself has neither.
const STOCK_INITRD_PACKAGES: &[&str] = &["initramfs-tools", "zstd"];

/// Makes `work/stock-artifacts/` with the built firmware and a UKI that differs from
/// `out/uki.efi` only in its initrd: Ubuntu's initramfs-tools with its stock settings, installed
/// into the same package set by a rootfs-only build of `model` (its own lock under `work`) and
/// run in a copy of that tree. Returns the directory and the initrd's size.
fn stock_artifacts(
    model: &LoadedModel,
    options: BuildOptions,
    kernel_version: &str,
    out: &Path,
    work: &Path,
) -> Result<(PathBuf, u64)> {
    let mut stock_model = model.clone();
    stock_model
        .model
        .guest
        .packages
        .extend(STOCK_INITRD_PACKAGES.iter().map(|p| p.to_string()));
    let report = super::build(
        &stock_model,
        BuildOptions {
            lock_path: work.join("stock.packages.lock"),
            lock_only: true,
            ..options
        },
    )
    .context("building the root tree with initramfs-tools for the stock initrd")?;
    let rootfs_dir = report.rootfs_dir;
    let stock_kernel = rootfs::output(&rootfs_dir)?.kernel_version;
    if stock_kernel.trim() != kernel_version {
        anyhow::bail!(
            "the stock-initrd tree has kernel {} but the image has {kernel_version}: the archive moved between the two builds; run the benchmark again",
            stock_kernel.trim()
        );
    }
    let tree = work.join("stock-tree");
    if tree.exists() {
        cache::remove_tree(&tree)?;
    }
    super::scratch::unpack(&rootfs_dir.join(super::scratch::TREE_TAR), &tree)
        .context("unpacking the guest tree for the stock initrd")?;
    for (path, contents) in STOCK_INITRD_FILES {
        let path = tree.join(path);
        fs::create_dir_all(path.parent().expect("has a parent"))?;
        fs::write(&path, contents).with_context(|| format!("writing {}", path.display()))?;
        fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    }
    Cmd::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg(r#"mount -t proc proc "$1/proc" && exec chroot "$1" mkinitramfs -o /stock-initrd.img "$2""#)
        .args(["sh"])
        .arg(&tree)
        .arg(kernel_version)
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .run()
        .context("generating the stock initrd in a copy of the guest tree")?;
    let initrd = fs::read(tree.join("stock-initrd.img")).context("reading the stock initrd")?;
    let built = fs::read(out.join("uki.efi")).context("reading uki.efi")?;
    let cmdline = uki::section_data(&built, ".cmdline")?
        .context("uki.efi has no .cmdline section")?
        .to_vec();
    let osrel = fs::read(tree.join(super::OS_RELEASE)).context("reading os-release")?;
    let stub = fs::read(rootfs_dir.join("stub.efi")).context("reading the UKI stub")?;
    let linux = fs::read(rootfs_dir.join("vmlinuz")).context("reading the kernel")?;
    let image = uki::build(
        &stub,
        &uki::UkiParts {
            osrel: &osrel,
            cmdline: &cmdline,
            uname: kernel_version.as_bytes(),
            initrd: &initrd,
            linux: &linux,
        },
    )?;
    let dir = work.join("stock-artifacts");
    if dir.exists() {
        fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    fs::write(dir.join("uki.efi"), image).context("writing the stock-initrd UKI")?;
    fs::copy(out.join("firmware.fd"), dir.join("firmware.fd")).context("copying firmware.fd")?;
    cache::remove_tree(&tree)?;
    Ok((dir, initrd.len() as u64))
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
        match (bench.bare_in_ram_s, bench.cold_over_bare_in_ram) {
            (Some(seconds), Some(ratio)) => format!(
                "  temporary tree in RAM  {seconds:>8.1} s   (cold build / this: {ratio:.2}; the build's trees are in RAM too)"
            ),
            _ => "  temporary tree in RAM      n/a   (the build's trees were on disk too)".to_owned(),
        },
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
        format!("boot to CVM-STATUS       {boot:>10}"),
        format!(
            "  with the stock initrd  {stock:>10}   ratio {ratio} (target <= 0.5)",
            stock = bench
                .stock_initrd_boot_s
                .map(|s| format!("{s:.1} s"))
                .unwrap_or_else(|| "failed".to_owned()),
            ratio = bench
                .boot_over_stock
                .map(|r| format!("{r:.2}"))
                .unwrap_or_else(|| "n/a".to_owned()),
        ),
        format!(
            "disk.qcow2               {:>8.1} MB  (target <= 100 MB)",
            bench.qcow2_bytes as f64 / 1e6
        ),
        format!(
            "initrd                   {:>8.1} MB  (target <= 12 MB; stock {:.1} MB)",
            bench.initrd_bytes as f64 / 1e6,
            bench.stock_initrd_bytes as f64 / 1e6
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
