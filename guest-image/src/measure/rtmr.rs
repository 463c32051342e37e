//! TDX RTMR event-log arithmetic and what can be predicted of RTMR1/RTMR2 for a direct UKI boot.
//!
//! An RTMR starts at 48 zero bytes and every event extends it: `RTMR = SHA384(RTMR || digest)`.
//! TDVF maps PCR 2..6 to RTMR1 and PCR 8..15 to RTMR2 (UEFI 2.10 §38.4.2 "EFI_CC_MEASUREMENT_PROTOCOL",
//! <https://uefi.org/specs/UEFI/2.10/38_Confidential_Computing.html>). The event sequence of a
//! `-kernel` boot is in the reference notes (`measurement.md` §2.3); the constant events below are
//! checked against a public TDVF event log (tests/data/measure/tdx-direct-boot-rtmr1.txt).
//!
//! The Authenticode digest is the PE/COFF image hash of the Microsoft PE/COFF specification
//! ("Calculating the PE Image Hash", <https://learn.microsoft.com/windows/win32/debug/pe-format>),
//! as edk2's measured-boot library computes it: headers without the checksum and the certificate
//! table entry, the sections in file order, then any trailing data before the certificate table.

use anyhow::{bail, Result};
use ring::digest::{Algorithm, Context};

/// SHA-384 of the bytes of an EV_EFI_ACTION or EV_SEPARATOR event.
fn action(data: &[u8]) -> [u8; 48] {
    super::sha384(data)
}

/// `EV_EFI_ACTION "Calling EFI Application from Boot Option"` (RTMR1, at ReadyToBoot).
pub fn calling_efi_application() -> [u8; 48] {
    action(b"Calling EFI Application from Boot Option")
}

/// `EV_SEPARATOR` (four zero bytes).
pub fn separator() -> [u8; 48] {
    action(&[0; 4])
}

/// `EV_EFI_ACTION "Exit Boot Services Invocation"` (RTMR1).
pub fn exit_boot_services_invocation() -> [u8; 48] {
    action(b"Exit Boot Services Invocation")
}

/// `EV_EFI_ACTION "Exit Boot Services Returned with Success"` (RTMR1).
pub fn exit_boot_services_returned() -> [u8; 48] {
    action(b"Exit Boot Services Returned with Success")
}

/// The value of an RTMR after `events` (their digests, in log order), from 48 zero bytes.
pub fn replay<'a>(events: impl IntoIterator<Item = &'a [u8; 48]>) -> [u8; 48] {
    events.into_iter().fold([0u8; 48], |rtmr, digest| {
        let mut both = [0u8; 96];
        both[..48].copy_from_slice(&rtmr);
        both[48..].copy_from_slice(digest);
        super::sha384(&both)
    })
}

/// The SHA-384 of a UTF-8 command line as the Linux EFI stub measures `LoadOptions`
/// (`EV_EVENT_TAG "LOADED_IMAGE::LoadOptions"`, PCR 9 → RTMR2): UTF-16LE with its NUL.
pub fn load_options_digest(cmdline: &str) -> [u8; 48] {
    let mut bytes = Vec::with_capacity(2 * cmdline.len() + 2);
    for unit in cmdline.encode_utf16().chain([0]) {
        bytes.extend_from_slice(&unit.to_le_bytes());
    }
    super::sha384(&bytes)
}

/// One section header of a PE image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeSection {
    /// The name, NUL padding removed.
    pub name: String,
    /// Bytes the section occupies in memory (the size of its contents for UKI sections).
    pub virtual_size: u32,
    /// Bytes of the section in the file (file-aligned).
    pub raw_size: u32,
    /// File offset of those bytes.
    pub raw_offset: u32,
}

/// The parts of a PE image the image hash needs.
#[derive(Debug, Clone)]
pub struct Pe {
    checksum_offset: usize,
    /// File offset of the certificate-table data-directory entry, when there is one.
    cert_entry_offset: Option<usize>,
    cert_size: usize,
    size_of_headers: usize,
    /// The section headers, in table order.
    pub sections: Vec<PeSection>,
}

fn u16_at(data: &[u8], offset: usize) -> Option<u16> {
    Some(u16::from_le_bytes(
        data.get(offset..offset + 2)?.try_into().ok()?,
    ))
}

fn u32_at(data: &[u8], offset: usize) -> Option<u32> {
    Some(u32::from_le_bytes(
        data.get(offset..offset + 4)?.try_into().ok()?,
    ))
}

impl Pe {
    /// Parses the headers of the PE image `data`; the error names the bad field.
    pub fn parse(data: &[u8]) -> Result<Self> {
        if data.get(..2) != Some(b"MZ") {
            bail!("is not a PE image (no MZ signature at offset 0)");
        }
        let pe = u32_at(data, 0x3c).unwrap_or(0) as usize;
        if data.get(pe..pe + 4) != Some(b"PE\0\0") {
            bail!("is not a PE image (no PE signature at e_lfanew {pe:#x})");
        }
        let coff = pe + 4;
        let sections = u16_at(data, coff + 2).unwrap_or(0) as usize;
        let optional_size = u16_at(data, coff + 16).unwrap_or(0) as usize;
        let optional = coff + 20;
        let (directories_count_at, directories_at) = match u16_at(data, optional) {
            Some(0x10b) => (optional + 92, optional + 96),
            Some(0x20b) => (optional + 108, optional + 112),
            other => bail!("has an unknown PE optional-header magic {other:#x?}"),
        };
        let truncated = || anyhow::anyhow!("has a truncated PE header");
        let size_of_headers = u32_at(data, optional + 60).ok_or_else(truncated)? as usize;
        let directories = u32_at(data, directories_count_at).ok_or_else(truncated)?;
        let (cert_entry_offset, cert_size) = if directories > 4 {
            let entry = directories_at + 4 * 8;
            let size = u32_at(data, entry + 4).ok_or_else(truncated)? as usize;
            (Some(entry), size)
        } else {
            (None, 0)
        };
        let checksum_offset = optional + 64;
        let hashed_headers_end = cert_entry_offset.map_or(checksum_offset + 4, |entry| entry + 8);
        if size_of_headers > data.len() || hashed_headers_end > size_of_headers {
            bail!(
                "has SizeOfHeaders {size_of_headers:#x} that does not cover its headers or lies outside the image"
            );
        }
        let table = optional + optional_size;
        let mut parsed = Vec::with_capacity(sections);
        for index in 0..sections {
            let header = table + 40 * index;
            let name = data.get(header..header + 8).ok_or_else(truncated)?;
            let name = String::from_utf8_lossy(name)
                .trim_end_matches('\0')
                .to_owned();
            let section = PeSection {
                name,
                virtual_size: u32_at(data, header + 8).ok_or_else(truncated)?,
                raw_size: u32_at(data, header + 16).ok_or_else(truncated)?,
                raw_offset: u32_at(data, header + 20).ok_or_else(truncated)?,
            };
            let end = section.raw_offset as u64 + section.raw_size as u64;
            if end > data.len() as u64 {
                bail!(
                    "has section {:?} ending at {end:#x}, beyond the image ({:#x} bytes)",
                    section.name,
                    data.len()
                );
            }
            parsed.push(section);
        }
        Ok(Self {
            checksum_offset,
            cert_entry_offset,
            cert_size,
            size_of_headers,
            sections: parsed,
        })
    }

    /// The contents of the section called `name` (its virtual size, at most its file bytes), as a
    /// UEFI loader sees it in memory.
    pub fn section<'a>(&self, data: &'a [u8], name: &str) -> Option<&'a [u8]> {
        let section = self.sections.iter().find(|section| section.name == name)?;
        let length = section.virtual_size.min(section.raw_size) as usize;
        let start = section.raw_offset as usize;
        data.get(start..start + length)
    }

    /// The Authenticode image hash of `data` (the image these headers were parsed from).
    pub fn authenticode(&self, data: &[u8], algorithm: &'static Algorithm) -> Vec<u8> {
        let mut context = Context::new(algorithm);
        let headers = &data[..self.size_of_headers];
        context.update(&headers[..self.checksum_offset]);
        match self.cert_entry_offset {
            Some(entry) => {
                context.update(&headers[self.checksum_offset + 4..entry]);
                context.update(&headers[entry + 8..]);
            }
            None => context.update(&headers[self.checksum_offset + 4..]),
        }
        let mut sections: Vec<&PeSection> = self
            .sections
            .iter()
            .filter(|section| section.raw_size > 0)
            .collect();
        sections.sort_by_key(|section| section.raw_offset);
        let mut hashed = self.size_of_headers;
        for section in sections {
            let start = section.raw_offset as usize;
            context.update(&data[start..start + section.raw_size as usize]);
            hashed += section.raw_size as usize;
        }
        // Bytes after the sections (edk2 counts them from the sum of bytes hashed), except the
        // certificate table at the end of the file.
        let end = data.len().saturating_sub(self.cert_size);
        if end > hashed {
            context.update(&data[hashed..end]);
        }
        context.finish().as_ref().to_vec()
    }
}

/// The SHA-384 Authenticode digest of the PE image `data` (what TDVF measures when it loads it).
pub fn authenticode_sha384(data: &[u8]) -> Result<[u8; 48]> {
    let pe = Pe::parse(data)?;
    let mut out = [0u8; 48];
    out.copy_from_slice(&pe.authenticode(data, &ring::digest::SHA384));
    Ok(out)
}

/// The systemd-stub rule for an embedded `.cmdline`: control characters become spaces and
/// trailing whitespace is dropped (systemd `src/boot/stub.c`, `mangle_stub_cmdline`).
pub fn stub_cmdline(raw: &[u8]) -> String {
    let text = String::from_utf8_lossy(raw);
    let text = text.trim_end_matches('\0');
    let mangled: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    mangled.trim_end().to_owned()
}

/// The event digests of a direct `-kernel uki.efi` TD boot that follow from the UKI alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UkiEvents {
    /// Authenticode SHA-384 of uki.efi as given to `-kernel` (unmodified by the VMM).
    pub uki: [u8; 48],
    /// Authenticode SHA-384 of the `.linux` section (systemd-stub loads it with LoadImage).
    pub linux: [u8; 48],
    /// SHA-384 of the Linux EFI stub's `LoadOptions` event: the `.cmdline` section.
    pub load_options: Option<[u8; 48]>,
    /// SHA-384 of the `.initrd` section, the Linux EFI stub's "Linux initrd" event when it is
    /// the only initrd systemd-stub passes on.
    pub initrd: Option<[u8; 48]>,
}

impl UkiEvents {
    /// Reads the events of the UKI `data`.
    pub fn of(data: &[u8]) -> Result<Self> {
        let pe = Pe::parse(data)?;
        let Some(linux) = pe.section(data, ".linux") else {
            bail!("is not a UKI (no .linux section)");
        };
        let uki = authenticode_sha384(data)?;
        let linux = authenticode_sha384(linux)
            .map_err(|err| anyhow::anyhow!("has a .linux section that {err}"))?;
        Ok(Self {
            uki,
            linux,
            load_options: pe
                .section(data, ".cmdline")
                .map(|raw| load_options_digest(&stub_cmdline(raw))),
            initrd: pe.section(data, ".initrd").map(super::sha384),
        })
    }

    /// RTMR1's events, in order, for a VMM that hands the unmodified UKI to TDVF and a
    /// systemd-stub whose LoadImage of `.linux` is measured: the UKI (loaded before ReadyToBoot),
    /// the ReadyToBoot action and separator, `.linux`, and the two ExitBootServices actions.
    pub fn rtmr1_events(&self) -> [[u8; 48]; 6] {
        [
            self.uki,
            calling_efi_application(),
            separator(),
            self.linux,
            exit_boot_services_invocation(),
            exit_boot_services_returned(),
        ]
    }
}

#[cfg(test)]
pub(crate) mod tests;
