//! The OS-independent std shell of prima-rs: model mapping, the thread pool
//! that runs core's kernels, the ring transport, the C ABI and the `prima`
//! command line. Each per-OS crate (`host-linux`, …) implements [`os::Os`]
//! and is a thin binary over this one.

pub mod cli;
pub mod ffi;
pub mod forward;
pub mod generate;
pub mod gpu;
pub mod link;
pub mod mapped;
pub mod os;
pub mod pool;
pub mod prefetcher;
pub mod profiler;
pub mod ring;
#[cfg(feature = "server")]
pub mod server;
pub mod stream;

/// Lower-case hexadecimal, two digits a byte (keys, digests, cache names).
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The kernels for this CPU, with a one-line notice on stderr (once per
/// process) when it falls back to scalar code.
pub fn detect_kernels() -> prima_core::kernels::Kernels {
    use prima_core::kernels::{CpuCaps, Kernels};
    static NOTICE: std::sync::Once = std::sync::Once::new();
    let (allowed, unknown) = kernel_choice(std::env::var("PRIMA_KERNELS").ok().as_deref());
    let k = Kernels::with_caps(os::current().cpu_caps().intersect(allowed));
    NOTICE.call_once(|| {
        if let Some(value) = unknown {
            eprintln!("notice: PRIMA_KERNELS={value:?} is not scalar, avx2, avx2-vnni, neon or native; using native");
        }
        if let Some(why) = k.fallback_notice().filter(|_| allowed != CpuCaps::NONE) {
            eprintln!("notice: {why}");
        }
    });
    k
}

/// The CPU features `PRIMA_KERNELS` allows (for benchmarks and tests of one
/// kernel family on a CPU that has more), and the value when it names none.
fn kernel_choice(value: Option<&str>) -> (prima_core::kernels::CpuCaps, Option<String>) {
    use prima_core::kernels::CpuCaps;
    let all = CpuCaps::ALL;
    match value {
        None | Some("" | "native") => (all, None),
        Some("scalar") => (CpuCaps::NONE, None),
        Some("avx2") => (CpuCaps { avx512: false, avxvnni: false, ..all }, None),
        Some("avx2-vnni") => (CpuCaps { avx512: false, ..all }, None),
        Some("neon") => (CpuCaps { dotprod: false, ..all }, None),
        Some(other) => (all, Some(other.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::kernel_choice;
    use prima_core::kernels::{CpuCaps, Kernels};

    #[test]
    fn prima_kernels_narrows_the_kernel_family_and_names_unknown_values() {
        assert_eq!(kernel_choice(None), (CpuCaps::ALL, None));
        assert_eq!(Kernels::with_caps(kernel_choice(Some("scalar")).0).name(), "scalar");
        let avx2 = kernel_choice(Some("avx2")).0;
        assert!(avx2.avx2 && !avx2.avx512 && !avx2.avxvnni);
        let name = Kernels::with_caps(avx2).name();
        assert!(name == "x86_64-avx2" || !cfg!(target_arch = "x86_64") || !CpuCaps::detect().avx2, "{name}");
        assert_eq!(kernel_choice(Some("avx9")).1.as_deref(), Some("avx9"));
    }
}
