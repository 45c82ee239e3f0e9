//! A panic anywhere in the process (a handler, the worker, a spawned task) is an ERROR event of
//! the log, in the log's format, with its message and location — not a bare line on stderr that
//! a JSON log pipeline cannot parse. Apart from tests/it: the panic hook and the subscriber are process-wide.

use crate::common;

use common::Captured;
use serde_json::Value;

#[test]
fn a_panic_is_an_error_event_of_the_json_log_with_its_message_and_location() {
    let _alone = crate::globals();
    let buf = Captured::default();
    let writer = buf.clone();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .with_writer(move || writer.clone())
        .finish();
    tracing::subscriber::set_global_default(subscriber).unwrap();
    snapgate::telemetry::log_panics();

    let line = line!() + 1;
    let joined = std::thread::spawn(|| panic!("boom {}", 42)).join();
    assert!(joined.is_err(), "the thread panicked");
    let joined = std::thread::spawn(|| std::panic::panic_any("a static message")).join();
    assert!(joined.is_err());
    // The default hook again, so that a failure below (or of a later test) is seen on stderr.
    let _ = std::panic::take_hook();

    let text = buf.text();
    let events: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}")))
        .collect();
    assert_eq!(events.len(), 2, "{text}");
    for (e, message) in events.iter().zip(["boom 42", "a static message"]) {
        assert_eq!(e["level"], "ERROR", "{e}");
        assert_eq!(e["fields"]["message"], "panic", "{e}");
        assert_eq!(e["fields"]["panic"], message, "{e}");
    }
    assert_eq!(
        events[0]["fields"]["location"],
        format!("{}:{line}", file!()),
        "{}",
        events[0]
    );
}
