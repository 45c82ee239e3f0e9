//! snapgate: a gateway for Alibaba Cloud MPS snapshot jobs.
//!
//! Data flows one way: `http` → `domain` → `store` ← `worker` → `mps`.
//! - `http/`: the REST API (router, extractors, one file per resource).
//! - `domain/`: validated request types, no I/O.
//! - `store/`: persistence (one trait, Postgres and SQLite backends).
//! - `worker/`: the dispatcher (claims and submits jobs) and the status poller.
//! - `mps/`: request signing, the MPS RPC client and its wire types.
//! - `oss/`: OSS signing (V1, V4, PostObject policies, upload callbacks), for the gateway and the
//!   emulator's object store alike.
//! - `webhooks/`: signed webhooks to teams (endpoint rules, Standard Webhooks signing, the
//!   guarded client, the delivery worker): `http` → `webhooks` → `store`.
//! - `emulator/`: a local MPS that speaks the same wire protocol.

pub mod app;
pub mod cache;
pub mod clock;
pub mod config;
pub mod crypto;
pub mod domain;
pub mod emulator;
pub mod http;
pub mod metrics;
pub mod mps;
pub mod oss;
pub mod secret;
pub mod services;
pub mod shutdown;
pub mod signals;
pub mod store;
pub mod telemetry;
pub mod webhooks;
pub mod worker;
