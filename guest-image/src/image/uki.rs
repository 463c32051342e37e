//! Our own PE writer for the unified kernel image: the systemd stub plus `.osrel`, `.cmdline`,
//! `.uname`, `.initrd` and `.linux` sections appended after the stub's last section.
//!
//! ukify is not in Debian 12, and its output depends on its version; this writer is a pure
//! function of its inputs, so the UKI is reproducible by construction. Section addresses are
//! computed from the stub's own headers (modern stubs have a high ImageBase and 4 KiB section
//! alignment, so fixed offsets from old recipes would break).

use anyhow::{bail, ensure, Context, Result};

/// Characteristics of an added section: initialized data, readable.
const SECTION_FLAGS: u32 = 0x4000_0040;
/// Size of one section header.
const SECTION_HEADER: usize = 40;

/// One PE section as read back from an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    /// The section name (at most 8 bytes).
    pub name: String,
    /// Relative virtual address.
    pub virtual_address: u32,
    /// Size in memory.
    pub virtual_size: u32,
    /// File offset of the raw data.
    pub raw_offset: u32,
    /// Size of the raw data in the file (aligned).
    pub raw_size: u32,
}

fn read_u16(bytes: &[u8], at: usize) -> Result<u16> {
    let slice = bytes.get(at..at + 2).context("PE image is truncated")?;
    Ok(u16::from_le_bytes([slice[0], slice[1]]))
}

fn read_u32(bytes: &[u8], at: usize) -> Result<u32> {
    let slice = bytes.get(at..at + 4).context("PE image is truncated")?;
    Ok(u32::from_le_bytes([slice[0], slice[1], slice[2], slice[3]]))
}

fn write_u16(bytes: &mut [u8], at: usize, value: u16) {
    bytes[at..at + 2].copy_from_slice(&value.to_le_bytes());
}

fn write_u32(bytes: &mut [u8], at: usize, value: u32) {
    bytes[at..at + 4].copy_from_slice(&value.to_le_bytes());
}

fn align_up(value: u64, alignment: u64) -> u64 {
    value.div_ceil(alignment) * alignment
}

/// Offsets of the headers of a PE32+ image.
struct Layout {
    coff: usize,
    optional: usize,
    sections: usize,
    count: usize,
}

fn layout(image: &[u8]) -> Result<Layout> {
    ensure!(
        image.get(0..2) == Some(b"MZ"),
        "not a PE image: no MZ header"
    );
    let pe = read_u32(image, 0x3c)? as usize;
    ensure!(
        image.get(pe..pe + 4) == Some(b"PE\0\0"),
        "not a PE image: no PE signature"
    );
    let coff = pe + 4;
    let count = read_u16(image, coff + 2)? as usize;
    let optional_size = read_u16(image, coff + 16)? as usize;
    let optional = coff + 20;
    ensure!(
        read_u16(image, optional)? == 0x20b,
        "not a PE32+ image (the UKI stub must be 64-bit)"
    );
    Ok(Layout {
        coff,
        optional,
        sections: optional + optional_size,
        count,
    })
}

/// The sections of a PE32+ image.
pub fn sections(image: &[u8]) -> Result<Vec<Section>> {
    let layout = layout(image)?;
    (0..layout.count)
        .map(|index| {
            let at = layout.sections + index * SECTION_HEADER;
            let raw_name = image
                .get(at..at + 8)
                .context("PE section table is truncated")?;
            let name = String::from_utf8_lossy(raw_name)
                .trim_end_matches('\0')
                .to_owned();
            Ok(Section {
                name,
                virtual_size: read_u32(image, at + 8)?,
                virtual_address: read_u32(image, at + 12)?,
                raw_size: read_u32(image, at + 16)?,
                raw_offset: read_u32(image, at + 20)?,
            })
        })
        .collect()
}

/// The contents of section `name` (its virtual size), if the image has it.
pub fn section_data<'a>(image: &'a [u8], name: &str) -> Result<Option<&'a [u8]>> {
    for section in sections(image)? {
        if section.name == name {
            let start = section.raw_offset as usize;
            let len = section.virtual_size.min(section.raw_size) as usize;
            let data = image
                .get(start..start + len)
                .with_context(|| format!("PE section {name} lies outside the file"))?;
            return Ok(Some(data));
        }
    }
    Ok(None)
}

/// Appends `added` (name, contents) to the PE32+ image `stub`, in order, and returns the new image.
pub fn add_sections(stub: &[u8], added: &[(&str, &[u8])]) -> Result<Vec<u8>> {
    let layout = layout(stub)?;
    let existing = sections(stub)?;
    let section_alignment = u64::from(read_u32(stub, layout.optional + 32)?);
    let file_alignment = u64::from(read_u32(stub, layout.optional + 36)?);
    let size_of_headers = read_u32(stub, layout.optional + 60)? as usize;
    ensure!(
        section_alignment.is_power_of_two() && file_alignment.is_power_of_two(),
        "the stub's PE alignments are not powers of two"
    );
    let first_raw = existing
        .iter()
        .filter(|s| s.raw_size > 0)
        .map(|s| s.raw_offset as usize)
        .min()
        .unwrap_or(size_of_headers);
    let table_end = layout.sections + (layout.count + added.len()) * SECTION_HEADER;
    if table_end > size_of_headers.min(first_raw) {
        bail!(
            "the stub's PE header has no room for {} more section headers",
            added.len()
        );
    }
    let mut next_address = existing
        .iter()
        .map(|s| u64::from(s.virtual_address) + u64::from(s.virtual_size.max(s.raw_size)))
        .max()
        .unwrap_or(size_of_headers as u64);
    let raw_end = existing
        .iter()
        .map(|s| s.raw_offset as usize + s.raw_size as usize)
        .max()
        .unwrap_or(size_of_headers);
    let mut image = stub[..raw_end.max(size_of_headers)].to_vec();
    let mut initialized = u64::from(read_u32(stub, layout.optional + 8)?);
    for (index, (name, data)) in added.iter().enumerate() {
        ensure!(
            name.len() <= 8,
            "PE section name {name} is longer than 8 bytes"
        );
        let address = align_up(next_address, section_alignment);
        let offset = align_up(image.len() as u64, file_alignment);
        let raw_size = align_up(data.len() as u64, file_alignment);
        let (Ok(address32), Ok(offset32), Ok(raw32), Ok(len32)) = (
            u32::try_from(address),
            u32::try_from(offset),
            u32::try_from(raw_size),
            u32::try_from(data.len()),
        ) else {
            bail!("PE section {name} does not fit in a 32-bit image");
        };
        image.resize(offset as usize, 0);
        image.extend_from_slice(data);
        image.resize((offset + raw_size) as usize, 0);
        let at = layout.sections + (layout.count + index) * SECTION_HEADER;
        let mut header = [0u8; SECTION_HEADER];
        header[..name.len()].copy_from_slice(name.as_bytes());
        write_u32(&mut header, 8, len32);
        write_u32(&mut header, 12, address32);
        write_u32(&mut header, 16, raw32);
        write_u32(&mut header, 20, offset32);
        write_u32(&mut header, 36, SECTION_FLAGS);
        image[at..at + SECTION_HEADER].copy_from_slice(&header);
        next_address = address + data.len() as u64;
        initialized += raw_size;
    }
    let count = u16::try_from(layout.count + added.len()).context("too many PE sections")?;
    write_u16(&mut image, layout.coff + 2, count);
    let size_of_image =
        u32::try_from(align_up(next_address, section_alignment)).context("UKI is too large")?;
    write_u32(&mut image, layout.optional + 56, size_of_image);
    write_u32(
        &mut image,
        layout.optional + 8,
        u32::try_from(initialized).unwrap_or(u32::MAX),
    );
    // The checksum is optional for EFI images; zero says "not computed" and keeps it simple.
    write_u32(&mut image, layout.optional + 64, 0);
    Ok(image)
}

/// The UKI's sections in the order systemd's own tools write them.
pub struct UkiParts<'a> {
    /// os-release of the guest.
    pub osrel: &'a [u8],
    /// The kernel command line.
    pub cmdline: &'a [u8],
    /// The kernel release (`uname -r`).
    pub uname: &'a [u8],
    /// The initrd.
    pub initrd: &'a [u8],
    /// The kernel image.
    pub linux: &'a [u8],
}

/// Builds the UKI from the systemd stub and its parts.
pub fn build(stub: &[u8], parts: &UkiParts<'_>) -> Result<Vec<u8>> {
    add_sections(
        stub,
        &[
            (".osrel", parts.osrel),
            (".cmdline", parts.cmdline),
            (".uname", parts.uname),
            (".initrd", parts.initrd),
            (".linux", parts.linux),
        ],
    )
}
