//! The shared conformance suite against the memory store, unbounded and with a session limit
//! (whose count must follow every change without refusing any the suite makes).

use session_memory::MemoryStore;

mod unbounded {
    use super::*;

    async fn fresh_store() -> MemoryStore {
        match MemoryStore::builder().max_data_len(Some(4096)).build() {
            Ok(store) => store,
            Err(e) => panic!("building the store failed: {e}"),
        }
    }

    session_core::conformance_tests!(fresh_store);
}

mod bounded {
    use super::*;

    async fn fresh_store() -> MemoryStore {
        match MemoryStore::builder()
            .max_data_len(Some(4096))
            .max_sessions(Some(100_000))
            .build()
        {
            Ok(store) => store,
            Err(e) => panic!("building the store failed: {e}"),
        }
    }

    session_core::conformance_tests!(fresh_store);
}
