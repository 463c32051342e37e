//! The telemetry check over recorded serial logs (tests/data/telemetry, see its README).

use std::path::Path;

use cvm_core::check::Status;

use super::{check, sensitive};

fn log(name: &str) -> String {
    std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data/telemetry")
            .join(name),
    )
    .unwrap()
}

#[track_caller]
fn check_log(name: &str, status: Status, detail_has: &[&str]) {
    let result = check(&log(name));
    assert_eq!(result.status, status, "{name}: {}", result.detail);
    for text in detail_has {
        assert!(
            result.detail.contains(text),
            "{name}: {text:?} not in {}",
            result.detail
        );
    }
}

#[test]
fn a_real_emulated_boot_passes() {
    check_log(
        "emulated-boot.log",
        Status::Pass,
        &[
            "5 events",
            "startup ok",
            "attestation-heartbeat unavailable",
            "cert-issuance not-configured",
            "dsm-access not-configured",
        ],
    );
}

#[test]
fn a_missing_kind_fails() {
    check_log(
        "missing-kinds.log",
        Status::Fail,
        &["no cert-issuance, no dsm-access event"],
    );
}

#[test]
fn leaked_secrets_fail_and_are_named() {
    check_log(
        "leaks.log",
        Status::Fail,
        &[
            "cert-issuance.detail.certificate holds a PEM block",
            "dsm-access.detail.api_key is a credential field",
            "dsm-access.detail.authorization holds a bearer token",
            "attestation-heartbeat.detail.measurement is not a 48-byte hex digest",
            "service-health.detail.note holds a long base64 string",
        ],
    );
}

#[test]
fn a_secret_on_another_console_line_fails() {
    check_log(
        "console-leak.log",
        Status::Fail,
        &[
            "serial log line 2 holds a PEM block",
            "serial log line 3 holds private key material",
            "serial log line 5 holds a bearer token",
        ],
    );
    // The good boot's own non-event lines carry nothing of the sort.
    assert!(super::console_leaks(&log("emulated-boot.log")).is_empty());
}

#[test]
fn no_events_at_all_fails() {
    check_log(
        "../serial/emulated-ready.log",
        Status::Fail,
        &["no startup"],
    );
}

#[test]
fn what_counts_as_sensitive() {
    for (text, expect) in [
        ("-----BEGIN CERTIFICATE-----", true),
        ("Authorization: Bearer abc", true),
        (&"ab".repeat(32), true),
        ("dGhpcyBpcyBhIHNlY3JldCBrZXkgdGhhdCBsZWFrczEyMw==", true),
        ("systemd-networkd.service", false),
        ("6.17.0-42-generic", false),
        ("no TEE in this boot: there is no report to attest", false),
        ("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", false),
    ] {
        assert_eq!(sensitive(text).is_some(), expect, "{text}");
    }
}
