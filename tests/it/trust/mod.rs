//! The trust boundaries of issue 31: what `serve` exposes without credentials, what the local
//! engine may read, the one text rule, where webhooks may go and what their errors tell, and the
//! MPS-compatible endpoint's canonicalization and duplicates. Each test here was seen failing on
//! the code before its fix.

mod control_routes;
mod mps_endpoint;
mod text_rule;
mod webhook_addresses;
