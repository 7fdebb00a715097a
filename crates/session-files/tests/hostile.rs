//! Hostile input: ids that look like paths, keys whose bytes are `/`, `.` or NUL, and files
//! that are corrupt, foreign, symlinked or from a newer build, dropped into the root.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{files_under, io, ok, runtime, tempdir};
use session_core::{Error, Record, SessionId, SessionKey, SessionStore, Timestamp};
use session_files::FileStore;

const HOUR: Duration = Duration::from_secs(3600);

fn open(root: &Path) -> FileStore {
    ok(
        "open",
        FileStore::builder(root)
            .cleanup_interval(Duration::ZERO)
            .open(),
    )
}

fn record_path(root: &Path, key: &SessionKey) -> PathBuf {
    let hex = key.to_hex();
    root.join(&hex[0..2]).join(&hex[2..4]).join(hex)
}

fn live(data: &[u8]) -> Record {
    Record::new(
        SessionId::generate().key(),
        data.to_vec(),
        Timestamp::now() + HOUR,
    )
}

/// Text from outside becomes a path only through `SessionId` (strict base64url, fixed length)
/// then its SHA-256 `SessionKey`; the store's API takes nothing else. Even keys whose raw bytes
/// are `/`, `.`, NUL or 0xff become 64 hex characters two directories below the root.
#[test]
fn path_like_ids_never_parse_and_any_key_stays_under_the_root() {
    for hostile in [
        "../../../../../../../../etc/passwd",
        "/etc/passwd",
        "..%2f..%2f..%2f..%2fetc%2fpasswd",
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa/.",
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\0a",
        "................................",
    ] {
        assert!(
            hostile.parse::<SessionId>().is_err(),
            "{hostile:?} parsed as a session id"
        );
        assert!(SessionKey::from_hex(hostile).is_none());
    }
    assert!(SessionKey::from_hex(&"../".repeat(21)).is_none());
    assert!(
        SessionKey::from_hex(&"AB".repeat(32)).is_none(),
        "only the lowercase form names files"
    );

    let dir = tempdir();
    let root = dir.path().join("store");
    let outside = dir.path().join("outside");
    io("mkdir", std::fs::create_dir(&outside));
    runtime().block_on(async {
        let store = open(&root);
        let keys: Vec<SessionKey> = [0u8, b'.', b'/', b'\\', 0xff]
            .iter()
            .map(|b| SessionKey::from_bytes([*b; 32]))
            .collect();
        for k in &keys {
            ok(
                "create",
                store
                    .create(&Record::new(*k, &b"x"[..], Timestamp::now() + HOUR))
                    .await,
            );
            assert!(
                record_path(&root, k).is_file(),
                "the file for {k:?} is not where the hex says"
            );
        }
        let mut dots_and_slashes = [b'.'; 32];
        dots_and_slashes[1] = b'/';
        let moved = SessionKey::from_bytes(dots_and_slashes);
        ok("rotate", store.rotate(&keys[0], &moved).await);
        assert!(record_path(&root, &moved).is_file());
        assert_eq!(ok("count", store.count().await), keys.len() as u64);
    });
    assert!(
        files_under(&outside).is_empty(),
        "something was written outside the root"
    );
    for file in files_under(&root) {
        let rel = match file.strip_prefix(&root) {
            Ok(rel) => rel.to_path_buf(),
            Err(_) => panic!("{} is outside the root", file.display()),
        };
        let parts: Vec<String> = rel
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        let lower_hex = |s: &str| s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        let ok_shape = match parts.as_slice() {
            [a, b, name] => {
                lower_hex(a)
                    && lower_hex(b)
                    && name.len() == 64
                    && lower_hex(name)
                    && name.starts_with(&format!("{a}{b}"))
            }
            [locks, stripe] if locks == "locks" => stripe.len() == 2 && lower_hex(stripe),
            _ => false,
        };
        assert!(ok_shape, "unexpected file {}", rel.display());
    }
}

/// Each way a file can be damaged is detected, the session reads as absent, the file is
/// removed, and the key can be used again.
#[test]
fn corrupt_files_are_reported_removed_and_never_returned() {
    let dir = tempdir();
    let root = dir.path().join("store");
    type Damage = fn(&mut Vec<u8>);
    let damages: [(&str, Damage); 9] = [
        ("empty", |f| f.clear()),
        ("shorter than a header", |f| f.truncate(20)),
        ("torn after the header", |f| f.truncate(53)),
        ("last byte lost", |f| {
            f.pop();
        }),
        ("bytes appended", |f| f.extend_from_slice(b"junk")),
        ("a data byte flipped", |f| {
            let last = f.len() - 1;
            f[last] ^= 0x40;
        }),
        ("expiry altered", |f| f[9] ^= 0x01),
        ("owner altered", |f| f[53] ^= 0x20),
        ("garbage", |f| *f = b"<html>not a session</html>".repeat(10)),
    ];
    runtime().block_on(async {
        let store = open(&root);
        for (what, damage) in damages {
            let r = live(b"some session data").with_owner("ann");
            ok("create", store.create(&r).await);
            let path = record_path(&root, &r.key);
            let mut bytes = io("read", std::fs::read(&path));
            damage(&mut bytes);
            io("write", std::fs::write(&path, &bytes));
            assert_eq!(
                ok("load", store.load(&r.key).await),
                None,
                "a file with {what} was returned"
            );
            assert!(!path.exists(), "the file with {what} was not removed");
            assert!(
                ok("list_by_owner", store.list_by_owner("ann").await).is_empty(),
                "{what}: listed"
            );
            ok("create again", store.create(&r).await);
            assert_eq!(
                ok("load", store.load(&r.key).await),
                Some(r.clone()),
                "{what}: the key is usable again"
            );
            ok("delete", store.delete(&r.key).await);
        }
        // Corrupt files are also dropped by a scan, without counting as live or expired.
        let r = live(b"x");
        ok("create", store.create(&r).await);
        io(
            "write",
            std::fs::write(record_path(&root, &r.key), b"garbage"),
        );
        assert_eq!(ok("count", store.count().await), 0);
        assert_eq!(ok("count_expired", store.count_expired().await), 0);
        assert!(!record_path(&root, &r.key).exists());
        // And a save or touch of a corrupt session is NotFound, never a resurrection.
        let r = live(b"y");
        ok("create", store.create(&r).await);
        io(
            "write",
            std::fs::write(record_path(&root, &r.key), b"garbage"),
        );
        assert!(matches!(store.save(&r).await, Err(Error::NotFound)));
        assert!(matches!(
            store.touch(&r.key, Timestamp::now() + HOUR).await,
            Err(Error::NotFound)
        ));
        assert_eq!(ok("load", store.load(&r.key).await), None);
    });
}

/// Files the store did not write, under names it does not use, are neither counted nor
/// deleted; a directory where a session file should be reads as absent, without a panic.
#[test]
fn foreign_files_are_ignored() {
    let dir = tempdir();
    let root = dir.path().join("store");
    runtime().block_on(async {
        let store = open(&root);
        let real = live(b"real");
        ok("create", store.create(&real).await);
        let real_bytes = io("read", std::fs::read(record_path(&root, &real.key)));
        // A valid session file copied under a key that belongs to another shard.
        let other = SessionId::generate().key();
        let wrong_shard = root.join("00").join("00");
        io("mkdir", std::fs::create_dir_all(&wrong_shard));
        let misplaced = wrong_shard.join(if other.to_hex().starts_with("0000") {
            real.key.to_hex()
        } else {
            other.to_hex()
        });
        let file_as_shard = if real.key.to_hex().starts_with("ab") {
            "cd"
        } else {
            "ab"
        };
        let foreign: Vec<PathBuf> = vec![
            root.join("README"),
            root.join(file_as_shard),
            root.join("zz").join("yy").join(other.to_hex()),
            wrong_shard.join("notes.txt"),
            wrong_shard.join(other.to_hex().to_uppercase()),
            misplaced.clone(),
        ];
        for path in &foreign {
            if let Some(parent) = path.parent() {
                io("mkdir", std::fs::create_dir_all(parent));
            }
            io("write", std::fs::write(path, &real_bytes));
        }
        let dir_at_key = SessionId::generate().key();
        io(
            "mkdir",
            std::fs::create_dir_all(record_path(&root, &dir_at_key)),
        );
        assert_eq!(ok("count", store.count().await), 1);
        assert_eq!(ok("list", store.list().await), vec![real.key]);
        assert_eq!(ok("delete_expired", store.delete_expired().await), 0);
        assert_eq!(ok("load", store.load(&dir_at_key).await), None);
        assert!(!ok("exists", store.exists(&dir_at_key).await));
        for path in &foreign {
            assert!(path.exists(), "{} was deleted", path.display());
        }
        assert_eq!(ok("load", store.load(&real.key).await), Some(real));
    });
}

/// A symlink planted at a session's path is not followed: the target is neither returned nor
/// changed, and the link is removed as corrupt.
#[test]
fn symlinks_are_not_followed() {
    let dir = tempdir();
    let root = dir.path().join("store");
    runtime().block_on(async {
        let store = open(&root);
        let decoy = live(b"decoy held outside the root");
        ok("create", store.create(&decoy).await);
        let target = dir.path().join("target");
        io(
            "copy",
            std::fs::copy(record_path(&root, &decoy.key), &target),
        );
        ok("delete", store.delete(&decoy.key).await);
        let victim = live(b"victim");
        ok("create", store.create(&victim).await);
        let link = record_path(&root, &victim.key);
        io("rm", std::fs::remove_file(&link));
        io("symlink", std::os::unix::fs::symlink(&target, &link));
        assert_eq!(ok("load", store.load(&victim.key).await), None);
        assert!(
            std::fs::symlink_metadata(&link).is_err(),
            "the symlink was kept"
        );
        assert!(target.exists(), "the symlink's target was touched");
    });
}

/// A file from a newer build (a format version this one does not know) is reported as a
/// backend error and kept, since this build cannot tell whether it is live; scans skip it and
/// a delete still removes it.
#[test]
fn newer_format_is_kept_and_reported() {
    let dir = tempdir();
    let root = dir.path().join("store");
    runtime().block_on(async {
        let store = open(&root);
        let r = live(b"from the future");
        ok("create", store.create(&r).await);
        let path = record_path(&root, &r.key);
        let mut bytes = io("read", std::fs::read(&path));
        bytes[4] = 9;
        let crc = crc32fast::hash(&bytes[..48]);
        bytes[48..52].copy_from_slice(&crc.to_le_bytes());
        io("write", std::fs::write(&path, &bytes));
        match store.load(&r.key).await {
            Err(Error::Backend { store, .. }) => assert_eq!(store, "files"),
            other => panic!("expected a Backend error, got {other:?}"),
        }
        assert!(path.exists());
        assert_eq!(ok("count", store.count().await), 0);
        assert!(
            matches!(store.create(&r).await, Err(Error::Backend { .. })),
            "create must not overwrite it"
        );
        ok("delete", store.delete(&r.key).await);
        assert!(!path.exists());
    });
}

/// The root and every directory are private to the user (0700), every file 0600.
#[test]
fn files_and_directories_are_private() {
    let dir = tempdir();
    let root = dir.path().join("nested").join("store");
    runtime().block_on(async {
        let store = open(&root);
        ok("create", store.create(&live(b"x").with_owner("ann")).await);
    });
    let mode = |p: &Path| io("stat", std::fs::metadata(p)).permissions().mode() & 0o777;
    assert_eq!(mode(&root), 0o700);
    let mut stack = vec![root.clone()];
    while let Some(d) = stack.pop() {
        for entry in io("list", std::fs::read_dir(&d)) {
            let path = io("entry", entry).path();
            if path.is_dir() {
                assert_eq!(mode(&path), 0o700, "{}", path.display());
                stack.push(path);
            } else {
                assert_eq!(mode(&path), 0o600, "{}", path.display());
            }
        }
    }
}

/// A session file as the format describes it, with whatever lengths the test claims:
/// `owner` and `data` are the bytes actually written (the file is then extended, sparse, to
/// the claimed size), and both checksums are right for what is written, so only the claimed
/// lengths are wrong.
fn forged_file(path: &Path, owner_len: u32, owner: &[u8], data_len: u64, data: &[u8]) {
    let mut h = [0u8; 52];
    h[0..4].copy_from_slice(b"SESF");
    h[4..6].copy_from_slice(&1u16.to_le_bytes());
    h[6..8].copy_from_slice(&u16::from(owner_len > 0).to_le_bytes());
    let expires = Timestamp::now() + HOUR;
    h[8..16].copy_from_slice(&expires.unix_millis().to_le_bytes());
    h[24..32].copy_from_slice(&1u64.to_le_bytes());
    h[32..36].copy_from_slice(&owner_len.to_le_bytes());
    h[36..44].copy_from_slice(&data_len.to_le_bytes());
    let mut body = crc32fast::Hasher::new();
    body.update(owner);
    body.update(data);
    h[44..48].copy_from_slice(&body.finalize().to_le_bytes());
    let crc = crc32fast::hash(&h[..48]);
    h[48..52].copy_from_slice(&crc.to_le_bytes());
    let mut bytes = h.to_vec();
    bytes.extend_from_slice(owner);
    bytes.extend_from_slice(data);
    if let Some(parent) = path.parent() {
        io("mkdir", std::fs::create_dir_all(parent));
    }
    io("write", std::fs::write(path, &bytes));
    let file = io("open", std::fs::OpenOptions::new().write(true).open(path));
    io("extend", file.set_len(52 + u64::from(owner_len) + data_len));
}

const FORGED_CHILD: &str = "SESSION_FILES_FORGED_ROOT";
const FORGED_LIMIT: usize = 1024;

fn forged_keys(root: &Path) -> Vec<SessionKey> {
    let text = io("read keys", std::fs::read_to_string(root.join("keys")));
    text.lines()
        .map(|l| SessionKey::from_hex(l).expect("a key"))
        .collect()
}

/// Headers whose checksums are right but whose lengths are above the store's limits (data
/// above `max_data_len`, owners above `MAX_OWNER_LEN`) are corrupt: every operation treats the
/// session as absent and removes the file, and nothing is allocated for the claimed lengths.
/// The reads run in a child process whose address space is capped at 3 GiB, so allocating
/// what a header claims (4 GiB of owner, 1 TiB of data, both sparse on disk) would abort it.
#[test]
fn forged_lengths_are_corrupt_and_never_allocated() {
    if let Ok(root) = std::env::var(FORGED_CHILD) {
        let cap = 3 << 30;
        io(
            "setrlimit",
            rustix::process::setrlimit(
                rustix::process::Resource::As,
                rustix::process::Rlimit {
                    current: Some(cap),
                    maximum: Some(cap),
                },
            )
            .map_err(std::io::Error::from),
        );
        let root = PathBuf::from(root);
        let keys = forged_keys(&root);
        runtime().block_on(async {
            let store = ok(
                "open",
                FileStore::builder(&root)
                    .max_data_len(Some(FORGED_LIMIT))
                    .cleanup_interval(Duration::ZERO)
                    .open(),
            );
            // Each op on its own forged file: the first meeting removes it.
            let [
                over,
                huge_data,
                huge_owner,
                by_delete,
                by_touch,
                by_save,
                by_count,
            ] = keys[..]
            else {
                panic!("seven forged keys expected, got {}", keys.len());
            };
            assert_eq!(
                ok("load", store.load(&over).await),
                None,
                "data above max_data_len was returned"
            );
            assert_eq!(ok("load", store.load(&huge_data).await), None);
            assert_eq!(ok("load", store.load(&huge_owner).await), None);
            assert!(!ok("delete", store.delete(&by_delete).await));
            assert!(matches!(
                store.touch(&by_touch, Timestamp::now() + HOUR).await,
                Err(Error::NotFound)
            ));
            let mut r = Record::new(by_save, &b"x"[..], Timestamp::now() + HOUR);
            r.version = 1;
            assert!(matches!(store.save(&r).await, Err(Error::NotFound)));
            assert_eq!(ok("count", store.count().await), 0);
            let _ = by_count;
        });
        return;
    }
    let dir = tempdir();
    let root = dir.path().join("store");
    let keys: Vec<SessionKey> = (0..7).map(|_| SessionId::generate().key()).collect();
    let data = vec![b'd'; FORGED_LIMIT + 1];
    forged_file(
        &record_path(&root, &keys[0]),
        0,
        b"",
        data.len() as u64,
        &data,
    );
    forged_file(&record_path(&root, &keys[1]), 0, b"", 1 << 40, b"");
    for k in &keys[2..] {
        forged_file(&record_path(&root, k), u32::MAX, b"", 0, b"");
    }
    let listing: String = keys.iter().map(|k| k.to_hex() + "\n").collect();
    io("write keys", std::fs::write(root.join("keys"), listing));
    let mut child = common::reexec(
        "forged_lengths_are_corrupt_and_never_allocated",
        &[(FORGED_CHILD, root.display().to_string())],
    );
    let status = common::wait_exit(&mut child, Duration::from_secs(120));
    assert!(
        status.success(),
        "the store failed on forged lengths ({status}): it allocated what a header claimed"
    );
    for k in &keys {
        assert!(
            !record_path(&root, k).exists(),
            "a forged file was kept: {}",
            k.to_hex()
        );
    }
}

/// A symlink planted where the store keeps a lock file, or in place of its `locks` or
/// `owners` directory, is never followed: operations on that lock stripe fail with a
/// `Backend` error naming the path, opening on a linked directory is refused, and nothing is
/// created where the links point.
#[test]
fn planted_symlinks_for_locks_and_store_directories_are_refused() {
    let dir = tempdir();
    let root = dir.path().join("store");
    let outside = dir.path().join("outside");
    io("mkdir", std::fs::create_dir(&outside));
    runtime().block_on(async {
        let store = open(&root);
        let key = SessionKey::from_bytes([0x5a; 32]);
        let lock = root.join("locks").join("5a");
        let _ = std::fs::remove_file(&lock);
        let target = outside.join("lock-target");
        io("symlink", std::os::unix::fs::symlink(&target, &lock));
        match store
            .create(&Record::new(key, &b"x"[..], Timestamp::now() + HOUR))
            .await
        {
            Err(Error::Backend { source, .. }) => {
                assert!(source.to_string().contains("lock"), "{source}");
            }
            other => panic!("a symlinked lock file must fail the call, got {other:?}"),
        }
        assert!(!target.exists(), "the lock symlink was followed");
        assert!(!ok("exists", store.exists(&key).await));
        // Other stripes work.
        ok("create", store.create(&live(b"y")).await);
    });
    for name in ["locks", "owners"] {
        let root = dir.path().join(format!("linked-{name}"));
        io("mkdir", std::fs::create_dir(&root));
        let elsewhere = outside.join(name);
        io("mkdir", std::fs::create_dir(&elsewhere));
        io(
            "symlink",
            std::os::unix::fs::symlink(&elsewhere, root.join(name)),
        );
        let opened = runtime().block_on(async {
            FileStore::builder(&root)
                .cleanup_interval(Duration::ZERO)
                .open()
                .map(drop)
        });
        assert!(
            matches!(opened, Err(Error::Config(_))),
            "{name}: a symlinked store directory must be refused, got {opened:?}"
        );
        assert!(
            files_under(&elsewhere).is_empty(),
            "{name}: something was created through the link"
        );
    }
}
