//! `host collect`: reads the live host into a facts bundle. Read-only: it never changes the host.
//!
//! Each fact is stored at its place in the bundle (DESIGN.md §6). What the host does not have is
//! listed in `facts.json` `absent`; what could not be read or run goes to `unreadable` or `failed`
//! with the reason. Nothing here is fatal except failing to write the bundle itself.

use std::{fs, io::ErrorKind, path::PathBuf, time::Duration};

use anyhow::{Context, Result};
use cvm_core::cmd::Cmd;

use super::{Meta, FACTS_JSON};
use crate::redfish;

/// How long any one collected command may run.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// Plain files copied from the host when present.
const FILES: &[&str] = &[
    "/proc/cpuinfo",
    "/proc/cmdline",
    "/proc/meminfo",
    "/etc/os-release",
    "/sys/module/kvm_amd/parameters/sev",
    "/sys/module/kvm_amd/parameters/sev_es",
    "/sys/module/kvm_amd/parameters/sev_snp",
    "/sys/module/kvm_intel/parameters/tdx",
    "/sys/module/kvm_intel/parameters/sgx",
    "/sys/devices/system/cpu/online",
    "/sys/devices/system/cpu/offline",
    "/sys/devices/system/cpu/smt/control",
    "/sys/firmware/efi/fw_platform_size",
];

/// Device nodes and directories recorded as empty markers.
const MARKERS: &[&str] = &[
    "/dev/sev",
    "/dev/kvm",
    "/dev/cpu/0/msr",
    "/sys/firmware/efi",
];

/// CPUID leaves stored under `cpuid/`.
const CPUID_LEAVES: &[u32] = &[0x0, 0x1, 0x8000_0000, 0x8000_0001, 0x8000_001f];

/// AMD MSRs: SYSCFG, RMP_BASE, RMP_END, RMP_CFG (segmented RMP; not on every generation).
const AMD_MSRS: &[u32] = &[0xc001_0010, 0xc001_0132, 0xc001_0133, 0xc001_0136];

/// Intel MSRs for TDX: IA32_MKTME_KEYID_PARTITIONING, SGX_AND_MCHECK_STATUS, IA32_TME_ACTIVATE,
/// IA32_SEAMRR_PHYS_MASK.
const INTEL_MSRS: &[u32] = &[0x87, 0xa0, 0x982, 0x1401];

/// Where the BMC is and how to reach it.
#[derive(Debug, Clone)]
pub struct Redfish {
    /// Base URL, e.g. `https://10.0.0.5`.
    pub url: String,
    /// Credentials.
    pub credentials: redfish::Credentials,
    /// Accept a self-signed BMC certificate.
    pub verify_tls: bool,
    /// Per-request timeout.
    pub timeout: Duration,
}

/// What to collect and where to write it.
#[derive(Debug, Clone)]
pub struct CollectOptions {
    /// The bundle directory (created; must be empty or absent).
    pub out: PathBuf,
    /// The host root to read files from (`/` on a live host; tests may point elsewhere).
    pub host_root: PathBuf,
    /// Read the BMC's BIOS attributes too.
    pub redfish: Option<Redfish>,
    /// More host paths whose existence is recorded, as empty markers like `/dev/sev` (listed in
    /// `absent` when the host has none): validation adds the guest firmware its node profile
    /// names. Absolute paths without `..`.
    pub markers: Vec<String>,
}

impl CollectOptions {
    /// Collect this host into `out`.
    pub fn live(out: impl Into<PathBuf>) -> Self {
        Self {
            out: out.into(),
            host_root: PathBuf::from("/"),
            redfish: None,
            markers: Vec::new(),
        }
    }
}

struct Collector {
    out: PathBuf,
    host_root: PathBuf,
    meta: Meta,
}

/// Refuses a marker path that is not absolute or climbs with `..` (bad input).
pub fn check_markers(markers: &[String]) -> Result<()> {
    for marker in markers {
        let path = std::path::Path::new(marker);
        if !path.is_absolute()
            || path
                .components()
                .any(|part| matches!(part, std::path::Component::ParentDir))
        {
            return Err(cvm_core::error::bad_input(format!(
                "marker path {marker:?} is not an absolute path without `..`; give the host path to record"
            )));
        }
    }
    Ok(())
}

/// Collects the facts bundle; returns its `facts.json` contents.
pub fn collect(options: &CollectOptions) -> Result<Meta> {
    // A bad BMC URL is bad input: reject it before anything is written.
    let client = match &options.redfish {
        Some(target) => Some(redfish::Client::new(
            &target.url,
            &target.credentials,
            target.timeout,
            target.verify_tls,
        )?),
        None => None,
    };
    check_markers(&options.markers)?;
    if options.out.exists()
        && fs::read_dir(&options.out)
            .with_context(|| format!("reading {}", options.out.display()))?
            .next()
            .is_some()
    {
        return Err(cvm_core::error::bad_input(format!(
            "--out {}: the directory is not empty; give a new or empty directory",
            options.out.display()
        )));
    }
    fs::create_dir_all(&options.out)
        .with_context(|| format!("creating {}", options.out.display()))?;
    let mut collector = Collector {
        out: options.out.clone(),
        host_root: options.host_root.clone(),
        meta: Meta {
            schema: 1,
            collected_at: now_utc(),
            hostname: fs::read_to_string(options.host_root.join("proc/sys/kernel/hostname"))
                .map(|name| name.trim().to_owned())
                .unwrap_or_default(),
            ..Meta::default()
        },
    };
    for path in FILES {
        collector.file(path)?;
    }
    for path in MARKERS {
        collector.marker(path)?;
    }
    for path in &options.markers {
        collector.marker(path)?;
    }
    collector.pci_devices()?;
    collector.iommu_groups()?;
    collector.commands()?;
    collector.cpuid()?;
    collector.msrs()?;
    if let Some(client) = &client {
        collector.redfish(client)?;
    }
    collector.meta.absent.sort();
    collector.meta.absent.dedup();
    let path = collector.out.join(FACTS_JSON);
    let json = serde_json::to_string_pretty(&collector.meta)?;
    fs::write(&path, json + "\n").with_context(|| format!("writing {}", path.display()))?;
    Ok(collector.meta)
}

impl Collector {
    fn source(&self, host_path: &str) -> PathBuf {
        self.host_root.join(host_path.trim_start_matches('/'))
    }

    fn target(&self, rel: &str) -> Result<PathBuf> {
        let path = self.out.join(rel);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
        }
        Ok(path)
    }

    fn write(&self, rel: &str, contents: &[u8]) -> Result<()> {
        let path = self.target(rel)?;
        fs::write(&path, contents).with_context(|| format!("writing {}", path.display()))
    }

    fn note_error(&mut self, rel: String, err: &std::io::Error) {
        if err.kind() == ErrorKind::NotFound {
            self.meta.absent.push(rel);
        } else {
            self.meta.unreadable.insert(rel, err.to_string());
        }
    }

    fn file(&mut self, host_path: &str) -> Result<()> {
        let rel = super::root_rel(host_path);
        match fs::read(self.source(host_path)) {
            Ok(bytes) => self.write(&rel, &bytes)?,
            Err(err) => self.note_error(rel, &err),
        }
        Ok(())
    }

    fn marker(&mut self, host_path: &str) -> Result<()> {
        let rel = super::root_rel(host_path);
        match fs::metadata(self.source(host_path)) {
            Ok(metadata) if metadata.is_dir() => {
                let path = self.out.join(&rel);
                fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?
            }
            Ok(_) => self.write(&rel, b"")?,
            Err(err) => self.note_error(rel, &err),
        }
        Ok(())
    }

    /// Copies a symlink as a symlink with the same (relative) target.
    fn link(&mut self, host_path: &str) -> Result<()> {
        let rel = super::root_rel(host_path);
        match fs::read_link(self.source(host_path)) {
            Ok(target) => {
                let path = self.target(&rel)?;
                std::os::unix::fs::symlink(&target, &path)
                    .with_context(|| format!("creating the link {}", path.display()))?;
            }
            Err(err) => self.note_error(rel, &err),
        }
        Ok(())
    }

    fn entries(&mut self, host_path: &str) -> Result<Option<Vec<String>>> {
        match fs::read_dir(self.source(host_path)) {
            Ok(entries) => {
                let mut names: Vec<String> = entries
                    .filter_map(|entry| entry.ok())
                    .map(|entry| entry.file_name().to_string_lossy().into_owned())
                    .collect();
                names.sort();
                let dir = self.out.join(super::root_rel(host_path));
                fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
                Ok(Some(names))
            }
            Err(err) => {
                self.note_error(super::root_rel(host_path), &err);
                Ok(None)
            }
        }
    }

    fn pci_devices(&mut self) -> Result<()> {
        let Some(devices) = self.entries("/sys/bus/pci/devices")? else {
            return Ok(());
        };
        for bdf in devices {
            let base = format!("/sys/bus/pci/devices/{bdf}");
            for name in ["vendor", "device", "class"] {
                self.file(&format!("{base}/{name}"))?;
            }
            for name in ["driver", "iommu_group"] {
                self.link(&format!("{base}/{name}"))?;
            }
        }
        Ok(())
    }

    fn iommu_groups(&mut self) -> Result<()> {
        let Some(groups) = self.entries("/sys/kernel/iommu_groups")? else {
            return Ok(());
        };
        for group in groups {
            let dir = format!("/sys/kernel/iommu_groups/{group}/devices");
            if let Some(devices) = self.entries(&dir)? {
                for device in devices {
                    self.link(&format!("{dir}/{device}"))?;
                }
            }
        }
        Ok(())
    }

    /// Runs one command and stores stdout (and stderr too when `merge_stderr`, like `2>&1`).
    fn command(&mut self, name: &str, command: Cmd, merge_stderr: bool) -> Result<()> {
        let rel = format!("cmd/{name}");
        let command = command.timeout(COMMAND_TIMEOUT);
        match command.output() {
            Ok(output) if output.status.success() => {
                let mut bytes = output.stdout;
                if merge_stderr {
                    bytes.extend_from_slice(&output.stderr);
                }
                self.write(&rel, &bytes)?;
            }
            Ok(output) => {
                let stderr = String::from_utf8_lossy(&output.stderr);
                let tail: String = stderr.trim().lines().last().unwrap_or("").to_owned();
                self.meta.failed.insert(
                    rel,
                    format!("`{command}` failed ({}): {tail}", output.status),
                );
            }
            Err(err) => {
                self.meta.failed.insert(rel, format!("{err:#}"));
            }
        }
        Ok(())
    }

    fn tool_command(&mut self, name: &str, tool: &str, args: &[&str]) -> Result<()> {
        match cvm_core::deps::find_tool(tool) {
            Some(path) => self.command(name, Cmd::new(path).args(args), false),
            None => {
                self.meta.failed.insert(
                    format!("cmd/{name}"),
                    format!("{tool} is not installed on the collecting host"),
                );
                Ok(())
            }
        }
    }

    fn commands(&mut self) -> Result<()> {
        self.tool_command("uname-r", "uname", &["-r"])?;
        self.tool_command("dmesg", "dmesg", &[])?;
        self.tool_command("lspci", "lspci", &["-nnk", "-D"])?;
        self.tool_command("lscpu", "lscpu", &[])?;
        self.tool_command("dmidecode", "dmidecode", &[])?;
        self.tool_command("lsmod", "lsmod", &[])?;
        self.command("ulimit-l", Cmd::new("sh").args(["-c", "ulimit -l"]), false)?;
        match cvm_core::deps::find_tool("qemu-system-x86_64") {
            Some(qemu) => {
                self.command("qemu-version", Cmd::new(&qemu).arg("--version"), false)?;
                self.command(
                    "qemu-objects",
                    Cmd::new(&qemu).args(["-object", "help"]),
                    false,
                )?;
            }
            None => {
                // No QEMU installed is a fact about the host: qemu.* fail, not skip.
                self.meta.absent.push("cmd/qemu-version".to_owned());
                self.meta.absent.push("cmd/qemu-objects".to_owned());
            }
        }
        match cvm_core::deps::find_tool("nvidia_gpu_tools.py") {
            Some(tool) => {
                // Its per-device lines are log lines on stderr: keep both streams, like 2>&1.
                let query = |flag: &str| Cmd::new(&tool).args(["--devices", "gpus", flag]);
                self.command("gpu-cc-mode", query("--query-cc-mode"), true)?;
                self.command("gpu-ppcie-mode", query("--query-ppcie-mode"), true)?;
            }
            None => {
                for name in ["gpu-cc-mode", "gpu-ppcie-mode"] {
                    self.meta.failed.insert(
                        format!("cmd/{name}"),
                        "nvidia_gpu_tools.py (NVIDIA gpu-admin-tools) is not on PATH".to_owned(),
                    );
                }
            }
        }
        Ok(())
    }

    #[cfg(target_arch = "x86_64")]
    fn cpuid(&mut self) -> Result<()> {
        let max_basic = core::arch::x86_64::__cpuid(0).eax;
        let max_extended = core::arch::x86_64::__cpuid(0x8000_0000).eax;
        for &leaf in CPUID_LEAVES {
            let rel = format!("cpuid/{leaf:#x}");
            let supported = if leaf >= 0x8000_0000 {
                leaf <= max_extended
            } else {
                leaf <= max_basic
            };
            if !supported {
                // The CPU does not implement the leaf: the features it reports are absent.
                self.meta.absent.push(rel);
                continue;
            }
            let value = core::arch::x86_64::__cpuid(leaf);
            let text = format!(
                "{:#010x} {:#010x} {:#010x} {:#010x}\n",
                value.eax, value.ebx, value.ecx, value.edx
            );
            self.write(&rel, text.as_bytes())?;
        }
        Ok(())
    }

    #[cfg(not(target_arch = "x86_64"))]
    fn cpuid(&mut self) -> Result<()> {
        for &leaf in CPUID_LEAVES {
            self.meta.failed.insert(
                format!("cpuid/{leaf:#x}"),
                "CPUID is only collected on x86_64".to_owned(),
            );
        }
        Ok(())
    }

    fn msrs(&mut self) -> Result<()> {
        use std::os::unix::fs::FileExt;
        let vendor = fs::read_to_string(self.source("/proc/cpuinfo"))
            .map(|text| super::parse::cpuinfo(&text).vendor_id)
            .unwrap_or_default();
        let indexes = match vendor.as_str() {
            "AuthenticAMD" => AMD_MSRS,
            "GenuineIntel" => INTEL_MSRS,
            _ => return Ok(()),
        };
        let device = self.source("/dev/cpu/0/msr");
        let file = fs::File::open(&device);
        for &index in indexes {
            let rel = format!("msr/{index:#x}");
            let file = match &file {
                Ok(file) => file,
                Err(err) => {
                    let hint = if err.kind() == ErrorKind::NotFound {
                        "no /dev/cpu/0/msr: run `modprobe msr` as root".to_owned()
                    } else {
                        format!("opening {}: {err} (run as root)", device.display())
                    };
                    self.meta.unreadable.insert(rel, hint);
                    continue;
                }
            };
            let mut buffer = [0u8; 8];
            match file.read_exact_at(&mut buffer, u64::from(index)) {
                Ok(()) => {
                    let text = format!("{:#018x}\n", u64::from_le_bytes(buffer));
                    self.write(&rel, text.as_bytes())?;
                }
                Err(err) => {
                    self.meta.unreadable.insert(
                        rel,
                        format!("reading MSR {index:#x} from {}: {err}", device.display()),
                    );
                }
            }
        }
        Ok(())
    }

    fn redfish(&mut self, client: &redfish::Client) -> Result<()> {
        for path in redfish::BIOS_DOCUMENTS {
            let rel = format!("redfish/{}.json", path.trim_matches('/'));
            match client.get(path) {
                Ok(document) => {
                    let text = serde_json::to_string_pretty(&document)? + "\n";
                    self.write(&rel, text.as_bytes())?;
                }
                Err(err) => {
                    self.meta.failed.insert(rel, format!("{err:#}"));
                }
            }
        }
        Ok(())
    }
}

/// The current time as RFC 3339 UTC, computed from the Unix epoch (no date crate needed).
fn now_utc() -> String {
    let seconds = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs())
        .unwrap_or(0);
    rfc3339(seconds)
}

/// Formats Unix seconds as `YYYY-MM-DDTHH:MM:SSZ` (civil-from-days, proleptic Gregorian).
pub(crate) fn rfc3339(seconds: u64) -> String {
    let days = (seconds / 86_400) as i64;
    let rest = seconds % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}
