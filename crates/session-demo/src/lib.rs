//! The demo app: one page with a visit counter, a login form (the id rotates on login and the
//! name becomes the session's owner), logout, "sign out everywhere", the masked id and the
//! session's expiry. The store comes from `SESSION_STORE`, parsed by
//! [`session_kit::StoreUrl`].
//!
//! The pages and the flow are written once ([`page`], [`login`], [`logout`], [`everywhere`]
//! work on a [`Session`]); [`app`] serves them with axum and [`actix_server`] with
//! actix-web, over the same manager settings and cookie.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Form, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use session_kit::{
    Error, Session, SessionBuilder, SessionLayer, SessionManager, SessionMiddleware, SessionStore,
    Timestamp,
};

/// Builds the demo's router over `store`. `secure_cookie` should be true behind HTTPS.
///
/// # Errors
/// Configuration errors from the manager or the layer.
pub fn app(store: Arc<dyn SessionStore>, secure_cookie: bool) -> Result<Router, Error> {
    let manager = manager(store)?;
    let layer = cookie(SessionLayer::builder(manager.clone()), secure_cookie).build()?;
    Ok(Router::new()
        .route("/", get(axum_page))
        .route("/login", post(axum_login))
        .route("/logout", post(axum_logout))
        .route("/everywhere", post(axum_everywhere))
        .with_state(manager)
        .layer(layer))
}

/// The demo on actix-web: the same pages over the same store, served from `listener`. Run
/// the returned server inside an actix system
/// (`actix_web::rt::System::new().block_on(server)`).
///
/// # Errors
/// Configuration errors from the manager or the middleware; the listener's I/O errors.
pub fn actix_server(
    store: Arc<dyn SessionStore>,
    secure_cookie: bool,
    listener: std::net::TcpListener,
) -> Result<actix_web::dev::Server, Box<dyn std::error::Error>> {
    use actix_web::web;
    let manager = manager(store)?;
    let middleware = cookie(SessionMiddleware::builder(manager.clone()), secure_cookie).build()?;
    let data = web::Data::new(manager);
    Ok(actix_web::HttpServer::new(move || {
        actix_web::App::new()
            .app_data(data.clone())
            .wrap(middleware.clone())
            .route("/", web::get().to(actix_page))
            .route("/login", web::post().to(actix_login))
            .route("/logout", web::post().to(actix_logout))
            .route("/everywhere", web::post().to(actix_everywhere))
    })
    .listen(listener)?
    .run())
}

/// The demo's manager: 24 h absolute, 30 min idle.
fn manager(store: Arc<dyn SessionStore>) -> Result<SessionManager, Error> {
    SessionManager::builder(store)
        .lifetime(Duration::from_secs(24 * 3600))
        .idle_timeout(Duration::from_secs(30 * 60))
        .build()
}

/// The demo's cookie, for either framework.
fn cookie<T>(builder: SessionBuilder<T>, secure: bool) -> SessionBuilder<T> {
    builder.cookie_name("demo_session").secure(secure)
}

/// A failed session operation, answered with 500 and logged.
#[derive(Debug)]
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

/// The page: visit counter, who is signed in, the masked id and the expiry.
///
/// # Errors
/// Store errors.
pub async fn page(session: Session) -> Result<String, Error> {
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
    Ok(format!(
        r#"<!doctype html>
<html><head><meta charset="utf-8"><title>sessions demo</title>
<style>body{{font-family:system-ui,sans-serif;max-width:36rem;margin:2rem auto}}code{{background:#eee;padding:0 .3em}}</style></head>
<body><h1>sessions demo</h1>
<p>Visits in this session: <b id="visits">{visits}</b></p>
<p>Session id: <code id="sid">{id}</code> (masked: ids never reach pages or logs whole)</p>
<p>Expires: <span id="expires">{expires}</span> (24 h absolute, 30 min idle)</p>
{account}
</body></html>"#
    ))
}

/// The login form's fields.
#[derive(Debug, Deserialize)]
pub struct Login {
    name: String,
}

/// Signs `form.name` in: a new id, the name as owner. A blank or over-long name does nothing.
///
/// # Errors
/// Store errors.
pub async fn login(session: Session, form: Login) -> Result<(), Error> {
    let name = form.name.trim();
    if name.is_empty() || name.len() > 64 {
        return Ok(());
    }
    // A new id at every privilege change defeats session fixation.
    session.rotate().await?;
    session.set_owner(Some(name.to_owned())).await?;
    session.insert("user", name).await
}

/// Ends the session.
///
/// # Errors
/// Store errors.
pub async fn logout(session: Session) -> Result<(), Error> {
    session.destroy().await
}

/// Ends every session of the signed-in user, this one included.
///
/// # Errors
/// Store errors.
pub async fn everywhere(manager: &SessionManager, session: Session) -> Result<(), Error> {
    if let Some(user) = session.get::<String>("user").await? {
        let ended = manager.destroy_owner(&user).await?;
        tracing::info!(ended, "signed out everywhere");
    }
    session.destroy().await
}

async fn axum_page(session: Session) -> Result<Html<String>, Failure> {
    Ok(Html(page(session).await?))
}

async fn axum_login(session: Session, Form(form): Form<Login>) -> Result<Redirect, Failure> {
    login(session, form).await?;
    Ok(Redirect::to("/"))
}

async fn axum_logout(session: Session) -> Result<Redirect, Failure> {
    logout(session).await?;
    Ok(Redirect::to("/"))
}

async fn axum_everywhere(
    State(manager): State<SessionManager>,
    session: Session,
) -> Result<Redirect, Failure> {
    everywhere(&manager, session).await?;
    Ok(Redirect::to("/"))
}

impl actix_web::ResponseError for Failure {
    fn error_response(&self) -> actix_web::HttpResponse {
        tracing::error!(error = %self.0, "session operation failed");
        actix_web::HttpResponse::InternalServerError().body("session store error")
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("session store error")
    }
}

fn see_other() -> actix_web::HttpResponse {
    actix_web::HttpResponse::SeeOther()
        .insert_header((actix_web::http::header::LOCATION, "/"))
        .finish()
}

async fn actix_page(session: Session) -> Result<actix_web::HttpResponse, Failure> {
    Ok(actix_web::HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .body(page(session).await?))
}

async fn actix_login(
    session: Session,
    form: actix_web::web::Form<Login>,
) -> Result<actix_web::HttpResponse, Failure> {
    login(session, form.into_inner()).await?;
    Ok(see_other())
}

async fn actix_logout(session: Session) -> Result<actix_web::HttpResponse, Failure> {
    logout(session).await?;
    Ok(see_other())
}

async fn actix_everywhere(
    manager: actix_web::web::Data<SessionManager>,
    session: Session,
) -> Result<actix_web::HttpResponse, Failure> {
    everywhere(&manager, session).await?;
    Ok(see_other())
}
