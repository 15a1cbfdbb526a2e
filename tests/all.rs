//! One integration-test binary: every suite drives the built `ralph` binary in temporary git
//! repositories with a hermetic git environment and the scripted agent.

// Tests and their support fail loudly by design.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod suite;
