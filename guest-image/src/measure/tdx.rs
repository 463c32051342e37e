//! The TDX MRTD of a TDVF firmware as QEMU/KVM builds the TD.
//!
//! The TDX module keeps one SHA-384 over the build: TDH.MEM.PAGE.ADD appends a 128-byte record
//! (`"MEM.PAGE.ADD"`, GPA), TDH.MR.EXTEND appends a 128-byte record (`"MR.EXTEND"`, GPA) followed by
//! the 256 bytes it extends. QEMU adds every TDVF section in metadata order (except PAGE.AUG
//! ones) and extends the sections marked MR.EXTEND. MRTD depends only on the firmware and on the
//! page-add order of the VMM (reference notes `measurement.md` §2.2).
//!
//! `PageAddOrder` is the model's own type, so a model value and a flag can never mean different
//! orders.
//!
//! RTMRs are [`super::rtmr`]'s: RTMR0 covers the VMM's ACPI tables and TD HOB (QEMU version,
//! machine type, memory and devices) and is not predicted; for RTMR1/RTMR2 it lists the events
//! that follow from the UKI and an RTMR1 candidate that is not verified on hardware.

use anyhow::Result;
use cvm_core::error::bad_input;
use ring::digest::{Context as Sha384, SHA384};

pub use cvm_core::model::PageAddOrder;

use super::ovmf::{Ovmf, TdvfSection, PAGE, TDVF_ATTR_MR_EXTEND, TDVF_ATTR_PAGE_AUG};

/// The most bytes of TDVF sections the VMM may add at build time. Real builds add about 5 MiB;
/// the cap keeps a corrupt size from costing a million page records.
const MAX_ADDED_BYTES: u64 = 1 << 30;

/// Bytes per TDH.MR.EXTEND.
const EXTEND_CHUNK: usize = 256;

fn page_add(hasher: &mut Sha384, gpa: u64) {
    let mut record = [0u8; 128];
    record[..12].copy_from_slice(b"MEM.PAGE.ADD");
    record[16..24].copy_from_slice(&gpa.to_le_bytes());
    hasher.update(&record);
}

/// Extends one page: 16 records, each followed by its 256 bytes.
fn extend_page(hasher: &mut Sha384, gpa: u64, contents: &[u8; PAGE]) {
    for (index, chunk) in contents.chunks(EXTEND_CHUNK).enumerate() {
        let mut record = [0u8; 128];
        record[..9].copy_from_slice(b"MR.EXTEND");
        let chunk_gpa = gpa + (index * EXTEND_CHUNK) as u64;
        record[16..24].copy_from_slice(&chunk_gpa.to_le_bytes());
        hasher.update(&record);
        hasher.update(chunk);
    }
}

/// The bytes QEMU places in page `page` of `section`: the image's raw data, zero beyond it.
fn page_contents(firmware: &[u8], section: &TdvfSection, page: u64) -> [u8; PAGE] {
    let mut contents = [0u8; PAGE];
    let offset_in_section = page as usize * PAGE;
    let raw = section.raw_data_size as usize;
    if offset_in_section < raw {
        let length = (raw - offset_in_section).min(PAGE);
        let start = section.data_offset as usize + offset_in_section;
        // The section was checked to lie inside the image when it was parsed.
        if let Some(bytes) = firmware.get(start..start + length) {
            contents[..length].copy_from_slice(bytes);
        }
    }
    contents
}

/// The TDVF sections of `firmware`, or a bad-input error when it has none.
pub fn tdvf_sections(firmware: &[u8]) -> Result<Vec<TdvfSection>> {
    Ovmf::parse(firmware)?.tdvf_metadata()?.ok_or_else(|| {
        bad_input(
            "has no TDVF metadata (no TDX metadata entry in its GUID table): it cannot launch a TDX guest; use a TDX-capable OVMF such as Ubuntu's OVMF.fd",
        )
    })
}

/// Computes MRTD (48 bytes) of `firmware` for the VMM's page-add order.
pub fn mrtd(firmware: &[u8], order: PageAddOrder) -> Result<[u8; 48]> {
    let sections = tdvf_sections(firmware)?;
    let added: u64 = sections
        .iter()
        .filter(|section| section.attributes & TDVF_ATTR_PAGE_AUG == 0)
        .map(|section| section.memory_data_size)
        .fold(0, u64::saturating_add);
    if added > MAX_ADDED_BYTES {
        return Err(bad_input(format!(
            "declares {added:#x} bytes of TDVF sections added at build time; real TDVF builds add a few MiB (limit {MAX_ADDED_BYTES:#x})"
        )));
    }
    let mut hasher = Sha384::new(&SHA384);
    for section in &sections {
        if section.attributes & TDVF_ATTR_PAGE_AUG != 0 {
            continue;
        }
        let extend = section.attributes & TDVF_ATTR_MR_EXTEND != 0;
        let pages = section.memory_data_size / PAGE as u64;
        let gpa = |page: u64| section.memory_address + page * PAGE as u64;
        match order {
            PageAddOrder::Single => {
                for page in 0..pages {
                    page_add(&mut hasher, gpa(page));
                    if extend {
                        extend_page(
                            &mut hasher,
                            gpa(page),
                            &page_contents(firmware, section, page),
                        );
                    }
                }
            }
            PageAddOrder::TwoPass => {
                for page in 0..pages {
                    page_add(&mut hasher, gpa(page));
                }
                if extend {
                    for page in 0..pages {
                        extend_page(
                            &mut hasher,
                            gpa(page),
                            &page_contents(firmware, section, page),
                        );
                    }
                }
            }
        }
    }
    let mut mrtd = [0u8; 48];
    mrtd.copy_from_slice(hasher.finish().as_ref());
    Ok(mrtd)
}
