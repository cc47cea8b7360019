//! `FaultProxy` over real loopback sockets: each toxic does what it says,
//! down windows reset connections, and the same seed draws the same toxics
//! for the same connections.
#![cfg(feature = "proxy")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::Duration;

use cpc_fault::proxy::{Direction, FaultProxy, ProxyConfig, ProxyError, Toxic, ToxicKind};
use cpc_fault::Schedule;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A server that reads 5 bytes and answers 64 bytes, then closes.
async fn server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 5];
                if s.read_exact(&mut buf).await.is_ok() {
                    let _ = s.write_all(&[b'a'; 64]).await;
                }
            });
        }
    });
    addr
}

/// One exchange through `proxy`: the answer's bytes, or the error.
async fn exchange(proxy: SocketAddr) -> std::io::Result<Vec<u8>> {
    let mut s = TcpStream::connect(proxy).await?;
    s.write_all(b"hello").await?;
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_millis(500), s.read_to_end(&mut answer))
        .await
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
    Ok(answer)
}

async fn proxy(seed: u64, toxics: Vec<Toxic>) -> FaultProxy {
    let mut config = ProxyConfig::new(server().await, seed);
    config.toxics = toxics;
    FaultProxy::start(config).await.unwrap()
}

#[tokio::test]
async fn without_toxics_bytes_pass_untouched() {
    let p = proxy(1, Vec::new()).await;
    assert_eq!(exchange(p.addr()).await.unwrap(), vec![b'a'; 64]);
    let c = p.counters();
    assert_eq!((c.connections, c.bytes_up, c.bytes_down), (1, 5, 64));
    p.shutdown().await;
}

#[tokio::test]
async fn a_reset_after_n_bytes_is_a_connection_reset() {
    let toxic = Toxic::new(
        Direction::Downstream,
        ToxicKind::ResetPeer { after_bytes: 10 },
        1.0,
    );
    let p = proxy(1, vec![toxic]).await;
    let mut s = TcpStream::connect(p.addr()).await.unwrap();
    s.write_all(b"hello").await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 64];
    let err = loop {
        match s.read(&mut buf).await {
            Ok(0) => panic!("a clean close, not a reset, after {} bytes", got.len()),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => break e,
        }
    };
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset);
    assert!(got.len() <= 10, "{} bytes before the reset", got.len());
    assert_eq!(p.counters().resets, 1);
    p.shutdown().await;
}

#[tokio::test]
async fn a_black_hole_never_answers_and_a_limit_closes_cleanly() {
    let hole = proxy(
        1,
        vec![Toxic::new(Direction::Upstream, ToxicKind::Timeout, 1.0)],
    )
    .await;
    let err = exchange(hole.addr()).await.unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);
    assert_eq!(hole.counters().blackholes, 1);
    hole.shutdown().await;
    let limit = ToxicKind::LimitData { bytes: 20 };
    let cut = proxy(1, vec![Toxic::new(Direction::Downstream, limit, 1.0)]).await;
    assert_eq!(exchange(cut.addr()).await.unwrap(), vec![b'a'; 20]);
    assert_eq!(cut.counters().limited, 1);
    cut.shutdown().await;
}

#[tokio::test]
async fn slices_and_latency_delay_bytes_without_changing_them() {
    let p = proxy(
        3,
        vec![
            Toxic::new(
                Direction::Downstream,
                ToxicKind::Slicer {
                    size: 7,
                    variation: 3,
                    delay: Duration::from_millis(1),
                },
                1.0,
            ),
            Toxic::new(
                Direction::Upstream,
                ToxicKind::Latency {
                    latency: Duration::from_millis(20),
                    jitter: Duration::from_millis(5),
                },
                1.0,
            ),
        ],
    )
    .await;
    let started = std::time::Instant::now();
    assert_eq!(exchange(p.addr()).await.unwrap(), vec![b'a'; 64]);
    assert!(started.elapsed() >= Duration::from_millis(15));
    let c = p.counters();
    assert!(c.sliced >= 1 && c.delayed >= 1, "{c:?}");
    p.shutdown().await;
}

#[tokio::test]
async fn a_down_window_resets_connections() {
    let mut config = ProxyConfig::new(server().await, 1);
    config.schedule = Schedule::builder()
        .offline(Duration::ZERO, Duration::from_secs(3600))
        .build()
        .unwrap();
    let p = FaultProxy::start(config).await.unwrap();
    assert!(exchange(p.addr()).await.is_err());
    assert_eq!(p.counters().offline, 1);
    p.shutdown().await;
}

/// Which of 30 connections got the toxic, for `seed`.
async fn pattern(seed: u64) -> Vec<bool> {
    let limit = ToxicKind::LimitData { bytes: 1 };
    let p = proxy(seed, vec![Toxic::new(Direction::Downstream, limit, 0.5)]).await;
    let mut out = Vec::new();
    for _ in 0..30 {
        out.push(exchange(p.addr()).await.unwrap().len() == 1);
    }
    p.shutdown().await;
    out
}

#[tokio::test]
async fn the_same_seed_draws_the_same_toxics_for_the_same_connections() {
    let a = pattern(11).await;
    assert_eq!(a, pattern(11).await);
    assert_ne!(a, pattern(12).await);
    let hits = a.iter().filter(|h| **h).count();
    assert!((5..=25).contains(&hits), "p = 0.5 over 30: {hits}");
}

#[tokio::test]
async fn impossible_toxics_are_refused_with_their_index_and_reason() {
    let addr = server().await;
    let ok = Toxic::new(Direction::Upstream, ToxicKind::Timeout, 0.5);
    let refused = |toxics: Vec<Toxic>| {
        let mut config = ProxyConfig::new(addr, 1);
        config.toxics = toxics;
        FaultProxy::start(config)
    };
    match refused(vec![
        ok,
        Toxic::new(Direction::Upstream, ToxicKind::Timeout, 1.5),
    ])
    .await
    {
        Err(e @ ProxyError::Probability { index: 1, .. }) => {
            assert_eq!(e.to_string(), "toxic 1: probability 1.5 is not in 0..=1");
        }
        other => panic!("expected Probability, got {other:?}"),
    }
    let nan = Toxic::new(Direction::Downstream, ToxicKind::Timeout, f64::NAN);
    assert!(matches!(
        refused(vec![nan]).await,
        Err(ProxyError::Probability { index: 0, .. })
    ));
    let no_bandwidth = ToxicKind::Bandwidth {
        bytes_per_second: 0,
    };
    match refused(vec![Toxic::new(Direction::Upstream, no_bandwidth, 1.0)]).await {
        Err(e @ ProxyError::Toxic { index: 0, .. }) => {
            assert_eq!(e.to_string(), "toxic 0: bandwidth of 0");
        }
        other => panic!("expected Toxic, got {other:?}"),
    }
    let empty_slices = ToxicKind::Slicer {
        size: 0,
        variation: 4,
        delay: Duration::ZERO,
    };
    match refused(vec![
        ok,
        Toxic::new(Direction::Downstream, empty_slices, 0.0),
    ])
    .await
    {
        Err(e @ ProxyError::Toxic { index: 1, .. }) => {
            assert_eq!(e.to_string(), "toxic 1: slices of 0 bytes");
        }
        other => panic!("expected Toxic, got {other:?}"),
    }
}

#[tokio::test]
async fn a_listen_address_in_use_is_a_bind_error_naming_it() {
    let taken = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut config = ProxyConfig::new(server().await, 1);
    config.listen = taken.local_addr().unwrap();
    let err = FaultProxy::start(config).await.unwrap_err();
    let message = err.to_string();
    match err {
        ProxyError::Bind { addr, source } => {
            assert_eq!(addr, taken.local_addr().unwrap());
            assert_eq!(source.kind(), std::io::ErrorKind::AddrInUse);
            assert_eq!(message, format!("binding {addr}: {source}"));
        }
        other => panic!("expected Bind, got {other:?}"),
    }
}

#[tokio::test]
async fn an_unreachable_upstream_resets_the_client_and_is_counted() {
    // A loopback port nobody listens on any more.
    let gone = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = gone.local_addr().unwrap();
    drop(gone);
    let p = FaultProxy::start(ProxyConfig::new(upstream, 1))
        .await
        .unwrap();
    let mut s = TcpStream::connect(p.addr()).await.unwrap();
    let mut buf = [0u8; 8];
    let read = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .expect("the proxy answers at once");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    let c = p.counters();
    assert_eq!((c.connections, c.upstream_failed, c.bytes_up), (1, 1, 0));
    p.shutdown().await;
}

#[tokio::test]
async fn bandwidth_and_a_slow_close_delay_the_answer_but_keep_every_byte() {
    let p = proxy(
        5,
        vec![
            // 64 bytes at 640 B/s: 100 ms.
            Toxic::new(
                Direction::Downstream,
                ToxicKind::Bandwidth {
                    bytes_per_second: 640,
                },
                1.0,
            ),
            Toxic::new(
                Direction::Downstream,
                ToxicKind::SlowClose {
                    delay: Duration::from_millis(50),
                },
                1.0,
            ),
        ],
    )
    .await;
    let started = std::time::Instant::now();
    assert_eq!(exchange(p.addr()).await.unwrap(), vec![b'a'; 64]);
    assert!(
        started.elapsed() >= Duration::from_millis(150),
        "{:?}",
        started.elapsed()
    );
    let c = p.counters();
    assert_eq!((c.bytes_down, c.slow_closes), (64, 1), "{c:?}");
    p.shutdown().await;
}
