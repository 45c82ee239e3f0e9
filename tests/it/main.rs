//! snapgate's integration tests: one test binary (one link, one process per `cargo test` run),
//! one module per area. The shared harness is [`common`] (`TestApp`, `Proc`, `V1Call`, the
//! per-test databases); media fixtures are in [`support`].
//!
//! Tests that install process-wide state (the metrics recorder, the panic hook) live in the
//! second binary, `tests/globals`. Everything here shares one process with threads running in
//! parallel: no test may set an environment variable, a global subscriber or a panic hook.

mod common;
mod support;

mod accept;
mod access;
mod api;
mod api_fuzz;
mod architecture;
mod archive;
mod big_answers;
mod bounded_reads;
mod caches;
mod cancel;
mod cli;
mod config_layers;
mod container_lint;
mod credentials;
mod delivery;
mod docs_examples;
mod emulator_faults;
mod emulator_wire;
mod engine;
mod exactly_once;
mod fair_delivery;
mod fuzz_corpus;
mod idempotency;
mod lifecycle;
mod limits;
mod list_indexes;
mod listeners;
mod migrations;
mod mns;
mod mps_client;
mod mps_compat;
mod multipart_uploads;
mod official_sdks;
mod oss_multipart;
mod oss_store;
mod otel;
mod output_pages;
mod outputs;
mod postgres_tls;
mod props;
mod quota;
mod regions;
mod replicas;
mod request_bodies;
mod secrets;
mod shutdown;
mod signing_vectors;
mod store_conformance;
mod trust;
mod upload_browser;
mod upload_resume;
mod uploads;
mod webhooks;
