/// CPU features that kernels may use. A plain value, so tests can force any
/// subset; [`super::Kernels::with_caps`] intersects it with what is detected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CpuCaps {
    pub avx2: bool,
    pub fma: bool,
    pub f16c: bool,
    /// AVX-512 F, BW, VL and VNNI together.
    pub avx512: bool,
    /// AVX-VNNI: 256-bit `vpdpbusd` byte dot products.
    pub avxvnni: bool,
    pub neon: bool,
    pub dotprod: bool,
}

impl CpuCaps {
    pub const NONE: Self =
        Self { avx2: false, fma: false, f16c: false, avx512: false, avxvnni: false, neon: false, dotprod: false };
    pub const ALL: Self =
        Self { avx2: true, fma: true, f16c: true, avx512: true, avxvnni: true, neon: true, dotprod: true };

    pub fn intersect(self, o: Self) -> Self {
        Self {
            avx2: self.avx2 && o.avx2,
            fma: self.fma && o.fma,
            f16c: self.f16c && o.f16c,
            avx512: self.avx512 && o.avx512,
            avxvnni: self.avxvnni && o.avxvnni,
            neon: self.neon && o.neon,
            dotprod: self.dotprod && o.dotprod,
        }
    }

    /// What this CPU and OS support. On x86-64 this reads CPUID and checks
    /// that the OS saves the YMM/ZMM state (XGETBV), without needing std.
    pub fn detect() -> Self {
        #[cfg(target_arch = "x86_64")]
        {
            super::x86_64::detect()
        }
        #[cfg(target_arch = "aarch64")]
        {
            // NEON is part of the aarch64 baseline; dotprod needs the OS's word,
            // which only a std build can ask for.
            #[cfg(any(feature = "std", test))]
            let dotprod = std::arch::is_aarch64_feature_detected!("dotprod");
            #[cfg(not(any(feature = "std", test)))]
            let dotprod = false;
            Self { neon: true, dotprod, ..Self::NONE }
        }
        #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
        {
            Self::NONE
        }
    }
}
