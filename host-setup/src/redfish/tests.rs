//! Unit tests for the Redfish helpers (the HTTP client is tested against a local server in
//! tests/it/redfish.rs).

use super::*;

#[test]
fn base64_matches_rfc_4648_vectors() {
    for (input, expected) in [
        ("", ""),
        ("f", "Zg=="),
        ("fo", "Zm8="),
        ("foo", "Zm9v"),
        ("foob", "Zm9vYg=="),
        ("fooba", "Zm9vYmE="),
        ("foobar", "Zm9vYmFy"),
        ("root:calvin", "cm9vdDpjYWx2aW4="),
    ] {
        assert_eq!(base64(input.as_bytes()), expected, "{input:?}");
    }
}

#[test]
fn credentials_debug_hides_the_password() {
    let credentials = Credentials {
        username: "root".to_owned(),
        password: "calvin".to_owned(),
    };
    let shown = format!("{credentials:?}");
    assert!(
        shown.contains("root") && !shown.contains("calvin"),
        "{shown}"
    );
}

#[test]
fn a_url_without_scheme_is_bad_input() {
    let credentials = Credentials {
        username: "u".to_owned(),
        password: "p".to_owned(),
    };
    let err = Client::new("idrac.local", &credentials, Duration::from_secs(1), true).unwrap_err();
    assert!(cvm_core::error::is_bad_input(&err), "{err:#}");
}
