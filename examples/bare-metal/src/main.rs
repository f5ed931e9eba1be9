//! prima-core with no operating system: the GGUF reader and the scalar
//! kernels run from flash on a Cortex-M4F, with a 64 KiB heap.

#![no_std]
#![no_main]

extern crate alloc;

use cortex_m_rt::entry;
use embedded_alloc::LlffHeap as Heap;
use panic_halt as _;
use prima_core::kernels::matmul::{matmul_f32, Matrix};
use prima_core::kernels::Kernels;
use prima_core::parallel::Serial;
use prima_core::Gguf;

#[global_allocator]
static HEAP: Heap = Heap::empty();

/// The model file, embedded in flash (written by build.rs).
static MODEL: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/tiny.gguf"));

#[entry]
fn main() -> ! {
    // SAFETY: runs once, first thing, before anything allocates.
    unsafe {
        embedded_alloc::init!(HEAP, 64 * 1024);
    }
    let result = run();
    loop {
        // Keep the result alive for a debugger; there is nowhere to print it.
        core::hint::black_box(&result);
        cortex_m::asm::wfi();
    }
}

/// `w · x` for the file's 2 x 32 matrix and an all-ones `x`.
fn run() -> Option<[f32; 2]> {
    let g = Gguf::parse(MODEL).ok()?;
    let info = g.tensor("w")?;
    let data = g.tensor_data(info);
    let w = Matrix { ty: info.ty, n_in: info.dims[0] as usize, n_out: info.dims[1] as usize, data };
    let y = matmul_f32(&Kernels::scalar(), &w, &[1.0; 32], &Serial);
    Some([y[0], y[1]])
}
