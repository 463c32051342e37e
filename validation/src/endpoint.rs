//! `e2e.endpoint-https`: a real TLS client check of the inference endpoint. The handshake must
//! verify the server's certificate chain against the configured CA for the endpoint's name, and the
//! server must answer an HTTP request over the verified connection.

use std::{
    io::{Read, Write},
    net::{TcpStream, ToSocketAddrs},
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use anyhow::{Context, Result};
use cvm_core::{
    check::{CheckResult, Status},
    error::bad_input,
};
use rustls::{pki_types::ServerName, ClientConfig, ClientConnection, RootCertStore};
use rustls_pki_types::{pem::PemObject, CertificateDer};

/// The check id.
pub const ID: &str = "e2e.endpoint-https";

/// Title of the check.
pub const TITLE: &str = "HTTPS endpoint presents a chain to the configured CA and answers";

/// A configured endpoint: where to connect, the name to verify and the CA to verify against.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// Host name or IP address (also the name verified in the certificate).
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// The CA file (PEM) the chain must lead to.
    pub ca: PathBuf,
    roots: Arc<RootCertStore>,
}

impl Endpoint {
    /// Parses `https://HOST[:PORT][/…]` and loads the CA certificates from `ca` (PEM); either being
    /// wrong is bad input naming the flag.
    pub fn new(url: &str, ca: &Path) -> Result<Self> {
        let (host, port) = parse_url(url).ok_or_else(|| {
            bad_input(format!(
                "--endpoint {url:?}: not an https URL; write https://HOST[:PORT], e.g. https://127.0.0.1:8443"
            ))
        })?;
        let certificates: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(ca)
            .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
            .map_err(|err| {
                bad_input(format!(
                    "--endpoint-ca {}: cannot read PEM certificates ({err}); pass the CA that issues the workload certificate",
                    ca.display()
                ))
            })?;
        let mut roots = RootCertStore::empty();
        let (added, _ignored) = roots.add_parsable_certificates(certificates);
        if added == 0 {
            return Err(bad_input(format!(
                "--endpoint-ca {}: holds no usable CA certificate; pass a PEM file with the CA certificate",
                ca.display()
            )));
        }
        Ok(Self {
            host,
            port,
            ca: ca.to_owned(),
            roots: Arc::new(roots),
        })
    }

    /// `https://host:port`.
    pub fn url(&self) -> String {
        if self.host.contains(':') {
            format!("https://[{}]:{}", self.host, self.port)
        } else {
            format!("https://{}:{}", self.host, self.port)
        }
    }
}

fn parse_url(url: &str) -> Option<(String, u16)> {
    let rest = url.strip_prefix("https://")?;
    let authority = rest.split('/').next()?;
    let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
        let (host, after) = bracketed.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(port) => port.parse().ok()?,
            None if after.is_empty() => 443,
            None => return None,
        };
        (host, port)
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host, port.parse().ok()?),
            None => (authority, 443),
        }
    };
    (!host.is_empty() && port != 0).then(|| (host.to_owned(), port))
}

/// Connects, verifies and sends one request; the result is the check.
pub fn check(endpoint: &Endpoint, timeout: Duration) -> CheckResult {
    let (status, detail, remediation) = match probe(endpoint, timeout) {
        Ok(found) => (
            Status::Pass,
            format!(
                "{}: {} handshake verified against {} (chain of {} certificate(s) for {}); answered {}",
                endpoint.url(),
                found.protocol,
                endpoint.ca.display(),
                found.chain_len,
                endpoint.host,
                found.status_line
            ),
            String::new(),
        ),
        Err(err) => (
            Status::Fail,
            format!("{}: {err:#}", endpoint.url()),
            format!(
                "check that the inference server is running and serves a certificate issued under {} for {} (the CCM-issued workload certificate after attestation)",
                endpoint.ca.display(),
                endpoint.host
            ),
        ),
    };
    CheckResult {
        id: ID.to_owned(),
        title: TITLE.to_owned(),
        status,
        detail,
        remediation,
    }
}

struct Probe {
    protocol: String,
    chain_len: usize,
    status_line: String,
}

fn probe(endpoint: &Endpoint, timeout: Duration) -> Result<Probe> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("configuring TLS")?
        .with_root_certificates(endpoint.roots.clone())
        .with_no_client_auth();
    let name = ServerName::try_from(endpoint.host.clone())
        .with_context(|| format!("{:?} is not a DNS name or IP address", endpoint.host))?;
    let addresses: Vec<_> = (endpoint.host.as_str(), endpoint.port)
        .to_socket_addrs()
        .with_context(|| format!("resolving {}", endpoint.host))?
        .collect();
    let mut last_error = None;
    let mut socket = None;
    for address in &addresses {
        match TcpStream::connect_timeout(address, timeout) {
            Ok(stream) => {
                socket = Some(stream);
                break;
            }
            Err(err) => last_error = Some(format!("connecting to {address}: {err}")),
        }
    }
    let mut socket = socket.ok_or_else(|| {
        anyhow::anyhow!(
            last_error.unwrap_or_else(|| format!("{} resolves to no address", endpoint.host))
        )
    })?;
    socket.set_read_timeout(Some(timeout))?;
    socket.set_write_timeout(Some(timeout))?;
    let mut connection =
        ClientConnection::new(Arc::new(config), name).context("starting the TLS session")?;
    while connection.is_handshaking() {
        connection
            .complete_io(&mut socket)
            .context("TLS handshake")?;
    }
    let protocol = connection.protocol_version().map_or_else(
        || "TLS".to_owned(),
        |version| format!("{version:?}").replace('_', "."),
    );
    let chain_len = connection.peer_certificates().map_or(0, <[_]>::len);
    let mut tls = rustls::Stream::new(&mut connection, &mut socket);
    let request = format!(
        "GET / HTTP/1.1\r\nHost: {}\r\nUser-Agent: cvm-validate\r\nConnection: close\r\n\r\n",
        endpoint.host
    );
    tls.write_all(request.as_bytes())
        .context("sending an HTTP request over TLS")?;
    let mut response = Vec::new();
    let mut buffer = [0u8; 1024];
    while !response.contains(&b'\n') && response.len() < 8192 {
        let read = tls.read(&mut buffer).context("reading the HTTP response")?;
        if read == 0 {
            break;
        }
        response.extend_from_slice(&buffer[..read]);
    }
    let text = String::from_utf8_lossy(&response);
    let status_line = text.lines().next().unwrap_or_default().trim().to_owned();
    if !status_line.starts_with("HTTP/") {
        anyhow::bail!("the server completed the TLS handshake but sent no HTTP status line (got {status_line:?})");
    }
    Ok(Probe {
        protocol,
        chain_len,
        status_line,
    })
}

#[cfg(test)]
mod tests;
