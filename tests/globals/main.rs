//! The tests that install process-wide state, apart from `tests/it` whose tests share a process:
//! [`metrics`] installs the metrics recorder and reads exact counts; [`panics`] installs a global
//! subscriber and the panic hook. They take [`GLOBALS`] so they never run at the same time: a
//! request of one would be counted or logged by the other.

#[path = "../it/common/mod.rs"]
mod common;

mod metrics;
mod panics;

/// Held for the whole of each test of this binary.
pub static GLOBALS: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// [`GLOBALS`], also after a test that held it failed.
pub fn globals() -> std::sync::MutexGuard<'static, ()> {
    GLOBALS.lock().unwrap_or_else(|e| e.into_inner())
}
