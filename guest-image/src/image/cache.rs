//! Content-addressed stage cache and atomic directories.
//!
//! A stage's key is the SHA-256 of its inputs and the previous stage's key, so a changed input
//! rebuilds that stage and every stage after it, and an unchanged one reuses the cached output. A
//! stage builds into `<cache>/<stage>/<key>.tmp-<pid>` and is renamed into place only when it is
//! complete; leftovers of killed builds (a dead pid) are unmounted and removed by the next build.

use std::{
    fs,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result};
use cvm_core::cmd::Cmd;
use sha2::{Digest, Sha256};

/// Builds a stage key from named inputs.
#[derive(Default)]
pub struct KeyBuilder {
    hasher: Sha256,
}

impl KeyBuilder {
    /// A key chained to the previous stage's key.
    pub fn new(stage: &str, previous: Option<&str>) -> Self {
        let mut builder = Self::default();
        builder = builder.text("stage", stage);
        builder.text("previous", previous.unwrap_or(""))
    }

    /// Adds a named input.
    pub fn bytes(mut self, name: &str, value: &[u8]) -> Self {
        self.hasher.update((name.len() as u64).to_le_bytes());
        self.hasher.update(name.as_bytes());
        self.hasher.update((value.len() as u64).to_le_bytes());
        self.hasher.update(value);
        self
    }

    /// Adds a named text input.
    pub fn text(self, name: &str, value: &str) -> Self {
        self.bytes(name, value.as_bytes())
    }

    /// The key as hex.
    pub fn finish(self) -> String {
        hex::encode(self.hasher.finalize())
    }
}

/// The stage cache under one directory.
pub struct Cache {
    root: PathBuf,
    no_cache: bool,
}

/// The outcome of [`Cache::stage`].
pub struct StageDir {
    /// The stage's finished output directory.
    pub path: PathBuf,
    /// True when it was reused from the cache.
    pub cached: bool,
}

const COMPLETE: &str = ".complete";

impl Cache {
    /// A cache at `root`; with `no_cache` every stage is rebuilt (and replaces its cached output).
    pub fn new(root: &Path, no_cache: bool) -> Result<Self> {
        fs::create_dir_all(root).with_context(|| format!("creating {}", root.display()))?;
        Ok(Self {
            root: root.to_path_buf(),
            no_cache,
        })
    }

    /// The cache's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Returns the output of stage `name` for `key`, running `build` into a fresh directory when
    /// there is no complete cached output (or `--no-cache`). `valid` may reject a cached output.
    pub fn stage(
        &self,
        name: &str,
        key: &str,
        valid: impl Fn(&Path) -> bool,
        build: impl FnOnce(&Path) -> Result<()>,
    ) -> Result<StageDir> {
        let stage_root = self.root.join(name);
        fs::create_dir_all(&stage_root)
            .with_context(|| format!("creating {}", stage_root.display()))?;
        sweep_stale(&stage_root)?;
        let done = stage_root.join(key);
        if !self.no_cache && done.join(COMPLETE).exists() && valid(&done) {
            return Ok(StageDir {
                path: done,
                cached: true,
            });
        }
        let building = stage_root.join(format!("{key}.tmp-{}", std::process::id()));
        remove_tree(&building)?;
        fs::create_dir_all(&building)
            .with_context(|| format!("creating {}", building.display()))?;
        let result = build(&building);
        if let Err(err) = result {
            let _ = remove_tree(&building);
            return Err(err);
        }
        fs::write(building.join(COMPLETE), key)
            .with_context(|| format!("marking {} complete", building.display()))?;
        // Only the newest output of each stage is kept: old keys are removed.
        for entry in fs::read_dir(&stage_root)
            .with_context(|| format!("reading {}", stage_root.display()))?
        {
            let path = entry?.path();
            if path != building && !is_temporary(&path) {
                remove_tree(&path)?;
            }
        }
        fs::rename(&building, &done)
            .with_context(|| format!("renaming {} into place", building.display()))?;
        Ok(StageDir {
            path: done,
            cached: false,
        })
    }
}

fn is_temporary(path: &Path) -> bool {
    temporary_pid(path).is_some()
}

/// The pid in a `…tmp-<pid>` or `…old-<pid>` name.
pub fn temporary_pid(path: &Path) -> Option<u32> {
    let name = path.file_name()?.to_string_lossy().into_owned();
    let (_, pid) = name.rsplit_once(".tmp-").or(name.rsplit_once(".old-"))?;
    pid.parse().ok()
}

/// Removes leftovers of killed builds (temporary directories whose process is gone) in `dir`.
pub fn sweep_stale(dir: &Path) -> Result<()> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Ok(());
    };
    for entry in entries.filter_map(|e| e.ok()) {
        let path = entry.path();
        if let Some(pid) = temporary_pid(&path) {
            if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
                eprintln!(
                    "{:>12} leftover of a killed build {}",
                    "Removing",
                    path.display()
                );
                remove_tree(&path)?;
            }
        }
    }
    Ok(())
}

/// Mount points at or under `dir`, deepest first (from /proc/self/mountinfo).
pub fn mounts_under(mountinfo: &str, dir: &Path) -> Vec<PathBuf> {
    let mut mounts: Vec<PathBuf> = mountinfo
        .lines()
        .filter_map(|line| line.split_whitespace().nth(4))
        .map(|point| PathBuf::from(point.replace("\\040", " ")))
        .filter(|point| point.starts_with(dir))
        .collect();
    mounts.sort_by_key(|point| std::cmp::Reverse(point.components().count()));
    mounts
}

/// Removes a directory tree, first unmounting anything mounted inside it (a chroot tree left by a
/// killed mmdebstrap still has /proc, /sys and /dev mounted: deleting through them would be a
/// disaster).
pub fn remove_tree(dir: &Path) -> Result<()> {
    if dir.symlink_metadata().is_err() {
        return Ok(());
    }
    let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    for point in mounts_under(&mountinfo, &dir) {
        Cmd::new("umount")
            .arg("--lazy")
            .arg(&point)
            .run()
            .with_context(|| format!("unmounting {} before removing it", point.display()))?;
    }
    let still = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    anyhow::ensure!(
        mounts_under(&still, &dir).is_empty(),
        "refusing to remove {}: something is still mounted inside it",
        dir.display()
    );
    fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))
}

/// Replaces `dest` with the complete directory `staged` (a sibling), so that a reader sees the old
/// output or the new one, never a mix or a partial one.
pub fn replace_dir(staged: &Path, dest: &Path) -> Result<()> {
    let parent = dest.parent().unwrap_or(Path::new("."));
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let old = parent.join(format!(".{name}.old-{}", std::process::id()));
    if dest.exists() {
        fs::rename(dest, &old)
            .with_context(|| format!("moving the old {} aside", dest.display()))?;
    }
    fs::rename(staged, dest)
        .with_context(|| format!("renaming the new output to {}", dest.display()))?;
    if old.exists() {
        remove_tree(&old)?;
    }
    Ok(())
}

/// An exclusive hold on a cache directory for one build: a directory created atomically, holding
/// the owner's pid. A hold left by a killed build (dead pid) is taken over.
pub struct CacheLock {
    path: PathBuf,
}

impl CacheLock {
    /// Waits until no other live build holds `cache`, then holds it until dropped.
    pub fn acquire(cache: &Path) -> Result<Self> {
        fs::create_dir_all(cache).with_context(|| format!("creating {}", cache.display()))?;
        let path = cache.join(".build-lock");
        let mut announced = false;
        loop {
            match fs::create_dir(&path) {
                Ok(()) => {
                    fs::write(path.join("pid"), std::process::id().to_string())
                        .with_context(|| format!("writing {}", path.display()))?;
                    return Ok(Self { path });
                }
                Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {
                    let owner = fs::read_to_string(path.join("pid")).unwrap_or_default();
                    let alive = owner
                        .trim()
                        .parse::<u32>()
                        .is_ok_and(|pid| Path::new(&format!("/proc/{pid}")).exists());
                    if !alive {
                        // Give a build that has just created the directory time to write its pid.
                        std::thread::sleep(std::time::Duration::from_millis(200));
                        if fs::read_to_string(path.join("pid")).unwrap_or_default() == owner {
                            let _ = fs::remove_dir_all(&path);
                        }
                        continue;
                    }
                    if !announced {
                        eprintln!(
                            "{:>12} for another build (pid {}) to finish with {}",
                            "Waiting",
                            owner.trim(),
                            cache.display()
                        );
                        announced = true;
                    }
                    std::thread::sleep(std::time::Duration::from_secs(1));
                }
                Err(err) => {
                    return Err(err).with_context(|| format!("creating {}", path.display()))
                }
            }
        }
    }
}

impl Drop for CacheLock {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}
