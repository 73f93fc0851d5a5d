//! The listener itself, spoken to over raw TCP: graceful shutdown lets an in-flight request
//! finish, connections that send nothing (or stop halfway, or trickle) do not stay open, and
//! the number of open connections is capped.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::time::Duration;

use tests::{Backend, spawn_app, spawn_app_with};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

/// Reads until the peer closes (`None` if it is still open after `within`).
async fn closed_within(stream: &mut TcpStream, within: Duration) -> Option<Vec<u8>> {
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => return Some(received),
            Ok(Ok(n)) => received.extend_from_slice(&buf[..n]),
            Err(_) => return None,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_in_flight_when_the_store_stops_is_still_answered() {
    let app = spawn_app(Backend::Embedded).await;
    let address = app.address.trim_start_matches("http://").to_owned();
    let body = r#"{"email": "nobody@example.com", "password": "not the password"}"#;
    let mut stream = TcpStream::connect(&address).await.unwrap();
    // `Expect: 100-continue`: the interim answer shows the handler has started reading.
    let head = format!(
        "POST /api/auth/login HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nExpect: 100-continue\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut interim = [0u8; 25];
    tokio::time::timeout(Duration::from_secs(10), stream.read_exact(&mut interim))
        .await
        .expect("100 Continue in time")
        .unwrap();
    assert_eq!(&interim, b"HTTP/1.1 100 Continue\r\n\r\n");
    stream.write_all(&body.as_bytes()[..10]).await.unwrap();

    let stopping = tokio::spawn(app.stop());
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!stopping.is_finished(), "stopped with a request in flight");
    assert!(
        TcpStream::connect(&address).await.is_err(),
        "still accepting connections while stopping"
    );
    stream.write_all(&body.as_bytes()[10..]).await.unwrap();
    let answer = closed_within(&mut stream, Duration::from_secs(10))
        .await
        .expect("the connection closes after the answer");
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.starts_with("HTTP/1.1 401"),
        "the in-flight login was not answered: {answer:?}"
    );
    stopping
        .await
        .unwrap()
        .expect("clean shutdown after the request");
}

/// A body refused before it is read leaves the connection unusable: the answer says so and
/// the connection closes, instead of a client reusing it and losing its next request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_upload_is_answered_and_its_connection_closed() {
    let app = spawn_app(Backend::Embedded).await;
    let address = app.address.trim_start_matches("http://").to_owned();
    let mut stream = TcpStream::connect(&address).await.unwrap();
    let head = format!(
        "POST /api/auth/signup HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\nContent-Length: 200000\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&[b' '; 50_000]).await.unwrap();
    let answer = closed_within(&mut stream, Duration::from_secs(5))
        .await
        .expect("the connection closes after the answer");
    let answer = String::from_utf8_lossy(&answer).to_ascii_lowercase();
    assert!(answer.starts_with("http/1.1 413"), "{answer:?}");
    assert!(answer.contains("connection: close\r\n"), "{answer:?}");
    assert!(answer.contains("payload_too_large"), "{answer:?}");
}

/// A connection still sending its headers is closed `HTTP_HEADER_READ_TIMEOUT_SECS` after it
/// opened; one idle after a response, `HTTP_KEEP_ALIVE_SECS` after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_and_half_sent_connections_meet_the_header_timeout_and_idle_ones_the_keep_alive() {
    let header_timeout = Duration::from_secs(3);
    let keep_alive = Duration::from_secs(8);
    let app = spawn_app_with(
        Backend::Embedded,
        &[
            ("HTTP_HEADER_READ_TIMEOUT_SECS", "3"),
            ("HTTP_KEEP_ALIVE_SECS", "8"),
        ],
    )
    .await;
    let address = app.address.trim_start_matches("http://").to_owned();

    let mut silent = TcpStream::connect(&address).await.unwrap();
    let mut slow = TcpStream::connect(&address).await.unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let mut idle = TcpStream::connect(&address).await.unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 4096];
    let n = idle.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    let started = tokio::time::Instant::now();
    let slack = Duration::from_secs(2);

    for (name, stream) in [
        ("sends nothing", &mut silent),
        ("never finishes its headers", &mut slow),
    ] {
        let left = (header_timeout + slack).saturating_sub(started.elapsed());
        assert!(
            closed_within(stream, left).await.is_some(),
            "a connection that {name} is still open {:?} after opening",
            started.elapsed()
        );
    }
    let left = (keep_alive - slack).saturating_sub(started.elapsed());
    assert!(
        closed_within(&mut idle, left).await.is_none(),
        "an idle connection was closed before its keep-alive time"
    );
    let left = (keep_alive + slack).saturating_sub(started.elapsed());
    assert!(
        closed_within(&mut idle, left).await.is_some(),
        "an idle connection is still open {:?} after its response",
        started.elapsed()
    );
    assert!(
        app.get("/healthz", None).await.status.is_success(),
        "still serving others"
    );
}

/// Sending a byte every half second never completes the headers, and does not keep the
/// connection open past the header timeout either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_trickling_its_headers_is_cut_off_at_the_header_timeout() {
    let app = spawn_app_with(Backend::Embedded, &[("HTTP_HEADER_READ_TIMEOUT_SECS", "3")]).await;
    let address = app.address.trim_start_matches("http://").to_owned();
    let mut stream = TcpStream::connect(&address).await.unwrap();
    let started = tokio::time::Instant::now();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nX-Slow: ")
        .await
        .unwrap();
    let mut buf = [0u8; 256];
    let cut_after = loop {
        if started.elapsed() > Duration::from_secs(15) {
            panic!("a trickling client is still connected after 15 s");
        }
        if stream.write_all(b"a").await.is_err() {
            break started.elapsed();
        }
        match tokio::time::timeout(Duration::from_millis(500), stream.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => break started.elapsed(),
            Ok(Ok(_)) => panic!("the server answered headers that never ended"),
            Err(_) => {}
        }
    };
    assert!(
        cut_after >= Duration::from_millis(2500) && cut_after < Duration::from_secs(6),
        "cut after {cut_after:?}, expected about 3 s"
    );
}

/// Past `HTTP_MAX_CONNECTIONS` open connections, a new one is closed at once without an
/// answer; once one closes, the next is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_cap_are_closed_at_once() {
    let app = spawn_app_with(
        Backend::Embedded,
        &[
            ("HTTP_MAX_CONNECTIONS", "3"),
            ("HTTP_HEADER_READ_TIMEOUT_SECS", "30"),
        ],
    )
    .await;
    let address = app.address.trim_start_matches("http://").to_owned();
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut stream = TcpStream::connect(&address).await.unwrap();
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\n")
            .await
            .unwrap();
        held.push(stream);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;

    let mut refused = TcpStream::connect(&address).await.unwrap();
    let _ = refused
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await;
    let answer = closed_within(&mut refused, Duration::from_secs(2))
        .await
        .expect("a connection past the cap is closed at once");
    assert!(answer.is_empty(), "{:?}", String::from_utf8_lossy(&answer));
    for stream in &mut held {
        assert!(
            closed_within(stream, Duration::from_millis(100))
                .await
                .is_none(),
            "a connection under the cap was closed"
        );
    }

    drop(held.pop());
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut next = TcpStream::connect(&address).await.unwrap();
    next.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let answer = closed_within(&mut next, Duration::from_secs(5))
        .await
        .expect("answered and closed");
    assert!(
        answer.starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&answer)
    );
}
