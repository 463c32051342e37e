//! A local flat apt repository made from packages.lock and the package cache, for `--offline`
//! builds and for the test that proves apt's signature check is on.
//!
//! Offline, integrity comes from the lock: every .deb must have the sha256 the signed index listed
//! when the lock was written (checked here before the repository is made), so the repository
//! itself is marked `trusted=yes`. Unsigned, the same repository must be refused by apt.

use std::{fmt::Write as _, fs, path::Path};

use anyhow::{bail, Context, Result};
use cvm_core::cmd::Cmd;

use super::lock::{self, PackagesLock};

/// Writes `repo/{pool/*.deb,Packages,Release}` with every package of `lock` from `deb_cache`.
pub fn write(lock: &PackagesLock, deb_cache: &Path, repo: &Path) -> Result<()> {
    let pool = repo.join("pool");
    fs::create_dir_all(&pool).with_context(|| format!("creating {}", pool.display()))?;
    let mut index = String::new();
    let mut missing = Vec::new();
    for package in lock.packages.iter().chain(&lock.build_packages) {
        let file_name = lock::deb_file_name(package);
        let source = deb_cache.join(&file_name);
        if !source.is_file() {
            missing.push(format!("{} {}", package.name, package.version));
            continue;
        }
        let (sha256, size) = cvm_core::hash::sha256_file(&source)?;
        if sha256 != package.sha256 {
            bail!(
                "{} has sha256 {sha256}, but packages.lock says {}; delete it and build once with network access",
                source.display(),
                package.sha256
            );
        }
        let dest = pool.join(&file_name);
        if fs::hard_link(&source, &dest).is_err() {
            fs::copy(&source, &dest).with_context(|| {
                format!("copying {} into the local repository", source.display())
            })?;
        }
        let control = Cmd::new("dpkg-deb")
            .arg("-f")
            .arg(&source)
            .read()
            .with_context(|| format!("reading the control fields of {}", source.display()))?;
        let _ = write!(
            index,
            "{}\nFilename: pool/{file_name}\nSize: {size}\nSHA256: {sha256}\n\n",
            control.trim_end()
        );
    }
    if !missing.is_empty() {
        bail!(
            "--offline: {} locked package(s) are not in the package cache {} (e.g. {}); build once with network access",
            missing.len(),
            deb_cache.display(),
            missing.iter().take(3).cloned().collect::<Vec<_>>().join(", ")
        );
    }
    fs::write(repo.join("Packages"), &index).context("writing the local Packages index")?;
    let release = format!(
        "Origin: cvm-stack\nLabel: cvm-stack local packages\nSuite: {suite}\nCodename: {suite}\n\
         Date: Thu, 01 Jan 1970 00:00:00 UTC\nSHA256:\n {} {} Packages\n",
        cvm_core::hash::sha256_hex(index.as_bytes()),
        index.len(),
        suite = lock.suite
    );
    fs::write(repo.join("Release"), release).context("writing the local Release file")?;
    Ok(())
}

/// The apt source line for the flat repository at `repo`. apt's `copy:` method copies the
/// packages into the chroot's archive directory, where dpkg inside the chroot can read them.
pub fn source_line(repo: &Path, trusted: bool) -> String {
    let options = if trusted { "[trusted=yes] " } else { "" };
    format!("deb {options}copy://{} ./", repo.display())
}

/// Adds a `dists/` layout (the suite and its -updates and -security pockets, component `main`)
/// over the flat repository at `repo`, with unsigned Release files: a mirror apt must refuse while
/// its signature check is on.
pub fn write_unsigned_suite_layout(repo: &Path, suite: &str) -> Result<()> {
    let packages =
        fs::read_to_string(repo.join("Packages")).context("reading the local Packages index")?;
    for pocket in [
        suite.to_owned(),
        format!("{suite}-updates"),
        format!("{suite}-security"),
    ] {
        let dir = repo.join("dists").join(&pocket);
        let binary = dir.join("main/binary-amd64");
        fs::create_dir_all(&binary).with_context(|| format!("creating {}", binary.display()))?;
        let text = if pocket == suite {
            packages.as_str()
        } else {
            ""
        };
        fs::write(binary.join("Packages"), text)?;
        let release = format!(
            "Suite: {pocket}\nCodename: {pocket}\nComponents: main\nArchitectures: amd64\n\
             Date: Thu, 01 Jan 1970 00:00:00 UTC\nSHA256:\n {} {} main/binary-amd64/Packages\n",
            cvm_core::hash::sha256_hex(text.as_bytes()),
            text.len()
        );
        fs::write(dir.join("Release"), release)?;
    }
    Ok(())
}
