//! OVMF image parsing: the footer GUID table, the SEV metadata (SEV-SNP) and the TDVF metadata
//! (TDX).
//!
//! Every offset read from the image is checked before it is used, so a truncated, random or
//! hostile image gives an error, never a panic or an unbounded loop (the property tests in
//! `tests.rs` feed these parsers random and mutated images). Layouts: edk2
//! `OvmfPkg/ResetVector/Ia16/ResetVectorVtf0.asm` (the GUID table), `OvmfSevMetadata.asm` and
//! `IntelTdxMetadata.asm`; the walk and its traps are described in
//! `../shared/reference/measurement.md` §1.3, §1.4 and §2.1.

use anyhow::Result;
use cvm_core::error::bad_input;

/// A GUID in the EFI (mixed-endian) byte layout in which OVMF stores it.
pub type Guid = [u8; 16];

/// Converts a textual GUID into its EFI byte layout at compile time: the first three fields are
/// little-endian, the last two are stored as written.
pub(crate) const fn guid(text: &str) -> Guid {
    const fn nibble(byte: u8) -> u8 {
        match byte {
            b'0'..=b'9' => byte - b'0',
            b'a'..=b'f' => byte - b'a' + 10,
            b'A'..=b'F' => byte - b'A' + 10,
            _ => panic!("a GUID constant has a non-hex digit"),
        }
    }
    let text = text.as_bytes();
    assert!(text.len() == 36, "a GUID constant is 36 characters long");
    // Hex digit pairs in the order they are written, skipping the dashes.
    let mut written = [0u8; 16];
    let mut index = 0;
    let mut position = 0;
    while index < 16 {
        if text[position] == b'-' {
            position += 1;
            continue;
        }
        written[index] = nibble(text[position]) << 4 | nibble(text[position + 1]);
        index += 1;
        position += 2;
    }
    // Byte order of the EFI layout: fields 1-3 reversed, fields 4-5 as written.
    let order = [3, 2, 1, 0, 5, 4, 7, 6, 8, 9, 10, 11, 12, 13, 14, 15];
    let mut out = [0u8; 16];
    let mut i = 0;
    while i < 16 {
        out[i] = written[order[i]];
        i += 1;
    }
    out
}

/// The GUID of the footer entry that describes the whole table.
pub const FOOTER_GUID: Guid = guid("96b582de-1fb2-45f7-baea-a366c55a082d");
/// SEV-ES reset block: the AP reset EIP (u32).
pub const SEV_ES_RESET_BLOCK_GUID: Guid = guid("00f771de-1a7e-4fcb-890e-68c77e2fb44e");
/// SEV metadata: offset from the end of the image of the `ASEV` header (u32).
pub const SEV_METADATA_GUID: Guid = guid("dc886566-984a-4798-a75e-5585a7bf67cc");
/// Reserved area of the SEV kernel-hashes table: GPA and size (two u32).
pub const SEV_HASH_TABLE_RV_GUID: Guid = guid("7255371f-3a3b-4b04-927b-1da6efa8d454");
/// TDX metadata: offset from the end of the image of the `TDVF` descriptor (u32).
pub const TDX_METADATA_OFFSET_GUID: Guid = guid("e47a6535-984a-4798-865e-4685a7bf8ec2");

/// Size of a footer table entry header: `{u16 size; GUID guid}`.
const ENTRY_HEADER: usize = 18;
/// The footer entry ends this many bytes before the end of the image.
const FOOTER_END_GAP: usize = 32;
/// The 4 GiB boundary below which the firmware is mapped.
pub const FOUR_GIB: u64 = 1 << 32;
/// The page size every launch operation works in.
pub const PAGE: usize = 4096;

/// An OVMF image with its footer GUID table parsed.
#[derive(Debug, Clone)]
pub struct Ovmf<'a> {
    data: &'a [u8],
    /// Table entries in the order the backward walk meets them: (GUID, entry data).
    entries: Vec<(Guid, &'a [u8])>,
}

fn read_u16(bytes: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(bytes.get(at..at + 2)?.try_into().ok()?))
}

fn read_u32(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(
        bytes.get(at..at.checked_add(4)?)?.try_into().ok()?,
    ))
}

fn read_u64(bytes: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(
        bytes.get(at..at.checked_add(8)?)?.try_into().ok()?,
    ))
}

impl<'a> Ovmf<'a> {
    /// Parses the footer GUID table that ends 32 bytes before the end of `data`.
    pub fn parse(data: &'a [u8]) -> Result<Self> {
        if data.is_empty() {
            return Err(bad_input("the firmware file is empty; pass an OVMF image"));
        }
        let not_ovmf = || {
            bad_input(
                "has no OVMF footer GUID table 32 bytes before its end: not an OVMF image, or a truncated one",
            )
        };
        let footer_start = data
            .len()
            .checked_sub(FOOTER_END_GAP + ENTRY_HEADER)
            .ok_or_else(not_ovmf)?;
        let footer = &data[footer_start..footer_start + ENTRY_HEADER];
        if footer[2..] != FOOTER_GUID {
            return Err(not_ovmf());
        }
        let table_size = usize::from(read_u16(footer, 0).ok_or_else(not_ovmf)?);
        let body_size = table_size.checked_sub(ENTRY_HEADER).ok_or_else(|| {
            bad_input(format!(
                "has an OVMF footer table of {table_size} bytes, smaller than its own 18-byte header"
            ))
        })?;
        let table_start = footer_start.checked_sub(body_size).ok_or_else(|| {
            bad_input(format!(
                "has an OVMF footer table of {table_size} bytes, larger than the image"
            ))
        })?;
        let mut table = &data[table_start..footer_start];
        let mut entries = Vec::new();
        // Walk backwards: each entry's header is at its end, its data right before the header.
        while table.len() >= ENTRY_HEADER {
            let header = &table[table.len() - ENTRY_HEADER..];
            let size = usize::from(read_u16(header, 0).unwrap_or(0));
            if size < ENTRY_HEADER || size > table.len() {
                return Err(bad_input(format!(
                    "has a corrupt OVMF footer table: an entry claims {size} bytes where 18..={} fit",
                    table.len()
                )));
            }
            let mut guid = [0u8; 16];
            guid.copy_from_slice(&header[2..]);
            entries.push((guid, &table[table.len() - size..table.len() - ENTRY_HEADER]));
            table = &table[..table.len() - size];
        }
        Ok(Self { data, entries })
    }

    /// The whole image.
    pub fn data(&self) -> &'a [u8] {
        self.data
    }

    /// The data of the table entry `guid`, if present. When a GUID repeats, the entry nearest the
    /// start of the table wins, as in sev-snp-measure (its dictionary keeps the last one walked).
    pub fn entry(&self, guid: &Guid) -> Option<&'a [u8]> {
        self.entries
            .iter()
            .rev()
            .find(|(entry_guid, _)| entry_guid == guid)
            .map(|(_, data)| *data)
    }

    /// A u32 at the start of entry `guid`.
    fn entry_u32(&self, guid: &Guid, name: &str) -> Result<Option<u32>> {
        match self.entry(guid) {
            None => Ok(None),
            Some(data) => read_u32(data, 0).map(Some).ok_or_else(|| {
                bad_input(format!(
                    "has a {name} entry of {} bytes, too short for its 4-byte value",
                    data.len()
                ))
            }),
        }
    }

    /// The AP reset EIP from the SEV-ES reset block.
    pub fn sev_es_reset_eip(&self) -> Result<Option<u32>> {
        self.entry_u32(&SEV_ES_RESET_BLOCK_GUID, "SEV-ES reset block")
    }

    /// The GPA of the SEV kernel-hashes table area.
    pub fn sev_hash_table_gpa(&self) -> Result<Option<u32>> {
        self.entry_u32(&SEV_HASH_TABLE_RV_GUID, "SEV hash table")
    }

    /// Resolves an "offset from the end of the image" table value to a start offset.
    fn offset_from_end(&self, offset_from_end: u32, what: &str) -> Result<usize> {
        self.data
            .len()
            .checked_sub(offset_from_end as usize)
            .filter(|_| offset_from_end != 0)
            .ok_or_else(|| {
                bad_input(format!(
                    "has a {what} offset {offset_from_end:#x} that points outside the image"
                ))
            })
    }

    /// The SEV metadata sections, in file order; `None` when the image has no SEV metadata.
    pub fn sev_metadata(&self) -> Result<Option<Vec<SevSection>>> {
        let Some(offset) = self.entry_u32(&SEV_METADATA_GUID, "SEV metadata")? else {
            return Ok(None);
        };
        let start = self.offset_from_end(offset, "SEV metadata")?;
        let header = self.data.get(start..start + 16).ok_or_else(|| {
            bad_input("has an SEV metadata header that runs past the end of the image")
        })?;
        if &header[..4] != b"ASEV" {
            return Err(bad_input(
                "has an SEV metadata entry that does not point at an `ASEV` header",
            ));
        }
        let size = read_u32(header, 4).unwrap_or(0) as usize;
        let version = read_u32(header, 8).unwrap_or(0);
        let count = read_u32(header, 12).unwrap_or(0) as usize;
        if version != 1 {
            return Err(bad_input(format!(
                "has SEV metadata version {version}; only version 1 is known"
            )));
        }
        let items_end = start.saturating_add(size).min(self.data.len());
        let items = self.data.get(start + 16..items_end).unwrap_or(&[]);
        if count > items.len() / 12 {
            return Err(bad_input(format!(
                "has SEV metadata declaring {count} sections in {size} bytes"
            )));
        }
        let mut sections = Vec::with_capacity(count);
        for index in 0..count {
            let at = index * 12;
            let gpa = read_u32(items, at).unwrap_or(0);
            let size = read_u32(items, at + 4).unwrap_or(0);
            let raw_kind = read_u32(items, at + 8).unwrap_or(0);
            let kind = SevSectionKind::from_raw(raw_kind).ok_or_else(|| {
                bad_input(format!(
                    "has SEV metadata section {index} of unknown type {raw_kind:#x}"
                ))
            })?;
            sections.push(SevSection { gpa, size, kind });
        }
        Ok(Some(sections))
    }

    /// The TDVF sections, in metadata order; `None` when the image has no TDX metadata.
    pub fn tdvf_metadata(&self) -> Result<Option<Vec<TdvfSection>>> {
        let Some(offset) = self.entry_u32(&TDX_METADATA_OFFSET_GUID, "TDX metadata")? else {
            return Ok(None);
        };
        let start = self.offset_from_end(offset, "TDX metadata")?;
        let descriptor = self.data.get(start..start + 16).ok_or_else(|| {
            bad_input("has a TDVF descriptor that runs past the end of the image")
        })?;
        if &descriptor[..4] != b"TDVF" {
            return Err(bad_input(
                "has a TDX metadata entry that does not point at a `TDVF` descriptor",
            ));
        }
        let version = read_u32(descriptor, 8).unwrap_or(0);
        let count = read_u32(descriptor, 12).unwrap_or(0) as usize;
        if version != 1 {
            return Err(bad_input(format!(
                "has TDVF metadata version {version}; only version 1 is known"
            )));
        }
        let items = &self.data[start + 16..];
        if count > items.len() / 32 {
            return Err(bad_input(format!(
                "has a TDVF descriptor declaring {count} sections, more than the image holds"
            )));
        }
        let mut sections = Vec::with_capacity(count);
        for index in 0..count {
            let at = index * 32;
            let section = TdvfSection {
                data_offset: read_u32(items, at).unwrap_or(0),
                raw_data_size: read_u32(items, at + 4).unwrap_or(0),
                memory_address: read_u64(items, at + 8).unwrap_or(0),
                memory_data_size: read_u64(items, at + 16).unwrap_or(0),
                kind: read_u32(items, at + 24).unwrap_or(0),
                attributes: read_u32(items, at + 28).unwrap_or(0),
            };
            section.check(index, self.data.len())?;
            sections.push(section);
        }
        Ok(Some(sections))
    }
}

/// What an SEV metadata section contributes to the launch (`OvmfSevMetadata.asm`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SevSectionKind {
    /// Type 1: pre-validated memory (ZERO pages on QEMU).
    SecMemory,
    /// Type 2: the secrets page.
    Secrets,
    /// Type 3: the CPUID page.
    Cpuid,
    /// Type 4: the SVSM calling-area page (ZERO pages).
    SvsmCaa,
    /// Type 0x10: the kernel-hashes page of measured direct boot.
    KernelHashes,
}

impl SevSectionKind {
    fn from_raw(raw: u32) -> Option<Self> {
        Some(match raw {
            1 => Self::SecMemory,
            2 => Self::Secrets,
            3 => Self::Cpuid,
            4 => Self::SvsmCaa,
            0x10 => Self::KernelHashes,
            _ => return None,
        })
    }
}

/// One SEV metadata descriptor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SevSection {
    /// Guest physical address.
    pub gpa: u32,
    /// Size in bytes.
    pub size: u32,
    /// What it holds.
    pub kind: SevSectionKind,
}

/// TDVF section attribute: the pages' contents are extended into MRTD.
pub const TDVF_ATTR_MR_EXTEND: u32 = 1;
/// TDVF section attribute: the pages are accepted later by the guest (not added at build time).
pub const TDVF_ATTR_PAGE_AUG: u32 = 2;

/// One TDVF section descriptor (TDVF spec, "TDVF_SECTION").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TdvfSection {
    /// Offset of the section's bytes in the image.
    pub data_offset: u32,
    /// Number of bytes in the image.
    pub raw_data_size: u32,
    /// Guest physical address.
    pub memory_address: u64,
    /// Size in guest memory.
    pub memory_data_size: u64,
    /// 0 BFV, 1 CFV, 2 TD_HOB, 3 TempMem, 4 PermMem, 5 Payload, 6 PayloadParam.
    pub kind: u32,
    /// Bit 0 MR.EXTEND, bit 1 PAGE.AUG.
    pub attributes: u32,
}

impl TdvfSection {
    fn check(&self, index: usize, image_len: usize) -> Result<()> {
        let page = PAGE as u64;
        let problem = |what: &str| {
            Err(bad_input(format!(
                "has TDVF section {index} (type {}) with {what}",
                self.kind
            )))
        };
        if self.memory_address % page != 0 || self.memory_data_size % page != 0 {
            return problem("an address or size that is not page-aligned");
        }
        if self
            .memory_address
            .checked_add(self.memory_data_size)
            .is_none_or(|end| end > FOUR_GIB)
        {
            return problem("memory beyond 4 GiB");
        }
        if u64::from(self.raw_data_size) > self.memory_data_size {
            return problem("more raw data than memory");
        }
        let raw_end = self.data_offset as usize + self.raw_data_size as usize;
        if self.raw_data_size != 0 && raw_end > image_len {
            return problem("raw data beyond the end of the image");
        }
        Ok(())
    }
}
