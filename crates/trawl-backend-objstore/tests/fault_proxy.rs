//! The test fault proxy against a tiny upstream HTTP server: requests are
//! forwarded byte for byte (plus `connection: close`), and each scripted
//! fault does what it says, to the requests it targets, as many times as
//! scripted.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use support::fault_proxy::{Fault, FaultProxy, FaultRule, Target};

/// Size of the upstream's response body.
const BODY_LEN: usize = 100 * 1024;

/// The upstream's response body: not periodic within a few bytes, so a
/// shifted or repeated slice would show.
fn body() -> Vec<u8> {
    (0..BODY_LEN as u32).map(|i| (i * 31 % 251) as u8).collect()
}

/// A one-request-per-connection HTTP server on `127.0.0.1` that answers every
/// request `200 OK` with [`body`], and records each request it received
/// (head and body bytes).
struct Upstream {
    addr: SocketAddr,
    received: Arc<Mutex<Vec<Vec<u8>>>>,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
}

impl Upstream {
    fn start() -> Upstream {
        let listener = TcpListener::bind(("127.0.0.1", 0)).unwrap();
        let addr = listener.local_addr().unwrap();
        let received = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let accept = {
            let (received, stop) = (Arc::clone(&received), Arc::clone(&stop));
            thread::spawn(move || {
                for conn in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    if let Ok(conn) = conn {
                        // Errors (the proxy cutting a response short) are
                        // part of the tests.
                        let _ = Upstream::answer(conn, &received);
                    }
                }
            })
        };
        Upstream {
            addr,
            received,
            stop,
            accept: Some(accept),
        }
    }

    fn answer(mut conn: TcpStream, received: &Mutex<Vec<Vec<u8>>>) -> std::io::Result<()> {
        conn.set_read_timeout(Some(Duration::from_secs(10)))?;
        conn.set_write_timeout(Some(Duration::from_secs(10)))?;
        let mut request = Vec::new();
        let mut chunk = [0; 4096];
        let head_end = loop {
            if let Some(end) = find(&request, b"\r\n\r\n") {
                break end + 4;
            }
            assert!(request.len() < 64 * 1024, "request head too large");
            let n = conn.read(&mut chunk)?;
            if n == 0 {
                return Ok(()); // the wake-up connection of `Drop`
            }
            request.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&request[..head_end]).to_ascii_lowercase();
        let content_length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .map_or(0, |v| v.trim().parse().unwrap());
        while request.len() < head_end + content_length {
            let n = conn.read(&mut chunk)?;
            if n == 0 {
                break;
            }
            request.extend_from_slice(&chunk[..n]);
        }
        received
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(request);
        let head = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\n\
             Connection: keep-alive\r\ncontent-length: {BODY_LEN}\r\n\r\n"
        );
        conn.write_all(head.as_bytes())?;
        conn.write_all(&body())
    }

    /// The requests received so far, head and body.
    fn received(&self) -> Vec<Vec<u8>> {
        self.received
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if TcpStream::connect(self.addr).is_ok()
            && let Some(accept) = self.accept.take()
        {
            let _ = accept.join();
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// A response as the client got it, up to the end of the connection.
struct Response {
    head: String,
    body: Vec<u8>,
}

impl Response {
    fn status(&self) -> u16 {
        self.head.split(' ').nth(1).unwrap().parse().unwrap()
    }

    /// The values of header `name`, in order.
    fn headers(&self, name: &str) -> Vec<String> {
        self.head
            .lines()
            .skip(1)
            .filter_map(|l| l.split_once(':'))
            .filter(|(n, _)| n.trim().eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim().to_owned())
            .collect()
    }

    fn content_length(&self) -> usize {
        self.headers("content-length")[0].parse().unwrap()
    }
}

/// Sends `request` as is and reads until the connection ends (an error ends
/// it too: the faults are the point).
fn send(proxy: &FaultProxy, request: &[u8]) -> Response {
    let mut conn = TcpStream::connect(proxy.addr()).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    conn.write_all(request).unwrap();
    let mut bytes = Vec::new();
    let mut chunk = [0; 8192];
    loop {
        match conn.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => bytes.extend_from_slice(&chunk[..n]),
        }
    }
    let end = find(&bytes, b"\r\n\r\n").expect("a response head") + 4;
    let head = String::from_utf8(bytes[..end].to_vec()).unwrap();
    Response {
        head,
        body: bytes[end..].to_vec(),
    }
}

/// A GET of `target` as object_store would send it through the proxy.
fn get(proxy: &FaultProxy, target: &str) -> Response {
    send(proxy, get_request(proxy, target).as_bytes())
}

fn get_request(proxy: &FaultProxy, target: &str) -> String {
    format!(
        "GET {target} HTTP/1.1\r\nhost: {}\r\nx-amz-date: 20240101T000000Z\r\n\
         x-amz-content-sha256: UNSIGNED-PAYLOAD\r\nauthorization: AWS4-HMAC-SHA256 Credential=k/20240101/us-east-1/s3/aws4_request, SignedHeaders=host;x-amz-content-sha256;x-amz-date, Signature=00\r\n\
         accept: */*\r\n\r\n",
        proxy.addr()
    )
}

fn setup() -> (Upstream, FaultProxy) {
    let upstream = Upstream::start();
    let proxy = FaultProxy::start(upstream.addr).unwrap();
    (upstream, proxy)
}

#[test]
fn pass_through_forwards_the_request_unchanged_but_for_connection_close() {
    let (upstream, proxy) = setup();
    let request = format!(
        "GET /bucket/dir/a%20b.txt?x-id=GetObject HTTP/1.1\r\nHost: {}\r\n\
         Connection: keep-alive\r\nX-Amz-Date: 20240101T000000Z\r\nrange: bytes=0-\r\n\r\n",
        proxy.addr()
    );
    let response = send(&proxy, request.as_bytes());

    assert_eq!(response.status(), 200);
    assert_eq!(response.body, body());
    assert_eq!(response.headers("connection"), ["close"]);
    let expected = format!(
        "GET /bucket/dir/a%20b.txt?x-id=GetObject HTTP/1.1\r\nHost: {}\r\n\
         X-Amz-Date: 20240101T000000Z\r\nrange: bytes=0-\r\nconnection: close\r\n\r\n",
        proxy.addr()
    );
    assert_eq!(
        String::from_utf8(upstream.received()[0].clone()).unwrap(),
        expected
    );
    assert_eq!((proxy.requests(), proxy.faults_injected()), (1, 0));
}

#[test]
fn pass_through_forwards_a_request_body() {
    let (upstream, proxy) = setup();
    let payload = body();
    let mut request = format!(
        "PUT /bucket/key HTTP/1.1\r\nhost: {}\r\ncontent-length: {}\r\n\r\n",
        proxy.addr(),
        payload.len()
    )
    .into_bytes();
    let head_len = request.len();
    request.extend_from_slice(&payload);

    let response = send(&proxy, &request);

    assert_eq!(response.status(), 200);
    let received = &upstream.received()[0];
    let expected_head =
        String::from_utf8_lossy(&request[..head_len - 2]) + "connection: close\r\n\r\n";
    assert_eq!(
        String::from_utf8_lossy(&received[..expected_head.len()]),
        expected_head
    );
    assert!(
        received[expected_head.len()..] == payload[..],
        "the body arrived altered"
    );
}

#[test]
fn expect_continue_gets_an_interim_response_before_the_body() {
    let (upstream, proxy) = setup();
    let mut conn = TcpStream::connect(proxy.addr()).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let head =
        "PUT /bucket/key HTTP/1.1\r\nhost: x\r\nexpect: 100-continue\r\ncontent-length: 5\r\n\r\n";
    conn.write_all(head.as_bytes()).unwrap();
    let mut interim = [0; 25];
    conn.read_exact(&mut interim).unwrap();
    assert_eq!(&interim, b"HTTP/1.1 100 Continue\r\n\r\n");
    conn.write_all(b"hello").unwrap();
    let mut response = Vec::new();
    conn.read_to_end(&mut response).unwrap();

    assert!(response.starts_with(b"HTTP/1.1 200 OK\r\n"));
    assert!(upstream.received()[0].ends_with(b"\r\n\r\nhello"));
}

#[test]
fn chunked_request_bodies_are_refused_and_not_forwarded() {
    let (upstream, proxy) = setup();
    let request = "PUT /bucket/key HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
    let response = send(&proxy, request.as_bytes());

    assert_eq!(response.status(), 501);
    assert!(upstream.received().is_empty());
}

#[test]
fn status_fault_is_answered_by_the_proxy_with_an_s3_error() {
    let (upstream, proxy) = setup();
    proxy.push(FaultRule::status(Target::Any, 503, 1));

    let response = get(&proxy, "/bucket/key");

    assert_eq!(response.status(), 503);
    assert_eq!(response.content_length(), response.body.len());
    let xml = String::from_utf8(response.body.clone()).unwrap();
    assert!(
        xml.contains("<Error><Code>ServiceUnavailable</Code><Message>"),
        "{xml}"
    );
    assert!(response.headers("retry-after").is_empty());
    assert_eq!(response.headers("connection"), ["close"]);
    assert!(
        upstream.received().is_empty(),
        "the faulted request was forwarded"
    );
    assert_eq!(
        (
            proxy.requests(),
            proxy.faults_injected(),
            proxy.pending_rules()
        ),
        (1, 1, 0)
    );

    assert_eq!(get(&proxy, "/bucket/key").status(), 200);
    assert_eq!(upstream.received().len(), 1);
    assert_eq!((proxy.requests(), proxy.faults_injected()), (2, 1));
}

#[test]
fn status_fault_sends_retry_after() {
    let (_upstream, proxy) = setup();
    let fault = Fault::Status {
        code: 429,
        retry_after: Some(7),
        s3_code: "SlowDown",
    };
    proxy.push(FaultRule::new(Target::Any, fault, 1));
    proxy.push(FaultRule::throttle(Target::Any, 2, 1));

    let first = get(&proxy, "/bucket/key");
    assert_eq!(first.status(), 429);
    assert_eq!(first.headers("retry-after"), ["7"]);
    assert!(String::from_utf8_lossy(&first.body).contains("<Code>SlowDown</Code>"));

    let second = get(&proxy, "/bucket/key");
    assert_eq!(second.status(), 503);
    assert_eq!(second.headers("retry-after"), ["2"]);
    assert!(String::from_utf8_lossy(&second.body).contains("<Code>SlowDown</Code>"));
}

#[test]
fn status_fault_on_head_has_no_body() {
    let (_upstream, proxy) = setup();
    proxy.push(FaultRule::status(Target::Any, 404, 1));

    let response = send(&proxy, b"HEAD /bucket/key HTTP/1.1\r\nhost: x\r\n\r\n");

    assert_eq!(response.status(), 404);
    assert!(response.content_length() > 0);
    assert!(response.body.is_empty());
}

#[test]
fn reset_mid_body_forwards_only_the_first_bytes() {
    let (upstream, proxy) = setup();
    proxy.push(FaultRule::reset_mid_body(Target::Any, 1000, 1));

    let response = get(&proxy, "/bucket/key");

    assert_eq!(response.status(), 200);
    assert_eq!(response.content_length(), BODY_LEN);
    assert_eq!(response.body, body()[..1000]);
    assert_eq!(upstream.received().len(), 1);
    assert_eq!(get(&proxy, "/bucket/key").body, body());
}

#[test]
fn truncated_body_closes_cleanly_before_the_content_length() {
    let (_upstream, proxy) = setup();
    proxy.push(FaultRule::truncated_body(Target::Any, 5000, 1));
    proxy.push(FaultRule::truncated_body(Target::Any, 0, 1));

    let response = get(&proxy, "/bucket/key");
    assert_eq!(response.content_length(), BODY_LEN);
    assert_eq!(response.body, body()[..5000]);

    let response = get(&proxy, "/bucket/key");
    assert_eq!(response.status(), 200);
    assert!(response.body.is_empty());
}

#[test]
fn slow_first_byte_delays_the_response() {
    let (_upstream, proxy) = setup();
    let delay = Duration::from_millis(300);
    proxy.push(FaultRule::slow_first_byte(Target::Any, delay, 1));

    let start = Instant::now();
    let response = get(&proxy, "/bucket/key");

    assert!(
        start.elapsed() >= delay,
        "answered after {:?}",
        start.elapsed()
    );
    assert_eq!(response.body, body());
}

#[test]
fn rules_apply_in_order_and_are_used_up() {
    let (upstream, proxy) = setup();
    proxy.push(FaultRule::status(Target::Any, 500, 2));
    proxy.push(FaultRule::status(Target::Any, 503, 1));
    assert_eq!(proxy.pending_rules(), 2);

    let statuses: Vec<u16> = (0..4)
        .map(|_| get(&proxy, "/bucket/key").status())
        .collect();

    assert_eq!(statuses, [500, 500, 503, 200]);
    assert_eq!(
        (
            proxy.requests(),
            proxy.faults_injected(),
            proxy.pending_rules()
        ),
        (4, 3, 0)
    );
    assert_eq!(upstream.received().len(), 1);
}

#[test]
fn clear_removes_every_rule() {
    let (_upstream, proxy) = setup();
    proxy.push(FaultRule::status(Target::Any, 500, 5));
    proxy.push(FaultRule::status(Target::GetObject, 503, 5));
    proxy.clear();

    assert_eq!(proxy.pending_rules(), 0);
    assert_eq!(get(&proxy, "/bucket/key").status(), 200);
    assert_eq!(proxy.faults_injected(), 0);
}

#[test]
fn targets_tell_listings_from_object_reads() {
    let (_upstream, proxy) = setup();
    let listing = "/bucket?list-type=2&prefix=dir%2F";
    let object = "/bucket/dir/key";

    proxy.push(FaultRule::status(Target::ListObjects, 503, 1));
    assert_eq!(get(&proxy, object).status(), 200);
    assert_eq!(get(&proxy, listing).status(), 503);

    proxy.push(FaultRule::status(Target::GetObject, 500, 1));
    assert_eq!(get(&proxy, listing).status(), 200);
    assert_eq!(
        send(&proxy, b"HEAD /bucket/dir/key HTTP/1.1\r\nhost: x\r\n\r\n").status(),
        200
    );
    assert_eq!(get(&proxy, "/bucket").status(), 200);
    assert_eq!(get(&proxy, object).status(), 500);

    proxy.push(FaultRule::status(
        Target::PathContains("other".into()),
        404,
        1,
    ));
    assert_eq!(
        get(&proxy, "/bucket?list-type=2&prefix=other").status(),
        200
    );
    assert_eq!(get(&proxy, object).status(), 200);
    assert_eq!(get(&proxy, "/bucket/other/key").status(), 404);

    assert_eq!(proxy.faults_injected(), 3);
    assert_eq!(proxy.pending_rules(), 0);
}

#[test]
fn a_rule_that_never_matches_stays_pending() {
    let (_upstream, proxy) = setup();
    proxy.push(FaultRule::status(Target::ListObjects, 503, 1));

    assert_eq!(get(&proxy, "/bucket/key").status(), 200);
    assert_eq!(proxy.pending_rules(), 1);
}

#[test]
#[should_panic(expected = "at least once")]
fn a_rule_for_zero_requests_is_refused() {
    let (_upstream, proxy) = setup();
    proxy.push(FaultRule::status(Target::Any, 503, 0));
}

#[test]
fn dropping_the_proxy_stops_it() {
    let (_upstream, proxy) = setup();
    let addr = proxy.addr();
    assert!(proxy.url().ends_with(&addr.port().to_string()));
    drop(proxy);

    assert!(TcpStream::connect(addr).is_err());
}

#[test]
fn concurrent_requests_each_get_their_response() {
    let (upstream, proxy) = setup();
    let proxy = Arc::new(proxy);
    let clients: Vec<_> = (0..8)
        .map(|i| {
            let proxy = Arc::clone(&proxy);
            thread::spawn(move || get(&proxy, &format!("/bucket/key{i}")).body)
        })
        .collect();
    for client in clients {
        assert_eq!(client.join().unwrap(), body());
    }
    assert_eq!(upstream.received().len(), 8);
}
