//! Stage 8, `e2e.egress`: what the CVM can reach. Two things decide it: the network the rendered
//! launch script gives the CVM (its `-nic`/`-netdev` arguments) and the guest's own egress
//! firewall, read from the finished image. The check passes only when together they allow exactly
//! the model's outbound endpoints (`launch.network.egress`) and nothing else.

use std::path::Path;

use cvm_core::{
    check::{CheckResult, Status},
    model::{LoadedModel, Tee},
};

/// The check id.
pub const ID: &str = "e2e.egress";
/// The check title.
pub const TITLE: &str = "the CVM may reach exactly the model's outbound endpoints";

/// Files that would hold the guest's egress rules; the image ships none of them today.
pub const GUEST_FIREWALL_FILES: &[&str] = &["etc/nftables.conf", "etc/cvm/egress.nft"];

/// The network a launch script gives the CVM, from its QEMU arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LaunchNetwork {
    /// `-nic none`: no network device.
    None,
    /// `-netdev user,…`: QEMU's user-mode NAT (every outbound connection is forwarded).
    UserNat,
    /// `-netdev bridge,…`: a tap on a host bridge (the host's network decides).
    Bridge,
}

/// Reads the network out of a rendered launch script; `None` when it has no network argument.
pub fn launch_network(script: &str) -> Option<LaunchNetwork> {
    script.lines().map(str::trim).find_map(|line| {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["-nic", "none", ..] => Some(LaunchNetwork::None),
            ["-netdev", spec, ..] if spec.trim_matches('\'').starts_with("user,") => {
                // `restrict=on` cuts user-mode networking off from the outside.
                Some(if spec.contains("restrict=on") {
                    LaunchNetwork::None
                } else {
                    LaunchNetwork::UserNat
                })
            }
            ["-netdev", spec, ..] if spec.trim_matches('\'').starts_with("bridge,") => {
                Some(LaunchNetwork::Bridge)
            }
            _ => None,
        }
    })
}

fn result(status: Status, detail: String, remediation: &str) -> CheckResult {
    CheckResult::new(ID, TITLE, status, detail, remediation)
}

/// Judges a launch network and the guest's firewall files against the model's endpoints.
pub fn judge(network: &LaunchNetwork, guest_rules: &[String], endpoints: &[String]) -> CheckResult {
    let wanted = if endpoints.is_empty() {
        "no outbound endpoint".to_owned()
    } else {
        endpoints.join(", ")
    };
    match (network, endpoints.is_empty()) {
        (LaunchNetwork::None, true) => result(
            Status::Pass,
            "the launch gives the CVM no network and the model lists no outbound endpoint".to_owned(),
            "",
        ),
        (LaunchNetwork::None, false) => result(
            Status::Fail,
            format!("the model lists {wanted}, but the launch gives the CVM no network"),
            "set launch.network.mode to bridge (or user) so the CVM can reach its endpoints, then render again",
        ),
        (open, _) if guest_rules.is_empty() => result(
            Status::Fail,
            format!(
                "{} and the image has no egress firewall ({} absent): the CVM can reach any host, not only {wanted}",
                match open {
                    LaunchNetwork::UserNat => "QEMU user-mode networking forwards every outbound connection",
                    _ => "a bridged CVM reaches whatever the host's network allows",
                },
                GUEST_FIREWALL_FILES.join(", ")
            ),
            "restrict the CVM's traffic to the model's endpoints on the host (bridge firewall) or launch it without a network; cvm-stack does not yet ship a guest egress firewall",
        ),
        (_, _) => result(
            Status::Skip,
            format!(
                "the image has egress rules ({}) that this version cannot interpret; compare them with {wanted} by hand",
                guest_rules.join(", ")
            ),
            "",
        ),
    }
}

/// The whole check: the launch script and the root filesystem in `artifacts`.
pub fn check(model: &LoadedModel, artifacts: &Path) -> CheckResult {
    let tee = match model.model.deployment.tee {
        Tee::Snp => "snp",
        Tee::Tdx => "tdx",
    };
    let script_path = artifacts.join(format!("launch-{tee}.sh"));
    let Ok(script) = std::fs::read_to_string(&script_path) else {
        return result(
            Status::Skip,
            format!(
                "egress not checked: {} is missing; run cargo xtask launch render",
                script_path.display()
            ),
            "",
        );
    };
    let Some(network) = launch_network(&script) else {
        return result(
            Status::Fail,
            format!(
                "{} gives QEMU no network argument; QEMU's default NIC would reach anything",
                script_path.display()
            ),
            "render the launch script again with this cvm-stack (cargo xtask launch render)",
        );
    };
    let work = match tempfile::tempdir() {
        Ok(work) => work,
        Err(err) => {
            return result(
                Status::Fail,
                format!("cannot make a work directory: {err}"),
                "",
            )
        }
    };
    let guest_rules: Vec<String> =
        match guest_image::image::extract_root(&artifacts.join("disk.qcow2"), work.path()) {
            Ok((tree, _)) => GUEST_FIREWALL_FILES
                .iter()
                .filter(|file| tree.join(file).exists())
                .map(|file| format!("/{file}"))
                .collect(),
            Err(err) => {
                return result(
                    Status::Fail,
                    format!("cannot read the guest's root filesystem out of disk.qcow2: {err:#}"),
                    "rebuild the image (cargo xtask guest build)",
                )
            }
        };
    judge(&network, &guest_rules, &model.model.launch.network.egress)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn script(stem: &str) -> String {
        std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../guest-image/tests/data/launch/expect")
                .join(stem),
        )
        .unwrap()
    }

    #[test]
    fn the_network_is_read_from_rendered_scripts() {
        assert_eq!(
            launch_network(&script("snp-0gpu-direct/launch-snp.sh")),
            Some(LaunchNetwork::None)
        );
        assert_eq!(
            launch_network(&script("snp-1gpu-direct/launch-snp.sh")),
            Some(LaunchNetwork::UserNat)
        );
        assert_eq!(
            launch_network("-netdev 'user,id=n,restrict=on'"),
            Some(LaunchNetwork::None)
        );
        assert_eq!(
            launch_network("  -netdev bridge,id=net0,br=br0"),
            Some(LaunchNetwork::Bridge)
        );
        assert_eq!(launch_network("qemu_args=(\n -m 4G\n)"), None);
    }

    #[test]
    fn only_no_network_for_no_endpoint_passes_without_a_guest_firewall() {
        let endpoints = vec!["ccm.example.com:443".to_owned()];
        let none = judge(&LaunchNetwork::None, &[], &[]);
        assert_eq!(none.status, Status::Pass, "{}", none.detail);
        let starved = judge(&LaunchNetwork::None, &[], &endpoints);
        assert_eq!(starved.status, Status::Fail);
        assert!(starved
            .detail
            .contains("lists ccm.example.com:443, but the launch gives the CVM no network"));
        let open = judge(&LaunchNetwork::UserNat, &[], &endpoints);
        assert_eq!(open.status, Status::Fail);
        assert!(
            open.detail
                .contains("can reach any host, not only ccm.example.com:443"),
            "{}",
            open.detail
        );
        let bridged = judge(&LaunchNetwork::Bridge, &[], &[]);
        assert_eq!(bridged.status, Status::Fail);
        let ruled = judge(
            &LaunchNetwork::Bridge,
            &["/etc/nftables.conf".to_owned()],
            &endpoints,
        );
        assert_eq!(ruled.status, Status::Skip);
    }
}
