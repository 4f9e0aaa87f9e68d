//! How every kind of error answer is classified, per store, with the
//! answers made by the fault proxy (no server behind it): S3 by raw
//! requests, Azure through `object_store` and the status-keeping HTTP
//! client, and transport failures.

mod support;

use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

use support::fault_proxy::{Fault, FaultProxy, FaultRule, Target};
use trawl_backend::{ErrorClass, RemoteBackend};
use trawl_backend_objstore::{ObjectStoreBackend, Options};

/// An address nothing listens on.
fn closed_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

fn answer(code: u16, retry_after: Option<u32>, s3_code: &'static str) -> FaultRule {
    FaultRule::new(
        Target::Any,
        Fault::Status {
            code,
            retry_after,
            s3_code,
        },
        1,
    )
}

/// The answers and the class each must get.
fn cases() -> Vec<(FaultRule, ErrorClass)> {
    let throttled = |secs: Option<u64>| ErrorClass::Throttled {
        retry_after: secs.map(Duration::from_secs),
    };
    vec![
        (answer(500, None, "InternalError"), ErrorClass::Retryable),
        (answer(502, None, "BadGateway"), ErrorClass::Retryable),
        (
            answer(503, None, "ServiceUnavailable"),
            ErrorClass::Retryable,
        ),
        (answer(503, Some(7), "SlowDown"), throttled(Some(7))),
        (answer(429, Some(2), "TooManyRequests"), throttled(Some(2))),
        (answer(429, None, "TooManyRequests"), throttled(None)),
        (answer(400, None, "InvalidArgument"), ErrorClass::Permanent),
        (answer(403, None, "AccessDenied"), ErrorClass::Permanent),
        (answer(404, None, "NoSuchBucket"), ErrorClass::Permanent),
    ]
}

fn check_listing_errors(url: &str, mut options: Options, extra: &[(&str, &str)]) {
    let proxy = FaultProxy::start(closed_port()).unwrap();
    options.endpoint = Some(proxy.url());
    options.breaker.failures = 0;
    options
        .config
        .extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let backend = ObjectStoreBackend::from_url(url, options).unwrap();
    for (rule, class) in cases() {
        let shown = format!("{rule:?}");
        proxy.push(rule);
        let err = backend
            .list_page(&mut Default::default(), 10)
            .expect_err(&shown);
        assert_eq!(backend.classify_error(&err), class, "{shown}: {err}");
        assert_eq!(proxy.pending_rules(), 0, "{shown}: no request made");
    }
}

#[test]
fn s3_answers_are_classified() {
    check_listing_errors(
        "s3://bucket/prefix/",
        Options {
            region: Some("us-east-1".into()),
            ..Options::default()
        },
        &[
            ("aws_access_key_id", "AKIDTRAWLTESTS"),
            ("aws_secret_access_key", "trawl-test-secret"),
        ],
    );
}

#[test]
fn azure_answers_are_classified_through_object_store() {
    check_listing_errors(
        "az://container/prefix/",
        Options {
            anonymous: true,
            ..Options::default()
        },
        &[("azure_storage_account_name", "trawltests")],
    );
}

#[test]
fn an_endpoint_that_refuses_connections_is_retryable() {
    let options = Options {
        endpoint: Some(format!("http://{}", closed_port())),
        anonymous: true,
        ..Options::default()
    };
    let backend = ObjectStoreBackend::from_url("s3://bucket", options).unwrap();
    let err = backend.list_page(&mut Default::default(), 10).unwrap_err();
    assert_eq!(backend.classify_error(&err), ErrorClass::Retryable, "{err}");
}

#[test]
fn an_open_breaker_refuses_calls_as_a_throttle_with_the_cool_down() {
    let options = Options {
        endpoint: Some(format!("http://{}", closed_port())),
        anonymous: true,
        breaker: trawl_backend_objstore::BreakerConfig {
            failures: 2,
            cool_down: Duration::from_secs(30),
        },
        ..Options::default()
    };
    let backend = ObjectStoreBackend::from_url("s3://bucket", options).unwrap();
    for _ in 0..2 {
        let err = backend.list_page(&mut Default::default(), 10).unwrap_err();
        assert_eq!(backend.classify_error(&err), ErrorClass::Retryable);
    }
    let err = backend.list_page(&mut Default::default(), 10).unwrap_err();
    let ErrorClass::Throttled {
        retry_after: Some(wait),
    } = backend.classify_error(&err)
    else {
        panic!("{err}: not a throttle");
    };
    assert!(wait > Duration::from_secs(25) && wait <= Duration::from_secs(30));
    assert!(err.to_string().contains("circuit breaker open"), "{err}");
    assert_eq!(backend.breaker_stats().opened, 1);
}

/// A machine with no credentials and no role: one permanent error that says
/// what to do, instead of a retry per object against the metadata service.
#[test]
fn missing_credentials_are_one_clear_permanent_error() {
    let options = Options {
        endpoint: Some(format!("http://{}", closed_port())),
        config: vec![(
            "aws_metadata_endpoint".into(),
            format!("http://{}", closed_port()),
        )],
        ..Options::default()
    };
    let backend = ObjectStoreBackend::from_url("s3://bucket", options).unwrap();
    let err = backend.list_page(&mut Default::default(), 10).unwrap_err();
    assert_eq!(backend.classify_error(&err), ErrorClass::Permanent, "{err}");
    let message = err.to_string();
    assert!(message.contains("no credentials"), "{message}");
    assert!(message.contains("--anonymous"), "{message}");
}
