//! The piped ring, sans-IO. So far: the wire format. The node state machine
//! that consumes it comes next (issue 5).

pub mod wire;
