//! The SEV-SNP launch digest as QEMU/KVM builds it, bit-exact with sev-snp-measure.
//!
//! The digest is a chain: each launch update replaces it with SHA-384 of a 112-byte PAGE_INFO
//! (SNP ABI spec, "PAGE_INFO"). QEMU's order: the whole firmware as NORMAL pages at 4 GiB minus its
//! size, then the SEV metadata sections in file order, then one VMSA page per vCPU (reference
//! notes `measurement.md` §1).
//!
//! Why not the `sev` crate's `snp_calc_launch_digest`: its OVMF parser indexes the image without
//! bounds checks (a truncated or hostile firmware panics it), it reads the files itself by path,
//! it accepts only the vCPU signatures of its own `CpuType` list (no `--vcpu-sig`), and its EC2
//! VMSA predates sev-snp-measure 0.0.13 (rdx 0 instead of 0x600). The unit tests use it as an
//! independent oracle for the QEMU cases it covers.

use anyhow::Result;
use cvm_core::error::bad_input;
use sha2::{Digest, Sha256};

use super::{
    ovmf::{Ovmf, SevSectionKind, FOUR_GIB, PAGE},
    sha384,
};

/// A 48-byte SHA-384 launch digest.
pub type LaunchDigest = [u8; 48];

/// The most vCPUs a measurement is computed for (QEMU's q35 limit with x2APIC).
pub const MAX_VCPUS: u32 = 4096;

/// The most bytes of SEV metadata sections a firmware may declare. Real OVMF builds declare about
/// 0x20000; the cap keeps a corrupt size from costing a million page updates.
const MAX_METADATA_BYTES: u64 = 64 << 20;

/// The VMM whose launch sequence is measured (sev-snp-measure `--vmm-type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Vmm {
    /// QEMU/KVM.
    Qemu,
    /// AWS EC2 (as sev-snp-measure 0.0.13 models it).
    Ec2,
}

/// The vCPU models sev-snp-measure knows (its `CPU_SIGS`, QEMU `-cpu` names), with their CPUID 1
/// EAX signature (family, model, stepping).
pub const VCPU_TYPES: &[(&str, (u32, u32, u32))] = &[
    ("EPYC", (23, 1, 2)),
    ("EPYC-v1", (23, 1, 2)),
    ("EPYC-v2", (23, 1, 2)),
    ("EPYC-IBPB", (23, 1, 2)),
    ("EPYC-v3", (23, 1, 2)),
    ("EPYC-v4", (23, 1, 2)),
    ("EPYC-Rome", (23, 49, 0)),
    ("EPYC-Rome-v1", (23, 49, 0)),
    ("EPYC-Rome-v2", (23, 49, 0)),
    ("EPYC-Rome-v3", (23, 49, 0)),
    ("EPYC-Milan", (25, 1, 1)),
    ("EPYC-Milan-v1", (25, 1, 1)),
    ("EPYC-Milan-v2", (25, 1, 1)),
    ("EPYC-Genoa", (25, 17, 0)),
    ("EPYC-Genoa-v1", (25, 17, 0)),
    ("EPYC-Turin", (26, 0, 0)),
];

/// The CPUID 1 EAX signature of family/model/stepping (AMD CPUID spec, Fn0000_0001_EAX).
pub const fn cpu_signature(family: u32, model: u32, stepping: u32) -> u32 {
    let (family_low, family_high) = if family > 0xf {
        (0xf, (family - 0xf) & 0xff)
    } else {
        (family, 0)
    };
    family_high << 20
        | ((model >> 4) & 0xf) << 16
        | family_low << 8
        | (model & 0xf) << 4
        | (stepping & 0xf)
}

/// The signature of a vCPU model by its exact QEMU name, or a bad-input error listing the names.
pub fn vcpu_signature(name: &str) -> Result<u32> {
    VCPU_TYPES
        .iter()
        .find(|(known, _)| *known == name)
        .map(|(_, (family, model, stepping))| cpu_signature(*family, *model, *stepping))
        .ok_or_else(|| {
            let names: Vec<&str> = VCPU_TYPES.iter().map(|(known, _)| *known).collect();
            bad_input(format!(
                "--vcpu-type {name:?} is not a known vCPU model; use one of {} (or --vcpu-sig)",
                names.join(", ")
            ))
        })
}

/// Parses an integer the way sev-snp-measure reads `--guest-features` and `--vcpu-sig` (Python
/// `int(text, 0)`): `0x` hex, `0o` octal, `0b` binary, or decimal.
pub fn parse_int(text: &str) -> Option<u64> {
    let trimmed = text.trim().replace('_', "");
    let lower = trimmed.to_ascii_lowercase();
    let (digits, radix) = if let Some(rest) = lower.strip_prefix("0x") {
        (rest, 16)
    } else if let Some(rest) = lower.strip_prefix("0o") {
        (rest, 8)
    } else if let Some(rest) = lower.strip_prefix("0b") {
        (rest, 2)
    } else {
        // Python refuses leading zeros on decimal numbers ("010"), except for zero itself.
        if lower.len() > 1 && lower.starts_with('0') && lower.bytes().any(|b| b != b'0') {
            return None;
        }
        (lower.as_str(), 10)
    };
    if digits.is_empty() || text.trim().starts_with('_') || text.trim().ends_with('_') {
        return None;
    }
    u64::from_str_radix(digits, radix).ok()
}

/// SHA-256 digests of what QEMU measures for direct boot with `kernel-hashes=on`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KernelHashes {
    /// SHA-256 of the kernel file as given to `-kernel`.
    pub kernel: [u8; 32],
    /// SHA-256 of the initrd, or of nothing when there is none.
    pub initrd: [u8; 32],
    /// SHA-256 of the NUL-terminated command line (`-append`), or of a lone NUL.
    pub cmdline: [u8; 32],
}

impl KernelHashes {
    /// Hashes from the kernel's and initrd's SHA-256 and the `-append` string.
    pub fn new(
        kernel_sha256: [u8; 32],
        initrd_sha256: Option<[u8; 32]>,
        append: Option<&str>,
    ) -> Self {
        let mut cmdline = Sha256::new();
        cmdline.update(append.unwrap_or("").as_bytes());
        cmdline.update([0u8]);
        Self {
            kernel: kernel_sha256,
            initrd: initrd_sha256.unwrap_or_else(|| Sha256::digest(b"").into()),
            cmdline: cmdline.finalize().into(),
        }
    }

    /// QEMU's `PaddedSevHashTable`: a 168-byte table padded to 176 bytes.
    pub fn table(&self) -> [u8; 176] {
        const HEADER: [u8; 16] = super::ovmf::guid("9438d606-4f22-4cc9-b479-a793d411fd21");
        const CMDLINE: [u8; 16] = super::ovmf::guid("97d02dd8-bd20-4c94-aa78-e7714d36ab2a");
        const INITRD: [u8; 16] = super::ovmf::guid("44baf731-3a2f-4bd7-9af1-41e29169781d");
        const KERNEL: [u8; 16] = super::ovmf::guid("4de79437-abd2-427f-b835-d5b172d2045b");
        let mut table = [0u8; 176];
        table[..16].copy_from_slice(&HEADER);
        table[16..18].copy_from_slice(&168u16.to_le_bytes());
        let entries = [
            (CMDLINE, &self.cmdline),
            (INITRD, &self.initrd),
            (KERNEL, &self.kernel),
        ];
        for (index, (guid, hash)) in entries.iter().enumerate() {
            let at = 18 + index * 50;
            table[at..at + 16].copy_from_slice(guid);
            table[at + 16..at + 18].copy_from_slice(&50u16.to_le_bytes());
            table[at + 18..at + 50].copy_from_slice(*hash);
        }
        table
    }
}

/// The launch values that enter the digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnpParams {
    /// Number of vCPUs (one VMSA each).
    pub vcpus: u32,
    /// CPUID 1 EAX of the vCPU model, placed in rdx of every VMSA (QEMU only).
    pub vcpu_sig: u32,
    /// SEV features of every VMSA.
    pub guest_features: u64,
    /// The VMM.
    pub vmm: Vmm,
    /// Kernel hashes for measured direct boot; `None` without `-kernel`.
    pub kernel_hashes: Option<KernelHashes>,
}

/// SNP page types (SNP ABI spec, "PAGE_TYPE").
#[derive(Debug, Clone, Copy)]
#[repr(u8)]
enum PageType {
    Normal = 1,
    Vmsa = 2,
    Zero = 3,
    Secrets = 5,
    Cpuid = 6,
}

/// The GPA under which VMSA pages are measured (sev-snp-measure `GCTX.VMSA_GPA`).
const VMSA_GPA: u64 = 0x0000_FFFF_FFFF_F000;

/// The running launch digest.
struct Gctx {
    digest: LaunchDigest,
}

impl Gctx {
    fn update(&mut self, page_type: PageType, gpa: u64, contents: &LaunchDigest) {
        let mut page_info = [0u8; 0x70];
        page_info[..48].copy_from_slice(&self.digest);
        page_info[48..96].copy_from_slice(contents);
        page_info[96..98].copy_from_slice(&0x70u16.to_le_bytes());
        page_info[98] = page_type as u8;
        // IMI_PAGE, the VMPL permissions and the reserved byte stay zero.
        page_info[104..112].copy_from_slice(&gpa.to_le_bytes());
        self.digest = sha384(&page_info);
    }

    fn normal_pages(&mut self, gpa: u64, data: &[u8]) {
        self.hashed_pages(gpa, &page_hashes(data));
    }

    fn hashed_pages(&mut self, gpa: u64, hashes: &[LaunchDigest]) {
        for (page_hash, index) in hashes.iter().zip(0u64..) {
            self.update(PageType::Normal, gpa + index * PAGE as u64, page_hash);
        }
    }

    fn zero_pages(&mut self, gpa: u64, size: u64) {
        for offset in (0..size).step_by(PAGE) {
            self.update(PageType::Zero, gpa + offset, &[0; 48]);
        }
    }
}

/// SHA-384 of pages. Pages of one repeated byte (most of an OVMF image: the padding of its
/// firmware volumes, 862 of the 1024 pages of Ubuntu's OVMF.amdsev.fd) are hashed once per byte
/// value.
struct PageHasher {
    uniform: [Option<LaunchDigest>; 256],
}

impl PageHasher {
    fn new() -> Self {
        Self {
            uniform: [None; 256],
        }
    }

    /// The hash of `page` when it is one repeated byte.
    fn uniform(&mut self, page: &[u8]) -> Option<LaunchDigest> {
        match page.first() {
            // A page equals itself shifted by one byte exactly when all its bytes are equal
            // (a memcmp).
            Some(&first) if page.len() == PAGE && page[1..] == page[..PAGE - 1] => {
                Some(*self.uniform[usize::from(first)].get_or_insert_with(|| sha384(page)))
            }
            _ => None,
        }
    }

    /// Appends the SHA-384 of each of `pages` to `out`: the other pages four at a time on AVX2
    /// ([`super::sha384x4`]) where the CPU has it.
    fn hash_into(&mut self, pages: &[&[u8]], out: &mut Vec<LaunchDigest>) {
        let start = out.len();
        let mut others: Vec<(usize, &[u8; PAGE])> = Vec::new();
        for (index, page) in pages.iter().enumerate() {
            match (self.uniform(page), <&[u8; PAGE]>::try_from(*page)) {
                (Some(digest), _) => out.push(digest),
                (None, Ok(whole)) => {
                    out.push([0; 48]);
                    others.push((start + index, whole));
                }
                (None, Err(_)) => out.push(sha384(page)),
            }
        }
        // The pages hashed four at a time; the rest (and all of them without AVX2) one by one.
        let mut done = 0;
        #[cfg(target_arch = "x86_64")]
        for group in others.chunks_exact(4) {
            let pages = std::array::from_fn(|i| group[i].1);
            let Some(digests) = super::sha384x4::sha384_pages_if_avx2(pages) else {
                break;
            };
            for ((at, _), digest) in group.iter().zip(digests) {
                out[*at] = digest;
            }
            done += 4;
        }
        for (at, page) in &others[done..] {
            out[*at] = sha384(*page);
        }
    }
}

/// How many threads hash firmware pages: the machine's, at most 4.
pub fn hashing_threads() -> usize {
    std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, 4)
}

/// Bytes each thread reads at a time from a firmware file (a buffer that stays in cache).
const STREAM_CHUNK: usize = 64 << 10;

/// SHA-384 of every page of `file`, `len` bytes long (whole pages), read by up to `threads`
/// threads in small chunks. Reading a 4 MiB image into one fresh buffer costs more here (3-5 ms:
/// a page fault per 4 KiB of the buffer, then the copy) than hashing it. The threads take the
/// chunks in turn (thread t the chunks t, t + threads, …): an OVMF image's unique pages sit
/// together near its end, so halves would leave one thread all the hashing.
pub fn file_page_hashes(
    file: &std::fs::File,
    len: u64,
    threads: usize,
) -> std::io::Result<Vec<LaunchDigest>> {
    use std::os::unix::fs::FileExt;
    const CHUNK_PAGES: usize = STREAM_CHUNK / PAGE;
    let pages = usize::try_from(len / PAGE as u64).unwrap_or(usize::MAX);
    let chunks = pages.div_ceil(CHUNK_PAGES);
    let threads = if pages < 64 { 1 } else { threads }.clamp(1, chunks.max(1));
    let hash_chunks = |thread: usize| -> std::io::Result<Vec<(usize, Vec<LaunchDigest>)>> {
        let mut hasher = PageHasher::new();
        let mut buffer = vec![0u8; STREAM_CHUNK];
        let mut done = Vec::new();
        for chunk in (thread..chunks).step_by(threads) {
            let first = chunk * CHUNK_PAGES;
            let count = CHUNK_PAGES.min(pages - first);
            let bytes = &mut buffer[..count * PAGE];
            file.read_exact_at(bytes, (first * PAGE) as u64)?;
            let pages: Vec<&[u8]> = bytes.chunks(PAGE).collect();
            let mut hashes = Vec::with_capacity(count);
            hasher.hash_into(&pages, &mut hashes);
            done.push((chunk, hashes));
        }
        Ok(done)
    };
    let mut hashed: Vec<(usize, Vec<LaunchDigest>)> = std::thread::scope(|scope| {
        let workers: Vec<_> = (1..threads)
            .map(|thread| scope.spawn(move || hash_chunks(thread)))
            .collect();
        let mut hashed = hash_chunks(0)?;
        for worker in workers {
            // Hashing cannot panic; if it ever did, the digest must not silently miss pages.
            hashed.extend(
                worker
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))?,
            );
        }
        Ok::<_, std::io::Error>(hashed)
    })?;
    hashed.sort_unstable_by_key(|(chunk, _)| *chunk);
    Ok(hashed.into_iter().flat_map(|(_, hashes)| hashes).collect())
}

/// SHA-384 of every 4 KiB page of `data` (an image in memory: the one-page kernel-hashes area,
/// or a firmware that [`file_page_hashes`] did not stream).
pub fn page_hashes(data: &[u8]) -> Vec<LaunchDigest> {
    let pages: Vec<&[u8]> = data.chunks(PAGE).collect();
    let mut hashes = Vec::with_capacity(pages.len());
    PageHasher::new().hash_into(&pages, &mut hashes);
    hashes
}

/// The reset EIP of the bootstrap processor.
const BSP_EIP: u32 = 0xffff_fff0;

/// One VMSA page (Linux `struct sev_es_save_area`) as the VMM initializes it.
pub fn vmsa_page(eip: u32, vcpu_sig: u32, guest_features: u64, vmm: Vmm) -> Box<[u8; PAGE]> {
    let mut page = Box::new([0u8; PAGE]);
    let (cs_attrib, ss_attrib, tr_attrib, rdx, mxcsr, fcw) = match vmm {
        Vmm::Qemu => (0x9b, 0x93, 0x8b, u64::from(vcpu_sig), 0x1f80u32, 0x37fu16),
        Vmm::Ec2 => (
            if eip == BSP_EIP { 0x9a } else { 0x9b },
            0x92,
            0x83,
            0x600,
            0,
            0,
        ),
    };
    let mut segment = |at: usize, selector: u16, attrib: u16, base: u64| {
        page[at..at + 2].copy_from_slice(&selector.to_le_bytes());
        page[at + 2..at + 4].copy_from_slice(&attrib.to_le_bytes());
        page[at + 4..at + 8].copy_from_slice(&0xffffu32.to_le_bytes());
        page[at + 8..at + 16].copy_from_slice(&base.to_le_bytes());
    };
    // Segment order in the save area: es, cs, ss, ds, fs, gs, gdtr, ldtr, idtr, tr.
    segment(0x00, 0, 0x93, 0);
    segment(0x10, 0xf000, cs_attrib, u64::from(eip & 0xffff_0000));
    segment(0x20, 0, ss_attrib, 0);
    segment(0x30, 0, 0x93, 0);
    segment(0x40, 0, 0x93, 0);
    segment(0x50, 0, 0x93, 0);
    segment(0x60, 0, 0, 0);
    segment(0x70, 0, 0x82, 0);
    segment(0x80, 0, 0, 0);
    segment(0x90, 0, tr_attrib, 0);
    let mut put = |at: usize, value: u64| page[at..at + 8].copy_from_slice(&value.to_le_bytes());
    put(0x0d0, 0x1000); // EFER.SVME, set by KVM.
    put(0x148, 0x40); // CR4.MCE, set by KVM.
    put(0x158, 0x10);
    put(0x160, 0x400);
    put(0x168, 0xffff_0ff0);
    put(0x170, 0x2);
    put(0x178, u64::from(eip & 0xffff));
    put(0x268, 0x0007_0406_0007_0406); // The power-on PAT.
    put(0x310, rdx);
    put(0x3b0, guest_features);
    put(0x3e8, 0x1); // XCR0.
    page[0x408..0x40c].copy_from_slice(&mxcsr.to_le_bytes());
    page[0x410..0x412].copy_from_slice(&fcw.to_le_bytes());
    page
}

/// The firmware image a launch digest is computed from.
#[derive(Clone, Copy)]
pub enum Firmware<'a> {
    /// The whole image (its pages are hashed here).
    Whole(&'a [u8]),
    /// The image as [`file_page_hashes`] read it: its length, the SHA-384 of each of its pages,
    /// and its last bytes. The OVMF footer table and the SEV metadata are addressed from the end
    /// of the image, so a parse of the last bytes that succeeds reads exactly the bytes a parse of
    /// the whole image reads; one that fails must be repeated on the whole image.
    Hashed {
        /// The image's length in bytes.
        len: usize,
        /// SHA-384 of each page, in order.
        pages: &'a [LaunchDigest],
        /// The image's last bytes (all of it, for a small image).
        tail: &'a [u8],
    },
}

/// Computes the SEV-SNP launch digest of `firmware` (the file given to `-bios`) launched with
/// `params`. Bad firmware or parameters give a bad-input error naming the problem.
pub fn launch_digest(firmware: &[u8], params: &SnpParams) -> Result<LaunchDigest> {
    launch_digest_of(Firmware::Whole(firmware), params)
}

/// [`launch_digest`] of a [`Firmware`].
pub fn launch_digest_of(firmware: Firmware<'_>, params: &SnpParams) -> Result<LaunchDigest> {
    if params.vcpus == 0 || params.vcpus > MAX_VCPUS {
        return Err(bad_input(format!(
            "--vcpus {} is out of range; use 1..={MAX_VCPUS}",
            params.vcpus
        )));
    }
    let (parsed, firmware_len) = match firmware {
        Firmware::Whole(data) => (data, data.len()),
        Firmware::Hashed { len, tail, .. } => (tail, len),
    };
    let ovmf = Ovmf::parse(parsed)?;
    if firmware_len % PAGE != 0 || firmware_len as u64 > FOUR_GIB {
        return Err(bad_input(format!(
            "is {firmware_len} bytes, not a whole number of 4 KiB pages below 4 GiB: a truncated firmware image?"
        )));
    }
    let sections = ovmf.sev_metadata()?.ok_or_else(|| {
        bad_input(
            "has no SEV metadata (no `ASEV` section list): it cannot launch an SEV-SNP guest; use an SEV-capable OVMF such as Ubuntu's OVMF.amdsev.fd",
        )
    })?;
    let ap_eip = ovmf.sev_es_reset_eip()?.ok_or_else(|| {
        bad_input("has no SEV-ES reset block, so its vCPUs cannot start under SEV-SNP")
    })?;
    let has_hash_section = sections
        .iter()
        .any(|section| section.kind == SevSectionKind::KernelHashes);
    if params.kernel_hashes.is_some() && !has_hash_section {
        return Err(bad_input(
            "has no SNP kernel-hashes section, so a kernel cannot be measured with it; use the AmdSev build (Ubuntu's OVMF.amdsev.fd) or drop --kernel",
        ));
    }

    let declared: u64 = sections.iter().map(|section| u64::from(section.size)).sum();
    if declared > MAX_METADATA_BYTES {
        return Err(bad_input(format!(
            "declares {declared:#x} bytes of SEV metadata sections; real OVMF builds declare well under 1 MiB (limit {MAX_METADATA_BYTES:#x})"
        )));
    }

    let mut gctx = Gctx { digest: [0; 48] };
    let firmware_gpa = FOUR_GIB - firmware_len as u64;
    match firmware {
        Firmware::Whole(data) => gctx.normal_pages(firmware_gpa, data),
        Firmware::Hashed { pages, .. } => {
            if pages.len() != firmware_len / PAGE {
                anyhow::bail!(
                    "internal error: {} page hashes for a firmware of {firmware_len} bytes",
                    pages.len()
                );
            }
            gctx.hashed_pages(firmware_gpa, pages)
        }
    }
    for section in &sections {
        let gpa = u64::from(section.gpa);
        let size = u64::from(section.size);
        let whole_pages = size % PAGE as u64 == 0;
        // Secrets and CPUID sections are one page whatever their size says (sev-snp-measure).
        let one_page = matches!(
            section.kind,
            SevSectionKind::Secrets | SevSectionKind::Cpuid
        );
        if gpa + size > FOUR_GIB || !(whole_pages || one_page) {
            return Err(bad_input(format!(
                "has an SEV metadata section at {gpa:#x} of {size:#x} bytes that is not whole pages below 4 GiB"
            )));
        }
        match section.kind {
            SevSectionKind::SecMemory | SevSectionKind::SvsmCaa => gctx.zero_pages(gpa, size),
            SevSectionKind::Secrets => gctx.update(PageType::Secrets, gpa, &[0; 48]),
            SevSectionKind::Cpuid => {
                if params.vmm != Vmm::Ec2 {
                    gctx.update(PageType::Cpuid, gpa, &[0; 48]);
                }
            }
            SevSectionKind::KernelHashes => match &params.kernel_hashes {
                None => gctx.zero_pages(gpa, size),
                Some(hashes) => {
                    if size != PAGE as u64 {
                        return Err(bad_input(format!(
                            "has a kernel-hashes section of {size:#x} bytes; QEMU fills exactly one 4 KiB page"
                        )));
                    }
                    let table_gpa = ovmf.sev_hash_table_gpa()?.ok_or_else(|| {
                        bad_input("has a kernel-hashes section but no SEV hash table entry giving its location")
                    })?;
                    let offset = (table_gpa as usize) & (PAGE - 1);
                    let table = hashes.table();
                    if offset + table.len() > PAGE {
                        return Err(bad_input(format!(
                            "places the SEV hash table at page offset {offset:#x}, where it does not fit"
                        )));
                    }
                    let mut page = vec![0u8; PAGE];
                    page[offset..offset + table.len()].copy_from_slice(&table);
                    gctx.normal_pages(gpa, &page);
                }
            },
        }
    }
    if params.vmm == Vmm::Ec2 {
        // EC2 measures the CPUID page after every other section.
        for section in sections.iter().filter(|s| s.kind == SevSectionKind::Cpuid) {
            gctx.update(PageType::Cpuid, u64::from(section.gpa), &[0; 48]);
        }
    }

    let bsp =
        sha384(vmsa_page(BSP_EIP, params.vcpu_sig, params.guest_features, params.vmm).as_slice());
    let ap =
        sha384(vmsa_page(ap_eip, params.vcpu_sig, params.guest_features, params.vmm).as_slice());
    for vcpu in 0..params.vcpus {
        let page_hash = if vcpu == 0 { &bsp } else { &ap };
        gctx.update(PageType::Vmsa, VMSA_GPA, page_hash);
    }
    Ok(gctx.digest)
}
