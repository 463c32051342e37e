//! `packages.lock`: the exact package closure of a guest image (name, version, architecture,
//! sha256 from the signed index, pocket), with Cargo.lock semantics. It never holds a mirror URL.

use std::{collections::BTreeMap, fmt::Write as _, path::Path};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

/// The lock file format version this code writes and reads.
pub const LOCK_VERSION: u32 = 1;

/// One locked package.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockedPackage {
    /// The binary package name.
    pub name: String,
    /// The exact version.
    pub version: String,
    /// `amd64` or `all`.
    pub arch: String,
    /// SHA-256 of the .deb as listed in the signed `Packages` index.
    pub sha256: String,
    /// The pocket (suite) that listed it, e.g. `noble-updates`.
    pub pocket: String,
}

/// The whole lock: what goes into the guest, and the build-side packages (firmware, UKI stub).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PackagesLock {
    /// Format version, [`LOCK_VERSION`].
    pub version: u32,
    /// The guest's suite, e.g. `noble`.
    pub suite: String,
    /// Packages installed in the guest root filesystem.
    #[serde(default, rename = "package")]
    pub packages: Vec<LockedPackage>,
    /// Packages the build takes files from without installing them (the firmware, the UKI stub).
    #[serde(default, rename = "build-package")]
    pub build_packages: Vec<LockedPackage>,
}

impl PackagesLock {
    /// Parses the text of a lock file; `path` names it in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self> {
        let lock: PackagesLock = toml::from_str(text).map_err(|err| {
            cvm_core::error::bad_input(format!(
                "{}: not a valid packages.lock ({}); delete it and run `cargo xtask guest lock`",
                path.display(),
                err.message()
            ))
        })?;
        if lock.version != LOCK_VERSION {
            return Err(cvm_core::error::bad_input(format!(
                "{}: lock version {} is not {LOCK_VERSION}; delete it and run `cargo xtask guest lock`",
                path.display(),
                lock.version
            )));
        }
        Ok(lock)
    }

    /// The lock file's text: a header comment, then TOML in a stable order.
    pub fn to_text(&self) -> String {
        let mut sorted = self.clone();
        sorted.packages.sort();
        sorted.build_packages.sort();
        let body = toml::to_string(&sorted).expect("the lock is plain data");
        format!(
            "# This file is written by `cargo xtask guest lock` / `guest build`. Commit it.\n\
             # It pins every package of the guest image; it names no mirror.\n{body}"
        )
    }

    /// The locked kernel image package (`linux-image-<release>`), if the lock has one.
    pub fn kernel_image(&self) -> Option<&str> {
        self.packages
            .iter()
            .map(|package| package.name.as_str())
            .find(|name| {
                name.strip_prefix("linux-image-")
                    .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_digit()))
            })
    }

    /// A package of either list by name.
    pub fn find(&self, name: &str) -> Option<&LockedPackage> {
        self.packages
            .iter()
            .chain(&self.build_packages)
            .find(|package| package.name == name)
    }

    /// Human-readable differences from `other` (`- name version` / `+ name version`), empty when equal.
    pub fn diff(&self, other: &PackagesLock) -> Vec<String> {
        let index = |lock: &PackagesLock| -> BTreeMap<String, String> {
            lock.packages
                .iter()
                .chain(&lock.build_packages)
                .map(|p| {
                    (
                        p.name.clone(),
                        format!("{} {} {}", p.version, p.arch, p.sha256),
                    )
                })
                .collect()
        };
        let (old, new) = (index(self), index(other));
        let mut lines = Vec::new();
        for (name, value) in &old {
            if new.get(name) != Some(value) {
                lines.push(format!("- {name} {value}"));
            }
        }
        for (name, value) in &new {
            if old.get(name) != Some(value) {
                lines.push(format!("+ {name} {value}"));
            }
        }
        lines
    }

    /// An apt preferences file pinning every locked package to its exact version.
    pub fn apt_preferences(&self) -> String {
        let mut text = String::new();
        for package in self.packages.iter().chain(&self.build_packages) {
            let _ = write!(
                text,
                "Package: {}\nPin: version {}\nPin-Priority: 1001\n\n",
                package.name, package.version
            );
        }
        text
    }
}

/// One stanza of a `Packages` index that matters here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexEntry {
    /// Package name.
    pub name: String,
    /// Version.
    pub version: String,
    /// Architecture.
    pub arch: String,
    /// SHA-256 of the .deb.
    pub sha256: String,
}

/// Parses a `Packages` index (deb822 stanzas).
pub fn parse_packages_index(text: &str) -> Vec<IndexEntry> {
    let mut entries = Vec::new();
    for stanza in text.split("\n\n") {
        let field = |key: &str| {
            stanza
                .lines()
                .find_map(|line| line.strip_prefix(key)?.strip_prefix(':'))
                .map(|value| value.trim().to_owned())
        };
        if let (Some(name), Some(version), Some(arch), Some(sha256)) = (
            field("Package"),
            field("Version"),
            field("Architecture"),
            field("SHA256"),
        ) {
            entries.push(IndexEntry {
                name,
                version,
                arch,
                sha256,
            });
        }
    }
    entries
}

/// The pocket named in an apt list file name (`…_dists_noble-updates_main_binary-amd64_Packages`).
pub fn pocket_of_list_file(file_name: &str) -> Option<&str> {
    let rest = file_name.split("_dists_").nth(1)?;
    file_name
        .ends_with("_Packages")
        .then(|| rest.split('_').next())
        .flatten()
}

/// Installed packages from a dpkg status file: (name, version, arch).
pub fn parse_dpkg_status(text: &str) -> Vec<(String, String, String)> {
    let mut installed = Vec::new();
    for stanza in text.split("\n\n") {
        let field = |key: &str| {
            stanza
                .lines()
                .find_map(|line| line.strip_prefix(key)?.strip_prefix(':'))
                .map(|value| value.trim().to_owned())
        };
        if field("Status").as_deref() != Some("install ok installed") {
            continue;
        }
        if let (Some(name), Some(version), Some(arch)) =
            (field("Package"), field("Version"), field("Architecture"))
        {
            installed.push((name, version, arch));
        }
    }
    installed.sort();
    installed
}

/// A package identity: (name, version, architecture).
pub type PackageId = (String, String, String);

/// Every index entry by identity: (sha256, pocket).
pub type IndexMap = BTreeMap<PackageId, (String, String)>;

/// Pocket preference when one version is listed in several pockets: the release pocket first.
fn pocket_rank(suite: &str, pocket: &str) -> usize {
    if pocket == suite {
        0
    } else if pocket == format!("{suite}-updates") {
        1
    } else if pocket == format!("{suite}-security") {
        2
    } else {
        3
    }
}

/// All index entries of the apt lists directory `lists`, by (name, version, arch) → (sha256, pocket).
pub fn read_indexes(lists: &Path, suite: &str) -> Result<IndexMap> {
    let mut found: IndexMap = BTreeMap::new();
    let mut files: Vec<_> = std::fs::read_dir(lists)
        .with_context(|| format!("reading {}", lists.display()))?
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .collect();
    files.sort();
    for file in files {
        let name = file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let Some(pocket) = pocket_of_list_file(&name) else {
            continue;
        };
        let text = std::fs::read_to_string(&file)
            .with_context(|| format!("reading {}", file.display()))?;
        for entry in parse_packages_index(&text) {
            let key = (entry.name, entry.version, entry.arch);
            let better = found
                .get(&key)
                .is_none_or(|(_, old)| pocket_rank(suite, pocket) < pocket_rank(suite, old));
            if better {
                found.insert(key, (entry.sha256, pocket.to_owned()));
            }
        }
    }
    Ok(found)
}

/// Locks `installed` (and the build-side packages `build`, given by name) against the indexes.
pub fn resolve(
    suite: &str,
    installed: &[PackageId],
    build: &[PackageId],
    indexes: &IndexMap,
) -> Result<PackagesLock> {
    let lock_one = |(name, version, arch): &PackageId| -> Result<LockedPackage> {
        let (sha256, pocket) = indexes
            .get(&(name.clone(), version.clone(), arch.clone()))
            .with_context(|| {
                format!("package {name} {version} ({arch}) is installed but no index lists it")
            })?;
        Ok(LockedPackage {
            name: name.clone(),
            version: version.clone(),
            arch: arch.clone(),
            sha256: sha256.clone(),
            pocket: pocket.clone(),
        })
    };
    Ok(PackagesLock {
        version: LOCK_VERSION,
        suite: suite.to_owned(),
        packages: installed.iter().map(lock_one).collect::<Result<_>>()?,
        build_packages: build.iter().map(lock_one).collect::<Result<_>>()?,
    })
}

/// The file name apt gives a downloaded .deb (the epoch's colon is escaped as `%3a`).
pub fn deb_file_name(package: &LockedPackage) -> String {
    format!(
        "{}_{}_{}.deb",
        package.name,
        package.version.replace(':', "%3a"),
        package.arch
    )
}
