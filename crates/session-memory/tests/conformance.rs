//! The shared conformance suite against the memory store.

use session_memory::MemoryStore;

async fn fresh_store() -> MemoryStore {
    match MemoryStore::builder().max_data_len(Some(4096)).build() {
        Ok(store) => store,
        Err(e) => panic!("building the store failed: {e}"),
    }
}

session_core::conformance_tests!(fresh_store);
