//! Model tests: the embedded default, the examples, and one bad model per file in
//! `tests/data/bad-models/` whose expected one-line error sits beside it in a `.err` file
//! (regenerate with `UPDATE_EXPECT=1 cargo test -p cvm-core`).

use std::path::{Path, PathBuf};

use super::*;

fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn default_model_loads_and_uses_a_pinned_kernel_track() {
    let model = Model::default_model();
    assert_eq!(model.deployment.tee, Tee::Snp);
    assert_eq!(model.guest.suite, "noble");
    let (flavour, track) = kernel_track(&model.guest.kernel).unwrap();
    assert_eq!(flavour, KernelFlavour::Virtual);
    assert!(track >= (6, 11), "{track:?}");
    assert_eq!(
        kernel_track("linux-image-nvidia-6.17"),
        Some((KernelFlavour::Nvidia, (6, 17)))
    );
    assert_eq!(kernel_track("linux-image-generic-6.17"), None);
    assert_eq!(model.memory_mib(), 4096);
    assert_eq!(model.vcpu_type(), VcpuType::EpycV4);
}

#[test]
fn default_model_equals_the_serde_defaults() {
    // The commented file shows every default; keep it honest.
    let minimal = parse("[deployment]\nname = \"cvm-base\"\ntee = \"snp\"\n", None).unwrap();
    let mut default = Model::default_model();
    assert_eq!(default.launch.vcpu_type, Some(VcpuType::EpycV4));
    default.launch.vcpu_type = None;
    assert_eq!(default.launch.snp, Some(SnpLaunch::default()));
    default.launch.snp = None;
    assert_eq!(minimal, default);
}

#[test]
fn examples_load_and_validate() {
    let examples = crate_dir().join("../examples");
    let snp = load(Some(&examples.join("xe7745-snp.toml"))).unwrap().model;
    assert_eq!(snp.deployment.tee, Tee::Snp);
    assert_eq!(snp.guest.profile, Profile::Gpu);
    assert_eq!(snp.launch.gpus.len(), 1);
    assert_eq!(snp.launch.gpus[0].model, GpuModel::RtxPro6000Bse);
    assert_eq!(snp.host.release.as_deref(), Some("25.10"));
    assert!(snp.attestation.is_some());

    let tdx = load(Some(&examples.join("tdx.toml"))).unwrap().model;
    assert_eq!(tdx.deployment.tee, Tee::Tdx);
    assert_eq!(tdx.launch.gpus[0].model, GpuModel::H100);
    assert_eq!(tdx.launch.vcpu_type, None);

    let mut names: Vec<_> = std::fs::read_dir(&examples)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    names.sort();
    for path in names
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
    {
        load(Some(path)).unwrap_or_else(|err| panic!("{}: {err:#}", path.display()));
    }
}

#[test]
fn bad_models_give_one_line_errors() {
    let dir = crate_dir().join("tests/data/bad-models");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "toml"))
        .collect();
    files.sort();
    assert!(
        files.len() >= 15,
        "at least 15 bad models, found {}",
        files.len()
    );
    let update = std::env::var_os("UPDATE_EXPECT").is_some();
    let mut mismatches = Vec::new();
    for file in &files {
        let relative = Path::new("bad-models").join(file.file_name().unwrap());
        let text = std::fs::read_to_string(file).unwrap();
        let err = parse(&text, Some(&relative))
            .expect_err(&format!("{} should be rejected", file.display()));
        assert!(
            crate::error::is_bad_input(&err),
            "{}: not a bad-input error",
            file.display()
        );
        let message = format!("{err:#}");
        assert!(
            !message.contains('\n'),
            "{}: error spans lines: {message}",
            file.display()
        );
        assert!(
            message.starts_with(&relative.display().to_string()),
            "{}: error does not name the file: {message}",
            file.display()
        );
        assert!(
            message.contains("; ") || message.contains(": "),
            "{message}"
        );
        let expected_path = file.with_extension("err");
        if update {
            std::fs::write(&expected_path, format!("{message}\n")).unwrap();
            continue;
        }
        let expected = std::fs::read_to_string(&expected_path).unwrap_or_default();
        if expected.trim_end() != message {
            mismatches.push(format!(
                "{}:\n  expected: {}\n  actual:   {message}",
                file.display(),
                expected.trim_end()
            ));
        }
    }
    assert!(
        mismatches.is_empty(),
        "run UPDATE_EXPECT=1 cargo test -p cvm-core to accept:\n{}",
        mismatches.join("\n")
    );
}

#[track_caller]
fn check_pci(address: &str, valid: bool) {
    assert_eq!(is_pci_address(address), valid, "{address}");
}

#[test]
fn pci_addresses() {
    check_pci("0000:41:00.0", true);
    check_pci("0000:c1:1f.7", true);
    check_pci("0000:41:20.0", false);
    check_pci("0000:41:00.8", false);
    check_pci("41:00.0", false);
    check_pci("0000:41:00.0 ", false);
    check_pci("000g:41:00.0", false);
}

#[track_caller]
fn check_memory(text: &str, mib: Option<u64>) {
    assert_eq!(parse_memory_mib(text), mib, "{text}");
}

#[test]
fn memory_sizes() {
    check_memory("4G", Some(4096));
    check_memory("512M", Some(512));
    check_memory("1T", Some(1 << 20));
    check_memory("64GB", None);
    check_memory("G", None);
    check_memory("12", None);
    check_memory("99999999999999999999G", None);
}

#[test]
fn line_and_column_of_nested_keys() {
    let text = "[deployment]\nname = \"x\"\ntee = \"snp\"\n\n[launch]\ngpus = [\n  { address = \"a\", model = \"h100\" },\n  { address = \"b\", model = \"h100\" },\n]\n";
    assert_eq!(locate(text, "launch.gpus[1].address"), Some((8, 5)));
    assert_eq!(locate(text, "deployment.tee"), Some((3, 1)));
    // A key that is not written out falls back to its nearest written parent.
    assert_eq!(locate(text, "launch.memory"), Some((5, 2)));
}
