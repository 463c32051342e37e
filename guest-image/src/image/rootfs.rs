//! The `rootfs` stage: mmdebstrap builds the guest tree and downloads the build-side packages
//! (firmware, UKI stub); the installed closure is then locked against the signed indexes apt
//! verified. The initrd is a stage of its own (initrd.rs), made from this tree's kernel modules.

use std::{
    fs,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
};

use anyhow::{bail, Context, Result};
use cvm_core::{
    cmd::Cmd,
    model::{KernelFlavour, Model},
};

use super::lock::{self, PackagesLock};

/// Packages every guest gets besides the kernel and the model's own.
pub const BASE_PACKAGES: &[&str] = &[
    "systemd",
    "systemd-sysv",
    "udev",
    "kmod",
    "ca-certificates",
    // Loads the guest firewall (egress.rs).
    "nftables",
];

/// The prefix of the package with the kernel's extra modules (the TEE guest drivers among them);
/// the kernel release completes the name.
pub const EXTRA_MODULES: &str = "linux-modules-extra-";

use super::distro::Distro;
pub use super::distro::{FIRMWARE_IN_PACKAGE, STUB_IN_PACKAGE, UBUNTU_KEYRING};

/// A guest file from templates/guest/: its path in the guest, its contents and mode.
pub struct GuestFile {
    /// Path in the guest, relative.
    pub path: &'static str,
    /// Contents.
    pub contents: &'static str,
    /// Unix mode.
    pub mode: u32,
}

/// The files we add to the guest, embedded from templates/guest/.
pub const GUEST_FILES: &[GuestFile] = &[
    GuestFile {
        path: "etc/systemd/system/emergency.service.d/cvm-no-shell.conf",
        contents: include_str!("../../../templates/guest/systemd/cvm-no-shell.conf"),
        mode: 0o644,
    },
    GuestFile {
        path: "etc/systemd/system/rescue.service.d/cvm-no-shell.conf",
        contents: include_str!("../../../templates/guest/systemd/cvm-no-shell.conf"),
        mode: 0o644,
    },
];

/// Modules the initrd needs to open the dm-verity root (see [`super::initrd`]).
pub use super::initrd::BOOT_MODULES;
/// The TEE guest drivers that give the guest its attestation reports. A kernel without them still
/// boots (the emulated boot tests need neither), so their absence is reported, not fatal.
pub const TEE_MODULES: &[&str] = &["sev-guest", "tdx-guest"];

/// The modules of `wanted` that the kernel whose module tree is `modules` has neither as a
/// module file (`NAME.ko`, `.ko.zst`, `.ko.xz`, …) nor built in. `-` and `_` are the same to
/// modprobe, so they are to this check.
pub fn missing_modules(modules: &Path, wanted: &[&str]) -> Result<Vec<String>> {
    let norm = |name: &str| name.replace('-', "_");
    let mut have = std::collections::BTreeSet::new();
    let builtin = fs::read_to_string(modules.join("modules.builtin"))
        .with_context(|| format!("reading {}/modules.builtin", modules.display()))?;
    let files = walkdir::WalkDir::new(modules.join("kernel"))
        .into_iter()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned());
    for name in builtin
        .lines()
        .filter_map(|line| line.rsplit('/').next().map(str::to_owned))
        .chain(files)
    {
        if let Some((stem, _)) = name.split_once(".ko") {
            have.insert(norm(stem));
        }
    }
    Ok(wanted
        .iter()
        .filter(|name| !have.contains(&norm(name)))
        .map(|name| name.to_string())
        .collect())
}

/// Where the readiness binary goes in the guest.
pub const CVM_STATUS_IN_GUEST: &str = "usr/lib/cvm/cvm-status";

/// True when `suite` is an Ubuntu release (judged by the host's distro-info data, falling back to
/// the releases this project knows).
pub fn is_ubuntu_suite(suite: &str) -> bool {
    let known = ["jammy", "noble", "oracular", "plucky", "questing"];
    if known.contains(&suite) {
        return true;
    }
    fs::read_to_string("/usr/share/distro-info/ubuntu.csv")
        .map(|csv| {
            csv.lines()
                .any(|line| line.split(',').nth(2) == Some(suite))
        })
        .unwrap_or(false)
}

/// The apt sources given to mmdebstrap: none (mmdebstrap's own default for the suite, which adds
/// the -updates and -security pockets) unless the model names a mirror.
pub fn mirror_lines(model: &Model, components: &str) -> Vec<String> {
    source_lines(
        &model.guest.suite,
        model.guest.mirror.as_deref(),
        components,
    )
}

/// The apt sources for `suite` at `mirror` (none for mmdebstrap's default), as [`mirror_lines`].
pub fn source_lines(suite: &str, mirror: Option<&str>, components: &str) -> Vec<String> {
    match mirror {
        None => Vec::new(),
        Some(mirror) => ["", "-updates", "-security"]
            .iter()
            .map(|pocket| format!("deb {mirror} {suite}{pocket} {components}"))
            .collect(),
    }
}

/// Writes the overlay copied into the guest by the customize hook.
fn write_overlay(overlay: &Path) -> Result<()> {
    for file in GUEST_FILES {
        let path = overlay.join(file.path);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
        }
        fs::write(&path, file.contents).with_context(|| format!("writing {}", path.display()))?;
        fs::set_permissions(&path, fs::Permissions::from_mode(file.mode))
            .with_context(|| format!("setting the mode of {}", path.display()))?;
    }
    Ok(())
}

/// The readiness unit (DESIGN.md §5).
pub const CVM_STATUS_UNIT: &str =
    include_str!("../../../templates/guest/systemd/cvm-status.service");

/// Installs the readiness binary and its unit, enabled, into the guest tree at `root`. The harden
/// stage does it, so a changed binary rebuilds from there on, never the root tree.
pub fn install_cvm_status(root: &Path, cvm_status: &Path) -> Result<()> {
    let binary = fs::read(cvm_status)
        .with_context(|| format!("reading {} for the guest", cvm_status.display()))?;
    super::overlay::write(
        &[
            super::overlay::OverlayFile {
                path: CVM_STATUS_IN_GUEST.to_owned(),
                contents: binary,
                mode: 0o755,
            },
            super::overlay::OverlayFile {
                path: "etc/systemd/system/cvm-status.service".to_owned(),
                contents: CVM_STATUS_UNIT.as_bytes().to_vec(),
                mode: 0o644,
            },
        ],
        root,
    )?;
    super::overlay::link(
        root,
        "../cvm-status.service",
        "etc/systemd/system/multi-user.target.wants/cvm-status.service",
    )
}

/// What the rootfs stage leaves in its directory.
pub struct RootfsOutput {
    /// The guest tree (before hardening), kept as a tar file ([`super::scratch`]).
    pub tree_tar: PathBuf,
    /// The kernel release.
    pub kernel_version: String,
    /// The resolved lock.
    pub lock: PackagesLock,
}

/// Inputs of the rootfs stage besides the model.
pub struct RootfsInputs<'a> {
    /// The lock to pin to, when one exists.
    pub lock: Option<&'a PackagesLock>,
    /// Downloaded .deb files, shared by all builds.
    pub deb_cache: &'a Path,
    /// `--offline`: a local repository made from the lock and the package cache (see
    /// [`super::local_repo`]) replaces the archive.
    pub offline_repo: Option<&'a Path>,
    /// The distribution to take the packages from ([`Distro::Ubuntu`] for every product build).
    pub distro: &'a Distro,
    /// Files the model adds ([`super::overlay`]): the profile's, vendor artifacts, RIM store.
    pub extra_files: &'a [super::overlay::OverlayFile],
}

/// The chroot's package cache and package index directories, relative to its root.
pub const CHROOT_ARCHIVES: &str = "var/cache/apt/archives";
pub const CHROOT_LISTS: &str = "var/lib/apt/lists";

/// The mmdebstrap hooks that put the host directory `cache` at `inside` (relative to the
/// chroot) for the whole build: a bind mount in the setup phase, unmounted by the last customize
/// hook, before mmdebstrap's cleanup empties the package cache. apt then downloads into the
/// cache and updates the kept indexes in place, and nothing is copied in or out (the build tree
/// is on tmpfs, the cache on disk: there are no hard links across them). mmdebstrap runs in a
/// private mount namespace (`unshare --mount`), so the mount never shows on the host and goes
/// with the namespace however the build ends.
pub fn bind_cache_hooks(cache: &Path, inside: &str) -> [String; 2] {
    let cache = cvm_core::cmd::shell_quote(&cache.to_string_lossy());
    [
        format!(
            "--setup-hook=mkdir -p {cache} \"$1/{inside}\" && mount --bind {cache} \"$1/{inside}\""
        ),
        format!("--customize-hook=umount \"$1/{inside}\""),
    ]
}

/// PATH for mmdebstrap and its hooks: the system's directories first. mmdebstrap runs helpers
/// such as `#!/usr/bin/env python3` mmtarfilter once per essential package; a version manager's
/// shims early in a user's PATH (pyenv's: 0.12 s per start here, against 0.014 s) must not stand
/// in for the system's interpreter.
pub fn system_first_path(path: Option<&str>) -> String {
    const SYSTEM: &str = "/usr/sbin:/usr/bin:/sbin:/bin";
    match path {
        Some(path) if !path.is_empty() => format!("{SYSTEM}:{path}"),
        _ => SYSTEM.to_owned(),
    }
}

/// The rootfs stage's index of the build-side packages, in `stage`.
fn build_list_path(stage: &Path) -> PathBuf {
    stage.join("build-packages.txt")
}

/// Where apt's package indexes are kept between builds, beside the package cache: `apt-get
/// update` then fetches only what changed (it checks every kept index against the signed
/// InRelease). An offline build's indexes come from its local repository and are not kept.
fn lists_cache_path(inputs: &RootfsInputs<'_>) -> Option<PathBuf> {
    let mut lists = inputs.deb_cache.as_os_str().to_owned();
    lists.push("-lists");
    inputs.offline_repo.is_none().then(|| PathBuf::from(lists))
}

/// The mmdebstrap command of the rootfs stage (it reads `stage`'s early/ and overlay/ and writes
/// the guest into `tree`). Its text with placeholder paths is part of the stage key, so a
/// changed option or hook rebuilds the root.
pub fn mmdebstrap_command(
    model: &Model,
    inputs: &RootfsInputs<'_>,
    stage: &Path,
    tree: &Path,
) -> Cmd {
    let distro = inputs.distro;
    let suite = distro.suite(model);
    let gpu = model.guest.profile == cvm_core::model::Profile::Gpu;
    // The gpu profile's signed NVIDIA modules and driver live in Ubuntu's restricted component.
    let components = match (distro, gpu) {
        (Distro::Ubuntu, true) => "main,restricted,universe",
        _ => distro.components(model),
    };
    let build_packages: Vec<&str> = distro.build_files().iter().map(|f| f.0).collect();
    let early = stage.join("early");
    let overlay = stage.join("overlay");
    let mut include: Vec<String> = BASE_PACKAGES.iter().map(|s| s.to_string()).collect();
    include.extend(distro.extra_packages().iter().map(|s| s.to_string()));
    let kernel = distro.kernel(model);
    let flavour = cvm_core::model::kernel_track(kernel).map(|(flavour, _)| flavour);
    let nvidia_flavour = flavour == Some(KernelFlavour::Nvidia);
    if !nvidia_flavour {
        include.push(kernel.to_owned());
    }
    include.extend(model.guest.packages.iter().cloned());
    let build_list = build_list_path(stage);
    let lists_cache = lists_cache_path(inputs);
    let q = |path: &Path| cvm_core::cmd::shell_quote(&path.to_string_lossy());
    let archives_hooks = bind_cache_hooks(inputs.deb_cache, CHROOT_ARCHIVES);
    let lists_hooks = lists_cache
        .as_deref()
        .map(|lists| bind_cache_hooks(lists, CHROOT_LISTS));
    // mmdebstrap runs in a private mount namespace, so the /proc, /sys and /dev mounts of its
    // chroot are never visible on the host and vanish with it; setpriv --pdeathsig makes it stop
    // (SIGTERM) when this build is killed, even with SIGKILL, instead of running on as an orphan.
    let mut command = Cmd::new("unshare")
        .args(["--mount", "--propagation", "private"])
        .args(["setpriv", "--pdeathsig", "TERM", "mmdebstrap"])
        .args(["--mode=root", "--variant=apt"])
        .arg(format!("--components={components}"))
        .arg(format!("--include={}", include.join(",")))
        .args([
            "--dpkgopt=path-exclude=/usr/share/man/*",
            "--dpkgopt=path-exclude=/usr/share/doc/*",
            "--dpkgopt=path-exclude=/usr/share/locale/*",
            "--dpkgopt=path-exclude=/usr/share/info/*",
            "--skip=cleanup/apt/lists",
            "--skip=essential/unlink",
        ])
        .arg(format!("--setup-hook=cp -a {}/. \"$1\"/", q(&early)))
        // The package cache (and, online, apt's indexes) mounted in; unmounted by the last hook.
        .arg(&archives_hooks[0])
        .args(lists_hooks.as_ref().map(|hooks| &hooks[0]))
        .arg(format!("--customize-hook=cp -a {}/. \"$1\"/", q(&overlay)))
        .arg(format!(
            "--customize-hook=APT_CONFIG=\"$MMDEBSTRAP_APT_CONFIG\" apt-get install --download-only -y {}",
            build_packages.join(" ")
        ))
        .arg(format!(
            "--customize-hook=APT_CONFIG=\"$MMDEBSTRAP_APT_CONFIG\" apt-cache show --no-all-versions {} > {}",
            build_packages.join(" "),
            q(&build_list)
        ))
        .args(nvidia_flavour.then(|| {
            format!(
                "--customize-hook={}",
                kernel_image_hook(kernel, inputs.lock.and_then(PackagesLock::kernel_image))
            )
        }))
        // Ubuntu ships the TEE guest drivers (sev-guest, tdx-guest, tsm_report) in the kernel's
        // linux-modules-extra package, which the versioned kernel meta package does not pull in;
        // its name carries the kernel release the meta package resolved to. The host's apt (which
        // reaches the mirror, or the offline repository) only downloads it into the guest's
        // archive cache — with mmdebstrap's configuration it would install onto the host — and
        // the guest's own apt installs it from there. Harden prunes it to keep-modules.txt.
        // (Installing it with the other packages when the lock names it was measured: no faster.)
        .args((matches!(distro, Distro::Ubuntu) && !nvidia_flavour).then(|| {
            [
                format!("--customize-hook=APT_CONFIG=\"$MMDEBSTRAP_APT_CONFIG\" apt-get install --download-only -y \"{EXTRA_MODULES}$(ls \"$1/usr/lib/modules\")\""),
                format!("--customize-hook=chroot \"$1\" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-download --no-install-recommends \"{EXTRA_MODULES}$(ls \"$1/usr/lib/modules\")\""),
            ]
        }).into_iter().flatten())
        .args(gpu.then(|| {
            format!(
                "--customize-hook={}",
                super::gpu::install_hook(&model.guest.gpu.driver)
            )
        }))
        .arg(&archives_hooks[1])
        .args(lists_hooks.as_ref().map(|hooks| &hooks[1]))
        .env(
            "PATH",
            system_first_path(std::env::var("PATH").ok().as_deref()),
        )
        .env(
            "SOURCE_DATE_EPOCH",
            model.guest.source_date_epoch.to_string(),
        )
        // The initrd is our own (initrd.rs). Should a model's packages bring initramfs-tools in,
        // its kernel hook (/etc/kernel/postinst.d/initramfs-tools) skips generating one when
        // INITRD is No.
        .env("INITRD", "No");
    if let Some(keyring) = distro.keyring(model) {
        command = command.arg(format!("--keyring={keyring}"));
    }
    let sources = match inputs.offline_repo {
        Some(repo) => vec![super::local_repo::source_line(repo, true)],
        None => source_lines(suite, distro.mirror(model), &components.replace(',', " ")),
    };
    command.arg(suite).arg(tree).args(sources)
}

/// Runs mmdebstrap into `tree` (a scratch directory) and writes `stage/{vmlinuz,kernel-version,
/// packages.lock,firmware.fd,stub.efi}`; the caller keeps the tree.
pub fn build(model: &Model, inputs: &RootfsInputs<'_>, stage: &Path, tree: &Path) -> Result<()> {
    let distro = inputs.distro;
    let suite = distro.suite(model);
    let gpu = model.guest.profile == cvm_core::model::Profile::Gpu;
    distro.check_firmware()?;
    let early = stage.join("early");
    let overlay = stage.join("overlay");
    fs::create_dir_all(early.join("etc/apt/preferences.d"))?;
    fs::create_dir_all(early.join(CHROOT_ARCHIVES))?;
    if let Some(lock) = inputs.lock {
        fs::write(
            early.join("etc/apt/preferences.d/cvm-lock.pref"),
            lock.apt_preferences(),
        )?;
    }
    write_overlay(&overlay)?;
    super::overlay::write(inputs.extra_files, &overlay)?;
    fs::create_dir_all(inputs.deb_cache)?;
    let command = mmdebstrap_command(model, inputs, stage, tree);
    let build_list = build_list_path(stage);
    let lists_cache = lists_cache_path(inputs);
    let mut result = command.run();
    if let Err(err) = &result {
        // A fetch or hook pipe can fail once for reasons outside the build (a mirror hiccup;
        // mmdebstrap's own sync-out, which this build no longer uses, was once killed by SIGPIPE
        // under heavy load). Retry once, loudly; a signature or disk-space failure is final.
        let text = format!("{err:#}");
        if !is_final_failure(&text) {
            let tail: String = text
                .chars()
                .rev()
                .take(300)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            eprintln!("     Warning mmdebstrap failed (…{tail}); retrying once");
            super::cache::remove_tree(tree)?;
            result = command.run();
        }
    }
    result.map_err(|err| {
        let text = format!("{err:#}");
        match gpu
            .then(|| super::gpu::explain_unmet(&text, &model.guest.gpu.driver))
            .flatten()
        {
            Some(why) => err.context(why),
            None => explain_mmdebstrap(err, suite, distro.keyring(model)),
        }
    })?;

    let modules = tree.join("usr/lib/modules");
    let mut versions: Vec<String> = fs::read_dir(&modules)
        .with_context(|| format!("reading {}", modules.display()))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        // A kernel is a module tree with its image in /boot (maintainer scripts of add-on
        // module packages can leave other directories there).
        .filter(|version| tree.join(format!("boot/vmlinuz-{version}")).exists())
        .collect();
    versions.sort();
    let [kernel_version] = versions.as_slice() else {
        bail!(
            "expected exactly one kernel in the guest, found {:?} in {}",
            versions,
            modules.display()
        );
    };
    fs::copy(
        tree.join(format!("boot/vmlinuz-{kernel_version}")),
        stage.join("vmlinuz"),
    )
    .context("copying the kernel out of the guest tree")?;
    fs::write(stage.join("kernel-version"), kernel_version)?;
    let module_tree = modules.join(kernel_version);
    let missing = missing_modules(&module_tree, BOOT_MODULES)?;
    if !missing.is_empty() {
        bail!(
            "the kernel {kernel_version} ({}) has no {} module, which the initrd needs to open \
             the dm-verity root; choose a kernel package that has it",
            distro.kernel(model),
            missing.join(", ")
        );
    }
    let missing = missing_modules(&module_tree, TEE_MODULES)?;
    if !missing.is_empty() {
        eprintln!(
            "{:>12} the kernel {kernel_version} ({}) ships no {} module: the guest boots, but \
             cannot fetch attestation reports through that driver",
            "Warning",
            distro.kernel(model),
            missing.join(", ")
        );
    }

    let status = fs::read_to_string(tree.join("var/lib/dpkg/status"))
        .context("reading the guest's dpkg status")?;
    let installed = lock::parse_dpkg_status(&status);
    let build_index = fs::read_to_string(&build_list)
        .with_context(|| format!("reading {}", build_list.display()))?;
    let build: Vec<(String, String, String)> = lock::parse_packages_index(&build_index)
        .into_iter()
        .map(|e| (e.name, e.version, e.arch))
        .collect();
    let resolved = match (inputs.offline_repo, inputs.lock) {
        (Some(_), Some(wanted)) => offline_lock(wanted, &installed)?,
        _ => {
            // The indexes apt used: in the kept lists (mounted in during the build), or, offline,
            // in the tree.
            let lists = lists_cache.unwrap_or_else(|| tree.join(CHROOT_LISTS));
            let indexes = lock::read_indexes(&lists, suite)?;
            lock::resolve(suite, &installed, &build, &indexes)?
        }
    };
    fs::write(stage.join("packages.lock"), resolved.to_text())?;
    // An offline build's indexes (from its local repository) are in the tree; they served the
    // lock, and the guest never reads them (harden removes /var/lib/apt). Online, the kept lists
    // were mounted over this directory and it is empty.
    let lists = tree.join(CHROOT_LISTS);
    if lists.exists() {
        fs::remove_dir_all(&lists).with_context(|| format!("removing {}", lists.display()))?;
    }

    let unpack = stage.join("unpacked");
    if let Some((firmware, _)) = distro.firmware_file() {
        fs::copy(firmware, stage.join("firmware.fd"))
            .with_context(|| format!("copying the firmware {}", firmware.display()))?;
    }
    for &(package, inside, out) in distro.build_files() {
        let locked = resolved
            .find(package)
            .with_context(|| format!("{package} is missing from the resolved lock"))?;
        let deb = inputs.deb_cache.join(lock::deb_file_name(locked));
        let (sha256, _) = cvm_core::hash::sha256_file(&deb)?;
        if sha256 != locked.sha256 {
            bail!(
                "{} has sha256 {sha256}, but the signed index says {}; delete it and build again",
                deb.display(),
                locked.sha256
            );
        }
        let dir = unpack.join(package);
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Cmd::new("dpkg-deb")
            .arg("-x")
            .arg(&deb)
            .arg(&dir)
            .run()
            .with_context(|| format!("unpacking {}", deb.display()))?;
        fs::copy(dir.join(inside), stage.join(out))
            .with_context(|| format!("taking {inside} from {package}"))?;
    }
    fs::remove_dir_all(&unpack)?;
    fs::remove_dir_all(&early)?;
    fs::remove_dir_all(&overlay)?;
    Ok(())
}

/// The mmdebstrap customize hook that installs the kernel image a track meta package resolves
/// to, without the meta package itself: `linux-image-nvidia-X.Y` depends on the whole
/// linux-firmware set (hundreds of MB of firmware for hardware a guest never has) besides
/// `linux-image-<release>`, which is all the guest needs (it pulls `linux-modules-<release>`).
/// Downloaded by the host's apt with mmdebstrap's configuration, installed by the guest's apt
/// from the archive cache, as the other hooks do.
///
/// With a lock that already holds the kernel image (`pinned`), that image is installed and the
/// meta package is not consulted: it is not in the lock, so an offline build's repository has no
/// such package, and a locked build must not follow the track to a newer release.
pub fn kernel_image_hook(meta: &str, pinned: Option<&str>) -> String {
    let apt = "APT_CONFIG=\"$MMDEBSTRAP_APT_CONFIG\"";
    let resolve = match pinned {
        Some(image) => format!("image={image}"),
        None => format!(
            "image=$({apt} apt-cache show --no-all-versions {meta} | sed -n 's/^Depends: //p' | tr ',' '\\n' | sed -n 's/^ *\\(linux-image-[0-9][^ ]*\\).*/\\1/p' | head -n 1)"
        ),
    };
    format!(
        "set -e; {resolve}; \
         if [ -z \"$image\" ]; then echo \"{meta} depends on no linux-image-<release> package\" >&2; exit 1; fi; \
         {apt} apt-get install --download-only -y --no-install-recommends \"$image\" >&2; \
         chroot \"$1\" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-download --no-install-recommends \"$image\" >&2"
    )
}

/// Offline, the installed closure must be exactly the locked one (the local repository holds
/// nothing else); the lock is then the resolved lock.
fn offline_lock(
    wanted: &PackagesLock,
    installed: &[(String, String, String)],
) -> Result<PackagesLock> {
    let locked: Vec<(String, String, String)> = wanted
        .packages
        .iter()
        .map(|p| (p.name.clone(), p.version.clone(), p.arch.clone()))
        .collect();
    let mut sorted = locked.clone();
    sorted.sort();
    if sorted != installed {
        let extra: Vec<_> = installed
            .iter()
            .filter(|p| !sorted.contains(p))
            .map(|p| p.0.clone())
            .collect();
        bail!(
            "--offline: the installed packages differ from packages.lock (not locked: {}); run `cargo xtask guest lock` with network access",
            extra.join(", ")
        );
    }
    Ok(wanted.clone())
}

/// What apt prints when a Release file is unsigned, or signed by a key outside the keyring the
/// build trusts (`NO_PUBKEY`), or has a bad or expired signature.
const SIGNATURE_FAILURES: &[&str] = &[
    "NO_PUBKEY",
    "not signed",
    "BADSIG",
    "EXPKEYSIG",
    "The following signatures were invalid",
];

/// True when mmdebstrap's error `text` says the archive's signature could not be verified.
pub fn is_signature_failure(text: &str) -> bool {
    SIGNATURE_FAILURES
        .iter()
        .any(|needle| text.contains(needle))
}

/// True when a failed mmdebstrap must not be retried: a signature failure or a full disk.
pub fn is_final_failure(text: &str) -> bool {
    is_signature_failure(text)
        || text.contains("No space left")
        // The archive cannot satisfy the package set (the gpu profile's modules and driver).
        || text.contains("unmet dependencies")
}

fn explain_mmdebstrap(err: anyhow::Error, suite: &str, keyring: Option<&str>) -> anyhow::Error {
    let text = format!("{err:#}");
    let signature_hint;
    let hint = if is_signature_failure(&text) {
        signature_hint = format!(
            "the archive's signature could not be verified with {}: install the archive keyring \
             (ubuntu-keyring or debian-archive-keyring) and check that the mirror is the archive \
             it claims to be",
            keyring.unwrap_or("the host's apt keyring")
        );
        signature_hint.as_str()
    } else if text.contains("Could not resolve")
        || text.contains("Failed to fetch")
        || text.contains("Temporary failure")
        || text.contains("Unable to connect")
    {
        "the package mirror is unreachable: check the network, or set [guest] mirror in the model"
    } else if text.contains("No space left") {
        "a file system is full: free space under target/ (the stage cache is target/cvm-cache) \
         and in /dev/shm (where the build works on its trees when it has room)"
    } else {
        "see mmdebstrap's messages above"
    };
    err.context(format!(
        "building the {suite} root filesystem with mmdebstrap failed: {hint}"
    ))
}

/// Reads the rootfs stage's outputs.
pub fn output(stage: &Path) -> Result<RootfsOutput> {
    let lock_path = stage.join("packages.lock");
    let text = fs::read_to_string(&lock_path)
        .with_context(|| format!("reading {}", lock_path.display()))?;
    Ok(RootfsOutput {
        tree_tar: stage.join(super::scratch::TREE_TAR),
        kernel_version: fs::read_to_string(stage.join("kernel-version"))
            .context("reading the kernel version")?,
        lock: PackagesLock::parse(&text, &lock_path)?,
    })
}
