//! The tower layer and axum extractor through real HTTP: a server on 127.0.0.1:0 driven by
//! reqwest, with a cookie jar where a browser would have one and raw headers where the test
//! plays an attacker.

mod support;

use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::routing::{get, post};
use reqwest::StatusCode;
use reqwest::header::{CACHE_CONTROL, COOKIE, SET_COOKIE, VARY};
use session_kit::{MessagePack, Session, SessionId, SessionManager, SessionStore};
use session_kit::{SessionLayer, SessionLayerBuilder, SigningKey};
use support::{Fault, Method, Probe};

const NAME: &str = "sid";
/// How long the careless logout handler waits for a hung store before it gives up.
const HANDLER_TIMEOUT: Duration = Duration::from_millis(200);

fn app(manager: SessionManager, layer: SessionLayerBuilder<MessagePack>) -> Router {
    async fn count(session: Session) -> String {
        let n = session
            .update("count", |n: Option<u64>| n.unwrap_or(0) + 1)
            .await
            .expect("update");
        n.to_string()
    }
    async fn peek(session: Session) -> String {
        match session.get::<u64>("count").await.expect("get") {
            Some(n) => n.to_string(),
            None => "none".into(),
        }
    }
    async fn noop() -> &'static str {
        "ok"
    }
    async fn add(session: Session, Path(k): Path<String>) -> String {
        session
            .update("count", |n: Option<u64>| n.unwrap_or(0) + 1)
            .await
            .expect("update");
        session.insert(&k, &true).await.expect("insert");
        "ok".into()
    }
    async fn keys(session: Session) -> String {
        session.keys().await.expect("keys").len().to_string()
    }
    async fn login(session: Session, Path(name): Path<String>) -> &'static str {
        session.rotate().await.expect("rotate");
        session.set_owner(Some(name.clone())).await.expect("owner");
        session.insert("user", &name).await.expect("insert");
        "welcome"
    }
    async fn logout(session: Session) -> &'static str {
        session.destroy().await.expect("destroy");
        "bye"
    }
    async fn everywhere(State(m): State<SessionManager>, session: Session) -> String {
        let user: String = session.get("user").await.expect("get").expect("logged in");
        let ended = m.destroy_owner(&user).await.expect("destroy_owner");
        ended.to_string()
    }
    async fn others(session: Session) -> String {
        session
            .destroy_others()
            .await
            .expect("destroy_others")
            .to_string()
    }
    /// A logout that gives up on a store that hangs and ignores errors, then leaves a message
    /// in the session, as careless handlers do.
    async fn logout_anyway(session: Session) -> &'static str {
        session.insert("flash", "bye").await.expect("insert");
        let _ = tokio::time::timeout(HANDLER_TIMEOUT, session.destroy()).await;
        session.insert("flash", "signed out").await.expect("insert");
        "bye"
    }
    /// A logout that passes a store error on with `?`.
    async fn logout_strict(session: Session) -> Result<&'static str, session_kit::Error> {
        session.destroy().await?;
        Ok("bye")
    }
    async fn fail_after_insert(session: Session, Path(k): Path<String>) -> StatusCode {
        session.insert(&k, &true).await.expect("insert");
        StatusCode::INTERNAL_SERVER_ERROR
    }
    async fn fail_after_logout(session: Session) -> StatusCode {
        session.destroy().await.expect("destroy");
        session.insert("flash", "bye").await.expect("insert");
        StatusCode::BAD_GATEWAY
    }
    async fn fail_after_login(session: Session) -> StatusCode {
        session.rotate().await.expect("rotate");
        session.insert("user", "ann").await.expect("insert");
        StatusCode::INTERNAL_SERVER_ERROR
    }
    async fn error(Path(kind): Path<String>) -> Result<(), session_kit::Error> {
        let secret = std::io::Error::other("password=hunter2 at db.internal:5432");
        Err(match kind.as_str() {
            "too_large" => session_kit::Error::TooLarge {
                size: 9000,
                limit: 4096,
            },
            "unavailable" => session_kit::Error::unavailable("postgres", secret),
            _ => session_kit::Error::backend("postgres", secret),
        })
    }
    Router::new()
        .route("/count", get(count))
        .route("/peek", get(peek))
        .route("/noop", get(noop))
        .route("/add/{k}", get(add))
        .route("/keys", get(keys))
        .route("/login/{name}", post(login))
        .route("/logout", post(logout))
        .route("/everywhere", post(everywhere))
        .route("/others", post(others))
        .route("/logout-anyway", post(logout_anyway))
        .route("/logout-strict", post(logout_strict))
        .route("/fail/insert/{k}", get(fail_after_insert))
        .route("/fail/logout", post(fail_after_logout))
        .route("/fail/login", post(fail_after_login))
        .route("/error/{kind}", get(error))
        .with_state(manager.clone())
        .layer(layer.build().expect("layer"))
}

fn plain_layer(m: &SessionManager) -> SessionLayerBuilder<MessagePack> {
    // Plain HTTP on loopback: the cookie cannot be Secure here.
    SessionLayer::builder(m.clone())
        .cookie_name(NAME)
        .secure(false)
}

struct Server {
    base: String,
    store: Probe,
    manager: SessionManager,
}

async fn serve_with(
    manager: SessionManager,
    store: Probe,
    layer: SessionLayerBuilder<MessagePack>,
) -> Server {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let router = app(manager.clone(), layer);
    tokio::spawn(async move { axum::serve(listener, router).await.expect("serve") });
    Server {
        base,
        store,
        manager,
    }
}

async fn serve(
    configure: impl FnOnce(
        session_kit::SessionManagerBuilder<MessagePack>,
    ) -> session_kit::SessionManagerBuilder<MessagePack>,
) -> Server {
    let store = Probe::new();
    let manager = configure(SessionManager::builder(store.clone()))
        .build()
        .expect("manager");
    let layer = plain_layer(&manager);
    serve_with(manager, store, layer).await
}

fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .build()
        .expect("client")
}

fn raw() -> reqwest::Client {
    reqwest::Client::new()
}

/// The session cookie a response sets, as (value, whole header).
fn set_cookie(res: &reqwest::Response) -> Option<(String, String)> {
    res.headers().get_all(SET_COOKIE).iter().find_map(|v| {
        let text = v.to_str().ok()?.to_owned();
        let value = text
            .strip_prefix(&format!("{NAME}="))?
            .split(';')
            .next()?
            .to_owned();
        Some((value, text))
    })
}

async fn send(req: reqwest::RequestBuilder) -> reqwest::Response {
    req.send().await.expect("send")
}

/// Sends `req` carrying the session cookie `value`, as a client without a jar would.
async fn with_cookie(req: reqwest::RequestBuilder, value: &str) -> reqwest::Response {
    send(req.header(COOKIE, format!("{NAME}={value}"))).await
}

async fn text(res: reqwest::Response) -> String {
    res.text().await.expect("body")
}

#[tokio::test]
async fn a_new_session_sets_the_cookie_and_the_next_request_sees_its_data() {
    let s = serve(|b| b).await;
    let c = browser();
    let first = send(c.get(format!("{}/count", s.base))).await;
    let (value, header) = set_cookie(&first).expect("a new session sets its cookie");
    assert!(
        value.parse::<SessionId>().is_ok(),
        "the cookie holds a well-formed id"
    );
    assert!(
        header.contains("HttpOnly") && header.contains("SameSite=Lax") && header.contains("Path=/")
    );
    assert!(
        header.contains("Max-Age=") && header.contains("Expires="),
        "persistent by default: {header}"
    );
    assert_eq!(
        first.headers().get(VARY).map(|v| v.to_str().ok()),
        Some(Some("Cookie"))
    );
    assert_eq!(
        first.headers().get(CACHE_CONTROL).map(|v| v.to_str().ok()),
        Some(Some("no-cache=\"Set-Cookie\""))
    );
    assert_eq!(text(first).await, "1");
    let second = send(c.get(format!("{}/count", s.base))).await;
    assert!(
        set_cookie(&second).is_none(),
        "an unchanged id with an unchanged deadline sends no cookie"
    );
    assert!(second.headers().get(CACHE_CONTROL).is_none());
    assert_eq!(text(second).await, "2");
    assert_eq!(
        text(send(c.get(format!("{}/peek", s.base))).await).await,
        "2"
    );
    assert_eq!(s.store.inner.count().await.expect("count"), 1);
}

#[tokio::test]
async fn an_untouched_session_does_no_store_io_and_sets_no_cookie() {
    let s = serve(|b| b).await;
    let c = browser();
    send(c.get(format!("{}/count", s.base))).await;
    let before = s.store.calls();
    for _ in 0..5 {
        let res = send(c.get(format!("{}/noop", s.base))).await;
        assert!(set_cookie(&res).is_none());
    }
    assert_eq!(
        s.store.calls(),
        before,
        "requests that never touch the session must not reach the store"
    );
    let res = send(raw().get(format!("{}/peek", s.base))).await;
    assert!(
        set_cookie(&res).is_none(),
        "reading an absent session creates nothing"
    );
    assert_eq!(s.store.inner.count().await.expect("count"), 1);
}

#[tokio::test]
async fn login_rotates_the_id_and_the_old_one_stops_working() {
    let s = serve(|b| b).await;
    let c = raw();
    let first = send(c.get(format!("{}/count", s.base))).await;
    let (old, _) = set_cookie(&first).expect("cookie");
    let login = with_cookie(c.post(format!("{}/login/ann", s.base)), &old).await;
    let (new, _) = set_cookie(&login).expect("login must send the rotated cookie");
    assert_ne!(new, old);
    let old_id: SessionId = old.parse().expect("id");
    assert!(
        s.store
            .inner
            .load(&old_id.key())
            .await
            .expect("load")
            .is_none(),
        "the old id must be gone"
    );
    let with_new = with_cookie(c.get(format!("{}/peek", s.base)), &new).await;
    assert_eq!(text(with_new).await, "1", "data survives rotation");
    let with_old = with_cookie(c.get(format!("{}/peek", s.base)), &old).await;
    assert_eq!(text(with_old).await, "none");
}

#[tokio::test]
async fn logout_removes_the_cookie_and_the_record() {
    let s = serve(|b| b).await;
    let c = browser();
    send(c.post(format!("{}/login/ann", s.base))).await;
    assert_eq!(s.store.inner.count().await.expect("count"), 1);
    let out = send(c.post(format!("{}/logout", s.base))).await;
    let (value, header) = set_cookie(&out).expect("logout sends a removal cookie");
    assert_eq!(value, "");
    assert!(header.contains("Max-Age=0"), "{header}");
    assert!(
        header.contains("Path=/") && header.contains("HttpOnly") && header.contains("SameSite=Lax"),
        "the removal carries the same attributes: {header}"
    );
    assert_eq!(s.store.inner.count().await.expect("count"), 0);
    assert_eq!(
        text(send(c.get(format!("{}/peek", s.base))).await).await,
        "none"
    );
}

#[tokio::test]
async fn sign_out_everywhere_ends_the_owners_other_sessions() {
    let s = serve(|b| b).await;
    let (laptop, phone, other) = (browser(), browser(), browser());
    send(laptop.post(format!("{}/login/ann", s.base))).await;
    send(phone.post(format!("{}/login/ann", s.base))).await;
    send(other.post(format!("{}/login/bob", s.base))).await;
    send(phone.get(format!("{}/count", s.base))).await;
    let ended = text(send(laptop.post(format!("{}/everywhere", s.base))).await).await;
    assert_eq!(ended, "2");
    assert_eq!(
        text(send(phone.get(format!("{}/peek", s.base))).await).await,
        "none"
    );
    assert_eq!(
        s.manager.sessions_of("bob").await.expect("list").len(),
        1,
        "other owners keep their sessions"
    );
}

#[tokio::test]
async fn idle_timeout_ends_an_idle_session_and_extends_a_busy_one() {
    let s = serve(|b| b.idle_timeout(Duration::from_millis(2000))).await;
    let busy = raw();
    let first = send(busy.get(format!("{}/count", s.base))).await;
    let (cookie, header) = set_cookie(&first).expect("cookie");
    assert!(
        header.contains("Max-Age=86400"),
        "the cookie carries the absolute deadline: {header}"
    );
    let idle = browser();
    send(idle.get(format!("{}/count", s.base))).await;
    let id: SessionId = cookie.parse().expect("id");
    let first_deadline = s
        .store
        .inner
        .load(&id.key())
        .await
        .expect("load")
        .expect("live")
        .expires_at;
    for _ in 0..8 {
        tokio::time::sleep(Duration::from_millis(400)).await;
        let res = with_cookie(busy.get(format!("{}/peek", s.base)), &cookie).await;
        assert!(
            set_cookie(&res).is_none(),
            "sliding the idle deadline must not re-send the cookie"
        );
        assert_eq!(
            text(res).await,
            "1",
            "a session in use must stay alive past its idle timeout"
        );
    }
    let later = s
        .store
        .inner
        .load(&id.key())
        .await
        .expect("load")
        .expect("live")
        .expires_at;
    assert!(
        later > first_deadline + Duration::from_millis(2000),
        "reads must push the idle deadline forward (touch)"
    );
    assert_eq!(
        text(send(idle.get(format!("{}/peek", s.base))).await).await,
        "none",
        "an idle session must expire"
    );
}

#[tokio::test]
async fn the_absolute_lifetime_is_never_extended() {
    let lifetime = Duration::from_millis(900);
    let s = serve(|b| {
        b.lifetime(lifetime)
            .idle_timeout(Duration::from_millis(600))
    })
    .await;
    let c = raw();
    let first = send(c.get(format!("{}/count", s.base))).await;
    let (mut cookie, _) = set_cookie(&first).expect("cookie");
    let original: SessionId = cookie.parse().expect("id");
    let mut counts = Vec::new();
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        if let Some(r) = s.store.inner.load(&original.key()).await.expect("load") {
            assert!(
                r.expires_at <= r.created_at + lifetime,
                "a deadline moved past the absolute lifetime"
            );
        }
        let res = with_cookie(c.get(format!("{}/count", s.base)), &cookie).await;
        if let Some((v, _)) = set_cookie(&res) {
            cookie = v;
        }
        counts.push(text(res).await.parse::<u32>().expect("number"));
    }
    let reset = counts.windows(2).position(|w| w[1] < w[0]);
    assert!(
        reset.is_some(),
        "an active session outlived its absolute lifetime: {counts:?}"
    );
    assert!(counts.iter().all(|n| *n <= 5), "{counts:?}");
    assert!(
        s.store
            .inner
            .load(&original.key())
            .await
            .expect("load")
            .is_none()
    );
    assert_ne!(cookie, original.expose(), "the client now holds a fresh id");
}

#[tokio::test]
async fn garbage_cookies_start_a_fresh_session() {
    let s = serve(|b| b).await;
    let unknown = SessionId::generate();
    let long = "a".repeat(10 * 1024);
    let cases: Vec<(&str, reqwest::header::HeaderValue)> = vec![
        ("empty", format!("{NAME}=").parse().expect("hv")),
        ("10 KB", format!("{NAME}={long}").parse().expect("hv")),
        (
            "non-UTF-8",
            reqwest::header::HeaderValue::from_bytes(b"sid=\xff\xfe\xfd").expect("hv"),
        ),
        (
            "wrong alphabet",
            format!("{NAME}={}", "*".repeat(32)).parse().expect("hv"),
        ),
        (
            "unknown id",
            format!("{NAME}={}", unknown.expose()).parse().expect("hv"),
        ),
        ("no value", "sid".parse().expect("hv")),
        ("many separators", ";;;=;=sid==;".parse().expect("hv")),
    ];
    for (what, header) in cases {
        let before = s.store.calls();
        let res = raw()
            .get(format!("{}/count", s.base))
            .header(COOKIE, header)
            .send()
            .await
            .expect("send");
        assert_eq!(res.status(), StatusCode::OK, "{what}");
        let (value, _) =
            set_cookie(&res).unwrap_or_else(|| panic!("{what}: a fresh session must be set"));
        assert_ne!(
            value,
            unknown.expose(),
            "{what}: the client's id was adopted"
        );
        let io = s.store.calls() - before;
        let expected = if what == "unknown id" { 2 } else { 1 };
        assert_eq!(
            io, expected,
            "{what}: malformed values must never reach the store as a query"
        );
        assert_eq!(text(res).await, "1", "{what}");
    }
}

#[tokio::test]
async fn fifty_concurrent_requests_on_one_session_lose_nothing() {
    let s = serve(|b| b).await;
    let c = raw();
    let first = send(c.get(format!("{}/keys", s.base))).await;
    assert!(set_cookie(&first).is_none());
    let (cookie, _) =
        set_cookie(&send(c.get(format!("{}/add/seed", s.base))).await).expect("cookie");
    let mut tasks = Vec::new();
    for i in 0..50 {
        let (c, base, cookie) = (c.clone(), s.base.clone(), cookie.clone());
        tasks.push(tokio::spawn(async move {
            let res = c
                .get(format!("{base}/add/k{i}"))
                .header(COOKIE, format!("{NAME}={cookie}"))
                .send()
                .await
                .expect("send");
            assert_eq!(res.status(), StatusCode::OK);
        }));
    }
    for t in tasks {
        t.await.expect("task");
    }
    let peek = with_cookie(c.get(format!("{}/peek", s.base)), &cookie).await;
    assert_eq!(text(peek).await, "51", "seed plus 50 increments");
    let keys = with_cookie(c.get(format!("{}/keys", s.base)), &cookie).await;
    assert_eq!(text(keys).await, "52", "count, seed and all 50 keys");
}

#[tokio::test]
async fn store_outages_answer_503_without_a_cookie_and_lose_nothing() {
    let s = serve(|b| b.idle_timeout(Duration::from_secs(3600))).await;
    let c = browser();
    assert_eq!(
        text(send(c.get(format!("{}/count", s.base))).await).await,
        "1"
    );
    s.store.fail_writes(true);
    let res = send(c.get(format!("{}/count", s.base))).await;
    assert_eq!(
        res.status(),
        StatusCode::SERVICE_UNAVAILABLE,
        "the default handler answers 503 for an unavailable store"
    );
    assert!(
        res.headers().get(SET_COOKIE).is_none(),
        "a failed commit must not send a cookie"
    );
    let res = send(c.get(format!("{}/noop", s.base))).await;
    assert_eq!(
        res.status(),
        StatusCode::OK,
        "requests that do not touch the session are unaffected"
    );
    s.store.fail_writes(false);
    let res = send(c.get(format!("{}/peek", s.base))).await;
    assert_eq!(
        text(res).await,
        "1",
        "the failed request changed nothing and the session survives"
    );
}

#[tokio::test]
async fn commit_failures_go_to_the_error_handler_and_send_no_cookie() {
    let store = Probe::new();
    let m = SessionManager::builder(store.clone())
        .max_encoded_len(32)
        .build()
        .expect("manager");
    let layer = plain_layer(&m).error_handler(|e, _id| {
        assert!(matches!(e, session_kit::Error::TooLarge { .. }));
        StatusCode::SERVICE_UNAVAILABLE
    });
    let s = serve_with(m, store, layer).await;
    let res = raw()
        .get(format!("{}/add/{}", s.base, "k".repeat(64)))
        .send()
        .await
        .expect("send");
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        res.headers().get(SET_COOKIE).is_none(),
        "a failed commit must not send a cookie"
    );
}

#[tokio::test]
async fn signed_cookies_verify_rotate_keys_and_reject_tampering() {
    let store = Probe::new();
    let m = SessionManager::builder(store.clone())
        .build()
        .expect("manager");
    let old_key = SigningKey::generate();
    let new_key = SigningKey::generate();
    let old = serve_with(
        m.clone(),
        store.clone(),
        plain_layer(&m).signed(vec![old_key.clone()]),
    )
    .await;
    let res = send(raw().get(format!("{}/count", old.base))).await;
    let (signed, _) = set_cookie(&res).expect("cookie");
    assert!(signed.len() > 32, "the value carries a signature");
    // The same cookie keeps working after a new key is put first.
    let rotated = serve_with(
        m.clone(),
        store.clone(),
        plain_layer(&m).signed(vec![new_key.clone(), old_key]),
    )
    .await;
    let res = with_cookie(raw().get(format!("{}/peek", rotated.base)), &signed).await;
    assert_eq!(text(res).await, "1");
    // Tampering, or a bare id without a signature, is a fresh session.
    let mut tampered = signed.clone().into_bytes();
    tampered[3] = if tampered[3] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).expect("ascii");
    let bare = &signed[signed.len() - 32..];
    for value in [tampered.as_str(), bare] {
        let res = with_cookie(raw().get(format!("{}/peek", rotated.base)), value).await;
        assert_eq!(text(res).await, "none", "{value}");
    }
    // Only the new key is left: the old signature no longer verifies.
    let only_new = serve_with(m.clone(), store, plain_layer(&m).signed(vec![new_key])).await;
    let res = with_cookie(raw().get(format!("{}/peek", only_new.base)), &signed).await;
    assert_eq!(text(res).await, "none");
}

#[tokio::test]
async fn unsafe_cookie_settings_are_refused() {
    let m = SessionManager::builder(Probe::new())
        .build()
        .expect("manager");
    let refused = |b: SessionLayerBuilder<MessagePack>| {
        matches!(b.build(), Err(session_kit::Error::Config(_)))
    };
    assert!(refused(
        SessionLayer::builder(m.clone())
            .cookie_name("__Host-id")
            .secure(false)
    ));
    assert!(refused(
        SessionLayer::builder(m.clone())
            .cookie_name("__Host-id")
            .domain("example.com")
    ));
    assert!(refused(
        SessionLayer::builder(m.clone())
            .cookie_name("__Host-id")
            .path("/app")
    ));
    assert!(refused(
        SessionLayer::builder(m.clone())
            .cookie_name("__Secure-id")
            .secure(false)
    ));
    assert!(refused(
        SessionLayer::builder(m.clone())
            .same_site(cookie_same_site_none())
            .secure(false)
    ));
    assert!(refused(
        SessionLayer::builder(m.clone())
            .partitioned(true)
            .secure(false)
    ));
    assert!(refused(
        SessionLayer::builder(m.clone()).cookie_name("bad name")
    ));
    assert!(refused(SessionLayer::builder(m.clone()).cookie_name("")));
    assert!(
        SessionLayer::builder(m)
            .cookie_name("__Host-id")
            .build()
            .is_ok()
    );
}

fn cookie_same_site_none() -> session_kit::CookieSameSite {
    session_kit::CookieSameSite::None
}

#[tokio::test]
async fn host_prefixed_partitioned_browser_session_cookies_carry_their_attributes() {
    let store = Probe::new();
    let m = SessionManager::builder(store.clone())
        .build()
        .expect("manager");
    let layer = SessionLayer::builder(m.clone())
        .cookie_name("__Host-sid")
        .partitioned(true)
        .persistent(false);
    let s = serve_with(m, store, layer).await;
    let res = send(raw().get(format!("{}/count", s.base))).await;
    let header = res
        .headers()
        .get(SET_COOKIE)
        .and_then(|v| v.to_str().ok())
        .expect("cookie")
        .to_owned();
    assert!(header.starts_with("__Host-sid="));
    for attr in [
        "Secure",
        "HttpOnly",
        "Path=/",
        "Partitioned",
        "SameSite=Lax",
    ] {
        assert!(header.contains(attr), "missing {attr}: {header}");
    }
    assert!(
        !header.contains("Max-Age") && !header.contains("Expires") && !header.contains("Domain"),
        "{header}"
    );
}

/// Whether `res` tells the client to drop the session cookie.
fn removes_cookie(res: &reqwest::Response) -> bool {
    set_cookie(res).is_some_and(|(value, header)| value.is_empty() && header.contains("Max-Age=0"))
}

/// Logs `owner` in with a client without a jar; returns the session cookie's value.
async fn log_in(s: &Server, owner: &str) -> String {
    let res = send(raw().post(format!("{}/login/{owner}", s.base))).await;
    set_cookie(&res).expect("login sets the cookie").0
}

#[tokio::test]
async fn a_logout_whose_delete_fails_or_hangs_removes_the_cookie_and_revives_nothing() {
    for fault in Fault::ALL {
        let s = serve(|b| b).await;
        let cookie = log_in(&s, "ann").await;
        let id: SessionId = cookie.parse().expect("id");
        let before = s.store.inner.load(&id.key()).await.expect("load");
        s.store.inject(Method::Delete, fault);
        let res = with_cookie(raw().post(format!("{}/logout-anyway", s.base)), &cookie).await;
        s.store.heal();
        assert_eq!(res.status(), StatusCode::OK, "{fault:?}");
        assert!(
            removes_cookie(&res),
            "{fault:?}: the cookie must be removed, got {:?}",
            set_cookie(&res)
        );
        let after = s.store.inner.load(&id.key()).await.expect("load");
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
        let left = usize::from(!fault.applies());
        assert_eq!(
            s.store.inner.count().await.expect("count"),
            left as u64,
            "{fault:?}: a copy was made under a new id"
        );
        assert_eq!(
            s.manager.sessions_of("ann").await.expect("list").len(),
            left
        );
    }
}

#[tokio::test]
async fn a_response_with_a_5xx_status_commits_nothing_but_destroy_and_rotate_stand() {
    let s = serve(|b| b).await;
    let c = raw();
    let res = send(c.get(format!("{}/fail/insert/k", s.base))).await;
    assert_eq!(res.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert!(
        set_cookie(&res).is_none(),
        "a failed request creates no session"
    );
    assert_eq!(s.store.inner.count().await.expect("count"), 0);

    let (cookie, _) = set_cookie(&send(c.get(format!("{}/count", s.base))).await).expect("cookie");
    let res = with_cookie(c.get(format!("{}/fail/insert/extra", s.base)), &cookie).await;
    assert_eq!(res.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert!(set_cookie(&res).is_none());
    let keys = with_cookie(c.get(format!("{}/keys", s.base)), &cookie).await;
    assert_eq!(
        text(keys).await,
        "1",
        "the failed request's value must not be saved"
    );

    // rotate acts at once: the rotated id's cookie goes out, the rest of the request not.
    let res = with_cookie(c.post(format!("{}/fail/login", s.base)), &cookie).await;
    assert_eq!(res.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let (rotated, _) = set_cookie(&res).expect("the rotated id's cookie");
    assert_ne!(rotated, cookie);
    let old = with_cookie(c.get(format!("{}/peek", s.base)), &cookie).await;
    assert_eq!(text(old).await, "none", "the old id is dead");
    let keys = with_cookie(c.get(format!("{}/keys", s.base)), &rotated).await;
    assert_eq!(
        text(keys).await,
        "1",
        "data moved, the login's value was not saved"
    );

    // destroy acts at once: a failed logout still ends the session and removes the cookie.
    let res = with_cookie(c.post(format!("{}/fail/logout", s.base)), &rotated).await;
    assert_eq!(res.status(), StatusCode::BAD_GATEWAY);
    assert!(removes_cookie(&res));
    assert_eq!(
        s.store.inner.count().await.expect("count"),
        0,
        "nothing written after it"
    );
}

#[tokio::test]
async fn commit_on_server_error_saves_a_failing_requests_changes() {
    let store = Probe::new();
    let m = SessionManager::builder(store.clone())
        .build()
        .expect("manager");
    let layer = plain_layer(&m).commit_on_server_error(true);
    let s = serve_with(m, store, layer).await;
    let res = send(raw().get(format!("{}/fail/insert/k", s.base))).await;
    assert_eq!(res.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let (cookie, _) = set_cookie(&res).expect("the session is created");
    let keys = with_cookie(raw().get(format!("{}/keys", s.base)), &cookie).await;
    assert_eq!(text(keys).await, "1");
}

#[tokio::test]
async fn session_errors_answer_with_their_status_and_reveal_nothing_internal() {
    let s = serve(|b| b).await;
    for (kind, status) in [
        ("too_large", StatusCode::PAYLOAD_TOO_LARGE),
        ("unavailable", StatusCode::SERVICE_UNAVAILABLE),
        ("backend", StatusCode::INTERNAL_SERVER_ERROR),
    ] {
        let res = send(raw().get(format!("{}/error/{kind}", s.base))).await;
        assert_eq!(res.status(), status, "{kind}");
        let body = text(res).await;
        assert_eq!(Some(body.as_str()), status.canonical_reason(), "{kind}");
    }
    // `?` on a failed logout: 503, and the cookie is removed all the same.
    let cookie = log_in(&s, "ann").await;
    s.store.inject(Method::Delete, Fault::FailWithoutApplying);
    let res = with_cookie(raw().post(format!("{}/logout-strict", s.base)), &cookie).await;
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(removes_cookie(&res));
    s.store.heal();

    // The layer's default error handler maps a commit error the same way.
    let store = Probe::new();
    let m = SessionManager::builder(store.clone())
        .max_encoded_len(32)
        .build()
        .expect("manager");
    let layer = plain_layer(&m);
    let big = serve_with(m, store, layer).await;
    let res = send(raw().get(format!("{}/add/{}", big.base, "k".repeat(64)))).await;
    assert_eq!(res.status(), StatusCode::PAYLOAD_TOO_LARGE);
}

#[tokio::test]
async fn a_non_ascii_cookie_elsewhere_in_the_header_does_not_hide_the_session() {
    let s = serve(|b| b).await;
    let (cookie, _) =
        set_cookie(&send(raw().get(format!("{}/count", s.base))).await).expect("cookie");
    let headers: [&[u8]; 3] = [
        "lang=é; theme=dark".as_bytes(),
        b"x=\xff\xfe",
        b"\xc3(; =; ;x",
    ];
    for other in headers {
        let mut value = other.to_vec();
        value.extend_from_slice(format!("; {NAME}={cookie}").as_bytes());
        let header = reqwest::header::HeaderValue::from_bytes(&value).expect("header");
        let res = send(raw().get(format!("{}/peek", s.base)).header(COOKIE, header)).await;
        assert!(
            set_cookie(&res).is_none(),
            "{other:?}: the session must be found"
        );
        assert_eq!(text(res).await, "1", "{other:?}");
    }
}

#[tokio::test]
async fn duplicate_session_cookies_use_the_first_live_one() {
    let s = serve(|b| b).await;
    let (live, _) =
        set_cookie(&send(raw().get(format!("{}/count", s.base))).await).expect("cookie");
    let dead = SessionId::generate();
    let dead = dead.expose();
    let peek = |header: String| {
        let url = format!("{}/peek", s.base);
        async move { send(raw().get(url).header(COOKIE, header)).await }
    };
    // A tossed or stale cookie first: a dead id, garbage, and then the live one.
    let res = peek(format!(
        "{NAME}={dead}; {NAME}=garbage; other=1; {NAME}={live}"
    ))
    .await;
    assert!(
        set_cookie(&res).is_none(),
        "the live session needs no new cookie"
    );
    assert_eq!(text(res).await, "1");
    // In two Cookie headers.
    let res = send(
        raw()
            .get(format!("{}/peek", s.base))
            .header(COOKIE, format!("{NAME}={dead}"))
            .header(COOKIE, format!("{NAME}={live}")),
    )
    .await;
    assert_eq!(text(res).await, "1");
    // Only the first four well-formed ids are tried.
    let others: Vec<String> = (0..4)
        .map(|_| format!("{NAME}={}", SessionId::generate().expose()))
        .collect();
    let res = peek(format!("{}; {NAME}={live}", others.join("; "))).await;
    assert_eq!(text(res).await, "none");
}

#[tokio::test]
async fn duplicate_signed_cookies_skip_bad_signatures() {
    let store = Probe::new();
    let m = SessionManager::builder(store.clone())
        .build()
        .expect("manager");
    let key = SigningKey::generate();
    let s = serve_with(m.clone(), store, plain_layer(&m).signed(vec![key])).await;
    let (signed, _) =
        set_cookie(&send(raw().get(format!("{}/count", s.base))).await).expect("cookie");
    let bare = &signed[signed.len() - 32..];
    // A live session signed with another key, holding a different count.
    let forged = {
        let other = plain_layer(&m).signed(vec![SigningKey::generate()]);
        let t = serve_with(m.clone(), s.store.clone(), other).await;
        let (forged, _) =
            set_cookie(&send(raw().get(format!("{}/count", t.base))).await).expect("cookie");
        with_cookie(raw().get(format!("{}/count", t.base)), &forged).await;
        forged
    };
    let header = format!("{NAME}={bare}; {NAME}={forged}; {NAME}={signed}");
    let res = send(raw().get(format!("{}/peek", s.base)).header(COOKIE, header)).await;
    assert_eq!(text(res).await, "1");
}

#[tokio::test]
async fn the_default_cookie_is_host_prefixed_and_kept_by_clients_on_loopback() {
    let store = Probe::new();
    let m = SessionManager::builder(store.clone())
        .build()
        .expect("manager");
    let layer = SessionLayer::builder(m.clone());
    let s = serve_with(m, store, layer).await;
    let c = browser();
    let res = send(c.get(format!("{}/count", s.base))).await;
    let header = res
        .headers()
        .get(SET_COOKIE)
        .and_then(|v| v.to_str().ok())
        .expect("cookie")
        .to_owned();
    assert!(header.starts_with("__Host-session="), "{header}");
    assert!(
        header.contains("Secure") && header.contains("Path=/"),
        "{header}"
    );
    assert!(!header.contains("Domain"), "{header}");
    // reqwest's jar, like browsers, treats http://127.0.0.1 as secure and sends it back.
    assert_eq!(
        text(send(c.get(format!("{}/count", s.base))).await).await,
        "2"
    );
}

#[tokio::test]
async fn cookie_settings_that_could_break_or_inject_the_header_are_refused() {
    let m = SessionManager::builder(Probe::new())
        .build()
        .expect("manager");
    let refused = |b: SessionLayerBuilder<MessagePack>| {
        matches!(b.build(), Err(session_kit::Error::Config(_)))
    };
    let plain = || SessionLayer::builder(m.clone()).cookie_name("id");
    // Browsers match the prefixes ignoring case.
    for name in ["__host-id", "__HOST-id", "__secure-id", "__SeCuRe-id"] {
        assert!(refused(plain().cookie_name(name).secure(false)), "{name}");
    }
    assert!(refused(
        plain().cookie_name("__host-id").domain("example.com")
    ));
    assert!(refused(plain().cookie_name("__HOST-id").path("/app")));
    for domain in [
        "example.com; Secure",
        "example.com,evil.com",
        "example .com",
        "example.com\t",
        "exa\u{7}mple.com",
        "bücher.example",
        "",
    ] {
        assert!(refused(plain().domain(domain)), "{domain:?}");
    }
    assert!(!refused(plain().domain("example.com")));
    assert!(!refused(plain().domain(".example.com")));
    // Once accepted, these would have made the Set-Cookie header unencodable.
    for path in ["/app\u{7f}", "/app\nSet-Cookie: x=1", "/é", "/a\tb"] {
        assert!(refused(plain().path(path)), "{path:?}");
    }
    assert!(!refused(plain().path("/app/a b")));
    // The default name is __Host-, so turning Secure off needs another name.
    assert!(refused(SessionLayer::builder(m.clone()).secure(false)));
}

#[tokio::test]
async fn every_response_whose_session_was_used_varies_on_cookie() {
    let s = serve(|b| b).await;
    let c = browser();
    let vary = |res: &reqwest::Response| -> Vec<String> {
        res.headers()
            .get_all(VARY)
            .iter()
            .filter_map(|v| v.to_str().ok().map(str::to_owned))
            .collect()
    };
    let res = send(c.get(format!("{}/peek", s.base))).await;
    assert_eq!(vary(&res), ["Cookie"], "read, nothing there, no cookie set");
    let res = send(c.get(format!("{}/count", s.base))).await;
    assert_eq!(vary(&res), ["Cookie"], "a cookie set: once, not twice");
    let res = send(c.get(format!("{}/peek", s.base))).await;
    assert!(set_cookie(&res).is_none());
    assert_eq!(vary(&res), ["Cookie"], "read, no cookie set");
    let res = send(c.get(format!("{}/noop", s.base))).await;
    assert!(vary(&res).is_empty(), "the session was never looked at");
}

#[tokio::test]
async fn sign_out_everywhere_else_keeps_the_current_session() {
    let s = serve(|b| b).await;
    let (laptop, phone, tablet, other) = (browser(), browser(), browser(), browser());
    for c in [&laptop, &phone, &tablet] {
        send(c.post(format!("{}/login/ann", s.base))).await;
    }
    send(other.post(format!("{}/login/bob", s.base))).await;
    let ended = text(send(laptop.post(format!("{}/others", s.base))).await).await;
    assert_eq!(ended, "2");
    for c in [&phone, &tablet] {
        assert_eq!(
            text(send(c.get(format!("{}/keys", s.base))).await).await,
            "0"
        );
    }
    assert_eq!(
        text(send(laptop.get(format!("{}/keys", s.base))).await).await,
        "1",
        "the current session keeps its user"
    );
    assert_eq!(s.manager.sessions_of("ann").await.expect("list").len(), 1);
    assert_eq!(s.manager.sessions_of("bob").await.expect("list").len(), 1);
}
