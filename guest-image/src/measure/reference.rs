//! The reference implementation, sev-snp-measure from PyPI, installed in a virtual environment
//! under `target/`. Only the differential test and `cargo xtask bench measure` use it; the
//! product never runs Python.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use cvm_core::cmd::Cmd;

/// The PyPI distribution name.
pub const PACKAGE: &str = "sev-snp-measure";

/// A sev-snp-measure installed in a virtual environment.
#[derive(Debug, Clone)]
pub struct SevSnpMeasure {
    /// The `sev-snp-measure` entry point inside the venv.
    pub program: PathBuf,
}

impl SevSnpMeasure {
    /// The venv the test and the benchmark share: `<workspace>/target/sev-snp-measure-venv`.
    pub fn default_venv(workspace_root: &Path) -> PathBuf {
        workspace_root.join("target/sev-snp-measure-venv")
    }

    /// Uses the venv at `venv` when it already has sev-snp-measure; otherwise creates it with
    /// `python3 -m venv` and installs sev-snp-measure with pip (network: PyPI). The error says
    /// which step failed, so callers can skip with the reason.
    pub fn ensure(venv: &Path) -> Result<Self> {
        let program = venv.join("bin").join(PACKAGE);
        if program.is_file() {
            return Ok(Self { program });
        }
        let python = cvm_core::deps::find_tool("python3")
            .context("python3 is not installed (needed for the sev-snp-measure venv)")?;
        Cmd::new(&python)
            .args(["-m", "venv"])
            .arg(venv)
            .timeout(std::time::Duration::from_secs(120))
            .run()
            .with_context(|| {
                format!(
                    "creating a Python venv at {} (is python3-venv installed?)",
                    venv.display()
                )
            })?;
        Cmd::new(venv.join("bin/pip"))
            .args(["install", "--quiet", "--disable-pip-version-check", PACKAGE])
            .timeout(std::time::Duration::from_secs(300))
            .run()
            .with_context(|| format!("installing {PACKAGE} from PyPI into {}", venv.display()))?;
        if !program.is_file() {
            anyhow::bail!(
                "pip installed {PACKAGE} but {} is missing",
                program.display()
            );
        }
        Ok(Self { program })
    }

    /// The installed version (`sev-snp-measure --version`).
    pub fn version(&self) -> Result<String> {
        Ok(Cmd::new(&self.program)
            .arg("--version")
            .read()?
            .trim()
            .to_owned())
    }

    /// Runs `sev-snp-measure --mode snp` with `args` and returns the hex digest it prints.
    pub fn measure(&self, args: &[String]) -> Result<String> {
        let output = Cmd::new(&self.program)
            .args(["--mode", "snp"])
            .args(args)
            .timeout(std::time::Duration::from_secs(60))
            .read()?;
        Ok(output.lines().last().unwrap_or("").trim().to_owned())
    }
}

/// sev-snp-measure's arguments for the same measurement as `request` (QEMU is spelled `QEMU`
/// there).
pub fn reference_args(request: &super::SnpRequest) -> Vec<String> {
    let mut args = vec![
        "--ovmf".to_owned(),
        request.ovmf.display().to_string(),
        "--vcpus".to_owned(),
        request.vcpus.to_string(),
        "--guest-features".to_owned(),
        format!("{:#x}", request.guest_features),
        "--vmm-type".to_owned(),
        match request.vmm {
            super::Vmm::Qemu => "QEMU",
            super::Vmm::Ec2 => "ec2",
        }
        .to_owned(),
    ];
    match &request.vcpu {
        super::Vcpu::Type(name) => args.extend(["--vcpu-type".to_owned(), name.clone()]),
        super::Vcpu::Sig(sig) => args.extend(["--vcpu-sig".to_owned(), format!("{sig:#x}")]),
    }
    for (flag, path) in [("--kernel", &request.kernel), ("--initrd", &request.initrd)] {
        if let Some(path) = path {
            args.extend([flag.to_owned(), path.display().to_string()]);
        }
    }
    if let Some(append) = &request.append {
        args.extend(["--append".to_owned(), append.clone()]);
    }
    args
}

/// Our own `xtask measure snp` arguments for `request` (for the benchmark's release binary).
pub fn our_args(request: &super::SnpRequest) -> Vec<String> {
    let mut args = reference_args(request);
    for pair in args.chunks_mut(2) {
        if pair[0] == "--vmm-type" {
            pair[1] = pair[1].to_ascii_lowercase();
        }
    }
    args
}

/// The directory of the exact firmware files tests use (`shared/test-data/firmware`, beside the
/// clone in CI; one level further up for a worktree under a sibling folder).
pub fn test_firmware_dir(workspace_root: &Path) -> Option<PathBuf> {
    workspace_root
        .ancestors()
        .skip(1)
        .take(2)
        .map(|dir| dir.join("shared/test-data/firmware"))
        .find(|dir| dir.is_dir())
}
