//! The disk stage: a GPT image with deterministic GUIDs (ESP with the UKI at
//! \EFI\BOOT\BOOTX64.EFI, the erofs root, its verity hash tree), then qcow2. The partition UUIDs
//! of root and verity are the two halves of the root hash (Discoverable Partitions Specification).

use std::{
    fs::{self, File, OpenOptions},
    io::{Read, Seek, SeekFrom, Write},
    path::Path,
};

use anyhow::{bail, Context, Result};
use cvm_core::cmd::Cmd;

/// Sector size of the image.
pub const SECTOR: u64 = 512;
/// Partitions start on 1 MiB boundaries.
const ALIGN: u64 = 1 << 20;
/// GPT type of the EFI system partition.
/// GPT partition name of the erofs root (the initrd finds it by this name).
pub const ROOT_PARTITION: &str = "root";
/// GPT partition name of the root's dm-verity hash tree.
pub const VERITY_PARTITION: &str = "root-verity";
pub const TYPE_ESP: &str = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B";
/// GPT type of an x86-64 root partition.
pub const TYPE_ROOT_X86_64: &str = "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709";
/// GPT type of an x86-64 root verity partition.
pub const TYPE_ROOT_VERITY_X86_64: &str = "2C7357ED-EBD2-46D9-AEC1-23D437EC2BF5";

/// A 32-hex-digit string as a GUID (8-4-4-4-12).
pub fn guid(hex32: &str) -> String {
    let h = hex32.to_uppercase();
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// One partition of the layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    /// GPT partition name (PARTLABEL).
    pub name: &'static str,
    /// Type GUID.
    pub type_guid: &'static str,
    /// Unique partition GUID.
    pub uuid: String,
    /// First sector.
    pub start: u64,
    /// Size in sectors.
    pub sectors: u64,
}

fn align(bytes: u64) -> u64 {
    bytes.div_ceil(ALIGN) * ALIGN
}

/// The partition layout for an ESP of `esp_bytes`, a root of `root_bytes` and a hash tree of
/// `verity_bytes`; returns the partitions and the disk size in bytes.
pub fn layout(
    root_hash: &str,
    esp_bytes: u64,
    root_bytes: u64,
    verity_bytes: u64,
) -> (Vec<Partition>, u64) {
    let esp_uuid = guid(&cvm_core::hash::sha256_hex(format!("esp:{root_hash}").as_bytes())[..32]);
    let mut start = ALIGN;
    let mut parts = Vec::new();
    for (name, type_guid, uuid, bytes) in [
        ("esp", TYPE_ESP, esp_uuid, esp_bytes),
        (
            ROOT_PARTITION,
            TYPE_ROOT_X86_64,
            guid(&root_hash[..32]),
            root_bytes,
        ),
        (
            VERITY_PARTITION,
            TYPE_ROOT_VERITY_X86_64,
            guid(&root_hash[32..64]),
            verity_bytes,
        ),
    ] {
        let size = align(bytes);
        parts.push(Partition {
            name,
            type_guid,
            uuid,
            start: start / SECTOR,
            sectors: size / SECTOR,
        });
        start += size;
    }
    // Room for the backup GPT at the end.
    (parts, start + ALIGN)
}

/// The sfdisk script for `partitions`.
pub fn sfdisk_script(disk_guid: &str, partitions: &[Partition]) -> String {
    let mut script = format!(
        "label: gpt\nlabel-id: {disk_guid}\nunit: sectors\nsector-size: {SECTOR}\nfirst-lba: 2048\n"
    );
    for p in partitions {
        script.push_str(&format!(
            "start={}, size={}, type={}, uuid={}, name=\"{}\"\n",
            p.start, p.sectors, p.type_guid, p.uuid, p.name
        ));
    }
    script
}

/// Builds the FAT ESP image `esp` holding `uki` at \EFI\BOOT\BOOTX64.EFI.
pub fn build_esp(uki: &Path, esp: &Path, bytes: u64, volume_id: &str, epoch: u64) -> Result<()> {
    Cmd::new("mkfs.vfat")
        .args([
            "-C",
            "--invariant",
            "-F",
            "32",
            "-S",
            "512",
            "-n",
            "ESP",
            "-i",
            volume_id,
        ])
        .arg(esp)
        .arg((bytes / 1024).to_string())
        .env("SOURCE_DATE_EPOCH", epoch.to_string())
        .run()
        .context("formatting the EFI system partition")?;
    let env = |cmd: Cmd| {
        cmd.env("SOURCE_DATE_EPOCH", epoch.to_string())
            .env("MTOOLS_SKIP_CHECK", "1")
            .env("TZ", "UTC")
    };
    env(Cmd::new("mmd")
        .arg("-i")
        .arg(esp)
        .args(["::/EFI", "::/EFI/BOOT"]))
    .run()
    .context("creating \\EFI\\BOOT on the ESP")?;
    env(Cmd::new("mcopy")
        .arg("-i")
        .arg(esp)
        .arg(uki)
        .arg("::/EFI/BOOT/BOOTX64.EFI"))
    .run()
    .context("copying the UKI to the ESP")?;
    Ok(())
}

fn copy_into(disk: &mut File, source: &Path, offset: u64) -> Result<()> {
    let mut input = File::open(source).with_context(|| format!("opening {}", source.display()))?;
    disk.seek(SeekFrom::Start(offset))?;
    std::io::copy(&mut input, disk)
        .with_context(|| format!("writing {} into the disk image", source.display()))?;
    Ok(())
}

/// Builds `stage/disk.raw` from the ESP, root and verity images.
pub fn build_raw(
    root_hash: &str,
    uki: &Path,
    root: &Path,
    verity: &Path,
    epoch: u64,
    stage: &Path,
) -> Result<Vec<Partition>> {
    let size = |path: &Path| -> Result<u64> {
        Ok(fs::metadata(path)
            .with_context(|| format!("reading {}", path.display()))?
            .len())
    };
    // FAT32 needs at least 32 MiB; leave the UKI room to grow.
    let esp_bytes = align((size(uki)? + (8 << 20)).max(64 << 20));
    let (partitions, disk_bytes) = layout(root_hash, esp_bytes, size(root)?, size(verity)?);
    let esp = stage.join("esp.img");
    let volume_id = &cvm_core::hash::sha256_hex(format!("esp-volume:{root_hash}").as_bytes())[..8];
    build_esp(uki, &esp, esp_bytes, volume_id, epoch)?;
    let raw = stage.join("disk.raw");
    let disk_guid = guid(&cvm_core::hash::sha256_hex(format!("disk:{root_hash}").as_bytes())[..32]);
    {
        let file = File::create(&raw).with_context(|| format!("creating {}", raw.display()))?;
        file.set_len(disk_bytes)?;
    }
    Cmd::new("sfdisk")
        .args(["--no-reread", "--no-tell-kernel", "--quiet"])
        .arg(&raw)
        .stdin_bytes(sfdisk_script(&disk_guid, &partitions))
        .run()
        .context("writing the GPT partition table")?;
    let mut disk = OpenOptions::new()
        .write(true)
        .open(&raw)
        .with_context(|| format!("opening {}", raw.display()))?;
    for (part, source) in partitions.iter().zip([&esp, root, verity]) {
        copy_into(&mut disk, source, part.start * SECTOR)?;
    }
    disk.flush()?;
    fs::remove_file(&esp)?;
    Ok(partitions)
}

/// Converts the raw image to qcow2.
pub fn to_qcow2(raw: &Path, qcow2: &Path) -> Result<()> {
    Cmd::new("qemu-img")
        .args(["convert", "-f", "raw", "-O", "qcow2"])
        .arg(raw)
        .arg(qcow2)
        .run()
        .context("converting the disk to qcow2")?;
    Ok(())
}

/// A GPT partition entry read back from an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GptEntry {
    /// Partition name.
    pub name: String,
    /// First byte.
    pub offset: u64,
    /// Length in bytes.
    pub length: u64,
}

/// Reads the primary GPT of a raw disk image (512-byte sectors).
pub fn read_gpt(image: &mut (impl Read + Seek)) -> Result<Vec<GptEntry>> {
    let mut header = [0u8; 92];
    image.seek(SeekFrom::Start(SECTOR))?;
    image
        .read_exact(&mut header)
        .context("reading the GPT header")?;
    if &header[..8] != b"EFI PART" {
        bail!("no GPT header at LBA 1");
    }
    let u64_at = |at: usize| u64::from_le_bytes(header[at..at + 8].try_into().expect("8 bytes"));
    let u32_at = |at: usize| u32::from_le_bytes(header[at..at + 4].try_into().expect("4 bytes"));
    let entries_lba = u64_at(72);
    let count = u32_at(80) as usize;
    let entry_size = u32_at(84) as usize;
    if entry_size < 128 || count > 1024 {
        bail!("implausible GPT entry table ({count} entries of {entry_size} bytes)");
    }
    let mut table = vec![0u8; count * entry_size];
    image.seek(SeekFrom::Start(entries_lba * SECTOR))?;
    image
        .read_exact(&mut table)
        .context("reading the GPT entries")?;
    let mut entries = Vec::new();
    for raw in table.chunks(entry_size) {
        if raw[..16].iter().all(|b| *b == 0) {
            continue;
        }
        let first = u64::from_le_bytes(raw[32..40].try_into().expect("8 bytes"));
        let last = u64::from_le_bytes(raw[40..48].try_into().expect("8 bytes"));
        let name: Vec<u16> = raw[56..128]
            .chunks(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .take_while(|c| *c != 0)
            .collect();
        entries.push(GptEntry {
            name: String::from_utf16_lossy(&name),
            offset: first * SECTOR,
            length: (last + 1 - first) * SECTOR,
        });
    }
    Ok(entries)
}

/// Copies the partition `name` of the qcow2 image `qcow2` to the raw file `out` with `qemu-img
/// convert` over a byte range of the image, without writing the whole raw disk first (`work`
/// holds the GPT it reads on the way).
pub fn extract_partition_qcow2(qcow2: &Path, name: &str, out: &Path, work: &Path) -> Result<()> {
    // QEMU's option syntax doubles a literal comma.
    let file = qcow2.to_string_lossy().replace(',', ",,");
    let range = |offset: u64, length: u64, to: &Path| {
        Cmd::new("qemu-img")
            .args(["convert", "-O", "raw", "--image-opts"])
            .arg(format!(
                "driver=raw,offset={offset},size={length},file.driver=qcow2,file.file.filename={file}"
            ))
            .arg(to)
            .run()
            .with_context(|| format!("reading {} out of {}", to.display(), qcow2.display()))
    };
    // The protective MBR, the header and 128 entries of 128 bytes: the first 34 sectors.
    let gpt = work.join("gpt.bin");
    range(0, 34 * SECTOR, &gpt)?;
    let entry = read_gpt(&mut File::open(&gpt)?)?
        .into_iter()
        .find(|e| e.name == name)
        .with_context(|| format!("{} has no partition named {name}", qcow2.display()))?;
    fs::remove_file(&gpt)?;
    range(entry.offset, entry.length, out)?;
    Ok(())
}
