//! The guest's operator telemetry (issue 8, stage 9): one `CVM-EVENT {json}` line per event on the
//! first serial port, next to the readiness line. The guest writes them ([`CvmEvent::to_line`]);
//! `validate` reads them back out of the serial log ([`events_in_log`]) and checks them.
//!
//! Schema (every field always present):
//! `{"kind": KIND, "uptime_s": seconds since boot, "status": STATUS, "detail": {…}}`.
//! Kinds are the signals the reference architecture names: `startup` (guest startup log),
//! `service-health`, `attestation-heartbeat`, `cert-issuance` (certificate issuance and its
//! failures) and `dsm-access` (key-manager access events). A signal whose agent is not in the image
//! says so (`not-configured`) instead of claiming success. `detail` holds plain facts only (unit
//! names, the public launch measurement), never keys, tokens or certificates.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The prefix of a telemetry line.
pub const PREFIX: &str = "CVM-EVENT ";

/// Every kind the guest emits at least once per boot.
pub const KINDS: &[&str] = &[
    "startup",
    "service-health",
    "attestation-heartbeat",
    "cert-issuance",
    "dsm-access",
];

/// The statuses an event may have.
pub const STATUSES: &[&str] = &["ok", "degraded", "failed", "unavailable", "not-configured"];

/// One telemetry event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CvmEvent {
    /// One of [`KINDS`].
    pub kind: String,
    /// Seconds since the guest booted (the guest's wall clock is not trusted).
    pub uptime_s: f64,
    /// One of [`STATUSES`].
    pub status: String,
    /// Plain, non-sensitive facts about the event.
    pub detail: BTreeMap<String, serde_json::Value>,
}

impl CvmEvent {
    /// An event of `kind` with `status` and no detail yet.
    pub fn new(kind: &str, uptime_s: f64, status: &str) -> Self {
        Self {
            kind: kind.to_owned(),
            uptime_s,
            status: status.to_owned(),
            detail: BTreeMap::new(),
        }
    }

    /// Adds one detail field.
    pub fn with(mut self, key: &str, value: impl Into<serde_json::Value>) -> Self {
        self.detail.insert(key.to_owned(), value.into());
        self
    }

    /// The line the guest prints.
    pub fn to_line(&self) -> String {
        format!(
            "{PREFIX}{}",
            serde_json::to_string(self).expect("an event is plain data")
        )
    }

    /// What is wrong with the event's shape: an unknown kind or status.
    pub fn shape_problem(&self) -> Option<String> {
        if !KINDS.contains(&self.kind.as_str()) {
            return Some(format!("unknown kind {:?}", self.kind));
        }
        if !STATUSES.contains(&self.status.as_str()) {
            return Some(format!("{}: unknown status {:?}", self.kind, self.status));
        }
        None
    }
}

/// Every `CVM-EVENT` line of a serial log: the raw JSON text and what parsing it gave.
pub fn events_in_log(log: &str) -> Vec<(String, Result<CvmEvent, String>)> {
    log.lines()
        .filter_map(|line| {
            let start = line.find(PREFIX)?;
            let json = line[start + PREFIX.len()..].trim_end_matches('\r').trim();
            Some((
                json.to_owned(),
                serde_json::from_str(json).map_err(|err| format!("{err}: {json}")),
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_line_round_trips_and_is_found_in_a_log() {
        let event = CvmEvent::new("service-health", 41.5, "degraded")
            .with("failed_units", vec!["x.service"]);
        let line = event.to_line();
        assert_eq!(
            line,
            r#"CVM-EVENT {"kind":"service-health","uptime_s":41.5,"status":"degraded","detail":{"failed_units":["x.service"]}}"#
        );
        let log = format!("[  1.0] boot\r\n{line}\r\nnoise CVM-EVENT {{not json\n");
        let found = events_in_log(&log);
        assert_eq!(found.len(), 2);
        assert_eq!(found[0].1.as_ref().unwrap(), &event);
        assert!(found[1].1.is_err());
        assert_eq!(event.shape_problem(), None);
        assert_eq!(
            CvmEvent::new("gossip", 1.0, "ok")
                .shape_problem()
                .as_deref(),
            Some("unknown kind \"gossip\"")
        );
        assert_eq!(
            CvmEvent::new("startup", 1.0, "great")
                .shape_problem()
                .as_deref(),
            Some("startup: unknown status \"great\"")
        );
    }
}
