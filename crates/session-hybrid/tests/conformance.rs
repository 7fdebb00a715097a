//! The shared conformance suite against the hybrid store, in both durability modes, with the
//! reopen case: the store is dropped (its `Drop` flushes) and the directory opened again.

use session_core::conformance::Fixture;
use session_hybrid::{Durability, HybridStore};

fn open(dir: &std::path::Path, durability: Durability) -> HybridStore {
    match HybridStore::builder(dir)
        .durability(durability)
        .max_data_len(Some(4096))
        .open()
    {
        Ok(store) => store,
        Err(e) => panic!("opening the hybrid store in {} failed: {e}", dir.display()),
    }
}

async fn fixture(durability: Durability) -> Fixture {
    let tmp = match tempfile::tempdir() {
        Ok(tmp) => tmp,
        Err(e) => panic!("creating a temp dir failed: {e}"),
    };
    let dir = tmp.path().to_owned();
    Fixture::new(open(&dir, durability))
        .reopen(move || {
            let dir = dir.clone();
            async move { open(&dir, durability) }
        })
        .guard(tmp)
}

mod lazy {
    use super::*;

    async fn fresh() -> Fixture {
        fixture(Durability::default()).await
    }

    session_core::conformance_tests!(fresh, durable);
}

mod every_write {
    use super::*;

    async fn fresh() -> Fixture {
        fixture(Durability::EveryWrite).await
    }

    session_core::conformance_tests!(fresh, durable);
}
