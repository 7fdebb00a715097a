//! Timestamps do not depend on any time zone: the session's `time_zone` (set per connection
//! here to the ends of the range both MySQL and MariaDB accept, +13:00 and -12:00, and left to the server's default) and the
//! server's global one (a server of the test's own started with `--default-time-zone=-11:00`,
//! or the shared server when its global zone is already not UTC, as in CI's MySQL service).
//!
//! Every offset in use is at least 30 minutes, so records 10 minutes either side of now tell
//! a store that reads any clock in a zone other than UTC from one that does not.

mod common;

use std::time::Duration;

use session_core::{Record, SessionId, SessionStore, Timestamp};
use session_mysql::MySqlStore;
use session_mysql::sqlx;
use session_mysql::sqlx::mysql::{MySqlConnectOptions, MySqlPoolOptions};

const TEN_MINUTES: Duration = Duration::from_secs(600);

/// A store on a fresh table over connections whose session `time_zone` is `zone` (`None`:
/// the server's global one).
async fn store_in_zone(url: &str, table: &str, zone: Option<&str>) -> MySqlStore {
    let options: MySqlConnectOptions = url.parse().expect("MySQL URL");
    let pool = MySqlPoolOptions::new()
        .max_connections(2)
        .connect_with(options.timezone(zone.map(str::to_owned)))
        .await
        .expect("connect");
    let store = MySqlStore::builder()
        .table(table)
        .build(pool)
        .expect("build");
    store.migrate().await.expect("migrate");
    store
}

/// The offset of the store's session clock from UTC, in minutes.
async fn session_offset_minutes(store: &MySqlStore) -> i64 {
    sqlx::query_scalar("SELECT TIMESTAMPDIFF(MINUTE, UTC_TIMESTAMP(), NOW())")
        .fetch_one(store.pool())
        .await
        .expect("read the session's offset")
}

/// Records 10 minutes either side of now are live and expired as they should be, for every
/// operation that checks expiry, and their times are stored as given.
async fn expiry_is_exact(store: &MySqlStore, zone: &str) {
    let live = Record::new(
        SessionId::generate().key(),
        &b"live"[..],
        Timestamp::now() + TEN_MINUTES,
    )
    .with_owner("tz");
    let gone = Record::new(
        SessionId::generate().key(),
        &b"gone"[..],
        Timestamp::now() - TEN_MINUTES,
    )
    .with_owner("tz");
    store.create(&live).await.expect("create live");
    store.create(&gone).await.expect("create expired");
    assert_eq!(
        store.load(&live.key).await.expect("load"),
        Some(live.clone()),
        "{zone}: a live record"
    );
    assert_eq!(
        store.load(&gone.key).await.expect("load"),
        None,
        "{zone}: an expired record"
    );
    assert!(store.exists(&live.key).await.expect("exists"), "{zone}");
    assert!(!store.exists(&gone.key).await.expect("exists"), "{zone}");
    assert_eq!(store.count().await.expect("count"), 1, "{zone}");
    assert_eq!(
        store.count_expired().await.expect("count_expired"),
        1,
        "{zone}"
    );
    assert_eq!(store.list().await.expect("list"), vec![live.key], "{zone}");
    assert_eq!(
        store.list_by_owner("tz").await.expect("list_by_owner"),
        vec![live.clone()],
        "{zone}"
    );
    let stored: (i64, i64) = sqlx::query_as(&format!(
        "SELECT `created_at`, `expires_at` FROM `{}` WHERE `key` = ?",
        store.table()
    ))
    .bind(live.key.as_bytes().as_slice())
    .fetch_one(store.pool())
    .await
    .expect("read the stored times");
    assert_eq!(
        stored,
        (live.created_at.unix_millis(), live.expires_at.unix_millis()),
        "{zone}"
    );
    // An expiry a few seconds ahead is live, and a touch into the past ends the session.
    let soon = Timestamp::now() + Duration::from_secs(5);
    store.touch(&live.key, soon).await.expect("touch");
    assert!(
        store.exists(&live.key).await.expect("exists"),
        "{zone}: 5 s ahead is live"
    );
    store
        .touch(&live.key, Timestamp::now() - Duration::from_secs(5))
        .await
        .expect("touch into the past");
    assert!(
        !store.exists(&live.key).await.expect("exists"),
        "{zone}: 5 s ago is expired"
    );
    assert_eq!(
        store.delete_expired().await.expect("delete_expired"),
        2,
        "{zone}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_session_time_zone_does_not_matter() {
    let Some(url) = common::mysql_url() else {
        return;
    };
    for (zone, offset) in [
        (Some("+13:00"), Some(13 * 60)),
        (Some("-12:00"), Some(-12 * 60)),
        (None, None),
    ] {
        let table = common::unique_name("tz");
        let _guard = common::drop_table(&url, &table);
        let store = store_in_zone(&url, &table, zone).await;
        if let Some(offset) = offset {
            assert_eq!(
                session_offset_minutes(&store).await,
                offset,
                "the session runs in {zone:?}"
            );
        }
        expiry_is_exact(&store, zone.unwrap_or("the server's zone")).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_global_time_zone_does_not_matter() {
    let Some(url) = common::mysql_url() else {
        return;
    };
    // The shared server's global zone may already not be UTC (CI's MySQL service runs in
    // +05:30); then it is the test. Otherwise the test starts a server of its own.
    let table = common::unique_name("tz");
    let _guard = common::drop_table(&url, &table);
    let shared = store_in_zone(&url, &table, None).await;
    if session_offset_minutes(&shared).await != 0 {
        expiry_is_exact(&shared, "the shared server's global zone").await;
        return;
    }
    let Some(own) = common::own_server::start(&["--default-time-zone=-11:00"]).await else {
        return;
    };
    let store = store_in_zone(&own.url, "sessions", None).await;
    let zones: (String, String) = sqlx::query_as("SELECT @@global.time_zone, @@session.time_zone")
        .fetch_one(store.pool())
        .await
        .expect("read the zones");
    assert_eq!(zones, ("-11:00".to_owned(), "-11:00".to_owned()));
    assert_eq!(session_offset_minutes(&store).await, -11 * 60);
    expiry_is_exact(&store, "global -11:00").await;
}
