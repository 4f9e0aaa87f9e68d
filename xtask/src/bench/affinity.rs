//! Splitting the machine's cores between a server and its clients, so that a
//! benchmark run on one machine compares the clients as if the server ran on
//! another (a scanner's CPU time must not slow the server it is measured
//! against).
//!
//! A process's CPU affinity is inherited by the processes it starts: xtask
//! pins its own (single) thread to a set, starts a process, and restores its
//! affinity afterwards ([`Pinned`]). Linux only; elsewhere nothing is pinned.

use std::io;

/// The CPUs the calling thread may run on, in order; `None` where that is
/// unknown.
pub(crate) fn allowed() -> Option<Vec<usize>> {
    imp::allowed()
}

/// The CPUs split in two, the first half for the server (at least one) and
/// the rest for the clients; `None` with fewer than two CPUs.
pub(crate) fn split(cpus: &[usize]) -> Option<(Vec<usize>, Vec<usize>)> {
    if cpus.len() < 2 {
        return None;
    }
    let (server, clients) = cpus.split_at(cpus.len() / 2);
    Some((server.to_vec(), clients.to_vec()))
}

/// The calling thread pinned to a set of CPUs (and so every process it
/// starts meanwhile); dropping it restores the affinity it had before.
#[must_use = "dropping it restores the affinity at once"]
pub(crate) struct Pinned {
    before: Vec<usize>,
}

impl Pinned {
    /// Pins the calling thread to `cpus`.
    pub(crate) fn to(cpus: &[usize]) -> io::Result<Pinned> {
        let before = allowed().ok_or_else(|| io::Error::other("CPU affinity is not known"))?;
        imp::set(cpus)?;
        Ok(Pinned { before })
    }
}

impl Drop for Pinned {
    fn drop(&mut self) {
        if let Err(err) = imp::set(&self.before) {
            eprintln!("xtask: warning: could not restore the CPU affinity: {err}");
        }
    }
}

/// `0-3` style: the CPUs as ranges.
pub(crate) fn display(cpus: &[usize]) -> String {
    let mut parts = Vec::new();
    let mut i = 0;
    while i < cpus.len() {
        let mut j = i;
        while j + 1 < cpus.len() && cpus[j + 1] == cpus[j] + 1 {
            j += 1;
        }
        parts.push(if i == j {
            cpus[i].to_string()
        } else {
            format!("{}-{}", cpus[i], cpus[j])
        });
        i = j + 1;
    }
    parts.join(",")
}

#[cfg(target_os = "linux")]
#[allow(
    unsafe_code,
    reason = "sched_getaffinity and sched_setaffinity have no safe wrapper in std"
)]
mod imp {
    use std::io;
    use std::mem::{size_of, zeroed};

    pub(super) fn allowed() -> Option<Vec<usize>> {
        // SAFETY: `cpu_set_t` is a plain bitmask, for which all-zero bytes
        // are a valid (empty) value.
        let mut set: libc::cpu_set_t = unsafe { zeroed() };
        // SAFETY: pid 0 is the calling thread; the pointer and size are those
        // of a live, writable local of the right type.
        let rc = unsafe { libc::sched_getaffinity(0, size_of::<libc::cpu_set_t>(), &mut set) };
        if rc != 0 {
            return None;
        }
        let max = usize::try_from(libc::CPU_SETSIZE).ok()?;
        // SAFETY: every `cpu` is below `CPU_SETSIZE`, the set's capacity.
        Some(
            (0..max)
                .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) })
                .collect(),
        )
    }

    pub(super) fn set(cpus: &[usize]) -> io::Result<()> {
        let max = usize::try_from(libc::CPU_SETSIZE).unwrap_or(0);
        if cpus.is_empty() || cpus.iter().any(|&cpu| cpu >= max) {
            return Err(io::Error::other(format!("cannot pin to CPUs {cpus:?}")));
        }
        // SAFETY: as in `allowed`, all-zero bytes are an empty set.
        let mut set: libc::cpu_set_t = unsafe { zeroed() };
        for &cpu in cpus {
            // SAFETY: `cpu` was checked to be below `CPU_SETSIZE`.
            unsafe { libc::CPU_SET(cpu, &mut set) };
        }
        // SAFETY: pid 0 is the calling thread; the pointer and size are those
        // of a live local of the right type, only read.
        let rc = unsafe { libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set) };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }
}

#[cfg(not(target_os = "linux"))]
mod imp {
    use std::io;

    pub(super) fn allowed() -> Option<Vec<usize>> {
        None
    }

    pub(super) fn set(_cpus: &[usize]) -> io::Result<()> {
        Err(io::Error::other("CPU affinity is only set on Linux"))
    }
}

#[cfg(test)]
mod tests {
    use super::{display, split};

    #[test]
    fn splits_server_first_and_needs_two_cpus() {
        assert_eq!(split(&[0]), None);
        assert_eq!(split(&[0, 1]), Some((vec![0], vec![1])));
        assert_eq!(split(&[0, 1, 2]), Some((vec![0], vec![1, 2])));
        assert_eq!(split(&[2, 3, 5, 7]), Some((vec![2, 3], vec![5, 7])));
    }

    #[test]
    fn shows_ranges() {
        assert_eq!(display(&[0]), "0");
        assert_eq!(display(&[0, 1, 2, 3]), "0-3");
        assert_eq!(display(&[0, 1, 4, 6, 7]), "0-1,4,6-7");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn pinning_is_restored() {
        use super::{Pinned, allowed};

        // A test runs on a thread of its own: pinning it touches no other.
        let before = allowed().expect("affinity known on Linux");
        assert!(!before.is_empty());
        {
            let _pinned = Pinned::to(&before[..1]).expect("pin to one allowed CPU");
            assert_eq!(allowed().as_deref(), Some(&before[..1]));
        }
        assert_eq!(allowed(), Some(before));
    }
}
