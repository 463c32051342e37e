//! Unit tests of the measurement module: sev-snp-measure's digests on small fixtures, the `sev`
//! crate as an oracle on the real firmware, the TDX anchor, the model-driven measurement, bad
//! inputs, and property tests that throw random and mutated firmware at the parsers.

use std::path::{Path, PathBuf};

use cvm_core::model::{Firmware, Model, VcpuType};
use expect_test::expect_file;
use proptest::prelude::*;

use super::*;

const AMDSEV: &str = "ovmf-noble-2024.02-2ubuntu0.10-OVMF.amdsev.fd";
const PLUCKY: &str = "ovmf-plucky-2025.02-3ubuntu2-OVMF.fd";
/// virtee/tdx-measure's published MRTD of the plucky OVMF.fd (single-pass).
const PLUCKY_MRTD: &str = "7357a10d2e2724dffe68813e3cc4cfcde6814d749f2fb62e3953e54f6e0b50a219786afe2cd478f684b52c61837e1114";

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/measure")
}

fn shared_firmware(name: &str) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the crate is inside the workspace");
    let dir = reference::test_firmware_dir(root).unwrap_or_else(|| {
        panic!(
            "shared/test-data/firmware not found beside {}: the tests need the exact OVMF files",
            root.display()
        )
    });
    dir.join(name)
}

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(data_dir().join(name)).unwrap()
}

fn request(ovmf: PathBuf, vcpus: u32, vcpu_type: &str) -> SnpRequest {
    SnpRequest {
        ovmf,
        vcpus,
        vcpu: Vcpu::Type(vcpu_type.to_owned()),
        kernel: None,
        initrd: None,
        append: None,
        guest_features: 1,
        vmm: Vmm::Qemu,
        policy: None,
    }
}

/// One line of snp-cases.tsv: our digest must equal sev-snp-measure's.
#[track_caller]
fn check_snp_case(line: &str) {
    let fields: Vec<&str> = line.split('\t').collect();
    assert_eq!(fields.len(), 9, "malformed case: {line}");
    let optional = |value: &str| (value != "-").then(|| value.to_owned());
    let dir = data_dir();
    let vcpu = match fields[2].strip_prefix("sig:") {
        Some(sig) => Vcpu::Sig(snp::parse_int(sig).unwrap() as u32),
        None => Vcpu::Type(fields[2].to_owned()),
    };
    let request = SnpRequest {
        ovmf: dir.join(fields[0]),
        vcpus: fields[1].parse().unwrap(),
        vcpu,
        kernel: optional(fields[5]).map(|name| dir.join(name)),
        initrd: optional(fields[6]).map(|name| dir.join(name)),
        append: optional(fields[7]),
        guest_features: snp::parse_int(fields[3]).unwrap(),
        vmm: if fields[4] == "ec2" {
            Vmm::Ec2
        } else {
            Vmm::Qemu
        },
        policy: None,
    };
    let report = measure_snp(&request).unwrap();
    assert_eq!(report.measurement, fields[8], "case: {line}");
}

#[test]
fn snp_digests_match_sev_snp_measure_on_fixtures() {
    let text = std::fs::read_to_string(data_dir().join("snp-cases.tsv")).unwrap();
    let cases: Vec<&str> = text
        .lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .collect();
    assert!(cases.len() >= 14, "{} cases", cases.len());
    for line in cases {
        check_snp_case(line);
    }
}

#[test]
fn snp_digests_match_the_sev_crate_on_real_firmware() {
    use sev::{
        measurement::{
            snp::{snp_calc_launch_digest, SnpMeasurementArgs},
            vcpu_types::CpuType,
            vmsa::{GuestFeatures, VMMType},
        },
        parser::ByteParser,
    };
    let ovmf = shared_firmware(AMDSEV);
    let kernel = data_dir().join("kernel.bin");
    let initrd = data_dir().join("initrd.bin");
    // (vCPUs, vCPU type, guest features, kernel, initrd, append).
    type Case<'a> = (u32, &'a str, u64, bool, bool, Option<&'a str>);
    let cases: &[Case] = &[
        (1, "EPYC-v4", 0x1, false, false, None),
        (4, "EPYC-Milan", 0x21, false, false, None),
        (32, "EPYC-Genoa", 0x1, true, false, None),
        (7, "EPYC-Turin", 0x1, true, true, Some("console=ttyS0")),
        (2, "EPYC-Rome", 0x21, true, false, Some("")),
    ];
    for &(vcpus, vcpu_type, features, with_kernel, with_initrd, append) in cases {
        let ours = measure_snp(&SnpRequest {
            kernel: with_kernel.then(|| kernel.clone()),
            initrd: with_initrd.then(|| initrd.clone()),
            append: append.map(str::to_owned),
            guest_features: features,
            ..request(ovmf.clone(), vcpus, vcpu_type)
        })
        .unwrap();
        let theirs = snp_calc_launch_digest(SnpMeasurementArgs {
            vcpus,
            vcpu_type: CpuType::try_from(vcpu_type).unwrap(),
            ovmf_file: ovmf.clone(),
            guest_features: GuestFeatures::from_bytes(&features.to_le_bytes()).unwrap(),
            kernel_file: with_kernel.then(|| kernel.clone()),
            initrd_file: with_initrd.then(|| initrd.clone()),
            append,
            ovmf_hash_str: None,
            vmm_type: Some(VMMType::QEMU),
        })
        .unwrap()
        .get_hex_ld();
        assert_eq!(
            ours.measurement, theirs,
            "{vcpus} x {vcpu_type}, features {features:#x}"
        );
    }
}

#[test]
fn vcpu_signatures_are_the_published_ones() {
    for (name, expected) in [
        ("EPYC-v4", 0x0080_0f12),
        ("EPYC-Rome", 0x0083_0f10),
        ("EPYC-Milan", 0x00a0_0f11),
        ("EPYC-Genoa", 0x00a1_0f10),
        ("EPYC-Turin", 0x00b0_0f00),
    ] {
        assert_eq!(snp::vcpu_signature(name).unwrap(), expected, "{name}");
    }
    // Every model of the deployment model has a signature.
    for model in VcpuType::ALL {
        snp::vcpu_signature(model.as_str()).unwrap();
    }
}

#[test]
fn integers_parse_like_python_int_base_0() {
    let cases: &[(&str, Option<u64>)] = &[
        ("0x1", Some(1)),
        ("0x21", Some(0x21)),
        ("0X21", Some(0x21)),
        ("21", Some(21)),
        ("0", Some(0)),
        ("0b101", Some(5)),
        ("0o17", Some(15)),
        ("0x_21", Some(0x21)),
        ("010", None),
        ("zz", None),
        ("0x", None),
        ("", None),
        ("-1", None),
        ("0xfffffffffffffffff", None),
    ];
    for (text, expected) in cases {
        assert_eq!(snp::parse_int(text), *expected, "{text:?}");
    }
}

/// A firmware with one byte range replaced.
fn patched(mut bytes: Vec<u8>, at: usize, with: &[u8]) -> Vec<u8> {
    bytes[at..at + with.len()].copy_from_slice(with);
    bytes
}

/// The offset in `bytes` of the table entry header carrying `guid`.
fn guid_offset(bytes: &[u8], guid: &ovmf::Guid) -> usize {
    bytes
        .windows(16)
        .rposition(|window| window == guid)
        .expect("GUID present")
}

/// A bad firmware or launch value gives a bad-input error mentioning `expected`.
#[track_caller]
fn check_bad_snp(firmware: &[u8], params: &SnpParams, expected: &str) {
    let err = snp::launch_digest(firmware, params).unwrap_err();
    assert!(
        cvm_core::error::is_bad_input(&err),
        "not bad input: {err:#}"
    );
    let text = format!("{err:#}");
    assert!(
        text.contains(expected),
        "{text:?} does not mention {expected:?}"
    );
    assert_eq!(text.lines().count(), 1, "{text}");
}

#[test]
fn bad_snp_inputs_are_one_line_errors() {
    let tail = fixture("amdsev-tail-4k.fd");
    let params = SnpParams {
        vcpus: 2,
        vcpu_sig: 0x0080_0f12,
        guest_features: 1,
        vmm: Vmm::Qemu,
        kernel_hashes: None,
    };
    let with_kernel = SnpParams {
        kernel_hashes: Some(KernelHashes::new([7; 32], None, Some("quiet"))),
        ..params.clone()
    };
    check_bad_snp(&[], &params, "empty");
    let full = std::fs::read(shared_firmware(AMDSEV)).unwrap();
    check_bad_snp(&full[..1 << 20], &params, "no OVMF footer GUID table");
    check_bad_snp(&tail[100..], &params, "not a whole number of 4 KiB pages");
    let at = guid_offset(&tail, &ovmf::SEV_METADATA_GUID);
    check_bad_snp(
        &patched(tail.clone(), at, &[0xaa; 16]),
        &params,
        "no SEV metadata",
    );
    check_bad_snp(
        &fixture("plucky-tail-4k.fd"),
        &with_kernel,
        "no SNP kernel-hashes section",
    );
    check_bad_snp(
        &tail,
        &SnpParams {
            vcpus: 0,
            ..params.clone()
        },
        "--vcpus 0",
    );
    let at = guid_offset(&tail, &ovmf::SEV_ES_RESET_BLOCK_GUID);
    check_bad_snp(
        &patched(tail.clone(), at, &[0xaa; 16]),
        &params,
        "no SEV-ES reset block",
    );

    let err = snp::vcpu_signature("EPYC-Zen9").unwrap_err();
    assert!(format!("{err}").contains("EPYC-Genoa"), "{err}");
    assert!(cvm_core::error::is_bad_input(&err));

    let missing = measure_snp(&request(data_dir().join("no-such.fd"), 1, "EPYC-v4")).unwrap_err();
    assert!(cvm_core::error::is_bad_input(&missing), "{missing:#}");
    assert!(format!("{missing:#}").contains("no-such.fd"), "{missing:#}");
}

#[test]
fn mrtd_reproduces_the_public_anchor_and_both_orders() {
    #[track_caller]
    fn check(name: &str, order: PageAddOrder, expected: &str) {
        let measurement = measure_tdx(&shared_firmware(name), order).unwrap();
        assert_eq!(measurement.mrtd, expected, "{name} {order:?}");
        assert_eq!(measurement.rtmr1, None);
    }
    check(PLUCKY, PageAddOrder::Single, PLUCKY_MRTD);
    // From tests/data/measure/mrtd.py, an independent implementation that reproduces the anchor.
    check(PLUCKY, PageAddOrder::TwoPass, "7ce4cec5729d95652108c1dfe381a3ccb6a6a9061920f0479a3e4c7c806cf51d2438958def083084880f2bf4dd2e14eb");
    check(AMDSEV, PageAddOrder::Single, "73f4953d0695bf05511403ec9bcdb27fc55a884e2968babca5a06c84d88e2d25558f5d8318a54769d5c753547a6809b9");
}

#[test]
fn tdvf_section_table_of_plucky() {
    let firmware = std::fs::read(shared_firmware(PLUCKY)).unwrap();
    let mut text = String::from("type attributes gpa size data_offset raw_size\n");
    for section in tdx::tdvf_sections(&firmware).unwrap() {
        text.push_str(&format!(
            "{} {:#x} {:#x} {:#x} {:#x} {:#x}\n",
            section.kind,
            section.attributes,
            section.memory_address,
            section.memory_data_size,
            section.data_offset,
            section.raw_data_size
        ));
    }
    expect_file!["../../tests/data/measure/tdvf-plucky.txt"].assert_eq(&text);
}

#[test]
fn bad_tdx_inputs_are_one_line_errors() {
    #[track_caller]
    fn check(firmware: &[u8], expected: &str) {
        let err = tdx::mrtd(firmware, PageAddOrder::Single).unwrap_err();
        let text = format!("{err:#}");
        assert!(cvm_core::error::is_bad_input(&err), "{text}");
        assert!(
            text.contains(expected),
            "{text:?} does not mention {expected:?}"
        );
    }
    let tail = fixture("plucky-tail-4k.fd");
    let at = guid_offset(&tail, &ovmf::TDX_METADATA_OFFSET_GUID);
    check(&patched(tail.clone(), at, &[0x55; 16]), "no TDVF metadata");
    // The tail's sections point at firmware bytes it no longer holds.
    check(&tail, "raw data beyond the end of the image");
    check(&[0u8; 17], "no OVMF footer GUID table");
}

/// A temporary artifacts directory holding the AmdSev firmware and a fake UKI.
fn artifacts(uki: &[u8]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(shared_firmware(AMDSEV), dir.path().join("firmware.fd")).unwrap();
    std::fs::write(dir.path().join("uki.efi"), uki).unwrap();
    dir
}

fn snp_measurement(model: &Model, dir: &Path) -> String {
    measure_artifacts(model, dir)
        .unwrap()
        .snp
        .unwrap()
        .measurement
}

#[test]
fn model_launch_values_change_the_measurement() {
    let dir = artifacts(b"not really a UKI");
    let base_model = Model::default_model();
    let base = snp_measurement(&base_model, dir.path());

    // The artifacts measurement is exactly `measure snp` with the launch script's values.
    let direct = measure_snp(&SnpRequest {
        kernel: Some(dir.path().join("uki.efi")),
        ..request(dir.path().join("firmware.fd"), 2, "EPYC-v4")
    })
    .unwrap();
    assert_eq!(base, direct.measurement);

    let mut more_vcpus = base_model.clone();
    more_vcpus.launch.vcpus = 3;
    let mut genoa = base_model.clone();
    genoa.launch.vcpu_type = Some(VcpuType::EpycGenoa);
    let mut debug_swap = base_model.clone();
    debug_swap.launch.snp.as_mut().unwrap().guest_features = 0x21;
    let mut disk_boot = base_model.clone();
    disk_boot.launch.boot = BootMode::Disk;
    let mut seen = vec![base.clone()];
    for model in [more_vcpus, genoa, debug_swap, disk_boot] {
        let measurement = snp_measurement(&model, dir.path());
        assert!(
            !seen.contains(&measurement),
            "{:?} did not change it",
            model.launch
        );
        seen.push(measurement);
    }

    let other_uki = artifacts(b"not really a UKI, either");
    assert_ne!(snp_measurement(&base_model, other_uki.path()), base);

    let patched_firmware = artifacts(b"not really a UKI");
    let path = patched_firmware.path().join("firmware.fd");
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[0x1000] ^= 1;
    std::fs::write(&path, bytes).unwrap();
    assert_ne!(snp_measurement(&base_model, patched_firmware.path()), base);

    // The policy is recorded beside the digest but is not part of it.
    let mut policy = base_model.clone();
    policy.launch.snp.as_mut().unwrap().policy = 0x20000;
    let measured = measure_artifacts(&policy, dir.path()).unwrap();
    let snp = measured.snp.unwrap();
    assert_eq!(snp.measurement, base);
    assert_eq!(snp.inputs.policy, Some(0x20000));
    assert_eq!(snp.inputs.cmdline, None);
}

#[test]
fn model_firmware_pin_and_missing_artifacts() {
    let dir = artifacts(b"uki");
    let mut model = Model::default_model();
    model.launch.firmware = Some(Firmware {
        path: shared_firmware(AMDSEV),
        sha256: "a50b4bca32ad9c040702d11b9b1dab221324eda84281e853ed6a013ee84bee9d".to_owned(),
    });
    std::fs::remove_file(dir.path().join("firmware.fd")).unwrap();
    assert_eq!(
        snp_measurement(&model, dir.path()),
        snp_measurement(&Model::default_model(), artifacts(b"uki").path())
    );
    model.launch.firmware.as_mut().unwrap().sha256 = "00".repeat(32);
    let err = measure_artifacts(&model, dir.path()).unwrap_err();
    assert!(
        format!("{err:#}").contains("launch.firmware.sha256"),
        "{err:#}"
    );

    let empty = tempfile::tempdir().unwrap();
    let err = measure_artifacts(&Model::default_model(), empty.path()).unwrap_err();
    assert!(cvm_core::error::is_bad_input(&err));
    assert!(
        format!("{err:#}").contains("cargo xtask guest build"),
        "{err:#}"
    );
}

#[test]
fn tdx_model_measures_mrtd_with_the_model_order() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(shared_firmware(PLUCKY), dir.path().join("firmware.fd")).unwrap();
    let text = "[deployment]\nname = \"t\"\ntee = \"tdx\"\n[launch]\nvcpus = 4\n";
    let mut model = cvm_core::model::parse(text, None).unwrap();
    // Direct UKI boot (the default) needs uki.efi: a UKI that is not a PE is bad input.
    std::fs::write(dir.path().join("uki.efi"), b"not a PE").unwrap();
    let err = measure_artifacts(&model, dir.path()).unwrap_err();
    assert!(cvm_core::error::is_bad_input(&err), "{err:#}");
    assert!(format!("{err:#}").contains("uki.efi"), "{err:#}");
    let linux = rtmr::tests::pe_image(&[(".text", b"kernel")], b"");
    let uki = rtmr::tests::pe_image(
        &[
            (".cmdline", b"console=hvc0"),
            (".initrd", b"initrd"),
            (".linux", &linux),
        ],
        b"",
    );
    std::fs::write(dir.path().join("uki.efi"), &uki).unwrap();
    let measured = measure_artifacts(&model, dir.path()).unwrap();
    let tdx = measured.tdx.as_ref().unwrap();
    assert_eq!(tdx.mrtd, PLUCKY_MRTD);
    assert_eq!(tdx.page_add_order, PageAddOrder::Single);
    // RTMR1/RTMR2 stay null (nothing unverified reaches attestation); the UKI events are listed.
    assert_eq!((&tdx.rtmr1, &tdx.rtmr2), (&None, &None));
    let uki_boot = tdx.uki_boot.as_ref().unwrap();
    assert!(!uki_boot.verified_on_hardware);
    let events: Vec<[u8; 48]> = uki_boot
        .rtmr1_events
        .iter()
        .map(|event| hex::decode(&event.digest).unwrap().try_into().unwrap())
        .collect();
    assert_eq!(events[0], rtmr::authenticode_sha384(&uki).unwrap());
    assert_eq!(events[3], rtmr::authenticode_sha384(&linux).unwrap());
    assert_eq!(uki_boot.rtmr1_candidate, hex::encode(rtmr::replay(&events)));
    assert_eq!(uki_boot.rtmr2_events.len(), 2);
    assert_eq!(
        uki_boot.rtmr2_events[1].digest,
        hex::encode(sha384(b"initrd"))
    );

    model.host.qemu_version = Some("8.2.2".to_owned());
    assert_eq!(page_add_order(&model), PageAddOrder::TwoPass);
    model.host.qemu_version = Some("9.2.1".to_owned());
    assert_eq!(page_add_order(&model), PageAddOrder::Single);
    model.launch.tdx = Some(cvm_core::model::TdxLaunch {
        page_add_order: Some(PageAddOrder::TwoPass),
        ..Default::default()
    });
    assert_eq!(page_add_order(&model), PageAddOrder::TwoPass);

    write_measurements(dir.path(), &measured).unwrap();
    let text = std::fs::read_to_string(dir.path().join(MEASUREMENTS_FILE)).unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(json["schema"], 1);
    assert_eq!(json["tee"], "tdx");
    assert_eq!(json["tdx"]["mrtd"], PLUCKY_MRTD);
    assert_eq!(json["tdx"]["rtmr1"], serde_json::Value::Null);
    assert_eq!(json["tdx"]["uki_boot"]["verified_on_hardware"], false);
    assert!(json["tdx"]["uki_boot"]["not_predicted"]["rtmr0"]
        .as_str()
        .unwrap()
        .contains("ACPI"));
    assert_eq!(json["tdx"]["page_add_order"], "single");
    assert_eq!(
        serde_json::from_str::<Measurements>(&text).unwrap(),
        measured
    );
}

#[test]
fn measurements_json_has_the_design_shape() {
    let dir = artifacts(b"uki");
    let measured = measure_artifacts(&Model::default_model(), dir.path()).unwrap();
    let json = serde_json::to_value(&measured).unwrap();
    let inputs = json["snp"]["inputs"].as_object().unwrap();
    let mut keys: Vec<&str> = inputs.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "cmdline",
            "firmware_sha256",
            "guest_features",
            "kernel_sha256",
            "policy",
            "vcpu_sig",
            "vcpu_type",
            "vcpus"
        ]
    );
    assert_eq!(json["tee"], "snp");
    assert_eq!(json["snp"]["measurement"].as_str().unwrap().len(), 96);
    assert!(json.get("tdx").is_none());
}

/// Runs both parsers; only errors are allowed, never a panic.
fn exercise(firmware: &[u8], kernel: bool) {
    let params = SnpParams {
        vcpus: 3,
        vcpu_sig: 0x00a1_0f10,
        guest_features: 1,
        vmm: Vmm::Qemu,
        kernel_hashes: kernel.then(|| KernelHashes::new([1; 32], None, None)),
    };
    let _ = snp::launch_digest(firmware, &params);
    let _ = snp::launch_digest(
        firmware,
        &SnpParams {
            vmm: Vmm::Ec2,
            ..params
        },
    );
    let _ = tdx::mrtd(firmware, PageAddOrder::Single);
    let _ = tdx::mrtd(firmware, PageAddOrder::TwoPass);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..9000)) {
        exercise(&bytes, false);
    }

    #[test]
    fn random_bytes_behind_a_footer_never_panic(
        body in proptest::collection::vec(any::<u8>(), 0..6000),
        table_size in any::<u16>(),
    ) {
        // A valid footer entry 32 bytes before the end, so the table walk runs on random data.
        let mut bytes = body;
        bytes.extend_from_slice(&table_size.to_le_bytes());
        bytes.extend_from_slice(&ovmf::FOOTER_GUID);
        bytes.extend_from_slice(&[0u8; 32]);
        exercise(&bytes, true);
    }

    #[test]
    fn mutated_snp_firmware_never_panics(
        mutations in proptest::collection::vec((0x400usize..0x1000, any::<u8>()), 1..12),
        kernel in any::<bool>(),
        plucky in any::<bool>(),
    ) {
        let mut bytes = fixture(if plucky { "plucky-tail-4k.fd" } else { "amdsev-tail-4k.fd" });
        for (at, value) in mutations {
            bytes[at] = value;
        }
        exercise(&bytes, kernel);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn mutated_tdvf_firmware_never_panics(
        mutations in proptest::collection::vec((0x500usize..0xa00, any::<u8>()), 1..8),
    ) {
        let mut bytes = std::fs::read(shared_firmware(PLUCKY)).unwrap();
        let len = bytes.len();
        for (at, value) in mutations {
            bytes[len - at] = value;
        }
        let _ = tdx::mrtd(&bytes, PageAddOrder::Single);
    }
}

#[test]
fn streamed_firmware_measures_as_the_whole_image() {
    let path = shared_firmware(AMDSEV);
    let whole = std::fs::read(&path).unwrap();
    let file = std::fs::File::open(&path).unwrap();
    assert_eq!(
        snp::file_page_hashes(&file, whole.len() as u64, snp::hashing_threads()).unwrap(),
        snp::page_hashes(&whole)
    );
    let kernel = KernelHashes::new([7; 32], Some([9; 32]), Some("console=ttyS0"));
    for (vcpus, kernel_hashes) in [(1, None), (64, Some(kernel))] {
        let params = SnpParams {
            vcpus,
            vcpu_sig: snp::vcpu_signature("EPYC-Genoa").unwrap(),
            guest_features: 0x21,
            vmm: Vmm::Qemu,
            kernel_hashes,
        };
        let expected = snp::launch_digest(&whole, &params).unwrap();
        // The parser's bytes: the default tail, the reset-vector page, a tail too short for the
        // footer table (measured again from the whole image), and all of it.
        for tail in [FIRMWARE_TAIL, 4096, 64, whole.len()] {
            let firmware = read_firmware(&path, tail, 2).unwrap();
            assert!(matches!(firmware, FirmwareInput::Hashed { .. }));
            assert_eq!(
                snp_digest(&path, &firmware, &params).unwrap(),
                expected,
                "tail of {tail} bytes"
            );
        }
    }
}

#[test]
fn streamed_firmware_fails_as_the_whole_image() {
    // Whole pages that are no OVMF image: the error is the whole image's, whatever the streamed
    // tail saw.
    let dir = tempfile::tempdir().unwrap();
    let zeros = dir.path().join("zeros.fd");
    std::fs::write(&zeros, vec![0u8; 8192]).unwrap();
    let params = SnpParams {
        vcpus: 1,
        vcpu_sig: snp::vcpu_signature("EPYC-v4").unwrap(),
        guest_features: 1,
        vmm: Vmm::Qemu,
        kernel_hashes: None,
    };
    for tail in [64, FIRMWARE_TAIL] {
        let firmware = read_firmware(&zeros, tail, 2).unwrap();
        let streamed = snp_digest(&zeros, &firmware, &params).unwrap_err();
        let whole = snp::launch_digest(&std::fs::read(&zeros).unwrap(), &params).unwrap_err();
        assert_eq!(format!("{streamed:#}"), format!("{whole:#}"));
    }
}

/// Pages of pseudo-random bytes (a fixed xorshift sequence).
fn noise_pages(count: usize, seed: u64) -> Vec<Vec<u8>> {
    let mut x = seed | 1;
    (0..count)
        .map(|_| {
            (0..4096)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect()
        })
        .collect()
}

#[cfg(target_arch = "x86_64")]
#[test]
fn four_lane_sha384_equals_the_one_page_hash() {
    let mut pages = noise_pages(6, 42);
    pages[4] = vec![0; 4096];
    pages[5] = (0..4096).map(|i| (i / 128) as u8).collect();
    for group in [[0, 1, 2, 3], [4, 5, 0, 1], [5, 5, 5, 4]] {
        let four: [&[u8; 4096]; 4] = group.map(|i| pages[i].as_slice().try_into().unwrap());
        let Some(digests) = sha384x4::sha384_pages_if_avx2(four) else {
            eprintln!("SKIPPED: this CPU has no AVX2, so the four-lane SHA-384 is never used here");
            return;
        };
        for (lane, &i) in group.iter().enumerate() {
            assert_eq!(digests[lane], sha384(&pages[i]), "lane {lane}, page {i}");
        }
    }
}

#[test]
fn page_hashes_are_the_sha384_of_every_page() {
    // Unique pages in groups of four and not, uniform pages between them, a short last page.
    let mut data = Vec::new();
    for (i, page) in noise_pages(11, 7).into_iter().enumerate() {
        data.extend(page);
        if i % 3 == 0 {
            data.extend([0xffu8; 4096]);
        }
    }
    data.extend([5u8; 100]);
    let expected: Vec<snp::LaunchDigest> = data.chunks(4096).map(sha384).collect();
    assert_eq!(snp::page_hashes(&data), expected);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pages.bin");
    let whole = &data[..data.len() - 100];
    std::fs::write(&path, whole).unwrap();
    let file = std::fs::File::open(&path).unwrap();
    assert_eq!(
        snp::file_page_hashes(&file, whole.len() as u64, snp::hashing_threads()).unwrap(),
        expected[..expected.len() - 1]
    );
}
