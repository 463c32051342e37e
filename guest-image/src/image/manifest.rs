//! `manifest.json` (DESIGN.md §4, schema 1): what was built, from what, with which tools.

use std::{collections::BTreeMap, path::Path};

use anyhow::{Context, Result};
use cvm_core::model::LoadedModel;
use serde::{Deserialize, Serialize};

use super::lock::{LockedPackage, PackagesLock};

/// The manifest.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    /// Always 1.
    pub schema: u32,
    /// The deployment name.
    pub name: String,
    /// `snp` or `tdx`.
    pub tee: String,
    /// What the build read.
    pub inputs: Inputs,
    /// Every file of the output (except the manifest itself): sha256 and size.
    pub artifacts: BTreeMap<String, Artifact>,
    /// The dm-verity root hash.
    pub roothash: String,
    /// The kernel release.
    pub kernel: String,
    /// The kernel command line inside the UKI.
    pub cmdline: String,
    /// The guest's packages.
    pub packages: Vec<LockedPackage>,
    /// The packages the firmware and the UKI stub came from.
    pub build_packages: Vec<LockedPackage>,
    /// The launch measurements (DESIGN.md §4), null until the measure stage provides them.
    pub measurements: Option<serde_json::Value>,
}

/// The inputs of a build.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Inputs {
    /// The model file, or the embedded default.
    pub config: String,
    /// SHA-256 of the model's text.
    pub config_sha256: String,
    /// SHA-256 of packages.lock.
    pub lock_sha256: String,
    /// The source date epoch.
    pub source_date_epoch: u64,
    /// Versions of the build tools.
    pub tools: BTreeMap<String, String>,
}

/// One output file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Artifact {
    /// Lower-case hex SHA-256.
    pub sha256: String,
    /// Size in bytes.
    pub size: u64,
}

/// What [`Manifest::collect`] needs.
pub struct ManifestInputs<'a> {
    /// The model.
    pub model: &'a LoadedModel,
    /// The output directory (artifacts already in place).
    pub out: &'a Path,
    /// The lock.
    pub lock: &'a PackagesLock,
    /// The root hash.
    pub root_hash: &'a str,
    /// The kernel release.
    pub kernel: &'a str,
    /// The kernel command line.
    pub cmdline: &'a str,
    /// Tool versions.
    pub tools: &'a [(String, String)],
    /// The measurements object, when the measure stage ran.
    pub measurements: Option<serde_json::Value>,
}

impl Manifest {
    /// Hashes every file in `out` and assembles the manifest.
    pub fn collect(inputs: &ManifestInputs<'_>) -> Result<Self> {
        let mut artifacts = BTreeMap::new();
        let mut names: Vec<_> = std::fs::read_dir(inputs.out)
            .with_context(|| format!("reading {}", inputs.out.display()))?
            .filter_map(|e| e.ok())
            .filter(|e| e.path().is_file())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|name| name != "manifest.json")
            .collect();
        names.sort();
        for name in names {
            let (sha256, size) = cvm_core::hash::sha256_file(&inputs.out.join(&name))?;
            artifacts.insert(name, Artifact { sha256, size });
        }
        let model = &inputs.model.model;
        Ok(Self {
            schema: 1,
            name: model.deployment.name.clone(),
            tee: model.deployment.tee.as_str().to_owned(),
            inputs: Inputs {
                config: inputs.model.source_name(),
                config_sha256: cvm_core::hash::sha256_hex(inputs.model.text.as_bytes()),
                lock_sha256: cvm_core::hash::sha256_hex(inputs.lock.to_text().as_bytes()),
                source_date_epoch: model.guest.source_date_epoch,
                tools: inputs.tools.iter().cloned().collect(),
            },
            artifacts,
            roothash: inputs.root_hash.to_owned(),
            kernel: inputs.kernel.to_owned(),
            cmdline: inputs.cmdline.to_owned(),
            packages: inputs.lock.packages.clone(),
            build_packages: inputs.lock.build_packages.clone(),
            measurements: inputs.measurements.clone(),
        })
    }
}
