//! `cargo xtask ci`: the one list of CI checks. `.ci/run` sets up the machine (services,
//! Docker, local images, tools) and calls it; the GitHub workflow calls it too.
//!
//! Each step is a function that fails on the first problem. `cargo xtask ci` runs them all in
//! order; `cargo xtask ci STEP…` runs the named ones; `cargo xtask ci --list` names them.
//! At the end it prints each step's time and the test summary line.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::{cargo, run};

type Step = fn() -> Result<Option<String>, String>;

/// The checks, in the order CI runs them: cheap ones first, so a formatting slip fails fast.
const STEPS: &[(&str, &str, Step)] = &[
    ("fmt", "cargo fmt --check, main and benches workspaces", fmt),
    ("clippy", "clippy -D warnings on the main workspace", clippy),
    (
        "benches",
        "clippy -D warnings on the benches workspace (builds it)",
        benches,
    ),
    (
        "deny",
        "cargo deny: licenses, bans, sources (+ advisories with SESSION_CI_ADVISORIES=1)",
        deny,
    ),
    (
        "workflows",
        "actionlint and zizmor on .github/workflows",
        workflows,
    ),
    (
        "core-deps",
        "session-core pulls in no database or cache driver",
        core_deps,
    ),
    (
        "package",
        "cargo package: every publishable crate packs, in dependency order (no build)",
        package,
    ),
    (
        "features",
        "cargo hack: every feature of session-kit alone, session-core's powerset; session-kit's tests without features",
        features,
    ),
    (
        "msrv",
        "cargo check on the rust-version toolchain (SESSION_CI_MSRV=1 installs it; without, skips visibly where it is missing)",
        msrv,
    ),
    (
        "test",
        "the README's test command: cargo test --workspace --all-features",
        test,
    ),
    (
        "containers",
        "the PostgreSQL, Redis and MySQL conformance suites through testcontainers, URLs unset",
        containers,
    ),
    ("docs", "cargo doc -D warnings", docs),
];

pub(crate) fn ci(args: &[String]) -> Result<(), String> {
    if args.iter().any(|a| a == "--list") {
        for (name, what, _) in STEPS {
            println!("{name:<11} {what}");
        }
        return Ok(());
    }
    for name in args {
        if !STEPS.iter().any(|(n, _, _)| n == name) {
            return Err(format!(
                "no step `{name}` (cargo xtask ci --list names them)"
            ));
        }
    }
    let started = Instant::now();
    let mut times = Vec::new();
    let mut summary = None;
    for (name, _, step) in STEPS {
        if !args.is_empty() && !args.iter().any(|a| a == name) {
            continue;
        }
        eprintln!("\n==> {name}");
        let t0 = Instant::now();
        let result = step();
        times.push(format!("{name}: {}s", t0.elapsed().as_secs()));
        match result {
            Ok(Some(line)) => summary = Some(line),
            Ok(None) => {}
            Err(e) => {
                print_times(&times, started);
                return Err(format!("step `{name}` failed: {e}"));
            }
        }
    }
    print_times(&times, started);
    if let Some(line) = summary {
        println!("{line}");
    }
    Ok(())
}

fn print_times(times: &[String], started: Instant) {
    eprintln!("\n==> timings");
    for t in times {
        eprintln!("{t}");
    }
    eprintln!("total: {}s", started.elapsed().as_secs());
}

const BENCHES: &str = "benches/Cargo.toml";

fn fmt() -> Result<Option<String>, String> {
    let cargo = cargo();
    run(&cargo, &["fmt", "--all", "--check"], &[])?;
    run(
        &cargo,
        &["fmt", "--all", "--check", "--manifest-path", BENCHES],
        &[],
    )?;
    Ok(None)
}

fn clippy() -> Result<Option<String>, String> {
    run(
        &cargo(),
        &[
            "clippy",
            "--workspace",
            "--all-targets",
            "--all-features",
            "--locked",
            "--",
            "-D",
            "warnings",
        ],
        &[],
    )?;
    Ok(None)
}

fn benches() -> Result<Option<String>, String> {
    run(
        &cargo(),
        &[
            "clippy",
            "--manifest-path",
            BENCHES,
            "--workspace",
            "--all-targets",
            "--locked",
            "--",
            "-D",
            "warnings",
        ],
        &[],
    )?;
    Ok(None)
}

fn deny() -> Result<Option<String>, String> {
    let mut args = vec!["deny", "--locked", "check"];
    if std::env::var("SESSION_CI_ADVISORIES").is_ok_and(|v| v == "1") {
        // Fetches the advisory database from the network.
        args.push("advisories");
    }
    args.extend(["licenses", "bans", "sources"]);
    run(&cargo(), &args, &[])?;
    Ok(None)
}

fn workflows() -> Result<Option<String>, String> {
    run("bash", &[".ci/lint-workflows"], &[])?;
    Ok(None)
}

fn core_deps() -> Result<Option<String>, String> {
    let tree = output(
        &cargo(),
        &[
            "tree",
            "--locked",
            "-p",
            "session-core",
            "--all-features",
            "-e",
            "normal",
            "--prefix",
            "none",
        ],
    )?;
    let drivers: Vec<&str> = tree
        .lines()
        .filter(|l| {
            let name = l.split_whitespace().next().unwrap_or("");
            ["sqlx", "redis", "deadpool"]
                .iter()
                .any(|d| name == *d || name.starts_with(&format!("{d}-")))
        })
        .collect();
    if drivers.is_empty() {
        Ok(None)
    } else {
        Err(format!(
            "session-core must not depend on a backend driver: {drivers:?}"
        ))
    }
}

fn package() -> Result<Option<String>, String> {
    // `--no-verify`: building each packed crate again from its tarball would double the
    // run's compile time; what packing checks (metadata, the README each crate's docs
    // include, path-only dev-dependencies where a versioned one would be a cycle, internal
    // dependencies resolved in order through a local registry) is what breaks.
    run(
        &cargo(),
        &[
            "package",
            "--workspace",
            "--locked",
            "--no-verify",
            "--exclude",
            "session-demo",
            "--exclude",
            "xtask",
        ],
        &[],
    )?;
    Ok(None)
}

fn features() -> Result<Option<String>, String> {
    let cargo = cargo();
    // Each feature of the facade on its own (its powerset is a thousand builds), and all
    // combinations of session-core's few.
    run(
        &cargo,
        &[
            "hack",
            "--each-feature",
            "--no-dev-deps",
            "check",
            "-p",
            "session-kit",
            "--locked",
        ],
        &[],
    )?;
    run(
        &cargo,
        &[
            "hack",
            "--feature-powerset",
            "--no-dev-deps",
            "check",
            "-p",
            "session-core",
            "--locked",
        ],
        &[],
    )?;
    // The tests that exist only where backend features are off (a store URL naming its
    // missing feature).
    run(
        &cargo,
        &[
            "test",
            "-p",
            "session-kit",
            "--no-default-features",
            "--lib",
            "--locked",
        ],
        &[],
    )?;
    Ok(None)
}

/// The `rust-version` of the workspace, read from the root manifest.
fn rust_version() -> Result<String, String> {
    let manifest = std::fs::read_to_string("Cargo.toml").map_err(|e| format!("Cargo.toml: {e}"))?;
    manifest
        .lines()
        .find_map(|l| {
            let (key, value) = l.split_once('=')?;
            (key.trim() == "rust-version").then(|| value.trim().trim_matches('"').to_owned())
        })
        .ok_or_else(|| "no rust-version in Cargo.toml".to_owned())
}

fn msrv() -> Result<Option<String>, String> {
    let version = rust_version()?;
    let toolchain = format!("+{version}");
    let installed = Command::new("rustup")
        .args(["run", &version, "cargo", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    let required = std::env::var("SESSION_CI_MSRV").is_ok_and(|v| v == "1");
    if !installed && required {
        // Where a toolchain can be downloaded (the GitHub workflow).
        run(
            "rustup",
            &["toolchain", "install", &version, "--profile", "minimal"],
            &[],
        )?;
    } else if !installed {
        eprintln!(
            "SKIPPED msrv: the Rust {version} toolchain is not installed (SESSION_CI_MSRV=1 installs it, as the workflow does)"
        );
        return Ok(None);
    }
    run(
        "cargo",
        &[
            &toolchain,
            "check",
            "--workspace",
            "--all-features",
            "--locked",
        ],
        &[],
    )?;
    Ok(None)
}

/// The README's test command. Prints (and returns) `tests: N passed, M failed`.
fn test() -> Result<Option<String>, String> {
    let (ok, log) = tee(
        &cargo(),
        &["test", "--workspace", "--all-features", "--locked"],
        &[],
        &[],
    )?;
    let (passed, failed) = count_results(&log);
    let line = format!("tests: {passed} passed, {failed} failed");
    println!("{line}");
    if !ok {
        return Err(format!("the tests failed ({line})"));
    }
    if passed == 0 {
        return Err("the test command ran no test".into());
    }
    Ok(Some(line))
}

/// The backend conformance suites once more, with the service URLs unset so each binary starts
/// its server in a container. A skip, or a binary that used no container, fails.
fn containers() -> Result<Option<String>, String> {
    let (ok, log) = tee(
        &cargo(),
        &[
            "test",
            "--locked",
            "-p",
            "session-postgres",
            "-p",
            "session-redis",
            "-p",
            "session-mysql",
            "--features",
            "session-postgres/containers,session-redis/containers,session-mysql/containers",
            "--test",
            "conformance",
        ],
        &[("SESSION_REQUIRE_SERVICES", "1")],
        &["DATABASE_URL", "REDIS_URL", "MYSQL_URL"],
    )?;
    if !ok {
        return Err("the container suites failed".into());
    }
    let skipped: Vec<&String> = log.iter().filter(|l| l.contains("SKIPPED")).collect();
    if !skipped.is_empty() {
        return Err(format!("the container step skipped tests: {skipped:?}"));
    }
    for server in ["PostgreSQL", "Redis", "MySQL"] {
        let marker = format!("session-core: {server} for this test binary runs in container");
        if !log.iter().any(|l| l.starts_with(&marker)) {
            return Err(format!(
                "the container step did not start a {server} container"
            ));
        }
    }
    let (passed, _) = count_results(&log);
    if passed < 100 {
        return Err(format!("the container step ran only {passed} tests"));
    }
    eprintln!("container step: {passed} tests passed, none skipped");
    Ok(None)
}

fn docs() -> Result<Option<String>, String> {
    run(
        &cargo(),
        &[
            "doc",
            "--workspace",
            "--no-deps",
            "--all-features",
            "--locked",
        ],
        &[("RUSTDOCFLAGS", "-D warnings")],
    )?;
    Ok(None)
}

/// Sums the `test result:` lines of cargo test's output.
fn count_results(log: &[String]) -> (u64, u64) {
    let (mut passed, mut failed) = (0, 0);
    for line in log.iter().filter(|l| l.starts_with("test result:")) {
        let words: Vec<&str> = line.split_whitespace().collect();
        for pair in words.windows(2) {
            let n: u64 = pair[0].parse().unwrap_or(0);
            match pair[1].trim_end_matches([';', ',']) {
                "passed" => passed += n,
                "failed" => failed += n,
                _ => {}
            }
        }
    }
    (passed, failed)
}

/// Runs a command, echoing its stdout and stderr as they come, and returns whether it
/// succeeded and every line it printed.
fn tee(
    program: &str,
    args: &[&str],
    envs: &[(&str, &str)],
    unset: &[&str],
) -> Result<(bool, Vec<String>), String> {
    eprintln!("$ {program} {}", args.join(" "));
    let mut command = Command::new(program);
    command
        .args(args)
        .envs(envs.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for var in unset {
        command.env_remove(var);
    }
    let mut child = command
        .spawn()
        .map_err(|e| format!("could not start {program}: {e}"))?;
    let lines = Arc::new(Mutex::new(Vec::new()));
    let mut readers = Vec::new();
    if let Some(out) = child.stdout.take() {
        readers.push(forward(out, Arc::clone(&lines), false));
    }
    if let Some(err) = child.stderr.take() {
        readers.push(forward(err, Arc::clone(&lines), true));
    }
    for reader in readers {
        let _ = reader.join();
    }
    let status = child
        .wait()
        .map_err(|e| format!("waiting for {program}: {e}"))?;
    let lines = std::mem::take(&mut *lines.lock().map_err(|_| "a reader panicked")?);
    Ok((status.success(), lines))
}

fn forward(
    stream: impl std::io::Read + Send + 'static,
    lines: Arc<Mutex<Vec<String>>>,
    to_stderr: bool,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            if to_stderr {
                let _ = writeln!(std::io::stderr(), "{line}");
            } else {
                let _ = writeln!(std::io::stdout(), "{line}");
            }
            if let Ok(mut lines) = lines.lock() {
                lines.push(line);
            }
        }
    })
}

/// A command's stdout, failing if it fails.
fn output(program: &str, args: &[&str]) -> Result<String, String> {
    eprintln!("$ {program} {}", args.join(" "));
    let out = Command::new(program)
        .args(args)
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("could not start {program}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{program} {} failed: {}",
            args.join(" "),
            out.status
        ));
    }
    String::from_utf8(out.stdout).map_err(|e| format!("{program}: {e}"))
}
