//! Runs the demo: `cargo run -p session-demo`, then open http://127.0.0.1:3000.
//!
//! Environment: `PORT` (default 3000), `SESSION_STORE` (default `memory`),
//! `SESSION_SECURE_COOKIE=1` when serving behind HTTPS.

use std::process::ExitCode;

use session_demo::app;
use session_kit::StoreUrl;

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("session-demo: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let port: u16 = match std::env::var("PORT") {
        Ok(p) => p
            .parse()
            .map_err(|_| format!("PORT={p:?} is not a port number"))?,
        Err(_) => 3000,
    };
    let choice: StoreUrl = std::env::var("SESSION_STORE").unwrap_or_default().parse()?;
    let store = choice.open().await?;
    let secure = std::env::var("SESSION_SECURE_COOKIE").is_ok_and(|v| v == "1");
    let router = app(store, secure)?;
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    println!(
        "sessions demo on http://{} (store: {choice}); Ctrl-C stops it",
        listener.local_addr()?
    );
    axum::serve(listener, router)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
