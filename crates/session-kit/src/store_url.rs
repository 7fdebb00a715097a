//! A store named by one string, e.g. from an environment variable: `memory`, `files:PATH`,
//! `hybrid:PATH`, `postgres://…`, `redis://…`, `rediss://…`, `redis+cluster://h1,h2…`.
//!
//! Parsing ([`StoreUrl`]) needs no feature: every scheme is recognised in every build, and
//! opening one whose backend feature is off fails with an [`Error::Config`] that names the
//! feature. A new backend adds a variant, one arm in [`StoreUrl::from_str`], one in
//! [`StoreUrl::open`] and one in [`StoreUrl::feature`].

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;

use session_core::{Error, Result, SessionStore};

/// Longest accepted store URL, in bytes: a URL is configuration, so anything longer is a
/// mistake (or an attack), not a store.
pub const MAX_STORE_URL_LEN: usize = 4096;

/// A parsed store URL. Its [`Display`](fmt::Display) and [`Debug`] forms mask passwords, so it
/// can be logged.
///
/// | form | store | feature |
/// | --- | --- | --- |
/// | `memory` (or an empty string) | the in-memory store | `memory` |
/// | `files:PATH` | one file per session under `PATH` | `files` |
/// | `hybrid:PATH` | memory plus a modification log under `PATH` | `hybrid` |
/// | `sqlite:PATH` (`sqlite://PATH` too) | one SQLite database file at `PATH`, created if missing | `sqlite` |
/// | `postgres://…`, `postgresql://…` | PostgreSQL; the table is created if missing | `postgres` |
/// | `mysql://…`, `mariadb://…` | MySQL 8 or MariaDB; the table is created if missing | `mysql` |
/// | `redis://…` | Redis | `redis` |
/// | `rediss://…` | Redis over TLS | `redis-tls` |
/// | `redis+cluster://[user:pass@]h1:p1,h2:p2` (`rediss+cluster://` for TLS) | Redis Cluster through these seed nodes | `redis-cluster` (and `redis-tls`) |
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoreUrl {
    /// `memory`.
    Memory,
    /// `files:PATH`.
    Files(PathBuf),
    /// `hybrid:PATH`.
    Hybrid(PathBuf),
    /// `sqlite:PATH` or `sqlite://PATH`.
    Sqlite(PathBuf),
    /// `postgres://…` or `postgresql://…`, kept whole for the driver.
    Postgres(String),
    /// `mysql://…` or `mariadb://…`, kept whole for the driver (`mariadb://` becomes
    /// `mysql://`).
    MySql(String),
    /// `redis://…` or `rediss://…`, kept whole for the driver.
    Redis(String),
    /// `redis+cluster://…` or `rediss+cluster://…`: one `redis://` (or `rediss://`) URL per
    /// seed node, each with the credentials given once before the hosts.
    RedisCluster(Vec<String>),
}

/// Parses `url` and opens the store it names (see [`StoreUrl`]).
///
/// # Errors
/// [`Error::Config`] for a malformed URL or a scheme whose feature is off; otherwise what the
/// store's constructor reports (a bad path, an unreachable server).
pub async fn store_from_url(url: &str) -> Result<Arc<dyn SessionStore>> {
    url.parse::<StoreUrl>()?.open().await
}

fn config(message: impl Into<std::borrow::Cow<'static, str>>) -> Error {
    Error::Config(message.into())
}

impl FromStr for StoreUrl {
    type Err = Error;

    /// Parses a store URL; surrounding whitespace is ignored and an empty string is `memory`.
    ///
    /// # Errors
    /// [`Error::Config`] naming what is wrong. The message never repeats the URL, which may
    /// hold a password.
    fn from_str(url: &str) -> Result<Self> {
        if url.len() > MAX_STORE_URL_LEN {
            return Err(config(format!(
                "a store URL is at most {MAX_STORE_URL_LEN} bytes, this one is {}",
                url.len()
            )));
        }
        let url = url.trim();
        if url.chars().any(char::is_control) {
            return Err(config("a store URL must not contain control characters"));
        }
        if url.is_empty() || url == "memory" {
            return Ok(Self::Memory);
        }
        let Some((scheme, rest)) = url.split_once(':') else {
            return Err(unknown_scheme());
        };
        match scheme.to_ascii_lowercase().as_str() {
            "files" => Ok(Self::Files(path(scheme, rest)?)),
            "hybrid" => Ok(Self::Hybrid(path(scheme, rest)?)),
            "sqlite" => Ok(Self::Sqlite(path(
                scheme,
                rest.strip_prefix("//").unwrap_or(rest),
            )?)),
            "mysql" | "mariadb" => {
                server(scheme, rest)?;
                Ok(Self::MySql(format!("mysql:{rest}")))
            }
            "postgres" | "postgresql" => {
                server(scheme, rest)?;
                Ok(Self::Postgres(url.to_owned()))
            }
            "redis" | "rediss" => {
                server(scheme, rest)?;
                Ok(Self::Redis(url.to_owned()))
            }
            "redis+cluster" | "rediss+cluster" => cluster(scheme, rest),
            _ => Err(unknown_scheme()),
        }
    }
}

fn unknown_scheme() -> Error {
    config(
        "a store URL is `memory`, `files:PATH`, `hybrid:PATH`, `sqlite:PATH`, `postgres://…`, \
         `mysql://…`, `redis://…`, \
         `rediss://…` or `redis+cluster://HOST:PORT,HOST:PORT`",
    )
}

fn path(scheme: &str, rest: &str) -> Result<PathBuf> {
    if rest.trim().is_empty() {
        return Err(config(format!(
            "`{scheme}:` needs a directory, e.g. `{scheme}:/var/lib/sessions`"
        )));
    }
    Ok(PathBuf::from(rest))
}

/// Checks the `//host…` part of a server URL: present and naming a host.
fn server<'a>(scheme: &str, rest: &'a str) -> Result<&'a str> {
    let Some(after) = rest.strip_prefix("//") else {
        return Err(config(format!("`{scheme}:` must be followed by `//HOST`")));
    };
    let authority = authority(after);
    let hosts = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if hosts.is_empty() {
        return Err(config(format!("the `{scheme}://` URL names no host")));
    }
    Ok(authority)
}

/// The authority of `after` (what follows `scheme://`): up to the first `/`, `?` or `#`.
fn authority(after: &str) -> &str {
    after
        .find(['/', '?', '#'])
        .map_or(after, |end| &after[..end])
}

fn cluster(scheme: &str, rest: &str) -> Result<StoreUrl> {
    let authority = server(scheme, rest)?;
    let tail = &rest[2 + authority.len()..];
    if !(tail.is_empty() || tail == "/") {
        return Err(config(format!(
            "a `{scheme}://` URL is only credentials and hosts: a cluster has no database number \
             or path"
        )));
    }
    let (userinfo, hosts) = match authority.rsplit_once('@') {
        Some((userinfo, hosts)) => (Some(userinfo), hosts),
        None => (None, authority),
    };
    let node_scheme = scheme.strip_suffix("+cluster").unwrap_or(scheme);
    let mut nodes = Vec::new();
    for host in hosts.split(',') {
        if host.trim().is_empty() {
            return Err(config(format!(
                "the `{scheme}://` URL has an empty host in its list"
            )));
        }
        nodes.push(match userinfo {
            Some(userinfo) => format!("{node_scheme}://{userinfo}@{host}"),
            None => format!("{node_scheme}://{host}"),
        });
    }
    Ok(StoreUrl::RedisCluster(nodes))
}

impl StoreUrl {
    /// The Cargo feature of `session-kit` this store needs.
    pub fn feature(&self) -> &'static str {
        match self {
            Self::Memory => "memory",
            Self::Files(_) => "files",
            Self::Hybrid(_) => "hybrid",
            Self::Sqlite(_) => "sqlite",
            Self::Postgres(_) => "postgres",
            Self::MySql(_) => "mysql",
            Self::Redis(url) if is_tls(url) => "redis-tls",
            Self::Redis(_) => "redis",
            Self::RedisCluster(_) => "redis-cluster",
        }
    }

    /// Opens the store: creates the directory, connects to the server, and for PostgreSQL
    /// creates the table if it is missing (`PostgresStore::migrate`).
    /// Every backend gets its default settings; for other settings use its builder.
    ///
    /// # Errors
    /// [`Error::Config`] naming the feature when this build of `session-kit` lacks it;
    /// otherwise what the store's constructor reports.
    pub async fn open(&self) -> Result<Arc<dyn SessionStore>> {
        match self {
            #[cfg(feature = "memory")]
            Self::Memory => Ok(Arc::new(session_memory::MemoryStore::new())),
            #[cfg(feature = "files")]
            Self::Files(path) => Ok(Arc::new(session_files::FileStore::open(path.clone())?)),
            #[cfg(feature = "hybrid")]
            Self::Hybrid(path) => Ok(Arc::new(session_hybrid::HybridStore::open(path)?)),
            #[cfg(feature = "sqlite")]
            Self::Sqlite(path) => {
                let store = session_sqlite::SqliteStore::open(path).await?;
                store.migrate().await?;
                Ok(Arc::new(store))
            }
            #[cfg(feature = "mysql")]
            Self::MySql(url) => {
                let store = session_mysql::MySqlStore::connect(url).await?;
                store.migrate().await?;
                Ok(Arc::new(store))
            }
            #[cfg(feature = "postgres")]
            Self::Postgres(url) => {
                let store = session_postgres::PostgresStore::connect(url).await?;
                store.migrate().await?;
                Ok(Arc::new(store))
            }
            #[cfg(feature = "redis")]
            Self::Redis(url) if !is_tls(url) || cfg!(feature = "redis-tls") => {
                Ok(Arc::new(session_redis::RedisStore::from_url(url.clone())?))
            }
            #[cfg(feature = "redis-cluster")]
            Self::RedisCluster(urls)
                if !urls.iter().any(|u| is_tls(u)) || cfg!(feature = "redis-tls") =>
            {
                Ok(Arc::new(
                    session_redis::RedisStore::builder()
                        .cluster_urls(urls.iter().cloned())
                        .build()?,
                ))
            }
            _ => Err(self.missing_feature()),
        }
    }

    fn missing_feature(&self) -> Error {
        let feature = match self {
            Self::RedisCluster(urls)
                if cfg!(feature = "redis-cluster") && urls.iter().any(|u| is_tls(u)) =>
            {
                "redis-tls"
            }
            other => other.feature(),
        };
        config(format!(
            "the store URL `{self}` needs session-kit's feature `{feature}`, which this build \
             does not have"
        ))
    }
}

fn is_tls(url: &str) -> bool {
    url.get(..8)
        .is_some_and(|s| s.eq_ignore_ascii_case("rediss:/"))
}

/// `url` with the password of its userinfo (`user:PASSWORD@`) and any `password=` query
/// parameter replaced by `***`.
///
/// The userinfo is taken to end at the *last* `@`, so a password holding an unencoded `@`, `/`
/// or `?` is still masked whole; an `@` later in the path or query only masks more than needed.
fn masked(url: &str) -> String {
    let Some((scheme, after)) = url.split_once("://") else {
        return url.to_owned();
    };
    let mut out = format!("{scheme}://");
    let rest = match after.rsplit_once('@') {
        Some((userinfo, rest)) => {
            match userinfo.split_once(':') {
                Some((user, _)) => {
                    out.push_str(user);
                    out.push_str(":***@");
                }
                None => {
                    out.push_str(userinfo);
                    out.push('@');
                }
            }
            rest
        }
        None => after,
    };
    match rest.split_once('?') {
        Some((path, query)) => {
            out.push_str(path);
            out.push('?');
            let params: Vec<String> = query
                .split('&')
                .map(|param| match param.split_once('=') {
                    Some((name, _)) if name.eq_ignore_ascii_case("password") => {
                        format!("{name}=***")
                    }
                    _ => param.to_owned(),
                })
                .collect();
            out.push_str(&params.join("&"));
        }
        None => out.push_str(rest),
    }
    out
}

impl fmt::Display for StoreUrl {
    /// The URL with passwords masked (`redis://user:***@host`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Memory => f.write_str("memory"),
            Self::Files(path) => write!(f, "files:{}", path.display()),
            Self::Hybrid(path) => write!(f, "hybrid:{}", path.display()),
            Self::Sqlite(path) => write!(f, "sqlite:{}", path.display()),
            Self::Postgres(url) | Self::MySql(url) | Self::Redis(url) => f.write_str(&masked(url)),
            Self::RedisCluster(urls) => {
                let masked: Vec<String> = urls.iter().map(|u| masked(u)).collect();
                write!(f, "cluster {}", masked.join(","))
            }
        }
    }
}

impl fmt::Debug for StoreUrl {
    /// Like [`Display`](fmt::Display): passwords masked.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StoreUrl({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(url: &str) -> Result<StoreUrl> {
        url.parse()
    }

    fn config_message(result: Result<StoreUrl>) -> String {
        match result {
            Err(Error::Config(message)) => message.into_owned(),
            other => panic!("expected Error::Config, got {other:?}"),
        }
    }

    #[test]
    fn each_scheme_parses_to_its_store() {
        assert_eq!(parse("").ok(), Some(StoreUrl::Memory));
        assert_eq!(parse("  memory\n").ok(), Some(StoreUrl::Memory));
        assert_eq!(
            parse("files:/tmp/s").ok(),
            Some(StoreUrl::Files("/tmp/s".into()))
        );
        assert_eq!(
            parse("hybrid:rel/dir").ok(),
            Some(StoreUrl::Hybrid("rel/dir".into()))
        );
        assert_eq!(
            parse("sqlite:/tmp/s.db").ok(),
            Some(StoreUrl::Sqlite("/tmp/s.db".into()))
        );
        assert_eq!(
            parse("sqlite://rel/s.db").ok(),
            Some(StoreUrl::Sqlite("rel/s.db".into()))
        );
        assert_eq!(
            parse("mariadb://root@127.0.0.1:3306/test").ok(),
            Some(StoreUrl::MySql("mysql://root@127.0.0.1:3306/test".into()))
        );
        assert_eq!(
            parse("mysql://u:hunter2@h/db").map(|u| u.to_string()).ok(),
            Some("mysql://u:***@h/db".into())
        );
        assert!(parse("sqlite:").is_err());
        assert!(parse("mysql://").is_err());
        for url in [
            "postgres://u@127.0.0.1:5432/test",
            "postgresql://h/db?sslmode=require",
            "POSTGRES://h/db",
        ] {
            assert_eq!(
                parse(url).ok(),
                Some(StoreUrl::Postgres(url.into())),
                "{url}"
            );
        }
        for url in [
            "redis://127.0.0.1:6379/2",
            "rediss://:pw@cache.example:6380",
        ] {
            assert_eq!(parse(url).ok(), Some(StoreUrl::Redis(url.into())), "{url}");
        }
    }

    #[test]
    fn a_cluster_url_becomes_one_node_url_per_host_with_the_credentials_on_each() {
        assert_eq!(
            parse("redis+cluster://:secret@a:7000,b:7001/").ok(),
            Some(StoreUrl::RedisCluster(vec![
                "redis://:secret@a:7000".into(),
                "redis://:secret@b:7001".into()
            ]))
        );
        assert_eq!(
            parse("rediss+cluster://a:7000").ok(),
            Some(StoreUrl::RedisCluster(vec!["rediss://a:7000".into()]))
        );
    }

    #[test]
    fn malformed_and_hostile_urls_are_config_errors_that_do_not_echo_them() {
        let cases = [
            "mysql-ish",
            "memory:extra",
            "ftp://host/x",
            "files:",
            "hybrid:   ",
            "postgres:",
            "postgres:/h/db",
            "postgres://",
            "postgres://user:hunter2@/db",
            "redis://",
            "redis:host",
            "redis+cluster://a:1,,b:2",
            "redis+cluster://:hunter2@a:1/0",
            "redis+cluster://",
            "files:/tmp/\0evil",
            "redis://h\r\nFLUSHALL",
            "\u{1b}[2Jmemory",
        ];
        for url in cases {
            let message = config_message(parse(url));
            assert!(
                !message.contains("hunter2"),
                "{url:?} leaked into {message:?}"
            );
        }
        let long = format!("redis://{}", "a".repeat(MAX_STORE_URL_LEN));
        assert!(config_message(parse(&long)).contains("at most"));
    }

    #[test]
    fn display_and_debug_mask_passwords() {
        let cases = [
            (
                "postgres://app:hunter2@db:5432/s?sslmode=require",
                "postgres://app:***@db:5432/s?sslmode=require",
            ),
            (
                "postgres://db/s?user=app&password=hunter2&x=1",
                "postgres://db/s?user=app&password=***&x=1",
            ),
            ("redis://:hunter2@cache:6379/0", "redis://:***@cache:6379/0"),
            // An `@` in the password must not let its tail through as the host.
            ("redis://u:hun@ter2@cache", "redis://u:***@cache"),
            ("redis://u:hunter/2@cache", "redis://u:***@cache"),
            ("redis://u:hunter?2@cache", "redis://u:***@cache"),
            ("redis://cache:6379", "redis://cache:6379"),
            ("redis://user@cache", "redis://user@cache"),
            (
                "rediss+cluster://u:hunter2@a:1,b:2",
                "cluster rediss://u:***@a:1,rediss://u:***@b:2",
            ),
        ];
        for (url, shown) in cases {
            let parsed = parse(url).unwrap_or_else(|e| panic!("{url}: {e}"));
            assert_eq!(parsed.to_string(), shown);
            let debug = format!("{parsed:?}");
            assert!(
                !debug.contains("hunter") && !debug.contains("ter2"),
                "{debug}"
            );
        }
        assert_eq!(
            parse("files:/x").map(|u| u.to_string()).ok().as_deref(),
            Some("files:/x")
        );
    }

    #[test]
    fn each_store_names_its_feature() {
        let feature = |url: &str| parse(url).map(|u| u.feature()).ok();
        assert_eq!(feature("memory"), Some("memory"));
        assert_eq!(feature("files:/x"), Some("files"));
        assert_eq!(feature("hybrid:/x"), Some("hybrid"));
        assert_eq!(feature("postgresql://h/d"), Some("postgres"));
        assert_eq!(feature("redis://h"), Some("redis"));
        assert_eq!(feature("RediSS://h"), Some("redis-tls"));
        assert_eq!(feature("redis+cluster://h:1"), Some("redis-cluster"));
    }

    /// Built only where a backend feature is off (CI runs `cargo test -p session-kit
    /// --no-default-features --lib`): every store whose feature is missing fails to open with
    /// a configuration error that names the feature and masks the password.
    #[cfg(not(all(
        feature = "memory",
        feature = "files",
        feature = "hybrid",
        feature = "postgres",
        feature = "redis",
        feature = "redis-tls",
        feature = "redis-cluster"
    )))]
    #[tokio::test]
    async fn opening_a_store_whose_feature_is_off_names_the_feature() {
        let cluster_tls = if cfg!(feature = "redis-cluster") {
            "redis-tls"
        } else {
            "redis-cluster"
        };
        let cases = [
            ("memory", "memory", cfg!(feature = "memory")),
            ("files:/nonexistent/s", "files", cfg!(feature = "files")),
            ("hybrid:/nonexistent/h", "hybrid", cfg!(feature = "hybrid")),
            (
                "postgres://u:hunter2@h/db",
                "postgres",
                cfg!(feature = "postgres"),
            ),
            ("redis://:hunter2@h", "redis", cfg!(feature = "redis")),
            (
                "rediss://:hunter2@h",
                "redis-tls",
                cfg!(feature = "redis-tls"),
            ),
            (
                "redis+cluster://:hunter2@h:1",
                "redis-cluster",
                cfg!(feature = "redis-cluster"),
            ),
            (
                "rediss+cluster://:hunter2@h:1",
                cluster_tls,
                cfg!(all(feature = "redis-cluster", feature = "redis-tls")),
            ),
        ];
        let mut checked = 0;
        for (url, feature, enabled) in cases {
            if enabled {
                continue;
            }
            let parsed = parse(url).unwrap_or_else(|e| panic!("{url}: {e}"));
            match parsed.open().await {
                Err(Error::Config(message)) => {
                    assert!(
                        message.contains(&format!("feature `{feature}`")),
                        "{url}: {message}"
                    );
                    assert!(!message.contains("hunter2"), "{url}: {message}");
                }
                other => panic!("{url}: expected Error::Config, got {other:?}"),
            }
            checked += 1;
        }
        assert!(checked > 0, "some feature is off, so some case must run");
    }
}
