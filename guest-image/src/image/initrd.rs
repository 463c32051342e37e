//! The `initrd` stage: our own initrd, with no initramfs-tools, udev, shell or device-mapper
//! library in it. It holds `/init` (the static `cvm-init` binary, src/bin/cvm-init.rs), the
//! kernel modules that opening the dm-verity root needs (their modules.dep closure, decompressed,
//! with their signatures, numbered in load order) and `/dev/console`, as one uncompressed newc
//! cpio archive written here: every field is fixed (owner root, mtime the model's epoch, inodes
//! numbered in order), so the same inputs give the same bytes.

use std::{fs, path::Path};

use anyhow::{bail, Context, Result};
use cvm_core::cmd::Cmd;

use super::harden::{module_name, ModuleIndex};

/// The initrd's own directory (relative to its root; /init removes it before switching root).
pub const INIT_DIR: &str = "lib/cvm-init";
/// Where the initrd keeps its modules (cvm-init loads them in file-name order, `NNN-name.ko`).
pub const MODULE_DIR: &str = "lib/cvm-init/modules";

/// Modules the initrd needs to open the dm-verity root: the kernel must have each, as a module
/// file (which goes into the initrd with what it needs) or built in.
pub const BOOT_MODULES: &[&str] = &["dm-mod", "dm-verity", "erofs", "virtio_blk", "virtio_pci"];

/// Bumped when the archive's layout changes, so cached initrds are rebuilt.
pub const FORMAT_VERSION: &str = "1";

/// The device-mapper name of the root (`/dev/mapper/root`, as `root=` on the command line says).
pub const DM_NAME: &str = "root";

/// What the kernel command line asks of `/init`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitCmdline {
    /// `cvm.roothash=`: the dm-verity root hash (hex).
    pub root_hash: String,
    /// `cvm.verity_data=`: the data device (`PARTLABEL=NAME` or a `/dev/…` path).
    pub data: String,
    /// `cvm.verity_hash=`: the hash device.
    pub hash: String,
    /// `rootfstype=` (default erofs).
    pub fstype: String,
    /// `init=` (default /sbin/init).
    pub init: String,
}

impl InitCmdline {
    /// Parses `/proc/cmdline`; the last occurrence of a key wins, as in the kernel.
    pub fn parse(text: &str) -> Result<Self, String> {
        let value = |key: &str| {
            text.split_whitespace()
                .rev()
                .find_map(|word| word.strip_prefix(key))
                .map(str::to_owned)
        };
        let root_hash = value("cvm.roothash=").ok_or(
            "the kernel command line has no cvm.roothash= (the UKI's .cmdline must carry it)",
        )?;
        if root_hash.len() < 64 || !root_hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!("cvm.roothash={root_hash} is not a hex digest"));
        }
        Ok(InitCmdline {
            root_hash,
            data: value("cvm.verity_data=")
                .unwrap_or_else(|| format!("PARTLABEL={}", super::disk::ROOT_PARTITION)),
            hash: value("cvm.verity_hash=")
                .unwrap_or_else(|| format!("PARTLABEL={}", super::disk::VERITY_PARTITION)),
            fstype: value("rootfstype=").unwrap_or_else(|| "erofs".to_owned()),
            init: value("init=").unwrap_or_else(|| "/sbin/init".to_owned()),
        })
    }
}

/// The value of `key` (`PARTNAME=`, `DEVNAME=`) in a block device's sysfs `uevent`.
pub fn uevent_field<'a>(uevent: &'a str, key: &str) -> Option<&'a str> {
    uevent.lines().find_map(|line| line.strip_prefix(key))
}

/// The fields of a dm-verity superblock (veritysetup's on-disk format, version 1) the table needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VeritySuperblock {
    /// Hash type (1 for everything veritysetup makes by default).
    pub hash_type: u32,
    /// The verity UUID.
    pub uuid: [u8; 16],
    /// Hash algorithm name (`sha256`).
    pub algorithm: String,
    /// Data block size in bytes.
    pub data_block_size: u32,
    /// Hash block size in bytes.
    pub hash_block_size: u32,
    /// Number of data blocks.
    pub data_blocks: u64,
    /// The salt.
    pub salt: Vec<u8>,
}

impl VeritySuperblock {
    /// Parses the first 512 bytes of a hash device.
    pub fn parse(block: &[u8]) -> Result<Self, String> {
        if block.len() < 512 {
            return Err("shorter than a verity superblock (512 bytes)".to_owned());
        }
        let u32_at = |at: usize| {
            u32::from_le_bytes([block[at], block[at + 1], block[at + 2], block[at + 3]])
        };
        if &block[..8] != b"verity\0\0" || u32_at(8) != 1 {
            return Err("no dm-verity superblock (version 1)".to_owned());
        }
        let algorithm = block[32..64]
            .split(|&b| b == 0)
            .next()
            .map(|name| String::from_utf8_lossy(name).into_owned())
            .unwrap_or_default();
        let salt_size = usize::from(u16::from_le_bytes([block[80], block[81]]));
        let (data_block_size, hash_block_size) = (u32_at(64), u32_at(68));
        let sizes_ok = [data_block_size, hash_block_size]
            .iter()
            .all(|size| size.is_power_of_two() && (512..=1 << 20).contains(size));
        if salt_size > 256 || algorithm.is_empty() || !sizes_ok {
            return Err("a malformed verity superblock".to_owned());
        }
        let mut uuid = [0u8; 16];
        uuid.copy_from_slice(&block[16..32]);
        let mut data_blocks = [0u8; 8];
        data_blocks.copy_from_slice(&block[72..80]);
        Ok(VeritySuperblock {
            hash_type: u32_at(12),
            uuid,
            algorithm,
            data_block_size,
            hash_block_size,
            data_blocks: u64::from_le_bytes(data_blocks),
            salt: block[88..88 + salt_size].to_vec(),
        })
    }

    /// The `verity` target's table line for `data` and `hash` with `root_hash`. veritysetup's
    /// layout puts the superblock in the hash device's first hash block, so hashes start at 1.
    pub fn table(&self, data: &str, hash: &str, root_hash: &str) -> String {
        format!(
            "{} {data} {hash} {} {} {} 1 {} {root_hash} {}",
            self.hash_type,
            self.data_block_size,
            self.hash_block_size,
            self.data_blocks,
            self.algorithm,
            if self.salt.is_empty() {
                "-".to_owned()
            } else {
                hex::encode(&self.salt)
            }
        )
    }

    /// The device's length in 512-byte sectors.
    pub fn sectors(&self) -> u64 {
        self.data_blocks * u64::from(self.data_block_size) / 512
    }

    /// The device-mapper uuid systemd-veritysetup gives the device (`CRYPT-VERITY-<uuid>-<name>`),
    /// which the readiness unit recognises as a verity root.
    pub fn dm_uuid(&self) -> String {
        format!("CRYPT-VERITY-{}-{DM_NAME}", hex::encode(self.uuid))
    }
}

/// Size of `struct dm_ioctl` (linux/dm-ioctl.h, interface version 4).
pub const DM_IOCTL_SIZE: usize = 312;
/// Size of `struct dm_target_spec`.
const DM_TARGET_SPEC_SIZE: usize = 40;
/// `DM_READONLY_FLAG`.
pub const DM_READONLY_FLAG: u32 = 1;
/// The request numbers `_IOWR(0xfd, nr, struct dm_ioctl)` of the three ioctls `/init` uses.
pub const fn dm_ioctl_request(nr: u32) -> u32 {
    (3 << 30) | ((DM_IOCTL_SIZE as u32) << 16) | (0xfd << 8) | nr
}
/// `DM_DEV_CREATE`.
pub const DM_DEV_CREATE: u32 = dm_ioctl_request(3);
/// `DM_DEV_SUSPEND` (without `DM_SUSPEND_FLAG` it resumes: activates the loaded table).
pub const DM_DEV_SUSPEND: u32 = dm_ioctl_request(6);
/// `DM_TABLE_LOAD`.
pub const DM_TABLE_LOAD: u32 = dm_ioctl_request(9);

/// The argument of one device-mapper ioctl for the device [`DM_NAME`]: `uuid` (create only),
/// `flags`, and at most one target `(type, sectors, params)`. u64 words keep it 8-byte aligned,
/// as the kernel expects of target specs.
pub fn dm_ioctl_buffer(
    uuid: &str,
    flags: u32,
    target: Option<(&str, u64, &str)>,
) -> Result<Vec<u64>, String> {
    let params = target.map_or(0, |(_, _, params)| params.len());
    let bytes = (DM_IOCTL_SIZE + DM_TARGET_SPEC_SIZE + params + 1).max(16 << 10);
    let mut buffer = vec![0u8; bytes.next_multiple_of(8)];
    let put_u32 = |buffer: &mut [u8], at: usize, value: u32| {
        buffer[at..at + 4].copy_from_slice(&value.to_le_bytes())
    };
    put_u32(&mut buffer, 0, 4); // version 4.0.0
    let size = buffer.len() as u32;
    put_u32(&mut buffer, 12, size); // data_size
    put_u32(&mut buffer, 16, DM_IOCTL_SIZE as u32); // data_start
    put_u32(&mut buffer, 28, flags);
    buffer[48..48 + DM_NAME.len()].copy_from_slice(DM_NAME.as_bytes());
    if uuid.len() >= 129 {
        return Err(format!("the device-mapper uuid {uuid} is too long"));
    }
    buffer[176..176 + uuid.len()].copy_from_slice(uuid.as_bytes());
    if let Some((kind, sectors, params)) = target {
        if kind.len() >= 16 {
            return Err(format!("the target type {kind} is too long"));
        }
        let spec = DM_IOCTL_SIZE;
        put_u32(&mut buffer, 20, 1); // target_count
        buffer[spec + 8..spec + 16].copy_from_slice(&sectors.to_le_bytes()); // length
        buffer[spec + 24..spec + 24 + kind.len()].copy_from_slice(kind.as_bytes());
        let at = spec + DM_TARGET_SPEC_SIZE;
        buffer[at..at + params.len()].copy_from_slice(params.as_bytes());
    }
    Ok(buffer
        .chunks_exact(8)
        .map(|word| u64::from_ne_bytes(word.try_into().expect("8 bytes")))
        .collect())
}

/// The (major, minor) of the `dev` field of a device-mapper ioctl's answer (the kernel's
/// `huge_encode_dev`).
pub fn dm_answer_device(answer: &[u64]) -> (u32, u32) {
    let dev = u64::from_le_bytes(answer[5].to_ne_bytes());
    let major = ((dev >> 8) & 0xfff) as u32;
    let minor = ((dev & 0xff) | ((dev >> 12) & 0xfff00)) as u32;
    (major, minor)
}

/// What went into one initrd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitrdReport {
    /// Module names in load order.
    pub modules: Vec<String>,
    /// Size of the archive in bytes.
    pub bytes: u64,
}

/// The module files `wanted` need from `index`, dependencies first (depth-first, in the order
/// `wanted` names them), as (name, path relative to the module directory). Built-in modules need
/// nothing; a module the kernel has neither as a file nor built in is an error.
pub fn load_order(index: &ModuleIndex, wanted: &[&str]) -> Result<Vec<(String, String)>> {
    fn visit(
        index: &ModuleIndex,
        name: &str,
        seen: &mut std::collections::BTreeSet<String>,
        order: &mut Vec<(String, String)>,
    ) {
        if !seen.insert(name.to_owned()) {
            return;
        }
        if let Some((path, deps)) = index.modules.get(name) {
            for dep in deps {
                visit(index, dep, seen, order);
            }
            order.push((name.to_owned(), path.clone()));
        }
    }
    let mut seen = std::collections::BTreeSet::new();
    let mut order = Vec::new();
    for name in wanted.iter().map(|name| module_name(name)) {
        if !index.has(&name) {
            bail!(
                "the guest kernel has no module {name:?}, which the initrd needs to open the dm-verity root; choose a kernel that has it (guest.kernel)"
            );
        }
        visit(index, &name, &mut seen, &mut order);
    }
    Ok(order)
}

/// The contents of a module file, decompressed (`.ko.zst`, `.ko.xz`, `.ko.gz` or `.ko`). The
/// signature appended to the module stays in the decompressed bytes, where the kernel checks it.
pub fn module_bytes(path: &Path) -> Result<Vec<u8>> {
    let name = path.to_string_lossy();
    let tool = if name.ends_with(".ko.zst") {
        "zstd"
    } else if name.ends_with(".ko.xz") {
        "xz"
    } else if name.ends_with(".ko.gz") {
        "gzip"
    } else if name.ends_with(".ko") {
        return fs::read(path).with_context(|| format!("reading {}", path.display()));
    } else {
        bail!("{}: not a kernel module file", path.display());
    };
    Ok(Cmd::new(tool)
        .args(["-d", "-c"])
        .arg(path)
        .run()
        .with_context(|| format!("decompressing {}", path.display()))?
        .stdout)
}

/// A newc ("070701") cpio archive, written in memory.
pub struct Cpio {
    bytes: Vec<u8>,
    inode: u32,
    mtime: u32,
}

impl Cpio {
    /// An empty archive whose entries all carry `mtime`.
    pub fn new(mtime: u32) -> Self {
        Cpio {
            bytes: Vec::new(),
            inode: 0,
            mtime,
        }
    }

    fn entry(&mut self, name: &str, mode: u32, rdev: (u32, u32), data: &[u8]) {
        self.inode += 1;
        let nlink = if mode & 0o170000 == 0o040000 { 2 } else { 1 };
        let fields = [
            self.inode,
            mode,
            0, // uid
            0, // gid
            nlink,
            self.mtime,
            data.len() as u32,
            0, // dev major
            0, // dev minor
            rdev.0,
            rdev.1,
            name.len() as u32 + 1,
            0, // check
        ];
        self.bytes.extend_from_slice(b"070701");
        for field in fields {
            self.bytes
                .extend_from_slice(format!("{field:08x}").as_bytes());
        }
        self.bytes.extend_from_slice(name.as_bytes());
        self.bytes.push(0);
        self.pad();
        self.bytes.extend_from_slice(data);
        self.pad();
    }

    fn pad(&mut self) {
        while self.bytes.len() % 4 != 0 {
            self.bytes.push(0);
        }
    }

    /// A directory (its parents must come first).
    pub fn dir(&mut self, name: &str) {
        self.entry(name, 0o040755, (0, 0), &[]);
    }

    /// A regular file with permission bits `perm`.
    pub fn file(&mut self, name: &str, perm: u32, data: &[u8]) {
        self.entry(name, 0o100000 | perm, (0, 0), data);
    }

    /// A character device node.
    pub fn char_device(&mut self, name: &str, perm: u32, major: u32, minor: u32) {
        self.entry(name, 0o020000 | perm, (major, minor), &[]);
    }

    /// The archive with its trailer.
    pub fn finish(mut self) -> Vec<u8> {
        self.inode = 0;
        self.entry("TRAILER!!!", 0, (0, 0), &[]);
        self.bytes
    }
}

/// Builds the initrd of the kernel `kernel_version` whose modules are under `tree` (the rootfs
/// stage's tree), with `init` as `/init`; writes it to `out`.
pub fn build(
    tree: &Path,
    kernel_version: &str,
    init: &[u8],
    epoch: u64,
    out: &Path,
) -> Result<InitrdReport> {
    let module_dir = tree.join("usr/lib/modules").join(kernel_version);
    let index = ModuleIndex::read(&module_dir)?;
    let order = load_order(&index, BOOT_MODULES)?;
    let mut cpio = Cpio::new(u32::try_from(epoch).unwrap_or(u32::MAX));
    for dir in ["dev", "proc", "sys", "root", "lib", INIT_DIR, MODULE_DIR] {
        cpio.dir(dir);
    }
    // The kernel opens /dev/console for /init's output before /init mounts devtmpfs.
    cpio.char_device("dev/console", 0o600, 5, 1);
    for (number, (name, path)) in order.iter().enumerate() {
        let bytes = module_bytes(&module_dir.join(path))?;
        cpio.file(
            &format!("{MODULE_DIR}/{number:03}-{name}.ko"),
            0o644,
            &bytes,
        );
    }
    cpio.file("init", 0o755, init);
    let bytes = cpio.finish();
    fs::write(out, &bytes).with_context(|| format!("writing {}", out.display()))?;
    Ok(InitrdReport {
        modules: order.into_iter().map(|(name, _)| name).collect(),
        bytes: bytes.len() as u64,
    })
}
