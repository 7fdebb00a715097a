//! The HTTP adapters through real HTTP, each test once per framework: a server on
//! 127.0.0.1:0 (axum, or actix-web on a thread of its own) driven by reqwest, with a cookie
//! jar where a browser would have one and raw headers where the test plays an attacker.
//!
//! The application is written once ([`dispatch`]): each framework's driver routes every
//! request to it through that framework's extractor, so both adapters answer the same
//! requests with the same handlers, and every test runs over both (`both!`).

mod support;

use std::sync::Arc;
use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::{CACHE_CONTROL, COOKIE, SET_COOKIE, VARY};
use session_kit::{
    CookieSameSite, Expiry, MessagePack, Session, SessionBuilder, SessionId, SessionLayer,
    SessionManager, SessionMiddleware, SessionStore, SigningKey,
};
use support::{Fault, Method, Probe};

const NAME: &str = "sid";
/// How long the careless logout handler waits for a hung store before it gives up.
const HANDLER_TIMEOUT: Duration = Duration::from_millis(200);

/// What a handler answers, in terms both frameworks turn into a response.
enum Reply {
    Text(String),
    Status(u16),
}

impl From<&str> for Reply {
    fn from(text: &str) -> Self {
        Self::Text(text.to_owned())
    }
}

impl axum::response::IntoResponse for Reply {
    fn into_response(self) -> axum::response::Response {
        match self {
            Reply::Text(text) => text.into_response(),
            Reply::Status(code) => StatusCode::from_u16(code).expect("status").into_response(),
        }
    }
}

impl actix_web::Responder for Reply {
    type Body = actix_web::body::BoxBody;
    fn respond_to(self, _req: &actix_web::HttpRequest) -> actix_web::HttpResponse {
        match self {
            Reply::Text(text) => actix_web::HttpResponse::Ok().body(text),
            Reply::Status(code) => actix_web::HttpResponse::new(
                actix_web::http::StatusCode::from_u16(code).expect("status"),
            ),
        }
    }
}

/// The test application, for either framework: `GET /count`, `POST /login/ann`, and so on.
/// Errors returned with `?` go through the framework's conversion of `session_kit::Error`.
async fn dispatch(
    method: &str,
    path: &str,
    session: Session,
    m: SessionManager,
) -> Result<Reply, session_kit::Error> {
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    Ok(match (method, parts.as_slice()) {
        ("GET", ["count"]) => {
            let n = session
                .update("count", |n: Option<u64>| n.unwrap_or(0) + 1)
                .await
                .expect("update");
            Reply::Text(n.to_string())
        }
        ("GET", ["peek"]) => match session.get::<u64>("count").await.expect("get") {
            Some(n) => Reply::Text(n.to_string()),
            None => "none".into(),
        },
        ("GET", ["noop"]) => "ok".into(),
        ("GET", ["add", k]) => {
            session
                .update("count", |n: Option<u64>| n.unwrap_or(0) + 1)
                .await
                .expect("update");
            session.insert(k, &true).await.expect("insert");
            "ok".into()
        }
        ("GET", ["keys"]) => Reply::Text(session.keys().await.expect("keys").len().to_string()),
        ("POST", ["login", name]) => {
            session.rotate().await.expect("rotate");
            session
                .set_owner(Some((*name).to_owned()))
                .await
                .expect("owner");
            session.insert("user", name).await.expect("insert");
            "welcome".into()
        }
        // Remember me: a login whose cookie outlives the browser, or one that does not.
        ("POST", ["remember", choice]) => {
            let expiry = match *choice {
                "yes" => Some(Expiry::Persistent),
                "no" => Some(Expiry::BrowserSession),
                _ => None,
            };
            session.set_expiry(expiry).await.expect("set_expiry");
            "ok".into()
        }
        ("POST", ["fail", "remember"]) => {
            session
                .set_expiry(Some(Expiry::BrowserSession))
                .await
                .expect("set_expiry");
            Reply::Status(500)
        }
        ("GET", ["expiry"]) => {
            Reply::Text(format!("{:?}", session.expiry().await.expect("expiry")))
        }
        ("POST", ["logout"]) => {
            session.destroy().await.expect("destroy");
            "bye".into()
        }
        ("POST", ["everywhere"]) => {
            let user: String = session.get("user").await.expect("get").expect("logged in");
            let ended = m.destroy_owner(&user).await.expect("destroy_owner");
            Reply::Text(ended.to_string())
        }
        ("POST", ["others"]) => Reply::Text(
            session
                .destroy_others()
                .await
                .expect("destroy_others")
                .to_string(),
        ),
        // A logout that gives up on a store that hangs and ignores errors, then leaves a
        // message in the session, as careless handlers do.
        ("POST", ["logout-anyway"]) => {
            session.insert("flash", "bye").await.expect("insert");
            let _ = tokio::time::timeout(HANDLER_TIMEOUT, session.destroy()).await;
            session.insert("flash", "signed out").await.expect("insert");
            "bye".into()
        }
        // A logout that passes a store error on with `?`.
        ("POST", ["logout-strict"]) => {
            session.destroy().await?;
            "bye".into()
        }
        ("GET", ["fail", "insert", k]) => {
            session.insert(k, &true).await.expect("insert");
            Reply::Status(500)
        }
        ("POST", ["fail", "logout"]) => {
            session.destroy().await.expect("destroy");
            session.insert("flash", "bye").await.expect("insert");
            Reply::Status(502)
        }
        ("POST", ["fail", "login"]) => {
            session.rotate().await.expect("rotate");
            session.insert("user", "ann").await.expect("insert");
            Reply::Status(500)
        }
        ("GET", ["error", kind]) => {
            let secret = std::io::Error::other("password=hunter2 at db.internal:5432");
            return Err(match *kind {
                "too_large" => session_kit::Error::TooLarge {
                    size: 9000,
                    limit: 4096,
                },
                "unavailable" => session_kit::Error::unavailable("postgres", secret),
                _ => session_kit::Error::backend("postgres", secret),
            });
        }
        _ => Reply::Status(404),
    })
}

/// One web framework: how to build its adapter and serve [`dispatch`] behind it.
trait Framework: Sized + 'static {
    /// What the shared builder builds for this framework.
    type Adapter;
    fn builder(m: SessionManager) -> Builder<Self>;
    fn build(b: Builder<Self>) -> session_kit::Result<Self::Adapter>;
    /// Serves the app on 127.0.0.1:0; returns its base URL.
    fn serve(manager: SessionManager, adapter: Self::Adapter) -> String;
}

type Builder<F> = SessionBuilder<<F as Framework>::Adapter, MessagePack>;

struct Axum;

impl Framework for Axum {
    type Adapter = SessionLayer;
    fn builder(m: SessionManager) -> Builder<Self> {
        SessionLayer::builder(m)
    }
    fn build(b: Builder<Self>) -> session_kit::Result<SessionLayer> {
        b.build()
    }
    fn serve(manager: SessionManager, layer: SessionLayer) -> String {
        use axum::extract::{Request, State};
        async fn entry(
            State(m): State<SessionManager>,
            session: Session,
            req: Request,
        ) -> Result<Reply, session_kit::Error> {
            dispatch(req.method().as_str(), req.uri().path(), session, m).await
        }
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let router = axum::Router::new()
            .fallback(entry)
            .with_state(manager)
            .layer(layer);
        let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
        tokio::spawn(async move { axum::serve(listener, router).await.expect("serve") });
        base
    }
}

struct Actix;

impl Framework for Actix {
    type Adapter = SessionMiddleware;
    fn builder(m: SessionManager) -> Builder<Self> {
        SessionMiddleware::builder(m)
    }
    fn build(b: Builder<Self>) -> session_kit::Result<SessionMiddleware> {
        b.build()
    }
    fn serve(manager: SessionManager, middleware: SessionMiddleware) -> String {
        use actix_web::{HttpRequest, web};
        async fn entry(
            req: HttpRequest,
            session: Session,
            m: web::Data<SessionManager>,
        ) -> Result<Reply, session_kit::Error> {
            dispatch(
                req.method().as_str(),
                req.path(),
                session,
                m.get_ref().clone(),
            )
            .await
        }
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let data = web::Data::new(manager);
        let server = actix_web::HttpServer::new(move || {
            actix_web::App::new()
                .app_data(data.clone())
                .wrap(middleware.clone())
                .default_service(web::to(entry))
        })
        .workers(1)
        .disable_signals()
        .listen(listener)
        .expect("listen")
        .run();
        // actix-web runs on its own system; this thread lives as long as the test binary.
        std::thread::spawn(move || actix_web::rt::System::new().block_on(server));
        base
    }
}

/// Runs each listed test over both frameworks: `NAME::axum` and `NAME::actix`.
macro_rules! both {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn axum() {
                super::$name::<super::Axum>().await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn actix() {
                super::$name::<super::Actix>().await
            }
        }
    )*};
}

fn plain_layer<F: Framework>(m: &SessionManager) -> Builder<F> {
    // Plain HTTP on loopback: the cookie cannot be Secure here.
    F::builder(m.clone()).cookie_name(NAME).secure(false)
}

struct Server {
    base: String,
    store: Probe,
    manager: SessionManager,
}

async fn serve_with<F: Framework>(
    manager: SessionManager,
    store: Probe,
    layer: Builder<F>,
) -> Server {
    let adapter = F::build(layer).expect("layer");
    let base = F::serve(manager.clone(), adapter);
    Server {
        base,
        store,
        manager,
    }
}

async fn serve<F: Framework>(
    configure: impl FnOnce(
        session_kit::SessionManagerBuilder<MessagePack>,
    ) -> session_kit::SessionManagerBuilder<MessagePack>,
) -> Server {
    let store = Probe::new();
    let manager = configure(SessionManager::builder(store.clone()))
        .build()
        .expect("manager");
    let layer = plain_layer::<F>(&manager);
    serve_with::<F>(manager, store, layer).await
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

async fn a_new_session_sets_the_cookie_and_the_next_request_sees_its_data<F: Framework>() {
    let s = serve::<F>(|b| b).await;
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

async fn an_untouched_session_does_no_store_io_and_sets_no_cookie<F: Framework>() {
    let s = serve::<F>(|b| b).await;
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

async fn login_rotates_the_id_and_the_old_one_stops_working<F: Framework>() {
    let s = serve::<F>(|b| b).await;
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

async fn logout_removes_the_cookie_and_the_record<F: Framework>() {
    let s = serve::<F>(|b| b).await;
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

async fn sign_out_everywhere_ends_the_owners_other_sessions<F: Framework>() {
    let s = serve::<F>(|b| b).await;
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

async fn idle_timeout_ends_an_idle_session_and_extends_a_busy_one<F: Framework>() {
    let s = serve::<F>(|b| b.idle_timeout(Duration::from_millis(2000))).await;
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

async fn the_absolute_lifetime_is_never_extended<F: Framework>() {
    let lifetime = Duration::from_millis(900);
    let s = serve::<F>(|b| {
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

async fn garbage_cookies_start_a_fresh_session<F: Framework>() {
    let s = serve::<F>(|b| b).await;
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

async fn fifty_concurrent_requests_on_one_session_lose_nothing<F: Framework>() {
    let s = serve::<F>(|b| b).await;
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

async fn store_outages_answer_503_without_a_cookie_and_lose_nothing<F: Framework>() {
    let s = serve::<F>(|b| b.idle_timeout(Duration::from_secs(3600))).await;
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

async fn commit_failures_go_to_the_error_handler_and_send_no_cookie<F: Framework>() {
    let store = Probe::new();
    let m = SessionManager::builder(store.clone())
        .max_encoded_len(32)
        .build()
        .expect("manager");
    let layer = plain_layer::<F>(&m).error_handler(|e, _id| {
        assert!(matches!(e, session_kit::Error::TooLarge { .. }));
        StatusCode::SERVICE_UNAVAILABLE
    });
    let s = serve_with::<F>(m, store, layer).await;
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

async fn signed_cookies_verify_rotate_keys_and_reject_tampering<F: Framework>() {
    let store = Probe::new();
    let m = SessionManager::builder(store.clone())
        .build()
        .expect("manager");
    let old_key = SigningKey::generate();
    let new_key = SigningKey::generate();
    let old = serve_with::<F>(
        m.clone(),
        store.clone(),
        plain_layer::<F>(&m).signed(vec![old_key.clone()]),
    )
    .await;
    let res = send(raw().get(format!("{}/count", old.base))).await;
    let (signed, _) = set_cookie(&res).expect("cookie");
    assert!(signed.len() > 32, "the value carries a signature");
    // The same cookie keeps working after a new key is put first.
    let rotated = serve_with::<F>(
        m.clone(),
        store.clone(),
        plain_layer::<F>(&m).signed(vec![new_key.clone(), old_key]),
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
    let only_new =
        serve_with::<F>(m.clone(), store, plain_layer::<F>(&m).signed(vec![new_key])).await;
    let res = with_cookie(raw().get(format!("{}/peek", only_new.base)), &signed).await;
    assert_eq!(text(res).await, "none");
}

async fn unsafe_cookie_settings_are_refused<F: Framework>() {
    let m = SessionManager::builder(Probe::new())
        .build()
        .expect("manager");
    let refused = |b: Builder<F>| matches!(F::build(b), Err(session_kit::Error::Config(_)));
    assert!(refused(
        F::builder(m.clone()).cookie_name("__Host-id").secure(false)
    ));
    assert!(refused(
        F::builder(m.clone())
            .cookie_name("__Host-id")
            .domain("example.com")
    ));
    assert!(refused(
        F::builder(m.clone()).cookie_name("__Host-id").path("/app")
    ));
    assert!(refused(
        F::builder(m.clone())
            .cookie_name("__Secure-id")
            .secure(false)
    ));
    assert!(refused(
        F::builder(m.clone())
            .same_site(cookie_same_site_none())
            .secure(false)
    ));
    assert!(refused(
        F::builder(m.clone()).partitioned(true).secure(false)
    ));
    assert!(refused(F::builder(m.clone()).cookie_name("bad name")));
    assert!(refused(F::builder(m.clone()).cookie_name("")));
    assert!(F::build(F::builder(m).cookie_name("__Host-id")).is_ok());
}

fn cookie_same_site_none() -> CookieSameSite {
    CookieSameSite::None
}

async fn host_prefixed_partitioned_browser_session_cookies_carry_their_attributes<F: Framework>() {
    let store = Probe::new();
    let m = SessionManager::builder(store.clone())
        .build()
        .expect("manager");
    let layer = F::builder(m.clone())
        .cookie_name("__Host-sid")
        .partitioned(true)
        .persistent(false);
    let s = serve_with::<F>(m, store, layer).await;
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

async fn a_logout_whose_delete_fails_or_hangs_removes_the_cookie_and_revives_nothing<
    F: Framework,
>() {
    for fault in Fault::ALL {
        let s = serve::<F>(|b| b).await;
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

async fn a_response_with_a_5xx_status_commits_nothing_but_destroy_and_rotate_stand<F: Framework>() {
    let s = serve::<F>(|b| b).await;
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

async fn commit_on_server_error_saves_a_failing_requests_changes<F: Framework>() {
    let store = Probe::new();
    let m = SessionManager::builder(store.clone())
        .build()
        .expect("manager");
    let layer = plain_layer::<F>(&m).commit_on_server_error(true);
    let s = serve_with::<F>(m, store, layer).await;
    let res = send(raw().get(format!("{}/fail/insert/k", s.base))).await;
    assert_eq!(res.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let (cookie, _) = set_cookie(&res).expect("the session is created");
    let keys = with_cookie(raw().get(format!("{}/keys", s.base)), &cookie).await;
    assert_eq!(text(keys).await, "1");
}

async fn session_errors_answer_with_their_status_and_reveal_nothing_internal<F: Framework>() {
    let s = serve::<F>(|b| b).await;
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
    let layer = plain_layer::<F>(&m);
    let big = serve_with::<F>(m, store, layer).await;
    let res = send(raw().get(format!("{}/add/{}", big.base, "k".repeat(64)))).await;
    assert_eq!(res.status(), StatusCode::PAYLOAD_TOO_LARGE);
}

async fn a_non_ascii_cookie_elsewhere_in_the_header_does_not_hide_the_session<F: Framework>() {
    let s = serve::<F>(|b| b).await;
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

async fn duplicate_session_cookies_use_the_first_live_one<F: Framework>() {
    let s = serve::<F>(|b| b).await;
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

async fn duplicate_signed_cookies_skip_bad_signatures<F: Framework>() {
    let store = Probe::new();
    let m = SessionManager::builder(store.clone())
        .build()
        .expect("manager");
    let key = SigningKey::generate();
    let s = serve_with::<F>(m.clone(), store, plain_layer::<F>(&m).signed(vec![key])).await;
    let (signed, _) =
        set_cookie(&send(raw().get(format!("{}/count", s.base))).await).expect("cookie");
    let bare = &signed[signed.len() - 32..];
    // A live session signed with another key, holding a different count.
    let forged = {
        let other = plain_layer::<F>(&m).signed(vec![SigningKey::generate()]);
        let t = serve_with::<F>(m.clone(), s.store.clone(), other).await;
        let (forged, _) =
            set_cookie(&send(raw().get(format!("{}/count", t.base))).await).expect("cookie");
        with_cookie(raw().get(format!("{}/count", t.base)), &forged).await;
        forged
    };
    let header = format!("{NAME}={bare}; {NAME}={forged}; {NAME}={signed}");
    let res = send(raw().get(format!("{}/peek", s.base)).header(COOKIE, header)).await;
    assert_eq!(text(res).await, "1");
}

async fn the_default_cookie_is_host_prefixed_and_kept_by_clients_on_loopback<F: Framework>() {
    let store = Probe::new();
    let m = SessionManager::builder(store.clone())
        .build()
        .expect("manager");
    let layer = F::builder(m.clone());
    let s = serve_with::<F>(m, store, layer).await;
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

async fn cookie_settings_that_could_break_or_inject_the_header_are_refused<F: Framework>() {
    let m = SessionManager::builder(Probe::new())
        .build()
        .expect("manager");
    let refused = |b: Builder<F>| matches!(F::build(b), Err(session_kit::Error::Config(_)));
    let plain = || F::builder(m.clone()).cookie_name("id");
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
    assert!(refused(F::builder(m.clone()).secure(false)));
}

async fn every_response_whose_session_was_used_varies_on_cookie<F: Framework>() {
    let s = serve::<F>(|b| b).await;
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

async fn sign_out_everywhere_else_keeps_the_current_session<F: Framework>() {
    let s = serve::<F>(|b| b).await;
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

/// Whether a `Set-Cookie` header makes a persistent cookie.
fn is_persistent(header: &str) -> bool {
    header.contains("Max-Age=") || header.contains("Expires=")
}

async fn remember_me_chooses_a_persistent_or_browser_session_cookie_per_session<F: Framework>() {
    let s = serve::<F>(|b| b.lifetime(Duration::from_secs(3600))).await;
    let c = raw();
    let cookie = log_in(&s, "ann").await;
    // Not remembered: the same id again, now as a browser-session cookie.
    let res = with_cookie(c.post(format!("{}/remember/no", s.base)), &cookie).await;
    let (value, header) = set_cookie(&res).expect("a changed expiry re-sends the cookie");
    assert_eq!(value, cookie, "the id stays");
    assert!(!is_persistent(&header), "{header}");
    // Stored with the session: later requests keep it and send no cookie.
    let res = with_cookie(c.get(format!("{}/count", s.base)), &cookie).await;
    assert!(set_cookie(&res).is_none());
    let res = with_cookie(c.get(format!("{}/expiry", s.base)), &cookie).await;
    assert_eq!(text(res).await, "Some(BrowserSession)");
    // It moves with the session on rotation.
    let res = with_cookie(c.post(format!("{}/login/ann", s.base)), &cookie).await;
    let (rotated, header) = set_cookie(&res).expect("rotated cookie");
    assert_ne!(rotated, cookie);
    assert!(
        !is_persistent(&header),
        "rotation keeps the choice: {header}"
    );
    // A failing request's choice is not saved and sends nothing.
    let res = with_cookie(c.post(format!("{}/remember/yes", s.base)), &rotated).await;
    let (value, header) = set_cookie(&res).expect("cookie");
    assert_eq!(value, rotated);
    let max_age: u64 = header
        .split("Max-Age=")
        .nth(1)
        .and_then(|v| v.split(';').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("remembered: a persistent cookie: {header}"));
    assert!(
        max_age <= 3600,
        "within the absolute lifetime: Max-Age={max_age}"
    );
    let res = with_cookie(c.post(format!("{}/fail/remember", s.base)), &rotated).await;
    assert_eq!(res.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert!(set_cookie(&res).is_none(), "a 5xx changes no cookie");
    let res = with_cookie(c.get(format!("{}/expiry", s.base)), &rotated).await;
    assert_eq!(text(res).await, "Some(Persistent)");
    // Back to the default.
    let res = with_cookie(c.post(format!("{}/remember/default", s.base)), &rotated).await;
    let (_, header) = set_cookie(&res).expect("cookie");
    assert!(
        is_persistent(&header),
        "the builder's default is persistent"
    );
}

async fn remember_me_overrides_a_browser_session_default<F: Framework>() {
    let store = Probe::new();
    let m = SessionManager::builder(store.clone())
        .build()
        .expect("manager");
    let layer = plain_layer::<F>(&m).persistent(false);
    let s = serve_with::<F>(m, store, layer).await;
    let c = raw();
    let (cookie, header) =
        set_cookie(&send(c.get(format!("{}/count", s.base))).await).expect("cookie");
    assert!(!is_persistent(&header), "{header}");
    let res = with_cookie(c.post(format!("{}/remember/yes", s.base)), &cookie).await;
    let (value, header) = set_cookie(&res).expect("cookie");
    assert_eq!(value, cookie);
    assert!(header.contains("Max-Age=86400"), "{header}");
    let res = with_cookie(c.get(format!("{}/count", s.base)), &cookie).await;
    assert!(set_cookie(&res).is_none());
    assert_eq!(text(res).await, "2");
}

type Stores = Vec<(
    &'static str,
    Arc<dyn SessionStore>,
    Option<tempfile::TempDir>,
)>;

/// Each store the concurrency test runs on, with what keeps it alive (a temp dir), and the
/// PostgreSQL table to drop afterwards. Server-backed stores whose server is missing are
/// skipped visibly (or fail under `SESSION_REQUIRE_SERVICES=1`).
async fn every_store() -> (Stores, Option<(session_postgres::sqlx::PgPool, String)>) {
    use session_core::conformance::{Server, server_url};
    let mut drop_after = None;
    let mut stores: Stores = vec![("memory", Arc::new(session_memory::MemoryStore::new()), None)];
    let dir = tempfile::tempdir().expect("temp dir");
    let files = session_files::FileStore::open(dir.path()).expect("files");
    stores.push(("files", Arc::new(files), Some(dir)));
    let dir = tempfile::tempdir().expect("temp dir");
    let hybrid = session_hybrid::HybridStore::open(dir.path()).expect("hybrid");
    stores.push(("hybrid", Arc::new(hybrid), Some(dir)));
    if let Some(url) = server_url(Server::Postgres) {
        let table = format!("http_{}", &SessionId::generate().key().to_hex()[..16]);
        let store = session_postgres::PostgresStore::builder()
            .schema("session_kit_http_test")
            .table(table.clone())
            .connect(&url)
            .await
            .expect("postgres");
        store.migrate().await.expect("migrate");
        drop_after = Some((store.pool().clone(), table));
        stores.push(("postgres", Arc::new(store), None));
    }
    if let Some(url) = server_url(Server::Redis) {
        let prefix = format!("http-test:{}:", &SessionId::generate().key().to_hex()[..16]);
        let store = session_redis::RedisStore::builder()
            .url(url)
            .prefix(prefix)
            .build()
            .expect("redis");
        stores.push(("redis", Arc::new(store), None));
    }
    (stores, drop_after)
}

async fn fifty_concurrent_increments_end_at_fifty_on_every_store<F: Framework>() {
    let (stores, drop_after) = every_store().await;
    for (name, store, _dir) in stores {
        let m = SessionManager::builder(Arc::clone(&store))
            .build()
            .expect("manager");
        let base = F::serve(m.clone(), F::build(plain_layer::<F>(&m)).expect("layer"));
        let c = raw();
        let cookie = {
            let res = send(c.post(format!("{base}/login/racer"))).await;
            set_cookie(&res).expect("login cookie").0
        };
        let tasks: Vec<_> = (0..50)
            .map(|_| {
                let (c, url, cookie) = (c.clone(), format!("{base}/count"), cookie.clone());
                tokio::spawn(async move {
                    let res = with_cookie(c.get(url), &cookie).await;
                    assert_eq!(res.status(), StatusCode::OK);
                    assert!(set_cookie(&res).is_none(), "the id never changes");
                })
            })
            .collect();
        for t in tasks {
            t.await.expect("task");
        }
        let res = with_cookie(c.get(format!("{base}/peek")), &cookie).await;
        assert_eq!(text(res).await, "50", "{name}: every increment counted");
        let id: SessionId = cookie.parse().expect("id");
        assert!(m.destroy(&id).await.expect("destroy"), "{name}");
    }
    if let Some((pool, table)) = drop_after {
        let drop = format!("DROP TABLE IF EXISTS \"session_kit_http_test\".\"{table}\"");
        session_postgres::sqlx::query(&drop)
            .execute(&pool)
            .await
            .expect("drop the test table");
    }
}

both!(
    remember_me_chooses_a_persistent_or_browser_session_cookie_per_session,
    remember_me_overrides_a_browser_session_default,
    fifty_concurrent_increments_end_at_fifty_on_every_store,
    a_new_session_sets_the_cookie_and_the_next_request_sees_its_data,
    an_untouched_session_does_no_store_io_and_sets_no_cookie,
    login_rotates_the_id_and_the_old_one_stops_working,
    logout_removes_the_cookie_and_the_record,
    sign_out_everywhere_ends_the_owners_other_sessions,
    idle_timeout_ends_an_idle_session_and_extends_a_busy_one,
    the_absolute_lifetime_is_never_extended,
    garbage_cookies_start_a_fresh_session,
    fifty_concurrent_requests_on_one_session_lose_nothing,
    store_outages_answer_503_without_a_cookie_and_lose_nothing,
    commit_failures_go_to_the_error_handler_and_send_no_cookie,
    signed_cookies_verify_rotate_keys_and_reject_tampering,
    unsafe_cookie_settings_are_refused,
    host_prefixed_partitioned_browser_session_cookies_carry_their_attributes,
    a_logout_whose_delete_fails_or_hangs_removes_the_cookie_and_revives_nothing,
    a_response_with_a_5xx_status_commits_nothing_but_destroy_and_rotate_stand,
    commit_on_server_error_saves_a_failing_requests_changes,
    session_errors_answer_with_their_status_and_reveal_nothing_internal,
    a_non_ascii_cookie_elsewhere_in_the_header_does_not_hide_the_session,
    duplicate_session_cookies_use_the_first_live_one,
    duplicate_signed_cookies_skip_bad_signatures,
    the_default_cookie_is_host_prefixed_and_kept_by_clients_on_loopback,
    cookie_settings_that_could_break_or_inject_the_header_are_refused,
    every_response_whose_session_was_used_varies_on_cookie,
    sign_out_everywhere_else_keeps_the_current_session,
);

/// Parameterised routes and a scope wrapped by its own middleware, on actix-web: the
/// middleware must hand the request on unshared, since actix-web's router writes the path
/// parameters into it after the middleware ran (a kept clone makes that panic), and the
/// session must work on every route. Each user's visits are counted in the session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actix_parameterised_routes_and_scopes_keep_the_session() {
    use actix_web::{HttpRequest, web};
    async fn visit(session: Session, req: HttpRequest, id: web::Path<u32>) -> String {
        // The router filled the parameter in after the middleware ran.
        let from_match = req.match_info().get("id").expect("id parameter").to_owned();
        let id = id.into_inner();
        let key = format!("user-{id}");
        let n = session
            .update(&key, |n: Option<u64>| n.unwrap_or(0) + 1)
            .await
            .expect("update");
        format!("{from_match}:{n}")
    }
    let store = Probe::new();
    let manager = SessionManager::builder(store.clone())
        .build()
        .expect("manager");
    let app_wide = plain_layer::<Actix>(&manager).build().expect("middleware");
    let scoped = SessionMiddleware::builder(manager.clone())
        .cookie_name("scoped")
        .secure(false)
        .build()
        .expect("middleware");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let server = actix_web::HttpServer::new(move || {
        actix_web::App::new()
            .service(
                web::scope("/api")
                    .wrap(scoped.clone())
                    .route("/users/{id}", web::get().to(visit)),
            )
            .route("/users/{id}", web::get().to(visit))
            .wrap(app_wide.clone())
    })
    .workers(1)
    .disable_signals()
    .listen(listener)
    .expect("listen")
    .run();
    std::thread::spawn(move || actix_web::rt::System::new().block_on(server));
    let client = browser();
    for (path, want) in [
        ("/users/7", "7:1"),
        ("/users/7", "7:2"),
        ("/users/8", "8:1"),
        ("/api/users/7", "7:1"),
        ("/api/users/7", "7:2"),
        ("/users/7", "7:3"),
    ] {
        let res = send(client.get(format!("{base}{path}"))).await;
        assert_eq!(res.status(), StatusCode::OK, "{path}");
        assert_eq!(text(res).await, want, "{path}");
    }
}
