//! Stage 8, `e2e.egress`: what the CVM can reach. Two things decide it: the network the rendered
//! launch script gives the CVM (its `-nic`/`-netdev` arguments) and the guest's own egress
//! firewall, read from the finished image. The check passes only when together they allow exactly
//! the model's outbound endpoints (`launch.network.egress`) and nothing else.

use std::path::Path;

use cvm_core::{
    check::{CheckResult, Status},
    model::{LoadedModel, Tee},
};
use guest_image::image::egress;

/// The check id.
pub const ID: &str = "e2e.egress";
/// The check title.
pub const TITLE: &str = "the CVM may reach exactly the model's outbound endpoints";

/// What the image's firewall says, as this stage reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GuestFirewall {
    /// The image has no cvm-stack firewall (`/etc/cvm/egress.nft`).
    Absent,
    /// The ruleset exists but is not one this version renders (the reason).
    Unreadable(String),
    /// The outbound policy of the ruleset.
    Rules(egress::Allowed),
}

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

/// Judges a launch network and the guest's firewall against the model's endpoints.
pub fn judge(
    network: &LaunchNetwork,
    firewall: &GuestFirewall,
    endpoints: &[String],
) -> CheckResult {
    let wanted = if endpoints.is_empty() {
        "no outbound endpoint".to_owned()
    } else {
        endpoints.join(", ")
    };
    let ruleset = format!("/{}", egress::RULESET_IN_GUEST);
    match (network, firewall) {
        (LaunchNetwork::None, _) if endpoints.is_empty() => result(
            Status::Pass,
            "the launch gives the CVM no network and the model lists no outbound endpoint".to_owned(),
            "",
        ),
        (LaunchNetwork::None, _) => result(
            Status::Fail,
            format!("the model lists {wanted}, but the launch gives the CVM no network"),
            "set launch.network.mode to bridge (or user) so the CVM can reach its endpoints, then render again",
        ),
        (open, GuestFirewall::Absent) => result(
            Status::Fail,
            format!(
                "{} and the image has no egress firewall ({ruleset} absent): the CVM can reach any host, not only {wanted}",
                match open {
                    LaunchNetwork::UserNat => "QEMU user-mode networking forwards every outbound connection",
                    _ => "a bridged CVM reaches whatever the host's network allows",
                },
            ),
            "rebuild the image with this cvm-stack (cargo xtask guest build), which renders the guest firewall from launch.network.egress",
        ),
        (_, GuestFirewall::Unreadable(why)) => result(
            Status::Fail,
            format!("the image's firewall {ruleset} is not one cvm-stack rendered ({why}), so what it lets out is unknown"),
            "rebuild the image with cargo xtask guest build; do not edit the rendered ruleset",
        ),
        (_, GuestFirewall::Rules(allowed)) => {
            let extra: Vec<&String> = allowed.endpoints.iter().filter(|e| !endpoints.contains(e)).collect();
            let missing: Vec<&String> = endpoints.iter().filter(|e| !allowed.endpoints.contains(e)).collect();
            if !extra.is_empty() || !missing.is_empty() {
                let list = |items: &[&String]| if items.is_empty() { "nothing".to_owned() } else { items.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ") };
                return result(
                    Status::Fail,
                    format!(
                        "the image's firewall lets out {} the model does not list and blocks {} it lists (model: {wanted})",
                        list(&extra),
                        list(&missing)
                    ),
                    "rebuild the image from this model (cargo xtask guest build) so its firewall is rendered from launch.network.egress",
                );
            }
            let opened: Vec<&str> = [(allowed.dhcp, "DHCP"), (allowed.dns, "DNS")]
                .iter()
                .filter(|(on, _)| *on)
                .map(|(_, what)| *what)
                .collect();
            let also = if opened.is_empty() {
                String::new()
            } else {
                format!(" (plus {})", opened.join(" and "))
            };
            if allowed.by_port_only.is_empty() {
                result(
                    Status::Pass,
                    format!("the image's firewall lets out exactly {wanted}{also} and drops everything else"),
                    "",
                )
            } else {
                result(
                    Status::Warn,
                    format!(
                        "the image's firewall lets out exactly the model's endpoints{also}, but {} {} given by name, which a firewall cannot match: their ports are open to any address",
                        allowed.by_port_only.join(", "),
                        if allowed.by_port_only.len() == 1 { "is" } else { "are" }
                    ),
                    "list those endpoints by IPv4 address in launch.network.egress to pin them (and close DNS)",
                )
            }
        }
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
    let firewall =
        match guest_image::image::extract_root(&artifacts.join("disk.qcow2"), work.path()) {
            Ok((tree, _)) => match std::fs::read_to_string(tree.join(egress::RULESET_IN_GUEST)) {
                Ok(text) => match egress::parse(&text) {
                    Ok(allowed) => GuestFirewall::Rules(allowed),
                    Err(why) => GuestFirewall::Unreadable(why),
                },
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => GuestFirewall::Absent,
                Err(err) => GuestFirewall::Unreadable(format!("cannot read it: {err}")),
            },
            Err(err) => {
                return result(
                    Status::Fail,
                    format!("cannot read the guest's root filesystem out of disk.qcow2: {err:#}"),
                    "rebuild the image (cargo xtask guest build)",
                )
            }
        };
    judge(&network, &firewall, &model.model.launch.network.egress)
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
        let none = judge(&LaunchNetwork::None, &GuestFirewall::Absent, &[]);
        assert_eq!(none.status, Status::Pass, "{}", none.detail);
        let starved = judge(&LaunchNetwork::None, &GuestFirewall::Absent, &endpoints);
        assert_eq!(starved.status, Status::Fail);
        assert!(starved
            .detail
            .contains("lists ccm.example.com:443, but the launch gives the CVM no network"));
        let open = judge(&LaunchNetwork::UserNat, &GuestFirewall::Absent, &endpoints);
        assert_eq!(open.status, Status::Fail);
        assert!(
            open.detail
                .contains("can reach any host, not only ccm.example.com:443"),
            "{}",
            open.detail
        );
        let bridged = judge(&LaunchNetwork::Bridge, &GuestFirewall::Absent, &[]);
        assert_eq!(bridged.status, Status::Fail);
        let edited = judge(
            &LaunchNetwork::Bridge,
            &GuestFirewall::Unreadable(
                "line 3: an output rule this version cannot read".to_owned(),
            ),
            &endpoints,
        );
        assert_eq!(edited.status, Status::Fail);
        assert!(edited.detail.contains("line 3"), "{}", edited.detail);
    }

    /// The rendered snapshots of guest-image, read back and judged against their own model and a
    /// different one.
    #[test]
    fn the_rendered_firewall_is_judged_against_the_model() {
        let rules = |name: &str| {
            let text = std::fs::read_to_string(
                Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("../guest-image/tests/data/image/egress")
                    .join(name),
            )
            .unwrap();
            GuestFirewall::Rules(egress::parse(&text).unwrap())
        };
        let pinned = judge(
            &LaunchNetwork::UserNat,
            &rules("user-pinned.nft"),
            &["198.51.100.7:443".to_owned()],
        );
        assert_eq!(pinned.status, Status::Pass, "{}", pinned.detail);
        assert!(
            pinned
                .detail
                .contains("exactly 198.51.100.7:443 (plus DHCP)"),
            "{}",
            pinned.detail
        );
        let mixed_model: Vec<String> = [
            "ccm.example.com:443",
            "192.0.2.10:443",
            "dsm.example.com:8443",
        ]
        .map(str::to_owned)
        .to_vec();
        let mixed = judge(
            &LaunchNetwork::Bridge,
            &rules("bridge-mixed.nft"),
            &mixed_model,
        );
        assert_eq!(mixed.status, Status::Warn, "{}", mixed.detail);
        assert!(
            mixed
                .detail
                .contains("ccm.example.com:443, dsm.example.com:8443 are given by name"),
            "{}",
            mixed.detail
        );
        // The image was built for another model: both directions are named.
        let other = judge(
            &LaunchNetwork::Bridge,
            &rules("user-pinned.nft"),
            &["192.0.2.10:443".to_owned()],
        );
        assert_eq!(other.status, Status::Fail);
        assert!(
            other.detail.contains(
                "lets out 198.51.100.7:443 the model does not list and blocks 192.0.2.10:443"
            ),
            "{}",
            other.detail
        );
    }
}
