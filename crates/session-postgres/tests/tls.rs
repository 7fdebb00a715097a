//! TLS against a PostgreSQL server of the test's own: a fresh cluster in a temp dir on a free
//! loopback port, with a key and certificate signed by a CA generated for the test, and a
//! `pg_hba.conf` that refuses every connection without TLS. So a connection that works is
//! encrypted, and `pg_stat_ssl` confirms it.
//!
//! Needs `initdb` and `pg_ctl` (on `PATH` or under `/usr/lib/postgresql/*/bin`); as root the
//! server runs as the `postgres` user. Without them the tests skip with a notice, or fail
//! when `SESSION_REQUIRE_SERVICES=1`.

use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use session_core::Error;
use session_core::conformance::REQUIRE_SERVICES_VAR;
use session_postgres::PostgresStore;

/// A CA and a server certificate it signed, valid for `localhost` and `127.0.0.1`.
struct Certs {
    ca_pem: String,
    server_cert_pem: String,
    server_key_pem: String,
}

fn generate_ca(name: &str) -> (rcgen::CertifiedIssuer<'static, rcgen::KeyPair>, String) {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    let key = rcgen::KeyPair::generate().expect("CA key");
    let ca = rcgen::CertifiedIssuer::self_signed(params, key).expect("self-signed CA");
    let pem = ca.pem();
    (ca, pem)
}

fn generate_certs() -> Certs {
    let (ca, ca_pem) = generate_ca("session-postgres test CA");
    let mut params =
        rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .expect("server params");
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "localhost");
    let key = rcgen::KeyPair::generate().expect("server key");
    let cert = params.signed_by(&key, &ca).expect("server certificate");
    Certs {
        ca_pem,
        server_cert_pem: cert.pem(),
        server_key_pem: key.serialize_pem(),
    }
}

/// The directory holding `initdb` and `pg_ctl`.
fn postgres_bin_dir() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>());
    let mut installed: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin"))
        .collect();
    // The newest version last, tried first.
    installed.sort();
    on_path
        .chain(installed.into_iter().rev())
        .find(|dir| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file())
}

fn output(cmd: &mut Command) -> String {
    let out = cmd.output().expect("run a command");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A PostgreSQL server of this test alone, stopped (and its files removed) on drop.
struct PrivateServer {
    bin: PathBuf,
    data: PathBuf,
    /// The server's user when the test runs as root (PostgreSQL refuses to run as root).
    run_as: Option<String>,
    port: u16,
    ca_path: PathBuf,
    _dir: tempfile::TempDir,
}

impl PrivateServer {
    /// Starts a server that accepts only TLS connections, or returns `None` after a skip
    /// notice when PostgreSQL is not installed (a failure under `SESSION_REQUIRE_SERVICES=1`).
    fn start(certs: &Certs) -> Option<Self> {
        let Some(bin) = postgres_bin_dir() else {
            assert!(
                std::env::var(REQUIRE_SERVICES_VAR).as_deref() != Ok("1"),
                "initdb and pg_ctl are not installed but {REQUIRE_SERVICES_VAR}=1: the TLS tests must run here"
            );
            eprintln!(
                "SKIPPED: initdb/pg_ctl not found, so the TLS tests cannot start their own PostgreSQL (set {REQUIRE_SERVICES_VAR}=1 to make this a failure)"
            );
            return None;
        };
        let dir = tempfile::tempdir().expect("temp dir");
        let run_as = (output(Command::new("id").arg("-u")) == "0").then(|| "postgres".to_owned());
        if let Some(user) = &run_as {
            let uid: u32 = output(Command::new("id").args(["-u", user]))
                .parse()
                .expect("uid");
            let gid: u32 = output(Command::new("id").args(["-g", user]))
                .parse()
                .expect("gid");
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).expect("chown the dir");
        }
        let data = dir.path().join("data");
        let ca_path = dir.path().join("ca.pem");
        std::fs::write(&ca_path, &certs.ca_pem).expect("write the CA");
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let server = Self {
            bin,
            data,
            run_as,
            port,
            ca_path,
            _dir: dir,
        };
        output(server.command("initdb").args([
            "-D".as_ref(),
            server.data.as_os_str(),
            "-U".as_ref(),
            "postgres".as_ref(),
            "-A".as_ref(),
            "trust".as_ref(),
            "--no-sync".as_ref(),
        ]));
        server.write_private("server.crt", &certs.server_cert_pem);
        server.write_private("server.key", &certs.server_key_pem);
        let socket_dir = server.data.parent().unwrap_or(Path::new("/tmp"));
        server.append(
            "postgresql.conf",
            &format!(
                "listen_addresses = '127.0.0.1'\nport = {port}\nunix_socket_directories = '{}'\n\
                 ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n\
                 fsync = off\nmax_connections = 30\n",
                socket_dir.display()
            ),
        );
        // Plain TCP is refused outright, so a connection that works is an encrypted one.
        std::fs::write(
            server.data.join("pg_hba.conf"),
            "local all all trust\nhostssl all all 127.0.0.1/32 trust\nhostnossl all all 127.0.0.1/32 reject\n",
        )
        .expect("write pg_hba.conf");
        let log = server
            .data
            .parent()
            .unwrap_or(Path::new("/tmp"))
            .join("log");
        let started = server
            .command("pg_ctl")
            .args(["-D".as_ref(), server.data.as_os_str()])
            .args(["-l".as_ref(), log.as_os_str()])
            .args(["-w", "-t", "60", "start"])
            .output()
            .expect("run pg_ctl");
        assert!(
            started.status.success(),
            "the private server did not start: {}\n{}",
            String::from_utf8_lossy(&started.stderr),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        Some(server)
    }

    fn command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        match &self.run_as {
            Some(user) => {
                let mut cmd = Command::new("runuser");
                cmd.args(["-u", user, "--"]).arg(path);
                cmd
            }
            None => Command::new(path),
        }
    }

    /// Writes a file into the data directory that only the server's user may read, as
    /// PostgreSQL requires of its key.
    fn write_private(&self, name: &str, contents: &str) {
        let path = self.data.join(name);
        std::fs::write(&path, contents).expect("write into the data dir");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        if self.run_as.is_some() {
            let meta = std::fs::metadata(&self.data).expect("stat the data dir");
            use std::os::unix::fs::MetadataExt;
            std::os::unix::fs::chown(&path, Some(meta.uid()), Some(meta.gid())).expect("chown");
        }
    }

    fn append(&self, name: &str, text: &str) {
        use std::io::Write;
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(self.data.join(name))
            .expect("open a config file");
        file.write_all(text.as_bytes())
            .expect("append to a config file");
    }

    fn url(&self, query: &str) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{}/postgres?{query}",
            self.port
        )
    }
}

impl Drop for PrivateServer {
    fn drop(&mut self) {
        let stopped = self
            .command("pg_ctl")
            .args(["-D".as_ref(), self.data.as_os_str()])
            .args(["-m", "immediate", "-w", "stop"])
            .output();
        if !stopped.is_ok_and(|o| o.status.success()) {
            eprintln!(
                "could not stop the private PostgreSQL in {}",
                self.data.display()
            );
        }
    }
}

async fn connect(url: &str) -> session_core::Result<PostgresStore> {
    PostgresStore::builder()
        .max_connections(2)
        .acquire_timeout(Duration::from_secs(10))
        .connect(url)
        .await
}

#[cfg(feature = "tls")]
mod with_tls {
    use super::*;
    use session_core::{Record, SessionId, SessionStore, Timestamp};

    /// Whether the store's connection is encrypted, as the server sees it.
    async fn encrypted(store: &PostgresStore) -> bool {
        session_postgres::sqlx::query_scalar(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
        )
        .fetch_one(store.pool())
        .await
        .expect("read pg_stat_ssl")
    }

    async fn round_trip(store: &PostgresStore) {
        store.migrate().await.expect("migrate over TLS");
        let r = Record::new(
            SessionId::generate().key(),
            &b"over tls"[..],
            Timestamp::now() + Duration::from_secs(3600),
        )
        .with_owner("ann");
        store.create(&r).await.expect("create over TLS");
        assert_eq!(store.load(&r.key).await.expect("load over TLS"), Some(r));
    }

    /// `sslmode=require`, and `prefer` (what a URL without `sslmode` means), connect with TLS
    /// to a server that refuses plain connections, and a store round trip works over it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn require_and_prefer_connect_encrypted() {
        let certs = generate_certs();
        let Some(server) = PrivateServer::start(&certs) else {
            return;
        };
        for query in ["sslmode=require", "sslmode=prefer", ""] {
            let store = connect(&server.url(query))
                .await
                .unwrap_or_else(|e| panic!("connect with {query:?}: {e:?}"));
            assert!(encrypted(&store).await, "{query:?} connected in plain text");
            round_trip(&store).await;
        }
    }

    /// `verify-ca` and `verify-full` accept the server's certificate with the CA that signed
    /// it as `sslrootcert` (the certificate names 127.0.0.1, so `verify-full` matches too).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn verify_ca_and_verify_full_trust_the_given_ca() {
        let certs = generate_certs();
        let Some(server) = PrivateServer::start(&certs) else {
            return;
        };
        let ca = server.ca_path.display().to_string();
        for mode in ["verify-ca", "verify-full"] {
            let store = connect(&server.url(&format!("sslmode={mode}&sslrootcert={ca}")))
                .await
                .unwrap_or_else(|e| panic!("connect with {mode}: {e:?}"));
            assert!(encrypted(&store).await);
            round_trip(&store).await;
        }
    }

    /// A server certificate that does not chain to the trusted CA (another CA given as
    /// `sslrootcert`, or none, so only the public roots) is refused with `Error::Backend`:
    /// retrying would not help, so it is not `Unavailable`.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_untrusted_certificate_is_refused_as_a_backend_error() {
        let certs = generate_certs();
        let Some(server) = PrivateServer::start(&certs) else {
            return;
        };
        let (_, other_ca) = generate_ca("some other CA");
        let other = server.ca_path.with_file_name("other-ca.pem");
        std::fs::write(&other, other_ca).expect("write the other CA");
        for query in [
            format!("sslmode=verify-ca&sslrootcert={}", other.display()),
            format!("sslmode=verify-full&sslrootcert={}", other.display()),
            "sslmode=verify-full".to_owned(),
        ] {
            match connect(&server.url(&query)).await {
                Err(Error::Backend {
                    store: "postgres", ..
                }) => {}
                other => panic!("{query}: expected a Backend error, got {other:?}"),
            }
        }
    }
}

/// Built without the `tls` feature, a URL that requires TLS is refused with a `Config` error
/// naming the feature (not a confusing driver error), and `prefer` falls back to plain text,
/// which this server refuses.
#[cfg(not(feature = "tls"))]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_tls_feature_requiring_tls_is_a_config_error() {
    let certs = generate_certs();
    let Some(server) = PrivateServer::start(&certs) else {
        return;
    };
    let ca = server.ca_path.display().to_string();
    for mode in ["require", "verify-ca", "verify-full"] {
        match connect(&server.url(&format!("sslmode={mode}&sslrootcert={ca}"))).await {
            Err(Error::Config(why)) => assert!(why.contains("`tls` feature"), "{why}"),
            other => panic!("sslmode={mode}: expected a Config error, got {other:?}"),
        }
    }
    let plain = connect(&server.url("sslmode=prefer")).await;
    assert!(
        matches!(plain, Err(Error::Backend { .. })),
        "a plain connection must be refused by this server: {plain:?}"
    );
}
