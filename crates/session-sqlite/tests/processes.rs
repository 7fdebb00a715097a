//! Several processes on one database file: creates of one key have exactly one winner, a
//! move of one session has exactly one winner, conditional saves from every process to one
//! counter lose no increment, and no process sees an error (cross-process lock waits are
//! `busy_timeout`'s). The race is `session_core::conformance::processes`; children are this
//! test binary run again.

mod common;

use session_core::conformance::processes::{self, Race};

#[test]
fn processes_racing_on_one_file_have_one_winner_each() {
    let dir = common::tempdir();
    processes::race(
        &Race::new(
            "processes_racing_on_one_file_have_one_winner_each",
            "SESSION_SQLITE_RACE_DIR",
        ),
        dir.path(),
        |dir| async move { common::open(&common::db_path(&dir)).await },
    );
}
