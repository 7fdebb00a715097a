//! How a backend test finds its server: one rule for every backend, and for users' stores.
//!
//! [`server_url`] tries, in order:
//!
//! 1. the environment URL ([`Server::url_var`]: `DATABASE_URL`, `REDIS_URL`, `MYSQL_URL`);
//! 2. with the `containers` feature, a container started with testcontainers when a Docker
//!    engine answers: one per server kind per test binary, shared by its tests and removed
//!    when the binary exits. The image comes from [`Server::image_var`] (e.g.
//!    `SESSION_TEST_POSTGRES_IMAGE=session-test/postgres:bookworm`) or the public default, so
//!    a machine without a registry can use a local image. The container shares the host's
//!    network and its server listens on `127.0.0.1` on a free port: nothing is published and
//!    nothing listens beyond loopback;
//! 3. otherwise the test is skipped visibly ([`skip_test`](super::skip_test)), or fails under
//!    `SESSION_REQUIRE_SERVICES=1`.
//!
//! An image, public or local, must accept the official images' interface: the command line
//! below as the container's command (after the image's entrypoint), the environment variables
//! that set up trust or empty-password access, and the server's client tools for the health
//! check. `cargo xtask images` builds local images that do.

use super::skip::skip_test;

/// A kind of server a backend test needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Server {
    /// PostgreSQL; the URL names user `postgres` (trust auth) and database `test`.
    Postgres,
    /// Redis, without persistence.
    Redis,
    /// MariaDB or MySQL; the URL names user `root` (empty password) and database `test`.
    MySql,
}

impl Server {
    /// What people call it, for notices.
    pub fn name(self) -> &'static str {
        match self {
            Self::Postgres => "PostgreSQL",
            Self::Redis => "Redis",
            Self::MySql => "MySQL",
        }
    }

    /// The environment variable that names a running server.
    pub fn url_var(self) -> &'static str {
        match self {
            Self::Postgres => "DATABASE_URL",
            Self::Redis => "REDIS_URL",
            Self::MySql => "MYSQL_URL",
        }
    }

    /// The environment variable that overrides the container image.
    pub fn image_var(self) -> &'static str {
        match self {
            Self::Postgres => "SESSION_TEST_POSTGRES_IMAGE",
            Self::Redis => "SESSION_TEST_REDIS_IMAGE",
            Self::MySql => "SESSION_TEST_MYSQL_IMAGE",
        }
    }

    /// The public image used when [`image_var`](Self::image_var) is unset.
    pub fn default_image(self) -> &'static str {
        match self {
            Self::Postgres => "postgres:16",
            Self::Redis => "redis:7",
            Self::MySql => "mariadb:11",
        }
    }

    /// The image a container of this kind would run: the override, else the default.
    pub fn image(self) -> String {
        match std::env::var(self.image_var()) {
            Ok(image) if !image.trim().is_empty() => image.trim().to_owned(),
            _ => self.default_image().to_owned(),
        }
    }

    /// The URL of a server of this kind listening on `127.0.0.1:port`.
    pub fn url_on(self, port: u16) -> String {
        match self {
            Self::Postgres => format!("postgres://postgres@127.0.0.1:{port}/test"),
            Self::Redis => format!("redis://127.0.0.1:{port}"),
            Self::MySql => format!("mysql://root@127.0.0.1:{port}/test"),
        }
    }
}

/// The URL of a server of `kind` for the running test, or `None` after a visible skip.
///
/// - The environment URL when it is set and not empty.
/// - Else, with the `containers` feature, the URL of this binary's container for `kind`,
///   started on the first call (blocking the caller while the image starts, also inside an
///   async test) and shared by every later call.
/// - Else `None`, after [`skip_test`](super::skip_test) said why; under
///   `SESSION_REQUIRE_SERVICES=1` that panics, so the test fails instead.
pub fn server_url(kind: Server) -> Option<String> {
    if let Some(url) = env_url(kind.url_var()) {
        return Some(url);
    }
    match container_url(kind) {
        Ok(url) => Some(url),
        Err(why) => {
            skip_test(&format!(
                "no {} server: {} is not set and {why}",
                kind.name(),
                kind.url_var()
            ));
            // `skip_test` panicked instead under SESSION_REQUIRE_SERVICES=1.
            None
        }
    }
}

/// A non-empty environment variable.
pub(super) fn env_url(var: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(url) if !url.trim().is_empty() => Some(url),
        _ => None,
    }
}

#[cfg(not(feature = "containers"))]
fn container_url(_kind: Server) -> Result<String, String> {
    Err("the test was built without session-core's `containers` feature, so it cannot start one in Docker".to_owned())
}

#[cfg(feature = "containers")]
fn container_url(kind: Server) -> Result<String, String> {
    containers::url(kind)
}

#[cfg(feature = "containers")]
mod containers {
    //! One container per server kind per process, started by a runtime of its own (each
    //! conformance case has its own runtime, which ends with the case) and removed at exit.

    use std::sync::{Mutex, OnceLock, PoisonError};
    use std::time::Duration;

    use testcontainers::bollard::Docker;
    use testcontainers::bollard::query_parameters::{
        ListContainersOptionsBuilder, RemoveContainerOptionsBuilder,
    };
    use testcontainers::core::WaitFor;
    use testcontainers::runners::AsyncRunner as _;
    use testcontainers::{ContainerAsync, GenericImage, Healthcheck, ImageExt};

    use super::Server;
    use crate::conformance::skip::to_terminal;

    /// The label on every container started here; its value is the owning process id, so a
    /// later run can remove what a killed run left behind.
    pub(super) const OWNER_LABEL: &str = "org.session-tests.owner-pid";

    /// How long an image may take to start and pass its health check (a pull comes first
    /// when the image is missing).
    const STARTUP_TIMEOUT: Duration = Duration::from_secs(300);

    struct Keeper {
        runtime: tokio::runtime::Runtime,
        containers: Mutex<Vec<ContainerAsync<GenericImage>>>,
    }

    static KEEPER: OnceLock<Result<Keeper, String>> = OnceLock::new();
    static POSTGRES: OnceLock<Result<String, String>> = OnceLock::new();
    static REDIS: OnceLock<Result<String, String>> = OnceLock::new();
    static MYSQL: OnceLock<Result<String, String>> = OnceLock::new();

    fn slot(kind: Server) -> &'static OnceLock<Result<String, String>> {
        match kind {
            Server::Postgres => &POSTGRES,
            Server::Redis => &REDIS,
            Server::MySql => &MYSQL,
        }
    }

    /// This binary's container URL for `kind`, or why there is none. Concurrent callers wait
    /// for the first one's start; a failed start is not retried.
    pub(super) fn url(kind: Server) -> Result<String, String> {
        slot(kind).get_or_init(|| start(kind)).clone()
    }

    fn keeper() -> Result<&'static Keeper, String> {
        let keeper = KEEPER.get_or_init(|| {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name("session-test-containers")
                .enable_all()
                .build()
                .map_err(|e| format!("no runtime for the container client: {e}"))?;
            if !shutdown_hooks::add_shutdown_hook(remove_at_exit) {
                return Err("could not register the exit hook that removes containers".into());
            }
            Ok(Keeper {
                runtime,
                containers: Mutex::new(Vec::new()),
            })
        });
        keeper.as_ref().map_err(Clone::clone)
    }

    /// Runs `fut` on the keeper's runtime and waits for it from any thread, inside an async
    /// test too (where `block_on` would panic).
    fn on_keeper<T: Send + 'static>(
        keeper: &Keeper,
        fut: impl Future<Output = T> + Send + 'static,
    ) -> Result<T, String> {
        let (tx, rx) = std::sync::mpsc::channel();
        keeper.runtime.spawn(async move {
            let _ = tx.send(fut.await);
        });
        rx.recv()
            .map_err(|_| "the container task ended without an answer".to_owned())
    }

    fn start(kind: Server) -> Result<String, String> {
        let keeper = keeper()?;
        let docker = on_keeper(keeper, engine())??;
        let port = free_port()?;
        let image = kind.image();
        on_keeper(keeper, remove_orphans(docker))?;
        let request = request(kind, &image, port);
        let container = on_keeper(keeper, async move { request.start().await })?.map_err(|e| {
            format!(
                "a Docker engine answered but the {} container (image {image}) did not start: {e} (build a local image with `cargo xtask images` and set {})",
                kind.name(),
                kind.image_var()
            )
        })?;
        let url = kind.url_on(port);
        to_terminal(&format!(
            "session-core: {} for this test binary runs in container {} (image {image}) at {url}; it is removed when the binary exits\n",
            kind.name(),
            &container.id()[..12.min(container.id().len())],
        ));
        keeper
            .containers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(container);
        Ok(url)
    }

    /// A client for the engine testcontainers will use, if one answers.
    async fn engine() -> Result<Docker, String> {
        let host = std::env::var("DOCKER_HOST")
            .unwrap_or_else(|_| "unix:///var/run/docker.sock".to_owned());
        let docker = Docker::connect_with_defaults()
            .map_err(|e| format!("no Docker engine answered at {host} ({e})"))?;
        match tokio::time::timeout(Duration::from_secs(5), docker.ping()).await {
            Ok(Ok(_)) => Ok(docker),
            Ok(Err(e)) => Err(format!("no Docker engine answered at {host} ({e})")),
            Err(_) => Err(format!("no Docker engine answered at {host} within 5 s")),
        }
    }

    /// Removes containers of earlier runs whose process is gone (killed before its exit
    /// hook ran). Best effort: a failure here only leaves what was there.
    async fn remove_orphans(docker: Docker) {
        let filters = std::collections::HashMap::from([("label", vec![OWNER_LABEL])]);
        let options = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&filters)
            .build();
        let Ok(found) = docker.list_containers(Some(options)).await else {
            return;
        };
        for container in found {
            let owner = container
                .labels
                .as_ref()
                .and_then(|labels| labels.get(OWNER_LABEL))
                .and_then(|pid| pid.parse::<u32>().ok());
            let gone =
                owner.is_some_and(|pid| !std::path::Path::new(&format!("/proc/{pid}")).exists());
            if let (true, Some(id)) = (gone, container.id) {
                let options = RemoveContainerOptionsBuilder::default().force(true).build();
                let _ = docker.remove_container(&id, Some(options)).await;
            }
        }
    }

    /// A free loopback port for the server: the container shares the host's network, so the
    /// server binds it directly.
    fn free_port() -> Result<u16, String> {
        let listener = std::net::TcpListener::bind(("127.0.0.1", 0))
            .map_err(|e| format!("no free loopback port for a container: {e}"))?;
        listener
            .local_addr()
            .map(|addr| addr.port())
            .map_err(|e| format!("no free loopback port for a container: {e}"))
    }

    /// `name[:tag]` split as Docker reads it (a `:` before the last `/` is a registry port).
    fn split_image(image: &str) -> (&str, &str) {
        match image.rsplit_once(':') {
            Some((name, tag)) if !tag.contains('/') => (name, tag),
            _ => (image, "latest"),
        }
    }

    fn request(
        kind: Server,
        image: &str,
        port: u16,
    ) -> testcontainers::ContainerRequest<GenericImage> {
        let (name, tag) = split_image(image);
        let port = port.to_string();
        let (cmd, env, check): (Vec<String>, &[(&str, &str)], String) = match kind {
            Server::Postgres => (
                vec![
                    "postgres".into(),
                    "-c".into(),
                    "listen_addresses=127.0.0.1".into(),
                    "-p".into(),
                    port.clone(),
                    // The data is thrown away with the container.
                    "-c".into(),
                    "fsync=off".into(),
                ],
                &[
                    ("POSTGRES_HOST_AUTH_METHOD", "trust"),
                    ("POSTGRES_DB", "test"),
                ],
                format!("pg_isready -q -h 127.0.0.1 -p {port} -U postgres -d test"),
            ),
            Server::Redis => (
                vec![
                    "redis-server".into(),
                    "--bind".into(),
                    "127.0.0.1".into(),
                    "--port".into(),
                    port.clone(),
                    "--save".into(),
                    String::new(),
                    "--appendonly".into(),
                    "no".into(),
                ],
                &[],
                format!("redis-cli -h 127.0.0.1 -p {port} ping | grep -q PONG"),
            ),
            Server::MySql => (
                vec![
                    "mariadbd".into(),
                    "--bind-address=127.0.0.1".into(),
                    format!("--port={port}"),
                ],
                &[
                    ("MARIADB_ALLOW_EMPTY_ROOT_PASSWORD", "1"),
                    ("MARIADB_DATABASE", "test"),
                ],
                format!("mariadb -h 127.0.0.1 -P {port} -u root -e 'select 1' test >/dev/null"),
            ),
        };
        let mut request = GenericImage::new(name, tag)
            .with_wait_for(WaitFor::healthcheck())
            .with_network("host")
            .with_cmd(cmd)
            .with_label(OWNER_LABEL, std::process::id().to_string())
            .with_health_check(
                Healthcheck::cmd_shell(check)
                    .with_interval(Duration::from_millis(250))
                    .with_timeout(Duration::from_secs(5))
                    .with_retries(1200),
            )
            .with_startup_timeout(STARTUP_TIMEOUT);
        for (var, value) in env {
            request = request.with_env_var(*var, *value);
        }
        request
    }

    /// Removes this process's containers when it exits (registered with `atexit`).
    ///
    /// The removal runs on the keeper's runtime, whose worker thread still runs during exit
    /// handlers; waiting is bounded so a stuck engine cannot hang the exit. It must not panic.
    extern "C" fn remove_at_exit() {
        let _ = std::panic::catch_unwind(|| {
            let Some(Ok(keeper)) = KEEPER.get() else {
                return;
            };
            let containers: Vec<_> = keeper
                .containers
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .drain(..)
                .collect();
            if containers.is_empty() {
                return;
            }
            let (tx, rx) = std::sync::mpsc::channel();
            keeper.runtime.spawn(async move {
                for container in containers {
                    let id = container.id().to_owned();
                    if let Err(e) = container.rm().await {
                        to_terminal(&format!(
                            "session-core: could not remove test container {id}: {e}\n"
                        ));
                    }
                }
                let _ = tx.send(());
            });
            if rx.recv_timeout(Duration::from_secs(60)).is_err() {
                to_terminal("session-core: gave up waiting for test containers to be removed\n");
            }
        });
    }

    #[cfg(test)]
    mod tests {
        use super::split_image;

        #[test]
        fn image_names_split_at_the_tag_not_a_registry_port() {
            assert_eq!(split_image("postgres:16"), ("postgres", "16"));
            assert_eq!(split_image("redis"), ("redis", "latest"));
            assert_eq!(
                split_image("localhost:5000/session-test/postgres"),
                ("localhost:5000/session-test/postgres", "latest")
            );
            assert_eq!(
                split_image("localhost:5000/pg:bookworm"),
                ("localhost:5000/pg", "bookworm")
            );
        }
    }
}
