//! The bridge's promises, called straight through tower-sessions' `SessionStore` trait (0.14
//! and 0.15, the cases written once) on every store kind: hashed ids at rest, create never
//! overwrites, load never returns expired records and creates nothing, a save never brings a
//! session back, the size limit, the owner index.

mod common;

use std::collections::HashMap;

use serde_json::json;
use session_tower_sessions::{Data, axum_login_owner};

/// Data as axum-login 0.18 stores it for a logged-in user.
fn user_data(user: serde_json::Value) -> Data {
    HashMap::from([
        (
            "axum-login.data".to_owned(),
            json!({"user_id": user, "auth_hash": [1, 2, 3]}),
        ),
        ("theme".to_owned(), json!("dark")),
    ])
}

macro_rules! contract_cases {
    ($ts:ident) => {
        use std::collections::HashMap;

        use serde_json::json;
        use session_core::{Record, Timestamp};
        use session_tower_sessions::{TowerSessionStore, axum_login_owner};
        use time::OffsetDateTime;
        use $ts::session::{Id, Record as TowerRecord};
        use $ts::session_store::Error as TowerError;
        use $ts::{ExpiredDeletion, SessionStore as _};

        use crate::common::{Env, MAX_DATA_LEN};
        use crate::user_data;

        fn bridge(env: &Env) -> TowerSessionStore {
            TowerSessionStore::builder(env.store.clone())
                .owner(axum_login_owner)
                .build()
        }

        fn record(data: session_tower_sessions::Data, ttl: time::Duration) -> TowerRecord {
            TowerRecord {
                id: Id::default(),
                data,
                expiry_date: OffsetDateTime::now_utc() + ttl,
            }
        }

        fn live(data: session_tower_sessions::Data) -> TowerRecord {
            record(data, time::Duration::minutes(10))
        }

        fn small() -> session_tower_sessions::Data {
            HashMap::from([("n".to_owned(), json!(1))])
        }

        async fn load(b: &TowerSessionStore, id: Id) -> Option<TowerRecord> {
            b.load(&id).await.expect("load")
        }

        /// A created session loads back with its data and its expiry to the millisecond.
        pub(crate) async fn create_then_load_round_trips(env: Env) {
            let b = bridge(&env);
            let mut r = live(user_data(json!(7)));
            b.create(&mut r).await.expect("create");
            let back = load(&b, r.id).await.expect("live");
            assert_eq!(back.id, r.id);
            assert_eq!(back.data, r.data);
            let drift = (back.expiry_date - r.expiry_date).abs();
            assert!(
                drift < time::Duration::milliseconds(1),
                "expiry drifted by {drift}"
            );
        }

        /// The store keeps the record under the SHA-256 of the id's bytes, and neither the id
        /// nor its cookie text is anywhere at rest.
        pub(crate) async fn store_sees_only_the_hash_of_the_id(env: Env) {
            let b = bridge(&env);
            let mut r = live(user_data(json!("alice")));
            b.create(&mut r).await.expect("create");
            let key = TowerSessionStore::key_of(r.id.0);
            assert_eq!(env.store.list().await.expect("list"), vec![key]);
            let stored = env.store.load(&key).await.expect("load").expect("stored");
            let raw = r.id.0.to_le_bytes();
            let text = r.id.to_string();
            let holds = |hay: &[u8], needle: &[u8]| hay.windows(needle.len()).any(|w| w == needle);
            assert!(!holds(&stored.data, &raw) && !holds(&stored.data, text.as_bytes()));
            for (path, bytes) in env.files_at_rest() {
                assert!(!holds(&bytes, &raw), "{} holds the raw id", path.display());
                assert!(
                    !holds(&bytes, text.as_bytes()),
                    "{} holds the cookie",
                    path.display()
                );
                assert!(!path.to_string_lossy().contains(&text));
            }
        }

        /// Creating on a taken id draws a new id and leaves the other session untouched.
        pub(crate) async fn create_on_taken_id_cycles_it(env: Env) {
            let b = bridge(&env);
            let mut first = live(user_data(json!(1)));
            b.create(&mut first).await.expect("create");
            let mut second = live(user_data(json!(2)));
            second.id = first.id;
            b.create(&mut second).await.expect("create cycles the id");
            assert_ne!(second.id, first.id, "the id was not cycled");
            assert_eq!(load(&b, first.id).await.expect("first").data, first.data);
            assert_eq!(load(&b, second.id).await.expect("second").data, second.data);
            assert_eq!(env.store.count().await.expect("count"), 2);
        }

        /// Loading an id nobody created returns `None` and stores nothing.
        pub(crate) async fn loading_unknown_creates_nothing(env: Env) {
            let b = bridge(&env);
            let id = Id::default();
            assert!(load(&b, id).await.is_none());
            assert!(
                !env.store
                    .exists(&TowerSessionStore::key_of(id.0))
                    .await
                    .expect("exists")
            );
            assert_eq!(env.store.count().await.expect("count"), 0);
        }

        /// Expired sessions never load: one created expired, and one that expires later.
        pub(crate) async fn expired_never_loads(env: Env) {
            let b = bridge(&env);
            let mut past = record(small(), time::Duration::seconds(-1));
            b.create(&mut past)
                .await
                .expect("create an expired session");
            assert!(load(&b, past.id).await.is_none());
            let mut soon = record(small(), time::Duration::milliseconds(300));
            b.create(&mut soon).await.expect("create");
            assert!(load(&b, soon.id).await.is_some());
            tokio::time::sleep(std::time::Duration::from_millis(400)).await;
            assert!(
                load(&b, soon.id).await.is_none(),
                "an expired session loaded"
            );
        }

        /// Their save is an upsert: the last save's data and expiry win.
        pub(crate) async fn save_replaces_data_and_expiry(env: Env) {
            let b = bridge(&env);
            let mut r = live(small());
            b.create(&mut r).await.expect("create");
            r.data.insert("n".into(), json!(2));
            b.save(&r).await.expect("save");
            r.data.insert("n".into(), json!(3));
            r.expiry_date += time::Duration::hours(1);
            b.save(&r).await.expect("save");
            let back = load(&b, r.id).await.expect("live");
            assert_eq!(back.data["n"], json!(3));
            assert!((back.expiry_date - r.expiry_date).abs() < time::Duration::milliseconds(1));
        }

        /// A save after the session was deleted (logout elsewhere) succeeds and writes nothing.
        pub(crate) async fn save_after_delete_does_not_resurrect(env: Env) {
            let b = bridge(&env);
            let mut r = live(user_data(json!(7)));
            b.create(&mut r).await.expect("create");
            b.delete(&r.id).await.expect("delete");
            b.save(&r).await.expect("the save is refused quietly");
            assert!(
                load(&b, r.id).await.is_none(),
                "the deleted session came back"
            );
            assert_eq!(env.store.count().await.expect("count"), 0);
        }

        /// A save after "sign out everywhere" does not bring the user's session back.
        pub(crate) async fn save_after_sign_out_everywhere_does_not_resurrect(env: Env) {
            let b = bridge(&env);
            let mut phone = live(user_data(json!(7)));
            let mut laptop = live(user_data(json!(7)));
            let mut other = live(user_data(json!(8)));
            for r in [&mut phone, &mut laptop, &mut other] {
                b.create(r).await.expect("create");
            }
            assert_eq!(
                b.delete_by_owner("7").await.expect("sign out everywhere"),
                2
            );
            b.save(&phone).await.expect("the save is refused quietly");
            assert!(load(&b, phone.id).await.is_none());
            assert!(load(&b, laptop.id).await.is_none());
            assert!(
                load(&b, other.id).await.is_some(),
                "another user was signed out"
            );
            assert_eq!(b.count_by_owner("7").await.expect("owner count"), 0);
        }

        /// A save that follows a load, after another writer saved in between, still wins
        /// (their last-writer-wins), and after a delete behind the bridge's back writes nothing.
        pub(crate) async fn save_after_load_survives_other_writers(env: Env) {
            let b = bridge(&env);
            let mut r = live(small());
            b.create(&mut r).await.expect("create");
            load(&b, r.id).await.expect("live");
            let key = TowerSessionStore::key_of(r.id.0);
            let mut other = env.store.load(&key).await.expect("load").expect("live");
            other.data = session_core::Bytes::from_static(b"\x80");
            env.store.save(&other).await.expect("another writer saves");
            r.data.insert("n".into(), json!(9));
            b.save(&r).await.expect("save");
            assert_eq!(load(&b, r.id).await.expect("live").data["n"], json!(9));
            load(&b, r.id).await.expect("live");
            assert!(
                env.store
                    .delete(&key)
                    .await
                    .expect("delete behind the bridge")
            );
            b.save(&r).await.expect("the save is refused quietly");
            assert!(
                load(&b, r.id).await.is_none(),
                "the deleted session came back"
            );
        }

        /// A save of an id that was never created writes nothing either.
        pub(crate) async fn save_of_unknown_writes_nothing(env: Env) {
            let b = bridge(&env);
            b.save(&live(small())).await.expect("save");
            assert_eq!(env.store.count().await.expect("count"), 0);
        }

        /// Data above the limit fails with their `Encode` error and changes nothing: the old
        /// data stays, and an oversized create stores nothing.
        pub(crate) async fn oversized_is_refused_and_changes_nothing(env: Env) {
            let b = bridge(&env);
            assert_eq!(
                b.max_data_len(),
                Some(MAX_DATA_LEN),
                "the store's limit is the default"
            );
            let mut r = live(small());
            b.create(&mut r).await.expect("create");
            let mut big = r.clone();
            big.data
                .insert("blob".into(), json!("x".repeat(MAX_DATA_LEN)));
            assert!(matches!(b.save(&big).await, Err(TowerError::Encode(_))));
            assert_eq!(load(&b, r.id).await.expect("live").data, r.data);
            let mut fresh = big.clone();
            fresh.id = Id::default();
            assert!(matches!(
                b.create(&mut fresh).await,
                Err(TowerError::Encode(_))
            ));
            assert_eq!(env.store.count().await.expect("count"), 1);
            // A bridge limit below the store's is the one enforced.
            let strict = TowerSessionStore::builder(env.store.clone())
                .max_data_len(Some(64))
                .build();
            let mut medium = r.clone();
            medium.data.insert("blob".into(), json!("x".repeat(100)));
            assert!(matches!(
                strict.save(&medium).await,
                Err(TowerError::Encode(_))
            ));
            assert_eq!(load(&b, r.id).await.expect("live").data, r.data);
        }

        /// The owner index follows the logged-in user across saves, for integer and string ids.
        pub(crate) async fn owner_index_follows_the_user(env: Env) {
            let b = bridge(&env);
            let mut r = live(user_data(json!(7)));
            b.create(&mut r).await.expect("create");
            assert_eq!(b.count_by_owner("7").await.expect("count"), 1);
            r.data = user_data(json!("alice"));
            b.save(&r).await.expect("save");
            assert_eq!(b.count_by_owner("7").await.expect("count"), 0);
            assert_eq!(b.count_by_owner("alice").await.expect("count"), 1);
            r.data = small();
            b.save(&r).await.expect("save");
            assert_eq!(b.count_by_owner("alice").await.expect("count"), 0);
            let stored = env.store.load(&TowerSessionStore::key_of(r.id.0)).await;
            assert_eq!(stored.expect("load").expect("live").owner, None);
        }

        /// Stored bytes that are not a data map are their `Decode` error, not a panic.
        pub(crate) async fn corrupt_data_is_a_decode_error(env: Env) {
            let b = bridge(&env);
            let id = Id::default();
            let expires = Timestamp::now() + std::time::Duration::from_secs(600);
            let garbage = Record::new(TowerSessionStore::key_of(id.0), &b"\xc1\xff"[..], expires);
            env.store.create(&garbage).await.expect("plant garbage");
            assert!(matches!(b.load(&id).await, Err(TowerError::Decode(_))));
        }

        /// `ExpiredDeletion` sweeps expired sessions through the store and spares live ones.
        pub(crate) async fn expired_deletion_sweeps(env: Env) {
            let b = bridge(&env);
            let mut gone = record(small(), time::Duration::seconds(-5));
            let mut kept = live(small());
            b.create(&mut gone).await.expect("create");
            b.create(&mut kept).await.expect("create");
            ExpiredDeletion::delete_expired(&b).await.expect("sweep");
            assert_eq!(env.store.count_expired().await.expect("count expired"), 0);
            assert!(load(&b, kept.id).await.is_some());
            b.delete(&Id::default())
                .await
                .expect("deleting an unknown id is fine");
        }

        crate::per_store!(
            create_then_load_round_trips,
            store_sees_only_the_hash_of_the_id,
            create_on_taken_id_cycles_it,
            loading_unknown_creates_nothing,
            expired_never_loads,
            save_replaces_data_and_expiry,
            save_after_delete_does_not_resurrect,
            save_after_sign_out_everywhere_does_not_resurrect,
            save_of_unknown_writes_nothing,
            save_after_load_survives_other_writers,
            oversized_is_refused_and_changes_nothing,
            owner_index_follows_the_user,
            corrupt_data_is_a_decode_error,
            expired_deletion_sweeps,
        );
    };
}

mod v0_14 {
    contract_cases!(tower_sessions_014);
}

mod v0_15 {
    contract_cases!(tower_sessions_015);
}

/// The axum-login extractor: integer and string ids, no user, another key.
#[test]
fn axum_login_owner_reads_the_user_id() {
    assert_eq!(
        axum_login_owner(&user_data(json!(42))).as_deref(),
        Some("42")
    );
    assert_eq!(
        axum_login_owner(&user_data(json!("bob"))).as_deref(),
        Some("bob")
    );
    assert_eq!(axum_login_owner(&user_data(json!(null))), None);
    assert_eq!(axum_login_owner(&HashMap::new()), None);
}

/// One `builder` takes a store by value or already shared: an `Arc<dyn SessionStore>` is used
/// as it is (the bridge and a manager then share one store through one pointer), a store by
/// value goes behind a new `Arc` and is still the same store.
#[tokio::test]
async fn builder_takes_a_store_by_value_or_shared() {
    use std::sync::Arc;

    use session_core::{SessionId, SessionStore};
    use session_memory::MemoryStore;
    use session_tower_sessions::TowerSessionStore;

    let shared: Arc<dyn SessionStore> = Arc::new(MemoryStore::new());
    let bridge = TowerSessionStore::builder(Arc::clone(&shared)).build();
    assert!(
        Arc::ptr_eq(bridge.store(), &shared),
        "an Arc<dyn SessionStore> was wrapped again"
    );

    let memory = MemoryStore::new();
    let bridge = TowerSessionStore::builder(memory.clone()).build();
    let record = session_core::Record::new(
        SessionId::generate().key(),
        &b"x"[..],
        session_core::Timestamp::now() + std::time::Duration::from_secs(60),
    );
    bridge.store().create(&record).await.expect("create");
    assert!(
        memory.exists(&record.key).await.expect("exists"),
        "a store by value is the same store behind the bridge"
    );
}
