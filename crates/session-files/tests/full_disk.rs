//! A full disk: a 256 KiB tmpfs mounted by the test (root only), filled up; writes fail with
//! a typed `Backend` error carrying `ENOSPC`, leave the old record intact and leave no temp
//! file behind, and work again once space is freed.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{has_errno, io, ok, runtime, temp_files, tempdir};
use session_core::{Bytes, Error, Record, SessionId, SessionStore, Timestamp};
use session_files::FileStore;

const HOUR: Duration = Duration::from_secs(3600);
const ENOSPC: i32 = 28;

/// Unmounts the tmpfs even when an assertion fails.
struct Mount(PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn mount_tmpfs(at: &Path) -> Result<Mount, String> {
    if !rustix::process::geteuid().is_root() {
        return Err("not running as root, so no tmpfs can be mounted".into());
    }
    let out = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=256k,mode=0700", "tmpfs"])
        .arg(at)
        .output()
        .map_err(|e| format!("running mount failed: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "mount was refused: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(Mount(at.to_path_buf()))
}

fn assert_disk_full(what: &str, err: Error) {
    match &err {
        Error::Backend { store, source } => {
            assert_eq!(*store, "files");
            assert!(
                has_errno(source.as_ref(), ENOSPC),
                "{what}: the error does not carry ENOSPC: {err:?}"
            );
        }
        other => panic!("{what}: expected a Backend error, got {other:?}"),
    }
}

#[test]
fn full_disk_is_a_typed_error_and_keeps_the_old_record() {
    let dir = tempdir();
    let mnt = dir.path().join("mnt");
    io("mkdir", std::fs::create_dir(&mnt));
    let _mount = match mount_tmpfs(&mnt) {
        Ok(m) => m,
        Err(why) => {
            eprintln!("SKIPPED full_disk_is_a_typed_error_and_keeps_the_old_record: {why}");
            return;
        }
    };
    let root = mnt.join("store");
    runtime().block_on(async {
        let store = ok(
            "open",
            FileStore::builder(&root)
                .cleanup_interval(Duration::ZERO)
                .open(),
        );
        let old = Record::new(
            SessionId::generate().key(),
            vec![1u8; 1000],
            Timestamp::now() + HOUR,
        )
        .with_owner("ann");
        ok("create", store.create(&old).await);

        let filler_path = mnt.join("filler");
        let mut filler = io("create filler", std::fs::File::create(&filler_path));
        let chunk = vec![0u8; 4096];
        let full = loop {
            match filler.write_all(&chunk) {
                Ok(()) => {}
                Err(e) => break e,
            }
        };
        assert_eq!(
            full.raw_os_error(),
            Some(ENOSPC),
            "filling the tmpfs stopped with {full}"
        );
        let _ = filler.sync_all();

        let mut bigger = old.clone();
        bigger.data = Bytes::from(vec![2u8; 64 * 1024]);
        match store.save(&bigger).await {
            Ok(v) => panic!("a save on a full disk succeeded (version {v})"),
            Err(e) => assert_disk_full("save", e),
        }
        match store.touch(&old.key, old.expires_at + HOUR).await {
            Ok(()) => panic!("a touch on a full disk succeeded"),
            Err(e) => assert_disk_full("touch", e),
        }
        let other = Record::new(
            SessionId::generate().key(),
            vec![3u8; 8192],
            Timestamp::now() + HOUR,
        );
        match store.create(&other).await {
            Ok(()) => panic!("a create on a full disk succeeded"),
            Err(e) => assert_disk_full("create", e),
        }
        assert_eq!(
            ok("load", store.load(&old.key).await),
            Some(old.clone()),
            "the old record changed"
        );
        assert_eq!(ok("load", store.load(&other.key).await), None);
        assert!(
            temp_files(&root).is_empty(),
            "failed writes left temp files: {:?}",
            temp_files(&root)
        );
        let owned = ok("list_by_owner", store.list_by_owner("ann").await);
        assert_eq!(owned, vec![old.clone()]);

        drop(filler);
        io("remove filler", std::fs::remove_file(&filler_path));
        let v = ok("save after freeing space", store.save(&bigger).await);
        assert_eq!(v, old.version + 1);
        assert_eq!(
            ok("load", store.load(&old.key).await).map(|r| r.data),
            Some(bigger.data)
        );
    });
}
