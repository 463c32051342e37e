//! The root image stage: erofs (lz4hc level 9: a third of level 12's time for 0.1 % more
//! bytes; every timestamp and the UUID fixed) and its dm-verity hash
//! tree (salt and UUID derived from the stage key), with the root hash recorded.

use std::path::Path;

use anyhow::{Context, Result};
use cvm_core::cmd::Cmd;

/// A UUID string made from the first 16 bytes of SHA-256(`purpose` ‖ `key`), marked as version 4
/// (random-looking) so tools accept it.
pub fn derived_uuid(purpose: &str, key: &str) -> String {
    let digest = cvm_core::hash::sha256_hex(format!("{purpose}:{key}").as_bytes());
    let mut bytes = hex::decode(&digest[..32]).expect("hex from sha256_hex");
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let h = hex::encode(bytes);
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// The root hash from `veritysetup format`'s output.
pub fn parse_root_hash(output: &str) -> Option<String> {
    output.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        (key.trim() == "Root hash").then(|| value.trim().to_owned())
    })
}

/// Builds `stage/root.erofs` and `stage/root.verity` from `tree`; returns the root hash.
pub fn build(tree: &Path, epoch: u64, key: &str, stage: &Path) -> Result<String> {
    let erofs = stage.join("root.erofs");
    let verity = stage.join("root.verity");
    Cmd::new("mkfs.erofs")
        .arg("-zlz4hc,9")
        .arg(format!("-T{epoch}"))
        .arg(format!("-U{}", derived_uuid("erofs", key)))
        .arg(&erofs)
        .arg(tree)
        .env("SOURCE_DATE_EPOCH", epoch.to_string())
        .run()
        .context("building the erofs root image")?;
    let salt = cvm_core::hash::sha256_hex(format!("verity-salt:{key}").as_bytes());
    let output = Cmd::new("veritysetup")
        .args(["format", "--data-block-size=4096", "--hash-block-size=4096"])
        .arg(format!("--salt={salt}"))
        .arg(format!("--uuid={}", derived_uuid("verity", key)))
        .arg(&erofs)
        .arg(&verity)
        .read()
        .context("building the dm-verity hash tree")?;
    let root_hash = parse_root_hash(&output).context("veritysetup format printed no root hash")?;
    std::fs::write(stage.join("roothash"), &root_hash)?;
    Ok(root_hash)
}
