//! The shared conformance suite, on a database file of its own per case (reopened by
//! `survives_reopen`) and on a private in-memory database.

mod common;

use session_core::conformance::Fixture;

async fn file() -> Fixture {
    let dir = common::tempdir();
    let path = common::db_path(dir.path());
    let store = common::open(&path).await;
    Fixture::new(store)
        .reopen(move || {
            let path = path.clone();
            async move { common::open(&path).await }
        })
        .guard(dir)
}

async fn memory() -> session_sqlite::SqliteStore {
    common::memory().await
}

mod file {
    use super::*;
    session_core::conformance_tests!(file, durable);
}

mod memory {
    use super::*;
    session_core::conformance_tests!(memory);
}
