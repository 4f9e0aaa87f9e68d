//! Waiting for a child while reading its own peak resident set size, and
//! reading a running process's CPU time.

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

/// The CPU time (user and system, all its threads, exited ones included)
/// process `pid` has used so far, from `/proc/PID/stat`; `None` off Linux
/// or when it cannot be read.
#[cfg(target_os = "linux")]
#[allow(
    unsafe_code,
    reason = "sysconf is the only way to learn the clock tick of /proc's times"
)]
pub(crate) fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // SAFETY: sysconf reads no memory of ours and has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    cpu_ticks(&stat).map(|t| t as f64 / ticks.max(1) as f64)
}

/// Reading CPU time is not supported on this platform.
#[cfg(not(target_os = "linux"))]
pub(crate) fn cpu_seconds(_pid: u32) -> Option<f64> {
    None
}

/// `utime + stime` of a `/proc/PID/stat` line, in clock ticks: fields 14 and
/// 15, counted after the command name, which is in parentheses and may hold
/// spaces and parentheses itself.
#[cfg_attr(not(target_os = "linux"), allow(dead_code, reason = "Linux only"))]
fn cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    // `rest` starts at field 3 (the state).
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
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

    #[test]
    fn reads_cpu_ticks_past_an_odd_command_name() {
        let stat = "42 (a) b (c) S 1 42 42 0 -1 4194560 100 0 0 0 7 3 0 0 20 0 1 0 9 0 0";
        assert_eq!(super::cpu_ticks(stat), Some(10));
        assert_eq!(super::cpu_ticks("42 (x) S 1"), None);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn reads_our_own_cpu_time() {
        let spent = super::cpu_seconds(std::process::id());
        assert!(spent.is_some_and(|s| s >= 0.0), "{spent:?}");
    }
}
