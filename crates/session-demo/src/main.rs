//! Runs the demo: `cargo run -p session-demo` (axum), or `cargo run -p session-demo -- --actix`
//! (the same pages on actix-web), then open http://127.0.0.1:3000.
//!
//! Environment: `PORT` (default 3000), `SESSION_STORE` (default `memory`),
//! `SESSION_SECURE_COOKIE=1` when serving behind HTTPS.

use std::process::ExitCode;

use session_demo::{actix_server, app};
use session_kit::StoreUrl;

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let actix = match std::env::args().nth(1).as_deref() {
        None => false,
        Some("--actix") => true,
        Some(other) => {
            eprintln!("session-demo: unknown argument {other:?} (the only one is --actix)");
            return ExitCode::FAILURE;
        }
    };
    let result = if actix {
        // actix-web runs on its own system (a runtime per worker thread).
        actix_web::rt::System::new().block_on(run(true))
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .map_err(Into::into)
            .and_then(|rt| rt.block_on(run(false)))
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("session-demo: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(actix: bool) -> Result<(), Box<dyn std::error::Error>> {
    let port: u16 = match std::env::var("PORT") {
        Ok(p) => p
            .parse()
            .map_err(|_| format!("PORT={p:?} is not a port number"))?,
        Err(_) => 3000,
    };
    let choice: StoreUrl = std::env::var("SESSION_STORE").unwrap_or_default().parse()?;
    let store = choice.open().await?;
    let secure = std::env::var("SESSION_SECURE_COOKIE").is_ok_and(|v| v == "1");
    let listener = std::net::TcpListener::bind(("127.0.0.1", port))?;
    let framework = if actix { "actix-web" } else { "axum" };
    println!(
        "sessions demo on http://{} ({framework}, store: {choice}); Ctrl-C stops it",
        listener.local_addr()?
    );
    if actix {
        // The server stops itself on Ctrl-C.
        actix_server(store, secure, listener)?.await?;
    } else {
        listener.set_nonblocking(true)?;
        let listener = tokio::net::TcpListener::from_std(listener)?;
        axum::serve(listener, app(store, secure)?)
            .with_graceful_shutdown(async {
                let _ = tokio::signal::ctrl_c().await;
            })
            .await?;
    }
    Ok(())
}
