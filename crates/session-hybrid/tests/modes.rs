//! The store's files are private whatever the umask: directory 0700, lock file, log segments
//! and snapshots 0600. Its own test binary, because the umask belongs to the whole process.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{files, io, key, must, open, tempdir};
use rustix::fs::Mode;
use session_core::{Record, SessionStore, Timestamp};
use session_hybrid::{Durability, HybridStore};

const HOUR: Duration = Duration::from_secs(3600);

/// The permission bits, in octal as `ls` and `chmod` write them.
fn mode(path: &Path) -> String {
    let mode = io("stat", std::fs::symlink_metadata(path))
        .permissions()
        .mode();
    format!("{:03o}", mode & 0o777)
}

/// Fills a fresh store under the current umask until it has compacted once, closes it, and
/// checks the mode of everything it created.
async fn check_modes_under(umask: u32) {
    let tmp = tempdir();
    // Two levels that do not exist yet: both are the store's to create.
    let dir = tmp.path().join("app").join("sessions");
    let store = open(
        HybridStore::builder(&dir)
            .durability(Durability::Lazy(Duration::from_millis(5)))
            .compact_min_bytes(1)
            .compact_factor(1)
            .cleanup_interval(Duration::ZERO),
    );
    let started = Instant::now();
    while store.compactions() == 0 {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no compaction in 30 s"
        );
        let r = Record::new(key(), vec![7u8; 100], Timestamp::now() + HOUR).with_owner("ann");
        must("create", store.create(&r)).await;
        must("flush", store.flush()).await;
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    must("close", store.close()).await;

    assert_eq!(mode(&dir), "700", "umask {umask:03o}: the store directory");
    assert_eq!(
        mode(&tmp.path().join("app")),
        "700",
        "umask {umask:03o}: a parent the store created"
    );
    let names = files(&dir, "");
    assert!(names.iter().any(|n| n == "LOCK"), "{names:?}");
    assert!(names.iter().any(|n| n.starts_with("log-")), "{names:?}");
    assert!(names.iter().any(|n| n.ends_with(".snap")), "{names:?}");
    for name in &names {
        assert_eq!(
            mode(&dir.join(name)),
            "600",
            "umask {umask:03o}: {name} must be readable by its owner only"
        );
    }
}

#[tokio::test]
async fn files_are_private_whatever_the_umask() {
    for umask in [0o022, 0o000] {
        let previous = rustix::process::umask(Mode::from_raw_mode(umask));
        check_modes_under(umask).await;
        rustix::process::umask(previous);
    }
}

/// Files left by an older build under a permissive umask are made private when reopened.
#[tokio::test]
async fn files_from_an_older_build_are_made_private_on_open() {
    let tmp = tempdir();
    let store = open(HybridStore::builder(tmp.path()).cleanup_interval(Duration::ZERO));
    let r = Record::new(key(), &b"x"[..], Timestamp::now() + HOUR);
    must("create", store.create(&r)).await;
    must("close", store.close()).await;
    drop(store);
    for name in files(tmp.path(), "") {
        let path = tmp.path().join(name);
        io(
            "chmod",
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)),
        );
    }
    let store = open(HybridStore::builder(tmp.path()).cleanup_interval(Duration::ZERO));
    for name in files(tmp.path(), "") {
        assert_eq!(mode(&tmp.path().join(&name)), "600", "{name}");
    }
    assert_eq!(must("load", store.load(&r.key)).await, Some(r));
}
