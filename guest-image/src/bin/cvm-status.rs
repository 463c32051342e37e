//! `cvm-status`: runs in the guest once boot completes and prints one `CVM-STATUS {json}` line
//! (DESIGN.md §5) on its stdout, which its unit connects to the first serial port. The guest has no
//! shell, so this small static binary does the whole report. With `--failure` (run by the emergency
//! and rescue units) it reports `ready: false` and exits non-zero.

use std::{fs, path::Path, process::ExitCode};

use cvm_core::cmd::Cmd;
use guest_image::image::status::CvmStatus;

fn main() -> ExitCode {
    let failure = std::env::args().any(|arg| arg == "--failure");
    let status = collect(failure);
    println!("{}", status.to_line());
    if status.ready {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn collect(failure: bool) -> CvmStatus {
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default();
    let tee = tee();
    let verity = verity();
    let failed_units = failed_units();
    let measurement = if tee == "none" {
        None
    } else {
        measurement(&tee)
    };
    let ready = !failure && verity == "active" && failed_units.is_empty();
    CvmStatus {
        ready,
        kernel,
        tee,
        verity,
        failed_units,
        gpu_cc: gpu_cc(),
        measurement,
    }
}

fn tee() -> String {
    let flags = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let has_flag = |flag: &str| {
        flags
            .lines()
            .filter(|line| line.starts_with("flags"))
            .any(|line| line.split_whitespace().any(|word| word == flag))
    };
    if Path::new("/dev/sev-guest").exists() || has_flag("sev_snp") {
        "sev-snp".to_owned()
    } else if Path::new("/dev/tdx_guest").exists() || has_flag("tdx_guest") {
        "tdx".to_owned()
    } else {
        "none".to_owned()
    }
}

/// `active` when the root mount is a dm-verity device (its dm uuid is `CRYPT-VERITY-…`).
fn verity() -> String {
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let Some(device) = mountinfo.lines().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        (fields.get(4) == Some(&"/")).then(|| fields.get(2).map(|d| d.to_string()))?
    }) else {
        return "unknown".to_owned();
    };
    let dm = format!("/sys/dev/block/{device}/dm/uuid");
    match fs::read_to_string(dm) {
        Ok(uuid) if uuid.starts_with("CRYPT-VERITY-") => "active".to_owned(),
        Ok(_) => "not-verity".to_owned(),
        Err(_) => "inactive".to_owned(),
    }
}

fn failed_units() -> Vec<String> {
    match Cmd::new("/usr/bin/systemctl")
        .args([
            "list-units",
            "--failed",
            "--plain",
            "--no-legend",
            "--no-pager",
        ])
        .read()
    {
        Ok(text) => text
            .lines()
            .filter_map(|line| line.split_whitespace().next())
            .map(str::to_owned)
            .collect(),
        Err(err) => vec![format!("(systemctl failed: {err})")],
    }
}

/// `n/a` without an NVIDIA GPU; else the CC status from the driver, or an explicit error.
fn gpu_cc() -> String {
    guest_image::image::gpu::gpu_cc(Path::new("/"), || {
        Cmd::new("/usr/bin/nvidia-smi")
            .args(["conf-compute", "-f"])
            .read()
    })
}

/// The launch measurement through configfs-tsm: SEV-SNP report offset 0x90, TDX quote offset 184.
fn measurement(tee: &str) -> Option<String> {
    let dir = Path::new("/sys/kernel/config/tsm/report/cvm-status");
    let _ = fs::create_dir(dir);
    fs::write(dir.join("inblob"), [0u8; 64]).ok()?;
    let blob = fs::read(dir.join("outblob")).ok()?;
    let _ = fs::remove_dir(dir);
    let offset = if tee == "sev-snp" { 0x90 } else { 184 };
    blob.get(offset..offset + 48).map(hex::encode)
}
