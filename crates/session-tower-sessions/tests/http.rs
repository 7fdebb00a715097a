//! tower-sessions' own behaviours through its `SessionManagerLayer` (0.14 and 0.15, the cases
//! written once), served on a loopback socket and driven by a cookie-keeping client, on every
//! store kind through the bridge.

mod common;

macro_rules! http_cases {
    ($ts:ident) => {
        use std::sync::Arc;
        use std::time::Duration;

        use axum::Router;
        use axum::extract::{Path, State};
        use axum::http::StatusCode;
        use axum::routing::get;
        use session_tower_sessions::TowerSessionStore;
        use tokio::sync::Notify;
        use $ts::session::Id;
        use $ts::{Expiry, Session, SessionManagerLayer};

        use crate::common::{Env, MAX_DATA_LEN, browser, serve};

        type Reply = Result<String, (StatusCode, String)>;

        fn failed(e: impl std::fmt::Display) -> (StatusCode, String) {
            (StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
        }

        /// Holds a request between loading its session and changing it.
        #[derive(Default)]
        struct Gate {
            arrived: Notify,
            release: Notify,
        }

        struct App {
            base: String,
            gate: Arc<Gate>,
        }

        async fn app(env: &Env, expiry: Option<Expiry>) -> App {
            let bridge = TowerSessionStore::builder(env.store.clone()).build();
            let mut layer = SessionManagerLayer::new(bridge).with_secure(false);
            if let Some(expiry) = expiry {
                layer = layer.with_expiry(expiry);
            }
            let gate = Arc::new(Gate::default());
            let router = Router::new()
                .route(
                    "/insert",
                    get(|s: Session| async move {
                        s.insert("foo", 42).await.map_err(failed)?;
                        Reply::Ok(String::new())
                    }),
                )
                .route(
                    "/get",
                    get(|s: Session| async move {
                        Reply::Ok(format!("{:?}", s.get::<i64>("foo").await.map_err(failed)?))
                    }),
                )
                .route(
                    "/set/{v}",
                    get(|s: Session, Path(v): Path<u32>| async move {
                        s.insert("v", v).await.map_err(failed)?;
                        Reply::Ok(String::new())
                    }),
                )
                .route(
                    "/v",
                    get(|s: Session| async move {
                        Reply::Ok(format!("{:?}", s.get::<u32>("v").await.map_err(failed)?))
                    }),
                )
                .route(
                    "/big",
                    get(|s: Session| async move {
                        s.insert("blob", "x".repeat(MAX_DATA_LEN))
                            .await
                            .map_err(failed)?;
                        Reply::Ok(String::new())
                    }),
                )
                .route(
                    "/remove",
                    get(|s: Session| async move {
                        s.remove::<i64>("foo").await.map_err(failed)?;
                        Reply::Ok(String::new())
                    }),
                )
                .route(
                    "/cycle_id",
                    get(|s: Session| async move {
                        s.cycle_id().await.map_err(failed)?;
                        Reply::Ok(String::new())
                    }),
                )
                .route(
                    "/flush",
                    get(|s: Session| async move {
                        s.flush().await.map_err(failed)?;
                        Reply::Ok(String::new())
                    }),
                )
                .route(
                    "/slow_insert",
                    get(|State(gate): State<Arc<Gate>>, s: Session| async move {
                        s.get::<i64>("foo").await.map_err(failed)?;
                        gate.arrived.notify_one();
                        gate.release.notified().await;
                        s.insert("late", 1).await.map_err(failed)?;
                        Reply::Ok(String::new())
                    }),
                )
                .with_state(Arc::clone(&gate))
                .layer(layer);
            let addr = serve(router).await;
            App {
                base: format!("http://{addr}"),
                gate,
            }
        }

        /// The live session cookie a response sets: its value and Max-Age.
        fn session_cookie(resp: &reqwest::Response) -> Option<(String, Option<Duration>)> {
            resp.cookies()
                .find(|c| c.name() == "id" && !is_removal(c))
                .map(|c| (c.value().to_owned(), c.max_age()))
        }

        /// Whether the response tells the browser to drop the session cookie.
        fn removes_cookie(resp: &reqwest::Response) -> bool {
            resp.cookies().any(|c| c.name() == "id" && is_removal(&c))
        }

        fn is_removal(c: &reqwest::cookie::Cookie<'_>) -> bool {
            c.max_age() == Some(Duration::ZERO)
                || c.expires()
                    .is_some_and(|at| at <= std::time::SystemTime::now())
        }

        async fn get_ok(client: &reqwest::Client, url: String) -> reqwest::Response {
            let resp = client.get(url).send().await.expect("request");
            assert_eq!(resp.status(), StatusCode::OK, "{}", resp.url());
            resp
        }

        async fn text(client: &reqwest::Client, url: String) -> String {
            get_ok(client, url).await.text().await.expect("body")
        }

        fn key_of(cookie: &str) -> session_core::SessionKey {
            let id: Id = cookie.parse().expect("the cookie is a tower-sessions id");
            TowerSessionStore::key_of(id.0)
        }

        /// A value set on one request is there on the next; the store holds the hash of the
        /// cookie's id.
        pub(crate) async fn insert_then_get(env: Env) {
            let app = app(&env, None).await;
            let b = browser();
            let resp = get_ok(&b, format!("{}/insert", app.base)).await;
            let (cookie, _) = session_cookie(&resp).expect("a session cookie");
            assert_eq!(text(&b, format!("{}/get", app.base)).await, "Some(42)");
            assert_eq!(env.store.list().await.expect("list"), vec![key_of(&cookie)]);
        }

        /// A cookie naming no session (well-formed or not) loads an empty session, sets no
        /// cookie and creates nothing; writing then starts a session under a new id.
        pub(crate) async fn unknown_cookie_creates_nothing(env: Env) {
            let app = app(&env, None).await;
            let plain = reqwest::Client::new();
            let unknown = Id::default().to_string();
            for cookie in [unknown.as_str(), "garbage", ""] {
                let resp = plain
                    .get(format!("{}/get", app.base))
                    .header("cookie", format!("id={cookie}"))
                    .send()
                    .await
                    .expect("request");
                assert!(
                    session_cookie(&resp).is_none(),
                    "a cookie was set for {cookie:?}"
                );
                if !cookie.is_empty() {
                    assert!(removes_cookie(&resp), "their layer drops a dead cookie");
                }
                assert_eq!(resp.text().await.expect("body"), "None");
            }
            assert_eq!(env.store.count().await.expect("count"), 0);
            let resp = plain
                .get(format!("{}/insert", app.base))
                .header("cookie", format!("id={unknown}"))
                .send()
                .await
                .expect("request");
            let (fresh, _) = session_cookie(&resp).expect("a session cookie");
            assert_ne!(fresh, unknown, "the client chose its session id");
            assert!(!env.store.exists(&key_of(&unknown)).await.expect("exists"));
        }

        /// `cycle_id` moves the data to a new id and removes the old one.
        pub(crate) async fn cycle_id_moves_the_session(env: Env) {
            let app = app(&env, None).await;
            let b = browser();
            let resp = get_ok(&b, format!("{}/insert", app.base)).await;
            let (old, _) = session_cookie(&resp).expect("a session cookie");
            let resp = get_ok(&b, format!("{}/cycle_id", app.base)).await;
            let (new, _) = session_cookie(&resp).expect("a new session cookie");
            assert_ne!(old, new);
            assert_eq!(text(&b, format!("{}/get", app.base)).await, "Some(42)");
            assert!(!env.store.exists(&key_of(&old)).await.expect("exists"));
            assert!(env.store.exists(&key_of(&new)).await.expect("exists"));
        }

        /// `flush` deletes the stored session and the cookie.
        pub(crate) async fn flush_ends_the_session(env: Env) {
            let app = app(&env, None).await;
            let b = browser();
            let resp = get_ok(&b, format!("{}/insert", app.base)).await;
            let (id, _) = session_cookie(&resp).expect("a session cookie");
            let resp = get_ok(&b, format!("{}/flush", app.base)).await;
            assert!(removes_cookie(&resp) && session_cookie(&resp).is_none());
            assert!(!env.store.exists(&key_of(&id)).await.expect("exists"));
            assert_eq!(text(&b, format!("{}/get", app.base)).await, "None");
        }

        /// Removing the last value keeps the session (their rule: only a session without an
        /// id counts as empty), now with no data.
        pub(crate) async fn removing_the_last_value_keeps_the_session(env: Env) {
            let app = app(&env, None).await;
            let b = browser();
            let resp = get_ok(&b, format!("{}/insert", app.base)).await;
            let (id, _) = session_cookie(&resp).expect("a session cookie");
            let resp = get_ok(&b, format!("{}/remove", app.base)).await;
            assert_eq!(session_cookie(&resp).map(|c| c.0), Some(id.clone()));
            assert_eq!(text(&b, format!("{}/get", app.base)).await, "None");
            let bridge = TowerSessionStore::builder(env.store.clone()).build();
            let stored = $ts::SessionStore::load(&bridge, &id.parse().expect("id")).await;
            assert!(stored.expect("load").expect("kept").data.is_empty());
        }

        /// With `OnInactivity`, the cookie carries the Max-Age, and a session past it does not
        /// load even when the old cookie is replayed.
        pub(crate) async fn inactivity_expiry_is_enforced_by_the_store(env: Env) {
            let app = app(&env, Some(Expiry::OnInactivity(time::Duration::seconds(1)))).await;
            let b = browser();
            let resp = get_ok(&b, format!("{}/insert", app.base)).await;
            let (id, max_age) = session_cookie(&resp).expect("a session cookie");
            assert_eq!(max_age, Some(Duration::from_secs(1)));
            tokio::time::sleep(Duration::from_millis(1_200)).await;
            let replay = reqwest::Client::new()
                .get(format!("{}/get", app.base))
                .header("cookie", format!("id={id}"))
                .send()
                .await
                .expect("request");
            assert_eq!(replay.text().await.expect("body"), "None");
            assert!(!env.store.exists(&key_of(&id)).await.expect("exists"));
        }

        /// A request that loaded the session before a logout elsewhere saves after it: the
        /// response is still a success, and the session stays ended.
        pub(crate) async fn save_after_concurrent_logout_does_not_resurrect(env: Env) {
            let app = app(&env, None).await;
            let b = browser();
            let resp = get_ok(&b, format!("{}/insert", app.base)).await;
            let (id, _) = session_cookie(&resp).expect("a session cookie");
            let slow = tokio::spawn({
                let (b, url) = (b.clone(), format!("{}/slow_insert", app.base));
                async move { b.get(url).send().await.expect("request").status() }
            });
            app.gate.arrived.notified().await;
            get_ok(&b, format!("{}/flush", app.base)).await;
            app.gate.release.notify_one();
            assert_eq!(slow.await.expect("slow request"), StatusCode::OK);
            assert!(
                !env.store.exists(&key_of(&id)).await.expect("exists"),
                "resurrected"
            );
            assert_eq!(env.store.count().await.expect("count"), 0);
        }

        /// A session past the size limit is refused with a 500 and the stored one is kept.
        pub(crate) async fn oversized_session_keeps_the_old_one(env: Env) {
            let app = app(&env, None).await;
            let b = browser();
            get_ok(&b, format!("{}/insert", app.base)).await;
            let resp = b
                .get(format!("{}/big", app.base))
                .send()
                .await
                .expect("request");
            assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);
            assert_eq!(text(&b, format!("{}/get", app.base)).await, "Some(42)");
        }

        /// Browsers at once each keep their own session.
        pub(crate) async fn browsers_keep_their_own_sessions(env: Env) {
            let app = Arc::new(app(&env, None).await);
            let mut tasks = Vec::new();
            for v in 0..16u32 {
                let app = Arc::clone(&app);
                tasks.push(tokio::spawn(async move {
                    let b = browser();
                    get_ok(&b, format!("{}/set/{v}", app.base)).await;
                    text(&b, format!("{}/v", app.base)).await
                }));
            }
            for (v, task) in tasks.into_iter().enumerate() {
                assert_eq!(task.await.expect("browser"), format!("Some({v})"));
            }
            assert_eq!(env.store.count().await.expect("count"), 16);
        }

        crate::per_store!(
            insert_then_get,
            unknown_cookie_creates_nothing,
            cycle_id_moves_the_session,
            flush_ends_the_session,
            removing_the_last_value_keeps_the_session,
            inactivity_expiry_is_enforced_by_the_store,
            save_after_concurrent_logout_does_not_resurrect,
            oversized_session_keeps_the_old_one,
            browsers_keep_their_own_sessions,
        );
    };
}

mod v0_14 {
    http_cases!(tower_sessions_014);
}

mod v0_15 {
    http_cases!(tower_sessions_015);
}
