//! snapgate: a gateway for Alibaba Cloud MPS snapshot jobs.
//!
//! Data flows one way, from the adapters down (docs/architecture.md draws it;
//! tests/it/architecture.rs keeps it true):
//! - `app`, `cli`: the composition root, which builds and wires every part.
//! - `http/`: adapters (REST, the MPS-compatible endpoint, OSS callbacks): parse, call one
//!   service, render.
//! - `services/`: the rules (jobs, presets, uploads, outputs, webhooks, keys, limits);
//!   `worker/`: claims jobs and sends them to MPS, polls, consumes MNS, delivers webhooks;
//!   `emulator/`: a local MPS + OSS + MNS with an ffmpeg engine. None imports another.
//! - `mps/`, `oss/`, `webhooks/`: signing and clients of the outside.
//! - `store/`: persistence (traits by concern, Postgres and SQLite backends).
//! - `crypto`, `signals`, `telemetry`; `config`; `domain/` (validated types, no I/O) and the
//!   small foundations (`clock`, `secret`, `cache`, `shutdown`, `metrics`).

pub mod app;
pub mod cache;
pub mod clock;
pub mod config;
pub mod credentials;
pub mod crypto;
pub mod domain;
pub mod emulator;
pub mod http;
pub mod listener;
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
