//! Bytes of resident memory per stored session, each target filled in a fresh process.

use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use session_core::BoxError;

use crate::session::Payload;
use crate::target::Target;

/// The argument that makes the binary a measuring child instead of the harness.
pub(crate) const CHILD_FLAG: &str = "--child-rss";

/// What one child measured.
#[derive(Debug, Clone)]
pub(crate) struct RssResult {
    pub(crate) target: &'static str,
    /// Bytes of session data each record held.
    pub(crate) data_len: usize,
    /// Whether the data was opaque bytes of that length instead of the sample session.
    pub(crate) opaque: bool,
    pub(crate) sessions: u64,
    pub(crate) before_kib: u64,
    pub(crate) after_kib: u64,
    pub(crate) fill_secs: f64,
}

impl RssResult {
    pub(crate) fn bytes_per_session(&self) -> f64 {
        (self.after_kib.saturating_sub(self.before_kib) * 1024) as f64 / self.sessions.max(1) as f64
    }
}

/// Resident set size of this process, from `/proc/self/status`.
fn vm_rss_kib() -> Result<u64, BoxError> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let line = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .ok_or("no VmRSS line in /proc/self/status")?;
    let kib = line.trim().trim_end_matches("kB").trim();
    Ok(kib.parse()?)
}

/// The child's side: build `target`, fill it with `sessions` sessions from one task, and
/// print the resident set size before and after on one line. With `opaque_len`, the encoded
/// session is replaced by that many opaque bytes (stores of encoded bytes never look inside).
pub(crate) fn child(
    target: &Target,
    sessions: u64,
    opaque_len: Option<usize>,
) -> Result<(), BoxError> {
    // One thread, so the allocator keeps one arena and the figure is the store's alone.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let mut payload = Payload::new()?;
        if let Some(len) = opaque_len {
            payload.encoded = vec![0x5a; len].into();
        }
        let payload = Arc::new(payload);
        let instance = (target.build)(payload, 0)
            .await?
            .ok_or("target unavailable")?;
        let before = vm_rss_kib()?;
        let start = Instant::now();
        let tally = instance.fill(0..sessions, 1).await;
        let secs = start.elapsed().as_secs_f64();
        if tally.errors > 0 || tally.conflicts > 0 {
            return Err(format!(
                "fill failed: {} errors, {} conflicts ({:?})",
                tally.errors, tally.conflicts, tally.first_error
            )
            .into());
        }
        let after = vm_rss_kib()?;
        println!("rss {before} {after} {sessions} {secs}");
        drop(instance);
        Ok(())
    })
}

/// The harness's side: run a child for `target` and read its line.
pub(crate) fn measure(
    target: &Target,
    sessions: u64,
    opaque_len: Option<usize>,
    session_len: usize,
) -> Result<RssResult, BoxError> {
    let exe = std::env::current_exe()?;
    let mut command = Command::new(exe);
    command.args([CHILD_FLAG, target.name, &sessions.to_string()]);
    if let Some(len) = opaque_len {
        command.arg(len.to_string());
    }
    let output = command.output()?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        return Err(format!(
            "child for {} failed ({}): {}{}",
            target.name,
            output.status,
            stdout,
            String::from_utf8_lossy(&output.stderr)
        )
        .into());
    }
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("rss "))
        .ok_or_else(|| format!("child for {} printed no result: {stdout}", target.name))?;
    let fields: Vec<&str> = line.split_whitespace().collect();
    let [before, after, n, secs] = fields.as_slice() else {
        return Err(format!("bad child line: {line}").into());
    };
    Ok(RssResult {
        target: target.name,
        data_len: opaque_len.unwrap_or(session_len),
        opaque: opaque_len.is_some(),
        sessions: n.parse()?,
        before_kib: before.parse()?,
        after_kib: after.parse()?,
        fill_secs: secs.parse()?,
    })
}
