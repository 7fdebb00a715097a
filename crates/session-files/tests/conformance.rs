//! The shared conformance suite, each case on a fresh temp directory, with the reopen case
//! opening the same directory again.

use session_core::conformance::Fixture;
use session_files::FileStore;

async fn fresh_fixture() -> Fixture {
    let dir = match tempfile::tempdir() {
        Ok(dir) => dir,
        Err(e) => panic!("creating a temp dir failed: {e}"),
    };
    let root = dir.path().join("sessions");
    let store = match FileStore::open(&root) {
        Ok(store) => store,
        Err(e) => panic!("opening the store failed: {e}"),
    };
    Fixture::new(store)
        .reopen(move || {
            let root = root.clone();
            async move {
                match FileStore::open(&root) {
                    Ok(store) => store,
                    Err(e) => panic!("reopening the store failed: {e}"),
                }
            }
        })
        .guard(dir)
}

session_core::conformance_tests!(fresh_fixture, durable);
