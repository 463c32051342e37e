//! The guest readiness line (DESIGN.md §5): `CVM-STATUS {json}` on the first serial port.

use serde::{Deserialize, Serialize};

/// The prefix of the readiness line.
pub const PREFIX: &str = "CVM-STATUS ";

/// What the guest reports once boot completes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CvmStatus {
    /// True when boot completed with the root verified, the guest firewall loaded and no failed
    /// unit.
    pub ready: bool,
    /// The running kernel's release.
    pub kernel: String,
    /// `none`, `sev-snp` or `tdx`.
    pub tee: String,
    /// `active` when / is a dm-verity device, else what it is (`inactive`, `not-verity`).
    pub verity: String,
    /// Units systemd lists as failed.
    pub failed_units: Vec<String>,
    /// `n/a` without an NVIDIA GPU, else `on` or `off`, or `error: …` when the driver or
    /// nvidia-smi cannot tell.
    pub gpu_cc: String,
    /// The launch measurement from the TEE's report (hex), null without a TEE.
    pub measurement: Option<String>,
    /// `active` when the guest firewall (`cvm-egress.service`) is loaded, else the unit's state;
    /// empty in lines from images that predate it.
    #[serde(default)]
    pub firewall: String,
}

impl CvmStatus {
    /// The line the guest prints.
    pub fn to_line(&self) -> String {
        format!(
            "{PREFIX}{}",
            serde_json::to_string(self).expect("the status is plain data")
        )
    }
}

/// Finds the first `CVM-STATUS` line in a serial log and parses it. A line cut off mid-way (the
/// log is read while the guest writes it) or not valid JSON is `None`.
pub fn find_in_log(log: &str) -> Option<Result<CvmStatus, String>> {
    log.lines().find_map(|line| {
        let start = line.find(PREFIX)?;
        let json = line[start + PREFIX.len()..].trim();
        if !line.ends_with('}') && !line.ends_with("}\r") {
            return None;
        }
        Some(serde_json::from_str(json).map_err(|err| format!("{err}: {json}")))
    })
}

/// Why a boot failed, from the first telling line of `log`, if any.
pub fn boot_failure(log: &str) -> Option<String> {
    const MARKERS: &[&str] = &[
        "is corrupted",
        "cvm-init: cannot boot",
        "cvm-verity: dm-verity refused",
        "cvm-verity: root devices",
        "Gave up waiting for root",
        "Failed to mount /dev/mapper/root",
        "Kernel panic",
        "emergency mode",
        "Shell>",
    ];
    let line = log
        .lines()
        .find(|line| MARKERS.iter().any(|marker| line.contains(marker)))?;
    let line = strip_escapes(line).trim().to_owned();
    Some(if line.contains("verity") {
        format!("dm-verity refused the root filesystem (it does not match the root hash in the UKI): {line}")
    } else {
        line
    })
}

/// `line` without ANSI escape sequences (the firmware clears the screen on the serial console).
pub fn strip_escapes(line: &str) -> String {
    let mut out = String::new();
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.peek() == Some(&'[') {
                chars.next();
                for next in chars.by_ref() {
                    if next.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}
