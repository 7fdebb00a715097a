//! The shared conformance suite against a real MySQL or MariaDB (`MYSQL_URL`), each case on
//! its own table; `survives_reopen` opens a second store on the same table.

mod common;

use session_core::conformance::Fixture;

async fn fixture() -> Fixture {
    let Some(url) = common::mysql_url() else {
        return Fixture::skipped("MYSQL_URL is not set");
    };
    let table = common::unique_name("conformance");
    let store = common::store(&url, &table).await;
    let guard = common::drop_table(&url, &table);
    Fixture::new(store)
        .reopen(move || {
            let (url, table) = (url.clone(), table.clone());
            async move { common::store(&url, &table).await }
        })
        .guard(guard)
}

session_core::conformance_tests!(fixture, durable);
