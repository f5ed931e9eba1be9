//! The seam through which core's kernels run on the host's threads.
//!
//! Core expresses work as `n` independent tasks (usually row ranges); the host
//! decides how to run them. Core itself never spawns.

/// Runs independent tasks, possibly concurrently.
pub trait Parallel: Sync {
    /// How many tasks can usefully run at once.
    fn threads(&self) -> usize;
    /// Calls `task(i)` exactly once for every `i` in `0..n_tasks` and returns
    /// when all calls have returned.
    fn run(&self, n_tasks: usize, task: &(dyn Fn(usize) + Sync));
}

/// Runs every task on the calling thread, in order.
#[derive(Debug, Clone, Copy, Default)]
pub struct Serial;

impl Parallel for Serial {
    fn threads(&self) -> usize {
        1
    }
    fn run(&self, n_tasks: usize, task: &(dyn Fn(usize) + Sync)) {
        for i in 0..n_tasks {
            task(i);
        }
    }
}

/// Splits `out` into `chunk`-sized pieces and runs `f(first_index, piece)` for
/// each, through `par`. Each task takes the next piece from a shared
/// iterator, so every piece is handed to exactly one task and the writes
/// are disjoint; the uncontended lock is only how safe code proves it, and
/// nothing is allocated.
pub fn for_each_chunk_mut<T: Send>(
    par: &dyn Parallel,
    out: &mut [T],
    chunk: usize,
    f: &(dyn Fn(usize, &mut [T]) + Sync),
) {
    let chunk = chunk.max(1);
    let n_tasks = out.len().div_ceil(chunk);
    let pieces = spin::Mutex::new(out.chunks_mut(chunk).enumerate());
    par.run(n_tasks, &|_| {
        let next = pieces.lock().next();
        if let Some((i, piece)) = next {
            f(i * chunk, piece);
        }
    });
}

/// A chunk size that gives each thread a few pieces of `n` items, in
/// multiples of `align` items.
pub fn chunk_size(n: usize, threads: usize, align: usize) -> usize {
    let per = n.div_ceil(threads.max(1) * 4).max(1);
    per.div_ceil(align) * align
}
