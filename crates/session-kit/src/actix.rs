//! The actix-web middleware and extractor (feature `actix`): the same sessions, the same
//! manager and the same cookie rules as the tower layer, in actix-web's types.
//!
//! ```no_run
//! use actix_web::{App, HttpServer, web};
//! use session_kit::{Session, SessionManager, SessionMiddleware};
//! use session_kit::memory::MemoryStore;
//!
//! async fn visits(session: Session) -> Result<String, session_kit::Error> {
//!     let n = session.update("visits", |n: Option<u64>| n.unwrap_or(0) + 1).await?;
//!     Ok(format!("visit number {n}"))
//! }
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let manager = SessionManager::builder(MemoryStore::new()).build()?;
//! let sessions = SessionMiddleware::builder(manager).build()?;
//! HttpServer::new(move || {
//!     App::new()
//!         .wrap(sessions.clone())
//!         .route("/", web::get().to(visits))
//! })
//! .bind(("127.0.0.1", 8080))?
//! .run()
//! .await?;
//! # Ok(())
//! # }
//! ```
//!
//! Per request the middleware reads the session cookie, puts a lazy [`Session`] in the
//! request's extensions (the extractor takes it from there) and, once the handler has
//! answered, commits it exactly once and writes the cookie and cache headers, following the
//! framework-neutral rules every adapter shares (see [`SessionBuilder`]). A handler that
//! returns an error is answered as actix-web answers it (its `ResponseError`), and a 5xx
//! answer commits nothing; an error from a middleware inside this one (which has no response
//! yet) commits nothing either and is passed on. `session_kit::Error` implements `ResponseError` with the same
//! status as axum's (413, 503 or 500) and only the reason phrase as the body.

use std::fmt;
use std::future::{Future, Ready, ready};
use std::pin::Pin;
use std::sync::Arc;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{Payload, Service, ServiceRequest, ServiceResponse, Transform};
use actix_web::http::StatusCode;
use actix_web::http::header::{COOKIE, HeaderName, HeaderValue, VARY};
use actix_web::{FromRequest, HttpMessage, HttpRequest, HttpResponse, ResponseError};

use crate::codec::{Codec, MessagePack};
use crate::cookie::{HeaderText, SessionBuilder, Settings, varies_on_cookie};
use crate::manager::{Session, SessionManager};
use session_core::Result;

/// Configures a [`SessionMiddleware`]; `build` refuses unsafe cookie settings, exactly as
/// for the tower layer.
pub type SessionMiddlewareBuilder<C = MessagePack> = SessionBuilder<SessionMiddleware<C>, C>;

/// Adds sessions to an actix-web `App` or scope (`.wrap(middleware)`). Build it with
/// [`SessionMiddleware::builder`]; clone it into the `HttpServer` factory.
#[derive(Clone, Debug)]
pub struct SessionMiddleware<C: Codec = MessagePack> {
    settings: Arc<Settings<C>>,
}

impl<C: Codec> SessionMiddleware<C> {
    /// Starts configuring the middleware over `manager`, with the defaults of
    /// [`SessionBuilder`].
    pub fn builder(manager: SessionManager<C>) -> SessionMiddlewareBuilder<C> {
        SessionBuilder::new(manager)
    }
}

impl<C: Codec> SessionBuilder<SessionMiddleware<C>, C> {
    /// Checks the cookie settings and builds the middleware.
    ///
    /// # Errors
    /// [`Error::Config`](session_core::Error::Config) for unsafe or unencodable cookie
    /// settings, the same as the tower layer's `build` refuses.
    pub fn build(self) -> Result<SessionMiddleware<C>> {
        Ok(SessionMiddleware {
            settings: self.validated()?,
        })
    }
}

impl<S, B, C> Transform<S, ServiceRequest> for SessionMiddleware<C>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
    B: MessageBody + 'static,
    C: Codec,
{
    type Response = ServiceResponse<EitherBody<B>>;
    type Error = actix_web::Error;
    type Transform = SessionMiddlewareService<S, C>;
    type InitError = ();
    type Future = Ready<Result<Self::Transform, Self::InitError>>;

    fn new_transform(&self, service: S) -> Self::Future {
        ready(Ok(SessionMiddlewareService {
            service,
            settings: Arc::clone(&self.settings),
        }))
    }
}

/// The service made by [`SessionMiddleware`] around the next one.
pub struct SessionMiddlewareService<S, C: Codec = MessagePack> {
    service: S,
    settings: Arc<Settings<C>>,
}

impl<S, C: Codec> fmt::Debug for SessionMiddlewareService<S, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionMiddlewareService")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl<S, B, C> Service<ServiceRequest> for SessionMiddlewareService<S, C>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
    B: MessageBody + 'static,
    C: Codec,
{
    type Response = ServiceResponse<EitherBody<B>>;
    type Error = actix_web::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>>>>;

    actix_web::dev::forward_ready!(service);

    fn call(&self, req: ServiceRequest) -> Self::Future {
        let settings = Arc::clone(&self.settings);
        let session = settings.session(req.headers().get_all(COOKIE).map(HeaderValue::as_bytes));
        req.extensions_mut().insert(session.clone());
        // No clone of the request is kept: routing needs it unshared.
        let response = self.service.call(req);
        Box::pin(async move {
            // A handler's error arrives as its error response (a 5xx commits nothing). An
            // error from an inner middleware arrives as `Err` and has no response to carry a
            // cookie: nothing this request changed is committed, and the error goes on.
            let mut response = match response.await {
                Ok(response) => response.map_into_left_body(),
                Err(error) => {
                    let _ = session.discard().await;
                    return Err(error);
                }
            };
            let finish = settings.finish(&session, response.status().as_u16()).await;
            if let Some(status) = finish.failed {
                let status =
                    StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                let (request, _) = response.into_parts();
                response =
                    ServiceResponse::new(request, HttpResponse::new(status)).map_into_right_body();
            }
            let headers = response.headers_mut();
            let varies = || varies_on_cookie(headers.get_all(VARY).map(HeaderValue::as_bytes));
            for (name, value) in finish.headers(&varies) {
                let value = match value {
                    HeaderText::Constant(value) => Ok(HeaderValue::from_static(value)),
                    HeaderText::Made(value) => HeaderValue::from_str(value),
                };
                match value {
                    Ok(value) => headers.append(HeaderName::from_static(name), value),
                    Err(_) => {
                        tracing::error!(header = name, "a session header could not be encoded")
                    }
                }
            }
            Ok(response)
        })
    }
}

/// Why the [`Session`] extractor failed: the [`SessionMiddleware`] does not wrap the route.
/// Answers 500.
#[derive(Debug, Clone, Copy)]
pub struct MissingSessionMiddleware;

impl fmt::Display for MissingSessionMiddleware {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the session middleware does not wrap this route")
    }
}

impl ResponseError for MissingSessionMiddleware {}

impl<C: Codec> FromRequest for Session<C> {
    type Error = MissingSessionMiddleware;
    type Future = Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _payload: &mut Payload) -> Self::Future {
        ready(
            req.extensions()
                .get::<Session<C>>()
                .cloned()
                .ok_or(MissingSessionMiddleware),
        )
    }
}
