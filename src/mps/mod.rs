//! The MPS side: request signing (`sign`, where a signature is made), wire types (`wire`),
//! errors and their classification (`error`), the HTTP client (`client`).
pub mod client;
pub mod error;
pub mod sign;
pub mod wire;
