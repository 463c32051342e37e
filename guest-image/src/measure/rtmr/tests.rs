//! Tests of the RTMR arithmetic against a public TD event log, of the Authenticode hash against
//! osslsigncode, and of the UKI events on UKIs built here.

use std::path::Path;

use cvm_core::cmd::Cmd;
use proptest::prelude::*;

use super::*;
use crate::measure::sha384;

fn data(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/measure")
        .join(name);
    std::fs::read_to_string(&path).unwrap()
}

fn digest(text: &str) -> [u8; 48] {
    hex::decode(text).unwrap().try_into().unwrap()
}

#[test]
fn replay_reproduces_the_public_direct_boot_log() {
    let mut events: [Vec<[u8; 48]>; 2] = Default::default();
    let mut expected = Vec::new();
    let mut labels = Vec::new();
    for line in data("tdx-direct-boot-event-log.txt").lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        match fields.as_slice() {
            ["event", rtmr, value, label] => {
                let rtmr: usize = rtmr.parse().unwrap();
                events[rtmr].push(digest(value));
                if rtmr == 1 {
                    labels.push((label.to_string(), digest(value)));
                }
            }
            ["expect", rtmr, value] => {
                expected.push((rtmr.parse::<usize>().unwrap(), digest(value)))
            }
            _ => assert!(line.is_empty() || line.starts_with('#'), "{line}"),
        }
    }
    assert_eq!(expected.len(), 2);
    for (rtmr, value) in expected {
        assert_eq!(
            hex::encode(replay(&events[rtmr])),
            hex::encode(value),
            "RTMR{rtmr}"
        );
    }
    // The constant RTMR1 events are what TDVF logged.
    let constant = |name: &str| labels.iter().find(|(label, _)| label == name).unwrap().1;
    assert_eq!(
        calling_efi_application(),
        constant("calling-efi-application")
    );
    assert_eq!(separator(), constant("separator"));
    assert_eq!(
        exit_boot_services_invocation(),
        constant("exit-boot-services-invocation")
    );
    assert_eq!(
        exit_boot_services_returned(),
        constant("exit-boot-services-returned")
    );
    assert_eq!(replay([]), [0u8; 48]);
}

/// A PE32+ EFI application with `sections` (name, contents) and `trailing` bytes after them.
pub(crate) fn pe_image(sections: &[(&str, &[u8])], trailing: &[u8]) -> Vec<u8> {
    let table = 0x148;
    let headers = (table + 40 * sections.len()).next_multiple_of(0x200);
    let mut image = vec![0u8; headers];
    let put = |image: &mut Vec<u8>, at: usize, bytes: &[u8]| {
        image[at..at + bytes.len()].copy_from_slice(bytes)
    };
    put(&mut image, 0, b"MZ");
    put(&mut image, 0x3c, &0x40u32.to_le_bytes());
    put(&mut image, 0x40, b"PE\0\0");
    put(&mut image, 0x44, &0x8664u16.to_le_bytes());
    put(&mut image, 0x46, &(sections.len() as u16).to_le_bytes());
    put(&mut image, 0x54, &240u16.to_le_bytes());
    put(&mut image, 0x56, &0x22u16.to_le_bytes());
    let optional = 0x58;
    put(&mut image, optional, &0x20bu16.to_le_bytes());
    put(&mut image, optional + 32, &0x1000u32.to_le_bytes());
    put(&mut image, optional + 36, &0x200u32.to_le_bytes());
    put(&mut image, optional + 60, &(headers as u32).to_le_bytes());
    put(&mut image, optional + 64, &0x1234_5678u32.to_le_bytes()); // a checksum, not hashed
    put(&mut image, optional + 68, &10u16.to_le_bytes());
    put(&mut image, optional + 108, &16u32.to_le_bytes());
    let mut address = 0x1000usize;
    for (index, (name, contents)) in sections.iter().enumerate() {
        let header = table + 40 * index;
        let raw = contents.len().next_multiple_of(0x200);
        let mut padded_name = [0u8; 8];
        padded_name[..name.len()].copy_from_slice(name.as_bytes());
        put(&mut image, header, &padded_name);
        put(
            &mut image,
            header + 8,
            &(contents.len() as u32).to_le_bytes(),
        );
        put(&mut image, header + 12, &(address as u32).to_le_bytes());
        put(&mut image, header + 16, &(raw as u32).to_le_bytes());
        let offset = image.len() as u32;
        put(&mut image, header + 20, &offset.to_le_bytes());
        put(&mut image, header + 36, &0x4000_0040u32.to_le_bytes());
        image.extend_from_slice(contents);
        image.resize(image.len() + raw - contents.len(), 0);
        address += contents.len().next_multiple_of(0x1000);
    }
    put(&mut image, optional + 56, &(address as u32).to_le_bytes());
    image.extend_from_slice(trailing);
    image
}

#[test]
fn authenticode_matches_the_digest_osslsigncode_signs() {
    const NAME: &str = "authenticode_matches_the_digest_osslsigncode_signs";
    let (Some(osslsigncode), Some(openssl)) = (
        cvm_core::deps::find_tool("osslsigncode"),
        cvm_core::deps::find_tool("openssl"),
    ) else {
        cvm_core::skip::skip(NAME, "osslsigncode or openssl is not installed");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (key, cert) = (dir.path().join("key.pem"), dir.path().join("cert.pem"));
    Cmd::new(&openssl)
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=test", "-days", "1",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .read()
        .unwrap();
    let code: Vec<u8> = (0..3000u32).map(|i| (i * 7 % 251) as u8).collect();
    let cases = [
        (
            "two sections",
            pe_image(&[(".text", &code), (".data", b"data")], b""),
        ),
        (
            "trailing data",
            pe_image(&[(".text", &code[..600])], &[0xa5; 40]),
        ),
        ("no sections", pe_image(&[], b"")),
    ];
    for (case, image) in cases {
        let (unsigned, signed) = (
            dir.path().join("unsigned.efi"),
            dir.path().join("signed.efi"),
        );
        std::fs::write(&unsigned, &image).unwrap();
        let _ = std::fs::remove_file(&signed);
        Cmd::new(&osslsigncode)
            .args(["sign", "-h", "sha384", "-certs"])
            .arg(&cert)
            .arg("-key")
            .arg(&key)
            .arg("-in")
            .arg(&unsigned)
            .arg("-out")
            .arg(&signed)
            .read()
            .unwrap();
        // Verification of the self-signed chain fails; the digests are printed before that.
        let output = Cmd::new(&osslsigncode)
            .arg("verify")
            .arg("-in")
            .arg(&signed)
            .output()
            .unwrap();
        let output = String::from_utf8_lossy(&output.stdout).into_owned();
        let signed_digest = output
            .lines()
            .find_map(|line| line.strip_prefix("Current message digest"))
            .and_then(|rest| rest.split(':').nth(1))
            .unwrap_or_else(|| panic!("{case}: no digest in osslsigncode's output:\n{output}"))
            .trim()
            .to_ascii_lowercase();
        let signed_image = std::fs::read(&signed).unwrap();
        assert_eq!(
            hex::encode(authenticode_sha384(&signed_image).unwrap()),
            signed_digest,
            "{case}"
        );
        // osslsigncode pads to 8 bytes before the signature; these images are already aligned,
        // so the hash of the unsigned image is the same.
        assert_eq!(
            hex::encode(authenticode_sha384(&image).unwrap()),
            signed_digest,
            "{case}"
        );
    }
}

#[test]
fn uki_events_come_from_its_sections() {
    let linux = pe_image(&[(".text", b"kernel code")], b"");
    let cmdline = b"console=ttyS0 root=/dev/vda2\n\0";
    let initrd: Vec<u8> = (0..5000u32).map(|i| i as u8).collect();
    let uki = pe_image(
        &[
            (".osrel", b"ID=test\n"),
            (".cmdline", cmdline),
            (".initrd", &initrd),
            (".linux", &linux),
        ],
        b"",
    );
    let events = UkiEvents::of(&uki).unwrap();
    assert_eq!(events.uki, authenticode_sha384(&uki).unwrap());
    assert_eq!(events.linux, authenticode_sha384(&linux).unwrap());
    assert_eq!(events.initrd, Some(sha384(&initrd)));
    // UTF-16LE of the mangled command line and a NUL, as the Linux EFI stub measures it.
    let utf16: Vec<u8> = "console=ttyS0 root=/dev/vda2\0"
        .bytes()
        .flat_map(|byte| [byte, 0])
        .collect();
    assert_eq!(events.load_options, Some(sha384(&utf16)));
    let rtmr1 = events.rtmr1_events();
    assert_eq!(rtmr1[0], events.uki);
    assert_eq!(rtmr1[3], events.linux);
    assert_eq!(rtmr1[5], exit_boot_services_returned());

    let no_linux = pe_image(&[(".cmdline", cmdline)], b"");
    let err = UkiEvents::of(&no_linux).unwrap_err();
    assert!(format!("{err}").contains(".linux"), "{err}");
    let err = UkiEvents::of(b"not a PE image at all").unwrap_err();
    assert!(format!("{err}").contains("MZ"), "{err}");
    // A section that claims more file bytes than the image has is refused, not read past.
    let mut truncated = uki.clone();
    truncated.truncate(uki.len() - 0x200);
    let err = Pe::parse(&truncated).unwrap_err();
    assert!(format!("{err}").contains("beyond the image"), "{err}");
    assert_eq!(stub_cmdline(b"a\tb  \r\n\0"), "a b");
}

proptest! {
    /// Corrupt headers and sections give errors, never a panic or a read past the image.
    #[test]
    fn mutated_ukis_never_panic(
        edits in proptest::collection::vec((0usize..0x400, any::<u8>()), 1..8),
        cut in 0usize..0x1400,
    ) {
        let linux = pe_image(&[(".text", b"kernel")], b"");
        let mut uki = pe_image(&[(".cmdline", b"x"), (".linux", &linux)], b"");
        for (at, byte) in edits {
            uki[at] = byte;
        }
        uki.truncate(uki.len().saturating_sub(cut));
        let _ = UkiEvents::of(&uki);
        let _ = authenticode_sha384(&uki);
    }
}
