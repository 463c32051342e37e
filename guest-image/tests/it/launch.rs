//! Launch rendering (issue 5). Snapshots of every rendered file over the matrix SEV-SNP/TDX ×
//! 0/1/8 GPUs × direct/disk boot (models in tests/data/launch/models); one test per point 1-9 of
//! the reference corrections, asserted on the argument vector the rendered script really runs (its
//! `--dry-run` output) and on the domain XML; hostile model values (proptest); and, in the slow
//! suite, shellcheck, libvirt's schema and QEMU's own acceptance of our SEV-SNP arguments.

use std::{
    collections::BTreeMap,
    io::{Seek, SeekFrom, Write},
    path::{Path, PathBuf},
    sync::OnceLock,
    time::Duration,
};

use cvm_core::{
    cmd::Cmd,
    error::is_bad_input,
    model::{load, LoadedModel, Tee},
};
use expect_test::expect_file;
use guest_image::launch;
use proptest::prelude::*;

/// The matrix: every model file under tests/data/launch/models, by stem.
const MATRIX: &[&str] = &[
    "snp-0gpu-direct",
    "snp-0gpu-disk",
    "snp-1gpu-direct",
    "snp-1gpu-disk",
    "snp-8gpu-direct",
    "snp-8gpu-disk",
    "tdx-0gpu-direct",
    "tdx-0gpu-disk",
    "tdx-1gpu-direct",
    "tdx-1gpu-disk",
    "tdx-8gpu-direct",
    "tdx-8gpu-disk",
];

/// The C-bit position the fake CPUID device reports for models that leave it to the host.
const FAKE_CPUID_CBITPOS: u32 = 51;

fn data() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/launch")
}

fn model(stem: &str) -> LoadedModel {
    load(Some(&data().join("models").join(format!("{stem}.toml")))).unwrap()
}

// ---------------------------------------------------------------------------------------------
// Snapshots.

/// Renders `stem` for a fixed, absent artifacts directory (so the domain XML's absolute paths are
/// stable) and compares both files with their snapshots (UPDATE_EXPECT=1 rewrites them).
#[track_caller]
fn check(stem: &str) {
    let model = model(stem);
    let dir = PathBuf::from("/srv/cvm").join(stem);
    let files = launch::render_files(&model, &dir, &dir).unwrap();
    let tee = model.model.deployment.tee;
    let names: Vec<_> = files.iter().map(|file| file.name.clone()).collect();
    assert_eq!(
        names,
        [format!("launch-{tee}.sh"), format!("domain-{tee}.xml")]
    );
    for file in files {
        expect_file![data().join("expect").join(stem).join(&file.name)].assert_eq(&file.contents);
    }
}

#[test]
fn snapshot_snp_0gpu_direct() {
    check("snp-0gpu-direct");
}

#[test]
fn snapshot_snp_0gpu_disk() {
    check("snp-0gpu-disk");
}

#[test]
fn snapshot_snp_1gpu_direct() {
    check("snp-1gpu-direct");
}

#[test]
fn snapshot_snp_1gpu_disk() {
    check("snp-1gpu-disk");
}

#[test]
fn snapshot_snp_8gpu_direct() {
    check("snp-8gpu-direct");
}

#[test]
fn snapshot_snp_8gpu_disk() {
    check("snp-8gpu-disk");
}

#[test]
fn snapshot_tdx_0gpu_direct() {
    check("tdx-0gpu-direct");
}

#[test]
fn snapshot_tdx_0gpu_disk() {
    check("tdx-0gpu-disk");
}

#[test]
fn snapshot_tdx_1gpu_direct() {
    check("tdx-1gpu-direct");
}

#[test]
fn snapshot_tdx_1gpu_disk() {
    check("tdx-1gpu-disk");
}

#[test]
fn snapshot_tdx_8gpu_direct() {
    check("tdx-8gpu-direct");
}

#[test]
fn snapshot_tdx_8gpu_disk() {
    check("tdx-8gpu-disk");
}

#[test]
fn every_model_file_is_in_the_matrix() {
    let mut stems: Vec<String> = std::fs::read_dir(data().join("models"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "toml"))
        .map(|path| path.file_stem().unwrap().to_string_lossy().into_owned())
        .collect();
    stems.sort();
    assert_eq!(stems, MATRIX);
    for stem in MATRIX {
        let model = model(stem).model;
        let gpus = model.launch.gpus.len();
        let (tee, count, boot) = {
            let mut parts = stem.split('-');
            (
                parts.next().unwrap(),
                parts.next().unwrap(),
                parts.next().unwrap(),
            )
        };
        assert_eq!(tee, model.deployment.tee.as_str(), "{stem}");
        assert_eq!(count, format!("{gpus}gpu"), "{stem}");
        assert_eq!(
            boot == "direct",
            model.launch.boot == cvm_core::model::BootMode::DirectUki
        );
    }
}

// ---------------------------------------------------------------------------------------------
// What the rendered script really runs.

/// A model rendered into a temporary artifacts directory with stand-in files, and what its
/// `--dry-run` printed.
struct DryRun {
    _dir: tempfile::TempDir,
    model: LoadedModel,
    /// The QEMU command, program first.
    argv: Vec<String>,
    /// The other lines of the dry run (the expected measurement).
    rest: String,
    /// The domain XML.
    xml: String,
    /// The script.
    script: String,
}

impl DryRun {
    /// The values following every occurrence of `flag`.
    fn values(&self, flag: &str) -> Vec<&str> {
        self.argv
            .windows(2)
            .filter(|pair| pair[0] == flag)
            .map(|pair| pair[1].as_str())
            .collect()
    }

    /// The one value of `flag`.
    #[track_caller]
    fn value(&self, flag: &str) -> &str {
        let values = self.values(flag);
        assert_eq!(values.len(), 1, "{flag} in {:?}", self.argv);
        values[0]
    }

    /// The `-object` whose type is `kind`, as a key=value map.
    fn object(&self, kind: &str) -> Option<BTreeMap<String, String>> {
        self.values("-object")
            .into_iter()
            .map(options)
            .find(|object| object.get("").is_some_and(|value| value == kind))
    }

    fn stem(&self) -> &str {
        &self.model.model.deployment.name
    }

    fn xml(&self) -> roxmltree::Document<'_> {
        roxmltree::Document::parse(&self.xml).unwrap()
    }
}

/// Splits a QEMU `type,key=value,…` list (`,,` is a literal comma); the leading bare word is stored
/// under the empty key.
fn options(text: &str) -> BTreeMap<String, String> {
    let mut items = Vec::new();
    let mut current = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == ',' {
            if chars.peek() == Some(&',') {
                chars.next();
                current.push(',');
            } else {
                items.push(std::mem::take(&mut current));
            }
        } else {
            current.push(c);
        }
    }
    items.push(current);
    items
        .into_iter()
        .map(|item| match item.split_once('=') {
            Some((key, value)) => (key.to_owned(), value.to_owned()),
            None => (String::new(), item),
        })
        .collect()
}

/// Writes a sparse stand-in for /dev/cpu/0/cpuid whose leaf 0x8000001F reports `ebx`.
fn fake_cpuid(path: &Path, ebx: u32) {
    let mut file = std::fs::File::create(path).unwrap();
    file.seek(SeekFrom::Start(0x8000_001F)).unwrap();
    for register in [0x1_u32, ebx, 0, 0] {
        file.write_all(&register.to_le_bytes()).unwrap();
    }
}

/// Runs `script --dry-run` and splits its first line (printed with `printf %q`) back into words.
fn run_dry(script: &Path, cpuid: &Path) -> anyhow::Result<(Vec<String>, String)> {
    let output = Cmd::new("bash")
        .arg(script)
        .arg("--dry-run")
        .env("CVM_CPUID_DEVICE", cpuid)
        .env("QEMU", "qemu-system-x86_64")
        .run()?;
    let stdout = String::from_utf8(output.stdout).unwrap();
    let (line, rest) = stdout.split_once('\n').unwrap();
    let words = Cmd::new("bash")
        .args([
            "-c",
            r#"eval "words=($1)"; printf '%s\0' "${words[@]}""#,
            "split",
            line,
        ])
        .run()?
        .stdout;
    let argv = String::from_utf8(words)
        .unwrap()
        .split_terminator('\0')
        .map(str::to_owned)
        .collect();
    Ok((argv, rest.to_owned()))
}

fn stand_in_artifacts(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    for name in [launch::UKI_FILE, launch::DISK_FILE, launch::FIRMWARE_FILE] {
        std::fs::write(dir.join(name), format!("stand-in {name}\n")).unwrap();
    }
}

fn dry_run(stem: &str) -> DryRun {
    let mut model = model(stem);
    let dir = tempfile::tempdir().unwrap();
    let artifacts = dir.path().join("artifacts");
    stand_in_artifacts(&artifacts);
    // The host firmware a model may name is pinned to the stand-in's sha256.
    if let Some(firmware) = &mut model.model.launch.firmware {
        let path = dir.path().join("host-firmware.fd");
        std::fs::write(&path, "host firmware\n").unwrap();
        firmware.sha256 = cvm_core::hash::sha256_file(&path).unwrap().0;
        firmware.path = path;
    }
    let written = launch::render(&model, &artifacts, &artifacts).unwrap();
    let cpuid = dir.path().join("cpuid");
    fake_cpuid(&cpuid, 0x0000_0100 | FAKE_CPUID_CBITPOS);
    let (argv, rest) = run_dry(&written[0], &cpuid).unwrap();
    DryRun {
        xml: std::fs::read_to_string(&written[1]).unwrap(),
        script: std::fs::read_to_string(&written[0]).unwrap(),
        _dir: dir,
        model,
        argv,
        rest,
    }
}

/// Every matrix model rendered and dry-run once, shared by the tests below.
fn matrix() -> &'static [DryRun] {
    static RUNS: OnceLock<Vec<DryRun>> = OnceLock::new();
    RUNS.get_or_init(|| MATRIX.iter().map(|stem| dry_run(stem)).collect())
}

fn tee(run: &DryRun) -> Tee {
    run.model.model.deployment.tee
}

// ---------------------------------------------------------------------------------------------
// One test per correction (reference corrections.md, points 1-9).

#[test]
fn correction_1_upstream_memory_backend() {
    for run in matrix() {
        assert!(
            !run.argv
                .iter()
                .any(|arg| arg.contains("memory-backend-memfd-private")),
            "{}",
            run.stem()
        );
        let machine = options(run.value("-machine"));
        assert_eq!(machine["memory-backend"], "ram1", "{}", run.stem());
        match tee(run) {
            Tee::Snp => {
                let backend = run.object("memory-backend-memfd").expect("memfd backend");
                assert_eq!(backend["id"], "ram1");
                assert_eq!(backend["share"], "true");
                assert_eq!(backend["prealloc"], "false");
            }
            Tee::Tdx => {
                let backend = run.object("memory-backend-ram").expect("ram backend");
                assert_eq!(backend["id"], "ram1");
            }
        }
    }
}

#[test]
fn correction_2_backend_size_equals_memory() {
    for run in matrix() {
        let kind = match tee(run) {
            Tee::Snp => "memory-backend-memfd",
            Tee::Tdx => "memory-backend-ram",
        };
        let backend = run.object(kind).unwrap();
        assert_eq!(backend["size"], run.value("-m"), "{}", run.stem());
        assert_eq!(
            run.value("-m"),
            format!("{}M", run.model.model.memory_mib()),
            "{}",
            run.stem()
        );
    }
}

#[test]
fn correction_3_one_stateless_firmware_image_by_bios() {
    for run in matrix() {
        let stem = run.stem();
        assert!(!run.argv.iter().any(|arg| arg.contains("pflash")), "{stem}");
        let bios = run.value("-bios");
        let expected = match &run.model.model.launch.firmware {
            Some(firmware) => firmware.path.clone(),
            None => run
                ._dir
                .path()
                .join("artifacts")
                .join(launch::FIRMWARE_FILE),
        };
        assert_eq!(Path::new(bios), expected, "{stem}");
        let direct = run.model.model.launch.boot == cvm_core::model::BootMode::DirectUki;
        assert_eq!(!run.values("-kernel").is_empty(), direct, "{stem}");
        assert!(run.values("-initrd").is_empty() && run.values("-append").is_empty());
        if tee(run) == Tee::Snp {
            let snp = run.object("sev-snp-guest").unwrap();
            assert_eq!(
                snp.get("kernel-hashes").map(String::as_str),
                direct.then_some("on")
            );
        }
        let xml = run.xml();
        let loader = xml
            .descendants()
            .find(|node| node.has_tag_name("loader"))
            .unwrap();
        assert_eq!(loader.attribute("type"), Some("rom"), "{stem}");
        assert_eq!(loader.attribute("stateless"), Some("yes"), "{stem}");
        assert_eq!(loader.attribute("readonly"), Some("yes"), "{stem}");
        assert_eq!(loader.text().map(Path::new), Some(expected.as_path()));
        assert!(!xml.descendants().any(|node| node.has_tag_name("nvram")));
        assert_eq!(
            xml.descendants().any(|node| node.has_tag_name("kernel")),
            direct,
            "{stem}"
        );
    }
}

#[test]
fn correction_4_kvm_accelerator() {
    for run in matrix() {
        assert_eq!(run.value("-accel"), "kvm", "{}", run.stem());
        assert_eq!(run.xml().root_element().attribute("type"), Some("kvm"));
    }
}

#[test]
fn correction_5_pinned_cpu_model_and_count() {
    for run in matrix() {
        let model = &run.model.model;
        assert_eq!(
            run.value("-smp"),
            model.launch.vcpus.to_string(),
            "{}",
            run.stem()
        );
        let cpu = options(run.value("-cpu"));
        let xml = run.xml();
        let cpu_node = xml
            .descendants()
            .find(|node| node.has_tag_name("cpu"))
            .unwrap();
        match tee(run) {
            Tee::Snp => {
                assert_eq!(cpu[""], model.vcpu_type().as_str(), "{}", run.stem());
                let pinned = cpu_node
                    .children()
                    .find(|node| node.has_tag_name("model"))
                    .and_then(|node| node.text());
                assert_eq!(pinned, Some(model.vcpu_type().as_str()));
            }
            Tee::Tdx => {
                assert_eq!(run.value("-cpu"), "host", "{}", run.stem());
                assert_eq!(cpu_node.attribute("mode"), Some("host-passthrough"));
            }
        }
        let vcpus = xml
            .descendants()
            .find(|node| node.has_tag_name("vcpu"))
            .unwrap();
        assert_eq!(vcpus.text(), Some(model.launch.vcpus.to_string().as_str()));
    }
}

#[test]
fn correction_6_explicit_policy_reduced_phys_bits_and_cbitpos() {
    let mut from_cpuid = 0;
    for run in matrix().iter().filter(|run| tee(run) == Tee::Snp) {
        let snp = run.model.model.snp();
        let object = run.object("sev-snp-guest").unwrap();
        assert_eq!(
            object["policy"],
            format!("{:#x}", snp.policy),
            "{}",
            run.stem()
        );
        assert_eq!(
            object["reduced-phys-bits"],
            snp.reduced_phys_bits.to_string()
        );
        let cbitpos = match snp.cbitpos {
            Some(bit) => u32::from(bit),
            None => {
                from_cpuid += 1;
                assert!(run.script.contains("0x8000001F"), "{}", run.stem());
                FAKE_CPUID_CBITPOS
            }
        };
        assert_eq!(object["cbitpos"], cbitpos.to_string(), "{}", run.stem());
        let xml = run.xml();
        let policy = xml
            .descendants()
            .find(|node| node.has_tag_name("policy"))
            .unwrap();
        assert_eq!(
            u64::from_str_radix(policy.text().unwrap().trim_start_matches("0x"), 16).unwrap(),
            snp.policy
        );
    }
    assert!(
        from_cpuid > 0,
        "the matrix has no model that reads cbitpos from CPUID"
    );
}

#[test]
fn correction_6_unreadable_cpuid_fails_clearly() {
    let model = model("snp-0gpu-direct");
    assert_eq!(model.model.snp().cbitpos, None);
    let dir = tempfile::tempdir().unwrap();
    stand_in_artifacts(dir.path());
    let written = launch::render(&model, dir.path(), dir.path()).unwrap();
    let err = run_dry(&written[0], &dir.path().join("no-such-cpuid")).unwrap_err();
    let message = format!("{err:#}");
    assert!(
        message.contains("cannot read CPUID 0x8000001F"),
        "{message}"
    );
    assert!(message.contains("launch.snp.cbitpos"), "{message}");
}

#[test]
fn correction_7_tdx_guest_object_and_split_irqchip() {
    for run in matrix().iter().filter(|run| tee(run) == Tee::Tdx) {
        let tdx = run.model.model.tdx();
        let machine = options(run.value("-machine"));
        assert_eq!(machine["kernel-irqchip"], "split", "{}", run.stem());
        assert_eq!(machine["confidential-guest-support"], "tdx0");
        let object: serde_json::Value = run
            .values("-object")
            .into_iter()
            .find(|value| value.starts_with('{'))
            .map(|value| serde_json::from_str(value).unwrap())
            .expect("a JSON -object");
        assert_eq!(object["qom-type"], "tdx-guest");
        assert_eq!(object["id"], "tdx0");
        assert_eq!(
            object["quote-generation-socket"],
            serde_json::json!({"type": "vsock", "cid": "2", "port": tdx.quote_generation_port.to_string()})
        );
        assert_eq!(object["sept-ve-disable"], tdx.attributes & (1 << 28) != 0);
        let attributes = object["attributes"].as_u64().unwrap_or(1 << 28);
        assert_eq!(attributes, tdx.attributes, "{}", run.stem());
        let xml = run.xml();
        let security = xml
            .descendants()
            .find(|node| node.has_tag_name("launchSecurity"))
            .unwrap();
        assert_eq!(security.attribute("type"), Some("tdx"));
        assert!(xml
            .descendants()
            .any(|node| node.has_tag_name("ioapic") && node.attribute("driver") == Some("qemu")));
    }
}

#[test]
fn correction_8_root_port_per_device_and_mmio_window() {
    for run in matrix() {
        let stem = run.stem();
        let model = &run.model.model;
        let mut addresses: Vec<String> = model
            .launch
            .gpus
            .iter()
            .map(|gpu| gpu.address.clone())
            .collect();
        addresses.extend(model.launch.nvswitches.iter().cloned());
        let devices: Vec<BTreeMap<String, String>> =
            run.values("-device").into_iter().map(options).collect();
        let ports: Vec<&BTreeMap<String, String>> = devices
            .iter()
            .filter(|device| device[""] == "pcie-root-port")
            .collect();
        let vfio: Vec<&BTreeMap<String, String>> = devices
            .iter()
            .filter(|device| device[""] == "vfio-pci")
            .collect();
        assert_eq!(vfio.len(), addresses.len(), "{stem}");
        assert_eq!(ports.len(), addresses.len(), "{stem}");
        let mut buses = std::collections::BTreeSet::new();
        for (device, address) in vfio.iter().zip(&addresses) {
            assert_eq!(&device["host"], address, "{stem}");
            let port = ports
                .iter()
                .find(|port| port["id"] == device["bus"])
                .expect("its root port");
            assert_eq!(port["bus"], "pcie.0");
            assert!(
                buses.insert(device["bus"].clone()),
                "{stem}: a root port is shared"
            );
        }
        let fw_cfg: Vec<BTreeMap<String, String>> =
            run.values("-fw_cfg").into_iter().map(options).collect();
        let xml = run.xml();
        let entry = xml
            .descendants()
            .find(|node| node.has_tag_name("entry"))
            .filter(|node| node.attribute("name") == Some(launch::MMIO64_FW_CFG));
        if model.launch.gpus.is_empty() {
            assert!(fw_cfg.is_empty(), "{stem}");
            assert!(entry.is_none(), "{stem}");
        } else {
            assert_eq!(fw_cfg.len(), 1, "{stem}");
            assert_eq!(fw_cfg[0]["name"], launch::MMIO64_FW_CFG);
            let mib: u64 = fw_cfg[0]["string"].parse().unwrap();
            assert!(
                mib >= launch::MMIO64_MIB_PER_GPU * model.launch.gpus.len() as u64,
                "{stem}"
            );
            assert_eq!(
                entry.and_then(|node| node.text()),
                Some(mib.to_string().as_str())
            );
        }
        let hostdevs = xml
            .descendants()
            .filter(|node| node.has_tag_name("hostdev"))
            .count();
        let root_ports = xml
            .descendants()
            .filter(|node| node.attribute("model") == Some("pcie-root-port"))
            .count();
        assert_eq!(
            (hostdevs, root_ports),
            (addresses.len(), addresses.len()),
            "{stem}"
        );
    }
}

#[test]
fn correction_9_no_reboot() {
    for run in matrix() {
        assert!(
            run.argv.iter().any(|arg| arg == "-no-reboot"),
            "{}",
            run.stem()
        );
        let xml = run.xml();
        let on_reboot = xml
            .descendants()
            .find(|node| node.has_tag_name("on_reboot"))
            .unwrap();
        assert_eq!(on_reboot.text(), Some("destroy"));
    }
}

// ---------------------------------------------------------------------------------------------
// The rest of the contract.

#[test]
fn network_is_exactly_what_the_model_asks_for() {
    for run in matrix() {
        let network = &run.model.model.launch.network;
        let netdevs = run.values("-netdev");
        let nics = run.values("-nic");
        match network.mode {
            cvm_core::model::NetworkMode::None => {
                assert!(netdevs.is_empty());
                assert_eq!(nics, ["none"]);
            }
            cvm_core::model::NetworkMode::User => {
                assert_eq!(
                    netdevs,
                    [format!(
                        "user,id=net0,hostfwd=tcp::{}-:{}",
                        network.host_port.unwrap(),
                        network.guest_port
                    )]
                );
            }
            cvm_core::model::NetworkMode::Bridge => {
                assert_eq!(
                    netdevs,
                    [format!(
                        "bridge,id=net0,br={}",
                        network.bridge.as_ref().unwrap()
                    )]
                );
            }
        }
    }
}

#[test]
fn dry_run_says_why_the_measurement_is_unknown() {
    // The matrix has no measurements.json: the dry run says so and how to get one.
    for run in matrix() {
        let label = match tee(run) {
            Tee::Snp => "SEV-SNP launch measurement",
            Tee::Tdx => "TDX MRTD",
        };
        assert_eq!(
            run.rest,
            format!("expected {label}: unknown (there was no measurements.json when this script was rendered; run cargo xtask measure, then cargo xtask launch render)\n"),
            "{}",
            run.stem()
        );
    }
}

#[test]
fn serial_console_goes_beside_the_script_unless_the_model_names_a_path() {
    for run in matrix() {
        let chardev = options(run.value("-chardev"));
        let path = PathBuf::from(&chardev["path"]);
        let expected = match &run.model.model.launch.serial_log {
            None => run
                ._dir
                .path()
                .join("artifacts")
                .join(launch::SERIAL_LOG_FILE),
            Some(named) if Path::new(named).is_absolute() => PathBuf::from(named),
            Some(named) => run._dir.path().join("artifacts").join(named),
        };
        assert_eq!(path, expected, "{}", run.stem());
        assert_eq!(run.value("-serial"), "chardev:serial0");
    }
}

#[test]
fn moved_script_uses_its_new_directory() {
    let model = model("snp-1gpu-direct");
    let dir = tempfile::tempdir().unwrap();
    let (artifacts, out) = (dir.path().join("build/art"), dir.path().join("scripts"));
    stand_in_artifacts(&artifacts);
    let written = launch::render(&model, &artifacts, &out).unwrap();
    let script = std::fs::read_to_string(&written[0]).unwrap();
    assert!(
        script.contains("artifacts_relative=../build/art\n"),
        "{script}"
    );
    // Move both directories together under a name with a space and a comma.
    let moved = dir.path().join("moved here, now");
    std::fs::create_dir(&moved).unwrap();
    std::fs::rename(dir.path().join("build"), moved.join("build")).unwrap();
    std::fs::rename(&out, moved.join("scripts")).unwrap();
    let (argv, _) = run_dry(
        &moved.join("scripts/launch-snp.sh"),
        Path::new("/nonexistent"),
    )
    .unwrap();
    let kernel = argv.windows(2).find(|pair| pair[0] == "-kernel").unwrap()[1].clone();
    assert_eq!(
        Path::new(&kernel),
        moved.join("build/art/uki.efi").canonicalize().unwrap()
    );
    let drive = argv.windows(2).find(|pair| pair[0] == "-drive").unwrap()[1].clone();
    assert_eq!(
        options(&drive)["file"],
        moved
            .join("build/art/disk.qcow2")
            .canonicalize()
            .unwrap()
            .to_string_lossy()
    );
}

#[test]
fn render_writes_both_files_atomically_with_their_modes() {
    use std::os::unix::fs::PermissionsExt;
    let model = model("tdx-1gpu-direct");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("new/out");
    let written = launch::render(&model, &dir.path().join("absent"), &out).unwrap();
    assert_eq!(
        written,
        [out.join("launch-tdx.sh"), out.join("domain-tdx.xml")]
    );
    let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode(&written[0]), 0o755);
    assert_eq!(mode(&written[1]), 0o644);
    let mut names: Vec<_> = std::fs::read_dir(&out)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["domain-tdx.xml", "launch-tdx.sh"],
        "no temporary file is left"
    );
}

#[test]
fn manifest_hashes_and_measurement_are_embedded() {
    let model = model("snp-1gpu-direct");
    let dir = tempfile::tempdir().unwrap();
    let artifacts = dir.path().join("artifacts");
    std::fs::create_dir(&artifacts).unwrap();
    for entry in std::fs::read_dir(data().join("artifacts-snp")).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, artifacts.join(path.file_name().unwrap())).unwrap();
    }
    let written = launch::render(&model, &artifacts, &artifacts).unwrap();
    let script = std::fs::read_to_string(&written[0]).unwrap();
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(artifacts.join("manifest.json")).unwrap())
            .unwrap();
    for name in ["firmware.fd", "uki.efi", "disk.qcow2"] {
        let sha = manifest["artifacts"][name]["sha256"].as_str().unwrap();
        assert!(
            script.contains(&format!("verify {name} ")) && script.contains(sha),
            "{name}"
        );
    }
    let (_, rest) = run_dry(&written[0], Path::new("/nonexistent")).unwrap();
    assert_eq!(
        rest,
        format!("expected SEV-SNP launch measurement: {}\n", "a1".repeat(48))
    );
    // A changed artifact is refused before anything starts.
    std::fs::write(artifacts.join("uki.efi"), "tampered\n").unwrap();
    let message = format!(
        "{:#}",
        run_dry(&written[0], Path::new("/nonexistent")).unwrap_err()
    );
    assert!(
        message.contains("uki.efi at ") && message.contains("was recorded"),
        "{message}"
    );
}

#[test]
fn tdx_measurement_lines_come_from_measurements_json() {
    let model = model("tdx-1gpu-direct");
    let dir = tempfile::tempdir().unwrap();
    let artifacts = dir.path().join("artifacts");
    std::fs::create_dir(&artifacts).unwrap();
    for entry in std::fs::read_dir(data().join("artifacts-tdx")).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, artifacts.join(path.file_name().unwrap())).unwrap();
    }
    let written = launch::render(&model, &artifacts, &artifacts).unwrap();
    let (_, rest) = run_dry(&written[0], Path::new("/nonexistent")).unwrap();
    assert_eq!(
        rest,
        format!(
            "expected TDX MRTD: {}\nexpected TDX RTMR1: {}\n",
            "b2".repeat(48),
            "c3".repeat(48)
        )
    );
}

#[test]
fn stale_measurements_are_bad_input() {
    // The fixture was measured for 16 vCPUs of EPYC-Genoa; this model has 4 of EPYC-v4.
    let model = model("snp-0gpu-direct");
    let err = launch::render_files(
        &model,
        &data().join("artifacts-snp"),
        Path::new("/srv/cvm/x"),
    )
    .unwrap_err();
    assert!(is_bad_input(&err));
    let message = err.to_string();
    assert!(
        message.contains("snp.inputs.vcpus is 16 but launch.vcpus is 4"),
        "{message}"
    );
    assert!(
        message.contains("run cargo xtask measure again"),
        "{message}"
    );
    assert!(!message.contains('\n'));
}

#[test]
fn files_missing_at_render_time_fail_clearly_at_launch() {
    let model = model("snp-1gpu-direct");
    let dir = tempfile::tempdir().unwrap();
    let written = launch::render(&model, dir.path(), dir.path()).unwrap();
    stand_in_artifacts(dir.path());
    let message = format!(
        "{:#}",
        run_dry(&written[0], Path::new("/nonexistent")).unwrap_err()
    );
    assert!(
        message.contains(
            "firmware.fd was missing from the artifacts directory when this script was rendered"
        ),
        "{message}"
    );
}

/// Writes a stand-in QEMU that lists `objects` and `cpus` and fails on anything else.
fn stub_qemu(dir: &Path, objects: &[&str], cpus: &[&str]) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join("stub-qemu");
    let list = |items: &[&str]| {
        items
            .iter()
            .map(|item| format!("  {item}\n"))
            .collect::<String>()
    };
    let script = format!(
        "#!/bin/sh\ncase \"$1 $2\" in\n'-object help') printf 'Available object backend types:\\n{}' ;;\n'-cpu help') printf 'Available CPUs:\\n{}' ;;\n*) echo \"stub QEMU started: $*\" >&2; exit 3 ;;\nesac\n",
        list(objects).replace('\n', "\\n"),
        list(cpus).replace('\n', "\\n"),
    );
    std::fs::write(&path, script).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// Renders `model` with stand-in artifacts and runs the real launch with `qemu`; returns the error.
fn launch_error(model: &LoadedModel, qemu: &Path) -> String {
    let dir = tempfile::tempdir().unwrap();
    stand_in_artifacts(dir.path());
    let written = launch::render(model, dir.path(), dir.path()).unwrap();
    let err = Cmd::new("bash")
        .arg(&written[0])
        .env("QEMU", qemu)
        .run()
        .unwrap_err();
    format!("{err:#}")
}

#[test]
fn qemu_without_what_the_guest_needs_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let old = stub_qemu(
        dir.path(),
        &["memory-backend-ram", "sev-guest"],
        &["EPYC-v4"],
    );
    let message = launch_error(&model("snp-0gpu-disk"), &old);
    assert!(
        message.contains("has no sev-snp-guest object; SEV-SNP needs QEMU 9.1 or later"),
        "{message}"
    );
    let message = launch_error(&model("tdx-0gpu-disk"), &old);
    assert!(message.contains("has no tdx-guest object"), "{message}");
    // QEMU 10.0 has sev-snp-guest but no EPYC-Turin.
    let mut turin = model("snp-0gpu-disk");
    turin.model.launch.vcpu_type = Some(cvm_core::model::VcpuType::EpycTurin);
    let qemu_10_0 = stub_qemu(
        dir.path(),
        &["sev-snp-guest"],
        &["EPYC-Genoa", "EPYC-Genoa-v1"],
    );
    let message = launch_error(&turin, &qemu_10_0);
    assert!(
        message.contains("has no vCPU model EPYC-Turin"),
        "{message}"
    );
}

#[test]
fn host_without_the_tee_is_refused() {
    // This test host has neither SEV-SNP nor TDX: the real launch must refuse before QEMU runs.
    if Path::new("/dev/sev").exists() || Path::new("/sys/module/kvm_intel/parameters/tdx").exists()
    {
        cvm_core::skip::skip("host_without_the_tee_is_refused", "this host has a TEE");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let qemu = stub_qemu(
        dir.path(),
        &["sev-snp-guest", "tdx-guest"],
        &["EPYC-Milan", "host"],
    );
    for (stem, expected) in [
        ("snp-0gpu-disk", "/dev/sev"),
        ("tdx-0gpu-disk", "kvm_intel/parameters/tdx"),
    ] {
        let message = launch_error(&model(stem), &qemu);
        assert!(
            message.contains(expected) && message.contains("cargo xtask host check"),
            "{message}"
        );
        assert!(!message.contains("stub QEMU started"), "{message}");
    }
}

/// The VFIO backend the dry run of `stem` chooses with `qemu` and an iommu device that exists or
/// not: (the `-object` values, the `iommufd=` of every vfio-pci device).
fn vfio_backend(stem: &str, qemu: &Path, iommu_exists: bool) -> (Vec<String>, Vec<Option<String>>) {
    let dir = tempfile::tempdir().unwrap();
    stand_in_artifacts(dir.path());
    let written = launch::render(&model(stem), dir.path(), dir.path()).unwrap();
    let cpuid = dir.path().join("cpuid");
    fake_cpuid(&cpuid, 0x0000_0100 | FAKE_CPUID_CBITPOS);
    let iommu = dir.path().join("iommu");
    if iommu_exists {
        std::fs::write(&iommu, "").unwrap();
    }
    let stdout = Cmd::new("bash")
        .arg(&written[0])
        .arg("--dry-run")
        .env("CVM_CPUID_DEVICE", &cpuid)
        .env("CVM_IOMMU_DEVICE", &iommu)
        .env("QEMU", qemu)
        .run()
        .unwrap()
        .stdout;
    let line = String::from_utf8(stdout).unwrap();
    let words: Vec<&str> = line.lines().next().unwrap().split(' ').collect();
    let after = |flag: &str| -> Vec<String> {
        words
            .windows(2)
            .filter(|pair| pair[0] == flag)
            .map(|pair| pair[1].to_owned())
            .collect()
    };
    let iommufd = after("-device")
        .into_iter()
        .filter(|device| device.starts_with("vfio-pci,"))
        .map(|device| options(&device).get("iommufd").cloned())
        .collect();
    let objects = after("-object")
        .into_iter()
        .filter(|object| object.starts_with("iommufd"))
        .collect();
    (objects, iommufd)
}

#[test]
fn vfio_uses_iommufd_only_where_qemu_and_the_kernel_have_it() {
    let dir = tempfile::tempdir().unwrap();
    let with = stub_qemu(
        dir.path(),
        &["iommufd", "sev-snp-guest", "tdx-guest"],
        &["EPYC-v4"],
    );
    let without_dir = tempfile::tempdir().unwrap();
    let without = stub_qemu(
        without_dir.path(),
        &["sev-snp-guest", "tdx-guest"],
        &["EPYC-v4"],
    );
    for stem in [
        "snp-1gpu-direct",
        "snp-8gpu-disk",
        "tdx-1gpu-disk",
        "tdx-8gpu-direct",
    ] {
        let gpus = model(stem).model.launch.gpus.len() + model(stem).model.launch.nvswitches.len();
        let (objects, iommufd) = vfio_backend(stem, &with, true);
        assert_eq!(objects, ["iommufd,id=iommufd0"], "{stem}");
        assert_eq!(iommufd, vec![Some("iommufd0".to_owned()); gpus], "{stem}");
        for (qemu, iommu) in [(&with, false), (&without, true)] {
            let (objects, iommufd) = vfio_backend(stem, qemu, iommu);
            assert!(objects.is_empty(), "{stem}: {objects:?}");
            assert_eq!(iommufd, vec![None; gpus], "{stem}");
        }
    }
}

#[test]
fn emulated_args_share_the_wiring_without_confidential_objects() {
    for stem in MATRIX {
        let model = model(stem);
        let paths = launch::LaunchPaths {
            firmware: Path::new("/a/firmware.fd"),
            uki: Path::new("/a/uki.efi"),
            disk: Path::new("/a/b,c/disk.qcow2"),
            serial_log: Path::new("/a/serial.log"),
        };
        let argv: Vec<String> = launch::emulated_args(&model, &paths, launch::EmulatedAccel::Tcg)
            .unwrap()
            .into_iter()
            .map(|arg| arg.into_string().unwrap())
            .collect();
        let joined = argv.join(" ");
        for absent in [
            "sev-snp-guest",
            "tdx-guest",
            "confidential-guest-support",
            "vfio-pci",
            "memory-backend",
        ] {
            assert!(!joined.contains(absent), "{stem}: {absent} in {joined}");
        }
        let pair = |flag: &str| {
            argv.windows(2)
                .find(|pair| pair[0] == flag)
                .map(|pair| pair[1].clone())
        };
        assert_eq!(pair("-accel").as_deref(), Some("tcg"));
        assert_eq!(pair("-bios").as_deref(), Some("/a/firmware.fd"));
        assert_eq!(
            pair("-drive").as_deref(),
            Some("file=/a/b,,c/disk.qcow2,if=none,id=disk0,format=qcow2,readonly=on")
        );
        let direct = model.model.launch.boot == cvm_core::model::BootMode::DirectUki;
        assert_eq!(
            pair("-kernel").as_deref(),
            direct.then_some("/a/uki.efi"),
            "{stem}"
        );
        assert!(argv.iter().any(|arg| arg == "-no-reboot"));
    }
}

// ---------------------------------------------------------------------------------------------
// Hostile values: paths from the model and the command line.

/// Characters that break naive shell or XML rendering.
const HOSTILE: &str = "[a-z0-9 ,'\"$`\\\\;&|<>*?(){}!#~=:\\n-]{1,12}";

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn hostile_paths_render_safely_or_are_refused(
        dir_name in HOSTILE,
        serial in HOSTILE,
        serial_absolute in any::<bool>(),
        firmware_name in HOSTILE,
        snp in any::<bool>(),
    ) {
        let mut model = model(if snp { "snp-1gpu-direct" } else { "tdx-1gpu-disk" });
        let dir = tempfile::tempdir().unwrap();
        let artifacts = dir.path().join(&dir_name);
        let hostile_input = [&dir_name, &serial, &firmware_name].iter().any(|text| text.contains('\n'));
        let serial_log = if serial_absolute {
            dir.path().join("logs").join(&serial).to_string_lossy().into_owned()
        } else {
            serial.clone()
        };
        model.model.launch.serial_log = Some(serial_log.clone());
        if model.model.validate().is_err() {
            // The model refuses control characters in the serial log path; nothing to render.
            prop_assert!(serial.contains('\n'));
            return Ok(());
        }
        let firmware_dir = dir.path().join("firmware");
        std::fs::create_dir_all(&firmware_dir).unwrap();
        let firmware = firmware_dir.join(&firmware_name);
        std::fs::write(&firmware, "firmware\n").unwrap();
        model.model.launch.firmware = Some(cvm_core::model::Firmware {
            path: firmware.clone(),
            sha256: cvm_core::hash::sha256_file(&firmware).unwrap().0,
        });
        std::fs::create_dir_all(&artifacts).unwrap();
        stand_in_artifacts(&artifacts);
        let written = match launch::render(&model, &artifacts, &artifacts) {
            Ok(written) => written,
            Err(err) => {
                prop_assert!(hostile_input, "refused a value without a control character: {err:#}");
                prop_assert!(is_bad_input(&err));
                let text = format!("{err:#}");
                prop_assert!(!text.contains('\n'), "{}", text);
                return Ok(());
            }
        };
        prop_assert!(!hostile_input, "rendered a path with a newline");
        Cmd::new("bash").arg("-n").arg(&written[0]).run().unwrap();
        let xml = std::fs::read_to_string(&written[1]).unwrap();
        let document = roxmltree::Document::parse(&xml).unwrap();
        let loader = document.descendants().find(|node| node.has_tag_name("loader")).unwrap();
        prop_assert_eq!(loader.text().map(PathBuf::from), Some(firmware.clone()));
        let serial_source = document
            .descendants()
            .find(|node| node.has_tag_name("source") && node.attribute("path").is_some())
            .and_then(|node| node.attribute("path"))
            .unwrap();
        let expected_serial = if serial_absolute {
            PathBuf::from(&serial_log)
        } else {
            artifacts.join(&serial)
        };
        prop_assert_eq!(PathBuf::from(serial_source), expected_serial.clone());
        // The script passes QEMU exactly these paths, whatever they contain.
        let (argv, _) = run_dry(&written[0], Path::new("/nonexistent")).unwrap();
        let value = |flag: &str| argv.windows(2).find(|pair| pair[0] == flag).map(|pair| pair[1].clone());
        prop_assert_eq!(value("-bios").map(PathBuf::from), Some(firmware));
        let chardev = options(&value("-chardev").unwrap());
        let real_artifacts = artifacts.canonicalize().unwrap();
        let expected_serial = if serial_absolute { expected_serial } else { real_artifacts.join(&serial) };
        prop_assert_eq!(PathBuf::from(&chardev["path"]), expected_serial);
        let drive = options(&value("-drive").unwrap());
        prop_assert_eq!(PathBuf::from(&drive["file"]), real_artifacts.join(launch::DISK_FILE));
    }
}

// ---------------------------------------------------------------------------------------------
// Slow suite: the real tools.

/// Renders every matrix model into its own directory under `root`; returns (stem, files).
fn render_matrix(root: &Path) -> Vec<(String, Vec<PathBuf>)> {
    MATRIX
        .iter()
        .map(|stem| {
            let dir = root.join(stem);
            (
                stem.to_string(),
                launch::render(&model(stem), &dir, &dir).unwrap(),
            )
        })
        .collect()
}

#[test]
fn shellcheck_accepts_every_rendered_script() {
    const NAME: &str = "shellcheck_accepts_every_rendered_script";
    if !cvm_core::skip::require_slow(NAME) {
        return;
    }
    let Some(shellcheck) = cvm_core::deps::find_tool("shellcheck") else {
        cvm_core::skip::skip(
            NAME,
            "shellcheck is not installed (cargo xtask ci installs it)",
        );
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut rendered = render_matrix(dir.path());
    // A script rendered away from its artifacts takes another path through the template.
    let apart = launch::render(
        &model("snp-1gpu-direct"),
        &dir.path().join("apart/artifacts"),
        &dir.path().join("apart/scripts"),
    )
    .unwrap();
    rendered.push(("snp-1gpu-direct (apart)".to_owned(), apart));
    for (stem, files) in rendered {
        let result = Cmd::new(&shellcheck)
            .args(["--shell=bash", "--severity=style", "--external-sources"])
            .arg(&files[0])
            .run();
        assert!(result.is_ok(), "{stem}: {:#}", result.unwrap_err());
    }
}

/// A libvirt schema directory whose `<launchSecurity>` knows `kind` (`sev-snp` or `tdx`): the
/// installed one, else one unpacked from a newer Debian package into target/.
fn libvirt_schemas(kind: &str) -> Result<PathBuf, String> {
    let knows = |dir: &Path| {
        std::fs::read_to_string(dir.join("domaincommon.rng"))
            .is_ok_and(|rng| rng.contains(&format!("<value>{kind}</value>")))
    };
    let installed = PathBuf::from("/usr/share/libvirt/schemas");
    if knows(&installed) {
        return Ok(installed);
    }
    let cache = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/launch-libvirt-schemas");
    let mut tried = Vec::new();
    for suite in ["bookworm-backports", "trixie"] {
        // libvirt 11 keeps the schemas in libvirt-common, older releases in libvirt0.
        for package in ["libvirt-common", "libvirt0"] {
            let dir = cache.join(format!("{suite}-{package}"));
            let schemas = dir.join("root/usr/share/libvirt/schemas");
            if knows(&schemas) {
                return Ok(schemas);
            }
            std::fs::create_dir_all(&dir).unwrap();
            let download = Cmd::new("apt-get")
                .args(["download", &format!("{package}/{suite}")])
                .current_dir(&dir)
                .timeout(Duration::from_secs(120))
                .run();
            let deb = std::fs::read_dir(&dir)
                .unwrap()
                .map(|entry| entry.unwrap().path())
                .find(|path| path.extension().is_some_and(|ext| ext == "deb"));
            match (download, deb) {
                (Ok(_), Some(deb)) => {
                    Cmd::new("dpkg-deb")
                        .arg("-x")
                        .arg(&deb)
                        .arg(dir.join("root"))
                        .run()
                        .unwrap();
                    if knows(&schemas) {
                        return Ok(schemas);
                    }
                    tried.push(format!("{package}/{suite} (no {kind})"));
                }
                (Err(err), _) => tried.push(format!(
                    "{package}/{suite} ({})",
                    format!("{err:#}").lines().last().unwrap_or("")
                )),
                (Ok(_), None) => tried.push(format!("{package}/{suite} (no .deb)")),
            }
        }
    }
    Err(format!(
        "no libvirt schema with launchSecurity type '{kind}' here: the installed one lacks it, and so do {}",
        tried.join(", ")
    ))
}

#[test]
fn libvirt_schema_accepts_every_domain() {
    const NAME: &str = "libvirt_schema_accepts_every_domain";
    if !cvm_core::skip::require_slow(NAME) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let rendered = render_matrix(dir.path());
    let mut validated = 0;
    for (tee, kind) in [("snp", "sev-snp"), ("tdx", "tdx")] {
        let schemas = match libvirt_schemas(kind) {
            Ok(schemas) => schemas,
            Err(reason) => {
                cvm_core::skip::skip(&format!("{NAME} ({tee})"), &reason);
                continue;
            }
        };
        for (stem, files) in rendered.iter().filter(|(stem, _)| stem.starts_with(tee)) {
            let virt_xml_validate = cvm_core::deps::find_tool("virt-xml-validate");
            let result = if let (true, Some(tool)) = (
                schemas == Path::new("/usr/share/libvirt/schemas"),
                &virt_xml_validate,
            ) {
                Cmd::new(tool).arg(&files[1]).arg("domain").run()
            } else {
                // virt-xml-validate reads only the installed schemas; xmllint applies the same
                // RELAX NG grammar from the unpacked package.
                let Some(xmllint) = cvm_core::deps::find_tool("xmllint") else {
                    cvm_core::skip::skip(
                        NAME,
                        "xmllint is not installed (cargo xtask ci installs it)",
                    );
                    return;
                };
                Cmd::new(xmllint)
                    .args(["--noout", "--relaxng"])
                    .arg(schemas.join("domain.rng"))
                    .arg(&files[1])
                    .run()
            };
            assert!(result.is_ok(), "{stem}: {:#}", result.unwrap_err());
            validated += 1;
        }
    }
    eprintln!("{NAME}: {validated} domain files validated");
}

#[test]
fn qemu_accepts_our_snp_arguments() {
    const NAME: &str = "qemu_accepts_our_snp_arguments";
    if !cvm_core::skip::require_slow(NAME) {
        return;
    }
    let Some(qemu) = cvm_core::deps::find_tool("qemu-system-x86_64") else {
        cvm_core::skip::skip(
            NAME,
            "qemu-system-x86_64 is not installed (cargo xtask ci installs it)",
        );
        return;
    };
    let version = Cmd::new(&qemu).arg("--version").read().unwrap();
    let parsed = version
        .split_whitespace()
        .nth(3)
        .and_then(cvm_core::model::parse_version)
        .unwrap();
    if parsed < (9, 1, 0) {
        cvm_core::skip::skip(
            NAME,
            &format!("{version:?} predates sev-snp-guest (QEMU 9.1)"),
        );
        return;
    }
    let help = Cmd::new(&qemu)
        .args(["-object", "sev-snp-guest,help"])
        .read()
        .unwrap();
    let listed: Vec<&str> = help
        .lines()
        .filter_map(|line| line.trim().split('=').next())
        .collect();
    let firmware = tempfile::NamedTempFile::new().unwrap();
    firmware.as_file().set_len(4 << 20).unwrap();
    let snp_runs: Vec<&DryRun> = matrix().iter().filter(|run| tee(run) == Tee::Snp).collect();
    for run in snp_runs {
        let object = run.object("sev-snp-guest").unwrap();
        for property in object.keys().filter(|key| !key.is_empty() && *key != "id") {
            // cbitpos and reduced-phys-bits belong to the common SEV class, which help omits;
            // the dry start below proves QEMU accepts them.
            if property != "cbitpos" && property != "reduced-phys-bits" {
                assert!(
                    listed.contains(&property.as_str()),
                    "{property} not in:\n{help}"
                );
            }
        }
        // The rendered machine, memory, TEE object and firmware flags, and nothing else.
        let mut args: Vec<String> = Vec::new();
        for flag in ["-cpu", "-smp", "-m", "-machine"] {
            args.extend([flag.to_owned(), run.value(flag).to_owned()]);
        }
        for object in run.values("-object") {
            args.extend(["-object".to_owned(), object.to_owned()]);
        }
        args.extend([
            "-bios".to_owned(),
            firmware.path().to_string_lossy().into_owned(),
        ]);
        args.extend(["-nodefaults", "-display", "none"].map(str::to_owned));
        for accel in ["kvm", "tcg"] {
            let output = Cmd::new(&qemu)
                .args(["-accel", accel])
                .args(&args)
                .timeout(Duration::from_secs(60))
                .output()
                .unwrap();
            let stderr = String::from_utf8_lossy(&output.stderr);
            let errors: Vec<&str> = stderr
                .lines()
                .filter(|line| !line.contains("warning:"))
                .collect();
            assert!(
                !output.status.success(),
                "{}: QEMU started with -accel {accel}",
                run.stem()
            );
            let platform = [
                "KVM required",
                "not supported by KVM",
                "Could not access KVM kernel module",
                "failed to initialize kvm",
                "/dev/sev",
            ];
            let ours = [
                "Invalid parameter",
                "Parameter '",
                "Property '",
                "does not match",
                "is missing",
                "does not accept",
            ];
            let text = errors.join("\n");
            assert!(
                platform.iter().any(|pattern| text.contains(pattern))
                    && !ours.iter().any(|pattern| text.contains(pattern)),
                "{} (-accel {accel}): QEMU failed for another reason than the platform:\n{text}\nargs: {args:?}",
                run.stem()
            );
            eprintln!("{NAME}: {} -accel {accel}: {}", run.stem(), text.trim());
        }
    }
}
