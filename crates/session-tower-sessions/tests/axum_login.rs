//! An axum-login 0.18 app (it runs on tower-sessions 0.14) on our stores through the bridge,
//! served on a loopback socket and driven by cookie-keeping clients: login with session-id
//! rotation, a protected route, logout, and "sign out everywhere" through the owner index,
//! also against a request that is still running.

mod common;

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Form, response::IntoResponse};
use axum_login::tower_sessions::SessionManagerLayer;
use axum_login::{AuthManagerLayerBuilder, AuthSession, AuthUser, AuthnBackend, UserId};
use serde::Deserialize;
use session_tower_sessions::{TowerSessionStore, axum_login_owner};
use tokio::sync::Notify;

use crate::common::{Env, browser, serve};

#[derive(Clone)]
struct User {
    id: i64,
    name: &'static str,
    password: &'static str,
}

impl std::fmt::Debug for User {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("User")
            .field("id", &self.id)
            .field("name", &self.name)
            .finish()
    }
}

impl AuthUser for User {
    type Id = i64;

    fn id(&self) -> i64 {
        self.id
    }

    fn session_auth_hash(&self) -> &[u8] {
        self.password.as_bytes()
    }
}

#[derive(Clone, Deserialize)]
struct Credentials {
    name: String,
    password: String,
}

/// Two users, kept in memory.
#[derive(Clone)]
struct Users(Arc<HashMap<i64, User>>);

impl Users {
    fn new() -> Self {
        let users = [
            User {
                id: 1,
                name: "alice",
                password: "wonderland",
            },
            User {
                id: 2,
                name: "bob",
                password: "builder",
            },
        ];
        Self(Arc::new(users.into_iter().map(|u| (u.id, u)).collect()))
    }
}

impl AuthnBackend for Users {
    type User = User;
    type Credentials = Credentials;
    type Error = std::convert::Infallible;

    async fn authenticate(&self, creds: Credentials) -> Result<Option<User>, Self::Error> {
        Ok(self
            .0
            .values()
            .find(|u| u.name == creds.name && u.password == creds.password)
            .cloned())
    }

    async fn get_user(&self, id: &UserId<Self>) -> Result<Option<User>, Self::Error> {
        Ok(self.0.get(id).cloned())
    }
}

type Auth = AuthSession<Users>;

/// Holds a request between reading its session and writing it.
#[derive(Default)]
struct Gate {
    arrived: Notify,
    release: Notify,
}

#[derive(Clone)]
struct AppState {
    sessions: TowerSessionStore,
    gate: Arc<Gate>,
}

fn failed(e: impl std::fmt::Display) -> (StatusCode, String) {
    (StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
}

async fn login(mut auth: Auth, Form(creds): Form<Credentials>) -> impl IntoResponse {
    match auth.authenticate(creds).await {
        Ok(Some(user)) => match auth.login(&user).await {
            Ok(()) => (StatusCode::OK, String::new()),
            Err(e) => failed(e),
        },
        Ok(None) => (StatusCode::UNAUTHORIZED, String::new()),
        Err(e) => failed(e),
    }
}

async fn me(auth: Auth) -> impl IntoResponse {
    match auth.user {
        Some(user) => (StatusCode::OK, user.name.to_owned()),
        None => (StatusCode::UNAUTHORIZED, String::new()),
    }
}

async fn logout(mut auth: Auth) -> impl IntoResponse {
    match auth.logout().await {
        Ok(_) => (StatusCode::OK, String::new()),
        Err(e) => failed(e),
    }
}

async fn sign_out_everywhere(State(app): State<AppState>, auth: Auth) -> impl IntoResponse {
    let Some(user) = auth.user else {
        return (StatusCode::UNAUTHORIZED, String::new());
    };
    match app.sessions.delete_by_owner(&user.id.to_string()).await {
        Ok(ended) => (StatusCode::OK, ended.to_string()),
        Err(e) => failed(e),
    }
}

/// A page that writes to the session after a pause (while the gate is shut).
async fn slow_write(State(app): State<AppState>, auth: Auth) -> impl IntoResponse {
    if auth.user.is_none() {
        return (StatusCode::UNAUTHORIZED, String::new());
    }
    app.gate.arrived.notify_one();
    app.gate.release.notified().await;
    match auth.session.insert("last_page", "/slow").await {
        Ok(()) => (StatusCode::OK, String::new()),
        Err(e) => failed(e),
    }
}

/// A page that starts an anonymous session (a cart), to see the id rotate at login.
async fn visit(auth: Auth) -> impl IntoResponse {
    match auth.session.insert("cart", 3).await {
        Ok(()) => (StatusCode::OK, String::new()),
        Err(e) => failed(e),
    }
}

struct App {
    base: String,
    sessions: TowerSessionStore,
    gate: Arc<Gate>,
}

async fn app(env: &Env) -> App {
    let sessions = TowerSessionStore::builder(env.store.clone())
        .owner(axum_login_owner)
        .build();
    let layer = SessionManagerLayer::new(sessions.clone()).with_secure(false);
    let auth = AuthManagerLayerBuilder::new(Users::new(), layer).build();
    let gate = Arc::new(Gate::default());
    let router = Router::new()
        .route("/login", post(login))
        .route("/me", get(me))
        .route("/logout", get(logout))
        .route("/sign_out_everywhere", post(sign_out_everywhere))
        .route("/slow", get(slow_write))
        .route("/visit", get(visit))
        .with_state(AppState {
            sessions: sessions.clone(),
            gate: Arc::clone(&gate),
        })
        .layer(auth);
    App {
        base: format!("http://{}", serve(router).await),
        sessions,
        gate,
    }
}

impl App {
    async fn status(&self, client: &reqwest::Client, path: &str) -> StatusCode {
        let resp = client.get(format!("{}{path}", self.base)).send().await;
        resp.expect("request").status()
    }

    async fn login(&self, client: &reqwest::Client, name: &str, password: &str) -> StatusCode {
        let resp = client
            .post(format!("{}/login", self.base))
            .form(&[("name", name), ("password", password)])
            .send()
            .await;
        resp.expect("request").status()
    }

    async fn owned(&self, user: &str) -> usize {
        self.sessions
            .count_by_owner(user)
            .await
            .expect("count by owner")
    }
}

fn session_cookie(resp: &reqwest::Response) -> Option<String> {
    resp.cookies()
        .find(|c| c.name() == "id")
        .map(|c| c.value().to_owned())
}

/// Wrong password, login (with a new session id), the protected page, logout.
async fn login_protected_logout(env: Env) {
    let app = app(&env).await;
    let phone = browser();
    assert_eq!(app.status(&phone, "/me").await, StatusCode::UNAUTHORIZED);
    let resp = phone.get(format!("{}/visit", app.base)).send().await;
    let anonymous = session_cookie(&resp.expect("request")).expect("an anonymous session");
    assert_eq!(
        app.login(&phone, "alice", "nope").await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(app.owned("1").await, 0);
    let resp = phone
        .post(format!("{}/login", app.base))
        .form(&[("name", "alice"), ("password", "wonderland")])
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), StatusCode::OK);
    let logged_in = session_cookie(&resp).expect("a session cookie");
    assert_ne!(logged_in, anonymous, "login must rotate the session id");
    assert_eq!(app.status(&phone, "/me").await, StatusCode::OK);
    assert_eq!(
        app.owned("1").await,
        1,
        "the owner index has alice's session"
    );
    assert_eq!(
        env.store.count().await.expect("count"),
        1,
        "the anonymous id is gone"
    );
    assert_eq!(app.status(&phone, "/logout").await, StatusCode::OK);
    assert_eq!(app.status(&phone, "/me").await, StatusCode::UNAUTHORIZED);
    assert_eq!(app.owned("1").await, 0);
}

/// Signing out everywhere ends every session of that user, and only theirs.
async fn sign_out_everywhere_ends_every_device(env: Env) {
    let app = app(&env).await;
    let (phone, laptop, bob) = (browser(), browser(), browser());
    assert_eq!(
        app.login(&phone, "alice", "wonderland").await,
        StatusCode::OK
    );
    assert_eq!(
        app.login(&laptop, "alice", "wonderland").await,
        StatusCode::OK
    );
    assert_eq!(app.login(&bob, "bob", "builder").await, StatusCode::OK);
    assert_eq!(app.owned("1").await, 2);
    let resp = phone
        .post(format!("{}/sign_out_everywhere", app.base))
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.text().await.expect("body"), "2");
    assert_eq!(app.status(&phone, "/me").await, StatusCode::UNAUTHORIZED);
    assert_eq!(app.status(&laptop, "/me").await, StatusCode::UNAUTHORIZED);
    assert_eq!(app.status(&bob, "/me").await, StatusCode::OK);
    assert_eq!(app.owned("1").await, 0);
    assert_eq!(app.owned("2").await, 1);
}

/// A request of the laptop that was running when the phone signed out everywhere finishes,
/// but its save does not bring the laptop's session back.
async fn sign_out_everywhere_beats_a_running_request(env: Env) {
    let app = app(&env).await;
    let (phone, laptop) = (browser(), browser());
    assert_eq!(
        app.login(&phone, "alice", "wonderland").await,
        StatusCode::OK
    );
    assert_eq!(
        app.login(&laptop, "alice", "wonderland").await,
        StatusCode::OK
    );
    let running = tokio::spawn({
        let (laptop, url) = (laptop.clone(), format!("{}/slow", app.base));
        async move { laptop.get(url).send().await.expect("request").status() }
    });
    app.gate.arrived.notified().await;
    let resp = phone
        .post(format!("{}/sign_out_everywhere", app.base))
        .send()
        .await
        .expect("request");
    assert_eq!(resp.text().await.expect("body"), "2");
    app.gate.release.notify_one();
    assert_eq!(running.await.expect("running request"), StatusCode::OK);
    assert_eq!(
        app.owned("1").await,
        0,
        "the running request brought a session back"
    );
    assert_eq!(app.status(&laptop, "/me").await, StatusCode::UNAUTHORIZED);
    assert_eq!(env.store.count().await.expect("count"), 0);
}

per_store!(
    login_protected_logout,
    sign_out_everywhere_ends_every_device,
    sign_out_everywhere_beats_a_running_request,
);
