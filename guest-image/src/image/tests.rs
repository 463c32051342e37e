//! Unit tests of the image pipeline's pure parts, driven by the fixtures in
//! guest-image/tests/data/image/ (see its README).

use std::path::{Path, PathBuf};

use expect_test::expect_file;

use super::*;

fn data(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/image")
        .join(relative)
}

fn read(relative: &str) -> String {
    fs::read_to_string(data(relative)).expect("fixture exists")
}

#[test]
fn lock_is_resolved_from_dpkg_status_and_signed_indexes() {
    let installed = lock::parse_dpkg_status(&read("lock/status"));
    let indexes = lock::read_indexes(&data("lock"), "noble").unwrap();
    let ovmf = indexes
        .keys()
        .filter(|(name, _, _)| name == "ovmf")
        .max()
        .cloned()
        .unwrap();
    let resolved = lock::resolve("noble", &installed, &[ovmf], &indexes).unwrap();
    expect_file!["../../tests/data/image/lock/expected.lock"].assert_eq(&resolved.to_text());
    // The text parses back to the same lock, and it names no mirror.
    let again = PackagesLock::parse(&resolved.to_text(), Path::new("packages.lock")).unwrap();
    assert_eq!(again, resolved);
    assert!(!resolved.to_text().contains("mirror.invalid"));
}

#[test]
fn a_package_missing_from_every_index_is_an_error() {
    let indexes = lock::read_indexes(&data("lock"), "noble").unwrap();
    let ghost = ("ghost".to_owned(), "1.0".to_owned(), "amd64".to_owned());
    let err = lock::resolve("noble", &[ghost], &[], &indexes).unwrap_err();
    assert_eq!(
        err.to_string(),
        "package ghost 1.0 (amd64) is installed but no index lists it"
    );
}

#[track_caller]
fn check_pocket(file_name: &str, expect: Option<&str>) {
    assert_eq!(lock::pocket_of_list_file(file_name), expect, "{file_name}");
}

#[test]
fn pockets_come_from_apt_list_file_names() {
    check_pocket(
        "h_ubuntu_dists_noble_main_binary-amd64_Packages",
        Some("noble"),
    );
    check_pocket(
        "h_ubuntu_dists_noble-updates_universe_binary-amd64_Packages",
        Some("noble-updates"),
    );
    check_pocket("h_ubuntu_dists_noble-security_InRelease", None);
    check_pocket("lock", None);
}

#[test]
fn lock_diff_and_pins() {
    let text = read("lock/expected.lock");
    let lock = PackagesLock::parse(&text, Path::new("expected.lock")).unwrap();
    assert!(lock.diff(&lock).is_empty());
    let mut changed = lock.clone();
    changed.packages[0].version = "9.9".to_owned();
    let diff = lock.diff(&changed);
    assert_eq!(diff.len(), 2, "{diff:?}");
    // The kernel image is found by its release-shaped name, not by a meta package's.
    assert_eq!(lock.kernel_image(), None);
    changed.packages[1].name = "linux-image-virtual-6.17".to_owned();
    assert_eq!(changed.kernel_image(), None);
    changed.packages[0].name = "linux-image-6.17.0-1032-nvidia".to_owned();
    assert_eq!(
        changed.kernel_image(),
        Some("linux-image-6.17.0-1032-nvidia")
    );
    assert!(lock.apt_preferences().contains(&format!(
        "Package: {}\nPin: version {}\nPin-Priority: 1001\n",
        lock.packages[0].name, lock.packages[0].version
    )));
}

#[test]
fn a_malformed_lock_is_bad_input_naming_the_file() {
    let err = PackagesLock::parse("version = \"one\"", Path::new("/x/packages.lock")).unwrap_err();
    assert!(cvm_core::error::is_bad_input(&err));
    assert!(
        err.to_string()
            .starts_with("/x/packages.lock: not a valid packages.lock"),
        "{err}"
    );
}

#[track_caller]
fn check_glob(pattern: &str, name: &str, expect: bool) {
    assert_eq!(
        harden::glob_component(pattern, name),
        expect,
        "{pattern} ~ {name}"
    );
}

#[test]
fn globs_match_one_component() {
    check_glob("dpkg*", "dpkg-query", true);
    check_glob("dpkg*", "xdpkg", false);
    check_glob("*", "anything", true);
    check_glob("perl5*", "perl5.38.2", true);
    check_glob("a*c", "abbbc", true);
    check_glob("a*c", "abbb", false);
    check_glob("bash", "bash", true);
}

#[test]
fn data_lists_skip_comments_and_blank_lines() {
    assert_eq!(
        harden::list_entries("# c\n\nusr/bin/sh  # trailing\n  apt\n"),
        ["usr/bin/sh", "apt"]
    );
    // The shipped lists are non-empty and hold relative paths only.
    for entry in harden::list_entries(harden::REMOVE_PATHS)
        .into_iter()
        .chain(harden::list_entries(harden::FORBIDDEN_PATHS))
    {
        assert!(!entry.starts_with('/'), "{entry}");
    }
}

#[test]
fn the_audit_finds_forbidden_paths_and_setuid_files() {
    use std::os::unix::fs::PermissionsExt;
    let dir = root_with_modules();
    let root = dir.path();
    fs::create_dir_all(root.join("usr/bin")).unwrap();
    fs::write(root.join("usr/bin/true"), "").unwrap();
    assert_eq!(harden::audit_tree(root).unwrap(), Vec::<String>::new());
    std::os::unix::fs::symlink("dash", root.join("usr/bin/sh")).unwrap();
    fs::write(root.join("usr/bin/helper"), "").unwrap();
    fs::set_permissions(
        root.join("usr/bin/helper"),
        fs::Permissions::from_mode(0o4755),
    )
    .unwrap();
    assert_eq!(
        harden::audit_tree(root).unwrap(),
        [
            "forbidden path /usr/bin/sh",
            "setuid/setgid file /usr/bin/helper (mode 4755)"
        ]
    );
    let err = harden::check_audit(&harden::audit_tree(root).unwrap(), "the test tree").unwrap_err();
    assert!(err
        .to_string()
        .starts_with("the audit of the test tree found 2 problem(s)"));
}

/// A minimal PE32+ image: DOS header, PE header, optional header, one `.text` section.
fn tiny_pe() -> Vec<u8> {
    let mut image = vec![0u8; 0x400];
    image[0..2].copy_from_slice(b"MZ");
    image[0x3c..0x40].copy_from_slice(&0x80u32.to_le_bytes());
    image[0x80..0x84].copy_from_slice(b"PE\0\0");
    let coff = 0x84;
    image[coff..coff + 2].copy_from_slice(&0x8664u16.to_le_bytes());
    image[coff + 2..coff + 4].copy_from_slice(&1u16.to_le_bytes());
    image[coff + 16..coff + 18].copy_from_slice(&240u16.to_le_bytes());
    let optional = coff + 20;
    image[optional..optional + 2].copy_from_slice(&0x20bu16.to_le_bytes());
    image[optional + 32..optional + 36].copy_from_slice(&0x1000u32.to_le_bytes());
    image[optional + 36..optional + 40].copy_from_slice(&0x200u32.to_le_bytes());
    image[optional + 56..optional + 60].copy_from_slice(&0x2000u32.to_le_bytes());
    image[optional + 60..optional + 64].copy_from_slice(&0x400u32.to_le_bytes());
    let section = optional + 240;
    image[section..section + 5].copy_from_slice(b".text");
    image[section + 8..section + 12].copy_from_slice(&0x10u32.to_le_bytes());
    image[section + 12..section + 16].copy_from_slice(&0x1000u32.to_le_bytes());
    image[section + 16..section + 20].copy_from_slice(&0x200u32.to_le_bytes());
    image[section + 20..section + 24].copy_from_slice(&0x400u32.to_le_bytes());
    image.extend_from_slice(&[0xc3; 0x200]);
    image
}

#[test]
fn uki_sections_are_appended_aligned_and_read_back() {
    let stub = tiny_pe();
    let parts = uki::UkiParts {
        osrel: b"ID=ubuntu\n",
        cmdline: b"console=ttyS0",
        uname: b"6.17.0-42-generic",
        initrd: &[7u8; 5000],
        linux: &[9u8; 3000],
    };
    let image = uki::build(&stub, &parts).unwrap();
    let sections = uki::sections(&image).unwrap();
    let summary: Vec<String> = sections
        .iter()
        .map(|s| {
            format!(
                "{} va={:#x} vsize={:#x} raw={:#x}+{:#x}",
                s.name, s.virtual_address, s.virtual_size, s.raw_offset, s.raw_size
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ".text va=0x1000 vsize=0x10 raw=0x400+0x200",
            ".osrel va=0x2000 vsize=0xa raw=0x600+0x200",
            ".cmdline va=0x3000 vsize=0xd raw=0x800+0x200",
            ".uname va=0x4000 vsize=0x11 raw=0xa00+0x200",
            ".initrd va=0x5000 vsize=0x1388 raw=0xc00+0x1400",
            ".linux va=0x7000 vsize=0xbb8 raw=0x2000+0xc00",
        ]
    );
    assert_eq!(
        uki::section_data(&image, ".cmdline").unwrap(),
        Some(&b"console=ttyS0"[..])
    );
    assert_eq!(
        uki::section_data(&image, ".linux").unwrap().unwrap(),
        &[9u8; 3000][..]
    );
    // Same inputs, same bytes.
    assert_eq!(uki::build(&stub, &parts).unwrap(), image);
}

#[test]
fn a_stub_without_room_for_section_headers_is_refused() {
    let mut stub = tiny_pe();
    // SizeOfHeaders and the first section's raw data right after the section table.
    let optional = 0x84 + 20;
    let table_end = (optional + 240 + 40) as u32;
    stub[optional + 60..optional + 64].copy_from_slice(&table_end.to_le_bytes());
    let err = uki::add_sections(&stub, &[(".osrel", b"x")]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "the stub's PE header has no room for 1 more section headers"
    );
    assert!(uki::sections(b"not a PE").is_err());
}

#[test]
fn root_hash_is_read_from_veritysetup_output() {
    assert_eq!(
        root_image::parse_root_hash(&read("verity/format.out")).as_deref(),
        Some("8ff07aaa6d8fa956cc5ecbd9390d58e5dd49599ac23e343216a8a3ad10f0b212")
    );
    assert_eq!(root_image::parse_root_hash("nothing"), None);
    let uuid = root_image::derived_uuid("erofs", "key");
    assert_eq!(uuid, root_image::derived_uuid("erofs", "key"));
    assert_ne!(uuid, root_image::derived_uuid("verity", "key"));
    assert_eq!(&uuid[14..15], "4");
}

#[test]
fn disk_layout_is_deterministic_and_follows_the_root_hash() {
    let root_hash = "8ff07aaa6d8fa956cc5ecbd9390d58e5dd49599ac23e343216a8a3ad10f0b212";
    let (parts, size) = disk::layout(root_hash, 64 << 20, 65_900_000, 540_000);
    assert_eq!(size, (1 + 64 + 63 + 1 + 1) << 20);
    let script = disk::sfdisk_script("DISK-GUID", &parts);
    expect_file!["../../tests/data/image/disk/sfdisk.txt"].assert_eq(&script);
    assert_eq!(parts[1].uuid, "8FF07AAA-6D8F-A956-CC5E-CBD9390D58E5");
}

#[test]
fn serial_logs_are_parsed_for_status_and_failures() {
    let ready = read("serial/ready.log");
    let found = status::find_in_log(&ready).unwrap().unwrap();
    assert!(found.ready);
    assert_eq!(found.verity, "active");
    assert_eq!(status::boot_failure(&ready), None);
    // A line still being written is not read.
    assert!(status::find_in_log("CVM-STATUS {\"ready\":tr").is_none());
    let tampered = read("serial/tampered.log");
    assert!(status::find_in_log(&tampered).is_none());
    let failure = status::boot_failure(&tampered).unwrap();
    assert!(failure.contains("verity"), "{failure}");
}

#[test]
fn status_line_round_trips() {
    let line = status::CvmStatus {
        ready: true,
        kernel: "6.17.0-42-generic".to_owned(),
        tee: "none".to_owned(),
        verity: "active".to_owned(),
        failed_units: vec![],
        gpu_cc: "n/a".to_owned(),
        measurement: None,
        firewall: "active".to_owned(),
    }
    .to_line();
    assert_eq!(
        line,
        r#"CVM-STATUS {"ready":true,"kernel":"6.17.0-42-generic","tee":"none","verity":"active","failed_units":[],"gpu_cc":"n/a","measurement":null,"firewall":"active"}"#
    );
    // A line from an image that predates the firewall field still parses.
    let old = r#"CVM-STATUS {"ready":true,"kernel":"k","tee":"none","verity":"active","failed_units":[],"gpu_cc":"n/a","measurement":null}"#;
    let parsed = status::find_in_log(old).unwrap().unwrap();
    assert_eq!(parsed.firewall, "");
    assert_eq!(
        status::strip_escapes("\u{1b}[2J\u{1b}[01;01HBdsDxe: x"),
        "BdsDxe: x"
    );
}

#[test]
fn cmdline_carries_the_root_hash_and_hardening() {
    let cmdline = kernel_cmdline("ab", &["quiet".to_owned()]);
    assert_eq!(
        cmdline,
        "console=ttyS0,115200 root=/dev/mapper/root rootfstype=erofs ro cvm.roothash=ab \
         cvm.verity_data=PARTLABEL=root cvm.verity_hash=PARTLABEL=root-verity \
         lockdown=integrity module.sig_enforce=1 panic=-1 quiet"
    );
}

#[test]
fn stage_keys_chain_and_stale_mounts_are_found() {
    let a = KeyBuilder::new("uki", Some("k1"))
        .text("cmdline", "x")
        .finish();
    let b = KeyBuilder::new("uki", Some("k2"))
        .text("cmdline", "x")
        .finish();
    let c = KeyBuilder::new("uki", Some("k1"))
        .text("cmdline", "y")
        .finish();
    assert_ne!(a, b);
    assert_ne!(a, c);
    assert_eq!(
        a,
        KeyBuilder::new("uki", Some("k1"))
            .text("cmdline", "x")
            .finish()
    );
    let mountinfo = "22 1 0:21 / /proc rw - proc proc rw\n\
                     90 30 0:5 / /t/cache/x.tmp-1/tree/dev rw - devtmpfs udev rw\n\
                     91 90 0:6 / /t/cache/x.tmp-1/tree/dev/pts rw - devpts devpts rw\n";
    assert_eq!(
        cache::mounts_under(mountinfo, Path::new("/t/cache/x.tmp-1")),
        [
            PathBuf::from("/t/cache/x.tmp-1/tree/dev/pts"),
            PathBuf::from("/t/cache/x.tmp-1/tree/dev")
        ]
    );
    assert_eq!(
        cache::temporary_pid(Path::new("/t/.cvm-base.tmp-4242")),
        Some(4242)
    );
    assert_eq!(cache::temporary_pid(Path::new("/t/cvm-base")), None);
}

#[test]
fn boot_and_tee_modules_are_found_as_files_or_built_in() {
    // Debian trixie's cloud kernel: virtio_pci is built in, the rest are .ko.xz files; the
    // fixture leaves tdx-guest out.
    let tree = data("modules/6.12.118+deb13-cloud-amd64");
    assert_eq!(
        rootfs::missing_modules(&tree, rootfs::BOOT_MODULES).unwrap(),
        Vec::<String>::new()
    );
    assert_eq!(
        rootfs::missing_modules(&tree, rootfs::TEE_MODULES).unwrap(),
        ["tdx-guest"]
    );
    // `-` and `_` are the same module name to modprobe.
    assert_eq!(
        rootfs::missing_modules(&tree, &["dm_verity", "virtio-pci", "zfs"]).unwrap(),
        ["zfs"]
    );
}

#[test]
fn the_distro_decides_suite_kernel_keyring_and_firmware() {
    let model = cvm_core::model::load(None).unwrap().model;
    let ubuntu = Distro::Ubuntu;
    assert_eq!(ubuntu.suite(&model), "noble");
    assert_eq!(ubuntu.kernel(&model), model.guest.kernel);
    assert_eq!(ubuntu.keyring(&model), Some(distro::UBUNTU_KEYRING));
    assert_eq!(ubuntu.components(&model), "main,universe");
    assert_eq!(ubuntu.check_firmware().unwrap(), None);
    let names: Vec<&str> = ubuntu.build_files().iter().map(|f| f.0).collect();
    assert_eq!(names, ["ovmf", "systemd-boot-efi"]);

    let firmware = data("verity/format.out");
    let (sha256, _) = cvm_core::hash::sha256_file(&firmware).unwrap();
    let mut fallback = DebianFallback {
        firmware,
        firmware_sha256: sha256.clone(),
        mirror: None,
    };
    let debian = Distro::DebianTrixie(fallback.clone());
    assert_eq!(debian.suite(&model), "trixie");
    assert_eq!(debian.kernel(&model), "linux-image-cloud-amd64");
    assert_eq!(debian.keyring(&model), Some(distro::DEBIAN_KEYRING));
    assert_eq!(debian.components(&model), "main");
    assert_eq!(debian.mirror(&model), None);
    assert_eq!(debian.check_firmware().unwrap(), Some(sha256));
    let names: Vec<&str> = debian.build_files().iter().map(|f| f.0).collect();
    assert_eq!(names, ["systemd-boot-efi"]);
    assert_ne!(debian.deb_cache_name(), ubuntu.deb_cache_name());

    fallback.firmware_sha256 = "0".repeat(64);
    let err = Distro::DebianTrixie(fallback).check_firmware().unwrap_err();
    assert!(
        err.to_string().contains("the Debian fallback pins"),
        "{err}"
    );
}

#[test]
fn a_signature_failure_is_final_and_explained() {
    // What apt printed (through mmdebstrap) for a mirror signed by a key outside the keyring.
    let text = read("mmdebstrap/untrusted-key.txt");
    assert!(rootfs::is_signature_failure(&text));
    assert!(rootfs::is_final_failure(&text));
    assert!(!rootfs::is_final_failure(
        "E: Failed to fetch http://mirror.invalid/ubuntu/dists/noble/InRelease  Could not connect"
    ));
}

/// Lays out the modules fixture (every file of modules.dep, empty) in a temporary directory.
fn module_tree() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for name in ["modules.dep", "modules.builtin"] {
        fs::copy(
            data(&format!("modules/6.17.0-42-generic/{name}")),
            dir.path().join(name),
        )
        .unwrap();
    }
    for line in read("modules/6.17.0-42-generic/modules.dep").lines() {
        let path = dir.path().join(line.split(':').next().unwrap());
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, "").unwrap();
    }
    dir
}

fn module_files(dir: &Path) -> Vec<String> {
    let mut files: Vec<String> = walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(".ko"))
        .map(|e| harden::module_name(&e.file_name().to_string_lossy()))
        .collect();
    files.sort();
    files
}

#[test]
fn modules_are_pruned_to_the_keep_list_and_what_it_needs() {
    let dir = module_tree();
    let (kept, deleted) =
        harden::prune_modules(dir.path(), &harden::kept_modules(harden::KEEP_MODULES)).unwrap();
    assert_eq!(
        module_files(dir.path()),
        [
            "dm_bufio",
            "dm_verity",
            "erofs",
            "nf_conntrack",
            "nf_tables",
            "nfnetlink",
            "nft_ct",
            "sev_guest",
            "tdx_guest",
            "tsm_report"
        ]
    );
    assert_eq!((kept, deleted), (10, 5));
    // The directories of deleted modules are gone with them.
    assert!(!dir.path().join("kernel/arch").exists());
    assert!(!dir.path().join("kernel/lib").exists());
}

#[test]
fn a_required_module_the_kernel_lacks_fails_the_build() {
    let dir = module_tree();
    let keep = harden::kept_modules(
        "erofs !\nsev-guest !\nvirtio_blk !\nmissing_optional\nefi_secret !\n",
    );
    let err = harden::prune_modules(dir.path(), &keep).unwrap_err();
    assert!(
        err.to_string()
            .contains("has no module \"efi_secret\", which keep-modules.txt requires"),
        "{err}"
    );
}

/// A root tree holding only the modules fixture as usr/lib/modules/6.17.0-42-generic.
fn root_with_modules() -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    let release = root.path().join(RELEASE);
    fs::create_dir_all(release.parent().unwrap()).unwrap();
    let tree = module_tree();
    Cmd::new("cp")
        .arg("-a")
        .arg(tree.path())
        .arg(&release)
        .run()
        .unwrap();
    // What the harden stage adds, by the same functions, and the nft binary from nftables.
    let binary = root.path().join("cvm-status-build");
    fs::write(&binary, "binary").unwrap();
    rootfs::install_cvm_status(root.path(), &binary).unwrap();
    fs::remove_file(&binary).unwrap();
    let network = cvm_core::model::Network::default();
    egress::install(root.path(), &network, &egress::ruleset(&network).unwrap()).unwrap();
    fs::create_dir_all(root.path().join("usr/sbin")).unwrap();
    fs::write(root.path().join("usr/sbin/nft"), "").unwrap();
    root
}

const RELEASE: &str = "usr/lib/modules/6.17.0-42-generic";

/// The harden stage's installers leave every path the audit requires, and the audit names each
/// one that goes missing.
#[test]
fn the_audit_requires_the_readiness_unit_and_the_firewall() {
    let root = root_with_modules();
    assert_eq!(
        harden::audit_tree(root.path()).unwrap(),
        Vec::<String>::new()
    );
    fs::remove_file(root.path().join("etc/cvm/egress.nft")).unwrap();
    fs::remove_file(
        root.path()
            .join("etc/systemd/system/multi-user.target.wants/cvm-status.service"),
    )
    .unwrap();
    assert_eq!(
        harden::audit_tree(root.path()).unwrap(),
        [
            "required path /etc/systemd/system/multi-user.target.wants/cvm-status.service is missing",
            "required path /etc/cvm/egress.nft is missing",
        ]
    );
}

#[test]
fn the_audit_refuses_an_image_without_a_required_module() {
    let root = root_with_modules();
    let release = root.path().join(RELEASE);
    assert_eq!(
        harden::audit_tree(root.path()).unwrap(),
        Vec::<String>::new()
    );
    fs::remove_file(release.join("kernel/drivers/virt/coco/tdx-guest/tdx-guest.ko.zst")).unwrap();
    assert_eq!(
        harden::audit_tree(root.path()).unwrap(),
        ["required kernel module tdx_guest is missing from /usr/lib/modules/6.17.0-42-generic"]
    );
}

/// The NVIDIA flavour's hook installs the kernel image the track meta package resolves to, and
/// nothing else of its dependencies: run with stand-ins for apt-cache (the real `apt-cache show`
/// of the meta package), apt-get and chroot that record what they are asked.
#[test]
fn the_nvidia_kernel_hook_installs_only_the_resolved_image() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("bin");
    fs::create_dir(&bin).unwrap();
    let show = data("kernel/linux-image-nvidia-6.17.show");
    let calls = dir.path().join("calls.txt");
    let stub = |name: &str, body: String| {
        let path = bin.join(name);
        fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    };
    stub(
        "apt-cache",
        format!(
            "[ \"$*\" = \"show --no-all-versions linux-image-nvidia-6.17\" ] || exit 9; cat {}",
            show.display()
        ),
    );
    for name in ["apt-get", "chroot"] {
        stub(name, format!("echo \"{name} $*\" >> {}", calls.display()));
    }
    let hook = rootfs::kernel_image_hook("linux-image-nvidia-6.17", None);
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    Cmd::new("sh")
        .args(["-c", &hook, "sh", "/guest-tree"])
        .env("PATH", &path)
        .env("MMDEBSTRAP_APT_CONFIG", "/mmdebstrap/apt.conf")
        .run()
        .unwrap();
    let recorded = fs::read_to_string(&calls).unwrap();
    assert_eq!(
        recorded,
        "apt-get install --download-only -y --no-install-recommends linux-image-6.17.0-1032-nvidia\n\
         chroot /guest-tree env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-download --no-install-recommends linux-image-6.17.0-1032-nvidia\n"
    );
    // A lock that holds the image pins it: the meta package is not consulted at all.
    fs::remove_file(&calls).unwrap();
    let pinned = rootfs::kernel_image_hook(
        "linux-image-nvidia-6.17",
        Some("linux-image-6.17.0-1031-nvidia"),
    );
    stub("apt-cache", "exit 9".to_owned());
    Cmd::new("sh")
        .args(["-c", &pinned, "sh", "/guest-tree"])
        .env("PATH", &path)
        .run()
        .unwrap();
    assert!(
        fs::read_to_string(&calls)
            .unwrap()
            .contains("--no-install-recommends linux-image-6.17.0-1031-nvidia\n"),
        "{pinned}"
    );
    // A meta package that names no kernel image stops the build with a reason.
    stub(
        "apt-cache",
        "echo 'Depends: linux-firmware, intel-microcode'".to_owned(),
    );
    let err = Cmd::new("sh")
        .args(["-c", &hook, "sh", "/guest-tree"])
        .env("PATH", &path)
        .run()
        .unwrap_err();
    assert!(
        format!("{err:#}")
            .contains("linux-image-nvidia-6.17 depends on no linux-image-<release> package"),
        "{err:#}"
    );
}

#[test]
fn initrd_modules_load_dependencies_first_and_built_ins_need_nothing() {
    let index = harden::ModuleIndex::read(&data("modules/6.17.0-42-generic")).unwrap();
    // dm-mod, virtio_blk and virtio_pci are built into Ubuntu's kernel; dm-verity needs dm-bufio.
    let order = initrd::load_order(&index, initrd::BOOT_MODULES).unwrap();
    assert_eq!(
        order,
        [
            ("dm_bufio", "kernel/drivers/md/dm-bufio.ko.zst"),
            ("dm_verity", "kernel/drivers/md/dm-verity.ko.zst"),
            ("erofs", "kernel/fs/erofs/erofs.ko.zst"),
        ]
        .map(|(name, path)| (name.to_owned(), path.to_owned()))
    );
    // A shared dependency is loaded once, before the first module that needs it.
    let order = initrd::load_order(&index, &["sev-guest", "tdx_guest"]).unwrap();
    let names: Vec<&str> = order.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(names, ["tsm_report", "sev_guest", "tdx_guest"]);
    let err = initrd::load_order(&index, &["dm-verity", "zfs"]).unwrap_err();
    assert!(format!("{err}").contains("no module \"zfs\""), "{err}");
}

#[test]
fn the_initrd_archive_is_newc_that_cpio_lists_and_extracts() {
    let mut archive = initrd::Cpio::new(1_700_000_000);
    archive.dir("dev");
    archive.char_device("dev/console", 0o600, 5, 1);
    archive.dir("lib");
    archive.file("lib/00-a.ko", 0o644, b"module bytes");
    archive.file("init", 0o755, b"\x7fELF init");
    let bytes = archive.finish();
    assert_eq!(bytes.len() % 4, 0);
    let listing = Cmd::new("cpio")
        .args(["-t", "-v", "--quiet"])
        .stdin_bytes(bytes.clone())
        .read()
        .unwrap();
    let entries: Vec<(&str, &str)> = listing
        .lines()
        .map(|line| {
            let mode = line.split_whitespace().next().unwrap();
            (mode, line.rsplit(' ').next().unwrap())
        })
        .collect();
    assert_eq!(
        entries,
        [
            ("drwxr-xr-x", "dev"),
            ("crw-------", "dev/console"),
            ("drwxr-xr-x", "lib"),
            ("-rw-r--r--", "lib/00-a.ko"),
            ("-rwxr-xr-x", "init"),
        ]
    );
    assert!(listing.contains("5,   1"), "{listing}");
    let dir = tempfile::tempdir().unwrap();
    Cmd::new("cpio")
        .args(["-i", "-d", "-m", "--quiet", "--no-absolute-filenames"])
        .current_dir(dir.path())
        .stdin_bytes(bytes)
        .run()
        .unwrap();
    assert_eq!(
        fs::read(dir.path().join("lib/00-a.ko")).unwrap(),
        b"module bytes"
    );
    let init = fs::metadata(dir.path().join("init")).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!((init.mode() & 0o7777, init.mtime()), (0o755, 1_700_000_000));
    let console = fs::symlink_metadata(dir.path().join("dev/console")).unwrap();
    use std::os::unix::fs::FileTypeExt;
    assert!(console.file_type().is_char_device());
    assert_eq!(console.rdev(), libc::makedev(5, 1));
}

#[test]
fn init_reads_the_superblock_veritysetup_writes() {
    let dir = tempfile::tempdir().unwrap();
    let (data_file, hash_file) = (dir.path().join("data"), dir.path().join("hash"));
    fs::write(&data_file, vec![0x5a; 16 * 4096]).unwrap();
    let out = Cmd::new("veritysetup")
        .args([
            "format",
            "--salt=0011223344556677",
            "--uuid=11111111-2222-4333-8444-555555555555",
        ])
        .arg(&data_file)
        .arg(&hash_file)
        .read()
        .unwrap();
    let root_hash = out
        .lines()
        .find_map(|line| line.strip_prefix("Root hash:"))
        .unwrap()
        .trim()
        .to_owned();
    let block = fs::read(&hash_file).unwrap();
    let sb = initrd::VeritySuperblock::parse(&block[..512]).unwrap();
    assert_eq!(
        (
            sb.hash_type,
            sb.data_block_size,
            sb.hash_block_size,
            sb.data_blocks
        ),
        (1, 4096, 4096, 16)
    );
    assert_eq!(sb.sectors(), 128);
    assert_eq!(
        sb.dm_uuid(),
        "CRYPT-VERITY-11111111222243338444555555555555-root"
    );
    assert_eq!(
        sb.table("/dev/vda2", "/dev/vda3", &root_hash),
        format!("1 /dev/vda2 /dev/vda3 4096 4096 16 1 sha256 {root_hash} 0011223344556677")
    );
    // Not a superblock, a truncated one, and a corrupted block size are refused.
    assert!(initrd::VeritySuperblock::parse(&[0u8; 512]).is_err());
    assert!(initrd::VeritySuperblock::parse(&block[..100]).is_err());
    let mut bad = block[..512].to_vec();
    bad[64] = 3;
    assert!(initrd::VeritySuperblock::parse(&bad).is_err());
}

#[test]
fn init_takes_the_root_from_the_kernel_command_line() {
    let hash = "ab".repeat(32);
    let parsed = initrd::InitCmdline::parse(&format!(
        "console=ttyS0 root=/dev/mapper/root cvm.roothash={hash} cvm.verity_hash=/dev/vdb ro"
    ))
    .unwrap();
    assert_eq!(
        parsed,
        initrd::InitCmdline {
            root_hash: hash.clone(),
            data: "PARTLABEL=root".to_owned(),
            hash: "/dev/vdb".to_owned(),
            fstype: "erofs".to_owned(),
            init: "/sbin/init".to_owned(),
        }
    );
    // What the build writes parses back.
    let built = kernel_cmdline(&hash, &[]);
    let parsed = initrd::InitCmdline::parse(&built).unwrap();
    assert_eq!(
        (parsed.data.as_str(), parsed.hash.as_str()),
        ("PARTLABEL=root", "PARTLABEL=root-verity")
    );
    let err = initrd::InitCmdline::parse("console=ttyS0 ro").unwrap_err();
    assert!(err.contains("no cvm.roothash="), "{err}");
    let err = initrd::InitCmdline::parse("cvm.roothash=xyz").unwrap_err();
    assert!(err.contains("not a hex digest"), "{err}");
    assert_eq!(
        initrd::uevent_field("MAJOR=252\nDEVNAME=vda2\nPARTNAME=root\n", "PARTNAME="),
        Some("root")
    );
}

#[test]
fn init_speaks_the_device_mapper_ioctl_layout() {
    // The request numbers strace and libdevmapper use.
    assert_eq!(initrd::DM_DEV_CREATE, 0xc138_fd03);
    assert_eq!(initrd::DM_DEV_SUSPEND, 0xc138_fd06);
    assert_eq!(initrd::DM_TABLE_LOAD, 0xc138_fd09);
    let words = initrd::dm_ioctl_buffer(
        "CRYPT-VERITY-ab-root",
        initrd::DM_READONLY_FLAG,
        Some(("verity", 128, "1 a b")),
    )
    .unwrap();
    let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_ne_bytes()).collect();
    let u32_at = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap());
    assert_eq!(u32_at(0), 4, "interface version");
    assert_eq!(u32_at(12) as usize, bytes.len(), "data_size");
    assert_eq!((u32_at(16), u32_at(20), u32_at(28)), (312, 1, 1));
    assert_eq!(&bytes[48..53], b"root\0");
    assert_eq!(&bytes[176..197], b"CRYPT-VERITY-ab-root\0");
    assert_eq!(u64::from_le_bytes(bytes[320..328].try_into().unwrap()), 128);
    assert_eq!(&bytes[336..343], b"verity\0");
    assert_eq!(&bytes[352..358], b"1 a b\0");
    // The answer's dev field, as huge_encode_dev writes it.
    let mut answer = vec![0u64; 40];
    answer[5] = (253 << 8) | (300 & 0xff) | ((300 & !0xff) << 12);
    assert_eq!(initrd::dm_answer_device(&answer), (253, 300));
    assert!(initrd::dm_ioctl_buffer(&"x".repeat(129), 0, None).is_err());
}

#[test]
fn a_kept_tree_unpacks_with_owners_modes_links_devices_and_capabilities() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let dir = tempfile::tempdir().unwrap();
    let (src, tar, dst) = (
        dir.path().join("src"),
        dir.path().join(scratch::TREE_TAR),
        dir.path().join("dst"),
    );
    for (path, mode) in [
        ("etc/hostname", 0o644),
        ("usr/bin/tool", 0o4755),
        ("usr/bin/ping", 0o755),
        ("usr/lib/modules/6.17/kernel/a.ko.zst", 0o600),
    ] {
        let file = src.join(path);
        fs::create_dir_all(file.parent().unwrap()).unwrap();
        fs::write(&file, path).unwrap();
        fs::set_permissions(&file, fs::Permissions::from_mode(mode)).unwrap();
    }
    fs::set_permissions(src.join("usr"), fs::Permissions::from_mode(0o750)).unwrap();
    std::os::unix::fs::lchown(src.join("etc/hostname"), Some(101), Some(102)).unwrap();
    std::os::unix::fs::symlink("lib", src.join("usr/lib64")).unwrap();
    fs::hard_link(src.join("usr/bin/tool"), src.join("usr/bin/tool2")).unwrap();
    Cmd::new("mknod")
        .arg(src.join("etc/null"))
        .args(["c", "1", "3"])
        .run()
        .unwrap();
    // A file capability, as iputils' ping has.
    Cmd::new("setcap")
        .arg("cap_net_raw+ep")
        .arg(src.join("usr/bin/ping"))
        .run()
        .unwrap();
    scratch::pack(&src, &tar).unwrap();
    scratch::unpack(&tar, &dst).unwrap();
    let meta = |root: &Path, path: &str| fs::symlink_metadata(root.join(path)).unwrap();
    for path in [
        "",
        "etc/hostname",
        "etc/null",
        "usr",
        "usr/bin/tool",
        "usr/lib64",
        "usr/lib/modules/6.17/kernel/a.ko.zst",
    ] {
        let (a, b) = (meta(&src, path), meta(&dst, path));
        assert_eq!(
            (a.mode(), a.uid(), a.gid(), a.rdev(), a.nlink()),
            (b.mode(), b.uid(), b.gid(), b.rdev(), b.nlink()),
            "{path}"
        );
    }
    assert_eq!(meta(&dst, "etc/hostname").uid(), 101);
    assert_eq!(meta(&dst, "usr/bin/tool").mode() & 0o7777, 0o4755);
    assert_eq!(
        meta(&dst, "usr/bin/tool").ino(),
        meta(&dst, "usr/bin/tool2").ino()
    );
    assert_eq!(
        fs::read_link(dst.join("usr/lib64")).unwrap(),
        Path::new("lib")
    );
    assert_eq!(
        fs::read(dst.join("usr/lib/modules/6.17/kernel/a.ko.zst")).unwrap(),
        b"usr/lib/modules/6.17/kernel/a.ko.zst"
    );
    let caps = Cmd::new("getcap")
        .arg(dst.join("usr/bin/ping"))
        .read()
        .unwrap();
    assert!(caps.contains("cap_net_raw=ep"), "{caps}");
    // Unpacking never merges into an existing tree.
    assert!(scratch::unpack(&tar, &dst).is_err());
}

#[test]
fn scratch_trees_go_to_ram_only_with_room_to_spare() {
    let (ram, disk) = (Path::new("/dev/shm"), Path::new("/c/scratch"));
    let plenty = scratch::RAM_NEEDED;
    assert_eq!(
        scratch::choose_base(Some((ram, plenty)), Some(plenty), disk),
        (ram.join("cvm-stack"), true)
    );
    for (tmpfs, memory) in [
        (None, Some(plenty)),
        (Some((ram, plenty - 1)), Some(plenty)),
        (Some((ram, plenty)), Some(plenty - 1)),
        (Some((ram, plenty)), None),
    ] {
        assert_eq!(
            scratch::choose_base(tmpfs, memory, disk),
            (disk.to_path_buf(), false)
        );
    }
    let meminfo =
        "MemTotal:       24683652 kB\nMemFree:        21000000 kB\nMemAvailable:   23000000 kB\n";
    assert_eq!(scratch::mem_available(meminfo), Some(23_000_000 * 1024));
    assert_eq!(scratch::mem_available("MemTotal: 1 kB\n"), None);
}

#[test]
fn the_cache_hooks_mount_the_cache_for_the_build_and_leave_nothing_mounted() {
    let dir = tempfile::tempdir().unwrap();
    let (cache, root) = (dir.path().join("the cache"), dir.path().join("root"));
    fs::create_dir_all(&cache).unwrap();
    fs::create_dir_all(&root).unwrap();
    fs::write(cache.join("kept.deb"), "kept").unwrap();
    let [setup, customize] = rootfs::bind_cache_hooks(&cache, rootfs::CHROOT_ARCHIVES);
    let setup = setup.strip_prefix("--setup-hook=").unwrap();
    let customize = customize.strip_prefix("--customize-hook=").unwrap();
    // As mmdebstrap runs them, in its private mount namespace: the kept package is there, a
    // download lands in the cache, and the last hook unmounts before the cleanup.
    let inside = format!("\"$1/{}\"", rootfs::CHROOT_ARCHIVES);
    let script = format!(
        "{setup} && test -f {inside}/kept.deb && echo new > {inside}/new.deb && {customize} && ! test -e {inside}/kept.deb"
    );
    Cmd::new("unshare")
        .args([
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            &script,
            "sh",
        ])
        .arg(&root)
        .run()
        .unwrap();
    assert_eq!(fs::read_to_string(cache.join("new.deb")).unwrap(), "new\n");
    assert!(fs::read_dir(root.join(rootfs::CHROOT_ARCHIVES))
        .unwrap()
        .next()
        .is_none());
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(cache::mounts_under(&mountinfo, dir.path()).is_empty());
}

#[test]
fn mmdebstrap_runs_the_system_tools_first() {
    assert_eq!(
        rootfs::system_first_path(Some("/root/.pyenv/shims:/usr/bin")),
        "/usr/sbin:/usr/bin:/sbin:/bin:/root/.pyenv/shims:/usr/bin"
    );
    assert_eq!(
        rootfs::system_first_path(None),
        "/usr/sbin:/usr/bin:/sbin:/bin"
    );
    assert_eq!(
        rootfs::system_first_path(Some("")),
        "/usr/sbin:/usr/bin:/sbin:/bin"
    );
}

#[test]
fn the_rootfs_key_covers_the_mmdebstrap_command() {
    // A changed option or hook shows here first (and in the rootfs key, which hashes this text).
    let model = cvm_core::model::load(None).unwrap().model;
    let text = rootfs_command_text(&model, &Distro::Ubuntu, &[]);
    expect_file!["../../tests/data/image/mmdebstrap-command.txt"].assert_eq(&text);
    let mut gpu = model.clone();
    gpu.guest.profile = cvm_core::model::Profile::Gpu;
    assert_ne!(rootfs_command_text(&gpu, &Distro::Ubuntu, &[]), text);
}

#[test]
fn a_sweep_removes_only_what_dead_builds_left() {
    let dir = tempfile::tempdir().unwrap();
    // No process has this pid (above every pid_max); this test's process is alive.
    let dead = dir.path().join("build-0.tmp-4294967294");
    let alive = dir
        .path()
        .join(format!("build-1.tmp-{}", std::process::id()));
    let other = dir.path().join("build-2");
    for path in [&dead, &alive, &other] {
        fs::create_dir_all(path.join("usr/bin")).unwrap();
        fs::write(path.join("usr/bin/tool"), "x").unwrap();
    }
    cache::sweep_stale(dir.path()).unwrap();
    assert!(!dead.exists());
    assert!(alive.exists() && other.exists());
}
