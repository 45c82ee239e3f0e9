//! The MPS side: request signing (`sign`), wire types (`wire`), errors (`error`), the client (`client`).
pub mod sign;
