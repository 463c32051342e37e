//! Host provisioning per Ubuntu release and TEE (issue 7): a plan as data, printed by
//! `cargo xtask host plan` and carried out by `cargo xtask host apply`.
//!
//! A [`Plan`] is an ordered list of [`Step`]s. Each step says why it exists, exactly what it does
//! (a file's path and full contents, a package list, command lines, or manual instructions with
//! the exact BIOS attribute values) and how "already done" is detected, so that `apply` is
//! idempotent and a reviewer can read the whole change before it happens. The plan depends only on
//! the release, the TEE and the model's GPUs; [`build::plan`] chooses the steps and
//! [`apply::apply`] runs them against a filesystem root (`/` on a real host, a throwaway root in
//! tests, with commands run through `chroot`).

pub mod apply;
pub mod build;

use std::{
    fmt::{self, Write as _},
    path::Path,
};

use anyhow::Result;
use cvm_core::{
    cmd::shell_quote,
    deps::OsRelease,
    error::bad_input,
    model::{GpuModel, Tee},
};
use serde::Serialize;

pub use build::{plan, PlanRequest};

/// The Ubuntu host releases the plan supports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Release {
    /// 24.04 LTS: no stock SEV-SNP or TDX host stack.
    #[serde(rename = "24.04")]
    Noble,
    /// 25.04: stock SEV-SNP host; TDX through Canonical's PPA. End of life since January 2026.
    #[serde(rename = "25.04")]
    Plucky,
    /// 25.10: stock SEV-SNP and TDX hosts.
    #[serde(rename = "25.10")]
    Questing,
    /// 26.04 LTS: stock, with an optional virtualization HWE stack.
    #[serde(rename = "26.04")]
    Resolute,
}

impl Release {
    /// Every supported release, oldest first.
    pub const ALL: [Release; 4] = [
        Release::Noble,
        Release::Plucky,
        Release::Questing,
        Release::Resolute,
    ];

    /// `VERSION_ID`, e.g. `24.04`.
    pub fn version(self) -> &'static str {
        match self {
            Release::Noble => "24.04",
            Release::Plucky => "25.04",
            Release::Questing => "25.10",
            Release::Resolute => "26.04",
        }
    }

    /// `VERSION_CODENAME`, e.g. `noble`.
    pub fn codename(self) -> &'static str {
        match self {
            Release::Noble => "noble",
            Release::Plucky => "plucky",
            Release::Questing => "questing",
            Release::Resolute => "resolute",
        }
    }

    /// The release an os-release file describes; `source` names the file in the error, which is
    /// bad input (exit 2) for anything but a supported Ubuntu release.
    pub fn from_os_release(os: &OsRelease, source: &str) -> Result<Release> {
        let supported = "supported hosts are Ubuntu 24.04, 25.04, 25.10 and 26.04";
        if os.id != "ubuntu" {
            let name = if os.id.is_empty() {
                "an unknown distribution (no ID=)".to_owned()
            } else {
                format!("{} {}", os.id, os.version_id).trim().to_owned()
            };
            return Err(bad_input(format!(
                "{source}: {name} is not supported for host provisioning; {supported}: install one, or pass --os-release FILE to plan for another host"
            )));
        }
        Release::ALL
            .into_iter()
            .find(|release| release.version() == os.version_id)
            .ok_or_else(|| {
                bad_input(format!(
                    "{source}: Ubuntu {} is not supported for host provisioning; {supported}: upgrade the host, or pass --os-release FILE to plan for another host",
                    if os.version_id.is_empty() { "(no VERSION_ID=)" } else { &os.version_id }
                ))
            })
    }
}

/// Reads an os-release file and returns the supported release it names; an unreadable file or
/// an unsupported release is bad input (exit 2).
pub fn read_release(path: &Path) -> Result<Release> {
    let text = std::fs::read_to_string(path).map_err(|err| {
        bad_input(format!(
            "{}: cannot read the os-release file: {err}; pass an existing file with --os-release FILE",
            path.display()
        ))
    })?;
    Release::from_os_release(&OsRelease::parse(&text), &path.display().to_string())
}

impl fmt::Display for Release {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Ubuntu {} ({})", self.version(), self.codename())
    }
}

/// A whole provisioning plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Plan {
    /// Version of this JSON shape.
    pub schema: u32,
    /// The host release the plan is for.
    pub release: Release,
    /// Its codename.
    pub codename: &'static str,
    /// The CPU TEE.
    pub tee: Tee,
    /// The GPUs the model passes through.
    pub gpus: Vec<PlanGpu>,
    /// The NVSwitches the model passes through (Hopper Protected PCIe).
    pub nvswitches: Vec<String>,
    /// What a reader must know before applying (support status, versions below the reference).
    pub notes: Vec<String>,
    /// The reboots the plan needs, in order.
    pub reboots: Vec<String>,
    /// The steps, in the order they are applied.
    pub steps: Vec<Step>,
}

/// One GPU of the model with the PCI ids vfio-pci claims for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlanGpu {
    /// PCI address `DDDD:BB:DD.F`.
    pub address: String,
    /// GPU family.
    pub model: GpuModel,
}

/// One step of a plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Step {
    /// Stable id, e.g. `kernel.cmdline`.
    pub id: String,
    /// One line: why the step exists.
    pub why: String,
    /// What the step does.
    pub action: Action,
    /// How `apply` knows the step is already done.
    pub done_when: Detect,
}

/// What a step does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Action {
    /// Writes a whole file (an existing different file is backed up first).
    WriteFile {
        /// Absolute path below the root.
        path: String,
        /// Permission bits.
        mode: u32,
        /// The full contents.
        contents: String,
    },
    /// Installs packages with apt (`apt-get update` first).
    Packages {
        /// The packages, with the lowest acceptable versions.
        packages: Vec<Package>,
        /// Passes `--allow-downgrades` (a pinned PPA replacing newer archive versions).
        allow_downgrades: bool,
    },
    /// Runs commands, in order, inside the root.
    Commands {
        /// Each command as its argument vector.
        commands: Vec<Vec<String>>,
        /// Files the commands rewrite; each is backed up first when present.
        backs_up: Vec<String>,
        /// What the commands download, when they need the network.
        network: Option<String>,
    },
    /// Changes nothing: apply stops with `fix` when the step's check fails (a forbidden kernel
    /// command-line word, firmware or QEMU support missing after the packages).
    Guard {
        /// What to do when it fails.
        fix: String,
    },
    /// Something only a person can do (BIOS settings); `apply` prints it and goes on.
    Manual {
        /// Exact instructions, one per line.
        instructions: Vec<String>,
    },
    /// A reboot `apply` never performs: it stops here until the host has rebooted.
    Reboot {
        /// What the reboot activates.
        activates: String,
    },
}

/// A package and the lowest version that will do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Package {
    /// Package name.
    pub name: String,
    /// Lowest acceptable version (Debian version syntax, epoch included), if any.
    pub min_version: Option<String>,
}

impl Package {
    /// A package at any version.
    pub fn any(name: &str) -> Package {
        Package {
            name: name.to_owned(),
            min_version: None,
        }
    }

    /// A package at `min_version` or newer.
    pub fn at_least(name: &str, min_version: &str) -> Package {
        Package {
            name: name.to_owned(),
            min_version: Some(min_version.to_owned()),
        }
    }
}

impl fmt::Display for Package {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.min_version {
            Some(version) => write!(f, "{} (>= {version})", self.name),
            None => f.write_str(&self.name),
        }
    }
}

/// A command and a string its combined output must contain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OutputCheck {
    /// The command's argument vector.
    pub command: Vec<String>,
    /// The text stdout or stderr must contain.
    pub contains: String,
}

/// How "already done" is detected.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Detect {
    /// The file exists with exactly the step's contents and mode.
    FileContents {
        /// Absolute path below the root.
        path: String,
    },
    /// Every package is installed (dpkg-query) at its minimum version or newer.
    Packages {
        /// The packages.
        packages: Vec<Package>,
    },
    /// Every file exists.
    FilesExist {
        /// Absolute paths below the root.
        paths: Vec<String>,
    },
    /// A stamp file holds the sha256 of the input files as they were when the commands last
    /// succeeded (`apply` writes it); a changed input makes the step run again.
    Stamp {
        /// The stamp file.
        stamp: String,
        /// The files whose contents the commands turn into their output.
        inputs: Vec<String>,
    },
    /// Every command's output contains its text.
    CommandOutput {
        /// The checks.
        checks: Vec<OutputCheck>,
    },
    /// None of the files configures a forbidden kernel command-line word (checked every time).
    NoForbiddenWords {
        /// The files; a final `*.cfg` component means every such file in the directory.
        files: Vec<String>,
        /// The words; a word ending in `=` forbids every value.
        words: Vec<String>,
    },
    /// The running kernel's command line (`/proc/cmdline`) has every word, and the running kernel
    /// release is the given one when set.
    Booted {
        /// Words that must be on the command line.
        words: Vec<String>,
        /// Kernel release (`/proc/sys/kernel/osrelease`) that must be running.
        kernel: Option<String>,
    },
    /// Not checked by `apply`; `cargo xtask host check` verifies the result.
    HostCheck {
        /// The check ids that verify it.
        checks: Vec<String>,
    },
}

/// Shell form of an argument vector, for display.
pub fn command_line(argv: &[String]) -> String {
    argv.iter()
        .map(|word| shell_quote(word))
        .collect::<Vec<_>>()
        .join(" ")
}

impl Detect {
    /// One line describing the detection.
    pub fn describe(&self) -> String {
        match self {
            Detect::FileContents { path } => {
                format!("{path} exists with exactly these contents and mode")
            }
            Detect::Packages { packages } => format!(
                "dpkg-query shows installed: {}",
                packages
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Detect::FilesExist { paths } => format!("these exist: {}", paths.join(", ")),
            Detect::Stamp { stamp, inputs } => format!(
                "{stamp} holds the sha256 of {} as they were when the commands last succeeded",
                inputs.join(", ")
            ),
            Detect::CommandOutput { checks } => checks
                .iter()
                .map(|check| {
                    format!(
                        "`{}` prints {:?}",
                        command_line(&check.command),
                        check.contains
                    )
                })
                .collect::<Vec<_>>()
                .join("; "),
            Detect::NoForbiddenWords { files, words } => format!(
                "none of {} sets {} (checked on every apply)",
                files.join(", "),
                words.join(", ")
            ),
            Detect::Booted { words, kernel } => {
                let mut text = format!("/proc/cmdline has {}", words.join(" "));
                if let Some(kernel) = kernel {
                    let _ = write!(text, " and the running kernel is {kernel}");
                }
                text
            }
            Detect::HostCheck { checks } => format!(
                "not checked by apply; `cargo xtask host check` verifies it ({})",
                checks.join(", ")
            ),
        }
    }
}

impl Action {
    /// A short name of the action's kind, for the text rendering.
    pub fn kind(&self) -> &'static str {
        match self {
            Action::WriteFile { .. } => "file",
            Action::Packages { .. } => "packages",
            Action::Commands { .. } => "commands",
            Action::Guard { .. } => "guard",
            Action::Manual { .. } => "manual",
            Action::Reboot { .. } => "reboot",
        }
    }
}

impl Plan {
    /// The human-readable plan `host plan` prints.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let gpus = match self.gpus.len() {
            0 => "no GPUs".to_owned(),
            count => format!(
                "{count} GPU{} ({})",
                if count == 1 { "" } else { "s" },
                self.gpus
                    .iter()
                    .map(|gpu| format!("{} {}", gpu_model_name(gpu.model), gpu.address))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        let tee = match self.tee {
            Tee::Snp => "AMD SEV-SNP",
            Tee::Tdx => "Intel TDX",
        };
        let _ = writeln!(out, "Provisioning plan: {}, {tee}, {gpus}", self.release);
        if !self.nvswitches.is_empty() {
            let _ = writeln!(out, "NVSwitches: {}", self.nvswitches.join(", "));
        }
        if !self.notes.is_empty() {
            let _ = writeln!(out, "\nNotes:");
            for note in &self.notes {
                let _ = writeln!(out, "  - {note}");
            }
        }
        let _ = writeln!(out, "\nReboots, in order:");
        for (index, reboot) in self.reboots.iter().enumerate() {
            let _ = writeln!(out, "  {}. {reboot}", index + 1);
        }
        let _ = writeln!(out, "\nSteps:");
        for (index, step) in self.steps.iter().enumerate() {
            let _ = writeln!(
                out,
                "\n[{}] {} ({})",
                index + 1,
                step.id,
                step.action.kind()
            );
            let _ = writeln!(out, "    why: {}", step.why);
            match &step.action {
                Action::WriteFile {
                    path,
                    mode,
                    contents,
                } => {
                    let _ = writeln!(out, "    write {path} (mode {mode:04o}):");
                    for line in contents.lines() {
                        if line.is_empty() {
                            let _ = writeln!(out, "      |");
                        } else {
                            let _ = writeln!(out, "      | {line}");
                        }
                    }
                }
                Action::Packages {
                    packages,
                    allow_downgrades,
                } => {
                    let _ = writeln!(out, "    run:");
                    for command in apply::package_commands(packages, *allow_downgrades, false) {
                        let _ = writeln!(out, "      $ {}", command_line(&command));
                    }
                }
                Action::Commands {
                    commands,
                    backs_up,
                    network,
                } => {
                    if let Some(network) = network {
                        let _ = writeln!(out, "    downloads: {network}");
                    }
                    if !backs_up.is_empty() {
                        let _ = writeln!(out, "    backs up first: {}", backs_up.join(", "));
                    }
                    let _ = writeln!(out, "    run:");
                    for command in commands {
                        let _ = writeln!(out, "      $ {}", command_line(command));
                    }
                }
                Action::Guard { fix } => {
                    let _ = writeln!(
                        out,
                        "    changes nothing; when the check below fails, apply stops: {fix}"
                    );
                }
                Action::Manual { instructions } => {
                    let _ = writeln!(out, "    by hand:");
                    for line in instructions {
                        let _ = writeln!(out, "      {line}");
                    }
                }
                Action::Reboot { activates } => {
                    let _ = writeln!(
                        out,
                        "    reboot the host yourself (apply never reboots); it activates {activates}; then run `cargo xtask host apply` again"
                    );
                }
            }
            match &step.done_when {
                Detect::CommandOutput { checks } if checks.len() > 1 => {
                    let _ = writeln!(out, "    done when every one prints its text:");
                    for check in checks {
                        let _ = writeln!(
                            out,
                            "      $ {}   ({:?})",
                            command_line(&check.command),
                            check.contains
                        );
                    }
                }
                done_when => {
                    let _ = writeln!(out, "    done when: {}", done_when.describe());
                }
            }
        }
        out
    }
}

/// The model's name of a GPU family (as written in cvm.toml).
pub fn gpu_model_name(model: GpuModel) -> &'static str {
    match model {
        GpuModel::H100 => "h100",
        GpuModel::H200 => "h200",
        GpuModel::B200 => "b200",
        GpuModel::RtxPro6000Bse => "rtx-pro-6000-bse",
    }
}

#[cfg(test)]
mod tests;
