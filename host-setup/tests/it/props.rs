//! Property tests: mutated real outputs (bytes cut, inserted, replaced) thrown at every parser and
//! at the whole check registry. Parsers return partial values or `None`; checks skip or fail;
//! nothing panics.

use std::fs;

use host_setup::{
    checks::{evaluate, registry, Options},
    facts::{parse, Bundle},
};
use proptest::prelude::*;

use crate::support::fixture;

/// The real outputs the parsers read, by bundle path.
const SOURCES: &[&str] = &[
    "root/proc/cmdline",
    "root/proc/meminfo",
    "root/etc/os-release",
    "root/sys/devices/system/cpu/online",
    "root/sys/module/kvm_amd/parameters/sev_snp",
    "cmd/uname-r",
    "cmd/dmesg",
    "cmd/lspci",
    "cmd/lscpu",
    "cmd/dmidecode",
    "cmd/lsmod",
    "cmd/qemu-version",
    "cmd/qemu-objects",
    "cmd/gpu-cc-mode",
    "cmd/gpu-ppcie-mode",
    "cmd/ulimit-l",
    "cpuid/0x8000001f",
    "msr/0xc0010010",
    "redfish/redfish/v1/Systems/System.Embedded.1/Bios.json",
];

fn real(rel: &str) -> Vec<u8> {
    fs::read(fixture("snp-xe7745").join(rel)).expect("reading a fixture")
}

/// One mutation: at a position, cut some bytes and insert others.
fn mutations() -> impl Strategy<Value = Vec<(usize, usize, Vec<u8>)>> {
    prop::collection::vec(
        (
            any::<usize>(),
            0usize..64,
            prop::collection::vec(any::<u8>(), 0..16),
        ),
        1..6,
    )
}

fn mutate(mut bytes: Vec<u8>, edits: &[(usize, usize, Vec<u8>)]) -> Vec<u8> {
    for (at, cut, insert) in edits {
        let at = if bytes.is_empty() {
            0
        } else {
            at % (bytes.len() + 1)
        };
        let end = (at + cut).min(bytes.len());
        bytes.splice(at..end, insert.iter().copied());
    }
    bytes
}

/// Runs every parser over `text`.
fn parse_all(text: &str) {
    let _ = parse::cpuinfo(text);
    let _ = parse::lscpu(text);
    let _ = parse::meminfo(text);
    let _ = parse::os_release(text);
    let _ = parse::kernel_release(text);
    let _ = parse::lspci(text);
    let _ = parse::dmesg(text);
    let _ = parse::qemu_version(text);
    let _ = parse::qemu_objects(text);
    let _ = parse::gpu_cc_modes(text);
    let _ = parse::gpu_ppcie_modes(text);
    let _ = parse::ulimit_l(text);
    let _ = parse::dmidecode(text);
    let _ = parse::lsmod(text);
    let _ = parse::cmdline(text);
    let _ = parse::cpu_list_len(text);
    let _ = parse::cpuid_leaf(text);
    let _ = parse::hex_u64(text);
    let _ = parse::param_enabled(text);
    if let Ok(document) = serde_json::from_str::<serde_json::Value>(text) {
        let _ = parse::bios_attributes(&document);
        let _ = parse::bios_registry_names(&document);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn parsers_survive_mutated_real_outputs(source in 0..SOURCES.len(), edits in mutations()) {
        let bytes = mutate(real(SOURCES[source]), &edits);
        parse_all(&String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn parsers_survive_arbitrary_text(text in ".{0,400}") {
        parse_all(&text);
    }

    #[test]
    fn lspci_keeps_every_intact_header(edits in mutations()) {
        // Mutations only touch the tail of the file: every device above them still parses.
        let text = String::from_utf8_lossy(&real("cmd/lspci")).into_owned();
        let split = text.find("0000:41:00.0").expect("a device line");
        let tail = mutate(text.as_bytes()[split..].to_vec(), &edits);
        let mutated = format!("{}{}", &text[..split], String::from_utf8_lossy(&tail));
        let devices = parse::lspci(&mutated);
        let intact = parse::lspci(&text[..split]);
        prop_assert!(devices.len() >= intact.len());
        prop_assert_eq!(&devices[..intact.len() - 1], &intact[..intact.len() - 1]);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn checks_survive_a_mutated_bundle(source in 0..SOURCES.len(), edits in mutations()) {
        // A bundle holding only facts.json and one mutated file: every check runs, most skip.
        let dir = tempfile::tempdir().expect("tempdir");
        fs::write(dir.path().join("facts.json"), "{\"schema\": 1}").expect("write");
        let path = dir.path().join(SOURCES[source]);
        fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        fs::write(&path, mutate(real(SOURCES[source]), &edits)).expect("write");
        let bundle = Bundle::open(dir.path()).expect("open");
        let report = evaluate(&bundle, &Options::default()).expect("evaluate");
        prop_assert_eq!(report.checks.len(), registry().len());
    }
}
