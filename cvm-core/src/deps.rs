//! Which package provides each tool the product runs, and installing the missing ones.
//!
//! Only `guest build` and `ci` may install anything ([`InstallPolicy::Install`]); every other
//! command asks with [`InstallPolicy::Refuse`] and gets an error that prints the exact command to
//! run. On a Debian 12 host some packages come from bookworm-backports (the Ubuntu archive keyring,
//! a QEMU with `sev-snp-guest`); enabling it is an explicit, printed apt source change that reuses
//! the mirror of the host's own Debian source — no mirror is ever typed into this repository.

use std::{
    fs,
    path::{Path, PathBuf},
};

use anyhow::{bail, Context, Result};

use crate::cmd::Cmd;

/// How a requirement is detected on the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    /// An executable on `PATH` (or in /usr/sbin, /sbin for tools root runs).
    Command(&'static str),
    /// A file that must exist.
    File(&'static str),
}

/// One thing the product needs on the host and the package that provides it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Requirement {
    /// How to detect it.
    pub probe: Probe,
    /// The Debian/Ubuntu package that provides it.
    pub package: &'static str,
    /// On Debian 12 the package (or a new enough version of it) comes from bookworm-backports.
    pub bookworm_backports: bool,
    /// What needs it, for messages.
    pub purpose: &'static str,
}

const fn tool(name: &'static str, package: &'static str, purpose: &'static str) -> Requirement {
    Requirement {
        probe: Probe::Command(name),
        package,
        bookworm_backports: false,
        purpose,
    }
}

/// Every requirement the product knows, by the name callers use.
pub const REQUIREMENTS: &[(&str, Requirement)] = &[
    (
        "mmdebstrap",
        tool(
            "mmdebstrap",
            "mmdebstrap",
            "building the guest root filesystem",
        ),
    ),
    (
        "mkfs.erofs",
        tool("mkfs.erofs", "erofs-utils", "building the erofs root image"),
    ),
    (
        "fsck.erofs",
        tool("fsck.erofs", "erofs-utils", "auditing the erofs root image"),
    ),
    (
        "veritysetup",
        tool(
            "veritysetup",
            "cryptsetup-bin",
            "building the dm-verity hash tree",
        ),
    ),
    (
        "mkfs.vfat",
        tool(
            "mkfs.vfat",
            "dosfstools",
            "formatting the EFI system partition",
        ),
    ),
    (
        "mcopy",
        tool("mcopy", "mtools", "writing the EFI system partition"),
    ),
    (
        "sfdisk",
        tool("sfdisk", "fdisk", "partitioning the guest disk"),
    ),
    (
        "qemu-img",
        tool(
            "qemu-img",
            "qemu-utils",
            "converting and checking the qcow2 disk",
        ),
    ),
    (
        "objcopy",
        tool("objcopy", "binutils", "inspecting PE sections of the UKI"),
    ),
    (
        "zstd",
        tool(
            "zstd",
            "zstd",
            "decompressing kernel modules for the initrd",
        ),
    ),
    (
        "cpio",
        tool("cpio", "cpio", "reading initrd archives in tests"),
    ),
    (
        "setcap",
        tool(
            "setcap",
            "libcap2-bin",
            "file capabilities in the kept-tree test",
        ),
    ),
    (
        "xz",
        tool(
            "xz",
            "xz-utils",
            "decompressing kernel modules for the initrd",
        ),
    ),
    (
        "setpriv",
        tool(
            "setpriv",
            "util-linux",
            "stopping mmdebstrap when a build is killed",
        ),
    ),
    (
        "dpkg-deb",
        tool(
            "dpkg-deb",
            "dpkg",
            "unpacking the firmware and UKI stub packages",
        ),
    ),
    (
        "gpgv",
        tool("gpgv", "gpgv", "verifying signed package indexes"),
    ),
    (
        "gpg",
        tool(
            "gpg",
            "gpg",
            "tests: signing a local repository with a key the build does not trust",
        ),
    ),
    (
        "gpgconf",
        tool(
            "gpgconf",
            "gpgconf",
            "tests: stopping the gpg-agent of that key",
        ),
    ),
    (
        "unshare",
        tool(
            "unshare",
            "util-linux",
            "offline tests in an empty network namespace",
        ),
    ),
    ("ip", tool("ip", "iproute2", "network namespaces for tests")),
    (
        "chroot",
        tool(
            "chroot",
            "coreutils",
            "running provisioning commands inside a root other than /",
        ),
    ),
    ("lspci", tool("lspci", "pciutils", "collecting PCI devices")),
    (
        "dmidecode",
        tool("dmidecode", "dmidecode", "collecting platform identity"),
    ),
    (
        "lsmod",
        tool("lsmod", "kmod", "collecting loaded kernel modules"),
    ),
    (
        "dmesg",
        tool("dmesg", "util-linux", "collecting the kernel log"),
    ),
    (
        "lscpu",
        tool("lscpu", "util-linux", "collecting the CPU topology"),
    ),
    (
        "uname",
        tool("uname", "coreutils", "collecting the kernel release"),
    ),
    (
        "nft",
        tool("nft", "nftables", "checking the rendered guest firewall"),
    ),
    (
        "shellcheck",
        tool(
            "shellcheck",
            "shellcheck",
            "linting rendered launch scripts",
        ),
    ),
    (
        "virt-xml-validate",
        tool(
            "virt-xml-validate",
            "libvirt-clients",
            "validating domain XML",
        ),
    ),
    (
        "xmllint",
        tool("xmllint", "libxml2-utils", "validating XML reports"),
    ),
    (
        "openssl",
        tool("openssl", "openssl", "TLS test certificates"),
    ),
    (
        "osslsigncode",
        tool(
            "osslsigncode",
            "osslsigncode",
            "checking the Authenticode hash of the TDX measurement",
        ),
    ),
    (
        "qemu-system-x86_64",
        Requirement {
            probe: Probe::Command("qemu-system-x86_64"),
            package: "qemu-system-x86",
            bookworm_backports: true,
            purpose: "booting the guest (QEMU >= 9.1 for sev-snp-guest)",
        },
    ),
    (
        "ubuntu-archive-keyring",
        Requirement {
            probe: Probe::File("/usr/share/keyrings/ubuntu-archive-keyring.gpg"),
            package: "ubuntu-keyring",
            bookworm_backports: true,
            purpose: "verifying the Ubuntu archive's signatures",
        },
    ),
    (
        "debian-archive-keyring",
        Requirement {
            probe: Probe::File("/usr/share/keyrings/debian-archive-keyring.gpg"),
            package: "debian-archive-keyring",
            bookworm_backports: false,
            purpose: "verifying the Debian archive's signatures (the tests' trixie fallback)",
        },
    ),
    (
        "python3-venv",
        Requirement {
            probe: Probe::File("/usr/share/doc/python3-venv/copyright"),
            package: "python3-venv",
            bookworm_backports: false,
            purpose: "the sev-snp-measure differential test (pip in a venv)",
        },
    ),
    (
        "ovmf",
        Requirement {
            probe: Probe::File("/usr/share/OVMF/OVMF_CODE_4M.fd"),
            package: "ovmf",
            bookworm_backports: false,
            purpose: "booting the guest under QEMU",
        },
    ),
];

/// Whether missing requirements may be installed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InstallPolicy {
    /// Install with apt when running as root on Debian/Ubuntu (`guest build`, `ci`).
    Install,
    /// Never change the host: fail with the command to run (`--no-install-deps`, every other command).
    Refuse,
}

/// Looks up a requirement by name. Panics on an unknown name: that is a bug in the caller.
pub fn requirement(name: &str) -> Requirement {
    REQUIREMENTS
        .iter()
        .find(|(key, _)| *key == name)
        .map(|(_, requirement)| *requirement)
        .unwrap_or_else(|| {
            panic!("unknown requirement {name:?}: add it to cvm_core::deps::REQUIREMENTS")
        })
}

/// Finds `name` on `PATH`, falling back to the sbin directories root's tools live in.
pub fn find_tool(name: &str) -> Option<PathBuf> {
    which::which(name).ok().or_else(|| {
        ["/usr/sbin", "/sbin", "/usr/bin", "/bin"]
            .iter()
            .map(|dir| Path::new(dir).join(name))
            .find(|path| path.is_file())
    })
}

fn satisfied(requirement: &Requirement) -> bool {
    match requirement.probe {
        Probe::Command(name) => find_tool(name).is_some(),
        Probe::File(path) => Path::new(path).exists(),
    }
}

/// The requirements among `names` that the host lacks.
pub fn missing(names: &[&str]) -> Vec<Requirement> {
    let mut missing: Vec<Requirement> = Vec::new();
    for requirement in names.iter().map(|name| requirement(name)) {
        if !satisfied(&requirement)
            && !missing
                .iter()
                .any(|seen| seen.package == requirement.package)
        {
            missing.push(requirement);
        }
    }
    missing
}

/// The host's distribution, from /etc/os-release.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OsRelease {
    /// `ID`, e.g. `debian` or `ubuntu`.
    pub id: String,
    /// `VERSION_ID`, e.g. `12` or `25.10`.
    pub version_id: String,
    /// `VERSION_CODENAME`, e.g. `bookworm`.
    pub codename: String,
}

impl OsRelease {
    /// Parses the text of an os-release file.
    pub fn parse(text: &str) -> Self {
        let field = |key: &str| {
            text.lines()
                .filter_map(|line| line.split_once('='))
                .find(|(k, _)| k.trim() == key)
                .map(|(_, v)| v.trim().trim_matches('"').to_owned())
                .unwrap_or_default()
        };
        Self {
            id: field("ID"),
            version_id: field("VERSION_ID"),
            codename: field("VERSION_CODENAME"),
        }
    }

    /// Reads /etc/os-release of this host.
    pub fn host() -> Result<Self> {
        let path = Path::new("/etc/os-release");
        let text =
            fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        Ok(Self::parse(&text))
    }

    fn is_bookworm(&self) -> bool {
        self.id == "debian" && self.codename == "bookworm"
    }
}

/// The apt command lines that would install `missing` on `os`.
pub fn install_commands(missing: &[Requirement], os: &OsRelease) -> Vec<String> {
    let (backports, plain): (Vec<_>, Vec<_>) = missing
        .iter()
        .partition(|requirement| requirement.bookworm_backports && os.is_bookworm());
    let mut commands = Vec::new();
    let names = |list: &[&Requirement]| {
        list.iter()
            .map(|requirement| requirement.package)
            .collect::<Vec<_>>()
            .join(" ")
    };
    if !plain.is_empty() {
        commands.push(format!(
            "apt-get install -y --no-install-recommends {}",
            names(&plain)
        ));
    }
    if !backports.is_empty() {
        commands.push(format!(
            "apt-get install -y --no-install-recommends -t bookworm-backports {}",
            names(&backports)
        ));
    }
    commands
}

/// Makes sure every requirement in `names` is present, installing what is missing when `policy`
/// allows it and the host can (root on Debian/Ubuntu with apt). Progress goes to stderr.
pub fn ensure(names: &[&str], policy: InstallPolicy) -> Result<()> {
    let missing = missing(names);
    if missing.is_empty() {
        return Ok(());
    }
    let os = OsRelease::host().unwrap_or(OsRelease {
        id: String::new(),
        version_id: String::new(),
        codename: String::new(),
    });
    let needs_backports = os.is_bookworm() && missing.iter().any(|r| r.bookworm_backports);
    let what = missing
        .iter()
        .map(|r| format!("{} ({})", r.package, r.purpose))
        .collect::<Vec<_>>()
        .join(", ");
    let mut fix = install_commands(&missing, &os);
    if needs_backports {
        fix.insert(
            0,
            "enable bookworm-backports in /etc/apt/sources.list.d".to_owned(),
        );
    }
    let fix = fix.join(" && ");
    let apt_host = (os.id == "debian" || os.id == "ubuntu") && find_tool("apt-get").is_some();
    match policy {
        InstallPolicy::Refuse => {
            bail!("missing host packages: {what}; install them with: {fix}")
        }
        InstallPolicy::Install if !apt_host => {
            bail!("missing host packages: {what}; this is not a Debian/Ubuntu host with apt, install the equivalent of: {fix}")
        }
        InstallPolicy::Install if !is_root() => {
            bail!("missing host packages: {what}; run as root to install them automatically, or run: sudo sh -c '{fix}'")
        }
        InstallPolicy::Install => {}
    }
    if needs_backports {
        enable_bookworm_backports()?;
    }
    eprintln!("  Installing {what}");
    Cmd::new("apt-get")
        .args(["update", "-q"])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .run()
        .context("refreshing apt's package lists")?;
    for command in install_commands(&missing, &os) {
        eprintln!("     Running {command}");
        let words: Vec<&str> = command.split_whitespace().collect();
        Cmd::new(words[0])
            .args(&words[1..])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .run()
            .with_context(|| format!("installing {what}"))?;
    }
    let still_missing = self::missing(names);
    if !still_missing.is_empty() {
        let packages: Vec<_> = still_missing.iter().map(|r| r.package).collect();
        bail!(
            "packages {} were installed but what they should provide is still missing",
            packages.join(" ")
        );
    }
    Ok(())
}

/// True when running as root (effective uid 0).
pub fn is_root() -> bool {
    // /proc/self/status carries "Uid: real effective saved fs".
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|line| line.starts_with("Uid:"))
                .and_then(|line| line.split_whitespace().nth(2).map(|uid| uid == "0"))
        })
        .unwrap_or(false)
}

const BACKPORTS_SOURCE: &str = "/etc/apt/sources.list.d/cvm-stack-bookworm-backports.sources";

/// Finds the URI of the host's own `bookworm` Debian source (deb822 or one-line format).
pub fn debian_mirror_from_sources(files: &[(PathBuf, String)]) -> Option<String> {
    for (path, text) in files {
        if path.extension().is_some_and(|ext| ext == "sources") {
            for stanza in text.split("\n\n") {
                let field = |key: &str| {
                    stanza
                        .lines()
                        .filter(|line| !line.trim_start().starts_with('#'))
                        .filter_map(|line| line.split_once(':'))
                        .find(|(k, _)| k.trim().eq_ignore_ascii_case(key))
                        .map(|(_, v)| v.trim().to_owned())
                };
                let suites = field("Suites").unwrap_or_default();
                if suites.split_whitespace().any(|suite| suite == "bookworm") {
                    if let Some(uri) = field("URIs")
                        .and_then(|uris| uris.split_whitespace().next().map(str::to_owned))
                    {
                        return Some(uri);
                    }
                }
            }
        } else {
            for line in text.lines() {
                let words: Vec<&str> = line
                    .split_whitespace()
                    .filter(|w| !w.starts_with('['))
                    .collect();
                if words.len() >= 3 && words[0] == "deb" && words[2] == "bookworm" {
                    return Some(words[1].to_owned());
                }
            }
        }
    }
    None
}

fn enable_bookworm_backports() -> Result<()> {
    let mut paths = vec![PathBuf::from("/etc/apt/sources.list")];
    if let Ok(entries) = fs::read_dir("/etc/apt/sources.list.d") {
        let mut more: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        more.sort();
        paths.extend(more);
    }
    let files: Vec<(PathBuf, String)> = paths
        .into_iter()
        .filter(|path| {
            path.file_name().is_some_and(|name| name == "sources.list")
                || path
                    .extension()
                    .is_some_and(|ext| ext == "list" || ext == "sources")
        })
        .filter_map(|path| fs::read_to_string(&path).ok().map(|text| (path, text)))
        .collect();
    let enabled = files.iter().any(|(_, text)| {
        text.lines()
            .any(|line| !line.trim_start().starts_with('#') && line.contains("bookworm-backports"))
    });
    if enabled {
        return Ok(());
    }
    let Some(uri) = debian_mirror_from_sources(&files) else {
        bail!("cannot enable bookworm-backports: no Debian bookworm source found in /etc/apt/sources.list{{,.d}}; add a bookworm-backports source by hand");
    };
    let contents = format!(
        "# Added by cvm-stack: the Ubuntu archive keyring and QEMU >= 9.1 come from bookworm-backports.\nTypes: deb\nURIs: {uri}\nSuites: bookworm-backports\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"
    );
    eprintln!("  Enabling bookworm-backports: writing {BACKPORTS_SOURCE}:\n{contents}");
    fs::write(BACKPORTS_SOURCE, contents).with_context(|| format!("writing {BACKPORTS_SOURCE}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_requirement_name_is_unique() {
        let mut names: Vec<_> = REQUIREMENTS.iter().map(|(name, _)| *name).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), REQUIREMENTS.len());
    }

    #[test]
    fn backports_packages_get_their_own_command_on_bookworm_only() {
        let missing = [requirement("mmdebstrap"), requirement("qemu-system-x86_64")];
        let bookworm =
            OsRelease::parse("ID=debian\nVERSION_ID=\"12\"\nVERSION_CODENAME=bookworm\n");
        assert_eq!(
            install_commands(&missing, &bookworm),
            [
                "apt-get install -y --no-install-recommends mmdebstrap",
                "apt-get install -y --no-install-recommends -t bookworm-backports qemu-system-x86"
            ]
        );
        let noble = OsRelease::parse("ID=ubuntu\nVERSION_ID=\"24.04\"\nVERSION_CODENAME=noble\n");
        assert_eq!(
            install_commands(&missing, &noble),
            ["apt-get install -y --no-install-recommends mmdebstrap qemu-system-x86"]
        );
    }

    #[test]
    fn mirror_is_read_from_deb822_and_one_line_sources() {
        let deb822 = (
            PathBuf::from("/etc/apt/sources.list.d/debian.sources"),
            "Types: deb\n# a comment: not this\nURIs: http://mirror.invalid/debian\nSuites: bookworm bookworm-updates\nComponents: main\n\nTypes: deb\nURIs: http://security.invalid/debian-security\nSuites: bookworm-security\n".to_owned(),
        );
        assert_eq!(
            debian_mirror_from_sources(&[deb822]).as_deref(),
            Some("http://mirror.invalid/debian")
        );
        let one_line = (
            PathBuf::from("/etc/apt/sources.list"),
            "# deb http://old.invalid/debian bookworm main\ndeb [arch=amd64] http://mirror.invalid/debian bookworm main\n".to_owned(),
        );
        assert_eq!(
            debian_mirror_from_sources(&[one_line]).as_deref(),
            Some("http://mirror.invalid/debian")
        );
    }

    #[test]
    fn refuse_policy_prints_the_fix() {
        let err = ensure(&["mmdebstrap"], InstallPolicy::Refuse);
        if find_tool("mmdebstrap").is_some() {
            assert!(err.is_ok());
        } else {
            let message = err.unwrap_err().to_string();
            assert!(
                message.contains("apt-get install -y --no-install-recommends mmdebstrap"),
                "{message}"
            );
        }
    }
}
