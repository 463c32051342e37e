//! `cvm-status`: runs in the guest once boot completes and prints one `CVM-STATUS {json}` line
//! (DESIGN.md §5) on its stdout, which its unit connects to the first serial port. The guest has no
//! shell, so this small static binary does the whole report. With `--failure` (run by the emergency
//! and rescue units) it reports `ready: false` and exits non-zero. Before the readiness line it
//! prints the boot's operator telemetry events (`CVM-EVENT {json}`, see
//! `guest_image::image::telemetry`).

use std::{fs, path::Path, process::ExitCode};

use cvm_core::cmd::Cmd;
use guest_image::image::{status::CvmStatus, telemetry::CvmEvent};

fn main() -> ExitCode {
    let failure = std::env::args().any(|arg| arg == "--failure");
    let status = collect(failure);
    for event in events(&status) {
        println!("{}", event.to_line());
    }
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
    let firewall = unit_state("cvm-egress.service");
    let ready = !failure && verity == "active" && firewall == "active" && failed_units.is_empty();
    CvmStatus {
        ready,
        kernel,
        tee,
        verity,
        failed_units,
        gpu_cc: gpu_cc(),
        measurement,
        firewall,
    }
}

/// `systemctl is-active` of `unit` (`active`, `failed`, `inactive`, …); it exits non-zero for
/// every state but active, so its output is read whatever the exit status.
fn unit_state(unit: &str) -> String {
    match Cmd::new("/usr/bin/systemctl")
        .args(["is-active", unit])
        .output()
    {
        Ok(output) => String::from_utf8_lossy(&output.stdout).trim().to_owned(),
        Err(err) => format!("unknown ({err:#})"),
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

/// Seconds since boot, from /proc/uptime.
fn uptime() -> f64 {
    fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|text| text.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0)
}

/// The boot's telemetry events. Signals whose agents this image does not carry (certificate
/// issuance, key-manager access) are reported as `not-configured`, never as success.
fn events(status: &CvmStatus) -> Vec<CvmEvent> {
    let now = uptime();
    // is-system-running exits non-zero for every state but `running` (`starting` while this unit's
    // own job runs, `degraded`); its stdout names the state either way.
    let system_state = Cmd::new("/usr/bin/systemctl")
        .arg("is-system-running")
        .output()
        .map(|output| String::from_utf8_lossy(&output.stdout).trim().to_owned())
        .unwrap_or_else(|err| format!("unknown ({err})"));
    let heartbeat = match (&status.tee[..], &status.measurement) {
        ("none", _) => CvmEvent::new("attestation-heartbeat", now, "unavailable").with(
            "reason",
            "no TEE in this boot: there is no report to attest",
        ),
        (tee, Some(measurement)) => CvmEvent::new("attestation-heartbeat", now, "ok")
            .with("tee", tee)
            .with("measurement", measurement.as_str()),
        (tee, None) => CvmEvent::new("attestation-heartbeat", now, "failed")
            .with("tee", tee)
            .with(
                "reason",
                "the TEE report could not be read through configfs-tsm",
            ),
    };
    vec![
        CvmEvent::new("startup", now, if status.ready { "ok" } else { "failed" })
            .with("kernel", status.kernel.as_str())
            .with("verity", status.verity.as_str())
            .with("tee", status.tee.as_str()),
        CvmEvent::new(
            "service-health",
            now,
            if status.failed_units.is_empty() {
                "ok"
            } else {
                "degraded"
            },
        )
        .with("system_state", system_state)
        .with("failed_units", status.failed_units.clone())
        .with("gpu_cc", status.gpu_cc.as_str()),
        heartbeat,
        CvmEvent::new("cert-issuance", now, "not-configured")
            .with("reason", "this image carries no certificate-issuance agent"),
        CvmEvent::new("dsm-access", now, "not-configured")
            .with("reason", "this image carries no key-release agent"),
    ]
}
