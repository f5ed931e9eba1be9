//! The OS-independent std shell of prima-rs: model mapping, the thread pool
//! that runs core's kernels, the ring transport, the C ABI and the `prima`
//! command line. Each per-OS crate (`host-linux`, …) implements [`os::Os`]
//! and is a thin binary over this one.

pub mod cli;
pub mod ffi;
pub mod generate;
pub mod link;
pub mod mapped;
pub mod os;
pub mod pool;
pub mod prefetcher;
pub mod profiler;
pub mod ring;
#[cfg(feature = "server")]
pub mod server;
pub mod speculative;
pub mod stream;

/// Lower-case hexadecimal, two digits a byte (keys, digests, cache names).
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The kernels for this CPU, with a one-line notice on stderr (once per
/// process) when it falls back to scalar code.
pub fn detect_kernels() -> prima_core::kernels::Kernels {
    static NOTICE: std::sync::Once = std::sync::Once::new();
    let k = prima_core::kernels::Kernels::with_caps(os::current().cpu_caps());
    if let Some(why) = k.fallback_notice() {
        NOTICE.call_once(|| eprintln!("notice: {why}"));
    }
    k
}
