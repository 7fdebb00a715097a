//! Typed values (`get`, `remove`, `update` and the wrong-type error) and the one manager
//! builder over a store given by value or shared.

mod support;

use std::sync::Arc;
use std::time::Duration;

use session_kit::memory::MemoryStore;
use session_kit::{
    Codec, CommitOutcome, Error, MessagePack, Record, SessionId, SessionManager, SessionStore,
    Timestamp, Values,
};
use support::Probe;

async fn committed(m: &SessionManager, key: &str, value: &str) -> SessionId {
    let s = m.session(None);
    s.insert(key, value).await.expect("insert");
    match s.commit().await.expect("commit") {
        CommitOutcome::SetCookie { id, .. } => id,
        other => panic!("a new session must set its cookie, got {other:?}"),
    }
}

#[tokio::test]
async fn remove_returns_the_value_it_removed_a_flash_message_in_one_call() {
    let m = SessionManager::builder(Probe::new())
        .build()
        .expect("manager");
    let id = committed(&m, "flash", "saved!").await;

    let s = m.session_for(Some(id.clone()));
    assert_eq!(
        s.remove::<String>("flash")
            .await
            .expect("remove")
            .as_deref(),
        Some("saved!")
    );
    assert_eq!(s.remove::<String>("flash").await.expect("again"), None);
    assert_eq!(s.remove::<String>("never-set").await.expect("absent"), None);
    s.commit().await.expect("commit");

    let later = m.session_for(Some(id));
    assert_eq!(
        later.get::<String>("flash").await.expect("get"),
        None,
        "the removal was saved"
    );
}

#[tokio::test]
async fn a_value_read_as_the_wrong_type_is_its_own_error_and_stays() {
    let store = Probe::new();
    let m = SessionManager::builder(store.clone())
        .build()
        .expect("manager");
    let id = committed(&m, "user", "ann").await;

    let s = m.session_for(Some(id.clone()));
    match s.get::<u64>("user").await {
        Err(Error::WrongType { key, expected, .. }) => {
            assert_eq!(key, "user");
            assert_eq!(expected, "u64");
        }
        other => panic!("expected WrongType, got {other:?}"),
    }
    assert!(
        matches!(s.remove::<u64>("user").await, Err(Error::WrongType { .. })),
        "remove as the wrong type fails too"
    );
    assert!(
        matches!(
            s.update("user", |n: Option<u64>| n.unwrap_or(0) + 1).await,
            Err(Error::WrongType { .. })
        ),
        "and so does update"
    );
    s.commit().await.expect("commit");
    let later = m.session_for(Some(id.clone()));
    assert_eq!(
        later.get::<String>("user").await.expect("get").as_deref(),
        Some("ann"),
        "a failed typed read loses nothing"
    );
    assert!(
        store.inner.load(&id.key()).await.expect("load").is_some(),
        "a wrong type is not corrupt data: the session is kept"
    );
}

#[tokio::test]
async fn a_value_that_is_not_a_value_at_all_is_still_corrupt() {
    let store = Probe::new();
    let m = SessionManager::builder(store.clone())
        .build()
        .expect("manager");
    let id = SessionId::generate();
    // A well-formed session map whose one value is a byte no MessagePack value starts with.
    let mut values = Values::new();
    values.insert("broken".into(), vec![0xc1]);
    let data = MessagePack.encode_map(&values).expect("encode map");
    let expires = Timestamp::now() + Duration::from_secs(3600);
    store
        .inner
        .create(&Record::new(id.key(), data, expires))
        .await
        .expect("create");

    let s = m.session_for(Some(id));
    assert!(
        matches!(s.get::<u64>("broken").await, Err(Error::Corrupt(_))),
        "damaged bytes are Corrupt, not WrongType"
    );
}

#[tokio::test]
async fn the_builder_takes_a_store_by_value_or_shared() {
    // A shared `Arc<dyn SessionStore>` is used as it is, not wrapped once more.
    let shared: Arc<dyn SessionStore> = Arc::new(MemoryStore::new());
    let m = SessionManager::builder(Arc::clone(&shared))
        .build()
        .expect("manager");
    assert!(
        Arc::ptr_eq(m.store(), &shared),
        "the manager must hold the caller's Arc itself"
    );

    // An `Arc` of a concrete store: the caller and the manager see the same sessions.
    let concrete = Arc::new(MemoryStore::new());
    let m = SessionManager::builder(Arc::clone(&concrete))
        .build()
        .expect("manager");
    let id = committed(&m, "k", "v").await;
    assert!(concrete.exists(&id.key()).await.expect("exists"));

    // A boxed trait object and a plain value.
    let boxed: Box<dyn SessionStore> = Box::new(MemoryStore::new());
    for m in [
        SessionManager::builder(boxed).build().expect("boxed"),
        SessionManager::builder(MemoryStore::new())
            .build()
            .expect("by value"),
    ] {
        let id = committed(&m, "k", "v").await;
        assert!(m.store().exists(&id.key()).await.expect("exists"));
    }
}
