//! MPS errors and their classification, by `Code` (not HTTP status: the docs disagree on
//! statuses, docs/mps/API.md §4.3).

use std::time::Duration;

use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// Safe to send again: MPS said so (throttling, unavailable) or the request never left.
    Retryable,
    /// MPS rejected the request; sending it again would fail again.
    Fatal,
    /// The request may have reached MPS and created a job: reconcile before any resubmission.
    OutcomeUnknown,
    /// MPS could not be reached at all (nothing was sent): an outage, not the job's fault.
    /// Dispatch pauses as a whole and jobs stay queued.
    Unreachable,
    /// MPS refused the gateway itself (its key, its signature, its clock): a misconfiguration,
    /// not the job's fault. Dispatch pauses, `/readyz` reports it, jobs stay queued.
    Gateway,
}

#[derive(Debug, Clone)]
pub struct MpsError {
    pub class: ErrorClass,
    pub code: String,
    pub message: String,
    pub http_status: Option<u16>,
    pub request_id: Option<String>,
    pub host_id: Option<String>,
    pub recommend: Option<String>,
    /// The error body as MPS sent it, when there was one.
    pub raw: Option<Value>,
    /// From `x-acs-retry-after` (milliseconds) on throttling answers.
    pub retry_after: Option<Duration>,
}

impl std::fmt::Display for MpsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)?;
        if let Some(r) = &self.request_id {
            write!(f, " (RequestId {r})")?;
        }
        Ok(())
    }
}

impl std::error::Error for MpsError {}

/// Synthetic codes for failures with no MPS answer.
pub const CONNECT_FAILED: &str = "Transport.ConnectFailed";
pub const OUTCOME_UNKNOWN: &str = "Transport.OutcomeUnknown";
pub const INVALID_RESPONSE: &str = "Transport.InvalidResponse";
/// No valid credential is left (the chain's refresh keeps failing and the token expired).
pub const CREDENTIALS_UNAVAILABLE: &str = "Credentials.Unavailable";

/// Classifies an MPS error code.
pub fn classify_code(code: &str) -> ErrorClass {
    match code {
        // MPS refused the request before doing anything, or it never left.
        "Throttling" | "ServiceUnavailable" | "TransientNetWorkError" => ErrorClass::Retryable,
        CONNECT_FAILED => ErrorClass::Unreachable,
        "SignatureDoesNotMatch"
        | "IncompleteSignature"
        | "InvalidAccessKeyId"
        | "InvalidAccessKeyId.NotFound"
        | "InvalidAccessKeyId.Inactive"
        | "Forbidden.AccessKeyDisabled"
        | "Forbidden.RAM"
        | "InvalidTimeStamp.Expired"
        | "InvalidTimeStamp.Format"
        | "IllegalTimestamp"
        | "InvalidSecurityToken.Expired"
        | "InvalidSecurityToken.Malformed"
        | "InvalidSecurityToken.MisMatchWithAccessKey"
        | CREDENTIALS_UNAVAILABLE => ErrorClass::Gateway,
        c if c.starts_with("Throttling.") => ErrorClass::Retryable,
        // Retried too, but only after a lookup: MPS may have done the work before failing
        // (docs/mps/API.md §4.3 warns about InternalError on Submit), and since every attempt carries a
        // fresh nonce, SignatureNonceUsed means this very request already arrived once.
        "InternalError" | "UnknownError" | "SignatureNonceUsed" | OUTCOME_UNKNOWN
        | INVALID_RESPONSE => ErrorClass::OutcomeUnknown,
        _ => ErrorClass::Fatal,
    }
}

impl MpsError {
    pub fn transport(code: &str, message: impl Into<String>) -> Self {
        Self {
            class: classify_code(code),
            code: code.to_string(),
            message: message.into(),
            http_status: None,
            request_id: None,
            host_id: None,
            recommend: None,
            raw: None,
            retry_after: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification_follows_the_code() {
        use ErrorClass::*;
        for (code, class) in [
            ("Throttling", Retryable),
            ("Throttling.User", Retryable),
            ("Throttling.Api", Retryable),
            ("ServiceUnavailable", Retryable),
            ("InternalError", OutcomeUnknown),
            ("UnknownError", OutcomeUnknown),
            ("TransientNetWorkError", Retryable),
            (CONNECT_FAILED, Unreachable),
            (OUTCOME_UNKNOWN, OutcomeUnknown),
            (INVALID_RESPONSE, OutcomeUnknown),
            ("SignatureDoesNotMatch", Gateway),
            ("IncompleteSignature", Gateway),
            ("SignatureNonceUsed", OutcomeUnknown),
            ("InvalidTimeStamp.Expired", Gateway),
            ("InvalidTimeStamp.Format", Gateway),
            ("IllegalTimestamp", Gateway),
            ("InvalidAccessKeyId.NotFound", Gateway),
            ("Forbidden.RAM", Gateway),
            ("Forbidden", Fatal),
            ("MissingParameter", Fatal),
            ("InvalidParameter", Fatal),
            ("InvalidParameter.JsonFormatInvalid", Fatal),
            ("InvalidParameter.ResourceNotFound", Fatal),
            ("InvalidParameter.UUIDFormatInvalid", Fatal),
            ("PermissionDenied.ResourceAccess", Fatal),
            ("UnsupportedOperation", Fatal),
            ("SnapshotTimeOut", Fatal),
            ("EntityNotExist.Role", Fatal),
        ] {
            assert_eq!(classify_code(code), class, "{code}");
        }
    }
}
