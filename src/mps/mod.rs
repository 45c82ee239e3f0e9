//! The MPS side: request signing (`sign`, where a signature is made, MNS's included), its
//! verification (`verify`, where a signature is checked: the emulator and the MPS-compatible
//! endpoint), wire types (`wire`), errors and their classification (`error`), the HTTP client
//! (`client`), the MNS queue client (`mns`) and the job messages MPS publishes there
//! (`notification`), the mapping of a job to MPS's parameters (`params`), and what the worker
//! has seen of MPS's health (`health`).
pub mod client;
pub mod error;
pub mod health;
pub mod mns;
pub mod notification;
pub mod params;
pub mod sign;
pub mod verify;
pub mod wire;
