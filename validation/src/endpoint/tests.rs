//! The HTTPS endpoint check against real local TLS servers on 127.0.0.1, with certificates made in
//! the test: a trusted chain passes; an unknown CA, a wrong name, a closed port and a server that
//! does not speak TLS fail.

use std::{
    io::{Read, Write},
    net::TcpListener,
    path::Path,
    sync::Arc,
    time::Duration,
};

use cvm_core::{check::Status, error::is_bad_input};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use rustls::{pki_types::PrivateKeyDer, ServerConfig, ServerConnection};

use super::{check as check_endpoint, Endpoint};

/// A CA and the PEM file holding its certificate.
struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Ca {
    fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        Self {
            issuer: CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap(),
        }
    }

    fn write(&self, dir: &Path, name: &str) -> std::path::PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, self.issuer.pem()).unwrap();
        path
    }
}

/// What the local server on 127.0.0.1 does.
enum Server {
    /// Serves HTTPS with a certificate for `name` issued by the CA.
    Tls { name: &'static str },
    /// Accepts TCP and answers in plain text.
    PlainText,
    /// Nothing listens on the port.
    Closed,
}

/// Starts `server` and returns its port.
fn start(server: Server, ca: &Ca) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    match server {
        Server::Closed => drop(listener),
        Server::PlainText => {
            std::thread::spawn(move || {
                if let Ok((mut stream, _)) = listener.accept() {
                    let mut buffer = [0u8; 512];
                    let _ = stream.read(&mut buffer);
                    let _ = stream.write_all(b"this is not TLS\r\n");
                }
            });
        }
        Server::Tls { name } => {
            let key = KeyPair::generate().unwrap();
            let leaf = CertificateParams::new(vec![name.to_owned()])
                .unwrap()
                .signed_by(&key, &ca.issuer)
                .unwrap();
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let config = ServerConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(
                    vec![leaf.der().clone()],
                    PrivateKeyDer::Pkcs8(key.serialize_der().into()),
                )
                .unwrap();
            let config = Arc::new(config);
            std::thread::spawn(move || {
                let Ok((mut stream, _)) = listener.accept() else {
                    return;
                };
                stream
                    .set_read_timeout(Some(Duration::from_secs(10)))
                    .unwrap();
                let mut connection = ServerConnection::new(config).unwrap();
                let mut tls = rustls::Stream::new(&mut connection, &mut stream);
                let mut request = Vec::new();
                let mut buffer = [0u8; 512];
                while !request.windows(4).any(|window| window == b"\r\n\r\n") {
                    match tls.read(&mut buffer) {
                        Ok(0) | Err(_) => return,
                        Ok(read) => request.extend_from_slice(&buffer[..read]),
                    }
                }
                let _ = tls.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
                );
                tls.conn.send_close_notify();
                let _ = tls.flush();
            });
        }
    }
    port
}

/// Runs the check against `server` trusting `trusted` (the issuer, or another CA) and asserts the
/// status and a piece of the detail.
#[track_caller]
fn check(server: Server, trust_issuer: bool, expect: Status, detail_has: &str) {
    let dir = tempfile::tempdir().unwrap();
    let issuer = Ca::new("cvm-stack test issuer");
    let other = Ca::new("some other CA");
    let ca_file = if trust_issuer {
        issuer.write(dir.path(), "ca.pem")
    } else {
        other.write(dir.path(), "ca.pem")
    };
    let port = start(server, &issuer);
    let endpoint = Endpoint::new(&format!("https://127.0.0.1:{port}/v1/models"), &ca_file).unwrap();
    let result = check_endpoint(&endpoint, Duration::from_secs(10));
    assert_eq!(result.id, "e2e.endpoint-https");
    assert_eq!(result.status, expect, "{}", result.detail);
    assert!(
        result.detail.contains(detail_has),
        "{:?} not in {:?}",
        detail_has,
        result.detail
    );
    assert!(
        result
            .detail
            .starts_with(&format!("https://127.0.0.1:{port}: ")),
        "{}",
        result.detail
    );
    if expect == Status::Fail {
        assert!(
            result.remediation.contains("ca.pem"),
            "{}",
            result.remediation
        );
    }
}

#[test]
fn trusted_chain_and_http_answer_pass() {
    check(
        Server::Tls { name: "127.0.0.1" },
        true,
        Status::Pass,
        "handshake verified against",
    );
    check(
        Server::Tls { name: "127.0.0.1" },
        true,
        Status::Pass,
        "answered HTTP/1.1 200 OK",
    );
}

#[test]
fn chain_to_another_ca_fails() {
    check(
        Server::Tls { name: "127.0.0.1" },
        false,
        Status::Fail,
        "UnknownIssuer",
    );
}

#[test]
fn certificate_for_another_name_fails() {
    check(
        Server::Tls {
            name: "inference.example",
        },
        true,
        Status::Fail,
        "certificate not valid for name \"127.0.0.1\"",
    );
}

#[test]
fn closed_port_fails() {
    check(
        Server::Closed,
        true,
        Status::Fail,
        "connecting to 127.0.0.1:",
    );
}

#[test]
fn server_without_tls_fails() {
    check(Server::PlainText, true, Status::Fail, "TLS handshake");
}

#[test]
fn bad_endpoint_configuration_is_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("ca").write(dir.path(), "ca.pem");
    #[track_caller]
    fn bad(url: &str, ca: &Path, message: &str) {
        let err = Endpoint::new(url, ca).unwrap_err();
        assert!(is_bad_input(&err));
        assert_eq!(format!("{err:#}"), message);
    }
    bad(
        "http://127.0.0.1:8080",
        &ca,
        "--endpoint \"http://127.0.0.1:8080\": not an https URL; write https://HOST[:PORT], e.g. https://127.0.0.1:8443",
    );
    bad("https://:443", &ca, "--endpoint \"https://:443\": not an https URL; write https://HOST[:PORT], e.g. https://127.0.0.1:8443");
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "no certificate here\n").unwrap();
    bad(
        "https://127.0.0.1",
        &empty,
        &format!(
            "--endpoint-ca {}: holds no usable CA certificate; pass a PEM file with the CA certificate",
            empty.display()
        ),
    );
}

#[test]
fn urls_parse_with_default_port_and_ipv6() {
    #[track_caller]
    fn check(url: &str, expect: Option<(&str, u16)>) {
        assert_eq!(
            super::parse_url(url),
            expect.map(|(host, port)| (host.to_owned(), port)),
            "{url}"
        );
    }
    check("https://127.0.0.1:8443", Some(("127.0.0.1", 8443)));
    check(
        "https://inference.example/v1",
        Some(("inference.example", 443)),
    );
    check("https://[::1]:9443/", Some(("::1", 9443)));
    check("https://[::1]", Some(("::1", 443)));
    check("https://host:notaport", None);
    check("127.0.0.1:443", None);
}
