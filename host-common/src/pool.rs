//! A persistent thread pool that runs core's tasks.

use prima_core::parallel::Parallel;
use rayon::prelude::*;

/// Runs core's tasks on a fixed set of threads, created once.
#[derive(Debug)]
pub struct Pool {
    pool: rayon::ThreadPool,
    threads: usize,
}

impl Pool {
    pub fn new(threads: usize) -> anyhow::Result<Self> {
        let threads = threads.max(1);
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("prima-worker-{i}"))
            .build()?;
        Ok(Self { pool, threads })
    }

    /// Runs `f` on one of the pool's threads, so the tasks it starts are
    /// shared out without a cross-thread hand-off each time.
    /// With one thread, `f` runs right here: a hand-off would only add a
    /// wake-up (which a ring pays on every window).
    pub fn enter<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        if self.threads == 1 {
            return f();
        }
        self.pool.install(f)
    }

    /// Threads in the pool (also `Parallel::threads`, without the trait import).
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// One thread per available core.
    pub fn default_threads() -> usize {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    }
}

impl Parallel for Pool {
    fn threads(&self) -> usize {
        self.threads
    }

    fn run(&self, n_tasks: usize, task: &(dyn Fn(usize) + Sync)) {
        if n_tasks <= 1 || self.threads == 1 {
            (0..n_tasks).for_each(task);
            return;
        }
        self.pool.install(|| (0..n_tasks).into_par_iter().for_each(task));
    }
}
