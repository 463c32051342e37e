//! The guest firewall: rendered rulesets are snapshots (tests/data/image/egress/), read back by
//! [`parse`] to exactly the model's endpoints, refused when edited by hand, and accepted by the
//! real `nft --check` (in an empty network namespace) where nftables is installed.

use std::{
    fs,
    path::{Path, PathBuf},
};

use cvm_core::{
    cmd::Cmd,
    model::{Network, NetworkMode},
};
use expect_test::expect_file;

use super::*;

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/image/egress")
        .join(name)
}

fn network(mode: NetworkMode, egress: &[&str]) -> Network {
    Network {
        mode,
        egress: egress.iter().map(|e| e.to_string()).collect(),
        ..Network::default()
    }
}

/// The networks of the snapshots: no network (the default model), a bridged CVM with pinned and
/// named endpoints, and QEMU user networking with addresses only.
fn cases() -> Vec<(&'static str, Network)> {
    vec![
        ("none.nft", network(NetworkMode::None, &[])),
        (
            "bridge-mixed.nft",
            network(
                NetworkMode::Bridge,
                &[
                    "ccm.example.com:443",
                    "192.0.2.10:443",
                    "dsm.example.com:8443",
                ],
            ),
        ),
        (
            "user-pinned.nft",
            network(NetworkMode::User, &["198.51.100.7:443"]),
        ),
    ]
}

#[test]
fn rulesets_match_their_snapshots_and_read_back_to_the_model() {
    for (name, network) in cases() {
        let text = ruleset(&network).unwrap();
        expect_file![data(name)].assert_eq(&text);
        let allowed = parse(&text).unwrap();
        assert_eq!(allowed.endpoints, network.egress, "{name}");
        let named: Vec<String> = network
            .egress
            .iter()
            .filter(|e| e.starts_with(|c: char| c.is_ascii_alphabetic()))
            .cloned()
            .collect();
        assert_eq!(allowed.by_port_only, named, "{name}");
        assert_eq!(allowed.dns, !named.is_empty(), "{name}");
        assert_eq!(allowed.dhcp, network.mode != NetworkMode::None, "{name}");
    }
}

#[test]
fn a_ruleset_edited_by_hand_is_not_read_as_ours() {
    let text = ruleset(&network(NetworkMode::Bridge, &["192.0.2.10:443"])).unwrap();
    for (from, to, why) in [
        (
            "ip daddr 192.0.2.10 tcp dport 443 accept comment \"cvm:egress:192.0.2.10:443\"",
            "tcp dport 443 accept comment \"cvm:egress:192.0.2.10:443\"",
            "does not match its tag",
        ),
        (
            "ct state established,related accept\n\t\tudp sport 68",
            "ct state established,related accept\n\t\taccept\n\t\tudp sport 68",
            "cannot read",
        ),
        (
            "hook output priority filter; policy drop;",
            "hook output priority filter; policy accept;",
            "does not drop by default",
        ),
        ("table inet cvm {", "table ip other {", "does not know"),
    ] {
        assert!(text.contains(from), "{from}");
        let edited = text.replacen(from, to, 1);
        let err = parse(&edited).unwrap_err();
        assert!(err.contains(why), "{why}: {err}");
    }
}

#[test]
fn an_endpoint_too_long_for_a_comment_is_refused_with_its_key() {
    let long = format!("{}.example.com:443", "a".repeat(120));
    let err = ruleset(&network(NetworkMode::Bridge, &["192.0.2.1:443", &long])).unwrap_err();
    assert!(cvm_core::error::is_bad_input(&err));
    assert!(
        format!("{err:#}").starts_with("launch.network.egress[1]: "),
        "{err:#}"
    );
}

#[test]
fn install_writes_the_ruleset_unit_and_dhcp_only_with_a_network() {
    for (mode, dhcp) in [(NetworkMode::None, false), (NetworkMode::User, true)] {
        let root = tempfile::tempdir().unwrap();
        let network = network(mode, &[]);
        install(root.path(), &network, &ruleset(&network).unwrap()).unwrap();
        let text = fs::read_to_string(root.path().join(RULESET_IN_GUEST)).unwrap();
        assert_eq!(parse(&text).unwrap().dhcp, dhcp);
        let wants = root
            .path()
            .join("etc/systemd/system/sysinit.target.wants/cvm-egress.service");
        assert_eq!(
            fs::read_link(&wants).unwrap(),
            Path::new("../cvm-egress.service")
        );
        assert!(fs::read_to_string(
            root.path()
                .join("etc/systemd/system/systemd-networkd.service.d/cvm-egress.conf")
        )
        .unwrap()
        .contains("Requires=cvm-egress.service"));
        assert_eq!(
            root.path()
                .join("etc/systemd/network/20-cvm.network")
                .exists(),
            dhcp
        );
        assert_eq!(
            root.path()
                .join("etc/systemd/system/multi-user.target.wants/systemd-networkd.service")
                .is_symlink(),
            dhcp
        );
    }
}

/// nftables itself accepts every snapshot (`nft --check` in a new network namespace, so the
/// host's own ruleset is never touched).
#[test]
fn nft_accepts_every_ruleset() {
    const NAME: &str = "nft_accepts_every_ruleset";
    let Some(nft) = cvm_core::deps::find_tool("nft") else {
        cvm_core::skip::skip(NAME, "nft is not installed (Debian package nftables)");
        return;
    };
    if !cvm_core::deps::is_root() {
        cvm_core::skip::skip(NAME, "needs root for a network namespace");
        return;
    }
    for (name, _) in cases() {
        Cmd::new("unshare")
            .arg("--net")
            .arg(&nft)
            .args(["--check", "--file"])
            .arg(data(name))
            .run()
            .unwrap_or_else(|err| panic!("{name}: {err:#}"));
    }
    // And refuses a broken one, so the check above can fail.
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("broken.nft");
    fs::write(
        &broken,
        fs::read_to_string(data("none.nft"))
            .unwrap()
            .replace("policy drop;", "policy dorp;"),
    )
    .unwrap();
    assert!(Cmd::new("unshare")
        .arg("--net")
        .arg(&nft)
        .args(["--check", "--file"])
        .arg(&broken)
        .run()
        .is_err());
}
