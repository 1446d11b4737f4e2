//! https notifications with the real binary: receivers on 127.0.0.1 speaking TLS with
//! certificates from a CA the test makes, given to the daemon only through `SSL_CERT_FILE` (as
//! any program using the system's store takes it). A receiver whose certificate is for another
//! name, or from a CA the daemon does not trust, is refused with a clear line and counted, and
//! the daemon serves on.

mod common;

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::{Arc, mpsc};
use std::time::Duration;

use common::*;
use futures_rustls::TlsAcceptor;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use smol::Async;
use smol::io::{AsyncReadExt, AsyncWriteExt};

/// A CA: its certificate (PEM) and what signs with it.
struct Ca {
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

fn ca(name: &str) -> Ca {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    let cert = params.self_signed(&key).unwrap();
    Ca {
        pem: cert.pem(),
        issuer: Issuer::new(params, key),
    }
}

/// A server certificate for `names` (IP literals become IP SANs) signed by `ca`.
fn server_cert(ca: &Ca, names: &[&str]) -> (CertificateDer<'static>, PrivateKeyDer<'static>) {
    let key = KeyPair::generate().unwrap();
    let params =
        CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
    let cert = params.signed_by(&key, &ca.issuer).unwrap();
    let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    (cert.der().clone(), der)
}

/// An https receiver on 127.0.0.1 answering 200 and handing each request's body to the test.
fn receiver(
    cert: (CertificateDer<'static>, PrivateKeyDer<'static>),
) -> (SocketAddr, mpsc::Receiver<String>) {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.0], cert.1)
        .unwrap();
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        smol::block_on(async {
            let listener = Async::new(listener).unwrap();
            // Ends with the test process; bounded by the tests' few connections.
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let acceptor = acceptor.clone();
                let tx = tx.clone();
                smol::spawn(async move {
                    // A refused handshake (the client did not trust us) ends here.
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    let body = loop {
                        let Ok(n) = tls.read(&mut chunk).await else {
                            return;
                        };
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                        let text = String::from_utf8_lossy(&buf).to_string();
                        if let Some((head, body)) = text.split_once("\r\n\r\n") {
                            let len: usize = head
                                .lines()
                                .find_map(|l| {
                                    l.to_ascii_lowercase()
                                        .strip_prefix("content-length:")
                                        .map(|v| v.trim().to_string())
                                })
                                .and_then(|v| v.parse().ok())
                                .unwrap_or(0);
                            if body.len() >= len {
                                break body.to_string();
                            }
                        }
                    };
                    let _ = tls
                        .write_all(
                            b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                        )
                        .await;
                    let _ = tls.flush().await;
                    let _ = tx.send(body);
                })
                .detach();
            }
        })
    });
    (addr, rx)
}

/// The CA's certificate in a file, as `SSL_CERT_FILE` names it; removed on drop.
struct CaFile(PathBuf);

impl CaFile {
    fn new(ca: &Ca, tag: &str) -> CaFile {
        let p =
            std::env::temp_dir().join(format!("edgemon-test-ca-{tag}-{}.pem", std::process::id()));
        std::fs::write(&p, &ca.pem).unwrap();
        CaFile(p)
    }
}

impl Drop for CaFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The real binary with one rule that fires at once on any host, notifying `urls`, with `env`
/// (where it finds CA certificates).
fn notifying(urls: &[String], env: &[(&str, &str)]) -> Daemon {
    let mut args = vec!["--no-default-alerts", "--alert", "always: cpu >= 0 info"];
    for u in urls {
        args.extend(["--notify", u.as_str()]);
    }
    Daemon::start_with_env(&args, env)
}

fn metric(addr: SocketAddr, result: &str) -> String {
    let line = format!("edgemon_notifications_total{{result=\"{result}\"}}");
    get(addr, "/metrics")
        .body
        .lines()
        .find(|l| l.starts_with(&line))
        .unwrap_or_else(|| panic!("no {line}"))
        .rsplit(' ')
        .next()
        .unwrap()
        .to_string()
}

#[test]
fn an_https_receiver_with_a_trusted_certificate_gets_the_notification() {
    let ca = ca("edgemon test CA");
    let file = CaFile::new(&ca, "trusted");
    let (addr, got) = receiver(server_cert(&ca, &["127.0.0.1"]));
    let url = format!("https://{addr}/api/webhook/s3cret");
    let mut d = notifying(&[url], &[("SSL_CERT_FILE", file.0.to_str().unwrap())]);
    d.wait_line(Duration::from_secs(10), |l| l.contains("TLS trusts"));
    let body = got
        .recv_timeout(Duration::from_secs(20))
        .unwrap_or_else(|_| {
            d.wait_exit(Duration::from_millis(100));
            panic!(
                "no notification at the https receiver; log:\n{}",
                d.log.join("\n")
            )
        });
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (v["alert"].as_str(), v["state"].as_str()),
        (Some("always"), Some("firing"))
    );
    assert_eq!(metric(d.addr, "sent"), "1");
    assert_eq!(metric(d.addr, "tls_refused"), "0");
    stop_and_check_log(&mut d, "s3cret");
}

#[test]
fn a_certificate_for_another_name_or_from_an_unknown_ca_is_refused_and_counted() {
    let trusted = ca("edgemon test CA");
    let stranger = ca("somebody else's CA");
    let file = CaFile::new(&trusted, "refused");
    let (wrong_name, got_a) = receiver(server_cert(&trusted, &["other.example"]));
    let (unknown_ca, got_b) = receiver(server_cert(&stranger, &["127.0.0.1"]));
    let urls = [
        format!("https://{wrong_name}/hook"),
        format!("ntfy+https://{unknown_ca}/topic"),
    ];
    let mut d = notifying(&urls, &[("SSL_CERT_FILE", file.0.to_str().unwrap())]);
    let name = d.wait_line(Duration::from_secs(20), |l| {
        l.contains(&format!("notify https://{wrong_name}: not sent"))
    });
    assert!(
        name.contains("certificate is refused") && name.contains("not valid for name"),
        "{name}"
    );
    let issuer = d.wait_line(Duration::from_secs(20), |l| {
        l.contains(&format!("notify ntfy+https://{unknown_ca}: not sent"))
    });
    assert!(
        issuer.contains("certificate is refused") && issuer.contains("UnknownIssuer"),
        "{issuer}"
    );
    assert_eq!(metric(d.addr, "tls_refused"), "2");
    assert_eq!(metric(d.addr, "failed"), "2");
    assert_eq!(
        metric(d.addr, "retried"),
        "0",
        "a refused certificate is not retried"
    );
    assert!(got_a.try_recv().is_err() && got_b.try_recv().is_err());
    assert_eq!(get(d.addr, "/healthz").status, 200, "the daemon serves on");
    d.signal("TERM");
    assert_eq!(
        d.wait_exit(Duration::from_secs(6)).and_then(|s| s.code()),
        Some(0)
    );
}

#[test]
fn without_any_ca_certificate_https_targets_fail_with_the_reason_and_the_daemon_starts() {
    let empty = std::env::temp_dir().join(format!("edgemon-no-ca-{}.pem", std::process::id()));
    std::fs::write(&empty, "").unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("https://{}/hook", listener.local_addr().unwrap());
    let no_ca = [
        ("SSL_CERT_FILE", empty.to_str().unwrap()),
        ("SSL_CERT_DIR", "/nonexistent"),
    ];
    let mut d = notifying(&[url], &no_ca);
    let line = d.wait_line(Duration::from_secs(10), |l| {
        l.contains("https targets cannot be reached")
    });
    assert!(
        line.contains("install the ca-certificates package"),
        "{line}"
    );
    d.wait_line(Duration::from_secs(10), |l| {
        l.contains("not sent: no CA certificates")
    });
    assert_eq!(get(d.addr, "/healthz").status, 200);
    let _ = std::fs::remove_file(empty);
}
