//! TLS to Redis (feature `tls`), against a `redis-server` of the test's own that listens on a
//! TLS port only (`--port 0 --tls-port N`), with a certificate signed by a CA generated for
//! the run with the `openssl` command: the whole conformance suite over `rediss://` in both
//! connection modes, plain text refused, an untrusted or unnamed certificate refused, and a
//! client certificate presented when the server asks for one.
//!
//! Runs wherever `REDIS_URL` is set (the sign that Redis is installed here); skips with a
//! notice when redis-server was built without TLS or `openssl` is missing, and fails then
//! under `SESSION_REQUIRE_SERVICES=1`.
#![cfg(feature = "tls")]

mod common;

use std::fs::File;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::{assert_unavailable, free_port, must, record};
use session_core::conformance::{Fixture, REQUIRE_SERVICES_VAR, service_url};
use session_core::{Error, SessionStore};
use session_redis::{RedisStore, RedisStoreBuilder};

/// PEM files of the run's test PKI.
struct Pki {
    ca: Vec<u8>,
    server_cert: Vec<u8>,
    server_key: Vec<u8>,
    client_cert: Vec<u8>,
    client_key: Vec<u8>,
    /// A server certificate from the CA for another host.
    elsewhere_cert: Vec<u8>,
    elsewhere_key: Vec<u8>,
    /// A CA that signed nothing the server uses.
    other_ca: Vec<u8>,
}

/// Skips the case with a notice, or fails it under `SESSION_REQUIRE_SERVICES=1`.
fn skip(reason: &str) {
    if std::env::var(REQUIRE_SERVICES_VAR).is_ok_and(|v| v == "1") {
        panic!("{reason}, but {REQUIRE_SERVICES_VAR}=1: this TLS test must run here");
    }
    eprintln!("SKIPPED: {reason}");
}

fn openssl(dir: &Path, args: &[&str]) -> Result<(), String> {
    let output = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("the openssl command is not available ({e})"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "openssl {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}

/// A self-signed CA, and a certificate signed by it for `name` (`IP:127.0.0.1` for the
/// server, so rustls can check it against the URL's host) with the given usage.
fn generate_pki(dir: &Path) -> Result<Pki, String> {
    let write = |name: &str, text: &str| {
        std::fs::write(dir.join(name), text).map_err(|e| format!("writing {name}: {e}"))
    };
    write(
        "ca.ext",
        "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\nsubjectKeyIdentifier=hash\n",
    )?;
    write(
        "server.ext",
        "basicConstraints=CA:FALSE\nsubjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
    )?;
    write(
        "elsewhere.ext",
        "basicConstraints=CA:FALSE\nsubjectAltName=DNS:elsewhere.invalid\nextendedKeyUsage=serverAuth\n",
    )?;
    write(
        "client.ext",
        "basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n",
    )?;
    let key = |name: &str| {
        openssl(
            dir,
            &[
                "genpkey",
                "-algorithm",
                "EC",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-out",
                name,
            ],
        )
    };
    let request = |key: &str, subject: &str, out: &str| {
        openssl(
            dir,
            &["req", "-new", "-key", key, "-subj", subject, "-out", out],
        )
    };
    for (ca, subject) in [
        ("ca", "/CN=session-redis test CA"),
        ("other-ca", "/CN=session-redis other test CA"),
    ] {
        key(&format!("{ca}.key"))?;
        request(&format!("{ca}.key"), subject, &format!("{ca}.csr"))?;
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &format!("{ca}.csr"),
                "-signkey",
                &format!("{ca}.key"),
                "-days",
                "2",
                "-extfile",
                "ca.ext",
                "-out",
                &format!("{ca}.crt"),
            ],
        )?;
    }
    for (leaf, subject) in [
        ("server", "/CN=127.0.0.1"),
        ("elsewhere", "/CN=elsewhere.invalid"),
        ("client", "/CN=session-redis test client"),
    ] {
        key(&format!("{leaf}.key"))?;
        request(&format!("{leaf}.key"), subject, &format!("{leaf}.csr"))?;
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &format!("{leaf}.csr"),
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                &format!("{leaf}.ext"),
                "-out",
                &format!("{leaf}.crt"),
            ],
        )?;
    }
    let read =
        |name: &str| std::fs::read(dir.join(name)).map_err(|e| format!("reading {name}: {e}"));
    Ok(Pki {
        ca: read("ca.crt")?,
        server_cert: read("server.crt")?,
        server_key: read("server.key")?,
        client_cert: read("client.crt")?,
        client_key: read("client.key")?,
        elsewhere_cert: read("elsewhere.crt")?,
        elsewhere_key: read("elsewhere.key")?,
        other_ca: read("other-ca.crt")?,
    })
}

/// The run's PKI, generated once (its files are removed right after).
fn pki() -> Result<&'static Pki, String> {
    static PKI: OnceLock<Result<Pki, String>> = OnceLock::new();
    PKI.get_or_init(|| {
        let dir = tempfile::tempdir().map_err(|e| format!("temp dir: {e}"))?;
        generate_pki(dir.path())
    })
    .as_ref()
    .map_err(Clone::clone)
}

/// How a [`TlsServer`] is set up.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    /// A certificate for 127.0.0.1, no client certificates asked for.
    Plain,
    /// As `Plain`, and clients must show a certificate signed by the CA.
    AuthClients,
    /// A certificate signed by the CA for another host (`elsewhere.invalid`).
    Misnamed,
}

/// A `redis-server` listening on a TLS port only, killed (and its files removed) when
/// dropped.
struct TlsServer {
    port: u16,
    child: Child,
    _dir: tempfile::TempDir,
}

impl TlsServer {
    /// `Ok(None)` when this redis-server cannot do TLS (a skip), `Err` when it failed
    /// otherwise.
    fn start(pki: &Pki, mode: Mode) -> Result<Option<Self>, String> {
        let dir = tempfile::tempdir().map_err(|e| format!("temp dir: {e}"))?;
        let (cert, key) = match mode {
            Mode::Misnamed => (&pki.elsewhere_cert, &pki.elsewhere_key),
            Mode::Plain | Mode::AuthClients => (&pki.server_cert, &pki.server_key),
        };
        for (name, pem) in [
            ("server.crt", cert),
            ("server.key", key),
            ("ca.crt", &pki.ca),
        ] {
            std::fs::write(dir.path().join(name), pem).map_err(|e| format!("{name}: {e}"))?;
        }
        let log = dir.path().join("server.log");
        let out = File::create(&log).map_err(|e| format!("log file: {e}"))?;
        let err = out.try_clone().map_err(|e| format!("log file: {e}"))?;
        let port = free_port();
        let path = |name: &str| dir.path().join(name).to_string_lossy().into_owned();
        let mut child = Command::new("redis-server")
            .args([
                "--port",
                "0",
                "--tls-port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
            ])
            .args([
                "--tls-cert-file",
                &path("server.crt"),
                "--tls-key-file",
                &path("server.key"),
            ])
            .args(["--tls-ca-cert-file", &path("ca.crt")])
            .args([
                "--tls-auth-clients",
                if mode == Mode::AuthClients {
                    "yes"
                } else {
                    "no"
                },
            ])
            .args(["--save", "", "--appendonly", "no", "--dir", &path("")])
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("could not start redis-server (is it installed?): {e}"))?;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                let output = std::fs::read_to_string(&log).unwrap_or_default();
                if output.to_ascii_lowercase().contains("tls") {
                    return Ok(None);
                }
                return Err(format!("redis-server exited ({status}): {output}"));
            }
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Ok(Some(Self {
                    port,
                    child,
                    _dir: dir,
                }));
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                return Err(format!("redis-server on TLS port {port} did not come up"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn url(&self) -> String {
        format!("rediss://127.0.0.1:{}", self.port)
    }
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The PKI and a TLS server, or `None` after a visible skip.
fn setup(mode: Mode) -> Option<(&'static Pki, TlsServer)> {
    service_url("REDIS_URL")?;
    let pki = match pki() {
        Ok(pki) => pki,
        Err(reason) => {
            skip(&format!("no test certificates: {reason}"));
            return None;
        }
    };
    match TlsServer::start(pki, mode) {
        Ok(Some(server)) => Some((pki, server)),
        Ok(None) => {
            skip("redis-server was built without TLS support");
            None
        }
        Err(e) => panic!("{e}"),
    }
}

fn build(builder: RedisStoreBuilder) -> RedisStore {
    common::build(builder)
}

fn trusting(pki: &Pki, url: &str, multiplexed: usize) -> RedisStore {
    build(
        RedisStore::builder()
            .url(url)
            .tls_root_certificates(pki.ca.clone())
            .multiplexed(multiplexed)
            .max_data_len(Some(4096))
            .command_timeout(Some(Duration::from_secs(5))),
    )
}

async fn fixture(multiplexed: usize) -> Fixture {
    let Some((pki, server)) = setup(Mode::Plain) else {
        return Fixture::skipped("no TLS-capable redis-server here");
    };
    let url = server.url();
    let reopen_url = url.clone();
    Fixture::new(trusting(pki, &url, multiplexed))
        .reopen(move || {
            let store = trusting(pki, &reopen_url, multiplexed);
            async move { store }
        })
        .guard(server)
}

mod pooled {
    use session_core::conformance::Fixture;

    async fn fresh_fixture() -> Fixture {
        super::fixture(0).await
    }

    session_core::conformance_tests!(fresh_fixture, durable);
}

mod multiplexed {
    use session_core::conformance::Fixture;

    async fn fresh_fixture() -> Fixture {
        super::fixture(2).await
    }

    session_core::conformance_tests!(fresh_fixture, durable);
}

/// A plain-text client gets nothing from the TLS port: every call fails with `Unavailable`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_text_to_the_tls_port_is_refused() {
    let Some((_, server)) = setup(Mode::Plain) else {
        return;
    };
    for multiplexed in [0, 2] {
        let plain = build(
            RedisStore::builder()
                .url(format!("redis://127.0.0.1:{}", server.port))
                .multiplexed(multiplexed)
                .connect_timeout(Duration::from_secs(2))
                .command_timeout(Some(Duration::from_secs(3))),
        );
        assert_unavailable("load in plain text", plain.load(&record().key).await);
        assert_unavailable("create in plain text", plain.create(&record()).await);
    }
}

/// A certificate signed by a CA the client does not trust (the system's roots, or another CA
/// given) is refused, with `Unavailable`; the right CA works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_certificate_is_refused() {
    let Some((pki, server)) = setup(Mode::Plain) else {
        return;
    };
    let system_roots = build(RedisStore::builder().url(server.url()));
    let result = system_roots.load(&record().key).await;
    assert_unavailable("load trusting the system's roots", result);

    let other_ca = build(
        RedisStore::builder()
            .url(server.url())
            .tls_root_certificates(pki.other_ca.clone()),
    );
    let result = other_ca.load(&record().key).await;
    match &result {
        Err(Error::Unavailable { source, .. }) => assert!(
            source
                .to_string()
                .to_ascii_lowercase()
                .contains("certificate"),
            "the error should say the certificate was refused: {source}"
        ),
        other => panic!("expected Unavailable for an untrusted certificate, got {other:?}"),
    }

    let trusted = trusting(pki, &server.url(), 2);
    let r = record();
    must("create over TLS", trusted.create(&r)).await;
    assert_eq!(must("load over TLS", trusted.load(&r.key)).await, Some(r));
}

/// A certificate from the trusted CA that does not name the URL's host is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_for_another_host_is_refused() {
    let Some((pki, server)) = setup(Mode::Misnamed) else {
        return;
    };
    let store = trusting(pki, &server.url(), 2);
    match store.load(&record().key).await {
        Err(Error::Unavailable { source, .. }) => assert!(
            source
                .to_string()
                .to_ascii_lowercase()
                .contains("certificate"),
            "the error should say the certificate was refused: {source}"
        ),
        other => panic!("expected Unavailable for a misnamed certificate, got {other:?}"),
    }
}

/// A server that asks for client certificates refuses a client without one and serves one
/// that presents a certificate its CA signed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_certificate_is_presented_when_the_server_asks() {
    let Some((pki, server)) = setup(Mode::AuthClients) else {
        return;
    };
    let anonymous = trusting(pki, &server.url(), 2);
    assert_unavailable(
        "load without a client certificate",
        anonymous.load(&record().key).await,
    );

    for multiplexed in [0, 2] {
        let known = build(
            RedisStore::builder()
                .url(server.url())
                .tls_root_certificates(pki.ca.clone())
                .tls_client_certificate(pki.client_cert.clone(), pki.client_key.clone())
                .multiplexed(multiplexed),
        );
        let r = record();
        must("create with a client certificate", known.create(&r)).await;
        assert_eq!(
            must("load with a client certificate", known.load(&r.key)).await,
            Some(r)
        );
    }
}

/// TLS settings that cannot work are refused when the store is built, before any I/O: PEM
/// without a certificate, certificates for a plain URL or for a pool of the caller's.
#[test]
fn unusable_tls_settings_are_config_errors() {
    let config = |builder: RedisStoreBuilder, what: &str| match builder.build() {
        Err(Error::Config(_)) => {}
        other => panic!("{what}: expected Error::Config, got {other:?}"),
    };
    config(
        RedisStore::builder()
            .url("rediss://127.0.0.1:1")
            .tls_root_certificates(&b"not a certificate"[..]),
        "roots that are not PEM",
    );
    config(
        RedisStore::builder()
            .url("rediss://127.0.0.1:1")
            .tls_client_certificate(&b"not a certificate"[..], &b"not a key"[..]),
        "a client certificate that is not PEM",
    );
    config(
        RedisStore::builder()
            .url("redis://127.0.0.1:1")
            .tls_root_certificates(&b"-----BEGIN CERTIFICATE-----"[..]),
        "certificates with a plain URL",
    );
    let debug = format!(
        "{:?}",
        RedisStore::builder()
            .url("rediss://127.0.0.1:1")
            .tls_client_certificate(&b"cert"[..], &b"PRIVATE KEY hunter2"[..])
    );
    assert!(
        !debug.contains("hunter2"),
        "the builder's Debug must hide the key: {debug}"
    );
    // A rediss:// URL builds without I/O.
    if let Err(e) = RedisStore::builder().url("rediss://127.0.0.1:1").build() {
        panic!("a rediss:// URL must build with the tls feature: {e}");
    }
}
