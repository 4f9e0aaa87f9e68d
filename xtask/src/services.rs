//! The services the tests need: an S3-compatible server (moto) and
//! PostgreSQL, for `cargo xtask test`, `ci` and `integration`; `bench`
//! starts moto ([`start_moto`]) and PostgreSQL ([`local_postgres`]) on
//! their own.
//!
//! [`start`] records each service's address in the [`TestEnv`]
//! (`TRAWL_TEST_S3_ENDPOINT`, `DATABASE_URL`) and returns a [`Services`]
//! guard; dropping the guard stops what was started here, whether the tests
//! passed, failed, or an error cut the run short. A service already given in
//! xtask's environment is used as it is and nothing is started for it.
//!
//! - **S3**: moto's server mode, installed once from PyPI with exact pins into
//!   a virtual environment in a cache folder outside the clone
//!   (`$TRAWL_CACHE_DIR`, else `$XDG_CACHE_HOME/trawl`, else
//!   `$HOME/.cache/trawl`), reused by every later run; started on a free
//!   loopback port and stopped by the guard. No bucket is created here: each
//!   test creates its own, and sets its own credentials.
//! - **PostgreSQL**: the machine's server on 127.0.0.1:5432 (user `postgres`),
//!   started with `pg_ctlcluster` when it is installed (Debian layout) but not
//!   running, and then left running.
//!
//! Only loopback addresses are used, and every wait is bounded in count and
//! time.

use std::ffi::OsString;
use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::cmd::{probe, run_step};
use crate::test_suite::TestEnv;

/// The variable naming the S3-compatible endpoint for the tests.
const S3_VAR: &str = "TRAWL_TEST_S3_ENDPOINT";

/// The variable naming the PostgreSQL database for the tests.
const POSTGRES_VAR: &str = "DATABASE_URL";

/// moto's version; [`moto_requirements`] pins it and its web server.
const MOTO_VERSION: &str = "5.2.5";

/// How long moto may take to answer after it is started.
const MOTO_READY_LIMIT: Duration = Duration::from_secs(30);

/// How long moto may take to exit after SIGTERM before it is killed.
const MOTO_STOP_LIMIT: Duration = Duration::from_secs(5);

/// Fresh ports tried when moto exits because its port was taken meanwhile.
const MOTO_PORT_ATTEMPTS: u32 = 3;

/// How long to wait for another xtask installing moto into the same cache.
const INSTALL_LOCK_LIMIT: Duration = Duration::from_secs(600);

/// Where the tests expect PostgreSQL.
const POSTGRES_PORT: u16 = 5432;

/// What is exported when the machine's PostgreSQL is used (trust auth).
const POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// How long PostgreSQL may take to answer after `pg_ctlcluster` started it.
const POSTGRES_READY_LIMIT: Duration = Duration::from_secs(30);

/// Where Debian keeps its PostgreSQL clusters, `<version>/<cluster>`.
const DEBIAN_CLUSTERS: &str = "/etc/postgresql";

/// Stops, on drop, the services [`start`] started; the ones it found running
/// are left alone.
#[must_use = "dropping the guard stops the services"]
pub(crate) struct Services {
    /// Held only for its `Drop`, which stops the server.
    _s3: Option<MotoServer>,
}

/// Makes PostgreSQL and the S3-compatible server available, records their
/// addresses in `env`, and returns the guard that stops what was started.
///
/// Fails with what to install or set when a service cannot be provided: the
/// tests need both.
pub(crate) fn start(root: &Path, env: &mut TestEnv) -> Result<Services> {
    // PostgreSQL first: it starts nothing that needs stopping, so a failure
    // here costs no moto start.
    postgres(env)?;
    let s3 = s3(root, env)?;
    Ok(Services { _s3: s3 })
}

/// A non-empty environment variable.
fn env_var(key: &str) -> Option<String> {
    std::env::var(key).ok().filter(|value| !value.is_empty())
}

// --- PostgreSQL ---------------------------------------------------------

fn postgres(env: &mut TestEnv) -> Result<()> {
    if let Some(url) = env_var(POSTGRES_VAR) {
        eprintln!("xtask: PostgreSQL: using {POSTGRES_VAR} from the environment");
        env.set(POSTGRES_VAR, url);
        return Ok(());
    }
    env.set(POSTGRES_VAR, local_postgres()?);
    Ok(())
}

/// The machine's PostgreSQL on 127.0.0.1:5432, started when it is installed
/// but not running (and then left running); returns its URL. `cargo xtask
/// bench` uses this alone, whatever `DATABASE_URL` says: its figures are
/// those of the local server, where it creates and drops databases of its
/// own.
pub(crate) fn local_postgres() -> Result<&'static str> {
    if postgres_answers() {
        eprintln!("xtask: PostgreSQL answers on 127.0.0.1:{POSTGRES_PORT}");
    } else {
        start_debian_cluster()?;
    }
    Ok(POSTGRES_URL)
}

/// Whether a PostgreSQL server accepts connections on 127.0.0.1:5432:
/// `pg_isready` when it is installed, else whether the port takes a TCP
/// connection.
fn postgres_answers() -> bool {
    match on_path("pg_isready") {
        Some(pg_isready) => probe(Command::new(pg_isready).args([
            "-q",
            "-t",
            "2",
            "-h",
            "127.0.0.1",
            "-p",
            &POSTGRES_PORT.to_string(),
        ])),
        None => {
            TcpStream::connect_timeout(&loopback(POSTGRES_PORT), Duration::from_millis(500)).is_ok()
        }
    }
}

/// Starts the installed Debian cluster `<newest version>/main`, and waits
/// until it answers.
///
/// The cluster is left running afterwards: it is the machine's service,
/// shared with whatever else uses it, not one this run owns.
fn start_debian_cluster() -> Result<()> {
    let ctl = on_path("pg_ctlcluster");
    let version = newest_main_cluster(Path::new(DEBIAN_CLUSTERS));
    let (Some(ctl), Some(version)) = (ctl, version) else {
        bail!(
            "PostgreSQL is needed by the tests and nothing answers on 127.0.0.1:{POSTGRES_PORT}: \
             install it (Debian: apt install postgresql) or set {POSTGRES_VAR}"
        );
    };
    eprintln!(
        "xtask: PostgreSQL does not answer on 127.0.0.1:{POSTGRES_PORT}: starting the installed \
         cluster {version}/main (it is left running afterwards)"
    );
    run_step(
        "services: start PostgreSQL",
        Command::new(ctl).args(["--skip-systemctl-redirect", &version, "main", "start"]),
    )
    .with_context(|| {
        format!(
            "could not start PostgreSQL {version}/main: start it yourself or set {POSTGRES_VAR}"
        )
    })?;
    if poll(POSTGRES_READY_LIMIT, Duration::from_millis(200), || {
        postgres_answers().then_some(())
    })
    .is_none()
    {
        bail!(
            "PostgreSQL {version}/main was started but does not answer on 127.0.0.1:{POSTGRES_PORT} \
             after {} s: see `pg_lsclusters` (another port?) and \
             /var/log/postgresql/postgresql-{version}-main.log, or set {POSTGRES_VAR}",
            POSTGRES_READY_LIMIT.as_secs()
        );
    }
    eprintln!("xtask: PostgreSQL {version}/main answers on 127.0.0.1:{POSTGRES_PORT}");
    Ok(())
}

/// The newest `<version>` under `dir` (Debian's `/etc/postgresql`) that has a
/// `main` cluster, compared numerically (`9.6` < `15`).
fn newest_main_cluster(dir: &Path) -> Option<String> {
    fs::read_dir(dir)
        .ok()?
        .filter_map(|entry| entry.ok())
        .filter(|entry| entry.path().join("main").is_dir())
        .filter_map(|entry| entry.file_name().into_string().ok())
        .filter_map(|name| {
            let key: Option<Vec<u32>> = name.split('.').map(|part| part.parse().ok()).collect();
            Some((key?, name))
        })
        .max()
        .map(|(_, name)| name)
}

/// The first `name` on `PATH` that is a file.
fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

// --- S3: moto -----------------------------------------------------------

fn s3(root: &Path, env: &mut TestEnv) -> Result<Option<MotoServer>> {
    if let Some(endpoint) = env_var(S3_VAR) {
        eprintln!("xtask: S3: using {S3_VAR}={endpoint} from the environment");
        env.set(S3_VAR, endpoint);
        return Ok(None);
    }
    let server = start_moto(root)?;
    env.set(S3_VAR, server.endpoint());
    Ok(Some(server))
}

/// Starts moto on a free loopback port, installing it first if needed, and
/// returns the guard that stops it; `cargo xtask bench` uses this alone,
/// without PostgreSQL, and always its own server (its figures are moto's).
pub(crate) fn start_moto(root: &Path) -> Result<MotoServer> {
    let cache = cache_dir(|key| std::env::var_os(key)).with_context(|| {
        format!(
            "no cache folder for moto: set TRAWL_CACHE_DIR, XDG_CACHE_HOME or HOME, or set {S3_VAR}"
        )
    })?;
    let venv = install_moto(&cache)?;
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .filter(|dir| !dir.is_empty())
        .map_or_else(|| root.join("target"), PathBuf::from);
    MotoServer::start(&venv, &target.join("xtask"))
}

/// The cache folder outside the clone: `$TRAWL_CACHE_DIR`, else
/// `$XDG_CACHE_HOME/trawl`, else `$HOME/.cache/trawl`; empty variables count
/// as unset, and a relative `XDG_CACHE_HOME` is ignored as the XDG spec says.
pub(crate) fn cache_dir(var: impl Fn(&str) -> Option<OsString>) -> Option<PathBuf> {
    let var = |key: &str| {
        var(key)
            .filter(|value| !value.is_empty())
            .map(PathBuf::from)
    };
    if let Some(dir) = var("TRAWL_CACHE_DIR") {
        return Some(dir);
    }
    if let Some(dir) = var("XDG_CACHE_HOME").filter(|dir| dir.is_absolute()) {
        return Some(dir.join("trawl"));
    }
    var("HOME").map(|home| home.join(".cache").join("trawl"))
}

/// What pip installs: moto's S3 and server extras, its web server pinned too.
fn moto_requirements() -> Vec<String> {
    vec![
        format!("moto[s3,server]=={MOTO_VERSION}"),
        "flask==3.1.3".to_owned(),
        "flask-cors==6.0.5".to_owned(),
    ]
}

/// The virtual environment's folder name: moto's version for the reader, a
/// hash of all the pins so that changing any of them installs afresh.
fn venv_name(requirements: &[String]) -> String {
    // FNV-1a: stable across Rust releases, unlike `DefaultHasher`.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in requirements.join("\n").bytes() {
        hash = (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
    }
    format!("moto-venv-{MOTO_VERSION}-{:08x}", hash >> 32)
}

/// Installs moto into `<cache>/moto-venv-…` unless a finished install is
/// there (its marker file is written last, so a half-finished one is redone);
/// returns the venv.
fn install_moto(cache: &Path) -> Result<PathBuf> {
    let requirements = moto_requirements();
    let name = venv_name(&requirements);
    let venv = cache.join(&name);
    let marker = venv.join("trawl-installed");
    if marker.is_file() {
        return Ok(venv);
    }
    fs::create_dir_all(cache).with_context(|| format!("creating {}", cache.display()))?;
    // Two runs installing into one venv would break it: one installs, the
    // other waits and then finds the marker.
    let _lock = lock(&cache.join(format!("{name}.lock")))?;
    if marker.is_file() {
        return Ok(venv);
    }
    if !probe(Command::new("python3").arg("--version")) {
        bail!(
            "python3 not found: the tests' S3-compatible server (moto) needs it: install python3 \
             with its venv module (Debian: apt install python3 python3-venv), or set {S3_VAR} to \
             a running S3-compatible server"
        );
    }
    if venv.exists() {
        eprintln!(
            "xtask: removing an unfinished moto install at {}",
            tilde(&venv)
        );
        fs::remove_dir_all(&venv).with_context(|| format!("removing {}", venv.display()))?;
    }
    eprintln!(
        "xtask: installing moto {MOTO_VERSION} into {} (first run only, ~60 s)",
        tilde(&venv)
    );
    let started = Instant::now();
    run_step(
        "services: create moto's venv",
        Command::new("python3").args(["-m", "venv"]).arg(&venv),
    )
    .context(
        "python3 could not create a virtual environment: install its venv module \
         (Debian: apt install python3-venv)",
    )?;
    run_step(
        "services: install moto",
        Command::new(venv.join("bin/pip"))
            .args(["install", "--disable-pip-version-check", "-q"])
            .args(&requirements),
    )
    .with_context(|| {
        format!(
            "pip could not install moto: PyPI must be reachable (or point PIP_INDEX_URL at a \
             mirror), or set {S3_VAR} to a running S3-compatible server"
        )
    })?;
    let mut pins = requirements.join("\n");
    pins.push('\n');
    fs::write(&marker, pins).with_context(|| format!("writing {}", marker.display()))?;
    eprintln!(
        "xtask: installed moto in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(venv)
}

/// Takes the exclusive lock on `path`, waiting a bounded time for another
/// holder; released when the file is dropped (or its process dies).
pub(crate) fn lock(path: &Path) -> Result<File> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    let step = Duration::from_millis(500);
    let locked = poll(INSTALL_LOCK_LIMIT, step, || match file.try_lock() {
        Ok(()) => Some(Ok(())),
        Err(TryLockError::WouldBlock) => None,
        Err(TryLockError::Error(err)) => Some(Err(err)),
    });
    match locked {
        Some(Ok(())) => Ok(file),
        Some(Err(err)) => Err(err).with_context(|| format!("locking {}", path.display())),
        None => bail!(
            "another xtask has held {} for {} s while installing a tool: is it stuck?",
            path.display(),
            INSTALL_LOCK_LIMIT.as_secs()
        ),
    }
}

/// A running `moto_server`; dropping it stops the process.
#[must_use = "dropping the server stops it"]
pub(crate) struct MotoServer {
    child: Child,
    port: u16,
}

/// How a starting server turned out.
enum Startup {
    Ready,
    Exited(ExitStatus),
    Silent,
}

impl MotoServer {
    /// Starts `moto_server` of `venv` on a free loopback port, its output in
    /// `<log_dir>/moto_server-<port>.log`, and waits until it answers HTTP.
    fn start(venv: &Path, log_dir: &Path) -> Result<Self> {
        fs::create_dir_all(log_dir).with_context(|| format!("creating {}", log_dir.display()))?;
        let program = venv.join("bin/moto_server");
        for attempt in 1..=MOTO_PORT_ATTEMPTS {
            let port = free_port()?;
            let log = log_dir.join(format!("moto_server-{port}.log"));
            let out = File::create(&log).with_context(|| format!("creating {}", log.display()))?;
            let child = Command::new(&program)
                .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .env("PYTHONUNBUFFERED", "1")
                .stdin(Stdio::null())
                .stdout(out.try_clone()?)
                .stderr(out)
                .spawn()
                .with_context(|| {
                    format!(
                        "could not start {}: delete {} to have it reinstalled",
                        program.display(),
                        venv.display()
                    )
                })?;
            // From here on, an early return stops the process.
            let mut server = MotoServer { child, port };
            match server.wait_ready() {
                Startup::Ready => {
                    eprintln!(
                        "xtask: moto_server {MOTO_VERSION} (pid {}) answers on {}, log {}",
                        server.child.id(),
                        server.endpoint(),
                        log.display()
                    );
                    return Ok(server);
                }
                Startup::Exited(_)
                    if attempt < MOTO_PORT_ATTEMPTS
                        && read_log(&log).contains("Address already in use") =>
                {
                    eprintln!("xtask: port {port} was taken meanwhile: trying another");
                }
                Startup::Exited(status) => bail!(
                    "moto_server exited with {status} before answering on port {port}; \
                     the end of {}:\n    {}",
                    log.display(),
                    log_tail(&log)
                ),
                Startup::Silent => bail!(
                    "moto_server did not answer on port {port} within {} s; the end of {}:\n    {}",
                    MOTO_READY_LIMIT.as_secs(),
                    log.display(),
                    log_tail(&log)
                ),
            }
        }
        bail!("moto_server: no free port after {MOTO_PORT_ATTEMPTS} attempts")
    }

    fn wait_ready(&mut self) -> Startup {
        let addr = loopback(self.port);
        poll(MOTO_READY_LIMIT, Duration::from_millis(100), || {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(Startup::Exited(status));
            }
            http_answers(addr).then_some(Startup::Ready)
        })
        .unwrap_or(Startup::Silent)
    }

    /// `http://127.0.0.1:PORT`.
    pub(crate) fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The server's process id (the benchmarks read its CPU time).
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        // Reaped already (it exited while starting): nothing to stop, and its
        // pid may belong to another process by now.
        if !matches!(self.child.try_wait(), Ok(None)) {
            return;
        }
        let pid = self.child.id();
        if terminate(&self.child) {
            let exited = poll(MOTO_STOP_LIMIT, Duration::from_millis(50), || {
                self.child.try_wait().ok().flatten()
            });
            if exited.is_some() {
                eprintln!("xtask: stopped moto_server (pid {pid})");
                return;
            }
        }
        // SIGKILL, then reap it.
        let killed = self.child.kill().and_then(|()| self.child.wait());
        match killed {
            Ok(_) => eprintln!(
                "xtask: moto_server (pid {pid}) did not stop on SIGTERM within {} s: killed it",
                MOTO_STOP_LIMIT.as_secs()
            ),
            Err(err) => eprintln!("xtask: warning: could not stop moto_server (pid {pid}): {err}"),
        }
    }
}

/// Asks `child` to exit with SIGTERM, so that it can close its socket and
/// flush its log; whether the signal was sent.
#[cfg(unix)]
#[allow(
    unsafe_code,
    reason = "std's Child::kill sends only SIGKILL; SIGTERM needs libc::kill"
)]
fn terminate(child: &Child) -> bool {
    let Ok(pid) = libc::pid_t::try_from(child.id()) else {
        return false;
    };
    // SAFETY: kill(2) reads and writes no memory of ours. `pid` is our child,
    // not reaped yet (the caller's `try_wait` saw it running, and only a
    // successful wait reaps it), so it cannot name another process.
    unsafe { libc::kill(pid, libc::SIGTERM) == 0 }
}

/// No SIGTERM on this platform: the caller falls back to `Child::kill`.
#[cfg(not(unix))]
fn terminate(_child: &Child) -> bool {
    false
}

// --- Probes and waits ---------------------------------------------------

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}

/// A loopback port nothing listens on right now (the OS picks it; another
/// process may take it before ours binds it, hence moto's retries).
fn free_port() -> Result<u16> {
    let listener =
        TcpListener::bind(loopback(0)).context("binding 127.0.0.1:0 to find a free port")?;
    Ok(listener.local_addr()?.port())
}

/// Whether an HTTP server answers `GET /` at `addr` with a status line,
/// within about two seconds.
fn http_answers(addr: SocketAddr) -> bool {
    let timeout = Duration::from_millis(500);
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, timeout) else {
        return false;
    };
    let request =
        format!("GET / HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n");
    if stream.set_read_timeout(Some(timeout)).is_err()
        || stream.set_write_timeout(Some(timeout)).is_err()
        || stream.write_all(request.as_bytes()).is_err()
    {
        return false;
    }
    // "HTTP/1.1 200": a few reads at most, each bounded by the timeout.
    let mut head = [0_u8; 12];
    let mut filled = 0;
    for _ in 0..3 {
        match stream.read(&mut head[filled..]) {
            Ok(0) | Err(_) => break,
            Ok(n) => filled += n,
        }
        if filled == head.len() {
            break;
        }
    }
    head[..filled].starts_with(b"HTTP/")
}

/// Calls `check` every `step` until it returns `Some`, which is returned, or
/// until `limit` has passed (`None`); at most `limit / step + 1` calls.
fn poll<T>(limit: Duration, step: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let start = Instant::now();
    let calls = limit.as_millis() / step.as_millis().max(1) + 1;
    for _ in 0..calls {
        if let Some(value) = check() {
            return Some(value);
        }
        if start.elapsed() >= limit {
            break;
        }
        std::thread::sleep(step);
    }
    None
}

fn read_log(path: &Path) -> String {
    fs::read(path)
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
        .unwrap_or_default()
}

/// The last lines of a log, indented for an error message.
fn log_tail(path: &Path) -> String {
    let text = read_log(path);
    let lines: Vec<&str> = text.lines().collect();
    if lines.is_empty() {
        return "(empty)".to_owned();
    }
    lines[lines.len().saturating_sub(20)..].join("\n    ")
}

/// `path` with the home folder shown as `~`.
pub(crate) fn tilde(path: &Path) -> String {
    match env_var("HOME").and_then(|home| path.strip_prefix(home).ok().map(Path::to_owned)) {
        Some(rest) => format!("~/{}", rest.display()),
        None => path.display().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::thread;

    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<OsString> + use<> {
        let map: BTreeMap<String, OsString> = pairs
            .iter()
            .map(|(key, value)| ((*key).to_owned(), OsString::from(value)))
            .collect();
        move |key| map.get(key).cloned()
    }

    #[test]
    fn cache_dir_prefers_trawl_then_xdg_then_home() {
        let all = [
            ("TRAWL_CACHE_DIR", "/t"),
            ("XDG_CACHE_HOME", "/x"),
            ("HOME", "/h"),
        ];
        assert_eq!(cache_dir(vars(&all)), Some(PathBuf::from("/t")));
        assert_eq!(cache_dir(vars(&all[1..])), Some(PathBuf::from("/x/trawl")));
        assert_eq!(
            cache_dir(vars(&all[2..])),
            Some(PathBuf::from("/h/.cache/trawl"))
        );
        assert_eq!(cache_dir(vars(&[])), None);
    }

    #[test]
    fn cache_dir_skips_empty_and_relative_xdg() {
        let env = [
            ("TRAWL_CACHE_DIR", ""),
            ("XDG_CACHE_HOME", "relative"),
            ("HOME", "/h"),
        ];
        assert_eq!(
            cache_dir(vars(&env)),
            Some(PathBuf::from("/h/.cache/trawl"))
        );
    }

    #[test]
    fn venv_name_changes_with_any_pin() {
        let pins = moto_requirements();
        let name = venv_name(&pins);
        assert!(
            name.starts_with(&format!("moto-venv-{MOTO_VERSION}-")),
            "{name}"
        );
        assert_eq!(name, venv_name(&pins), "stable");
        let mut other = pins.clone();
        other[1].push('1');
        assert_ne!(name, venv_name(&other));
    }

    #[test]
    fn free_port_is_bindable() {
        let port = free_port().expect("a free port");
        assert_ne!(port, 0);
        TcpListener::bind(loopback(port)).expect("the port is still free");
    }

    /// A one-connection server answering `reply` after reading the request.
    fn serve_once(reply: &'static [u8]) -> SocketAddr {
        let listener = TcpListener::bind(loopback(0)).expect("bind");
        let addr = listener.local_addr().expect("addr");
        thread::spawn(move || {
            let (mut stream, _) = listener.accept().expect("accept");
            stream
                .set_read_timeout(Some(Duration::from_secs(2)))
                .expect("timeout");
            let mut request = [0_u8; 1024];
            let _ = stream.read(&mut request);
            let _ = stream.write_all(reply);
        });
        addr
    }

    #[test]
    fn http_probe_sees_an_answering_server() {
        let addr = serve_once(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
        assert!(http_answers(addr));
    }

    #[test]
    fn http_probe_rejects_silence_and_non_http() {
        assert!(!http_answers(serve_once(b"")));
        assert!(!http_answers(serve_once(b"SSH-2.0-OpenSSH\r\n")));
        let closed = free_port().expect("a free port");
        assert!(!http_answers(loopback(closed)));
    }

    #[test]
    fn poll_is_bounded_and_returns_the_first_value() {
        let mut calls = 0;
        let start = Instant::now();
        let none: Option<()> = poll(Duration::from_millis(50), Duration::from_millis(10), || {
            calls += 1;
            None
        });
        assert_eq!(none, None);
        assert!(calls <= 6, "{calls} calls");
        assert!(start.elapsed() < Duration::from_secs(1));

        let mut n = 0;
        let third = poll(Duration::from_secs(5), Duration::from_millis(1), || {
            n += 1;
            (n == 3).then_some(n)
        });
        assert_eq!(third, Some(3));
    }

    #[test]
    fn newest_main_cluster_compares_versions_numerically() {
        let dir = std::env::temp_dir().join(format!("xtask-pg-{}", std::process::id()));
        for version in ["9.6", "15", "16"] {
            let sub = if version == "16" { "other" } else { "main" };
            fs::create_dir_all(dir.join(version).join(sub)).expect("mkdir");
        }
        fs::create_dir_all(dir.join("notes").join("main")).expect("mkdir");
        let newest = newest_main_cluster(&dir);
        fs::remove_dir_all(&dir).expect("cleanup");
        assert_eq!(newest.as_deref(), Some("15"));
        assert_eq!(newest_main_cluster(Path::new("/nonexistent/xtask")), None);
    }
}
