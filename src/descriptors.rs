//! File descriptors and memory maps: the resources that cap a thread-per-client
//! server before memory does (one descriptor per session; four memory maps
//! per session thread, under the kernel's `vm.max_map_count`).
//!
//! Each session holds one descriptor (its socket). At start the server raises
//! its soft open-files limit to the hard one and lowers its session cap to what
//! fits under it ([`fit_sessions`]), saying so. Should descriptors still run out
//! (other processes' files, a lower limit set later), `accept` fails with
//! EMFILE and the client would wait in the backlog without a word; a
//! [`SpareDescriptor`] kept open for that moment is closed to accept it, tell it
//! `Error: server busy`, and close it again.

use std::fs::File;
use std::io;

/// Descriptors kept for everything but sessions: stdio, the listener, the
/// database and its WAL/SHM files, the spare descriptor, a metrics listener,
/// and headroom for the server's own files (TLS files, a log).
pub const RESERVED_DESCRIPTORS: u64 = 64;

/// Raises the soft open-files limit to the hard one; returns the soft limit now
/// in force (`None` where it cannot be read).
pub fn raise_open_files_limit() -> Option<u64> {
    #[cfg(unix)]
    {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit/setrlimit with a valid, initialised struct.
        unsafe {
            if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
                return None;
            }
            if lim.rlim_cur < lim.rlim_max {
                let raised = libc::rlimit {
                    rlim_cur: lim.rlim_max,
                    rlim_max: lim.rlim_max,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                    lim.rlim_cur = lim.rlim_max;
                }
            }
        }
        Some(lim.rlim_cur)
    }
    #[cfg(not(unix))]
    {
        None
    }
}

/// The session cap that fits under `open_files` descriptors: `wanted`, or
/// fewer when the limit is lower (one descriptor per session, plus
/// [`RESERVED_DESCRIPTORS`]).
pub fn fit_sessions(wanted: usize, open_files: Option<u64>) -> usize {
    match open_files {
        Some(limit) => {
            let room = limit.saturating_sub(RESERVED_DESCRIPTORS).max(1);
            wanted.min(usize::try_from(room).unwrap_or(usize::MAX))
        }
        None => wanted,
    }
}

/// Memory maps each session thread holds: its stack and guard page, its
/// signal stack and guard page (measured: 62,131 maps at 15,517 threads).
pub const MAPS_PER_SESSION_THREAD: u64 = 4;
/// Memory maps kept for everything else (libraries, heap, the other threads).
pub const RESERVED_MAPS: u64 = 2_000;

/// The kernel's cap on one process's memory maps (`vm.max_map_count`), which
/// caps its threads before descriptors do on a default Linux (65,530 maps:
/// about 16,000 threads); `None` where it cannot be read.
pub fn max_map_count() -> Option<u64> {
    std::fs::read_to_string("/proc/sys/vm/max_map_count")
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// The session cap whose threads fit under `max_maps` memory maps.
pub fn fit_threads(wanted: usize, max_maps: Option<u64>) -> usize {
    match max_maps {
        Some(maps) => {
            let room = (maps.saturating_sub(RESERVED_MAPS) / MAPS_PER_SESSION_THREAD).max(1);
            wanted.min(usize::try_from(room).unwrap_or(usize::MAX))
        }
        None => wanted,
    }
}

/// A descriptor held in reserve, released to accept one connection when the
/// process has run out (EMFILE), so that connection hears why it is refused.
pub struct SpareDescriptor(Option<File>);

impl SpareDescriptor {
    pub fn new() -> Self {
        SpareDescriptor(File::open("/dev/null").ok())
    }

    /// Frees the spare descriptor for `use_it`, then takes it back.
    /// Returns false (and does nothing) when there was no spare to free.
    pub fn lend<R>(&mut self, use_it: impl FnOnce() -> R) -> Option<R> {
        let spare = self.0.take()?;
        drop(spare);
        let result = use_it();
        self.0 = File::open("/dev/null").ok();
        Some(result)
    }
}

impl Default for SpareDescriptor {
    fn default() -> Self {
        Self::new()
    }
}

/// True for "out of file descriptors" (per process or system-wide).
pub fn is_out_of_descriptors(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_fits_under_the_limit() {
        assert_eq!(fit_sessions(1024, Some(20_000)), 1024);
        assert_eq!(fit_sessions(30_000, Some(20_000)), 20_000 - 64);
        assert_eq!(fit_sessions(30_000, None), 30_000);
        assert_eq!(fit_sessions(10, Some(10)), 1);
    }

    #[test]
    fn the_cap_fits_under_the_memory_maps() {
        assert_eq!(fit_threads(1024, Some(65_530)), 1024);
        assert_eq!(fit_threads(30_000, Some(65_530)), (65_530 - 2_000) / 4);
        assert_eq!(fit_threads(30_000, None), 30_000);
        assert!(max_map_count().is_some_and(|m| m > 0), "readable on Linux");
    }

    #[test]
    fn the_soft_limit_is_raised_to_the_hard_one() {
        let soft = raise_open_files_limit().expect("readable on Linux");
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: as above.
        assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) }, 0);
        assert_eq!(soft, lim.rlim_cur);
        assert_eq!(lim.rlim_cur, lim.rlim_max);
    }

    #[test]
    fn a_spare_is_lent_and_taken_back() {
        let mut spare = SpareDescriptor::new();
        assert_eq!(spare.lend(|| 7), Some(7));
        assert_eq!(spare.lend(|| 8), Some(8), "taken back after the first use");
    }
}
