//! The session manager against the memory store: lifetimes, rotation, conflicts, events.

mod support;

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use session_kit::{
    CommitOutcome, Error, Json, MAX_INCOMING_IDS, Record, SessionEvent, SessionId, SessionKey,
    SessionManager, SessionStore, Status, Timestamp,
};
use support::{Fault, Method, Probe};

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
    login.rotate().await.expect("rotate");
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
async fn rotate_keeps_data_owner_and_absolute_deadline() {
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
    s.rotate().await.expect("rotate");
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
    s.rotate().await.expect("rotate");
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
        session_kit::Bytes::from_static(&[0x80]),
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

/// A stored session owned by `owner`.
async fn owned_session(m: &SessionManager, owner: &str) -> SessionId {
    let s = m.session(None);
    s.insert("seed", &1u8).await.expect("insert");
    s.set_owner(Some(owner.into())).await.expect("owner");
    match s.commit().await.expect("commit") {
        CommitOutcome::SetCookie { id, .. } => id,
        other => panic!("a new session must set its cookie, got {other:?}"),
    }
}

/// Runs a call against a store that may hang, dropping it after a while as a handler's
/// timeout would. `None` if it was dropped.
async fn within_deadline<T>(
    call: impl Future<Output = session_kit::Result<T>>,
) -> Option<session_kit::Result<T>> {
    tokio::time::timeout(Duration::from_secs(5), call)
        .await
        .ok()
}

fn failed<T: std::fmt::Debug>(fault: Fault, outcome: Option<session_kit::Result<T>>) {
    match outcome {
        None | Some(Err(_)) => {}
        Some(Ok(v)) => panic!("{fault:?}: the call must fail or hang, it returned {v:?}"),
    }
}

// Paused time: a hung call's timeout fires as soon as nothing else can run.
#[tokio::test(start_paused = true)]
async fn a_failed_or_dropped_destroy_never_brings_the_session_back_or_copies_it() {
    // Destroyed after the handler touched the session, and without it being loaded first.
    for (fault, loaded) in Fault::ALL.into_iter().flat_map(|f| [(f, true), (f, false)]) {
        let store = Probe::new();
        let m = manager(store.clone());
        let id = owned_session(&m, "ann").await;
        let before = store.inner.load(&id.key()).await.expect("load");
        let s = m.session_for(Some(id.clone()));
        if loaded {
            s.insert("flash", "about to sign out")
                .await
                .expect("insert");
        }
        store.inject(Method::Delete, fault);
        failed(fault, within_deadline(s.destroy()).await);
        store.heal();
        // A handler that ignores the error carries on and changes the session.
        s.insert("flash", "signed out").await.expect("insert");
        let calls = store.calls();
        let outcome = s.commit().await.expect("commit");
        let io = store.calls() - calls;
        let after = store.inner.load(&id.key()).await.expect("load");
        if fault.applies() {
            assert_eq!(
                after, None,
                "{fault:?}: the session came back under the client's id"
            );
        } else {
            assert_eq!(
                after, before,
                "{fault:?}: the record must be left as it was"
            );
        }
        let left = u64::from(!fault.applies());
        assert_eq!(
            store.inner.count().await.expect("count"),
            left,
            "{fault:?}: a copy was made"
        );
        assert_eq!(
            m.sessions_of("ann").await.expect("list").len() as u64,
            left,
            "{fault:?}"
        );
        assert_eq!(
            outcome,
            CommitOutcome::RemoveCookie,
            "{fault:?}: the cookie must be removed"
        );
        assert_eq!(io, 0, "{fault:?}: a poisoned commit does no I/O");
        assert_eq!(
            s.status().await.expect("status"),
            Status::Destroyed,
            "{fault:?}"
        );
        // Retrying the logout on the same handle finishes it.
        s.destroy().await.expect("retry");
        assert_eq!(
            s.commit().await.expect("commit"),
            CommitOutcome::RemoveCookie
        );
        assert_eq!(store.inner.count().await.expect("count"), 0, "{fault:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_failed_or_dropped_rotate_saves_nothing_and_leaves_no_copy() {
    for fault in Fault::ALL {
        let store = Probe::new();
        let m = manager(store.clone());
        let id = owned_session(&m, "ann").await;
        let before = store
            .inner
            .load(&id.key())
            .await
            .expect("load")
            .expect("stored");
        let s = m.session_for(Some(id.clone()));
        s.get::<u8>("seed").await.expect("load");
        store.inject(Method::Rotate, fault);
        failed(fault, within_deadline(s.rotate()).await);
        store.heal();
        // A handler that ignores the error logs the user in anyway: that must not stick
        // (session fixation) nor write into a session that may have moved.
        s.insert("user", "ann").await.expect("insert");
        let calls = store.calls();
        let outcome = s.commit().await.expect("commit");
        let io = store.calls() - calls;
        let keys = store.inner.list().await.expect("list");
        assert_eq!(keys.len(), 1, "{fault:?}: one session, not a copy");
        let moved = keys[0] != id.key();
        assert_eq!(moved, fault.applies(), "{fault:?}");
        let left = store
            .inner
            .load(&keys[0])
            .await
            .expect("load")
            .expect("stored");
        assert_eq!(
            (&left.data, left.version, left.created_at, &left.owner),
            (
                &before.data,
                before.version,
                before.created_at,
                &before.owner
            ),
            "{fault:?}: nothing of the failed login may be written"
        );
        assert_eq!(outcome, CommitOutcome::RemoveCookie, "{fault:?}");
        assert_eq!(io, 0, "{fault:?}: a poisoned commit does no I/O");
        // destroy() ends the session wherever the failed move left it.
        s.destroy().await.expect("destroy");
        assert_eq!(store.inner.count().await.expect("count"), 0, "{fault:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_failed_or_dropped_destroy_owner_ends_all_or_none_and_writes_none_back() {
    for fault in Fault::ALL {
        let store = Probe::new();
        let m = manager(store.clone());
        let mut ann = Vec::new();
        for _ in 0..3 {
            ann.push(owned_session(&m, "ann").await);
        }
        owned_session(&m, "bob").await;
        let here = m.session_for(Some(ann[0].clone()));
        here.get::<u8>("seed").await.expect("load");
        store.inject(Method::DeleteByOwner, fault);
        failed(fault, within_deadline(m.destroy_owner("ann")).await);
        store.heal();
        here.insert("flash", "signed out everywhere")
            .await
            .expect("insert");
        here.commit().await.expect("commit");
        let left = if fault.applies() { 0 } else { 3 };
        assert_eq!(
            m.sessions_of("ann").await.expect("list").len(),
            left,
            "{fault:?}"
        );
        assert_eq!(
            m.sessions_of("bob").await.expect("list").len(),
            1,
            "{fault:?}"
        );
        assert_eq!(
            store.inner.count().await.expect("count"),
            left as u64 + 1,
            "{fault:?}"
        );
        assert_eq!(
            m.destroy_owner("ann").await.expect("retry"),
            left as u64,
            "{fault:?}"
        );
        assert_eq!(store.inner.count().await.expect("count"), 1, "{fault:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_failed_or_dropped_destroy_others_never_ends_the_current_session() {
    for method in [Method::ListByOwner, Method::Delete] {
        for fault in Fault::ALL {
            let store = Probe::new();
            let m = manager(store.clone());
            let here = owned_session(&m, "ann").await;
            for _ in 0..2 {
                owned_session(&m, "ann").await;
            }
            let s = m.session_for(Some(here.clone()));
            store.inject(method, fault);
            failed(fault, within_deadline(s.destroy_others()).await);
            store.heal();
            let ended_before_the_fault = usize::from(method == Method::Delete && fault.applies());
            assert_eq!(
                m.sessions_of("ann").await.expect("list").len(),
                3 - ended_before_the_fault,
                "{method:?} {fault:?}"
            );
            assert_eq!(
                s.destroy_others().await.expect("retry"),
                2 - ended_before_the_fault as u64
            );
            let left = m.sessions_of("ann").await.expect("list");
            assert_eq!(left.len(), 1, "{method:?} {fault:?}");
            assert_eq!(
                left[0].key,
                here.key(),
                "{method:?} {fault:?}: the current session must stay"
            );
            assert_eq!(s.commit().await.expect("commit"), CommitOutcome::Unchanged);
        }
    }
}

#[tokio::test]
async fn a_new_session_is_only_ever_created_under_an_id_this_server_generated() {
    let store = Probe::new();
    let m = manager(store.clone());
    // A session rotated before it was first stored keeps the id it was given.
    let s = m.session(None);
    s.insert("k", &1u8).await.expect("insert");
    s.rotate().await.expect("rotate");
    let given = s.id().await.expect("id").expect("an id");
    match s.commit().await.expect("commit") {
        CommitOutcome::SetCookie { id, .. } => assert_eq!(id, given),
        other => panic!("{other:?}"),
    }
    // One that arrived in the request and is not live is never taken, not even after a
    // destroy that did nothing.
    let offered = SessionId::generate();
    let s = m.session_for(Some(offered.clone()));
    s.destroy().await.expect("destroy");
    s.insert("k", &1u8).await.expect("insert");
    match s.commit().await.expect("commit") {
        CommitOutcome::SetCookie { id, .. } => assert_ne!(id, offered, "adopted the client's id"),
        other => panic!("{other:?}"),
    }
    assert!(!store.inner.exists(&offered.key()).await.expect("exists"));
}

#[tokio::test]
async fn of_several_ids_the_first_live_one_is_the_session() {
    let store = Probe::new();
    let m = manager(store.clone());
    let live = new_session(&m).await;
    let dead = SessionId::generate();
    let s = m.session_for_ids([dead.clone(), dead.clone(), live.clone()]);
    assert_eq!(
        s.incoming_id(),
        Some(&dead),
        "before loading, the first one"
    );
    assert_eq!(s.get::<u8>("seed").await.expect("get"), Some(1));
    assert_eq!(s.incoming_id(), Some(&live));
    assert_eq!(s.id().await.expect("id"), Some(live.clone()));
    // At most MAX_INCOMING_IDS distinct ids are looked at.
    let mut many: Vec<SessionId> = (0..MAX_INCOMING_IDS)
        .map(|_| SessionId::generate())
        .collect();
    many.push(live);
    let before = store.calls();
    let s = m.session_for_ids(many);
    assert_eq!(s.get::<u8>("seed").await.expect("get"), None);
    assert_eq!(store.calls() - before, MAX_INCOMING_IDS as u64);
}

fn recorder() -> (
    Arc<Mutex<Vec<SessionEvent>>>,
    impl Fn(&SessionEvent) + Send + Sync + 'static,
) {
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&events);
    (events, move |e: &SessionEvent| {
        sink.lock().expect("lock").push(e.clone())
    })
}

fn destroyed(events: &Mutex<Vec<SessionEvent>>) -> Vec<SessionKey> {
    let mut keys: Vec<SessionKey> = events
        .lock()
        .expect("lock")
        .iter()
        .filter_map(|e| match e {
            SessionEvent::Destroyed { key } => Some(*key),
            _ => None,
        })
        .collect();
    keys.sort();
    keys
}

#[tokio::test]
async fn destroy_many_owner_and_others_report_exactly_what_they_ended() {
    let (events, listener) = recorder();
    let m = SessionManager::builder(Probe::new())
        .listener(listener)
        .build()
        .expect("manager");
    let mut ann = Vec::new();
    for _ in 0..6 {
        ann.push(owned_session(&m, "ann").await);
    }
    let bob = owned_session(&m, "bob").await;
    let key = |i: usize| ann[i].key();
    // The owner listing and destroy_many speak the same key type, so they compose.
    let listed: Vec<SessionKey> = m
        .sessions_of("ann")
        .await
        .expect("list")
        .into_iter()
        .map(|r| r.key)
        .filter(|k| *k == key(0) || *k == key(1))
        .chain([SessionId::generate().key()])
        .collect();
    assert_eq!(m.destroy_many(&listed).await.expect("destroy_many"), 2);
    let mut expected = vec![key(0), key(1)];
    expected.sort();
    assert_eq!(
        destroyed(&events),
        expected,
        "the two live ones, not the unknown key"
    );
    events.lock().expect("lock").clear();

    let here = m.session_for(Some(ann[2].clone()));
    assert_eq!(here.destroy_others().await.expect("destroy_others"), 3);
    let mut expected = vec![key(3), key(4), key(5)];
    expected.sort();
    assert_eq!(
        destroyed(&events),
        expected,
        "every other session, not this one"
    );
    assert_eq!(
        here.commit().await.expect("commit"),
        CommitOutcome::Unchanged
    );
    events.lock().expect("lock").clear();

    assert_eq!(m.destroy_owner("ann").await.expect("destroy_owner"), 1);
    assert_eq!(destroyed(&events), vec![key(2)]);
    assert_eq!(m.sessions_of("bob").await.expect("list")[0].key, bob.key());
}

#[tokio::test]
async fn max_sessions_per_owner_ends_the_oldest_sessions_when_an_owner_is_set() {
    let store = Probe::new();
    let (events, listener) = recorder();
    let m = SessionManager::builder(store.clone())
        .max_sessions_per_owner(2)
        .listener(listener)
        .build()
        .expect("manager");
    // Records with distinct creation times, oldest first, so "oldest" is unambiguous.
    let now = Timestamp::now();
    let mut ann = Vec::new();
    for age in [300u64, 200, 100] {
        let id = SessionId::generate();
        let mut r = Record::new(
            id.key(),
            session_kit::Bytes::from_static(&[0x80]),
            now + Duration::from_secs(3600),
        )
        .with_owner("ann");
        r.created_at = now - Duration::from_secs(age);
        store.inner.create(&r).await.expect("create");
        ann.push(id);
    }
    owned_session(&m, "bob").await;
    // The oldest stored session logs in again: it is the one being committed, so it stays,
    // and the next oldest go until ann has two.
    let s = m.session_for(Some(ann[0].clone()));
    s.set_owner(Some("ann".into())).await.expect("owner");
    s.commit().await.expect("commit");
    let mut left: Vec<SessionKey> = m
        .sessions_of("ann")
        .await
        .expect("list")
        .into_iter()
        .map(|r| r.key)
        .collect();
    left.sort();
    let mut expected = vec![ann[0].key(), ann[2].key()];
    expected.sort();
    assert_eq!(left, expected);
    assert_eq!(destroyed(&events), vec![ann[1].key()]);
    // A new login of ann ends the oldest other one.
    let fresh = owned_session(&m, "ann").await;
    let mut left: Vec<SessionKey> = m
        .sessions_of("ann")
        .await
        .expect("list")
        .into_iter()
        .map(|r| r.key)
        .collect();
    left.sort();
    let mut expected = vec![ann[2].key(), fresh.key()];
    expected.sort();
    assert_eq!(left, expected, "the oldest (by creation) went");
    assert_eq!(
        m.sessions_of("bob").await.expect("list").len(),
        1,
        "other owners untouched"
    );
    assert!(matches!(
        SessionManager::builder(Probe::new())
            .max_sessions_per_owner(0)
            .build(),
        Err(Error::Config(_))
    ));
}
