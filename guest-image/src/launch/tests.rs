//! Unit tests of the launch rendering helpers: quoting, paths, MMIO sizing, the TDX object and the
//! slow-boot warnings.

use std::path::Path;

use cvm_core::model::{Model, Tee};

use super::{
    escape_xml,
    plan::{boot_time_warnings, mmio64_mib, normalize, relative_path},
    qemu::{tdx_guest_json, Var, Word},
};

fn model(text: &str) -> Model {
    cvm_core::model::parse(text, None).unwrap()
}

#[test]
fn relative_paths_between_directories() {
    let check = |from: &str, to: &str, expected: &str| {
        assert_eq!(
            relative_path(Path::new(from), Path::new(to)),
            Path::new(expected)
        );
    };
    check("/a/b", "/a/b", "");
    check("/a/b", "/a/b/c", "c");
    check("/a/b/out", "/a/art", "../../art");
    check("/x", "/y/z", "../y/z");
}

#[test]
fn normalize_is_lexical() {
    assert_eq!(normalize(Path::new("/a/./b/../c/")), Path::new("/a/c"));
    assert_eq!(normalize(Path::new("/../a")), Path::new("/a"));
}

#[test]
fn xml_escaping_covers_text_and_both_attribute_quotes() {
    assert_eq!(
        escape_xml(r#"a&b<c>d"e'f"#),
        "a&amp;b&lt;c&gt;d&quot;e&apos;f"
    );
    assert_eq!(escape_xml("/srv/cvm/plain-path"), "/srv/cvm/plain-path");
}

#[test]
fn shell_words_quote_literals_and_double_commas_of_variables_in_options() {
    let word = Word::default()
        .push("file=")
        .var(Var::Disk, true)
        .push(",if=none");
    assert_eq!(word.to_shell(), r#"file="${disk//,/,,}",if=none"#);
    let resolved = word.resolve(&|_| "/a,b/disk.qcow2".into());
    assert_eq!(resolved, "file=/a,,b/disk.qcow2,if=none");
    let literal = Word::default().push("it's $HOME");
    assert_eq!(literal.to_shell(), r#"'it'\''s $HOME'"#);
}

#[test]
fn mmio_window_is_the_models_or_256_gib_per_gpu() {
    let base = "[deployment]\nname = \"m\"\ntee = \"tdx\"\n[launch]\n";
    assert_eq!(mmio64_mib(&model(base)), None);
    let one = format!("{base}gpus = [{{ address = \"0000:41:00.0\", model = \"h100\" }}]\n");
    assert_eq!(mmio64_mib(&model(&one)), Some(262_144));
    let explicit = format!("{one}mmio64-mib = 1048576\n");
    assert_eq!(mmio64_mib(&model(&explicit)), Some(1_048_576));
    let gpus: Vec<String> = (0..3)
        .map(|index| format!("{{ address = \"0000:4{index}:00.0\", model = \"b200\" }}"))
        .collect();
    let three = format!("{base}gpus = [{}]\n", gpus.join(", "));
    // Three windows of 256 GiB round up to the next power of two.
    assert_eq!(mmio64_mib(&model(&three)), Some(1_048_576));
}

#[test]
fn tdx_object_passes_the_attribute_word_only_when_it_has_more_than_sept_ve_disable() {
    assert_eq!(
        tdx_guest_json(0x1000_0000, 4050),
        r#"{"id":"tdx0","qom-type":"tdx-guest","quote-generation-socket":{"cid":"2","port":"4050","type":"vsock"},"sept-ve-disable":true}"#
    );
    let with_pks: serde_json::Value =
        serde_json::from_str(&tdx_guest_json(0x5000_0000, 4051)).unwrap();
    assert_eq!(with_pks["attributes"], 0x5000_0000_u64);
    assert_eq!(with_pks["sept-ve-disable"], true);
    assert_eq!(with_pks["quote-generation-socket"]["port"], "4051");
}

#[test]
fn slow_boot_warnings_start_at_64_gib_and_64_vcpus() {
    let with = |vcpus: u32, memory: &str| {
        let text = format!(
            "[deployment]\nname = \"m\"\ntee = \"snp\"\n[launch]\nvcpus = {vcpus}\nmemory = \"{memory}\"\n"
        );
        let model = model(&text);
        assert_eq!(model.deployment.tee, Tee::Snp);
        boot_time_warnings(&model)
    };
    assert!(with(63, "65535M").is_empty());
    let memory = with(2, "64G");
    assert_eq!(memory.len(), 1);
    assert!(
        memory[0].starts_with("launch.memory = \"64G\" (64 GiB)"),
        "{memory:?}"
    );
    let vcpus = with(64, "4G");
    assert_eq!(vcpus.len(), 1);
    assert!(vcpus[0].starts_with("launch.vcpus = 64"), "{vcpus:?}");
    assert_eq!(with(248, "1T").len(), 2);
}
