//! The `harden` stage (distroless) and the audit of the finished root filesystem.
//!
//! Every removal is data: the lists under guest-image/data/ (see its README). The stage purges
//! packages with the guest's own dpkg while it still has a shell, deletes the listed paths, masks
//! units, clears setuid/setgid bits, and writes the few files a read-only root needs.

use std::{
    fs,
    os::unix::fs::{symlink, MetadataExt, PermissionsExt},
    path::{Path, PathBuf},
};

use anyhow::{bail, Context, Result};
use cvm_core::{cmd::Cmd, model::Profile};

/// Packages purged with dpkg.
pub const PURGE_PACKAGES: &str = include_str!("../../data/purge-packages.txt");
/// Paths deleted after the purge.
pub const REMOVE_PATHS: &str = include_str!("../../data/remove-paths.txt");
/// Units masked (linked to /dev/null).
pub const MASK_UNITS: &str = include_str!("../../data/mask-units.txt");
/// Paths the audit refuses to find.
pub const FORBIDDEN_PATHS: &str = include_str!("../../data/forbidden-paths.txt");
/// Paths the audit requires in the finished root (the readiness unit, the guest firewall).
pub const REQUIRED_PATHS: &str = include_str!("../../data/required-paths.txt");
/// Kernel modules kept (with their dependencies); `!` marks the required ones.
pub const KEEP_MODULES: &str = include_str!("../../data/keep-modules.txt");

/// One entry of keep-modules.txt: a module, or alternatives (`a|b`: the names one module has in
/// different kernels).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeptModule {
    /// The module's names with `-` written `_`.
    pub names: Vec<String>,
    /// The build and the audit fail when the kernel has none of the names.
    pub required: bool,
}

impl KeptModule {
    /// The entry as written (`a|b`).
    pub fn label(&self) -> String {
        self.names.join("|")
    }
}

/// The entries of keep-modules.txt.
pub fn kept_modules(text: &str) -> Vec<KeptModule> {
    list_entries(text)
        .into_iter()
        .map(|entry| {
            let (names, required) = match entry.strip_suffix('!') {
                Some(names) => (names.trim(), true),
                None => (entry, false),
            };
            KeptModule {
                names: names.split('|').map(|n| module_name(n.trim())).collect(),
                required,
            }
        })
        .collect()
}

/// A module's canonical name: `-` written `_`, without directory or `.ko[.zst|.xz|.gz]`.
pub fn module_name(file_or_name: &str) -> String {
    let base = file_or_name.rsplit('/').next().unwrap_or(file_or_name);
    let stem = base.split(".ko").next().unwrap_or(base);
    stem.replace('-', "_")
}

/// The module files and built-in modules of one kernel's module directory.
#[derive(Debug, Default)]
pub struct ModuleIndex {
    /// Module name → (path relative to the module directory, the names it depends on).
    pub modules: std::collections::BTreeMap<String, (String, Vec<String>)>,
    /// Names of modules built into the kernel.
    pub builtin: std::collections::BTreeSet<String>,
}

impl ModuleIndex {
    /// Reads `modules.dep` and `modules.builtin` of `dir` (`usr/lib/modules/<release>`).
    pub fn read(dir: &Path) -> Result<Self> {
        let dep = fs::read_to_string(dir.join("modules.dep"))
            .with_context(|| format!("reading {}/modules.dep", dir.display()))?;
        let mut index = ModuleIndex::default();
        for line in dep.lines() {
            let Some((path, deps)) = line.split_once(':') else {
                continue;
            };
            let deps = deps.split_whitespace().map(module_name).collect();
            index
                .modules
                .insert(module_name(path), (path.trim().to_owned(), deps));
        }
        if let Ok(builtin) = fs::read_to_string(dir.join("modules.builtin")) {
            index.builtin = builtin.lines().map(module_name).collect();
        }
        Ok(index)
    }

    /// True when the kernel has `name` as a module file or built in.
    pub fn has(&self, name: &str) -> bool {
        self.modules.contains_key(name) || self.builtin.contains(name)
    }

    /// `names` and every module they need, transitively (built-in names are skipped).
    pub fn closure<'a>(
        &self,
        names: impl IntoIterator<Item = &'a str>,
    ) -> std::collections::BTreeSet<String> {
        let mut kept = std::collections::BTreeSet::new();
        let mut queue: Vec<String> = names.into_iter().map(str::to_owned).collect();
        while let Some(name) = queue.pop() {
            if let Some((_, deps)) = self.modules.get(&name) {
                if kept.insert(name) {
                    queue.extend(deps.iter().cloned());
                }
            }
        }
        kept
    }
}

/// Deletes every module file of the kernel at `module_dir` except `keep` and what they need;
/// returns (kept, deleted). A required module the kernel lacks is an error; an optional one is
/// reported on stderr.
pub fn prune_modules(module_dir: &Path, keep: &[KeptModule]) -> Result<(usize, usize)> {
    let index = ModuleIndex::read(module_dir)?;
    let missing: Vec<&KeptModule> = keep
        .iter()
        .filter(|m| !m.names.iter().any(|name| index.has(name)))
        .collect();
    if let Some(required) = missing.iter().find(|m| m.required) {
        bail!(
            "the guest kernel in {} has no module {:?}, which keep-modules.txt requires; choose a kernel that ships it (guest.kernel) or install the package that does",
            module_dir.display(),
            required.label()
        );
    }
    if !missing.is_empty() {
        eprintln!(
            "{:>12} not in this kernel (skipped): {}",
            "Modules",
            missing
                .iter()
                .map(|m| m.label())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let kept = index.closure(keep.iter().flat_map(|m| m.names.iter().map(String::as_str)));
    let mut deleted = 0;
    for entry in walkdir::WalkDir::new(module_dir).follow_links(false) {
        let entry = entry.context("walking the guest's modules")?;
        let file = entry.file_name().to_string_lossy();
        if entry.file_type().is_file()
            && file.contains(".ko")
            && !kept.contains(&module_name(&file))
        {
            remove_any(entry.path())?;
            deleted += 1;
        }
    }
    // Directories left empty go too (deepest first).
    let mut dirs: Vec<PathBuf> = walkdir::WalkDir::new(module_dir)
        .follow_links(false)
        .into_iter()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_dir())
        .map(|e| e.into_path())
        .collect();
    dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
    for dir in dirs {
        if dir != module_dir && fs::read_dir(&dir).is_ok_and(|mut d| d.next().is_none()) {
            fs::remove_dir(&dir).with_context(|| format!("removing {}", dir.display()))?;
        }
    }
    Ok((kept.len(), deleted))
}

/// The kernel modules `profile` keeps: keep-modules.txt, and for the gpu profile gpu/keep-modules.txt.
pub fn kept_modules_for(profile: Profile) -> Vec<KeptModule> {
    let mut keep = kept_modules(KEEP_MODULES);
    if profile == Profile::Gpu {
        keep.extend(kept_modules(super::gpu::KEEP_MODULES));
    }
    keep
}

/// The data lists of `profile`: (purge, remove, forbidden), base entries first.
pub fn lists(profile: Profile) -> (Vec<&'static str>, Vec<&'static str>, Vec<&'static str>) {
    let mut purge = list_entries(PURGE_PACKAGES);
    let mut remove = list_entries(REMOVE_PATHS);
    let mut forbidden = list_entries(FORBIDDEN_PATHS);
    if profile == Profile::Gpu {
        purge.extend(list_entries(super::gpu::PURGE_PACKAGES));
        remove.extend(list_entries(super::gpu::REMOVE_PATHS));
        forbidden.extend(list_entries(super::gpu::FORBIDDEN_PATHS));
    }
    (purge, remove, forbidden)
}

/// The entries of a data list: one per line, `#` comments and blank lines skipped.
pub fn list_entries(text: &str) -> Vec<&str> {
    text.lines()
        .map(|line| line.split('#').next().unwrap_or("").trim())
        .filter(|line| !line.is_empty())
        .collect()
}

/// True when `name` matches the one-component glob `pattern` (`*` matches any run of characters).
pub fn glob_component(pattern: &str, name: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == name,
        Some((prefix, rest)) => {
            let Some(mut remaining) = name.strip_prefix(prefix) else {
                return false;
            };
            if rest.is_empty() {
                return true;
            }
            loop {
                if glob_component(rest, remaining) {
                    return true;
                }
                let mut chars = remaining.chars();
                if chars.next().is_none() {
                    return false;
                }
                remaining = chars.as_str();
            }
        }
    }
}

/// Every existing path under `root` that the relative glob `pattern` names (symlinks are not
/// followed while matching, so `usr/bin/sh` names the link itself).
pub fn expand(root: &Path, pattern: &str) -> Vec<PathBuf> {
    let mut current = vec![root.to_path_buf()];
    for component in pattern.split('/') {
        let mut next = Vec::new();
        for dir in &current {
            if component.contains('*') {
                let Ok(entries) = fs::read_dir(dir) else {
                    continue;
                };
                let mut names: Vec<_> = entries
                    .filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|name| glob_component(component, name))
                    .collect();
                names.sort();
                next.extend(names.into_iter().map(|name| dir.join(name)));
            } else {
                let path = dir.join(component);
                if path.symlink_metadata().is_ok() {
                    next.push(path);
                }
            }
        }
        current = next;
    }
    current.retain(|path| path != root);
    current
}

fn remove_any(path: &Path) -> Result<()> {
    let meta = path
        .symlink_metadata()
        .with_context(|| format!("reading {}", path.display()))?;
    if meta.is_dir() {
        fs::remove_dir_all(path)
    } else {
        fs::remove_file(path)
    }
    .with_context(|| format!("removing {}", path.display()))
}

/// What the harden stage did, for the build log.
#[derive(Debug, Default)]
pub struct HardenReport {
    /// Paths removed.
    pub removed: usize,
    /// Setuid/setgid bits cleared.
    pub setid_cleared: usize,
    /// Kernel module files kept.
    pub modules_kept: usize,
}

/// Hardens the tree at `root` in place. `kernel_meta` is the model's kernel meta package,
/// `kernel_version` the installed kernel's release (for depmod), `profile` selects the lists.
pub fn harden(
    root: &Path,
    kernel_meta: &str,
    kernel_version: &str,
    profile: Profile,
) -> Result<HardenReport> {
    let mut report = HardenReport::default();
    let (mut purge, remove, _) = lists(profile);
    purge.push(kernel_meta);
    let status = fs::read_to_string(root.join("var/lib/dpkg/status"))
        .context("reading the guest's dpkg status")?;
    let installed = super::lock::parse_dpkg_status(&status);
    purge.retain(|name| installed.iter().any(|(n, _, _)| n == name));
    Cmd::new("chroot")
        .arg(root)
        .args([
            "dpkg",
            "--purge",
            "--force-remove-essential",
            "--force-depends",
        ])
        .args(&purge)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .run()
        .context("purging packages from the guest with its own dpkg")?;
    // Modules are pruned before depmod, which must still see kmod in the tree.
    let module_dir = root.join("usr/lib/modules").join(kernel_version);
    let (kept, deleted) = prune_modules(&module_dir, &kept_modules_for(profile))?;
    report.modules_kept = kept;
    report.removed += deleted;
    Cmd::new("chroot")
        .arg(root)
        .args(["depmod", "-a", kernel_version])
        .run()
        .context("rebuilding the guest's module index")?;
    for pattern in &remove {
        for path in expand(root, pattern) {
            remove_any(&path)?;
            report.removed += 1;
        }
    }
    let units = root.join("etc/systemd/system");
    fs::create_dir_all(&units).with_context(|| format!("creating {}", units.display()))?;
    for unit in list_entries(MASK_UNITS) {
        let link = units.join(unit);
        if link.symlink_metadata().is_ok() {
            remove_any(&link)?;
        }
        symlink("/dev/null", &link).with_context(|| format!("masking {unit}"))?;
    }
    for entry in walkdir::WalkDir::new(root).follow_links(false) {
        let entry = entry.context("walking the guest tree")?;
        let meta = entry
            .path()
            .symlink_metadata()
            .with_context(|| format!("reading {}", entry.path().display()))?;
        if meta.file_type().is_file() && meta.mode() & 0o6000 != 0 {
            let mode = meta.mode() & 0o1777;
            fs::set_permissions(entry.path(), fs::Permissions::from_mode(mode))
                .with_context(|| format!("clearing setuid/setgid on {}", entry.path().display()))?;
            report.setid_cleared += 1;
        }
    }
    // A read-only root: an empty machine-id makes systemd use a transient one; /tmp is a tmpfs.
    write(root, "etc/machine-id", "")?;
    write(root, "etc/hostname", "cvm\n")?;
    write(
        root,
        "etc/fstab",
        "tmpfs /tmp tmpfs mode=1777,nosuid,nodev 0 0\n",
    )?;
    Ok(report)
}

fn write(root: &Path, relative: &str, contents: &str) -> Result<()> {
    let path = root.join(relative);
    if path.symlink_metadata().is_ok() {
        remove_any(&path)?;
    }
    fs::write(&path, contents).with_context(|| format!("writing {}", path.display()))
}

/// Problems the audit finds in an extracted base root tree: forbidden paths, setuid/setgid files,
/// and required kernel modules (keep-modules.txt) the kernel has neither as a file nor built in.
pub fn audit_tree(root: &Path) -> Result<Vec<String>> {
    audit_tree_for(root, Profile::Base)
}

/// Problems the audit finds in an extracted root tree of `profile`.
pub fn audit_tree_for(root: &Path, profile: Profile) -> Result<Vec<String>> {
    let mut problems = Vec::new();
    let modules = root.join("usr/lib/modules");
    let releases: Vec<PathBuf> = fs::read_dir(&modules)
        .map(|dir| dir.filter_map(|e| e.ok()).map(|e| e.path()).collect())
        .unwrap_or_default();
    if releases.len() != 1 {
        problems.push(format!(
            "expected one kernel's modules under /usr/lib/modules, found {}",
            releases.len()
        ));
    }
    for release in &releases {
        let index = ModuleIndex::read(release)?;
        for module in kept_modules_for(profile).iter().filter(|m| m.required) {
            let present = module.names.iter().any(|name| {
                index.builtin.contains(name)
                    || index
                        .modules
                        .get(name)
                        .is_some_and(|(path, _)| release.join(path).is_file())
            });
            if !present {
                problems.push(format!(
                    "required kernel module {} is missing from /{}",
                    module.label(),
                    release.strip_prefix(root).unwrap_or(release).display()
                ));
            }
        }
    }
    for required in list_entries(REQUIRED_PATHS) {
        // A dangling link still counts as present here: the enablement links are relative.
        if root.join(required).symlink_metadata().is_err() {
            problems.push(format!("required path /{required} is missing"));
        }
    }
    for pattern in lists(profile).2 {
        for path in expand(root, pattern) {
            let relative = path.strip_prefix(root).unwrap_or(&path);
            problems.push(format!("forbidden path /{}", relative.display()));
        }
    }
    for entry in walkdir::WalkDir::new(root).follow_links(false) {
        let entry = entry.context("walking the extracted root")?;
        let meta = entry
            .path()
            .symlink_metadata()
            .with_context(|| format!("reading {}", entry.path().display()))?;
        let relative = entry.path().strip_prefix(root).unwrap_or(entry.path());
        if meta.file_type().is_file() && meta.mode() & 0o6000 != 0 {
            problems.push(format!(
                "setuid/setgid file /{} (mode {:o})",
                relative.display(),
                meta.mode() & 0o7777
            ));
        }
    }
    Ok(problems)
}

/// Fails with every problem listed when `problems` is not empty.
pub fn check_audit(problems: &[String], what: &str) -> Result<()> {
    if problems.is_empty() {
        return Ok(());
    }
    bail!(
        "the audit of {what} found {} problem(s): {}",
        problems.len(),
        problems.join("; ")
    )
}
