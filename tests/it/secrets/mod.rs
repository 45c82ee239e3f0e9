//! Secrets never leak: three angles on one promise.
//!
//! - [`from_parts`]: apps built from parts (V1 signing), every secret a canary, logs at DEBUG;
//! - [`built_apps`]: apps made by `Application::build` from settings, the CLI, tokens in wrong places;
//! - [`emulator_key`]: the real binary's embedded emulator key never reaches its log.

mod built_apps;
mod emulator_key;
mod from_parts;
