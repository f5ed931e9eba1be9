//! The macos shell of prima-rs. For now it re-exports the OS-independent std
//! shell (`prima-host`), which already maps files with memmap2 and runs the
//! thread pool portably; macos-specific prefetch hints, memory rules and CPU
//! detection arrive with the portability work (issue 6).

pub use prima_host::*;
