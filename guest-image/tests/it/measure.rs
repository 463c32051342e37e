//! Differential test of the SEV-SNP launch digest against sev-snp-measure from PyPI (slow suite:
//! it installs the reference tool into a venv under target/).

use std::path::{Path, PathBuf};

use guest_image::measure::{
    measure_snp,
    reference::{self, SevSnpMeasure},
    snp::VCPU_TYPES,
    SnpRequest, Vcpu, Vmm,
};

const TEST: &str = "measure_snp_matches_sev_snp_measure";

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("guest-image is inside the workspace")
        .to_owned()
}

/// Kernel, initrd and append combinations: (kernel, initrd, append).
const BOOT: &[(bool, bool, Option<&str>)] = &[
    (false, false, None),
    (true, false, None),
    (true, true, None),
    (true, false, Some("console=ttyS0 quiet")),
    (true, true, Some("root=/dev/vda ro systemd.verity=1")),
    (true, false, Some("")),
];

const VCPUS: &[u32] = &[1, 2, 3, 4, 8, 16, 33, 64];

#[test]
fn measure_snp_matches_sev_snp_measure() {
    if !cvm_core::skip::require_slow(TEST) {
        return;
    }
    let root = workspace_root();
    let reference = match SevSnpMeasure::ensure(&SevSnpMeasure::default_venv(&root)) {
        Ok(reference) => reference,
        Err(err) => {
            cvm_core::skip::skip(
                TEST,
                &format!("sev-snp-measure could not be installed from PyPI: {err:#}"),
            );
            return;
        }
    };
    eprintln!("comparing with {}", reference.version().unwrap_or_default());
    let firmware = reference::test_firmware_dir(&root)
        .expect("shared/test-data/firmware beside the repository");
    let amdsev = firmware.join("ovmf-noble-2024.02-2ubuntu0.10-OVMF.amdsev.fd");
    let plucky = firmware.join("ovmf-plucky-2025.02-3ubuntu2-OVMF.fd");
    let debian = Path::new("/usr/share/ovmf/OVMF.fd");

    // A kernel of a few MiB and an initrd, different from the unit-test fixtures.
    let scratch = tempfile::tempdir().unwrap();
    let kernel = scratch.path().join("vmlinuz");
    let initrd = scratch.path().join("initrd.img");
    std::fs::write(
        &kernel,
        (0..3_000_000u32)
            .map(|i| (i * 7 % 251) as u8)
            .collect::<Vec<_>>(),
    )
    .unwrap();
    std::fs::write(
        &initrd,
        (0..500_000u32).map(|i| (i % 13) as u8).collect::<Vec<_>>(),
    )
    .unwrap();

    let mut requests = Vec::new();
    // The AmdSev build: every vCPU type, vCPU counts 1..64, every boot combination, both
    // feature sets; the indices step through the lists at different rates to mix them.
    for index in 0..VCPU_TYPES.len().max(24) {
        let (kernel_on, initrd_on, append) = BOOT[index % BOOT.len()];
        requests.push(SnpRequest {
            ovmf: amdsev.clone(),
            vcpus: VCPUS[(index / 2) % VCPUS.len()],
            vcpu: Vcpu::Type(VCPU_TYPES[index % VCPU_TYPES.len()].0.to_owned()),
            kernel: kernel_on.then(|| kernel.clone()),
            initrd: initrd_on.then(|| initrd.clone()),
            append: append.map(str::to_owned),
            guest_features: if (index / 3) % 2 == 0 { 0x1 } else { 0x21 },
            vmm: Vmm::Qemu,
            policy: None,
        });
    }
    requests.push(SnpRequest {
        vcpu: Vcpu::Sig(0x00b0_0f00),
        ..requests[0].clone()
    });
    // Firmware without a kernel-hashes section: no kernel.
    let mut plain = vec![plucky];
    if debian.is_file() {
        plain.push(debian.to_owned());
    } else {
        cvm_core::skip::skip(
            &format!("{TEST}[debian-ovmf]"),
            "Debian's /usr/share/ovmf/OVMF.fd is missing (install the ovmf package); compared Ubuntu's builds only",
        );
    }
    for ovmf in plain {
        for (index, vcpus) in [1u32, 4, 64].into_iter().enumerate() {
            requests.push(SnpRequest {
                ovmf: ovmf.clone(),
                vcpus,
                vcpu: Vcpu::Type(["EPYC-v4", "EPYC-Milan", "EPYC-Genoa"][index].to_owned()),
                kernel: None,
                initrd: None,
                append: None,
                guest_features: if index == 1 { 0x21 } else { 0x1 },
                vmm: Vmm::Qemu,
                policy: None,
            });
        }
    }
    assert!(requests.len() >= 20, "{} combinations", requests.len());

    let mut mismatches = Vec::new();
    for request in &requests {
        let args = reference::reference_args(request);
        let ours = measure_snp(request).unwrap().measurement;
        let theirs = reference.measure(&args).unwrap();
        if ours != theirs {
            mismatches.push(format!(
                "{}\n  ours   {ours}\n  theirs {theirs}",
                args.join(" ")
            ));
        }
    }
    assert!(
        mismatches.is_empty(),
        "{} of {} combinations differ:\n{}",
        mismatches.len(),
        requests.len(),
        mismatches.join("\n")
    );
    eprintln!("{} combinations identical", requests.len());

    // Both refuse a kernel for a firmware without a kernel-hashes section.
    let refused = SnpRequest {
        kernel: Some(kernel.clone()),
        ovmf: firmware.join("ovmf-plucky-2025.02-3ubuntu2-OVMF.fd"),
        ..requests[0].clone()
    };
    assert!(measure_snp(&refused).is_err());
    assert!(reference
        .measure(&reference::reference_args(&refused))
        .is_err());
}
