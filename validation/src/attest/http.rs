//! The one blocking HTTPS client the providers use: ureq with rustls, every request bounded by a
//! timeout, the trusted roots either the built-in web roots or exactly the CA file given, and
//! error text from servers cut to one short line with every secret removed.

use std::{io::Read, path::Path, time::Duration};

use anyhow::{anyhow, Context, Result};
use cvm_core::error::bad_input;
use ureq::tls::{Certificate, ClientCert, PrivateKey, RootCerts, TlsConfig};

use super::{Secret, WorkloadIdentity};

/// Bytes of a response body kept (error bodies and JSON answers are small).
const MAX_BODY: u64 = 1 << 20;

/// Characters of a server's error text kept in a message.
const MAX_ERROR_TEXT: usize = 200;

/// A response: the status and, unless discarded, the body.
#[derive(Debug)]
pub struct Response {
    /// HTTP status.
    pub status: u16,
    /// The body (empty when discarded).
    pub body: String,
}

/// What to do with a response body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body {
    /// Read it (up to 1 MiB).
    Read,
    /// Read it only when the status is not a success (an error text); a success may hold key
    /// material.
    ReadUnlessSuccess,
}

/// The client.
pub struct Client {
    agent: ureq::Agent,
    timeout: Duration,
}

impl Client {
    /// A client trusting `ca_file` (PEM) instead of the web roots when given, presenting
    /// `workload`'s certificate when given (mutual TLS).
    pub fn new(
        ca_file: Option<&Path>,
        timeout: Duration,
        proxy_from_env: bool,
        workload: Option<&WorkloadIdentity>,
    ) -> Result<Self> {
        let mut tls = TlsConfig::builder();
        if let Some(ca_file) = ca_file {
            let certificates =
                read_certificates(ca_file, "--ca-file", "the service's CA certificate")?;
            tls = tls.root_certs(RootCerts::new_with_certs(&certificates));
        }
        if let Some(workload) = workload {
            let chain = read_certificates(
                &workload.cert,
                "--workload-cert",
                "the workload certificate CCM issued",
            )?;
            let pem = std::fs::read(&workload.key).map_err(|err| {
                bad_input(format!(
                    "--workload-key {}: cannot read it ({err}); pass the PEM private key of the workload certificate",
                    workload.key.display()
                ))
            })?;
            // The parser's error text never quotes the key material.
            let key = PrivateKey::from_pem(&pem).map_err(|err| {
                bad_input(format!(
                    "--workload-key {}: no PEM private key in it ({err}); pass the workload certificate's key (PKCS#8, PKCS#1 or SEC1 PEM)",
                    workload.key.display()
                ))
            })?;
            tls = tls.client_cert(Some(ClientCert::new_with_certs(&chain, key)));
        }
        let mut config = ureq::Agent::config_builder()
            .tls_config(tls.build())
            .timeout_global(Some(timeout))
            .http_status_as_error(false)
            // Redirects would carry the Authorization header to another place: never follow.
            .max_redirects(0);
        if !proxy_from_env {
            config = config.proxy(None);
        }
        Ok(Self {
            agent: config.build().new_agent(),
            timeout,
        })
    }

    /// Sends one request with `authorization` as the whole `Authorization` header value and
    /// `body` as JSON.
    pub fn send(
        &self,
        method: &str,
        url: &str,
        authorization: &Secret,
        body: Option<&serde_json::Value>,
        keep: Body,
    ) -> Result<Response> {
        // An empty credential sends no header: mutual TLS alone identifies the client.
        let authorization = Some(authorization.expose()).filter(|value| !value.is_empty());
        let result = match method {
            "GET" => {
                let mut request = self.agent.get(url).header("Accept", "application/json");
                if let Some(authorization) = authorization {
                    request = request.header("Authorization", authorization);
                }
                request.call()
            }
            "POST" => {
                let mut request = self.agent.post(url).header("Accept", "application/json");
                if let Some(authorization) = authorization {
                    request = request.header("Authorization", authorization);
                }
                match body {
                    Some(body) => request.send_json(body),
                    None => request.send_empty(),
                }
            }
            other => return Err(anyhow!("unsupported HTTP method {other}")),
        };
        let mut response = result.map_err(|err| match err {
            ureq::Error::Timeout(_) => anyhow!(
                "no answer within {} s (the request timeout); check that the URL is right and the service is reachable",
                self.timeout.as_secs_f64()
            ),
            other => anyhow::Error::new(other),
        })?;
        let status = response.status().as_u16();
        let read = match keep {
            Body::Read => true,
            Body::ReadUnlessSuccess => !(200..300).contains(&status),
        };
        let body = match read {
            false => String::new(),
            true => {
                let mut text = String::new();
                response
                    .body_mut()
                    .as_reader()
                    .take(MAX_BODY)
                    .read_to_string(&mut text)
                    .context("reading the response")?;
                text
            }
        };
        Ok(Response { status, body })
    }
}

/// The certificates in the PEM file `path`, named by `flag` in errors; at least one.
fn read_certificates(path: &Path, flag: &str, what: &str) -> Result<Vec<Certificate<'static>>> {
    let pem = std::fs::read(path).map_err(|err| {
        bad_input(format!(
            "{flag} {}: cannot read it ({err}); pass a PEM file with {what}",
            path.display()
        ))
    })?;
    let certificates: Vec<Certificate<'static>> = ureq::tls::parse_pem(&pem)
        .filter_map(|item| match item {
            Ok(ureq::tls::PemItem::Certificate(certificate)) => Some(Ok(certificate)),
            Ok(_) => None,
            Err(err) => Some(Err(err)),
        })
        .collect::<Result<_, _>>()
        .map_err(|err| {
            bad_input(format!(
                "{flag} {}: not PEM ({err}); pass a PEM file with {what}",
                path.display()
            ))
        })?;
    if certificates.is_empty() {
        return Err(bad_input(format!(
            "{flag} {}: holds no certificate; pass a PEM file with {what}",
            path.display()
        )));
    }
    Ok(certificates)
}

/// A server's error text as one short line, with every secret in `secrets` removed: the JSON
/// `message`/`error` field when the body is JSON, else the text itself.
pub fn error_text(body: &str, secrets: &[&Secret]) -> String {
    let text = serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|json| {
            ["message", "error", "error_description"]
                .iter()
                .find_map(|field| {
                    json.get(field)
                        .and_then(|value| value.as_str())
                        .map(str::to_owned)
                })
        })
        .unwrap_or_else(|| body.to_owned());
    let mut text = text.split_whitespace().collect::<Vec<_>>().join(" ");
    for secret in secrets {
        if !secret.expose().is_empty() {
            text = text.replace(secret.expose(), "<redacted>");
        }
    }
    if text.chars().count() > MAX_ERROR_TEXT {
        text = text.chars().take(MAX_ERROR_TEXT).collect::<String>() + "…";
    }
    if text.is_empty() {
        "no error text".to_owned()
    } else {
        text
    }
}

/// Standard base64 (RFC 4648, with padding) of `bytes`: HTTP Basic credentials.
pub fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let group = chunk.iter().enumerate().fold(0u32, |group, (index, byte)| {
            group | u32::from(*byte) << (16 - 8 * index)
        });
        for index in 0..4 {
            if index <= chunk.len() {
                out.push(char::from(
                    ALPHABET[(group >> (18 - 6 * index) & 0x3f) as usize],
                ));
            } else {
                out.push('=');
            }
        }
    }
    out
}
