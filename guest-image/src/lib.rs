//! The guest floor: the image build pipeline (lock → rootfs → harden → initrd → erofs + verity →
//! UKI → disk → qcow2 → manifest), launch measurements (SEV-SNP launch digest, TDX MRTD) and the
//! rendering of launch scripts and domain XML. Never imports host-setup.

pub mod image;
pub mod launch;
pub mod measure;
