//! A small Redfish client for reading a BMC's BIOS attributes and registry (Dell iDRAC shapes).
//!
//! Read-only: it only sends GET requests. Every request has a timeout, so a BMC that never answers
//! becomes an error naming the URL instead of a hung `host collect`.

use std::time::Duration;

use anyhow::{anyhow, Context, Result};

/// The Dell system resource whose BIOS the collector reads.
pub const DELL_SYSTEM: &str = "/redfish/v1/Systems/System.Embedded.1";

/// The documents `host collect --redfish` stores (URL paths below the BMC's base URL).
pub const BIOS_DOCUMENTS: &[&str] = &[
    "/redfish/v1/Systems/System.Embedded.1/Bios",
    "/redfish/v1/Systems/System.Embedded.1/Bios/BiosRegistry",
];

/// The environment variables the credentials come from.
pub const USERNAME_ENV: &str = "REDFISH_USERNAME";
/// See [`USERNAME_ENV`].
pub const PASSWORD_ENV: &str = "REDFISH_PASSWORD";

/// Basic-auth credentials (never printed: `Debug` hides the password).
#[derive(Clone)]
pub struct Credentials {
    /// The BMC user.
    pub username: String,
    /// The BMC password.
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<hidden>")
            .finish()
    }
}

impl Credentials {
    /// Reads `REDFISH_USERNAME` and `REDFISH_PASSWORD`; bad input when either is missing.
    pub fn from_env() -> Result<Credentials> {
        let read = |name: &str| {
            std::env::var(name).map_err(|_| {
                cvm_core::error::bad_input(format!(
                    "--redfish needs the BMC credentials in {USERNAME_ENV} and {PASSWORD_ENV}; {name} is not set"
                ))
            })
        };
        Ok(Credentials {
            username: read(USERNAME_ENV)?,
            password: read(PASSWORD_ENV)?,
        })
    }
}

/// A Redfish service at a base URL such as `https://idrac.example:443`.
#[derive(Debug)]
pub struct Client {
    base: String,
    authorization: String,
    agent: ureq::Agent,
}

impl Client {
    /// A client for `base_url` that gives up on any request after `timeout`. BMCs commonly use
    /// self-signed certificates; `verify_tls = false` accepts them (the user asks for it).
    pub fn new(
        base_url: &str,
        credentials: &Credentials,
        timeout: Duration,
        verify_tls: bool,
    ) -> Result<Client> {
        let base = base_url.trim_end_matches('/').to_owned();
        if !(base.starts_with("https://") || base.starts_with("http://")) {
            return Err(cvm_core::error::bad_input(format!(
                "--redfish {base_url}: expected an http:// or https:// URL of the BMC"
            )));
        }
        let tls = ureq::tls::TlsConfig::builder()
            .disable_verification(!verify_tls)
            .build();
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(timeout))
            .http_status_as_error(false)
            .tls_config(tls)
            .build()
            .new_agent();
        let token = base64(format!("{}:{}", credentials.username, credentials.password).as_bytes());
        Ok(Client {
            base,
            authorization: format!("Basic {token}"),
            agent,
        })
    }

    /// GETs `path` (e.g. `/redfish/v1/Systems/System.Embedded.1/Bios`) as JSON.
    pub fn get(&self, path: &str) -> Result<serde_json::Value> {
        let url = format!("{}{}", self.base, path);
        let mut response = self
            .agent
            .get(&url)
            .header("Authorization", &self.authorization)
            .header("Accept", "application/json")
            .call()
            .with_context(|| format!("GET {url}"))?;
        let status = response.status().as_u16();
        match status {
            200..=299 => {}
            401 | 403 => {
                return Err(anyhow!(
                    "GET {url}: the BMC rejected the credentials (HTTP {status}); check {USERNAME_ENV} and {PASSWORD_ENV}"
                ))
            }
            _ => return Err(anyhow!("GET {url}: HTTP {status}")),
        }
        let body = response
            .body_mut()
            .read_to_string()
            .with_context(|| format!("reading the body of GET {url}"))?;
        serde_json::from_str(&body).with_context(|| format!("parsing the JSON of GET {url}"))
    }
}

/// Standard base64 with padding (RFC 4648), for the Basic authorization header.
pub fn base64(input: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let bytes = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let group = (u32::from(bytes[0]) << 16) | (u32::from(bytes[1]) << 8) | u32::from(bytes[2]);
        for index in 0..4 {
            if index <= chunk.len() {
                out.push(ALPHABET[((group >> (18 - 6 * index)) & 0x3f) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests;
