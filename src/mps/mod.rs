//! The MPS side: request signing (`sign`, where a signature is made), its verification
//! (`verify`, where a signature is checked: the emulator and the MPS-compatible endpoint),
//! wire types (`wire`), errors and their classification (`error`), the HTTP client (`client`).
pub mod client;
pub mod error;
pub mod sign;
pub mod verify;
pub mod wire;
