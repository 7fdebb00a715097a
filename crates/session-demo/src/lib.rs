//! The demo app: one page with a visit counter, a login form (the id rotates on login and the
//! name becomes the session's owner), logout, "sign out everywhere", the masked id and the
//! session's expiry. The store comes from `SESSION_STORE`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Form, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use session_kit::layer::SessionLayer;
use session_kit::{Error, Session, SessionManager, SessionStore, Timestamp};

/// Which store the demo runs on, parsed from `SESSION_STORE`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoreChoice {
    /// `memory` (the default).
    Memory,
    /// `files:PATH`: one file per session under `PATH`.
    Files(PathBuf),
    /// `hybrid:PATH`: memory plus a modification log under `PATH`.
    Hybrid(PathBuf),
    /// `sqlite:PATH`: one SQLite database file at `PATH` (created if missing).
    Sqlite(PathBuf),
    /// `postgres://…` or `postgresql://…`.
    Postgres(String),
    /// `mysql://…` or `mariadb://…`.
    MySql(String),
    /// `redis://…` or `rediss://…`.
    Redis(String),
}

impl StoreChoice {
    /// Parses a `SESSION_STORE` value; an empty or missing value means memory.
    ///
    /// # Errors
    /// [`Error::Config`] naming the accepted forms.
    pub fn parse(value: Option<&str>) -> Result<Self, Error> {
        let value = value.map(str::trim).unwrap_or("");
        let path = |p: &str| -> Result<PathBuf, Error> {
            if p.is_empty() {
                Err(Error::Config(
                    "a path is required, e.g. `files:/tmp/sessions`".into(),
                ))
            } else {
                Ok(PathBuf::from(p))
            }
        };
        if value.is_empty() || value == "memory" {
            Ok(Self::Memory)
        } else if let Some(p) = value.strip_prefix("files:") {
            Ok(Self::Files(path(p)?))
        } else if let Some(p) = value.strip_prefix("hybrid:") {
            Ok(Self::Hybrid(path(p)?))
        } else if let Some(p) = value.strip_prefix("sqlite:") {
            Ok(Self::Sqlite(path(p.strip_prefix("//").unwrap_or(p))?))
        } else if value.starts_with("postgres://") || value.starts_with("postgresql://") {
            Ok(Self::Postgres(value.to_owned()))
        } else if value.starts_with("mysql://") || value.starts_with("mariadb://") {
            Ok(Self::MySql(value.to_owned()))
        } else if value.starts_with("redis://") || value.starts_with("rediss://") {
            Ok(Self::Redis(value.to_owned()))
        } else {
            Err(Error::Config(
                "SESSION_STORE must be `memory`, `files:PATH`, `hybrid:PATH`, `sqlite:PATH`, `postgres://…`, `mysql://…` or `redis://…`".into(),
            ))
        }
    }

    /// Opens the chosen store (creating directories or the table when needed).
    ///
    /// # Errors
    /// Whatever the store's constructor reports (bad path, unreachable server).
    pub async fn open(&self) -> Result<Arc<dyn SessionStore>, Error> {
        Ok(match self {
            Self::Memory => Arc::new(session_kit::memory::MemoryStore::new()),
            Self::Files(path) => Arc::new(session_kit::files::FileStore::open(path.clone())?),
            Self::Hybrid(path) => Arc::new(session_kit::hybrid::HybridStore::open(path)?),
            Self::Sqlite(path) => {
                let store = session_kit::sqlite::SqliteStore::open(path).await?;
                store.migrate().await?;
                Arc::new(store)
            }
            Self::Postgres(url) => {
                let store = session_kit::postgres::PostgresStore::connect(url).await?;
                store.migrate().await?;
                Arc::new(store)
            }
            Self::MySql(url) => {
                let store = session_kit::mysql::MySqlStore::connect(url).await?;
                store.migrate().await?;
                Arc::new(store)
            }
            Self::Redis(url) => Arc::new(session_kit::redis::RedisStore::from_url(url.clone())?),
        })
    }
}

/// Builds the demo's router over `store`. `secure_cookie` should be true behind HTTPS.
///
/// # Errors
/// Configuration errors from the manager or the layer.
pub fn app(store: Arc<dyn SessionStore>, secure_cookie: bool) -> Result<Router, Error> {
    let manager = SessionManager::builder_shared(store)
        .lifetime(Duration::from_secs(24 * 3600))
        .idle_timeout(Duration::from_secs(30 * 60))
        .build()?;
    let layer = SessionLayer::builder(manager.clone())
        .cookie_name("demo_session")
        .secure(secure_cookie)
        .build()?;
    Ok(Router::new()
        .route("/", get(page))
        .route("/login", post(login))
        .route("/logout", post(logout))
        .route("/everywhere", post(everywhere))
        .with_state(manager)
        .layer(layer))
}

/// A failed session operation, answered with 500 and logged.
struct Failure(Error);

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        Self(e)
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        tracing::error!(error = %self.0, "session operation failed");
        (StatusCode::INTERNAL_SERVER_ERROR, "session store error").into_response()
    }
}

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn remaining(expires_at: Option<Timestamp>) -> String {
    match expires_at {
        Some(at) => {
            let secs = Timestamp::now().until(at).as_secs();
            format!(
                "in {}h {:02}m {:02}s",
                secs / 3600,
                secs / 60 % 60,
                secs % 60
            )
        }
        None => "not stored yet".into(),
    }
}

async fn page(session: Session) -> Result<Html<String>, Failure> {
    let visits = session
        .update("visits", |n: Option<u64>| n.unwrap_or(0) + 1)
        .await?;
    let user: Option<String> = session.get("user").await?;
    let id = session.id().await?.map_or_else(
        || "(new: issued with this response)".to_owned(),
        |id| id.to_string(),
    );
    let expires = remaining(session.expires_at().await?);
    let account = match &user {
        Some(name) => format!(
            r#"<p>Signed in as <b id="user">{}</b>.</p>
<form method="post" action="/logout"><button id="logout">Log out</button></form>
<form method="post" action="/everywhere"><button id="everywhere">Sign out everywhere</button></form>"#,
            escape(name)
        ),
        None => r#"<form method="post" action="/login">
<label>Name <input id="name" name="name" required maxlength="64"></label>
<button id="login">Log in</button></form>"#
            .to_owned(),
    };
    Ok(Html(format!(
        r#"<!doctype html>
<html><head><meta charset="utf-8"><title>sessions demo</title>
<style>body{{font-family:system-ui,sans-serif;max-width:36rem;margin:2rem auto}}code{{background:#eee;padding:0 .3em}}</style></head>
<body><h1>sessions demo</h1>
<p>Visits in this session: <b id="visits">{visits}</b></p>
<p>Session id: <code id="sid">{id}</code> (masked: ids never reach pages or logs whole)</p>
<p>Expires: <span id="expires">{expires}</span> (24 h absolute, 30 min idle)</p>
{account}
</body></html>"#
    )))
}

#[derive(Deserialize)]
struct Login {
    name: String,
}

async fn login(session: Session, Form(form): Form<Login>) -> Result<Redirect, Failure> {
    let name = form.name.trim();
    if name.is_empty() || name.len() > 64 {
        return Ok(Redirect::to("/"));
    }
    // A new id at every privilege change defeats session fixation.
    session.rotate().await?;
    session.set_owner(Some(name.to_owned())).await?;
    session.insert("user", name).await?;
    Ok(Redirect::to("/"))
}

async fn logout(session: Session) -> Result<Redirect, Failure> {
    session.destroy().await?;
    Ok(Redirect::to("/"))
}

async fn everywhere(
    State(manager): State<SessionManager>,
    session: Session,
) -> Result<Redirect, Failure> {
    if let Some(user) = session.get::<String>("user").await? {
        let ended = manager.destroy_owner(&user).await?;
        tracing::info!(ended, "signed out everywhere");
    }
    session.destroy().await?;
    Ok(Redirect::to("/"))
}
