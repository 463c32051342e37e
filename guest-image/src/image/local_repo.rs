//! A local flat apt repository made from packages.lock and the package cache, for `--offline`
//! builds and for the tests that prove apt's signature check is on (an unsigned repository, and
//! one signed by a key the build does not trust).
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

/// Makes a fresh OpenPGP signing key in the new GnuPG home `home` (no passphrase; the key is in
/// no keyring any build trusts) and returns its fingerprint. Stop the agent it starts with
/// [`stop_gpg_agent`].
pub fn generate_signing_key(home: &Path) -> Result<String> {
    use std::os::unix::fs::PermissionsExt;
    fs::create_dir_all(home).with_context(|| format!("creating {}", home.display()))?;
    fs::set_permissions(home, fs::Permissions::from_mode(0o700))?;
    Cmd::new("gpg")
        .arg("--homedir")
        .arg(home)
        .args(["--batch", "--passphrase", "", "--quick-gen-key"])
        .args([
            "cvm-stack test key <test@invalid>",
            "ed25519",
            "sign",
            "never",
        ])
        .run()
        .context("generating a signing key with gpg")?;
    let listing = Cmd::new("gpg")
        .arg("--homedir")
        .arg(home)
        .args(["--batch", "--with-colons", "--list-secret-keys"])
        .read()
        .context("listing the new signing key")?;
    listing
        .lines()
        .find_map(|line| line.strip_prefix("fpr:"))
        .and_then(|rest| rest.split(':').find(|field| !field.is_empty()))
        .map(str::to_owned)
        .context("gpg listed no fingerprint for the new key")
}

/// Stops the gpg-agent that gpg started for `home`.
pub fn stop_gpg_agent(home: &Path) -> Result<()> {
    Cmd::new("gpgconf")
        .arg("--homedir")
        .arg(home)
        .args(["--kill", "gpg-agent"])
        .run()
        .context("stopping gpg-agent")?;
    Ok(())
}

/// Signs every `dists/*/Release` of the layout [`write_unsigned_suite_layout`] made with the key
/// `fingerprint` of the GnuPG home `home`: an `InRelease` (clearsigned) and a `Release.gpg`
/// (detached) beside it, as an archive does.
pub fn sign_suite_layout(repo: &Path, home: &Path, fingerprint: &str) -> Result<()> {
    let dists = repo.join("dists");
    let mut pockets: Vec<_> = fs::read_dir(&dists)
        .with_context(|| format!("reading {}", dists.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    pockets.sort();
    for pocket in pockets {
        let release = pocket.join("Release");
        for (mode, out) in [
            ("--clearsign", "InRelease"),
            ("--detach-sign", "Release.gpg"),
        ] {
            Cmd::new("gpg")
                .arg("--homedir")
                .arg(home)
                .args([
                    "--batch",
                    "--yes",
                    "--armor",
                    "--local-user",
                    fingerprint,
                    mode,
                ])
                .arg("--output")
                .arg(pocket.join(out))
                .arg(&release)
                .run()
                .with_context(|| format!("signing {}", release.display()))?;
        }
    }
    Ok(())
}
