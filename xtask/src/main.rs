//! Project automation. `cargo xtask help` lists the tasks.

mod ci;
mod images;

use std::process::{Command, ExitCode};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let task = args.first().map(String::as_str).unwrap_or("help");
    let result = match task {
        "ci" => ci::ci(&args[1..]),
        "test" => test(),
        "bench" => bench("session-bench", &args[1..]),
        "httpbench" => bench("session-httpbench", &args[1..]),
        "images" => images::images(),
        _ => {
            eprintln!(
                "usage: cargo xtask <task>\n\n  ci [STEP…]  every CI check (.ci/run and the workflow call this); --list names the steps\n  test        the test suite (the README's test command)\n  bench       the store benchmark harness (benches/session-bench); extra args go to it\n  httpbench   the HTTP overhead benchmark (benches/session-httpbench); extra args go to it\n  images      build (or reuse) the local PostgreSQL, Redis and MariaDB images for container tests"
            );
            return if task == "help" {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            };
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask {task}: {e}");
            ExitCode::FAILURE
        }
    }
}

pub(crate) fn run(program: &str, args: &[&str], envs: &[(&str, &str)]) -> Result<(), String> {
    eprintln!("$ {program} {}", args.join(" "));
    let status = Command::new(program)
        .args(args)
        .envs(envs.iter().copied())
        .status()
        .map_err(|e| format!("could not start {program}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{program} {} failed: {status}", args.join(" ")))
    }
}

fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())
}

/// The README's test command: every crate, every feature, every test.
fn test() -> Result<(), String> {
    run(
        &cargo(),
        &["test", "--workspace", "--all-features", "--locked"],
        &[],
    )
}

/// Runs one of the benches workspace's binaries in release mode.
fn bench(package: &str, extra: &[String]) -> Result<(), String> {
    let mut args = vec![
        "run",
        "--release",
        "--locked",
        "--manifest-path",
        "benches/Cargo.toml",
        "-p",
        package,
        "--",
    ];
    args.extend(extra.iter().map(String::as_str));
    run(&cargo(), &args, &[])
}
