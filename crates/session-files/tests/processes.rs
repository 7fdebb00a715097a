//! Several processes share one root: creates of one key have exactly one winner, a move of one
//! session has exactly one winner, and conditional saves from every process to one counter
//! lose no increment (`session_core::conformance::processes`; children are this test binary
//! run again). Two stores on one root in one process exclude each other the same way.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::{key, ok, runtime, tempdir};
use session_core::conformance::processes::{self, Race};
use session_core::{Bytes, Error, Record, SessionStore, Timestamp};
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

#[test]
fn processes_racing_on_one_root_have_one_winner_each() {
    let dir = tempdir();
    processes::race(
        &Race::new(
            "processes_racing_on_one_root_have_one_winner_each",
            "SESSION_FILES_RACE_DIR",
        )
        .sized(48, 15, Duration::from_secs(240)),
        dir.path(),
        |dir| async move { open(&dir.join("store")) },
    );
}

/// Two stores on one root in one process (each with its own lock files open), from many
/// tasks: `flock` locks belong to the open file, so they exclude each other like processes.
#[test]
fn two_stores_on_one_root_have_one_create_winner() {
    let dir = tempdir();
    let root = dir.path().join("store");
    runtime().block_on(async {
        let stores = [Arc::new(open(&root)), Arc::new(open(&root))];
        for round in 0..20u32 {
            let k = key(common::seed(), 4, round);
            let handles: Vec<_> = (0..16u8)
                .map(|i| {
                    let store = Arc::clone(&stores[usize::from(i % 2)]);
                    tokio::spawn(async move {
                        (
                            i,
                            store
                                .create(&Record::new(k, vec![i; 16], Timestamp::now() + HOUR))
                                .await,
                        )
                    })
                })
                .collect();
            let mut winners = Vec::new();
            for h in handles {
                match h.await {
                    Ok((i, Ok(()))) => winners.push(i),
                    Ok((_, Err(Error::AlreadyExists))) => {}
                    Ok((_, Err(e))) => panic!("a create failed with {e:?}"),
                    Err(e) => panic!("a task failed: {e}"),
                }
            }
            assert_eq!(winners.len(), 1, "round {round}: winners {winners:?}");
            let stored = ok("load", stores[1].load(&k).await).map(|r| r.data);
            assert_eq!(stored, Some(Bytes::from(vec![winners[0]; 16])));
        }
    });
}
