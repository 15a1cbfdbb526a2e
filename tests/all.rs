//! One integration-test binary: every suite drives the built `ralph` binary in temporary git
//! repositories with a hermetic git environment and the scripted agent.

mod common;
mod suite;
