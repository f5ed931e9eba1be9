//! What a device can do, as the profiler measures it and the scheduler and
//! the ring's join message consume it.
//!
//! The wire form is postcard with every integer fixed-width little-endian
//! and no `usize`, so a phone (32-bit) and a laptop (64-bit) read each
//! other's profiles. The first two bytes are the format version; a profile
//! from another version is refused by name, never misread. Lists and names
//! are bounded, so a hostile peer cannot make a reader allocate.

use core::fmt;
use heapless::{String, Vec};
use serde::{Deserialize, Serialize};

use crate::quant::GgmlType;

/// Integers as fixed-width little-endian bytes in binary formats (postcard),
/// and as plain numbers in human-readable ones (JSON profiles on disk).
mod fixed {
    macro_rules! fixed {
        ($t:ident) => {
            pub mod $t {
                use serde::{Deserialize, Deserializer, Serialize, Serializer};
                const N: usize = core::mem::size_of::<$t>();

                pub fn serialize<S: Serializer>(v: &$t, s: S) -> Result<S::Ok, S::Error> {
                    if s.is_human_readable() {
                        v.serialize(s)
                    } else {
                        v.to_le_bytes().serialize(s)
                    }
                }

                pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<$t, D::Error> {
                    if d.is_human_readable() {
                        $t::deserialize(d)
                    } else {
                        <[u8; N]>::deserialize(d).map($t::from_le_bytes)
                    }
                }
            }
        };
    }
    fixed!(u16);
    fixed!(u32);
    fixed!(u64);
}

/// The version this build writes and reads.
pub const PROFILE_VERSION: u16 = 2;

/// Most tensor types one profile measures.
pub const MAX_TYPES: usize = 16;

/// How the OS treats file-backed pages under memory pressure, which decides
/// what a layer window that does not fit costs (the scheduler's disk term).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum PageCacheClass {
    /// Clean mapped pages are dropped and re-read on demand (Linux, Android).
    Evicting,
    /// Pages are compressed before they are dropped (macOS).
    Compressing,
    /// Mapped views are trimmed from the working set (Windows).
    WorkingSetTrim,
    /// Unknown: the scheduler assumes the worst (no overlap).
    #[default]
    Unknown,
}

/// Matrix-vector throughput for one tensor type, with the kernels and
/// threads the device will really use.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TypeThroughput {
    #[serde(with = "fixed::u32")]
    pub ggml_type: u32,
    /// Floating-point operations per second (2 per weight per token).
    pub flops: f32,
}

/// A GPU the device can run layers on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GpuProfile {
    /// The adapter's name, cut to 32 bytes.
    pub name: String<32>,
    /// The API it is driven through (Vulkan, Metal, Dx12).
    pub backend: String<16>,
    #[serde(with = "fixed::u64")]
    pub vram_total_bytes: u64,
    /// What the GPU may hold of layers and their KV cache.
    #[serde(with = "fixed::u64")]
    pub vram_free_bytes: u64,
    /// Matrix-vector throughput for each type it computes (2 FLOPs per
    /// weight per token); a type it cannot compute is absent.
    pub types: Vec<TypeThroughput, MAX_TYPES>,
    /// Weight bytes its products read per second, at best.
    pub mem_read_bytes_per_s: f32,
    /// Its memory is the device's RAM (Apple silicon, integrated GPUs,
    /// software renderers): Halda counts its layers in the RAM budget once.
    #[serde(default)]
    pub unified: bool,
}

/// The link to one peer, as measured by a round-trip probe.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LinkProfile {
    pub rtt_s: f32,
    pub bytes_per_s: f32,
}

/// One device's measured capabilities.
/// `Default` is an unmeasured device: every figure zero, which Halda refuses.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct DeviceProfile {
    #[serde(with = "fixed::u16")]
    pub version: u16,
    /// A human name for logs and plans (host name or `--name`).
    pub name: String<32>,
    #[serde(with = "fixed::u16")]
    pub threads: u16,
    /// Kernel set the throughputs were measured with (`Kernels::name`).
    pub kernels: String<32>,
    pub cpu: Vec<TypeThroughput, MAX_TYPES>,
    pub mem_read_bytes_per_s: f32,
    /// Seconds to append one token's keys and values to one layer's cache.
    pub kv_write_s: f32,
    pub disk_seq_read_bytes_per_s: f32,
    pub disk_random_read_bytes_per_s: f32,
    #[serde(with = "fixed::u64")]
    pub ram_total_bytes: u64,
    /// What the OS says can be used without swapping (Linux `MemAvailable`,
    /// capped by any cgroup limit).
    #[serde(with = "fixed::u64")]
    pub ram_available_bytes: u64,
    #[serde(with = "fixed::u64")]
    pub swap_free_bytes: u64,
    pub page_cache: PageCacheClass,
    pub gpu: Option<GpuProfile>,
    pub link: Option<LinkProfile>,
}

/// Why a profile could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProfileError {
    /// Fewer bytes than the version field.
    Truncated,
    /// Written by a different format version.
    Version { found: u16, supported: u16 },
    /// The bytes after the version do not decode (the postcard error).
    Malformed(postcard::Error),
    /// Encoding failed (a bounded field overflowed).
    Encode(postcard::Error),
}

impl fmt::Display for ProfileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Truncated => f.write_str("device profile truncated: fewer than 2 bytes"),
            Self::Version { found, supported } => {
                write!(f, "device profile has format version {found}; this build reads version {supported}")
            }
            Self::Malformed(e) => write!(f, "device profile malformed: {e}"),
            Self::Encode(e) => write!(f, "device profile cannot be encoded: {e}"),
        }
    }
}

impl core::error::Error for ProfileError {}

/// The throughput `list` measured for `ty`, if it has it.
fn flops_of(list: &[TypeThroughput], ty: GgmlType) -> Option<f32> {
    list.iter().find(|t| t.ggml_type == ty.id()).map(|t| t.flops)
}

impl GpuProfile {
    /// Measured throughput for `ty`, if the GPU computes it.
    pub fn flops(&self, ty: GgmlType) -> Option<f32> {
        flops_of(&self.types, ty)
    }
}

impl DeviceProfile {
    /// Measured throughput for `ty`, if the profile has it.
    pub fn flops(&self, ty: GgmlType) -> Option<f32> {
        flops_of(&self.cpu, ty)
    }

    pub fn to_bytes(&self) -> Result<alloc::vec::Vec<u8>, ProfileError> {
        postcard::to_allocvec(self).map_err(ProfileError::Encode)
    }

    /// Decodes a profile, refusing other versions and trailing bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ProfileError> {
        let version = match bytes {
            [a, b, ..] => u16::from_le_bytes([*a, *b]),
            _ => return Err(ProfileError::Truncated),
        };
        if version != PROFILE_VERSION {
            return Err(ProfileError::Version { found: version, supported: PROFILE_VERSION });
        }
        match postcard::take_from_bytes::<Self>(bytes) {
            Ok((p, [])) => Ok(p),
            Ok(_) => Err(ProfileError::Malformed(postcard::Error::DeserializeBadEncoding)),
            Err(e) => Err(ProfileError::Malformed(e)),
        }
    }
}

/// A fixed profile for other modules' tests.
#[cfg(test)]
pub(crate) mod tests_support {
    use super::*;

    pub(crate) fn sample() -> DeviceProfile {
        let mut cpu = Vec::new();
        cpu.push(TypeThroughput { ggml_type: GgmlType::Q4_1.id(), flops: 3.5e10 }).unwrap();
        cpu.push(TypeThroughput { ggml_type: GgmlType::Q8_0.id(), flops: 4.0e10 }).unwrap();
        DeviceProfile {
            version: PROFILE_VERSION,
            name: String::try_from("laptop").unwrap(),
            threads: 2,
            kernels: String::try_from("x86_64-avx2").unwrap(),
            cpu,
            mem_read_bytes_per_s: 2.0e10,
            kv_write_s: 1.5e-7,
            disk_seq_read_bytes_per_s: 1.2e9,
            disk_random_read_bytes_per_s: 3.0e8,
            ram_total_bytes: 24 << 30,
            ram_available_bytes: 20 << 30,
            swap_free_bytes: 0,
            page_cache: PageCacheClass::Evicting,
            gpu: None,
            link: Some(LinkProfile { rtt_s: 2e-3, bytes_per_s: 1.25e7 }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::tests_support::sample;
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn round_trips_and_starts_with_the_version() {
        let mut p = sample();
        let bytes = p.to_bytes().unwrap();
        assert_eq!(&bytes[..2], &PROFILE_VERSION.to_le_bytes());
        assert_eq!(DeviceProfile::from_bytes(&bytes).unwrap(), p);
        assert_eq!(p.flops(GgmlType::Q4_1), Some(3.5e10));
        assert_eq!(p.flops(GgmlType::Q6_K), None);
        let mut types = Vec::new();
        types.push(TypeThroughput { ggml_type: GgmlType::Q4_K.id(), flops: 2.0e12 }).unwrap();
        p.gpu = Some(GpuProfile {
            name: String::try_from("Radeon 780M").unwrap(),
            backend: String::try_from("Vulkan").unwrap(),
            vram_total_bytes: 8 << 30,
            vram_free_bytes: 6 << 30,
            types,
            mem_read_bytes_per_s: 1.0e11,
            unified: true,
        });
        let gpu = DeviceProfile::from_bytes(&p.to_bytes().unwrap()).unwrap().gpu.unwrap();
        assert_eq!((gpu.flops(GgmlType::Q4_K), gpu.flops(GgmlType::Q4_0)), (Some(2.0e12), None));
        assert_eq!(gpu.backend.as_str(), "Vulkan");
    }

    /// The encoding is pinned: integers fixed-width little-endian, so 32- and
    /// 64-bit builds (and big-endian ones) write the same bytes.
    #[test]
    fn integers_are_fixed_width_little_endian() {
        let bytes = sample().to_bytes().unwrap();
        let ram = (20u64 << 30).to_le_bytes();
        assert!(bytes.windows(8).any(|w| w == ram), "available RAM not stored as 8 LE bytes");
        let threads_at = 2 + 1 + "laptop".len();
        assert_eq!(&bytes[threads_at..threads_at + 2], &2u16.to_le_bytes());
    }

    #[test]
    fn refuses_other_versions_truncation_and_trailing_bytes() {
        let mut bytes = sample().to_bytes().unwrap();
        assert_eq!(DeviceProfile::from_bytes(&bytes[..1]), Err(ProfileError::Truncated));
        assert!(matches!(DeviceProfile::from_bytes(&bytes[..bytes.len() - 1]), Err(ProfileError::Malformed(_))));
        bytes.push(0);
        assert!(matches!(DeviceProfile::from_bytes(&bytes), Err(ProfileError::Malformed(_))));
        bytes[0] = 9;
        assert_eq!(
            DeviceProfile::from_bytes(&bytes),
            Err(ProfileError::Version { found: 9, supported: PROFILE_VERSION })
        );
    }

    proptest! {
        /// Hostile bytes after a valid version give an error, never a panic.
        #[test]
        fn random_bytes_never_panic(tail in proptest::collection::vec(any::<u8>(), 0..300)) {
            let mut bytes = PROFILE_VERSION.to_le_bytes().to_vec();
            bytes.extend(tail);
            let _ = DeviceProfile::from_bytes(&bytes);
        }
    }
}
