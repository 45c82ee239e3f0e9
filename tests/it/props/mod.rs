//! Property tests (proptest).
//!
//! - [`hostile_input`]: the validator, the ACS3 `Authorization` parser and the percent-encoder
//!   against arbitrary input;
//! - [`structured`]: structure-aware request bodies (valid by every rule, then one change);
//! - [`verify`]: the one verifier (`mps/verify.rs`) against the one signer (`mps/sign.rs`).

mod hostile_input;
mod structured;
mod verify;
