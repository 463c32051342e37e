//! The guest's own firewall: an nftables ruleset rendered from the model's `launch.network`,
//! loaded by `cvm-egress.service` before any network comes up, and part of the dm-verity root (so
//! the launch measurement covers the egress policy). Everything not listed is dropped, in and
//! out: the inference endpoint's port inbound, the model's outbound endpoints, and what they need
//! (DHCP when the launch gives the CVM a network, DNS when an endpoint is a host name).
//!
//! The firewall cannot match host names: an endpoint given by name is allowed by its port to any
//! address, and [`Allowed::by_port_only`] says so; endpoints given as IPv4 addresses are pinned.
//! Every rule that lets traffic through carries a `cvm:` comment, so `cargo xtask validate`
//! (`e2e.egress`) reads the policy back out of the finished image with [`parse`].

use std::{net::Ipv4Addr, path::Path};

use anyhow::Result;
use cvm_core::model::{Network, NetworkMode};

use super::overlay::{self, OverlayFile};

/// The ruleset's path in the guest.
pub const RULESET_IN_GUEST: &str = "etc/cvm/egress.nft";
/// The unit that loads it (enabled from sysinit.target).
pub const UNIT: &str = include_str!("../../../templates/guest/systemd/cvm-egress.service");
/// systemd-networkd waits for the firewall and does not start without it.
pub const NETWORKD_DROP_IN: &str =
    include_str!("../../../templates/guest/systemd/networkd-cvm-egress.conf");
/// DHCP on the CVM's virtio NIC (only when the launch gives it a network).
pub const NETWORK_FILE: &str = include_str!("../../../templates/guest/systemd/20-cvm.network");

/// nftables keeps at most this many bytes of a rule comment.
const MAX_COMMENT: usize = 128;

/// The tag of an outbound endpoint's rule.
const EGRESS_TAG: &str = "cvm:egress:";

/// The nftables ruleset for `network`; an endpoint too long for a rule comment is an error naming
/// its key.
pub fn ruleset(network: &Network) -> Result<String> {
    let connected = network.mode != NetworkMode::None;
    let mut input = Vec::new();
    let mut output = Vec::new();
    if connected {
        input.push(format!(
            "tcp dport {port} accept comment \"cvm:inbound:{port}\"",
            port = network.guest_port
        ));
        input.push("udp sport 67 udp dport 68 accept comment \"cvm:dhcp\"".to_owned());
        output.push("udp sport 68 udp dport 67 accept comment \"cvm:dhcp\"".to_owned());
    }
    let named = network
        .egress
        .iter()
        .any(|endpoint| endpoint_address(endpoint).is_none());
    if named {
        output.push("meta l4proto { tcp, udp } th dport 53 accept comment \"cvm:dns\"".to_owned());
    }
    for (index, endpoint) in network.egress.iter().enumerate() {
        let comment = format!("{EGRESS_TAG}{endpoint}");
        if comment.len() > MAX_COMMENT {
            return Err(cvm_core::error::bad_input(format!(
                "launch.network.egress[{index}]: {endpoint:?} is longer than the firewall's rule comments allow ({} bytes); use a shorter name or the address",
                MAX_COMMENT - EGRESS_TAG.len()
            )));
        }
        let port = endpoint.rsplit_once(':').map_or("", |(_, port)| port);
        output.push(match endpoint_address(endpoint) {
            Some(address) => {
                format!("ip daddr {address} tcp dport {port} accept comment \"{comment}\"")
            }
            None => format!("tcp dport {port} accept comment \"{comment}\""),
        });
    }
    let chain = |name: &str, rules: &[String]| {
        let mut text = format!(
            "\tchain {name} {{\n\t\ttype filter hook {name} priority filter; policy drop;\n"
        );
        if name != "forward" {
            let lo = if name == "input" { "iif" } else { "oif" };
            text.push_str(&format!("\t\t{lo} \"lo\" accept\n"));
            text.push_str("\t\tct state established,related accept\n");
        }
        for rule in rules {
            text.push_str(&format!("\t\t{rule}\n"));
        }
        text.push_str("\t}\n");
        text
    };
    Ok(format!(
        "#!/usr/sbin/nft -f\n\
         # The guest firewall, rendered by cvm-stack from the model's launch.network. It is part of\n\
         # the dm-verity root, so the launch measurement covers it. Every rule that lets traffic\n\
         # through is tagged with a \"cvm:\" comment, which `cargo xtask validate` reads back.\n\
         flush ruleset\n\
         \n\
         table inet cvm {{\n{}\n{}\n{}}}\n",
        chain("input", &input),
        chain("forward", &[]),
        chain("output", &output),
    ))
}

/// The IPv4 address of `HOST:PORT` when HOST is one.
fn endpoint_address(endpoint: &str) -> Option<Ipv4Addr> {
    endpoint.rsplit_once(':')?.0.parse().ok()
}

/// What a ruleset lets out, as [`parse`] reads it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Allowed {
    /// The outbound endpoints (`HOST:PORT`), in rule order.
    pub endpoints: Vec<String>,
    /// Of those, the ones given by name: allowed by port to any address.
    pub by_port_only: Vec<String>,
    /// DNS (port 53) is open.
    pub dns: bool,
    /// DHCP is open.
    pub dhcp: bool,
}

/// Reads the outbound policy of a ruleset rendered by [`ruleset`]. Anything it does not recognise
/// in the output chain (a rule that accepts without a `cvm:` tag, another table, a chain policy
/// other than drop) is an error saying what, since the policy could then not be judged.
pub fn parse(text: &str) -> Result<Allowed, String> {
    let mut allowed = Allowed::default();
    let mut chain: Option<&str> = None;
    let mut output_policy_drop = false;
    for (number, raw) in text.lines().enumerate() {
        let line = raw.trim();
        let at = || format!("line {}: {line:?}", number + 1);
        if line.is_empty() || line.starts_with('#') || line == "flush ruleset" || line == "}" {
            if line == "}" {
                chain = None;
            }
            continue;
        }
        if line.starts_with("table ") {
            if line != "table inet cvm {" {
                return Err(format!("{}: a table this version does not know", at()));
            }
            continue;
        }
        if let Some(name) = line
            .strip_prefix("chain ")
            .and_then(|rest| rest.strip_suffix(" {"))
        {
            chain = Some(match name {
                "input" => "input",
                "forward" => "forward",
                "output" => "output",
                _ => return Err(format!("{}: a chain this version does not know", at())),
            });
            continue;
        }
        if chain != Some("output") {
            continue;
        }
        if line.starts_with("type filter hook output") {
            output_policy_drop = line.ends_with("policy drop;");
            continue;
        }
        if line == "oif \"lo\" accept" || line == "ct state established,related accept" {
            continue;
        }
        let tag = line
            .strip_suffix('"')
            .and_then(|rest| rest.rsplit_once(" comment \"cvm:"))
            .map(|(_, tag)| tag);
        match tag {
            Some("dns") => allowed.dns = true,
            Some("dhcp") => allowed.dhcp = true,
            Some(tag) if tag.starts_with("egress:") => {
                let endpoint = &tag["egress:".len()..];
                let port = endpoint.rsplit_once(':').map_or("", |(_, port)| port);
                let pinned = endpoint_address(endpoint)
                    .map(|address| format!("ip daddr {address} tcp dport {port} accept "));
                match pinned {
                    Some(rule) if line.starts_with(&rule) => {}
                    None if line.starts_with(&format!("tcp dport {port} accept ")) => {
                        allowed.by_port_only.push(endpoint.to_owned());
                    }
                    _ => return Err(format!("{}: the rule does not match its tag", at())),
                }
                allowed.endpoints.push(endpoint.to_owned());
            }
            _ => return Err(format!("{}: an output rule this version cannot read", at())),
        }
    }
    if !output_policy_drop {
        return Err("the output chain does not drop by default".to_owned());
    }
    Ok(allowed)
}

/// Writes `rules` (the [`ruleset`] of `network`), the unit that loads it, and (when the launch
/// gives the CVM a network) systemd-networkd's DHCP configuration into the guest tree at `root`.
pub fn install(root: &Path, network: &Network, rules: &str) -> Result<()> {
    let file = |path: &str, contents: &str| OverlayFile {
        path: path.to_owned(),
        contents: contents.as_bytes().to_vec(),
        mode: 0o644,
    };
    let mut files = vec![
        file(RULESET_IN_GUEST, rules),
        file("etc/systemd/system/cvm-egress.service", UNIT),
        file(
            "etc/systemd/system/systemd-networkd.service.d/cvm-egress.conf",
            NETWORKD_DROP_IN,
        ),
    ];
    let connected = network.mode != NetworkMode::None;
    if connected {
        files.push(file("etc/systemd/network/20-cvm.network", NETWORK_FILE));
    }
    overlay::write(&files, root)?;
    overlay::link(
        root,
        "../cvm-egress.service",
        "etc/systemd/system/sysinit.target.wants/cvm-egress.service",
    )?;
    if connected {
        overlay::link(
            root,
            "/usr/lib/systemd/system/systemd-networkd.service",
            "etc/systemd/system/multi-user.target.wants/systemd-networkd.service",
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
