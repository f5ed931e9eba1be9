//! One background thread per mapped file that reads ranges in, in the order
//! asked, so that a release never races a read of the same pages: a range
//! released while its read was still running would be mapped again behind
//! the release and stay resident (seen under load: a streaming run's peak
//! grew by a third).

use memmap2::Mmap;
use std::fs::File;
use std::ops::Range;
use std::sync::mpsc::{channel, Sender};
use std::sync::{Arc, Condvar, Mutex, PoisonError};

/// Ranges asked for and not yet read (the one being read included).
type Pending = Arc<(Mutex<Vec<Range<usize>>>, Condvar)>;

#[derive(Debug)]
pub struct Prefetcher {
    jobs: Sender<Range<usize>>,
    pending: Pending,
}

impl Prefetcher {
    /// Starts the thread; it ends when the prefetcher is dropped and its
    /// queue is done, holding the map until then.
    pub fn start(map: Arc<Mmap>, file: File) -> std::io::Result<Self> {
        let (jobs, queue) = channel::<Range<usize>>();
        let pending: Pending = Arc::default();
        let shared = Arc::clone(&pending);
        std::thread::Builder::new().name("prima-prefetch".into()).spawn(move || {
            for range in queue {
                // A failed hint costs speed, never correctness: the pages
                // fault in when touched.
                let _ = crate::os::current().prefetch(&map, &file, range.clone());
                let (list, done) = &*shared;
                let mut list = list.lock().unwrap_or_else(PoisonError::into_inner);
                if let Some(i) = list.iter().position(|r| *r == range) {
                    list.remove(i);
                }
                done.notify_all();
            }
        })?;
        Ok(Self { jobs, pending })
    }

    /// Queues `range` to be read in.
    pub fn request(&self, range: Range<usize>) {
        self.pending.0.lock().unwrap_or_else(PoisonError::into_inner).push(range.clone());
        if self.jobs.send(range.clone()).is_err() {
            self.forget(&range); // the thread is gone: nothing will read it
        }
    }

    fn forget(&self, range: &Range<usize>) {
        let mut list = self.pending.0.lock().unwrap_or_else(PoisonError::into_inner);
        list.retain(|r| r != range);
    }

    /// Waits until no read queued or running overlaps `range`.
    pub fn settle(&self, range: &Range<usize>) {
        let (list, done) = &*self.pending;
        let mut list = list.lock().unwrap_or_else(PoisonError::into_inner);
        while list.iter().any(|r| r.start < range.end && range.start < r.end) {
            list = done.wait(list).unwrap_or_else(PoisonError::into_inner);
        }
    }
}
