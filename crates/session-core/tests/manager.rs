//! The session manager against the memory store: lifetimes, rotation, conflicts, events.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use session_core::{
    CommitOutcome, Error, Json, Record, SessionEvent, SessionId, SessionManager, SessionStore,
    Status, Timestamp,
};
use support::Probe;

fn manager(store: Probe) -> SessionManager {
    SessionManager::builder(store).build().expect("manager")
}

async fn new_session(m: &SessionManager) -> SessionId {
    let s = m.session(None);
    s.insert("seed", &1u8).await.expect("insert");
    match s.commit().await.expect("commit") {
        CommitOutcome::SetCookie { id, .. } => id,
        other => panic!("a new session must set its cookie, got {other:?}"),
    }
}

#[tokio::test]
async fn concurrent_requests_merge_their_changes() {
    let m = manager(Probe::new());
    let id = new_session(&m).await;
    let a = m.session_for(Some(id.clone()));
    let b = m.session_for(Some(id.clone()));
    a.update("n", |n: Option<u32>| n.unwrap_or(0) + 1)
        .await
        .expect("a update");
    a.insert("from_a", "A").await.expect("a insert");
    b.update("n", |n: Option<u32>| n.unwrap_or(0) + 1)
        .await
        .expect("b update");
    b.insert("from_b", "B").await.expect("b insert");
    a.commit().await.expect("a commit");
    b.commit()
        .await
        .expect("b commit: must re-apply on the fresh version, not fail");
    let after = m.session_for(Some(id));
    assert_eq!(
        after.get::<u32>("n").await.expect("get"),
        Some(2),
        "no increment lost"
    );
    assert_eq!(
        after.get::<String>("from_a").await.expect("get").as_deref(),
        Some("A")
    );
    assert_eq!(
        after.get::<String>("from_b").await.expect("get").as_deref(),
        Some("B")
    );
}

#[tokio::test]
async fn a_request_never_resurrects_a_destroyed_session() {
    let store = Probe::new();
    let m = manager(store.clone());
    let id = new_session(&m).await;
    let slow = m.session_for(Some(id.clone()));
    assert_eq!(slow.get::<u8>("seed").await.expect("load"), Some(1));
    let logout = m.session_for(Some(id.clone()));
    logout.destroy().await.expect("destroy");
    assert_eq!(
        logout.commit().await.expect("commit"),
        CommitOutcome::RemoveCookie
    );
    slow.insert("late", &true).await.expect("insert");
    assert_eq!(
        slow.commit().await.expect("commit"),
        CommitOutcome::Unchanged,
        "no cookie for an ended session"
    );
    assert!(
        !store.inner.exists(&id.key()).await.expect("exists"),
        "the session came back"
    );
    assert_eq!(store.inner.count().await.expect("count"), 0);
}

#[tokio::test]
async fn a_request_never_writes_back_a_rotated_session() {
    let store = Probe::new();
    let m = manager(store.clone());
    let id = new_session(&m).await;
    let slow = m.session_for(Some(id.clone()));
    slow.get::<u8>("seed").await.expect("load");
    let login = m.session_for(Some(id.clone()));
    login.regenerate().await.expect("regenerate");
    login.insert("user", "ann").await.expect("insert");
    let CommitOutcome::SetCookie { id: new_id, .. } = login.commit().await.expect("commit") else {
        panic!("rotation must set the new cookie")
    };
    assert_ne!(new_id, id);
    slow.insert("stale", &1u8).await.expect("insert");
    slow.commit().await.expect("commit");
    assert!(
        !store.inner.exists(&id.key()).await.expect("exists"),
        "the old id came back"
    );
    let fresh = m.session_for(Some(new_id));
    assert_eq!(
        fresh.get::<String>("user").await.expect("get").as_deref(),
        Some("ann")
    );
    assert_eq!(
        fresh.get::<u8>("stale").await.expect("get"),
        None,
        "a stale request wrote into the rotated session"
    );
}

#[tokio::test]
async fn regenerate_keeps_data_owner_and_absolute_deadline() {
    let store = Probe::new();
    let m = SessionManager::builder(store.clone())
        .lifetime(Duration::from_secs(600))
        .build()
        .expect("manager");
    let id = new_session(&m).await;
    let before = store
        .inner
        .load(&id.key())
        .await
        .expect("load")
        .expect("present");
    let s = m.session_for(Some(id.clone()));
    s.set_owner(Some("ann".into())).await.expect("owner");
    s.regenerate().await.expect("regenerate");
    let CommitOutcome::SetCookie { id: new_id, .. } = s.commit().await.expect("commit") else {
        panic!("rotation must set a cookie")
    };
    assert!(
        store.inner.load(&id.key()).await.expect("load").is_none(),
        "old id must stop working at once"
    );
    let after = store
        .inner
        .load(&new_id.key())
        .await
        .expect("load")
        .expect("present");
    assert_eq!(after.created_at, before.created_at);
    assert_eq!(
        after.expires_at, before.expires_at,
        "rotation must not extend the lifetime"
    );
    assert_eq!(after.owner.as_deref(), Some("ann"));
    assert_eq!(
        m.session_for(Some(new_id))
            .get::<u8>("seed")
            .await
            .expect("get"),
        Some(1)
    );
}

#[tokio::test]
async fn unknown_ids_are_never_adopted() {
    let m = manager(Probe::new());
    let offered = SessionId::generate();
    let s = m.session_for(Some(offered.clone()));
    s.insert("k", &1u8).await.expect("insert");
    match s.commit().await.expect("commit") {
        CommitOutcome::SetCookie { id, .. } => {
            assert_ne!(id, offered, "session fixation: adopted the client's id")
        }
        other => panic!("expected a new cookie, got {other:?}"),
    }
}

#[tokio::test]
async fn an_untouched_or_unchanged_session_writes_nothing() {
    let store = Probe::new();
    let m = manager(store.clone());
    let id = new_session(&m).await;
    let before = store.calls();
    let untouched = m.session_for(Some(id.clone()));
    assert_eq!(
        untouched.commit().await.expect("commit"),
        CommitOutcome::Unchanged
    );
    assert_eq!(store.calls(), before, "an untouched session must do no I/O");
    let read_only = m.session_for(Some(id));
    read_only.get::<u8>("seed").await.expect("get");
    assert_eq!(
        read_only.commit().await.expect("commit"),
        CommitOutcome::Unchanged
    );
    assert_eq!(
        store.calls(),
        before + 1,
        "a read-only request does exactly one load"
    );
}

#[tokio::test]
async fn corrupt_data_starts_a_fresh_session_and_codecs_never_fall_back() {
    let store = Probe::new();
    let json = SessionManager::builder(store.clone())
        .codec(Json)
        .build()
        .expect("manager");
    let id = {
        let s = json.session(None);
        s.insert("user", "ann").await.expect("insert");
        match s.commit().await.expect("commit") {
            CommitOutcome::SetCookie { id, .. } => id,
            other => panic!("{other:?}"),
        }
    };
    let stored = store
        .inner
        .load(&id.key())
        .await
        .expect("load")
        .expect("present");
    assert_eq!(
        &stored.data[..],
        br#"{"user":"ann"}"#,
        "the JSON codec stores readable JSON"
    );
    let msgpack = manager(store.clone());
    let s = msgpack.session_for(Some(id.clone()));
    assert_eq!(
        s.get::<String>("user").await.expect("get"),
        None,
        "MessagePack must not read JSON data"
    );
    assert_eq!(s.status().await.expect("status"), Status::Destroyed);
    assert!(
        store.inner.load(&id.key()).await.expect("load").is_none(),
        "corrupt data is removed"
    );
}

#[tokio::test]
async fn oversized_sessions_are_refused_before_any_write() {
    let store = Probe::new();
    let m = SessionManager::builder(store.clone())
        .max_encoded_len(64)
        .build()
        .expect("manager");
    let s = m.session(None);
    s.insert("blob", &vec![7u8; 100]).await.expect("insert");
    let before = store.calls();
    assert!(matches!(
        s.commit().await,
        Err(Error::TooLarge { limit: 64, .. })
    ));
    assert_eq!(store.calls(), before, "nothing may be written");
}

#[tokio::test]
async fn invalid_configuration_is_refused_at_build_time() {
    let store = || Probe::new();
    assert!(matches!(
        SessionManager::builder(store())
            .lifetime(Duration::ZERO)
            .build(),
        Err(Error::Config(_))
    ));
    assert!(matches!(
        SessionManager::builder(store())
            .idle_timeout(Duration::ZERO)
            .build(),
        Err(Error::Config(_))
    ));
    assert!(matches!(
        SessionManager::builder(store())
            .lifetime(Duration::from_secs(10))
            .rotation_threshold(Duration::from_secs(10))
            .build(),
        Err(Error::Config(_))
    ));
    assert!(matches!(
        SessionManager::builder(store())
            .max_encoded_len(usize::MAX)
            .build(),
        Err(Error::Config(_))
    ));
}

#[tokio::test]
async fn events_report_the_life_of_a_session() {
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&events);
    let m = SessionManager::builder(Probe::new())
        .listener(move |e: &SessionEvent| sink.lock().expect("lock").push(e.clone()))
        .build()
        .expect("manager");
    let id = new_session(&m).await;
    let s = m.session_for(Some(id.clone()));
    s.insert("x", &1u8).await.expect("insert");
    s.commit().await.expect("commit");
    let s = m.session_for(Some(id.clone()));
    s.regenerate().await.expect("regenerate");
    let new_id = s.id().await.expect("id").expect("some");
    s.commit().await.expect("commit");
    let s = m.session_for(Some(new_id.clone()));
    s.destroy().await.expect("destroy");
    let s = m.session_for(Some(id.clone()));
    s.get::<u8>("x").await.expect("get");
    let seen = events.lock().expect("lock").clone();
    assert_eq!(
        seen,
        vec![
            SessionEvent::Created { key: id.key() },
            SessionEvent::Updated { key: id.key() },
            SessionEvent::Rotated {
                old: id.key(),
                new: new_id.key()
            },
            SessionEvent::Destroyed { key: new_id.key() },
            SessionEvent::Expired { key: id.key() },
        ]
    );
}

#[tokio::test]
async fn rotation_threshold_flags_old_sessions() {
    let store = Probe::new();
    let m = SessionManager::builder(store.clone())
        .lifetime(Duration::from_secs(100))
        .rotation_threshold(Duration::from_secs(30))
        .build()
        .expect("manager");
    let id = SessionId::generate();
    let mut r = Record::new(
        id.key(),
        session_core::Bytes::from_static(&[0x80]),
        Timestamp::now() + Duration::from_secs(20),
    );
    r.created_at = Timestamp::now() - Duration::from_secs(80);
    store.inner.create(&r).await.expect("create");
    assert_eq!(
        m.session_for(Some(id)).status().await.expect("status"),
        Status::ShouldRotate
    );
    let young = new_session(&m).await;
    assert_eq!(
        m.session_for(Some(young)).status().await.expect("status"),
        Status::Unchanged
    );
}

#[tokio::test]
async fn destroy_owner_ends_every_session_of_that_owner_only() {
    let m = manager(Probe::new());
    let mut ann = Vec::new();
    for _ in 0..3 {
        let s = m.session(None);
        s.set_owner(Some("ann".into())).await.expect("owner");
        let CommitOutcome::SetCookie { id, .. } = s.commit().await.expect("commit") else {
            panic!()
        };
        ann.push(id);
    }
    let bob = {
        let s = m.session(None);
        s.set_owner(Some("bob".into())).await.expect("owner");
        let CommitOutcome::SetCookie { id, .. } = s.commit().await.expect("commit") else {
            panic!()
        };
        id
    };
    assert_eq!(m.sessions_of("ann").await.expect("list").len(), 3);
    assert_eq!(m.destroy_owner("ann").await.expect("destroy"), 3);
    for id in &ann {
        assert_eq!(
            m.session_for(Some(id.clone())).id().await.expect("id"),
            None
        );
    }
    assert_eq!(
        m.session_for(Some(bob.clone())).id().await.expect("id"),
        Some(bob)
    );
}
