//! The session cookie, whatever the web framework: its settings and the rules they must obey,
//! reading it from `Cookie` headers, writing `Set-Cookie`, and the commit that ends each
//! request. The framework adapters (`crate::axum`, `crate::actix`) only move bytes between
//! their request and response types and this module, so both follow the same rules.
//!
//! Per request an adapter:
//! - hands the raw `Cookie` header values to [`Settings::incoming`]: the session cookie is
//!   read as bytes, so a cookie elsewhere in the header with non-ASCII bytes does not hide
//!   it. A malformed, oversized, badly signed or unknown value starts a fresh session: it
//!   never reaches the store as a query, is never adopted as an id, and never panics. When
//!   the header holds the session cookie's name more than once (a cookie tossed from a
//!   subdomain, a stale one with a longer `Path`), each well-formed, correctly signed value
//!   is tried in order, up to [`MAX_INCOMING_IDS`](crate::manager::MAX_INCOMING_IDS), and the first live one is the session;
//! - puts the lazy [`Session`] handle where its extractor finds it, so a request that never
//!   touches its session does no store I/O;
//! - once the handler has produced the response head, calls [`Settings::finish`] exactly
//!   once: it commits (or for a 5xx response discards, unless `commit_on_server_error`), and
//!   says which `Set-Cookie` to send (only for a new or rotated id, a changed
//!   [`Expiry`](crate::Expiry), or an ended session: then an expired removal cookie with the
//!   same attributes), whether the response must say `Vary: Cookie` (its session was used)
//!   and `Cache-Control: no-cache="Set-Cookie"` (it sets a cookie), or which status answers a
//!   failed commit (the error handler's; default [`Error::http_status`]: 413, 503 or 500),
//!   with no cookie: the stored session is as it was before the request, and the client keeps
//!   the cookie it has.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use cookie::{Cookie, CookieJar, Key, SameSite};

use crate::codec::{Codec, MessagePack};
use crate::manager::{CommitOutcome, Expiry, Session, SessionManager};
use session_core::SessionId;
use session_core::Timestamp;
use session_core::{Error, Result};

pub use cookie::Key as SigningKey;
pub use cookie::SameSite as CookieSameSite;

/// Longest cookie value looked at; anything longer is ignored unread.
const MAX_COOKIE_VALUE: usize = 256;

/// The cookie name a builder starts with. The `__Host-` prefix makes browsers refuse the
/// cookie unless it is `Secure`, has `Path=/` and no `Domain`, so a sibling subdomain or a
/// plain-HTTP page cannot plant one (OWASP ASVS 3.3.1). Browsers treat `http://localhost` as
/// secure, so it works in development too.
pub const DEFAULT_COOKIE_NAME: &str = "__Host-session";

/// The `Cache-Control` value of a response that sets a cookie: a shared cache may keep the
/// page, never the cookie.
const NO_CACHE_SET_COOKIE: &str = "no-cache=\"Set-Cookie\"";

type ErrorHandler = Arc<dyn Fn(&Error, Option<&SessionId>) -> u16 + Send + Sync>;

/// Everything a framework adapter needs, checked by [`SessionBuilder`]'s `build`.
pub(crate) struct Settings<C: Codec> {
    pub(crate) manager: SessionManager<C>,
    name: Cow<'static, str>,
    domain: Option<String>,
    path: String,
    secure: bool,
    http_only: bool,
    same_site: SameSite,
    partitioned: bool,
    persistent: bool,
    keys: Vec<Key>,
    on_error: ErrorHandler,
    commit_on_server_error: bool,
}

impl<C: Codec> fmt::Debug for Settings<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Settings")
            .field("manager", &self.manager)
            .field("cookie", &self.name)
            .field("domain", &self.domain)
            .field("path", &self.path)
            .field("secure", &self.secure)
            .field("http_only", &self.http_only)
            .field("same_site", &self.same_site)
            .field("partitioned", &self.partitioned)
            .field("persistent", &self.persistent)
            .field("signing_keys", &self.keys.len())
            .field("commit_on_server_error", &self.commit_on_server_error)
            .finish_non_exhaustive()
    }
}

/// Configures the session cookie and the commit for one framework's adapter: `T` is what
/// `build` makes ([`SessionLayer`](crate::SessionLayer) for axum and tower,
/// `SessionMiddleware` for actix-web). The options and the checks `build` makes are the same
/// for every framework; start from `SessionLayer::builder` or `SessionMiddleware::builder`.
#[must_use]
pub struct SessionBuilder<T, C: Codec = MessagePack> {
    settings: Settings<C>,
    target: PhantomData<fn() -> T>,
}

impl<T, C: Codec> fmt::Debug for SessionBuilder<T, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionBuilder")
            .field("settings", &self.settings)
            .finish()
    }
}

fn default_error_handler(error: &Error, id: Option<&SessionId>) -> u16 {
    let source: &(dyn std::error::Error + 'static) = error;
    tracing::error!(session = ?id, error = source, "session commit failed");
    error.http_status()
}

/// Whether `name` starts with `prefix`, ignoring ASCII case, as browsers match cookie prefixes.
fn has_prefix(name: &str, prefix: &str) -> bool {
    name.as_bytes()
        .get(..prefix.len())
        .is_some_and(|head| head.eq_ignore_ascii_case(prefix.as_bytes()))
}

/// Whether `value` can go in a header as it is: visible ASCII, spaces and tabs (what the
/// `http` crate of axum and actix-web's both accept).
fn fits_header(value: &str) -> bool {
    value
        .bytes()
        .all(|b| b == b'\t' || (b' '..=b'~').contains(&b))
}

impl<T, C: Codec> SessionBuilder<T, C> {
    /// Starts with the defaults: cookie [`DEFAULT_COOKIE_NAME`] (`__Host-session`), `Path=/`,
    /// no `Domain`, `Secure`, `HttpOnly`, `SameSite=Lax`, persistent (carries the session's
    /// deadline), unsigned, nothing committed for 5xx responses.
    pub(crate) fn new(manager: SessionManager<C>) -> Self {
        Self {
            settings: Settings {
                manager,
                name: Cow::Borrowed(DEFAULT_COOKIE_NAME),
                domain: None,
                path: "/".into(),
                secure: true,
                http_only: true,
                same_site: SameSite::Lax,
                partitioned: false,
                persistent: true,
                keys: Vec::new(),
                on_error: Arc::new(default_error_handler),
                commit_on_server_error: false,
            },
            target: PhantomData,
        }
    }

    /// The cookie's name (default [`DEFAULT_COOKIE_NAME`]). A `__Host-` name forces `Secure`,
    /// `Path=/` and no `Domain`; a `__Secure-` name forces `Secure` (`build` refuses anything
    /// else). Prefixes are matched ignoring case, as browsers do. A plain-HTTP deployment that
    /// turns `Secure` off needs a name without a prefix.
    pub fn cookie_name(mut self, name: impl Into<Cow<'static, str>>) -> Self {
        self.settings.name = name.into();
        self
    }

    /// The cookie's `Domain` (default: none, so only the exact host gets it). Must be ASCII
    /// (punycode for international names) without spaces, `;` or `,`.
    pub fn domain(mut self, domain: impl Into<String>) -> Self {
        self.settings.domain = Some(domain.into());
        self
    }

    /// The cookie's `Path` (default `/`).
    pub fn path(mut self, path: impl Into<String>) -> Self {
        self.settings.path = path.into();
        self
    }

    /// Whether the cookie is `Secure` (HTTPS only; default true).
    pub fn secure(mut self, secure: bool) -> Self {
        self.settings.secure = secure;
        self
    }

    /// Whether the cookie is `HttpOnly` (hidden from scripts; default true).
    pub fn http_only(mut self, http_only: bool) -> Self {
        self.settings.http_only = http_only;
        self
    }

    /// The cookie's `SameSite` (default `Lax`). `None` requires `Secure`.
    pub fn same_site(mut self, same_site: SameSite) -> Self {
        self.settings.same_site = same_site;
        self
    }

    /// Whether the cookie is `Partitioned` (CHIPS; requires `Secure`; default false).
    pub fn partitioned(mut self, partitioned: bool) -> Self {
        self.settings.partitioned = partitioned;
        self
    }

    /// Persistent cookies carry the session's absolute deadline (`Max-Age`, `Expires`);
    /// browser-session cookies (false) vanish when the browser closes. Default true. A
    /// session can choose otherwise for itself with [`Session::set_expiry`] ("remember me").
    pub fn persistent(mut self, persistent: bool) -> Self {
        self.settings.persistent = persistent;
        self
    }

    /// Signs cookies with HMAC-SHA256. The first key signs; every key is accepted when
    /// verifying, so a new key can be put first while old cookies stay valid, and the old
    /// key dropped once they have expired.
    pub fn signed(mut self, keys: Vec<Key>) -> Self {
        self.settings.keys = keys;
        self
    }

    /// Whether a response with a 5xx status still commits the session's changes (default
    /// false: a handler that failed half-way persists none of them, as tower-sessions does).
    /// `destroy` and `rotate` act at once either way.
    pub fn commit_on_server_error(mut self, commit: bool) -> Self {
        self.settings.commit_on_server_error = commit;
        self
    }

    /// Decides the response status when committing the session fails. It gets the error and
    /// the masked id and returns a status (either framework's `StatusCode`, or a `u16`; a
    /// number that is no status answers 500); the default logs both and answers
    /// [`Error::http_status`].
    pub fn error_handler<S: Into<u16>>(
        mut self,
        handler: impl Fn(&Error, Option<&SessionId>) -> S + Send + Sync + 'static,
    ) -> Self {
        self.settings.on_error = Arc::new(move |e, id| handler(e, id).into());
        self
    }

    /// Checks the cookie settings; the adapters' `build` calls this.
    ///
    /// # Errors
    /// [`Error::Config`] for an empty or invalid cookie name, a `__Host-` cookie that is not
    /// `Secure`, has a `Domain` or a `Path` other than `/`, a `__Secure-`, `SameSite=None` or
    /// `Partitioned` cookie that is not `Secure`, a path not starting with `/` or holding `;`
    /// or control characters, a domain that is empty, not ASCII, or holds spaces, `;`, `,` or
    /// control characters, or any other cookie that would not fit in a `Set-Cookie` header.
    pub(crate) fn validated(self) -> Result<Arc<Settings<C>>> {
        let s = &self.settings;
        let bad = |why: &'static str| Err(Error::Config(why.into()));
        let valid_name = !s.name.is_empty()
            && s.name
                .bytes()
                .all(|b| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}".contains(&b));
        if !valid_name {
            return bad("the cookie name must be a non-empty token (no separators or spaces)");
        }
        let valid_path = s.path.starts_with('/')
            && s.path
                .bytes()
                .all(|b| (b' '..=b'~').contains(&b) && b != b';');
        if !valid_path {
            return bad(
                "the cookie path must start with `/` and hold only printable ASCII other than `;`",
            );
        }
        if let Some(domain) = &s.domain {
            let valid_domain = !domain.is_empty()
                && domain
                    .bytes()
                    .all(|b| b.is_ascii_graphic() && b != b';' && b != b',');
            if !valid_domain {
                return bad(
                    "the cookie domain must be non-empty ASCII (punycode) without spaces, `;` or `,`",
                );
            }
        }
        if has_prefix(&s.name, "__Host-") {
            if !s.secure {
                return bad("a `__Host-` cookie must be Secure");
            }
            if s.domain.is_some() {
                return bad("a `__Host-` cookie must not have a Domain");
            }
            if s.path != "/" {
                return bad("a `__Host-` cookie must have Path=/");
            }
        }
        if has_prefix(&s.name, "__Secure-") && !s.secure {
            return bad("a `__Secure-` cookie must be Secure");
        }
        if s.same_site == SameSite::None && !s.secure {
            return bad("a SameSite=None cookie must be Secure");
        }
        if s.partitioned && !s.secure {
            return bad("a Partitioned cookie must be Secure");
        }
        // Only the id, the deadline and whether it is persistent vary between the cookies
        // written later, all plain ASCII, so if these encode, every later one does.
        let id = SessionId::generate();
        let now = Timestamp::now();
        let samples = [
            s.set_cookie(&id, now, true).to_string(),
            s.set_cookie(&id, now, false).to_string(),
            s.removal_cookie().to_string(),
        ];
        if !samples.iter().all(|c| fits_header(c)) {
            return bad("the cookie does not fit in a Set-Cookie header");
        }
        Ok(Arc::new(self.settings))
    }
}

/// What the adapter does to the response once the session is committed.
#[derive(Debug)]
pub(crate) struct Finish {
    /// The commit failed: answer with this status instead of the handler's response, with
    /// no cookie.
    pub(crate) failed: Option<u16>,
    /// A `Set-Cookie` value to append (then also `Cache-Control: no-cache="Set-Cookie"`).
    set_cookie: Option<String>,
    /// The response depends on the request's cookie: add `Vary: Cookie` unless it already
    /// varies on it ([`varies_on_cookie`]).
    vary: bool,
}

impl Finish {
    /// The headers to append to the response, as (lower-case name, value), for the adapter
    /// to put in its framework's own header types: `Set-Cookie` with
    /// `Cache-Control: no-cache="Set-Cookie"` for a cookie, then `Vary: Cookie` when the
    /// session was used, unless `already_varies` (asked only then) says the response varies
    /// on `Cookie` already (see [`varies_on_cookie`]).
    pub(crate) fn headers<'a>(
        &'a self,
        already_varies: &dyn Fn() -> bool,
    ) -> impl Iterator<Item = (&'static str, HeaderText<'a>)> + use<'a> {
        let cookie = self.set_cookie.as_deref().into_iter().flat_map(|value| {
            [
                ("set-cookie", HeaderText::Made(value)),
                ("cache-control", HeaderText::Constant(NO_CACHE_SET_COOKIE)),
            ]
        });
        let vary =
            (self.vary && !already_varies()).then_some(("vary", HeaderText::Constant("Cookie")));
        cookie.chain(vary)
    }
}

/// A session header's value: a constant, which an adapter hands to its framework as a static
/// header value (no copy, no allocation: `Vary: Cookie` is on nearly every response), or text
/// made for this response, which the framework checks and copies.
#[derive(Debug, Clone, Copy)]
pub(crate) enum HeaderText<'a> {
    /// A valid header value known at compile time.
    Constant(&'static str),
    /// A value made for this response (a `Set-Cookie` line).
    Made(&'a str),
}

impl<C: Codec> Settings<C> {
    /// The session handle for a request with these `Cookie` header values (raw bytes): the
    /// well-formed (and, when signing is on, correctly signed) ids among the values of the
    /// session cookie, in header order.
    pub(crate) fn session<'a>(&self, cookie_headers: impl Iterator<Item = &'a [u8]>) -> Session<C> {
        // The manager skips repeats and stops at `MAX_INCOMING_IDS`; handing it the lazy
        // iterator spares a vector per request.
        let ids = cookie_values(cookie_headers, &self.name).filter_map(|v| self.session_id(v));
        self.manager.session_for_ids(ids)
    }

    /// The session id one cookie value holds, if it is well-formed and correctly signed.
    fn session_id(&self, value: &[u8]) -> Option<SessionId> {
        if value.len() > MAX_COOKIE_VALUE {
            return None;
        }
        let value = std::str::from_utf8(value).ok()?;
        if self.keys.is_empty() {
            value.parse().ok()
        } else {
            self.verify(Cookie::new(self.name.to_string(), value.to_owned()))?
                .parse()
                .ok()
        }
    }

    fn verify(&self, cookie: Cookie<'static>) -> Option<String> {
        let mut jar = CookieJar::new();
        jar.add_original(cookie);
        self.keys
            .iter()
            .find_map(|key| jar.signed(key).get(&self.name))
            .map(|c| c.value().to_owned())
    }

    /// Commits `session` (or, for a 5xx `status` without `commit_on_server_error`, discards
    /// its changes) and says what the response needs.
    pub(crate) async fn finish(&self, session: &Session<C>, status: u16) -> Finish {
        let outcome = if (500..600).contains(&status) && !self.commit_on_server_error {
            Ok(session.discard().await)
        } else {
            session.commit().await
        };
        let vary = session.was_used();
        match outcome {
            Ok(outcome) => {
                let set_cookie = self.set_cookie_value(&outcome);
                Finish {
                    failed: None,
                    vary: vary || set_cookie.is_some(),
                    set_cookie,
                }
            }
            Err(error) => Finish {
                failed: Some((self.on_error)(&error, session.incoming_id())),
                set_cookie: None,
                vary,
            },
        }
    }

    fn set_cookie_value(&self, outcome: &CommitOutcome) -> Option<String> {
        let cookie = match outcome {
            CommitOutcome::SetCookie {
                id,
                expires_at,
                expiry,
            } => {
                let persistent = match expiry {
                    Some(Expiry::BrowserSession) => false,
                    Some(Expiry::Persistent) => true,
                    None => self.persistent,
                };
                self.set_cookie(id, *expires_at, persistent)
            }
            CommitOutcome::RemoveCookie => self.removal_cookie(),
            _ => return None,
        };
        let value = cookie.to_string();
        if fits_header(&value) {
            Some(value)
        } else {
            // `build` proved every cookie of these settings encodes; never drop one silently.
            tracing::error!(cookie = %self.name, "the session cookie could not be encoded");
            None
        }
    }

    fn base_cookie(&self, value: String) -> Cookie<'static> {
        let mut cookie = Cookie::build((self.name.to_string(), value))
            .path(self.path.clone())
            .secure(self.secure)
            .http_only(self.http_only)
            .same_site(self.same_site)
            .partitioned(self.partitioned)
            .build();
        if let Some(domain) = &self.domain {
            cookie.set_domain(domain.clone());
        }
        cookie
    }

    fn set_cookie(
        &self,
        id: &SessionId,
        expires_at: Timestamp,
        persistent: bool,
    ) -> Cookie<'static> {
        let mut cookie = self.base_cookie(id.expose().to_owned());
        if persistent {
            // Round up: a deadline 800 ms away must not become `Max-Age=0`, which deletes.
            let millis = Timestamp::now().until(expires_at).as_millis();
            let seconds = i64::try_from(millis.div_ceil(1000)).unwrap_or(i64::MAX);
            cookie.set_max_age(cookie::time::Duration::seconds(seconds));
            let at = cookie::time::OffsetDateTime::from_unix_timestamp(
                expires_at.unix_millis().div_euclid(1000) + 1,
            );
            if let Ok(at) = at {
                cookie.set_expires(at);
            }
        }
        match self.keys.first() {
            Some(key) => {
                let mut jar = CookieJar::new();
                jar.signed_mut(key).add(cookie);
                jar.delta()
                    .next()
                    .cloned()
                    .unwrap_or_else(|| self.base_cookie(String::new()))
            }
            None => cookie,
        }
    }

    fn removal_cookie(&self) -> Cookie<'static> {
        let mut cookie = self.base_cookie(String::new());
        cookie.make_removal();
        cookie
    }
}

/// Whether a response with these `Vary` header values already varies on `Cookie` (or on
/// everything), so `Vary: Cookie` need not be added.
pub(crate) fn varies_on_cookie<'a>(mut vary_headers: impl Iterator<Item = &'a [u8]>) -> bool {
    vary_headers.any(|v| {
        v.split(|b| *b == b',').any(|field| {
            let field = field.trim_ascii();
            field == b"*" || field.eq_ignore_ascii_case(b"cookie")
        })
    })
}

/// The values of every cookie called `name` in the request's `Cookie` headers, in order.
///
/// Works on bytes: `HeaderValue::to_str` refuses a whole header for one non-ASCII byte, and a
/// `lang=é` set by a script or a sibling subdomain must not log the user out. Pairs are split
/// at `;`, names and values trimmed of spaces and tabs (RFC 6265, section 5.4 as browsers send
/// it); a pair without `=` is skipped.
fn cookie_values<'a>(
    headers: impl Iterator<Item = &'a [u8]>,
    name: &str,
) -> impl Iterator<Item = &'a [u8]> {
    headers
        .flat_map(|header| header.split(|b| *b == b';'))
        .filter_map(move |pair| {
            let eq = pair.iter().position(|b| *b == b'=')?;
            let (key, value) = (pair[..eq].trim_ascii(), pair[eq + 1..].trim_ascii());
            (key == name.as_bytes()).then_some(value)
        })
}
