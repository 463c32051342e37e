//! The facts bundle of DESIGN.md §6: collecting it from a live host ([`collect()`]) and reading it
//! back ([`Bundle`]).
//!
//! Every accessor returns a three-way [`Fact`]: the value, [`Fact::Absent`] when the collector
//! looked for it and the host does not have it (a fact about the host, which a check turns into a
//! verdict), or [`Fact::NotCollected`] when the bundle cannot say (not collected, unreadable, the
//! command failed, or the stored text is malformed), which a check turns into a skip.

mod collect;
pub mod parse;

use std::{
    collections::BTreeMap,
    fs,
    path::{Path, PathBuf},
};

use anyhow::Result;
use cvm_core::error::bad_input;
use serde::{Deserialize, Serialize};

pub use collect::{check_markers, collect, CollectOptions, Redfish};

/// The name of the bundle's index file.
pub const FACTS_JSON: &str = "facts.json";

/// What the bundle knows about one thing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fact<T> {
    /// The host has it; here is its value.
    Present(T),
    /// The collector looked for it and the host does not have it.
    Absent,
    /// The bundle cannot say; the reason names the path and what went wrong.
    NotCollected(String),
}

impl<T> Fact<T> {
    /// Transforms a present value.
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Fact<U> {
        match self {
            Fact::Present(value) => Fact::Present(f(value)),
            Fact::Absent => Fact::Absent,
            Fact::NotCollected(reason) => Fact::NotCollected(reason),
        }
    }

    /// Transforms a present value with a step that may itself be absent or fail.
    pub fn and_then<U>(self, f: impl FnOnce(T) -> Fact<U>) -> Fact<U> {
        match self {
            Fact::Present(value) => f(value),
            Fact::Absent => Fact::Absent,
            Fact::NotCollected(reason) => Fact::NotCollected(reason),
        }
    }

    /// The present value, if any.
    pub fn present(self) -> Option<T> {
        match self {
            Fact::Present(value) => Some(value),
            _ => None,
        }
    }

    /// Borrows the present value, if any.
    pub fn as_ref(&self) -> Fact<&T> {
        match self {
            Fact::Present(value) => Fact::Present(value),
            Fact::Absent => Fact::Absent,
            Fact::NotCollected(reason) => Fact::NotCollected(reason.clone()),
        }
    }
}

/// `facts.json`: what the collector looked for and could not get.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Meta {
    /// Always 1.
    pub schema: u32,
    /// When the bundle was collected (RFC 3339, UTC), or any text for hand-written fixtures.
    #[serde(default)]
    pub collected_at: String,
    /// The host's name.
    #[serde(default)]
    pub hostname: String,
    /// Bundle paths the host does not have (a fact about the host).
    #[serde(default)]
    pub absent: Vec<String>,
    /// Bundle paths the collector could not read, with the reason.
    #[serde(default)]
    pub unreadable: BTreeMap<String, String>,
    /// Bundle paths whose command failed, with the reason.
    #[serde(default)]
    pub failed: BTreeMap<String, String>,
}

/// One CPUID leaf as stored in `cpuid/<leaf>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuidLeaf {
    /// EAX.
    pub eax: u32,
    /// EBX.
    pub ebx: u32,
    /// ECX.
    pub ecx: u32,
    /// EDX.
    pub edx: u32,
}

/// A facts bundle opened for reading.
#[derive(Debug, Clone)]
pub struct Bundle {
    dir: PathBuf,
    meta: Meta,
}

impl Bundle {
    /// Opens the bundle in `dir`. A missing or malformed `facts.json` is bad input naming the path.
    pub fn open(dir: impl AsRef<Path>) -> Result<Bundle> {
        let dir = dir.as_ref().to_owned();
        let path = dir.join(FACTS_JSON);
        let text = fs::read_to_string(&path).map_err(|err| {
            bad_input(format!(
                "reading {}: {err}; pass a directory written by `cargo xtask host collect --out DIR`",
                path.display()
            ))
        })?;
        let meta: Meta = serde_json::from_str(&text).map_err(|err| {
            bad_input(format!(
                "parsing {}: {err}; collect the bundle again with `cargo xtask host collect`",
                path.display()
            ))
        })?;
        if meta.schema != 1 {
            return Err(bad_input(format!(
                "{}: schema {} is not supported (expected 1)",
                path.display(),
                meta.schema
            )));
        }
        Ok(Bundle { dir, meta })
    }

    /// The bundle directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The contents of `facts.json`.
    pub fn meta(&self) -> &Meta {
        &self.meta
    }

    /// What `facts.json` says about the bundle path `rel` when it is not in the bundle: absent
    /// (itself or a directory above it), unreadable, failed, or simply not collected.
    fn missing(&self, rel: &str) -> Fact<std::convert::Infallible> {
        let under = |listed: &str| {
            let listed = listed.trim_end_matches('/');
            rel == listed
                || rel
                    .strip_prefix(listed)
                    .is_some_and(|rest| rest.starts_with('/'))
        };
        if self.meta.absent.iter().any(|listed| under(listed)) {
            return Fact::Absent;
        }
        if let Some((path, reason)) = self.meta.unreadable.iter().find(|(path, _)| under(path)) {
            return Fact::NotCollected(format!("{path} was unreadable: {reason}"));
        }
        if let Some((path, reason)) = self.meta.failed.iter().find(|(path, _)| under(path)) {
            return Fact::NotCollected(format!("{path} could not be collected: {reason}"));
        }
        Fact::NotCollected(format!("{rel} was not collected"))
    }

    fn missing_as<T>(&self, rel: &str) -> Fact<T> {
        match self.missing(rel) {
            Fact::Absent => Fact::Absent,
            Fact::NotCollected(reason) => Fact::NotCollected(reason),
            Fact::Present(never) => match never {},
        }
    }

    /// The text of the bundle path `rel` (e.g. `cmd/dmesg`); bytes that are not UTF-8 are
    /// replaced, so binary noise never makes a file unreadable.
    pub fn text(&self, rel: &str) -> Fact<String> {
        let path = self.dir.join(rel);
        match fs::read(&path) {
            Ok(bytes) => Fact::Present(String::from_utf8_lossy(&bytes).into_owned()),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => self.missing_as(rel),
            Err(err) => Fact::NotCollected(format!("reading {}: {err}", path.display())),
        }
    }

    /// Whether the bundle path `rel` exists (a device marker such as `root/dev/sev`).
    pub fn exists(&self, rel: &str) -> Fact<()> {
        if fs::symlink_metadata(self.dir.join(rel)).is_ok() {
            Fact::Present(())
        } else {
            self.missing_as(rel)
        }
    }

    /// The sorted entry names of the bundle directory `rel`.
    pub fn list(&self, rel: &str) -> Fact<Vec<String>> {
        let path = self.dir.join(rel);
        match fs::read_dir(&path) {
            Ok(entries) => {
                let mut names: Vec<String> = entries
                    .filter_map(|entry| entry.ok())
                    .map(|entry| entry.file_name().to_string_lossy().into_owned())
                    .collect();
                names.sort();
                Fact::Present(names)
            }
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => self.missing_as(rel),
            Err(err) => Fact::NotCollected(format!("listing {}: {err}", path.display())),
        }
    }

    /// The target of the symbolic link at the bundle path `rel`, as stored (relative, as in sysfs).
    pub fn link(&self, rel: &str) -> Fact<PathBuf> {
        let path = self.dir.join(rel);
        match fs::read_link(&path) {
            Ok(target) => Fact::Present(target),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => self.missing_as(rel),
            Err(err) => Fact::NotCollected(format!("reading link {}: {err}", path.display())),
        }
    }

    /// A file read from the host, by its absolute host path (e.g. `/proc/cpuinfo`).
    pub fn root_file(&self, host_path: &str) -> Fact<String> {
        self.text(&root_rel(host_path))
    }

    /// Whether the host has `host_path` (e.g. `/dev/sev`).
    pub fn root_exists(&self, host_path: &str) -> Fact<()> {
        self.exists(&root_rel(host_path))
    }

    /// The entries of the host directory `host_path` (e.g. `/sys/kernel/iommu_groups`).
    pub fn root_dir(&self, host_path: &str) -> Fact<Vec<String>> {
        self.list(&root_rel(host_path))
    }

    /// The target of the host symlink `host_path`, relative as sysfs stores it (e.g.
    /// `../../../../bus/pci/drivers/vfio-pci`).
    pub fn root_link(&self, host_path: &str) -> Fact<PathBuf> {
        self.link(&root_rel(host_path))
    }

    /// The last path component of the symlink `host_path` points to (e.g. the driver name of
    /// `/sys/bus/pci/devices/<BDF>/driver`, or the group number of `…/iommu_group`).
    pub fn root_link_name(&self, host_path: &str) -> Fact<String> {
        self.link(&root_rel(host_path))
            .and_then(|target| match target.file_name() {
                Some(name) => Fact::Present(name.to_string_lossy().into_owned()),
                None => Fact::NotCollected(format!(
                    "root{host_path} points to {}, which names nothing",
                    target.display()
                )),
            })
    }

    /// The output of a collected command, by its file name under `cmd/` (e.g. `dmesg`).
    pub fn cmd(&self, name: &str) -> Fact<String> {
        self.text(&format!("cmd/{name}"))
    }

    /// A CPUID leaf (`cpuid/0x8000001f`: `eax ebx ecx edx` in hex).
    pub fn cpuid(&self, leaf: u32) -> Fact<CpuidLeaf> {
        let rel = format!("cpuid/{leaf:#x}");
        self.text(&rel)
            .and_then(|text| match parse::cpuid_leaf(&text) {
                Some(value) => Fact::Present(value),
                None => Fact::NotCollected(format!(
                    "{rel} is malformed (expected four hex words `eax ebx ecx edx`)"
                )),
            })
    }

    /// A model-specific register of CPU 0 (`msr/0xc0010010`: one hex value).
    pub fn msr(&self, index: u32) -> Fact<u64> {
        let rel = format!("msr/{index:#x}");
        self.text(&rel)
            .and_then(|text| match parse::hex_u64(&text) {
                Some(value) => Fact::Present(value),
                None => Fact::NotCollected(format!("{rel} is malformed (expected one hex value)")),
            })
    }

    /// A Redfish document by its URL path (e.g. `/redfish/v1/Systems/System.Embedded.1/Bios`),
    /// stored as `redfish/<path>.json`.
    pub fn redfish(&self, url_path: &str) -> Fact<serde_json::Value> {
        let rel = format!("redfish/{}.json", url_path.trim_matches('/'));
        self.text(&rel)
            .and_then(|text| match serde_json::from_str(&text) {
                Ok(value) => Fact::Present(value),
                Err(err) => Fact::NotCollected(format!("{rel} is not valid JSON: {err}")),
            })
    }
}

/// Collects this host into a fresh temporary directory and opens it (live `host check`); the
/// directory is removed when the returned guard is dropped.
pub fn collect_live_temp() -> Result<(tempfile::TempDir, Bundle)> {
    collect_live_temp_with_markers(Vec::new())
}

/// [`collect_live_temp`], also recording whether each of `markers` (absolute host paths) exists.
pub fn collect_live_temp_with_markers(markers: Vec<String>) -> Result<(tempfile::TempDir, Bundle)> {
    let dir = tempfile::Builder::new()
        .prefix("cvm-facts-")
        .tempdir()
        .map_err(|err| anyhow::anyhow!("creating a temporary directory for the facts: {err}"))?;
    collect(&CollectOptions {
        markers,
        ..CollectOptions::live(dir.path())
    })?;
    let bundle = Bundle::open(dir.path())?;
    Ok((dir, bundle))
}

/// The bundle path of a host path: `/proc/cpuinfo` -> `root/proc/cpuinfo`.
pub fn root_rel(host_path: &str) -> String {
    format!("root/{}", host_path.trim_start_matches('/'))
}

#[cfg(test)]
mod tests;
