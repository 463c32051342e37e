//! The guest image build pipeline and the emulated boot test (issue 3, DESIGN.md §4 and §5).
//!
//! Stages (each content-addressed in [`cache`]): `rootfs` (mmdebstrap, the initrd, the lock) →
//! `harden` (distroless) → `root-image` (erofs + dm-verity) → `uki` → `disk` → `qcow2` → `audit`
//! (reads the erofs back out of disk.qcow2) → `measure` ([`crate::measure`]) → `render`
//! ([`crate::launch`]) → manifest. The output is built in a temporary sibling directory and renamed into
//! place only when complete.

pub mod bench;
pub mod boot;
pub mod cache;
pub mod disk;
pub mod distro;
pub mod egress;
pub mod gpu;
pub mod harden;
pub mod initrd;
pub mod local_repo;
pub mod lock;
pub mod manifest;
pub mod overlay;
pub mod root_image;
pub mod rootfs;
pub mod scratch;
pub mod status;
pub mod telemetry;
pub mod uki;

#[cfg(test)]
mod tests;

use std::{
    fs,
    path::{Path, PathBuf},
    time::Instant,
};

use anyhow::{bail, Context, Result};
use cvm_core::{cmd::Cmd, model::LoadedModel};

use cache::{Cache, KeyBuilder};
pub use distro::{DebianFallback, Distro};
use lock::PackagesLock;

/// Bumped when a stage's code changes what it produces, so old cache entries are not reused
/// (the rootfs key also covers the whole mmdebstrap command, its hooks included).
const PIPELINE_VERSION: &str = "4";

/// The rootfs stage's mmdebstrap command with placeholder paths (and no lock), as its key
/// covers it: any changed option or hook rebuilds the root.
pub fn rootfs_command_text(
    model: &cvm_core::model::Model,
    distro: &Distro,
    extra_files: &[overlay::OverlayFile],
) -> String {
    rootfs::mmdebstrap_command(
        model,
        &rootfs::RootfsInputs {
            lock: None,
            deb_cache: Path::new("/cache/debs"),
            offline_repo: None,
            distro,
            extra_files,
        },
        Path::new("/stage"),
        Path::new("/tree"),
    )
    .to_string()
}

/// The guest's os-release, relative to its root.
pub(crate) const OS_RELEASE: &str = "usr/lib/os-release";

/// The host tools the build runs (names in `cvm_core::deps::REQUIREMENTS`).
pub const BUILD_REQUIREMENTS: &[&str] = &[
    "mmdebstrap",
    "setpriv",
    "unshare",
    "ubuntu-archive-keyring",
    "mkfs.erofs",
    "fsck.erofs",
    "veritysetup",
    "mkfs.vfat",
    "mcopy",
    "sfdisk",
    "qemu-img",
    "dpkg-deb",
    // The initrd stage decompresses the kernel modules it packs (Ubuntu's are .ko.zst,
    // Debian's .ko.xz).
    "zstd",
    "xz",
];

/// The host tools `guest boot` runs.
pub const BOOT_REQUIREMENTS: &[&str] = &["qemu-system-x86_64", "ovmf"];

/// What building and booting an image need together (`bench image`, the slow tests, `ci`).
pub fn build_and_boot_requirements() -> Vec<&'static str> {
    BUILD_REQUIREMENTS
        .iter()
        .chain(BOOT_REQUIREMENTS)
        .copied()
        .collect()
}

/// Options of one build.
pub struct BuildOptions {
    /// The final output directory (`target/cvm/<name>`).
    pub out: PathBuf,
    /// The stage cache (`target/cvm-cache`).
    pub cache: PathBuf,
    /// Where packages.lock is read from and written to.
    pub lock_path: PathBuf,
    /// Fail instead of changing the lock.
    pub locked: bool,
    /// Rebuild every stage (downloaded packages are kept).
    pub no_cache: bool,
    /// Build from the lock and the package cache alone, with no network access.
    pub offline: bool,
    /// The statically linked guest binaries (readiness unit, initrd /init).
    pub binaries: GuestBinaries,
    /// Stop after resolving the lock (`guest lock`).
    pub lock_only: bool,
    /// Where the packages come from: [`Distro::Ubuntu`] (the model's suite) for every product
    /// build; the slow tests also build the Debian trixie fallback.
    pub distro: Distro,
}

/// Timing and size of one stage, for the final table.
#[derive(Debug, Clone)]
pub struct StageReport {
    /// Stage name.
    pub name: &'static str,
    /// Wall time in seconds.
    pub seconds: f64,
    /// True when the output came from the cache.
    pub cached: bool,
    /// The size of the stage's main output, when it has one.
    pub bytes: Option<u64>,
}

/// What a build produced.
#[derive(Debug)]
pub struct BuildReport {
    /// The output directory.
    pub out: PathBuf,
    /// Per-stage timings.
    pub stages: Vec<StageReport>,
    /// The dm-verity root hash.
    pub root_hash: String,
    /// The total wall time.
    pub seconds: f64,
    /// The rootfs stage's cache directory (the guest tree before hardening, the kernel, the
    /// initrd and the UKI stub), for the benchmark's stock-initrd comparison.
    pub rootfs_dir: PathBuf,
}

fn progress(verb: &str, what: &str) {
    eprintln!("{verb:>12} {what}");
}

/// True when progress may be drawn: stderr is a terminal and TERM is not `dumb`.
fn interactive_stderr() -> bool {
    use std::io::IsTerminal;
    std::io::stderr().is_terminal() && std::env::var("TERM").map_or(true, |term| term != "dumb")
}

fn file_size(path: &Path) -> Option<u64> {
    fs::metadata(path).ok().map(|m| m.len())
}

struct Timer {
    stages: Vec<StageReport>,
}

impl Timer {
    fn run<T>(
        &mut self,
        name: &'static str,
        f: impl FnOnce() -> Result<(T, bool, Option<u64>)>,
    ) -> Result<T> {
        let started = Instant::now();
        // On a terminal a spinner shows the running stage and its elapsed time; elsewhere (CI,
        // pipes, TERM=dumb) one plain line per stage start and end.
        let spinner = interactive_stderr().then(|| {
            let spinner = indicatif::ProgressBar::new_spinner();
            spinner.set_style(
                indicatif::ProgressStyle::with_template("{spinner} {msg} {elapsed}")
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
            );
            spinner.set_message(format!("{:>12} {name}", "Running"));
            spinner.enable_steady_tick(std::time::Duration::from_millis(200));
            spinner
        });
        if spinner.is_none() {
            progress("Running", name);
        }
        let result = f().with_context(|| format!("stage {name}"));
        if let Some(spinner) = spinner {
            spinner.finish_and_clear();
        }
        let (value, cached, bytes) = result?;
        let seconds = started.elapsed().as_secs_f64();
        let how = if cached { "cached" } else { "built" };
        let size = bytes
            .map(|b| format!(", {:.1} MB", b as f64 / 1e6))
            .unwrap_or_default();
        progress(
            "Finished",
            &format!("{name} ({how}) in {seconds:.1}s{size}"),
        );
        self.stages.push(StageReport {
            name,
            seconds,
            cached,
            bytes,
        });
        Ok(value)
    }
}

/// Reads the lock at `path`, if there is one.
pub fn read_lock(path: &Path) -> Result<Option<PackagesLock>> {
    match fs::read_to_string(path) {
        Ok(text) => Ok(Some(PackagesLock::parse(&text, path)?)),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(err).with_context(|| format!("reading {}", path.display())),
    }
}

/// The kernel command line of the UKI.
pub fn kernel_cmdline(root_hash: &str, extra: &[String]) -> String {
    let mut words = vec![
        "console=ttyS0,115200".to_owned(),
        "root=/dev/mapper/root".to_owned(),
        "rootfstype=erofs".to_owned(),
        "ro".to_owned(),
        format!("cvm.roothash={root_hash}"),
        format!("cvm.verity_data=PARTLABEL={}", disk::ROOT_PARTITION),
        format!("cvm.verity_hash=PARTLABEL={}", disk::VERITY_PARTITION),
        "lockdown=integrity".to_owned(),
        "module.sig_enforce=1".to_owned(),
        "panic=-1".to_owned(),
    ];
    words.extend(extra.iter().cloned());
    words.join(" ")
}

fn tool_version(tool: &str, args: &[&str]) -> String {
    Cmd::new(tool)
        .args(args)
        .output()
        .map(|out| {
            let text = if out.stdout.is_empty() {
                out.stderr
            } else {
                out.stdout
            };
            String::from_utf8_lossy(&text)
                .lines()
                .next()
                .unwrap_or("")
                .trim()
                .to_owned()
        })
        .unwrap_or_default()
}

/// The versions of the tools whose output lands in the image (recorded in the manifest and part of
/// the stage keys).
pub fn tool_versions() -> Vec<(String, String)> {
    [
        ("mmdebstrap", vec!["--version"]),
        ("mkfs.erofs", vec!["--version"]),
        ("veritysetup", vec!["--version"]),
        ("mkfs.vfat", vec!["--help"]),
        ("mtools", vec!["--version"]),
        ("sfdisk", vec!["--version"]),
        ("qemu-img", vec!["--version"]),
    ]
    .into_iter()
    .map(|(tool, args)| {
        let program = if tool == "mtools" { "mcopy" } else { tool };
        (tool.to_owned(), tool_version(program, &args))
    })
    .collect()
}

/// Runs the whole pipeline.
pub fn build(model: &LoadedModel, options: BuildOptions) -> Result<BuildReport> {
    let started = Instant::now();
    let guest = &model.model.guest;
    let epoch = guest.source_date_epoch;
    let _hold = cache::CacheLock::acquire(&options.cache)?;
    let cache = Cache::new(&options.cache, options.no_cache)?;
    let scratch = scratch::Scratch::new(&options.cache)?;
    let distro = &options.distro;
    let deb_cache = options.cache.join(distro.deb_cache_name());
    let firmware_sha256 = distro.check_firmware()?;
    let tools = tool_versions();
    let tools_text: String = tools.iter().map(|(t, v)| format!("{t}={v}\n")).collect();
    let existing_lock = read_lock(&options.lock_path)?;
    let cvm_status = fs::read(&options.binaries.status)
        .with_context(|| format!("reading {}", options.binaries.status.display()))?;
    let cvm_init = fs::read(&options.binaries.init)
        .with_context(|| format!("reading {}", options.binaries.init.display()))?;
    let extra_files = overlay::collect(model)?;
    let profile = guest.profile;
    let mut timer = Timer { stages: Vec::new() };

    // Stage rootfs: the key covers everything mmdebstrap sees except the lock; a cached output is
    // reused only when its resolved lock equals the current lock file. The mmdebstrap command
    // (suite, mirror, components, kernel, package set, hooks) is in it as text; what the command
    // only names by path — the guest files, the model's extra files — and its environment are
    // added on their own.
    let mut key = KeyBuilder::new("rootfs", None)
        .text("pipeline", PIPELINE_VERSION)
        .text(
            "mmdebstrap",
            &rootfs_command_text(&model.model, distro, &extra_files),
        )
        .text("epoch", &epoch.to_string())
        .text("tools", &tools_text);
    for file in rootfs::GUEST_FILES {
        key = key.text(file.path, file.contents);
    }
    if let Some(sha256) = &firmware_sha256 {
        key = key.text("firmware", sha256);
    }
    for file in &extra_files {
        key = key
            .text("extra-file", &format!("{} {:o}", file.path, file.mode))
            .bytes(&file.path, &file.contents);
    }
    let rootfs_key = key.finish();
    // The scratch names of this build's trees, by stage key.
    let rootfs_tree = format!("rootfs-{rootfs_key}");
    let wanted_lock = existing_lock.clone();
    let rootfs_dir = timer.run("rootfs", || {
        let stage = cache.stage(
            "rootfs",
            &rootfs_key,
            |dir| match (&wanted_lock, rootfs::output(dir)) {
                (None, Ok(_)) => true,
                (Some(lock), Ok(out)) => lock.diff(&out.lock).is_empty(),
                (_, Err(_)) => false,
            },
            |dir| {
                let repo = dir.join("offline-repo");
                if options.offline {
                    let Some(lock) = &wanted_lock else {
                        return Err(cvm_core::error::bad_input(format!(
                            "--offline needs {}: build once with network access (or run `cargo xtask guest lock`)",
                            options.lock_path.display()
                        )));
                    };
                    progress("Offline", "making a local repository from packages.lock and the package cache");
                    local_repo::write(lock, &deb_cache, &repo)?;
                }
                let tree = scratch.path(&rootfs_tree)?;
                rootfs::build(
                    &model.model,
                    &rootfs::RootfsInputs {
                        lock: wanted_lock.as_ref(),
                        deb_cache: &deb_cache,
                        offline_repo: options.offline.then_some(repo.as_path()),
                        distro,
                        extra_files: &extra_files,
                    },
                    dir,
                    &tree,
                )?;
                if repo.exists() {
                    fs::remove_dir_all(&repo).context("removing the local repository")?;
                }
                scratch::pack(&tree, &dir.join(scratch::TREE_TAR))
            },
        )?;
        Ok((stage.path, stage.cached, None))
    })?;
    let rootfs_out = rootfs::output(&rootfs_dir)?;
    update_lock(&options, existing_lock.as_ref(), &rootfs_out.lock)?;
    if options.lock_only {
        return Ok(BuildReport {
            out: options.lock_path.clone(),
            stages: timer.stages,
            root_hash: String::new(),
            seconds: started.elapsed().as_secs_f64(),
            rootfs_dir,
        });
    }

    // The base keys are the base lists; the gpu profile adds its own lists to them.
    let gpu_profile = profile == cvm_core::model::Profile::Gpu;
    let mut harden_key = KeyBuilder::new("harden", Some(&rootfs_key))
        .bytes("cvm-status", &cvm_status)
        .text("cvm-status-unit", rootfs::CVM_STATUS_UNIT)
        .text("lock", &rootfs_out.lock.to_text())
        .text("purge", harden::PURGE_PACKAGES)
        .text("remove", harden::REMOVE_PATHS)
        .text("mask", harden::MASK_UNITS)
        .text("keep-modules", harden::KEEP_MODULES);
    // The guest firewall is rendered from the model here, so a changed network rebuilds from
    // this stage on, never the root tree.
    let egress_rules = egress::ruleset(&model.model.launch.network)?;
    harden_key = harden_key
        .text("egress-rules", &egress_rules)
        .text("egress-unit", egress::UNIT)
        .text("egress-networkd", egress::NETWORKD_DROP_IN)
        .text("egress-network", egress::NETWORK_FILE)
        .text(
            "network-mode",
            &format!("{:?}", model.model.launch.network.mode),
        );
    if gpu_profile {
        harden_key = harden_key
            .text("gpu-purge", gpu::PURGE_PACKAGES)
            .text("gpu-remove", gpu::REMOVE_PATHS)
            .text("gpu-keep-modules", gpu::KEEP_MODULES);
    }
    let harden_key = harden_key.finish();
    let harden_tree = format!("harden-{harden_key}");
    let harden_dir = timer.run("harden", || {
        let stage = cache.stage(
            "harden",
            &harden_key,
            |_| true,
            |dir| {
                // The root tree this build made, or the cached one unpacked: hardened in place
                // (the rootfs stage keeps its own copy as a tar file).
                let tree = scratch.take_tree(&rootfs_tree, &rootfs_out.tree_tar, &harden_tree)?;
                let report = harden::harden(
                    &tree,
                    distro.kernel(&model.model),
                    &rootfs_out.kernel_version,
                    profile,
                )?;
                egress::install(&tree, &model.model.launch.network, &egress_rules)?;
                rootfs::install_cvm_status(&tree, &options.binaries.status)?;
                // The UKI stage's one file from the tree, so a rebuild of only the UKI does not
                // unpack the tree.
                fs::copy(tree.join(OS_RELEASE), dir.join("os-release"))
                    .context("copying the guest's os-release")?;
                progress(
                    "Hardened",
                    &format!(
                        "{} paths removed, {} kernel modules kept, {} setuid/setgid bits cleared",
                        report.removed, report.modules_kept, report.setid_cleared
                    ),
                );
                scratch::pack(&tree, &dir.join(scratch::TREE_TAR))
            },
        )?;
        Ok((stage.path, stage.cached, None))
    })?;

    // The hardened tree for the stages that read it: this build's, or the cached one unpacked.
    let hardened_tree = || scratch.tree(&harden_tree, &harden_dir.join(scratch::TREE_TAR));

    // Stage initrd: our /init and the modules it loads, taken from the hardened tree (so the
    // initrd's modules are the root's own files).
    let initrd_key = KeyBuilder::new("initrd", Some(&harden_key))
        .text("format", initrd::FORMAT_VERSION)
        .text("modules", &initrd::BOOT_MODULES.join(","))
        .bytes("cvm-init", &cvm_init)
        .finish();
    let initrd_dir = timer.run("initrd", || {
        let stage = cache.stage(
            "initrd",
            &initrd_key,
            |_| true,
            |dir| {
                let report = initrd::build(
                    &hardened_tree()?,
                    &rootfs_out.kernel_version,
                    &cvm_init,
                    epoch,
                    &dir.join("initrd.img"),
                )?;
                progress(
                    "Initrd",
                    &format!(
                        "/init and {} module(s): {}",
                        report.modules.len(),
                        report.modules.join(", ")
                    ),
                );
                Ok(())
            },
        )?;
        let size = file_size(&stage.path.join("initrd.img"));
        Ok((stage.path, stage.cached, size))
    })?;

    let image_key = KeyBuilder::new("root-image", Some(&harden_key)).finish();
    let image_dir = timer.run("root-image", || {
        let stage = cache.stage(
            "root-image",
            &image_key,
            |_| true,
            |dir| root_image::build(&hardened_tree()?, epoch, &image_key, dir).map(|_| ()),
        )?;
        let size = file_size(&stage.path.join("root.erofs"));
        Ok((stage.path, stage.cached, size))
    })?;
    let root_hash = fs::read_to_string(image_dir.join("roothash"))
        .context("reading the root hash")?
        .trim()
        .to_owned();

    let cmdline = kernel_cmdline(&root_hash, &guest.extra_cmdline);
    let uki_key = KeyBuilder::new("uki", Some(&image_key))
        .text("initrd", &initrd_key)
        .text("cmdline", &cmdline)
        .finish();
    let uki_dir = timer.run("uki", || {
        let stage = cache.stage(
            "uki",
            &uki_key,
            |_| true,
            |dir| {
                let read = |name: &str| {
                    fs::read(rootfs_dir.join(name)).with_context(|| format!("reading {name}"))
                };
                let osrel = fs::read(harden_dir.join("os-release"))
                    .context("reading the guest's os-release")?;
                let image = uki::build(
                    &read("stub.efi")?,
                    &uki::UkiParts {
                        osrel: &osrel,
                        cmdline: cmdline.as_bytes(),
                        uname: rootfs_out.kernel_version.as_bytes(),
                        initrd: &fs::read(initrd_dir.join("initrd.img"))
                            .context("reading initrd.img")?,
                        linux: &read("vmlinuz")?,
                    },
                )?;
                fs::write(dir.join("uki.efi"), image).context("writing uki.efi")
            },
        )?;
        let size = file_size(&stage.path.join("uki.efi"));
        Ok((stage.path, stage.cached, size))
    })?;

    let disk_key = KeyBuilder::new("disk", Some(&uki_key)).finish();
    let disk_dir = timer.run("disk", || {
        let stage = cache.stage(
            "disk",
            &disk_key,
            |_| true,
            |dir| {
                disk::build_raw(
                    &root_hash,
                    &uki_dir.join("uki.efi"),
                    &image_dir.join("root.erofs"),
                    &image_dir.join("root.verity"),
                    epoch,
                    dir,
                )
                .map(|_| ())
            },
        )?;
        let size = file_size(&stage.path.join("disk.raw"));
        Ok((stage.path, stage.cached, size))
    })?;

    let qcow2_key = KeyBuilder::new("qcow2", Some(&disk_key)).finish();
    let qcow2_dir = timer.run("qcow2", || {
        let stage = cache.stage(
            "qcow2",
            &qcow2_key,
            |_| true,
            |dir| disk::to_qcow2(&disk_dir.join("disk.raw"), &dir.join("disk.qcow2")),
        )?;
        let size = file_size(&stage.path.join("disk.qcow2"));
        Ok((stage.path, stage.cached, size))
    })?;

    let mut audit_key = KeyBuilder::new("audit", Some(&qcow2_key))
        .text("forbidden", harden::FORBIDDEN_PATHS)
        .text("required", harden::REQUIRED_PATHS);
    if gpu_profile {
        audit_key = audit_key
            .text("gpu-forbidden", gpu::FORBIDDEN_PATHS)
            .text("gpu-modules", "present, signed, vermagic");
    }
    let audit_key = audit_key.finish();
    timer.run("audit", || {
        let stage = cache.stage(
            "audit",
            &audit_key,
            |_| true,
            |dir| {
                let problems = audit_qcow2_for(
                    &qcow2_dir.join("disk.qcow2"),
                    dir,
                    profile,
                    &rootfs_out.kernel_version,
                )?;
                harden::check_audit(&problems, "the root filesystem in disk.qcow2")
            },
        )?;
        Ok(((), stage.cached, None))
    })?;

    // The output, built next to its final place and renamed in when complete.
    let parent = options
        .out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    fs::create_dir_all(parent).with_context(|| {
        format!(
            "creating {} (is the output directory writable? choose another with --out)",
            parent.display()
        )
    })?;
    cache::sweep_stale(parent)?;
    let name = options
        .out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| model.model.deployment.name.clone());
    let staged = parent.join(format!(".{name}.tmp-{}", std::process::id()));
    cache::remove_tree(&staged)?;
    fs::create_dir_all(&staged).with_context(|| {
        format!(
            "creating {} (is the output directory writable? choose another with --out)",
            staged.display()
        )
    })?;
    let result = (|| -> Result<()> {
        for (from, name) in [
            (uki_dir.join("uki.efi"), "uki.efi"),
            (qcow2_dir.join("disk.qcow2"), "disk.qcow2"),
            (rootfs_dir.join("firmware.fd"), "firmware.fd"),
            (rootfs_dir.join("packages.lock"), "packages.lock"),
        ] {
            fs::copy(&from, staged.join(name))
                .with_context(|| format!("copying {name} into the output"))?;
        }
        // DESIGN.md §4: measure, then render, from the same model values, over the finished
        // artifacts; the manifest comes last and records them all.
        let measurements = timer.run("measure", || {
            let measurements = crate::measure::measure_artifacts(&model.model, &staged)?;
            crate::measure::write_measurements(&staged, &measurements)?;
            Ok((serde_json::to_value(&measurements)?, false, None))
        })?;
        timer.run("render", || {
            crate::launch::render(model, &staged, &staged)?;
            Ok(((), false, None))
        })?;
        timer.run("manifest", || {
            let manifest = manifest::Manifest::collect(&manifest::ManifestInputs {
                model,
                out: &staged,
                lock: &rootfs_out.lock,
                root_hash: &root_hash,
                kernel: &rootfs_out.kernel_version,
                cmdline: &cmdline,
                tools: &tools,
                measurements: Some(measurements),
            })?;
            let text = serde_json::to_string_pretty(&manifest)? + "\n";
            fs::write(staged.join("manifest.json"), &text).context("writing manifest.json")?;
            Ok(((), false, Some(text.len() as u64)))
        })?;
        cache::replace_dir(&staged, &options.out)
    })();
    if let Err(err) = result {
        let _ = cache::remove_tree(&staged);
        return Err(err);
    }
    Ok(BuildReport {
        out: options.out,
        stages: timer.stages,
        root_hash,
        seconds: started.elapsed().as_secs_f64(),
        rootfs_dir,
    })
}

fn update_lock(
    options: &BuildOptions,
    existing: Option<&PackagesLock>,
    resolved: &PackagesLock,
) -> Result<()> {
    match existing {
        Some(lock) if lock.diff(resolved).is_empty() => Ok(()),
        Some(lock) if options.locked => {
            let diff = lock.diff(resolved);
            Err(cvm_core::error::bad_input(format!(
                "{} would change with --locked ({} difference(s), e.g. {}); the archive no longer \
                 serves the locked versions: run `cargo xtask guest lock` and commit the new lock",
                options.lock_path.display(),
                diff.len(),
                diff.iter().take(4).cloned().collect::<Vec<_>>().join(", ")
            )))
        }
        None if options.locked => Err(cvm_core::error::bad_input(format!(
            "{} does not exist and --locked forbids writing it: run `cargo xtask guest lock` first",
            options.lock_path.display()
        ))),
        _ => {
            if let Some(parent) = options.lock_path.parent() {
                fs::create_dir_all(parent)
                    .with_context(|| format!("creating {}", parent.display()))?;
            }
            match existing {
                Some(lock) => progress(
                    "Updating",
                    &format!(
                        "{} ({} package change(s): the archive no longer serves some locked versions)",
                        options.lock_path.display(),
                        lock.diff(resolved).len()
                    ),
                ),
                None => progress("Writing", &options.lock_path.display().to_string()),
            }
            fs::write(&options.lock_path, resolved.to_text())
                .with_context(|| format!("writing {}", options.lock_path.display()))
        }
    }
}

/// Reads the erofs root partition of `qcow2` back out (into `work/root.erofs`; only that
/// partition is written, not the whole raw disk) and extracts it with
/// fsck.erofs into `work/extracted`; returns (the tree, the erofs file). The caller removes both.
pub fn extract_root(qcow2: &Path, work: &Path) -> Result<(PathBuf, PathBuf)> {
    let erofs = work.join("root.erofs");
    disk::extract_partition_qcow2(qcow2, disk::ROOT_PARTITION, &erofs, work)?;
    let tree = work.join("extracted");
    Cmd::new("fsck.erofs")
        .arg(format!("--extract={}", tree.display()))
        // Permissions without owners: fsck.erofs chowns after chmod when it preserves owners,
        // and chown clears the setuid/setgid bits the audit looks for.
        .args(["--preserve-perms", "--no-preserve-owner"])
        .arg(&erofs)
        .run()
        .context("extracting the erofs root for the audit")?;
    Ok((tree, erofs))
}

/// Reads the erofs root of a base image back out of `qcow2` (into `work`), extracts it with
/// fsck.erofs and audits the extracted tree; returns the problems found.
pub fn audit_qcow2(qcow2: &Path, work: &Path) -> Result<Vec<String>> {
    audit_qcow2_for(qcow2, work, cvm_core::model::Profile::Base, "")
}

/// [`audit_qcow2`] for `profile`; the gpu profile's NVIDIA modules must be present, signed and
/// built for `kernel_release`.
pub fn audit_qcow2_for(
    qcow2: &Path,
    work: &Path,
    profile: cvm_core::model::Profile,
    kernel_release: &str,
) -> Result<Vec<String>> {
    let (tree, erofs) = extract_root(qcow2, work)?;
    let mut problems = harden::audit_tree_for(&tree, profile)?;
    if profile == cvm_core::model::Profile::Gpu {
        problems.extend(gpu::audit_modules(&tree, kernel_release)?);
    }
    fs::remove_dir_all(&tree)?;
    fs::remove_file(&erofs)?;
    Ok(problems)
}

/// The lock path for a model: next to the model file, or for the embedded default model at
/// `target/cvm/<name>.packages.lock` (it survives rebuilds of the output directory).
pub fn default_lock_path(model: &LoadedModel, target: &Path) -> PathBuf {
    match &model.path {
        Some(path) => path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .join("packages.lock"),
        None => target
            .join("cvm")
            .join(format!("{}.packages.lock", model.model.deployment.name)),
    }
}

/// Checks that a directory holds a built image.
pub fn require_artifacts(dir: &Path) -> Result<()> {
    for name in ["uki.efi", "disk.qcow2", "firmware.fd", "manifest.json"] {
        if !dir.join(name).is_file() {
            bail!(
                "{} has no {name}: build the image first with `cargo xtask guest build`",
                dir.display()
            );
        }
    }
    Ok(())
}

/// The Rust target the guest binaries are built for (statically linked with glibc: no musl
/// target can be installed here).
pub const GUEST_BINARY_TARGET: &str = "x86_64-unknown-linux-gnu";

/// The statically linked binaries of this workspace that go into the guest.
#[derive(Debug, Clone)]
pub struct GuestBinaries {
    /// `cvm-status`, the readiness unit's binary.
    pub status: PathBuf,
    /// `cvm-init`, the initrd's `/init`.
    pub init: PathBuf,
}

/// Builds the static guest binaries of this workspace (`cvm-status`, `cvm-init`) with cargo and
/// returns their paths. They have their own target directory (`target/cvm-status`) so that they
/// can be built while another cargo (a running `cargo test`) holds the lock of the main one.
/// `offline` (the build's `--offline`) forbids cargo the network; otherwise cargo fetches what
/// building the caller did not (the binaries' target and feature set can need crates the caller's
/// build did not download).
pub fn build_guest_binaries(workspace: &Path, offline: bool) -> Result<GuestBinaries> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let target_dir = workspace.join("target/cvm-status");
    Cmd::new(cargo)
        .current_dir(workspace)
        .args([
            "build",
            "--quiet",
            "--release",
            "--locked",
            "-p",
            "guest-image",
        ])
        .args(offline.then_some("--offline"))
        .args(["--bin", "cvm-status", "--bin", "cvm-init"])
        .args(["--target", GUEST_BINARY_TARGET])
        .env("CARGO_TARGET_DIR", &target_dir)
        .env(
            "RUSTFLAGS",
            "-C target-feature=+crt-static -C strip=symbols",
        )
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .run()
        .context("building the static guest binaries (cvm-status, cvm-init)")?;
    let release = target_dir.join(GUEST_BINARY_TARGET).join("release");
    Ok(GuestBinaries {
        status: release.join("cvm-status"),
        init: release.join("cvm-init"),
    })
}

/// Prints the final table of stages, times and sizes on stderr.
pub fn print_report(report: &BuildReport) {
    eprintln!(
        "{:<12} {:>9} {:>8} {:>10}",
        "stage", "seconds", "cached", "size MB"
    );
    for stage in &report.stages {
        eprintln!(
            "{:<12} {:>9.1} {:>8} {:>10}",
            stage.name,
            stage.seconds,
            if stage.cached { "yes" } else { "no" },
            stage
                .bytes
                .map(|b| format!("{:.1}", b as f64 / 1e6))
                .unwrap_or_default()
        );
    }
    eprintln!("{:<12} {:>9.1}", "total", report.seconds);
    if let Ok(entries) = fs::read_dir(&report.out) {
        let mut files: Vec<_> = entries.filter_map(|e| e.ok()).collect();
        files.sort_by_key(|e| e.file_name());
        for entry in files {
            if let Ok(meta) = entry.metadata() {
                eprintln!(
                    "{:>12} {} ({:.1} MB)",
                    "Artifact",
                    entry.path().display(),
                    meta.len() as f64 / 1e6
                );
            }
        }
    }
}

/// What `guest inspect` shows about a built image.
#[derive(Debug, serde::Serialize)]
pub struct Inspection {
    /// The manifest.
    pub manifest: manifest::Manifest,
    /// The UKI's PE sections: name and size.
    pub uki_sections: Vec<(String, u32)>,
    /// The kernel command line read from the UKI's `.cmdline`.
    pub uki_cmdline: String,
}

/// Reads a built image's manifest and UKI.
pub fn inspect(dir: &Path) -> Result<Inspection> {
    let path = dir.join("manifest.json");
    let text = fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let manifest: manifest::Manifest = serde_json::from_str(&text).map_err(|err| {
        cvm_core::error::bad_input(format!(
            "{}: not a manifest ({err}); rebuild the image",
            path.display()
        ))
    })?;
    let uki_path = dir.join("uki.efi");
    let uki = fs::read(&uki_path).with_context(|| format!("reading {}", uki_path.display()))?;
    let uki_sections = uki::sections(&uki)?
        .into_iter()
        .map(|s| (s.name, s.virtual_size))
        .collect();
    let uki_cmdline = uki::section_data(&uki, ".cmdline")?
        .map(|b| String::from_utf8_lossy(b).into_owned())
        .unwrap_or_default();
    Ok(Inspection {
        manifest,
        uki_sections,
        uki_cmdline,
    })
}

/// The human-readable form of an [`Inspection`].
pub fn inspection_text(inspection: &Inspection) -> String {
    let m = &inspection.manifest;
    let mut lines = vec![
        format!("name        {}", m.name),
        format!("tee         {}", m.tee),
        format!("kernel      {}", m.kernel),
        format!("roothash    {}", m.roothash),
        format!("packages    {}", m.packages.len()),
        format!("cmdline     {}", inspection.uki_cmdline),
    ];
    for (name, artifact) in &m.artifacts {
        lines.push(format!(
            "artifact    {name:<14} {:>11} {}",
            artifact.size, artifact.sha256
        ));
    }
    for (name, size) in &inspection.uki_sections {
        lines.push(format!("uki section {name:<14} {size:>11}"));
    }
    lines.join("\n")
}
