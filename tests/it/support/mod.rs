//! Test fixtures that are not part of the harness proper.

pub mod media;
