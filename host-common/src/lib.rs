//! The OS-independent std shell of prima-rs: model mapping, the thread pool
//! that runs core's kernels, and the `prima` command line. Each per-OS crate
//! (`host-linux`, …) is a thin binary over this one.

pub mod cli;
pub mod mapped;
pub mod pool;
pub mod profiler;
pub mod ring;
