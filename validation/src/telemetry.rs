//! Stage 9, `e2e.telemetry`: the guest's operator telemetry lines (`CVM-EVENT {json}`, schema in
//! `guest_image::image::telemetry`) on the serial log: every kind present and well formed, and no
//! line carrying a sensitive payload (PEM blocks, private keys, bearer tokens, credential-named
//! fields, long base64 or hex strings other than the public launch measurement).

use cvm_core::check::{CheckResult, Status};
use guest_image::image::telemetry::{self, CvmEvent};
use serde_json::Value;

/// The check id.
pub const ID: &str = "e2e.telemetry";
/// The check title.
pub const TITLE: &str = "operator telemetry lines on the serial log, without sensitive payloads";

/// Field names whose values are public digests (the launch measurement), exempt from the hex rule.
const PUBLIC_DIGEST_FIELDS: &[&str] = &["measurement"];

/// Field-name fragments that mark a credential.
const CREDENTIAL_NAMES: &[&str] = &[
    "password",
    "passwd",
    "secret",
    "token",
    "api_key",
    "apikey",
    "private",
    "credential",
];

/// Why `text` (one event's JSON, or a value in it) looks like a sensitive payload, if it does.
pub fn sensitive(text: &str) -> Option<String> {
    let upper = text.to_ascii_uppercase();
    if upper.contains("-----BEGIN") {
        return Some("a PEM block".to_owned());
    }
    if upper.contains("PRIVATE KEY") {
        return Some("private key material".to_owned());
    }
    if upper.contains("BEARER ") {
        return Some("a bearer token".to_owned());
    }
    let longest = |accept: fn(char) -> bool| {
        text.split(|c: char| !accept(c))
            .map(str::len)
            .max()
            .unwrap_or(0)
    };
    if longest(|c| c.is_ascii_hexdigit()) >= 64 {
        return Some("a long hex string (key or secret material)".to_owned());
    }
    if longest(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '/' | '=' | '-' | '_')) >= 40
        && text.chars().any(|c| c.is_ascii_uppercase())
        && text.chars().any(|c| c.is_ascii_lowercase())
        && text.chars().any(|c| c.is_ascii_digit())
    {
        return Some("a long base64 string (key or token material)".to_owned());
    }
    None
}

/// The sensitive payloads in one event: credential-named fields anywhere, and sensitive values
/// outside the public digest fields.
fn event_leaks(value: &Value, path: &str, leaks: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, value) in map {
                let lower = key.to_ascii_lowercase();
                let here = format!("{path}.{key}");
                if CREDENTIAL_NAMES.iter().any(|name| lower.contains(name)) {
                    leaks.push(format!("{here} is a credential field"));
                } else if PUBLIC_DIGEST_FIELDS.contains(&key.as_str()) {
                    let digest_only = value
                        .as_str()
                        .is_some_and(|s| s.len() == 96 && s.chars().all(|c| c.is_ascii_hexdigit()));
                    if !digest_only {
                        leaks.push(format!("{here} is not a 48-byte hex digest"));
                    }
                } else {
                    event_leaks(value, &here, leaks);
                }
            }
        }
        Value::Array(items) => {
            for (index, item) in items.iter().enumerate() {
                event_leaks(item, &format!("{path}[{index}]"), leaks);
            }
        }
        Value::String(text) => {
            if let Some(why) = sensitive(text) {
                leaks.push(format!("{path} holds {why}"));
            }
        }
        _ => {}
    }
}

/// Unmistakable secret material (PEM blocks, private keys, bearer tokens) on serial lines that are
/// not `CVM-EVENT` lines: any guest program may write to the console. The hex and base64 rules stay
/// on the events only, since kernel lines carry public hashes and ids.
pub fn console_leaks(serial_log: &str) -> Vec<String> {
    serial_log
        .lines()
        .enumerate()
        .filter(|(_, line)| !line.contains(telemetry::PREFIX))
        .filter_map(|(index, line)| {
            let upper = line.to_ascii_uppercase();
            let why = if upper.contains("PRIVATE KEY") {
                "private key material"
            } else if upper.contains("-----BEGIN") {
                "a PEM block"
            } else if upper.contains("BEARER ") {
                "a bearer token"
            } else {
                return None;
            };
            Some(format!("serial log line {} holds {why}", index + 1))
        })
        .collect()
}

/// The telemetry check over one boot's serial log.
pub fn check(serial_log: &str) -> CheckResult {
    let lines = telemetry::events_in_log(serial_log);
    let mut problems: Vec<String> = console_leaks(serial_log)
        .into_iter()
        .map(|leak| format!("sensitive payload: {leak}"))
        .collect();
    let mut seen: Vec<CvmEvent> = Vec::new();
    for (json, parsed) in &lines {
        match parsed {
            Ok(event) => {
                if let Some(problem) = event.shape_problem() {
                    problems.push(problem);
                }
                let mut leaks = Vec::new();
                let value = serde_json::to_value(event).unwrap_or(Value::Null);
                event_leaks(&value, &event.kind, &mut leaks);
                problems.extend(
                    leaks
                        .into_iter()
                        .map(|leak| format!("sensitive payload: {leak}")),
                );
                seen.push(event.clone());
            }
            Err(err) => {
                // An unreadable line is still scanned: it must not leak either.
                match sensitive(json) {
                    Some(why) => {
                        problems.push(format!("sensitive payload in an unreadable line: {why}"))
                    }
                    None => problems.push(format!("unreadable CVM-EVENT line: {err}")),
                }
            }
        }
    }
    let missing: Vec<&str> = telemetry::KINDS
        .iter()
        .copied()
        .filter(|kind| !seen.iter().any(|event| event.kind == *kind))
        .collect();
    if !missing.is_empty() {
        problems.push(format!("no {} event", missing.join(", no ")));
    }
    if problems.is_empty() {
        let summary: Vec<String> = seen
            .iter()
            .map(|event| format!("{} {}", event.kind, event.status))
            .collect();
        CheckResult::new(
            ID,
            TITLE,
            Status::Pass,
            format!("{} events: {}", seen.len(), summary.join(", ")),
            "",
        )
    } else {
        CheckResult::new(
            ID,
            TITLE,
            Status::Fail,
            problems.join("; "),
            "the guest's cvm-status unit prints the CVM-EVENT lines (guest_image::image::telemetry); rebuild the image with this cvm-stack, and remove any secret from what the guest logs",
        )
    }
}

#[cfg(test)]
mod tests;
