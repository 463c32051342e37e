//! The `gpu` profile (issue 10): NVIDIA's open kernel modules, prebuilt and signed for exactly the
//! guest's kernel (the archive's `linux-modules-nvidia-<branch>-open-<kernel release>` packages,
//! no DKMS), compute-only user space, persistenced with UVM persistence, the ready-state unit that
//! waits for GPU attestation, and the audit of the modules in the finished image.
//!
//! The package names are derived here from the model's driver branch and the kernel release the
//! archive resolved; the guest files are rendered from the model (`[guest.gpu]`, `[attestation]`).

use std::{
    fs,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result};
use cvm_core::model::Model;

/// Packages purged from a gpu guest besides the base list.
pub const PURGE_PACKAGES: &str = include_str!("../../data/gpu/purge-packages.txt");
/// Paths deleted from a gpu guest besides the base list (graphics, video, OpenCL, tools).
pub const REMOVE_PATHS: &str = include_str!("../../data/gpu/remove-paths.txt");
/// Paths the audit refuses in a gpu guest besides the base list.
pub const FORBIDDEN_PATHS: &str = include_str!("../../data/gpu/forbidden-paths.txt");
/// Kernel modules the gpu profile keeps besides the base list.
pub const KEEP_MODULES: &str = include_str!("../../data/gpu/keep-modules.txt");

/// The LKCA modprobe settings: the open driver uses the kernel's crypto (ECDSA, ECDH) for the
/// SPDM session with the GPU. NVIDIA's guides write an `install` line, which modprobe runs with
/// /bin/sh; the guest has no shell, so a softdep loads the same modules first.
pub const MODPROBE_CONF: &str = include_str!("../../../templates/guest/gpu/cvm-nvidia.conf");
/// nvidia-persistenced with persistence and UVM persistence (replaces the packaged unit, which
/// runs `--no-persistence-mode`). The packaged udev rule starts it when the driver registers.
pub const PERSISTENCED_UNIT: &str =
    include_str!("../../../templates/guest/gpu/nvidia-persistenced.service");
/// Sets the GPUs' ready state.
pub const READY_UNIT: &str = include_str!("../../../templates/guest/gpu/cvm-gpu-ready.service");

/// Where the RIM store of an air-gapped site goes in the image.
pub const RIM_STORE_IN_GUEST: &str = "usr/share/cvm/gpu-rims";
/// The attestation endpoints as environment variables (the names NVIDIA's verifiers read).
pub const ATTESTATION_ENV_IN_GUEST: &str = "etc/cvm/gpu-attestation.env";

/// The prebuilt, signed open modules of `driver` for the kernel release `kernel_release`
/// (e.g. `linux-modules-nvidia-580-server-open-6.17.0-42-generic`).
pub fn module_package(driver: &str, kernel_release: &str) -> String {
    format!("linux-modules-nvidia-{driver}-open-{kernel_release}")
}

/// The compute user space: nvidia-smi, libcuda/NVML/PTX JIT, persistenced. Their versions follow
/// the module package's exact `nvidia-kernel-common` dependency, so apt keeps them in step.
pub fn user_packages(driver: &str) -> Vec<String> {
    ["nvidia-utils", "libnvidia-compute", "nvidia-compute-utils"]
        .iter()
        .map(|name| format!("{name}-{driver}"))
        .collect()
}

/// The mmdebstrap customize hook that installs the stack once the kernel is in the tree: the
/// module package's name is taken from the installed kernel's release, never typed in.
///
/// The packages are downloaded with mmdebstrap's apt configuration (download only, like the
/// build packages), then installed by the guest's own apt inside the chroot: apt run outside with
/// that configuration would run the host's dpkg on the host's root. apt's report goes to stderr,
/// where the build's error (and [`explain_unmet`]) can read it.
pub fn install_hook(driver: &str) -> String {
    let packages = format!(
        "{} {}",
        module_package(driver, "$kver"),
        user_packages(driver).join(" ")
    );
    format!(
        "set -e; kver=$(ls \"$1/usr/lib/modules\"); \
         APT_CONFIG=\"$MMDEBSTRAP_APT_CONFIG\" apt-get install --download-only -y --no-install-recommends {packages} >&2; \
         chroot \"$1\" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-download --no-install-recommends {packages} >&2"
    )
}

/// A rendered guest file of the gpu profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderedFile {
    /// Path in the guest, relative.
    pub path: String,
    /// Contents.
    pub contents: String,
    /// Unix mode.
    pub mode: u32,
}

/// The systemd units pulled in when the nvidia driver registers (a GPU is present), by the udev
/// rule [`guest_files`] writes.
pub fn wanted_units(model: &Model) -> Vec<&'static str> {
    let gpu = &model.guest.gpu;
    let mut units = Vec::new();
    if gpu.attestation_tool.is_some() {
        units.push("cvm-gpu-attest.service");
    }
    units.push(if gpu.ready_after_attestation {
        "cvm-gpu-ready.path"
    } else {
        "cvm-gpu-ready.service"
    });
    units
}

/// The RIM and OCSP endpoints the guest uses: the model's `[attestation]` URLs; a RIM store
/// copied into the image takes the RIM URL's place.
pub fn endpoints(model: &Model) -> (Option<String>, Option<String>) {
    let attestation = model.attestation.as_ref();
    let rim = if model.guest.gpu.rim_store.is_some() {
        Some(format!("file:///{RIM_STORE_IN_GUEST}/"))
    } else {
        attestation.and_then(|a| a.rim_url.clone())
    };
    (rim, attestation.and_then(|a| a.ocsp_url.clone()))
}

/// Every file the gpu profile adds to the guest, rendered from the model.
pub fn guest_files(model: &Model) -> Vec<RenderedFile> {
    let gpu = &model.guest.gpu;
    let file = |path: &str, contents: String| RenderedFile {
        path: path.to_owned(),
        contents,
        mode: 0o644,
    };
    let mut files = vec![
        file("etc/modprobe.d/cvm-nvidia.conf", MODPROBE_CONF.to_owned()),
        file(
            "etc/systemd/system/nvidia-persistenced.service",
            PERSISTENCED_UNIT.to_owned(),
        ),
        file("etc/systemd/system/cvm-gpu-ready.service", READY_UNIT.to_owned()),
        file(
            "etc/udev/rules.d/72-cvm-nvidia.rules",
            format!(
                "# cvm-stack: when the nvidia driver registers (a GPU is present), start the CC units.\n\
                 ACTION==\"add\", DEVPATH==\"/bus/pci/drivers/nvidia\", TAG+=\"systemd\", ENV{{SYSTEMD_WANTS}}+=\"{}\"\n",
                wanted_units(model).join(" ")
            ),
        ),
    ];
    let (rim, ocsp) = endpoints(model);
    let mut env = String::from("# cvm-stack: GPU attestation endpoints from the model.\n");
    if let Some(rim) = &rim {
        env.push_str(&format!("NV_RIM_URL={rim}\n"));
    }
    if let Some(ocsp) = &ocsp {
        env.push_str(&format!("NV_OCSP_URL={ocsp}\n"));
    }
    files.push(file(ATTESTATION_ENV_IN_GUEST, env));
    if gpu.ready_after_attestation {
        files.push(file(
            "etc/systemd/system/cvm-gpu-ready.path",
            format!(
                "[Unit]\n\
                 Description=Set the GPUs' ready state once GPU attestation succeeded\n\
                 After=nvidia-persistenced.service\n\n\
                 [Path]\n\
                 PathExists={}\n\
                 Unit=cvm-gpu-ready.service\n",
                gpu.attested_flag
            ),
        ));
    }
    if let Some(tool) = gpu
        .attestation_tool
        .as_ref()
        .and_then(|name| model.guest.files.get(name))
    {
        let mut command = vec![
            tool.dest.clone(),
            "attest".to_owned(),
            "--device".to_owned(),
            "gpu".to_owned(),
            "--verifier".to_owned(),
            "local".to_owned(),
        ];
        if let Some(rim) = rim {
            command.extend(["--rim-url".to_owned(), rim]);
        }
        if let Some(ocsp) = ocsp {
            command.extend(["--ocsp-url".to_owned(), ocsp]);
        }
        let flag = Path::new(&gpu.attested_flag);
        let flag_dir = flag.parent().unwrap_or(Path::new("/run")).display();
        files.push(file(
            "etc/systemd/system/cvm-gpu-attest.service",
            format!(
                "[Unit]\n\
                 Description=Attest the GPUs with NVIDIA's attestation tool\n\
                 Requires=nvidia-persistenced.service\n\
                 After=nvidia-persistenced.service\n\n\
                 [Service]\n\
                 Type=oneshot\n\
                 RemainAfterExit=yes\n\
                 ExecStart={}\n\
                 ExecStartPost=/usr/bin/mkdir -p {flag_dir}\n\
                 ExecStartPost=/usr/bin/touch {}\n",
                command.join(" "),
                gpu.attested_flag
            ),
        ));
    }
    files
}

/// The model's RIM store directory on the build host, resolved against the model's directory.
pub fn rim_store_source(model: &Model, model_dir: &Path) -> Option<PathBuf> {
    model
        .guest
        .gpu
        .rim_store
        .as_ref()
        .map(|dir| model_dir.join(dir))
}

/// The trailer of an appended kernel module signature (`scripts/sign-file.c`, `module_signature`
/// in include/linux/module_signature.h).
const SIGNATURE_MAGIC: &[u8] = b"~Module signature appended~\n";
/// `PKEY_ID_PKCS7`: the only signature type the kernel accepts for modules.
const PKEY_ID_PKCS7: u8 = 2;

/// Why `module` (the bytes of an uncompressed .ko) would not load on `kernel_release` with
/// `module.sig_enforce=1`: no appended PKCS#7 signature, or a vermagic for another kernel.
pub fn module_problem(module: &[u8], kernel_release: &str) -> Option<String> {
    let Some(body) = module.strip_suffix(SIGNATURE_MAGIC) else {
        return Some("is not signed (no appended module signature)".to_owned());
    };
    let Some(info) = body.len().checked_sub(12).map(|at| &body[at..]) else {
        return Some("has a truncated signature".to_owned());
    };
    let sig_len = u32::from_be_bytes([info[8], info[9], info[10], info[11]]) as usize;
    if info[2] != PKEY_ID_PKCS7 || sig_len == 0 || sig_len > body.len() - 12 {
        return Some("has a malformed signature (not PKCS#7)".to_owned());
    }
    let needle = b"vermagic=";
    let Some(at) = body.windows(needle.len()).position(|w| w == needle) else {
        return Some("has no vermagic".to_owned());
    };
    let rest = &body[at + needle.len()..];
    let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
    let vermagic = String::from_utf8_lossy(&rest[..end]);
    if vermagic.split_whitespace().next() != Some(kernel_release) {
        return Some(format!(
            "was built for another kernel (vermagic {vermagic:?}, the guest runs {kernel_release})"
        ));
    }
    None
}

/// The modules the gpu guest must carry, by file name.
pub const REQUIRED_MODULES: &[&str] = &["nvidia.ko", "nvidia-uvm.ko"];

/// Audits the NVIDIA modules of an extracted root: the required modules exist under the one
/// kernel's tree, every NVIDIA module is signed and built for that kernel.
pub fn audit_modules(root: &Path, kernel_release: &str) -> Result<Vec<String>> {
    let mut problems = Vec::new();
    let kernel = root
        .join("usr/lib/modules")
        .join(kernel_release)
        .join("kernel");
    let mut found = Vec::new();
    for dir in super::harden::expand(&kernel, "nvidia*-open") {
        for entry in fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
            let path = entry?.path();
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            if !name.ends_with(".ko") {
                continue;
            }
            let bytes = fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
            let relative = path
                .strip_prefix(root)
                .unwrap_or(&path)
                .display()
                .to_string();
            if let Some(problem) = module_problem(&bytes, kernel_release) {
                problems.push(format!("module /{relative} {problem}"));
            }
            found.push(name);
        }
    }
    for required in REQUIRED_MODULES {
        if !found.iter().any(|name| name == required) {
            problems.push(format!(
                "the NVIDIA module {required} for kernel {kernel_release} is missing"
            ));
        }
    }
    Ok(problems)
}

/// NVIDIA's PCI vendor id as sysfs prints it.
const NVIDIA_VENDOR: &str = "0x10de";

/// True when sysfs under `root` lists an NVIDIA GPU (display or 3D controller).
pub fn nvidia_gpu_present(root: &Path) -> bool {
    let Ok(entries) = fs::read_dir(root.join("sys/bus/pci/devices")) else {
        return false;
    };
    entries.filter_map(|e| e.ok()).any(|entry| {
        let read = |name: &str| {
            fs::read_to_string(entry.path().join(name))
                .map(|s| s.trim().to_owned())
                .unwrap_or_default()
        };
        read("vendor") == NVIDIA_VENDOR
            && ["0x0300", "0x0302"]
                .iter()
                .any(|class| read("class").starts_with(class))
    })
}

/// The `gpu_cc` value of the readiness line from `nvidia-smi conf-compute -f` output.
pub fn parse_conf_compute(output: &str) -> String {
    for line in output.lines() {
        if let Some(value) = line.trim().strip_prefix("CC status:") {
            return match value.trim() {
                "ON" => "on".to_owned(),
                "OFF" => "off".to_owned(),
                other => format!("error: unexpected CC status {other:?}"),
            };
        }
    }
    let first = output.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
    format!(
        "error: nvidia-smi conf-compute -f printed no CC status ({})",
        first.trim()
    )
}

/// The `gpu_cc` value for the system under `root`: `n/a` without an NVIDIA GPU, an explicit
/// `error: …` when the driver is not bound, else what `conf_compute` (nvidia-smi) reports.
pub fn gpu_cc(root: &Path, conf_compute: impl FnOnce() -> Result<String>) -> String {
    if !nvidia_gpu_present(root) {
        return "n/a".to_owned();
    }
    if !root.join("sys/bus/pci/drivers/nvidia").exists() {
        return "error: an NVIDIA GPU is present but the nvidia driver is not loaded".to_owned();
    }
    match conf_compute() {
        Ok(output) => parse_conf_compute(&output),
        Err(err) => format!("error: nvidia-smi conf-compute -f failed: {err}"),
    }
}

/// Explains an apt failure to install the stack: the archive's signed modules for this kernel
/// require a driver version the archive no longer (or not yet) serves. `None` for other errors.
pub fn explain_unmet(text: &str, driver: &str) -> Option<String> {
    let prefix = format!("linux-modules-nvidia-{driver}-open-");
    // apt's report arrives as lines, or joined with " | " in a command error's stderr tail.
    let line = text
        .lines()
        .flat_map(|line| line.split(" | "))
        .find(|line| line.contains(&prefix) && line.contains(" : Depends:"))?;
    let package = line
        .split_whitespace()
        .find(|word| word.starts_with(&prefix))
        .unwrap_or(&prefix);
    let needs = line.split("Depends:").nth(1).unwrap_or("").trim();
    Some(format!(
        "the archive's signed NVIDIA modules for this kernel cannot be installed: {package} depends on {needs}. \
         Ubuntu has not rebuilt them for the driver the archive now serves; choose a kernel track whose \
         modules match (guest.kernel, e.g. the NVIDIA flavour \"linux-image-nvidia-6.17\"), another driver branch (guest.gpu.driver), or a mirror snapshot \
         that still serves the matching driver (guest.mirror)"
    ))
}

#[cfg(test)]
mod tests;
