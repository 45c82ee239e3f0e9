//! The one rule that ties an MPS job to its gateway job: the MPS `UserData` of every job snapgate
//! submits is the gateway job id (36 characters: hex digits and hyphens, all of them characters
//! MPS documents for `UserData`). Reconciliation finds a lost submit on MPS by it, and status
//! answers are matched by it. The team's own `user_data` stays in snapgate's store and is shown
//! from there; it is never sent to MPS, so MPS is never sent characters it does not document.

use super::rules::MPS_USER_DATA_MAX;
use super::JobId;

/// Length of a hyphenated UUID.
pub const GATEWAY_ID_LEN: usize = 36;
/// Bytes of MPS `UserData` kept for the gateway id and a separator.
pub const USER_DATA_RESERVED: usize = GATEWAY_ID_LEN + 1;
/// The team's `user_data` limit: what would be left of MPS's `UserData` beside the gateway id.
pub const USER_DATA_MAX: usize = MPS_USER_DATA_MAX - USER_DATA_RESERVED;

/// The `UserData` sent to MPS for gateway job `id`.
pub fn for_mps(id: JobId) -> String {
    id.to_string()
}

/// The gateway job an MPS job belongs to, read from its `UserData`.
pub fn gateway_id(user_data: &str) -> Option<JobId> {
    JobId::parse(user_data.get(..GATEWAY_ID_LEN)?)
}

/// Whether an MPS job with this `UserData` is gateway job `id`.
pub fn belongs_to(user_data: &str, id: JobId) -> bool {
    gateway_id(user_data) == Some(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_only_documented_characters() {
        let id = JobId::new();
        let ud = for_mps(id);
        assert_eq!(ud.len(), GATEWAY_ID_LEN);
        assert!(ud.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-'));
        assert_eq!(gateway_id(&ud), Some(id));
        assert!(belongs_to(&format!("{ud}-older form with team data"), id));
        assert!(!belongs_to("not an id", id));
        assert!(!belongs_to(&for_mps(JobId::new()), id));
    }
}
