//! The piped ring, sans-IO: the wire format and the per-device state machine.
//! The tokio transport that drives them lives in the host (issue 5).

pub mod node;
pub mod wire;
