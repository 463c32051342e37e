//! `e2e.artifacts`: re-verifies every artifact listed in the build's `manifest.json` (DESIGN.md §4)
//! against its recorded sha256 and size.

use std::{
    collections::BTreeMap,
    path::{Component, Path},
};

use cvm_core::check::{CheckResult, Status};
use serde::Deserialize;

/// The check id.
pub const ID: &str = "e2e.artifacts";

const TITLE: &str = "build artifacts match manifest.json (sha256 and size)";

/// The part of manifest.json this check reads.
#[derive(Debug, Deserialize)]
struct Manifest {
    schema: u32,
    artifacts: BTreeMap<String, Artifact>,
}

/// One `artifacts` entry.
#[derive(Debug, Deserialize)]
struct Artifact {
    sha256: String,
    size: u64,
}

fn result(status: Status, detail: String, remediation: &str) -> CheckResult {
    CheckResult::new(ID, TITLE, status, detail, remediation)
}

/// Verifies the artifacts in `dir` against `dir/manifest.json`.
pub fn verify(dir: &Path) -> CheckResult {
    const BUILD: &str = "cargo xtask guest build";
    if !dir.is_dir() {
        return result(
            Status::Fail,
            format!("the artifacts directory {} does not exist", dir.display()),
            &format!("build the guest first: {BUILD} (or pass --artifacts DIR)"),
        );
    }
    let manifest_path = dir.join("manifest.json");
    let text = match std::fs::read_to_string(&manifest_path) {
        Ok(text) => text,
        Err(err) => {
            return result(
                Status::Fail,
                format!("cannot read {}: {err}", manifest_path.display()),
                &format!(
                    "rebuild the guest: {BUILD}; a complete build always writes manifest.json last"
                ),
            )
        }
    };
    let manifest: Manifest = match serde_json::from_str(&text) {
        Ok(manifest) => manifest,
        Err(err) => {
            return result(
                Status::Fail,
                format!(
                    "{} is not a schema-1 manifest: {err}",
                    manifest_path.display()
                ),
                &format!("rebuild the guest: {BUILD}"),
            )
        }
    };
    if manifest.schema != 1 {
        return result(
            Status::Fail,
            format!(
                "{} has schema {}, this validation reads schema 1",
                manifest_path.display(),
                manifest.schema
            ),
            &format!("rebuild the guest with this version: {BUILD}"),
        );
    }
    if manifest.artifacts.is_empty() {
        return result(
            Status::Fail,
            format!("{} lists no artifacts", manifest_path.display()),
            &format!("rebuild the guest: {BUILD}"),
        );
    }
    let mut problems = Vec::new();
    let mut total = 0u64;
    for (name, want) in &manifest.artifacts {
        let relative = Path::new(name);
        if !relative
            .components()
            .all(|component| matches!(component, Component::Normal(_)))
        {
            problems.push(format!("{name}: not a path inside the artifacts directory"));
            continue;
        }
        match cvm_core::hash::sha256_file(&dir.join(relative)) {
            Err(err) => problems.push(format!("{name}: {err:#}")),
            Ok((sha256, size)) => {
                total += size;
                if size != want.size {
                    problems.push(format!("{name}: size {size}, manifest says {}", want.size));
                }
                if !sha256.eq_ignore_ascii_case(&want.sha256) {
                    problems.push(format!(
                        "{name}: sha256 {sha256}, manifest says {}",
                        want.sha256
                    ));
                }
            }
        }
    }
    if problems.is_empty() {
        result(
            Status::Pass,
            format!(
                "{} artifact(s), {total} bytes, match {}",
                manifest.artifacts.len(),
                manifest_path.display()
            ),
            "",
        )
    } else {
        result(
            Status::Fail,
            format!(
                "{} of {} artifact(s) differ from {}: {}",
                problems.len(),
                manifest.artifacts.len(),
                manifest_path.display(),
                problems.join("; ")
            ),
            &format!(
                "the artifacts were changed or damaged after the build; rebuild them: {BUILD}"
            ),
        )
    }
}

#[cfg(test)]
mod tests;
