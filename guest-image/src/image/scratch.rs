//! Where a build works on its file trees, and how the stage cache keeps them.
//!
//! The rootfs and harden stages produce whole file trees (about 14 000 files for the base
//! profile). Creating that many files is the slowest thing a build does on a small VM's ext4:
//! a bare mmdebstrap took 40 s with its temporary directory on ext4 and 24 s on tmpfs, and tar
//! spent 5–6 s of kernel time unpacking the 5 800 files of linux-modules-extra onto ext4
//! against 0.2 s onto tmpfs. So a build works on its trees in a scratch directory in RAM
//! (`/dev/shm` when it is a tmpfs with room to spare), and the stage cache keeps each tree as
//! one `tree.tar` (a sequential write, under a second). A later build that needs a cached
//! stage's tree unpacks it into its scratch directory (0.4 s for the base root).
//!
//! The scratch directory belongs to one build (`build-<n>.tmp-<pid>`) and is removed when the
//! build ends; one left by a killed build is removed by the next build, as the cache's own
//! leftovers are. Without a roomy tmpfs the scratch directory is `<cache>/scratch` on disk.

use std::{
    fs,
    path::{Path, PathBuf},
    sync::atomic::{AtomicU64, Ordering},
};

use anyhow::{Context, Result};
use cvm_core::cmd::Cmd;

use super::cache::{remove_tree, sweep_stale};

/// The RAM file system a build prefers for its scratch trees.
pub const RAM_DIR: &str = "/dev/shm";

/// Room a RAM scratch directory must have, both free in the tmpfs and available as memory: the
/// gpu profile's root and its hardened copy take a few GiB at most.
pub const RAM_NEEDED: u64 = 6 << 30;

/// The tree file a tree-producing stage keeps in its cache directory.
pub const TREE_TAR: &str = "tree.tar";

const TMPFS_MAGIC: i64 = 0x0102_1994;

/// Where scratch trees go: `ram` (a tmpfs directory, with its free bytes) when it has
/// [`RAM_NEEDED`] free and the machine has that much memory available, else `disk`.
pub fn choose_base(
    ram: Option<(&Path, u64)>,
    mem_available: Option<u64>,
    disk: &Path,
) -> (PathBuf, bool) {
    match ram {
        Some((dir, free))
            if free >= RAM_NEEDED && mem_available.is_some_and(|m| m >= RAM_NEEDED) =>
        {
            (dir.join("cvm-stack"), true)
        }
        _ => (disk.to_path_buf(), false),
    }
}

/// MemAvailable from /proc/meminfo's text, in bytes.
pub fn mem_available(meminfo: &str) -> Option<u64> {
    meminfo.lines().find_map(|line| {
        let rest = line.strip_prefix("MemAvailable:")?;
        let kib: u64 = rest.trim().strip_suffix("kB")?.trim().parse().ok()?;
        Some(kib * 1024)
    })
}

/// `dir`'s free bytes when it is a tmpfs.
fn tmpfs_free(dir: &Path) -> Option<u64> {
    let fs = rustix::fs::statfs(dir).ok()?;
    if fs.f_type as i64 != TMPFS_MAGIC {
        return None;
    }
    let vfs = rustix::fs::statvfs(dir).ok()?;
    Some(vfs.f_bavail.saturating_mul(vfs.f_frsize))
}

static BUILDS: AtomicU64 = AtomicU64::new(0);

/// One build's scratch directory, made on first use and removed on drop.
pub struct Scratch {
    base: PathBuf,
    in_ram: bool,
    dir: PathBuf,
    made: std::cell::Cell<bool>,
}

impl Scratch {
    /// The scratch directory of a build whose cache is `cache`; what killed builds left in its
    /// parent is removed now.
    pub fn new(cache: &Path) -> Result<Self> {
        let ram = Path::new(RAM_DIR);
        let meminfo = fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let (base, in_ram) = choose_base(
            tmpfs_free(ram).map(|free| (ram, free)),
            mem_available(&meminfo),
            &cache.join("scratch"),
        );
        sweep_stale(&base)?;
        let n = BUILDS.fetch_add(1, Ordering::Relaxed);
        let dir = base.join(format!("build-{n}.tmp-{}", std::process::id()));
        Ok(Self {
            base,
            in_ram,
            dir,
            made: std::cell::Cell::new(false),
        })
    }

    /// True when the scratch directory is in RAM.
    pub fn in_ram(&self) -> bool {
        self.in_ram
    }

    fn root(&self) -> Result<&Path> {
        if !self.made.get() {
            fs::create_dir_all(&self.base)
                .with_context(|| format!("creating {}", self.base.display()))?;
            fs::create_dir_all(&self.dir)
                .with_context(|| format!("creating {}", self.dir.display()))?;
            self.made.set(true);
            eprintln!(
                "{:>12} trees in {} ({})",
                "Scratch",
                self.dir.display(),
                if self.in_ram { "RAM" } else { "on disk" }
            );
        }
        Ok(&self.dir)
    }

    /// The path for the tree `name` (which may not exist yet).
    pub fn path(&self, name: &str) -> Result<PathBuf> {
        Ok(self.root()?.join(name))
    }

    /// A tree to read: the one this build left at `name`, else `tar` unpacked there.
    pub fn tree(&self, name: &str, tar: &Path) -> Result<PathBuf> {
        let path = self.path(name)?;
        if !path.exists() {
            unpack(tar, &path)?;
        }
        Ok(path)
    }

    /// A tree to change, as `to`: the tree this build left at `from` (moved, so it is gone from
    /// there), else `tar` unpacked.
    pub fn take_tree(&self, from: &str, tar: &Path, to: &str) -> Result<PathBuf> {
        let (from, to) = (self.path(from)?, self.path(to)?);
        remove_tree(&to)?;
        if from.exists() {
            fs::rename(&from, &to)
                .with_context(|| format!("moving {} to {}", from.display(), to.display()))?;
        } else {
            unpack(tar, &to)?;
        }
        Ok(to)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if self.made.get() {
            if let Err(err) = remove_tree(&self.dir) {
                eprintln!(
                    "{:>12} could not remove the scratch directory {}: {err:#}",
                    "Warning",
                    self.dir.display()
                );
            }
        }
    }
}

/// The tar options that keep everything a root tree has: numeric owners, modes (setuid bits
/// included), hard links, device nodes and extended attributes (file capabilities).
const TAR_FIDELITY: &[&str] = &["--numeric-owner", "--xattrs", "--xattrs-include=*"];

/// Writes `tree` as the tar file `tar` (entries sorted by name).
pub fn pack(tree: &Path, tar: &Path) -> Result<()> {
    Cmd::new("tar")
        .arg("--create")
        .arg("--file")
        .arg(tar)
        .arg("--directory")
        .arg(tree)
        .args(TAR_FIDELITY)
        .args(["--sort=name", "--format=posix", "."])
        .run()
        .map(|_| ())
        .with_context(|| format!("keeping the tree {} as {}", tree.display(), tar.display()))
}

/// Unpacks the tar file `tar` into the new directory `tree`.
pub fn unpack(tar: &Path, tree: &Path) -> Result<()> {
    fs::create_dir(tree).with_context(|| format!("creating {}", tree.display()))?;
    Cmd::new("tar")
        .arg("--extract")
        .arg("--file")
        .arg(tar)
        .arg("--directory")
        .arg(tree)
        .args(TAR_FIDELITY)
        .args(["--same-permissions", "--same-owner"])
        .run()
        .map(|_| ())
        .with_context(|| format!("unpacking the cached tree {}", tar.display()))
}
