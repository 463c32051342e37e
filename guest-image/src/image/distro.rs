//! Where the guest's packages come from: the model's Ubuntu suite (the product, always), or the
//! Debian trixie fallback that the slow tests build when the Ubuntu archive is unreachable, so the
//! pipeline is still exercised (issue 3). The fallback is a library build option only: the model
//! (`guest.suite = "noble"`) and `cargo xtask guest build` never select it.
//!
//! Debian ships no OVMF AmdSev build (shared/reference/image-pipeline.md, "OVMF builds shipped"),
//! so the fallback takes its firmware from a file the caller names and pins by sha256 (the tests
//! pass Ubuntu noble's OVMF.amdsev.fd from `shared/test-data/firmware/`).

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use cvm_core::model::Model;

/// The Ubuntu archive keyring (from the host's ubuntu-keyring package).
pub const UBUNTU_KEYRING: &str = "/usr/share/keyrings/ubuntu-archive-keyring.gpg";
/// The Debian archive keyring (from the host's debian-archive-keyring package).
pub const DEBIAN_KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";

/// The Debian suite of the fallback.
pub const DEBIAN_SUITE: &str = "trixie";
/// The fallback's kernel: Debian's cloud flavour (6.12 in trixie). Its 6.12.118+deb13 build has
/// erofs, dm-verity, virtio_blk and the sev-guest and tdx-guest drivers as (signed, xz) modules
/// and virtio_pci built in; the rootfs stage checks the boot modules of every kernel
/// ([`super::rootfs::BOOT_MODULES`]).
pub const DEBIAN_KERNEL: &str = "linux-image-cloud-amd64";
/// Packages the fallback guest needs besides the base ones: Debian trixie moved
/// systemd-veritysetup (used by the initrd's verity script) out of `systemd` into its own package.
pub const DEBIAN_EXTRA_PACKAGES: &[&str] = &["systemd-cryptsetup"];

/// The x86-64 systemd stub inside systemd-boot-efi (the same path in Ubuntu and Debian).
pub const STUB_IN_PACKAGE: &str = "usr/lib/systemd/boot/efi/linuxx64.efi.stub";
/// The AmdSev firmware inside Ubuntu's ovmf package.
pub const FIRMWARE_IN_PACKAGE: &str = "usr/share/ovmf/OVMF.amdsev.fd";

/// The distribution a build takes its packages from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Distro {
    /// The model's suite, mirror and kernel (Ubuntu noble): every product build.
    #[default]
    Ubuntu,
    /// The Debian trixie fallback of the slow tests.
    DebianTrixie(DebianFallback),
}

/// What the Debian trixie fallback needs besides the model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DebianFallback {
    /// The OVMF AmdSev firmware to ship as firmware.fd.
    pub firmware: PathBuf,
    /// Its sha256 (lower-case hex), checked before it is used.
    pub firmware_sha256: String,
    /// A Debian mirror URL; `None` is mmdebstrap's default for trixie (the model's mirror is an
    /// Ubuntu mirror and is never used for Debian).
    pub mirror: Option<String>,
}

/// A package the build takes one file from: (package, path inside it, output file name).
pub type BuildFile = (&'static str, &'static str, &'static str);

impl Distro {
    /// The suite given to mmdebstrap and recorded in packages.lock.
    pub fn suite<'a>(&'a self, model: &'a Model) -> &'a str {
        match self {
            Distro::Ubuntu => &model.guest.suite,
            Distro::DebianTrixie(_) => DEBIAN_SUITE,
        }
    }

    /// The kernel package installed in the guest (and purged with the meta packages later).
    pub fn kernel<'a>(&'a self, model: &'a Model) -> &'a str {
        match self {
            Distro::Ubuntu => &model.guest.kernel,
            Distro::DebianTrixie(_) => DEBIAN_KERNEL,
        }
    }

    /// The mirror, `None` for mmdebstrap's default for the suite.
    pub fn mirror<'a>(&'a self, model: &'a Model) -> Option<&'a str> {
        match self {
            Distro::Ubuntu => model.guest.mirror.as_deref(),
            Distro::DebianTrixie(fallback) => fallback.mirror.as_deref(),
        }
    }

    /// True for an Ubuntu suite (the model's suite is validated to be one, but the library
    /// accepts what it is given).
    fn ubuntu(&self, model: &Model) -> bool {
        matches!(self, Distro::Ubuntu) && super::rootfs::is_ubuntu_suite(&model.guest.suite)
    }

    /// The archive components, comma-separated.
    pub fn components(&self, model: &Model) -> &'static str {
        if self.ubuntu(model) {
            "main,universe"
        } else {
            "main"
        }
    }

    /// The keyring apt verifies the archive with: the only keys trusted during the build.
    pub fn keyring(&self, model: &Model) -> Option<&'static str> {
        match self {
            Distro::Ubuntu if self.ubuntu(model) => Some(UBUNTU_KEYRING),
            Distro::Ubuntu => None,
            Distro::DebianTrixie(_) => Some(DEBIAN_KEYRING),
        }
    }

    /// Guest packages this distribution needs besides the base ones and the kernel.
    pub fn extra_packages(&self) -> &'static [&'static str] {
        match self {
            Distro::Ubuntu => &[],
            Distro::DebianTrixie(_) => DEBIAN_EXTRA_PACKAGES,
        }
    }

    /// The packages the build takes files from, with the file and its output name.
    pub fn build_files(&self) -> &'static [BuildFile] {
        match self {
            Distro::Ubuntu => &[
                ("ovmf", FIRMWARE_IN_PACKAGE, "firmware.fd"),
                ("systemd-boot-efi", STUB_IN_PACKAGE, "stub.efi"),
            ],
            Distro::DebianTrixie(_) => &[("systemd-boot-efi", STUB_IN_PACKAGE, "stub.efi")],
        }
    }

    /// The firmware file given outside the archive, when this distribution has no AmdSev build.
    pub fn firmware_file(&self) -> Option<(&Path, &str)> {
        match self {
            Distro::Ubuntu => None,
            Distro::DebianTrixie(fallback) => Some((
                fallback.firmware.as_path(),
                fallback.firmware_sha256.as_str(),
            )),
        }
    }

    /// The directory name of this distribution's .deb cache under the stage cache. The caches
    /// are separate: Ubuntu rebuilds packages it syncs from Debian under the same file name.
    pub fn deb_cache_name(&self) -> &'static str {
        match self {
            Distro::Ubuntu => "debs",
            Distro::DebianTrixie(_) => "debs-trixie",
        }
    }

    /// Checks the fallback's firmware against its pin and returns its sha256 (`None` for Ubuntu).
    pub fn check_firmware(&self) -> Result<Option<String>> {
        let Some((path, pinned)) = self.firmware_file() else {
            return Ok(None);
        };
        let (sha256, _) = cvm_core::hash::sha256_file(path)?;
        if !sha256.eq_ignore_ascii_case(pinned) {
            bail!(
                "{}: sha256 is {sha256}, but the Debian fallback pins {pinned}; restore the file",
                path.display()
            );
        }
        Ok(Some(sha256))
    }
}
