//! A MariaDB server of the test's own, for settings that must not be changed on the shared
//! one (its global time zone): a fresh data directory in a temporary directory, no TCP port
//! at all (`--skip-networking`; clients use its Unix socket), stopped and deleted on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use session_core::conformance::skip_test;
use session_mysql::sqlx::{self, Connection as _};

/// A running server; killed and its data deleted when dropped.
#[derive(Debug)]
pub struct OwnServer {
    child: Child,
    /// A URL for `root` (no password) on database `test`, through the socket.
    pub url: String,
    _dir: tempfile::TempDir,
}

impl Drop for OwnServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The first of `names` found on `PATH` or in `/usr/sbin`, `/usr/bin`.
fn find(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs: Vec<PathBuf> = std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/bin")])
        .collect();
    names
        .iter()
        .flat_map(|name| dirs.iter().map(move |dir| dir.join(name)))
        .find(|candidate| candidate.is_file())
}

/// Starts a MariaDB server with `args` added to its command line, or skips visibly (failing
/// under `SESSION_REQUIRE_SERVICES=1`) when this machine has no MariaDB server binaries.
pub async fn start(args: &[&str]) -> Option<OwnServer> {
    let (Some(server), Some(install)) = (
        find(&["mariadbd"]),
        find(&["mariadb-install-db", "mysql_install_db"]),
    ) else {
        skip_test(
            "no mariadbd and mariadb-install-db on this machine to start a server of the test's own",
        );
        return None;
    };
    let dir = tempfile::Builder::new()
        .prefix("session-mysql-")
        .tempdir()
        .expect("temporary directory");
    let data = dir.path().join("data");
    let socket = dir.path().join("s.sock");
    let status = Command::new(&install)
        .arg("--no-defaults")
        .arg(format!("--datadir={}", data.display()))
        .args([
            "--auth-root-authentication-method=normal",
            "--skip-test-db",
            "--user=root",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("run mariadb-install-db");
    assert!(status.success(), "mariadb-install-db failed: {status}");
    let log = std::fs::File::create(dir.path().join("server.log")).expect("server log");
    let child = Command::new(&server)
        .arg("--no-defaults")
        .arg(format!("--datadir={}", data.display()))
        .arg(format!("--socket={}", socket.display()))
        .arg(format!("--pid-file={}", dir.path().join("pid").display()))
        .args([
            "--skip-networking",
            "--user=root",
            "--skip-log-bin",
            "--innodb-buffer-pool-size=16M",
            "--innodb-log-file-size=8M",
        ])
        .args(args)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start mariadbd");
    let mut own = OwnServer {
        child,
        url: url_for(&socket, "mysql"),
        _dir: dir,
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut conn = loop {
        match sqlx::MySqlConnection::connect(&own.url).await {
            Ok(conn) => break conn,
            Err(e) => {
                if let Ok(Some(status)) = own.child.try_wait() {
                    panic!(
                        "mariadbd exited with {status}: see {}",
                        own._dir.path().join("server.log").display()
                    );
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "mariadbd did not answer in 60 s: {e}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    sqlx::query("CREATE DATABASE test")
        .execute(&mut conn)
        .await
        .expect("create database test");
    conn.close().await.expect("close");
    own.url = url_for(&socket, "test");
    Some(own)
}

fn url_for(socket: &Path, database: &str) -> String {
    format!(
        "mysql://root@localhost/{database}?socket={}",
        socket.display()
    )
}
