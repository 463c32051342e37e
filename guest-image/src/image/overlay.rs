//! Files the model adds to the guest besides templates/guest/: the profile's rendered files
//! ([`super::gpu`]), the `[guest.files]` vendor artifacts (refused unless their sha256 matches the
//! model) and the gpu profile's RIM store for air-gapped sites.

use std::{
    fs,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result};
use cvm_core::model::{LoadedModel, Profile};

use super::gpu;

/// One file for the guest tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverlayFile {
    /// Path in the guest, relative.
    pub path: String,
    /// Contents.
    pub contents: Vec<u8>,
    /// Unix mode.
    pub mode: u32,
}

fn model_dir(model: &LoadedModel) -> PathBuf {
    model
        .path
        .as_ref()
        .and_then(|p| p.parent())
        .filter(|p| !p.as_os_str().is_empty())
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Every extra file of `model`'s guest, read and checked now (the build reads the files the
/// model names; a missing file or a wrong sha256 is bad input naming the key).
pub fn collect(model: &LoadedModel) -> Result<Vec<OverlayFile>> {
    let guest = &model.model.guest;
    let dir = model_dir(model);
    let mut files = Vec::new();
    for (name, file) in &guest.files {
        let source = dir.join(&file.source);
        let contents = fs::read(&source).map_err(|err| {
            cvm_core::error::bad_input(format!(
                "guest.files.{name}.source: cannot read {} ({err}); put the vendor file there or fix the path",
                source.display()
            ))
        })?;
        let sha256 = cvm_core::hash::sha256_hex(&contents);
        if !sha256.eq_ignore_ascii_case(&file.sha256) {
            return Err(cvm_core::error::bad_input(format!(
                "guest.files.{name}.sha256: {} has sha256 {sha256}, the model pins {}; check the file, then update the pin",
                source.display(),
                file.sha256
            )));
        }
        files.push(OverlayFile {
            path: file.dest.trim_start_matches('/').to_owned(),
            contents,
            mode: file.mode,
        });
    }
    if guest.profile == Profile::Gpu {
        files.extend(
            gpu::guest_files(&model.model)
                .into_iter()
                .map(|f| OverlayFile {
                    path: f.path,
                    contents: f.contents.into_bytes(),
                    mode: f.mode,
                }),
        );
        if let Some(store) = gpu::rim_store_source(&model.model, &dir) {
            if !store.is_dir() {
                return Err(cvm_core::error::bad_input(format!(
                    "guest.gpu.rim-store: {} is not a directory; give the directory holding the RIM files, or remove the key",
                    store.display()
                )));
            }
            for entry in walkdir::WalkDir::new(&store).sort_by_file_name() {
                let entry = entry.with_context(|| format!("reading {}", store.display()))?;
                if !entry.file_type().is_file() {
                    continue;
                }
                let relative = entry.path().strip_prefix(&store).unwrap_or(entry.path());
                files.push(OverlayFile {
                    path: format!("{}/{}", gpu::RIM_STORE_IN_GUEST, relative.display()),
                    contents: fs::read(entry.path())
                        .with_context(|| format!("reading {}", entry.path().display()))?,
                    mode: 0o644,
                });
            }
        }
    }
    Ok(files)
}

/// Writes `files` below `root`.
pub fn write(files: &[OverlayFile], root: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    for file in files {
        let path = root.join(&file.path);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
        }
        fs::write(&path, &file.contents).with_context(|| format!("writing {}", path.display()))?;
        fs::set_permissions(&path, fs::Permissions::from_mode(file.mode))
            .with_context(|| format!("setting the mode of {}", path.display()))?;
    }
    Ok(())
}

/// Makes `relative` (under `root`) a symbolic link to `target`, replacing what is there: how a
/// systemd unit is enabled in a tree that is not running.
pub fn link(root: &Path, target: &str, relative: &str) -> Result<()> {
    let path = root.join(relative);
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    let _ = fs::remove_file(&path);
    std::os::unix::fs::symlink(target, &path)
        .with_context(|| format!("linking {} to {target}", path.display()))
}
