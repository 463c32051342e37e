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
    // The module trees go before depmod, which must still see kmod in the tree.
    for pattern in &remove {
        if pattern.starts_with("usr/lib/modules/") {
            for path in expand(root, pattern) {
                remove_any(&path)?;
                report.removed += 1;
            }
        }
    }
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

/// Problems the audit finds in an extracted base root tree: forbidden paths and setuid/setgid files.
pub fn audit_tree(root: &Path) -> Result<Vec<String>> {
    audit_tree_for(root, Profile::Base)
}

/// Problems the audit finds in an extracted root tree of `profile`.
pub fn audit_tree_for(root: &Path, profile: Profile) -> Result<Vec<String>> {
    let mut problems = Vec::new();
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
