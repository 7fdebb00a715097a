//! Project automation. `cargo xtask help` lists the tasks.

mod images;

use std::process::{Command, ExitCode};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let task = args.first().map(String::as_str).unwrap_or("help");
    let result = match task {
        "ci" => ci(),
        "test" => test(),
        "bench" => bench(&args[1..]),
        "images" => images::images(),
        _ => {
            eprintln!(
                "usage: cargo xtask <task>\n\n  ci     fmt, clippy, tests and docs, as .ci/run does\n  test   the test suite (the README's test command)\n  bench  the benchmark harness; extra args go to the bench binary\n  images build (or reuse) the local PostgreSQL, Redis and MariaDB images for container tests"
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

fn ci() -> Result<(), String> {
    let cargo = cargo();
    run(&cargo, &["fmt", "--all", "--check"], &[])?;
    run(
        &cargo,
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
    test()?;
    run(
        &cargo,
        &[
            "doc",
            "--workspace",
            "--no-deps",
            "--all-features",
            "--locked",
        ],
        &[("RUSTDOCFLAGS", "-D warnings")],
    )
}

fn bench(extra: &[String]) -> Result<(), String> {
    let mut args = vec![
        "run",
        "--release",
        "--locked",
        "--manifest-path",
        "benches/Cargo.toml",
        "-p",
        "session-bench",
        "--",
    ];
    args.extend(extra.iter().map(String::as_str));
    run(&cargo(), &args, &[])
}
