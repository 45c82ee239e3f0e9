//! The emulator's MPS error answer, [`Fault`]: an HTTP status, MPS's `Code` and `Message`. The
//! checks (authentication, job parameters, paging) return it; `rpc.rs` renders it as MPS's error
//! body (docs/mps/API.md §4.2). Not to be confused with `faults.rs`, the faults injected for tests.

/// An MPS error answer.
#[derive(Debug)]
pub struct Fault {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
}

impl Fault {
    pub fn bad(code: &'static str, message: impl Into<String>) -> Self {
        Self::status(400, code, message)
    }

    pub fn status(status: u16, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }
}
