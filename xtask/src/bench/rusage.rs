//! Waiting for a child while reading its own peak resident set size.

use std::io;
use std::process::{Child, ExitStatus};

/// Waits for `child` to exit; returns its status and, where the platform
/// reports it, the child's peak RSS in bytes (from `wait4`'s `ru_maxrss`,
/// which is the child's own, unlike `getrusage(RUSAGE_CHILDREN)`'s maximum
/// over every child reaped so far).
#[cfg(unix)]
#[allow(
    unsafe_code,
    reason = "wait4 is the only way to get one child's own peak RSS"
)]
pub(crate) fn wait(child: Child) -> io::Result<(ExitStatus, Option<u64>)> {
    use std::os::unix::process::ExitStatusExt as _;

    let pid = libc::pid_t::try_from(child.id()).map_err(io::Error::other)?;
    let mut status: libc::c_int = 0;
    // SAFETY: `rusage` is a plain C struct of integers, for which all-zero
    // bytes are a valid value.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: `pid` is our own child, not reaped yet (`Child::wait` is
        // never called on it, and dropping a `Child` does not wait), and the
        // two pointers are to live, writable locals of the right types.
        let reaped = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
        if reaped == pid {
            break;
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
    drop(child);
    let max_rss = u64::try_from(usage.ru_maxrss).unwrap_or(0);
    // Linux and the BSDs report kibibytes, macOS bytes.
    let bytes = if cfg!(target_os = "macos") {
        max_rss
    } else {
        max_rss * 1024
    };
    Ok((ExitStatus::from_raw(status), Some(bytes)))
}

/// Waits for `child` to exit; the peak RSS is not measured on this platform.
#[cfg(not(unix))]
pub(crate) fn wait(mut child: Child) -> io::Result<(ExitStatus, Option<u64>)> {
    Ok((child.wait()?, None))
}

#[cfg(all(test, unix))]
mod tests {
    use std::process::Command;

    #[test]
    fn reports_exit_code_and_peak_rss() {
        let child = Command::new("sh")
            .args(["-c", "exit 3"])
            .spawn()
            .expect("sh starts");
        let (status, rss) = super::wait(child).expect("wait4 succeeds");
        assert_eq!(status.code(), Some(3));
        assert!(rss.is_some_and(|bytes| bytes > 0), "{rss:?}");
    }
}
