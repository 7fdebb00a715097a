//! How a backend test finds its server, seen as a person running `cargo test` sees it: each
//! case runs this test binary again as a child, under the harness's usual output capture, and
//! reads what reached its terminal.

#![cfg(feature = "conformance")]

use std::io::{Read as _, Write as _};
use std::process::{Command, Output};

use session_core::conformance::{Server, server_url, skip_test};

/// Tells [`probe`] what to do in a child process.
const PROBE: &str = "SESSION_CORE_SERVERS_PROBE";

/// The child's side of the cases below; in a normal run (no `PROBE`) it does nothing.
#[test]
fn probe() {
    let Ok(what) = std::env::var(PROBE) else {
        return;
    };
    let kind = match what.as_str() {
        "skip" => {
            skip_test("the probe has no server");
            return;
        }
        "postgres" => Server::Postgres,
        "redis" => Server::Redis,
        other => panic!("unknown probe {other:?}"),
    };
    let url = server_url(kind);
    let mut out = std::io::stdout().lock();
    writeln!(out, "URL={url:?}").expect("stdout");
    if let (Server::Redis, Some(url)) = (kind, &url) {
        writeln!(out, "REPLY={}", redis_ping(url)).expect("stdout");
    }
}

/// `PING` over a bare socket, so the probe shows the server answers without a client crate.
fn redis_ping(url: &str) -> String {
    let addr = url.trim_start_matches("redis://");
    let mut conn = std::net::TcpStream::connect(addr).expect("connect to the container's Redis");
    conn.write_all(b"PING\r\n").expect("send PING");
    let mut reply = [0u8; 7];
    conn.read_exact(&mut reply).expect("read the reply");
    String::from_utf8_lossy(&reply).trim().to_owned()
}

/// Runs [`probe`] in a child with the service variables removed, then `env` set. `capture`
/// false passes `--nocapture`, for probes whose answer is their output.
fn child(probe: &str, capture: bool, env: &[(&str, &str)]) -> Output {
    let exe = std::env::current_exe().expect("the test binary's path");
    let mut cmd = Command::new(exe);
    cmd.args(["--exact", "probe", "--test-threads=1"])
        .env(PROBE, probe)
        .env_remove("SESSION_REQUIRE_SERVICES")
        .env_remove("DATABASE_URL")
        .env_remove("REDIS_URL");
    if !capture {
        cmd.arg("--nocapture");
    }
    for (var, value) in env {
        cmd.env(var, value);
    }
    cmd.output().expect("run the probe")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A passing test's skip reaches the terminal despite the capture, and the binary's exit
/// prints one summary line with the count and the reason.
#[test]
fn a_skip_reaches_the_terminal_and_the_exit_summary_counts_it() {
    let out = child("skip", true, &[]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(
        out.status.success(),
        "the skipping test passes: {stdout}{stderr}"
    );
    assert!(stdout.contains("test probe ... ok"), "{stdout}");
    assert!(
        stderr.contains("SKIPPED probe: the probe has no server\n"),
        "the notice is on the terminal: {stderr:?}"
    );
    let summaries: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("SKIPPED: "))
        .collect();
    assert_eq!(summaries.len(), 1, "one summary line: {stderr:?}");
    assert!(
        summaries[0].starts_with(
            "SKIPPED: 1 test of session-core/servers did not run: 1 × the probe has no server"
        ),
        "{}",
        summaries[0]
    );
}

/// Under `SESSION_REQUIRE_SERVICES=1` a missing server fails the test instead.
#[test]
fn a_required_server_that_is_missing_fails_the_test() {
    let out = child("skip", true, &[("SESSION_REQUIRE_SERVICES", "1")]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(!out.status.success(), "{stdout}{stderr}");
    assert!(
        stdout.contains("test probe ... FAILED") && stdout.contains("must not skip"),
        "{stdout}"
    );
    assert!(
        !stderr.contains("SKIPPED"),
        "nothing is counted as skipped: {stderr}"
    );
}

/// The environment URL is taken as it is, before any container.
#[test]
fn the_environment_url_comes_first() {
    let url = "postgres://someone@127.0.0.1:1/elsewhere";
    let out = child(
        "postgres",
        false,
        &[
            ("DATABASE_URL", url),
            ("DOCKER_HOST", "unix:///nonexistent/docker.sock"),
        ],
    );
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains(&format!("URL=Some({url:?})")), "{stdout}");
    assert!(!stderr.contains("SKIPPED"), "{stderr}");
}

/// With no URL and no engine, the test skips and the notice says what was missing.
#[test]
fn without_a_url_or_an_engine_the_skip_names_both() {
    let out = child(
        "postgres",
        false,
        &[("DOCKER_HOST", "unix:///nonexistent/docker.sock")],
    );
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("URL=None"), "{stdout}");
    assert!(
        stderr.contains("SKIPPED probe: no PostgreSQL server: DATABASE_URL is not set and "),
        "{stderr}"
    );
    let why = if cfg!(feature = "containers") {
        "no Docker engine answered at unix:///nonexistent/docker.sock"
    } else {
        "built without session-core's `containers` feature"
    };
    assert!(stderr.contains(why), "{stderr}");
}

/// With an engine and no URL, the binary's server runs in a container that answers, and the
/// container is gone once the binary has exited.
#[cfg(feature = "containers")]
#[tokio::test]
async fn a_container_serves_the_binary_and_is_removed_at_exit() {
    use testcontainers::bollard::Docker;

    let docker = match Docker::connect_with_defaults() {
        Ok(docker) if docker.ping().await.is_ok() => docker,
        _ => {
            skip_test("no Docker engine here to start a container in");
            return;
        }
    };
    let out = child("redis", false, &[]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{stdout}{stderr}");
    if stdout.contains("URL=None") {
        // The engine answered but could not start the image (no registry to pull from, no
        // local image named): the same visible skip every backend test gives then, which
        // SESSION_REQUIRE_SERVICES=1 turns into a failure.
        let why = format!("{stdout}{stderr}");
        let why = why
            .lines()
            .find(|line| line.starts_with("SKIPPED"))
            .unwrap_or("the child found no Redis server and said nothing about why");
        skip_test(&format!(
            "Docker answered, but the Redis container did not start: {why}"
        ));
        return;
    }
    assert!(stdout.contains("URL=Some(\"redis://127.0.0.1:"), "{stdout}");
    assert!(
        stdout.contains("REPLY=+PONG"),
        "the server answered: {stdout}"
    );
    let id = stderr
        .split("runs in container ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("the start notice names the container: {stderr}"));
    match docker.inspect_container(id, None).await {
        Err(testcontainers::bollard::errors::Error::DockerResponseServerError {
            status_code: 404,
            ..
        }) => {}
        other => panic!("container {id} is still there after the binary exited: {other:?}"),
    }
}
