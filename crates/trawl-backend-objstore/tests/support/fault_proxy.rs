//! A byte-level, fault-injecting HTTP/1.1 proxy for tests against an
//! S3-compatible server.
//!
//! [`FaultProxy`] listens on `127.0.0.1` and sits between an HTTP client (the
//! object store's reqwest client, configured with [`FaultProxy::url`] as its
//! endpoint) and a real server on `127.0.0.1` (moto). Tests script faults with
//! [`FaultProxy::push`]: error statuses answered by the proxy itself, bodies
//! cut off mid-way, a slow first byte.
//!
//! # Why byte-level
//!
//! S3 requests are signed with AWS SigV4, which covers the method, the path,
//! the query and the signed headers (`host`, `x-amz-*`, and whatever else the
//! client had set when it signed). A proxy that parses and re-serialises the
//! request (re-encoding the path, reordering or re-casing headers, rewriting
//! `Host`) breaks the signature. This one forwards the request bytes as they
//! came, with one exception: it drops any `Connection` header of the client
//! (the client does not sign it) and adds `connection: close`. `Host` stays
//! the proxy's address, which is what the client signed.
//!
//! # One request per connection
//!
//! Every client connection carries exactly one request: the proxy adds
//! `connection: close` to the request it sends upstream and to the response
//! head it sends back, then closes both connections once the response is
//! through. The client therefore never reuses a connection, so the proxy needs
//! no HTTP framing of responses (it forwards until the upstream closes), and a
//! fault on one request cannot leak into the next. Request bodies must carry a
//! `Content-Length` (object_store's PUTs do); a chunked request body is
//! answered with 501 and not forwarded.
//!
//! Every connection has read and write timeouts ([`IO_TIMEOUT`]), so a stuck
//! test fails instead of hanging. Dropping the proxy stops accepting; the
//! connections in flight finish on their own threads.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::Duration;

/// Read and write timeout of every connection the proxy holds.
pub(crate) const IO_TIMEOUT: Duration = Duration::from_secs(30);

/// Timeout of the connection to the upstream server.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Largest request or response head the proxy accepts, in bytes.
const MAX_HEAD: usize = 64 * 1024;

/// How many interim (1xx) responses the proxy skips before the final one.
const MAX_INTERIM_RESPONSES: usize = 8;

/// After its response, how long the proxy keeps reading what the client still
/// sends before closing, so that closing does not reset the connection under
/// a response the client has not read yet.
const LINGER: Duration = Duration::from_secs(1);

/// At most this many bytes are discarded while lingering.
const LINGER_BYTES: u64 = 1 << 20;

/// Which requests a [`FaultRule`] applies to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Target {
    /// Every request.
    Any,
    /// A `GET` of one object: a path-style path with a key (`/bucket/key`)
    /// and no `list-type=` in the query. Ranged reads are included; `HEAD`
    /// is not.
    GetObject,
    /// A ListObjectsV2 request: the query contains `list-type=2`.
    ListObjects,
    /// A request whose path contains this string. The path is matched as
    /// the client sent it (percent-encoded), without the query.
    PathContains(String),
}

impl Target {
    fn matches(&self, request: &Request) -> bool {
        match self {
            Target::Any => true,
            Target::GetObject => {
                let has_key = request
                    .path()
                    .trim_start_matches('/')
                    .split_once('/')
                    .is_some_and(|(bucket, key)| !bucket.is_empty() && !key.is_empty());
                request.method == "GET" && has_key && !request.query().contains("list-type=")
            }
            Target::ListObjects => request.query().contains("list-type=2"),
            Target::PathContains(part) => request.path().contains(part.as_str()),
        }
    }
}

/// What the proxy does to a request a rule applies to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Fault {
    /// The proxy answers by itself and does not forward the request: status
    /// `code`, an S3-style XML error body
    /// (`<Error><Code>{s3_code}</Code><Message>..</Message></Error>`) with a
    /// `Content-Length`, and a `Retry-After` header when `retry_after` (in
    /// seconds) is set. The body is left out for a `HEAD`.
    Status {
        /// The HTTP status, 400 to 599.
        code: u16,
        /// Seconds sent as `Retry-After`, if any.
        retry_after: Option<u32>,
        /// The S3 error code: `SlowDown`, `ServiceUnavailable`,
        /// `InternalError`, ...
        s3_code: &'static str,
    },
    /// Forwards the response head and the first `after_body_bytes` body
    /// bytes, then closes the connection abruptly in both directions
    /// (`shutdown(Both)`). Std cannot set `SO_LINGER` to 0 on stable, so the
    /// client sees the connection end mid-body (an end of file before the
    /// `Content-Length` is reached), not a TCP reset.
    ResetMidBody {
        /// Body bytes forwarded before the close.
        after_body_bytes: usize,
    },
    /// Forwards the response head and the first `after_body_bytes` body
    /// bytes, then closes the connection cleanly (FIN), although the
    /// `Content-Length` promised more.
    TruncatedBody {
        /// Body bytes forwarded before the close.
        after_body_bytes: usize,
    },
    /// Forwards the request at once, then waits this long before sending the
    /// first byte of the response.
    SlowFirstByte(Duration),
}

/// A scripted fault: `fault` on the first `times` requests matching `target`.
///
/// Body byte counts are of the bytes after the response head as they are on
/// the wire (chunk framing included, should the upstream chunk its response).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct FaultRule {
    /// Which requests the rule applies to.
    pub(crate) target: Target,
    /// What happens to them.
    pub(crate) fault: Fault,
    /// How many matching requests the rule applies to before it is used up.
    pub(crate) times: usize,
}

impl FaultRule {
    /// A rule from its parts.
    pub(crate) fn new(target: Target, fault: Fault, times: usize) -> FaultRule {
        FaultRule {
            target,
            fault,
            times,
        }
    }

    /// Status `code` answered by the proxy, with the usual S3 error code for
    /// it (see [`s3_code_for`]) and no `Retry-After`.
    pub(crate) fn status(target: Target, code: u16, times: usize) -> FaultRule {
        let fault = Fault::Status {
            code,
            retry_after: None,
            s3_code: s3_code_for(code),
        };
        FaultRule::new(target, fault, times)
    }

    /// S3 throttling: 503 `SlowDown` with `Retry-After: retry_after_secs`.
    pub(crate) fn throttle(target: Target, retry_after_secs: u32, times: usize) -> FaultRule {
        let fault = Fault::Status {
            code: 503,
            retry_after: Some(retry_after_secs),
            s3_code: "SlowDown",
        };
        FaultRule::new(target, fault, times)
    }

    /// [`Fault::ResetMidBody`] after `after_body_bytes` body bytes.
    pub(crate) fn reset_mid_body(
        target: Target,
        after_body_bytes: usize,
        times: usize,
    ) -> FaultRule {
        FaultRule::new(target, Fault::ResetMidBody { after_body_bytes }, times)
    }

    /// [`Fault::TruncatedBody`] after `after_body_bytes` body bytes.
    pub(crate) fn truncated_body(
        target: Target,
        after_body_bytes: usize,
        times: usize,
    ) -> FaultRule {
        FaultRule::new(target, Fault::TruncatedBody { after_body_bytes }, times)
    }

    /// [`Fault::SlowFirstByte`] of `delay`.
    pub(crate) fn slow_first_byte(target: Target, delay: Duration, times: usize) -> FaultRule {
        FaultRule::new(target, Fault::SlowFirstByte(delay), times)
    }
}

/// The S3 error code [`FaultRule::status`] sends with `code`.
pub(crate) fn s3_code_for(code: u16) -> &'static str {
    match code {
        400 => "InvalidRequest",
        403 => "AccessDenied",
        404 => "NoSuchKey",
        429 => "SlowDown",
        501 => "NotImplemented",
        503 => "ServiceUnavailable",
        _ => "InternalError",
    }
}

/// The proxy; see the module doc. Dropping it stops accepting connections.
pub(crate) struct FaultProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

/// State shared by the proxy handle, its accept thread and its connections.
#[derive(Default)]
struct Shared {
    /// Rules not used up, in the order they were pushed; `times` is what is
    /// left of each.
    rules: Mutex<Vec<FaultRule>>,
    requests: AtomicUsize,
    faults: AtomicUsize,
    stop: AtomicBool,
}

impl Shared {
    fn rules(&self) -> MutexGuard<'_, Vec<FaultRule>> {
        self.rules.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The fault for `request`, if a rule applies; uses one of its `times`.
    fn take_fault(&self, request: &Request) -> Option<Fault> {
        let mut rules = self.rules();
        let i = rules.iter().position(|rule| rule.target.matches(request))?;
        let fault = rules[i].fault.clone();
        rules[i].times -= 1;
        if rules[i].times == 0 {
            rules.remove(i);
        }
        self.faults.fetch_add(1, Ordering::SeqCst);
        Some(fault)
    }
}

impl FaultProxy {
    /// Binds `127.0.0.1` on a free port and starts proxying to `upstream`.
    pub(crate) fn start(upstream: SocketAddr) -> io::Result<FaultProxy> {
        let listener = TcpListener::bind(("127.0.0.1", 0))?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::default());
        let accept = {
            let shared = Arc::clone(&shared);
            thread::Builder::new()
                .name("fault-proxy-accept".into())
                .spawn(move || accept_loop(&listener, &shared, upstream))?
        };
        Ok(FaultProxy {
            addr,
            shared,
            accept: Some(accept),
        })
    }

    /// The address the proxy listens on.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`, the endpoint to give the client.
    pub(crate) fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Appends `rule`. For each request the rules are consulted in the order
    /// they were pushed; the first that matches and is not used up applies.
    ///
    /// # Panics
    ///
    /// If `rule.times` is 0, or a [`Fault::Status`] code is not in 400..=599.
    pub(crate) fn push(&self, rule: FaultRule) {
        assert!(
            rule.times > 0,
            "a fault rule must apply at least once: {rule:?}"
        );
        if let Fault::Status { code, .. } = rule.fault {
            assert!((400..=599).contains(&code), "not an error status: {rule:?}");
        }
        self.shared.rules().push(rule);
    }

    /// Removes every rule.
    pub(crate) fn clear(&self) {
        self.shared.rules().clear();
    }

    /// Requests seen so far (with or without a fault), counted once their
    /// head is read, before any of the response is sent.
    pub(crate) fn requests(&self) -> usize {
        self.shared.requests.load(Ordering::SeqCst)
    }

    /// Requests a rule applied to so far.
    pub(crate) fn faults_injected(&self) -> usize {
        self.shared.faults.load(Ordering::SeqCst)
    }

    /// Rules not used up yet.
    pub(crate) fn pending_rules(&self) -> usize {
        self.shared.rules().len()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Unblock `accept` with a connection of our own. Should that fail,
        // leave the thread be rather than hang: it ends at its next
        // connection.
        let woken = TcpStream::connect_timeout(&self.addr, CONNECT_TIMEOUT).is_ok();
        if let Some(accept) = self.accept.take()
            && woken
        {
            let _ = accept.join();
        }
    }
}

fn accept_loop(listener: &TcpListener, shared: &Arc<Shared>, upstream: SocketAddr) {
    for conn in listener.incoming() {
        if shared.stop.load(Ordering::SeqCst) {
            break;
        }
        match conn {
            Ok(client) => {
                let shared = Arc::clone(shared);
                let spawned = thread::Builder::new()
                    .name("fault-proxy-conn".into())
                    .spawn(move || {
                        if let Err(e) = serve(&shared, client, upstream) {
                            eprintln!("fault proxy: {e}");
                        }
                    });
                if let Err(e) = spawned {
                    eprintln!("fault proxy: cannot spawn a connection thread: {e}");
                }
            }
            // Out of file descriptors and the like: do not spin.
            Err(_) => thread::sleep(Duration::from_millis(10)),
        }
    }
}

/// A parsed request head; `head` keeps its exact bytes.
struct Request {
    head: Vec<u8>,
    method: String,
    /// The request target as sent: path and query.
    target: String,
    content_length: u64,
    chunked: bool,
    expect_continue: bool,
}

impl Request {
    /// `None` if the request line is malformed or a header is unreadable.
    fn parse(head: Vec<u8>) -> Option<Request> {
        let mut lines = head_lines(&head);
        let request_line = String::from_utf8_lossy(lines.next()?);
        let mut parts = request_line.split(' ');
        let method = parts.next().filter(|m| !m.is_empty())?.to_owned();
        let target = parts.next().filter(|t| !t.is_empty())?.to_owned();
        parts.next().filter(|v| v.starts_with("HTTP/1."))?;
        let mut content_length = 0;
        let mut chunked = false;
        let mut expect_continue = false;
        for line in lines {
            let (name, value) = split_header(line)?;
            let value = String::from_utf8_lossy(value);
            if name.eq_ignore_ascii_case(b"content-length") {
                content_length = value.parse().ok()?;
            } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
                chunked |= !value.eq_ignore_ascii_case("identity");
            } else if name.eq_ignore_ascii_case(b"expect") {
                expect_continue |= value.eq_ignore_ascii_case("100-continue");
            }
        }
        Some(Request {
            head,
            method,
            target,
            content_length,
            chunked,
            expect_continue,
        })
    }

    fn path(&self) -> &str {
        self.target
            .split_once('?')
            .map_or(&self.target, |(path, _)| path)
    }

    fn query(&self) -> &str {
        self.target.split_once('?').map_or("", |(_, query)| query)
    }
}

/// The lines of a head (without its blank line), request or status line
/// first.
fn head_lines(head: &[u8]) -> impl Iterator<Item = &[u8]> {
    let head = head.strip_suffix(b"\r\n\r\n").unwrap_or(head);
    head.split(|&b| b == b'\n')
        .map(|line| line.strip_suffix(b"\r").unwrap_or(line))
}

/// A header line's name and trimmed value; `None` without a colon.
fn split_header(line: &[u8]) -> Option<(&[u8], &[u8])> {
    let colon = line.iter().position(|&b| b == b':')?;
    Some((line[..colon].trim_ascii(), line[colon + 1..].trim_ascii()))
}

/// `head` with its `Connection` headers removed and `connection: close`
/// added last; every other byte as it was.
fn with_connection_close(head: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(head.len() + 20);
    for (i, line) in head_lines(head).enumerate() {
        let is_connection = i > 0
            && split_header(line).is_some_and(|(name, _)| name.eq_ignore_ascii_case(b"connection"));
        if !is_connection {
            out.extend_from_slice(line);
            out.extend_from_slice(b"\r\n");
        }
    }
    out.extend_from_slice(b"connection: close\r\n\r\n");
    out
}

enum HeadRead {
    /// The head through its blank line, and what was read past it.
    Complete { head: Vec<u8>, rest: Vec<u8> },
    /// The peer closed before the head was complete.
    Closed,
    /// No end of head within [`MAX_HEAD`] bytes.
    TooLarge,
}

/// Reads from `stream`, after the bytes already in `buf`, to the end of a
/// message head.
fn read_head(stream: &mut TcpStream, mut buf: Vec<u8>) -> io::Result<HeadRead> {
    let mut chunk = [0; 8192];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let rest = buf.split_off(end + 4);
            return Ok(HeadRead::Complete { head: buf, rest });
        }
        if buf.len() > MAX_HEAD {
            return Ok(HeadRead::TooLarge);
        }
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Ok(HeadRead::Closed);
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// The status code of a response head; `None` if the status line is
/// malformed.
fn status_code(head: &[u8]) -> Option<u16> {
    let status_line = head_lines(head).next()?;
    let status_line = std::str::from_utf8(status_line).ok()?;
    status_line.split(' ').nth(1)?.parse().ok()
}

/// Serves the one request of `client`.
fn serve(shared: &Shared, mut client: TcpStream, upstream: SocketAddr) -> io::Result<()> {
    set_timeouts(&client)?;
    let (head, rest) = match read_head(&mut client, Vec::new())? {
        HeadRead::Complete { head, rest } => (head, rest),
        // The wake-up connection of `Drop`, or a client that gave up.
        HeadRead::Closed => return Ok(()),
        HeadRead::TooLarge => {
            let error = ProxyError {
                code: 431,
                retry_after: None,
                s3_code: "RequestHeaderSectionTooLarge",
            };
            return error.send(&mut client, true);
        }
    };
    let Some(request) = Request::parse(head) else {
        let error = ProxyError {
            code: 400,
            retry_after: None,
            s3_code: "BadRequest",
        };
        return error.send(&mut client, true);
    };
    shared.requests.fetch_add(1, Ordering::SeqCst);
    let with_body = request.method != "HEAD";
    if request.chunked {
        let error = ProxyError {
            code: 501,
            retry_after: None,
            s3_code: "NotImplemented",
        };
        return error.send(&mut client, with_body);
    }
    let fault = shared.take_fault(&request);

    // The body: what came with the head, then the rest from the client.
    if request.expect_continue && request.content_length > 0 {
        client.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
    }
    let mut body_start = rest;
    body_start.truncate(usize::try_from(request.content_length).unwrap_or(usize::MAX));
    let body_left = request.content_length - body_start.len() as u64;

    if let Some(Fault::Status {
        code,
        retry_after,
        s3_code,
    }) = fault
    {
        let drained = io::copy(&mut (&client).take(body_left), &mut io::sink())?;
        check_body_complete(drained, body_left)?;
        return ProxyError {
            code,
            retry_after,
            s3_code,
        }
        .send(&mut client, with_body);
    }

    let mut upstream = match TcpStream::connect_timeout(&upstream, CONNECT_TIMEOUT) {
        Ok(upstream) => upstream,
        Err(e) => {
            io::copy(&mut (&client).take(body_left), &mut io::sink())?;
            ProxyError {
                code: 502,
                retry_after: None,
                s3_code: "BadGateway",
            }
            .send(&mut client, with_body)?;
            return Err(e);
        }
    };
    set_timeouts(&upstream)?;
    upstream.write_all(&with_connection_close(&request.head))?;
    upstream.write_all(&body_start)?;
    let sent = io::copy(&mut (&client).take(body_left), &mut upstream)?;
    check_body_complete(sent, body_left)?;

    // The response head, past any interim (1xx) responses: the client got
    // its `100 Continue` from the proxy already.
    let mut buf = Vec::new();
    let mut interim = 0;
    let (head, body) = loop {
        match read_head(&mut upstream, buf)? {
            HeadRead::Complete { head, rest } => {
                let code = status_code(&head);
                if code.is_some_and(|c| (100..200).contains(&c)) && interim < MAX_INTERIM_RESPONSES
                {
                    interim += 1;
                    buf = rest;
                    continue;
                }
                break (head, rest);
            }
            HeadRead::Closed | HeadRead::TooLarge => {
                let error = ProxyError {
                    code: 502,
                    retry_after: None,
                    s3_code: "BadGateway",
                };
                return error.send(&mut client, with_body);
            }
        }
    };

    if let Some(Fault::SlowFirstByte(delay)) = fault {
        thread::sleep(delay);
    }
    client.write_all(&with_connection_close(&head))?;
    match fault {
        Some(Fault::ResetMidBody { after_body_bytes }) => {
            forward_body(&mut upstream, &mut client, body, Some(after_body_bytes))?;
            client.shutdown(Shutdown::Both)
        }
        Some(Fault::TruncatedBody { after_body_bytes }) => {
            forward_body(&mut upstream, &mut client, body, Some(after_body_bytes))?;
            close_gracefully(&client)
        }
        _ => {
            forward_body(&mut upstream, &mut client, body, None)?;
            close_gracefully(&client)
        }
    }
}

fn set_timeouts(stream: &TcpStream) -> io::Result<()> {
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    stream.set_nodelay(true)
}

fn check_body_complete(got: u64, expected: u64) -> io::Result<()> {
    if got < expected {
        let msg = format!("the client sent {got} of {expected} request body bytes");
        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, msg));
    }
    Ok(())
}

/// Sends `start`, then what `upstream` sends until it closes, stopping after
/// `limit` bytes if set.
fn forward_body(
    upstream: &mut TcpStream,
    client: &mut TcpStream,
    start: Vec<u8>,
    limit: Option<usize>,
) -> io::Result<()> {
    let mut left = limit.unwrap_or(usize::MAX);
    let first = start.len().min(left);
    client.write_all(&start[..first])?;
    left -= first;
    let mut chunk = vec![0; 64 * 1024];
    while left > 0 {
        let n = upstream.read(&mut chunk)?;
        if n == 0 {
            break;
        }
        let n = n.min(left);
        client.write_all(&chunk[..n])?;
        left -= n;
    }
    Ok(())
}

/// Ends the response with a FIN, then reads (for at most [`LINGER`] and
/// [`LINGER_BYTES`]) whatever the client still sends, so that closing with
/// unread bytes does not reset the connection under the response.
fn close_gracefully(client: &TcpStream) -> io::Result<()> {
    client.shutdown(Shutdown::Write)?;
    client.set_read_timeout(Some(LINGER))?;
    // A timeout or a reset here changes nothing for the client.
    let _ = io::copy(&mut client.take(LINGER_BYTES), &mut io::sink());
    Ok(())
}

/// An error response the proxy sends by itself.
struct ProxyError {
    code: u16,
    retry_after: Option<u32>,
    s3_code: &'static str,
}

impl ProxyError {
    /// Sends the response (its body only if `with_body`) and closes.
    fn send(&self, client: &mut TcpStream, with_body: bool) -> io::Result<()> {
        let body = format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
             <Error><Code>{}</Code><Message>injected by the trawl test fault proxy</Message>\
             <RequestId>fault-proxy</RequestId></Error>",
            self.s3_code
        );
        let mut response = format!(
            "HTTP/1.1 {} {}\r\ncontent-type: application/xml\r\ncontent-length: {}\r\n",
            self.code,
            reason_phrase(self.code),
            body.len()
        );
        if let Some(secs) = self.retry_after {
            response.push_str(&format!("retry-after: {secs}\r\n"));
        }
        response.push_str("connection: close\r\n\r\n");
        if with_body {
            response.push_str(&body);
        }
        client.write_all(response.as_bytes())?;
        close_gracefully(client)
    }
}

fn reason_phrase(code: u16) -> &'static str {
    match code {
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Injected Fault",
    }
}
