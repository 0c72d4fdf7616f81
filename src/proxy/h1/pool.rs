//! Idle HTTP/1.1 connections to the app, for the direct path.
//!
//! A connection is checked out for one exchange and checked back in once
//! its response has been read to the end with the framing intact; every
//! other outcome closes it. The newest idle connection is reused first
//! (it is the least likely to have been closed by the app), and
//! connections idle longer than `upstream_pool_idle_timeout` are closed,
//! so the pool never reuses one the app is about to drop.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::proxy::upstream::UpstreamError;

pub struct Pool {
    addr: String,
    connect_timeout: Duration,
    idle_timeout: Duration,
    max_idle: usize,
    /// Oldest first.
    idle: Mutex<VecDeque<(TcpStream, Instant)>>,
}

/// A connection to the app, and whether it served an exchange before.
pub struct UpConn {
    pub stream: TcpStream,
    pub reused: bool,
}

impl Pool {
    pub fn new(
        addr: String,
        connect_timeout: Duration,
        idle_timeout: Duration,
        max_idle: usize,
    ) -> Arc<Pool> {
        let pool = Arc::new(Pool {
            addr,
            connect_timeout,
            idle_timeout,
            max_idle,
            idle: Mutex::new(VecDeque::new()),
        });
        // Without traffic nothing checks connections in or out, so a sweep
        // closes the ones past their idle time (the app has closed them or
        // is about to: ours would sit in CLOSE_WAIT).
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(sweep(Arc::downgrade(&pool), idle_timeout));
        }
        pool
    }

    /// An idle connection that is still open, else a new one.
    pub async fn get(&self) -> Result<UpConn, UpstreamError> {
        if let Some(stream) = self.take_idle() {
            return Ok(UpConn {
                stream,
                reused: true,
            });
        }
        self.connect().await.map(|stream| UpConn {
            stream,
            reused: false,
        })
    }

    pub async fn connect(&self) -> Result<TcpStream, UpstreamError> {
        let stream = match tokio::time::timeout(
            self.connect_timeout,
            TcpStream::connect(&self.addr),
        )
        .await
        {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err(UpstreamError::Connect(format!("{}: {e}", self.addr))),
            Err(_) => {
                return Err(UpstreamError::Connect(format!(
                    "{}: connect timed out after {:?}",
                    self.addr, self.connect_timeout
                )));
            }
        };
        let _ = stream.set_nodelay(true);
        Ok(stream)
    }

    fn take_idle(&self) -> Option<TcpStream> {
        let now = Instant::now();
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        while let Some((stream, since)) = idle.pop_back() {
            if now.duration_since(since) >= self.idle_timeout {
                // Everything older is past its time too.
                idle.clear();
                return None;
            }
            if still_open(&stream) {
                return Some(stream);
            }
        }
        None
    }

    /// Return a connection whose last response was read to its end.
    pub fn put(&self, stream: TcpStream) {
        if self.max_idle == 0 {
            return;
        }
        let now = Instant::now();
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        expire(&mut idle, now, self.idle_timeout);
        if idle.len() >= self.max_idle {
            idle.pop_front();
        }
        idle.push_back((stream, now));
    }

    #[cfg(test)]
    fn idle_len(&self) -> usize {
        self.idle.lock().map(|i| i.len()).unwrap_or(0)
    }
}

fn expire(idle: &mut VecDeque<(TcpStream, Instant)>, now: Instant, timeout: Duration) {
    while idle
        .front()
        .is_some_and(|(_, since)| now.duration_since(*since) >= timeout)
    {
        idle.pop_front();
    }
}

/// Whether an idle connection has neither been closed by the app nor sent
/// anything unasked (a `408` before closing, say). This costs no syscall
/// when the reactor has seen no event on the socket.
fn still_open(stream: &TcpStream) -> bool {
    let mut probe = [0u8; 1];
    matches!(stream.try_read(&mut probe), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
}

async fn sweep(pool: Weak<Pool>, every: Duration) {
    let every = every.max(Duration::from_millis(100));
    loop {
        tokio::time::sleep(every).await;
        let Some(pool) = pool.upgrade() else { return };
        let mut idle = pool.idle.lock().unwrap_or_else(|p| p.into_inner());
        expire(&mut idle, Instant::now(), pool.idle_timeout);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;

    async fn listener() -> (TcpListener, String) {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = l.local_addr().expect("addr").to_string();
        (l, addr)
    }

    #[tokio::test]
    async fn reuses_the_newest_open_connection_and_skips_closed_ones() {
        let (l, addr) = listener().await;
        let pool = Pool::new(addr, Duration::from_secs(1), Duration::from_secs(60), 8);
        let a = pool.get().await.expect("connect a");
        let (mut server_a, _) = l.accept().await.expect("accept a");
        let b = pool.get().await.expect("connect b");
        let (_server_b, _) = l.accept().await.expect("accept b");
        assert!(!a.reused && !b.reused);
        let b_port = b.stream.local_addr().expect("addr").port();
        pool.put(a.stream);
        pool.put(b.stream);
        assert_eq!(pool.idle_len(), 2);
        let again = pool.get().await.expect("reuse");
        assert!(again.reused);
        assert_eq!(again.stream.local_addr().expect("addr").port(), b_port);
        // The app closes `a` while it is idle: it is not handed out again.
        server_a.shutdown().await.expect("shutdown");
        drop(server_a);
        tokio::time::sleep(Duration::from_millis(50)).await;
        let fresh = pool.get().await.expect("fresh");
        assert!(!fresh.reused, "a closed idle connection was reused");
        assert_eq!(pool.idle_len(), 0);
    }

    #[tokio::test]
    async fn idle_connections_expire_and_the_pool_is_bounded() {
        let (l, addr) = listener().await;
        let pool = Pool::new(addr, Duration::from_secs(1), Duration::from_millis(200), 2);
        let mut keep = Vec::new();
        for _ in 0..3 {
            let c = pool.connect().await.expect("connect");
            keep.push(l.accept().await.expect("accept"));
            pool.put(c);
        }
        assert_eq!(pool.idle_len(), 2, "max_idle bounds the pool");
        tokio::time::sleep(Duration::from_millis(700)).await;
        assert_eq!(pool.idle_len(), 0, "the sweep closes expired connections");
        assert!(!pool.get().await.expect("connect").reused);
    }

    #[tokio::test]
    async fn connect_errors_name_the_address() {
        let (l, addr) = listener().await;
        drop(l);
        let pool = Pool::new(
            addr.clone(),
            Duration::from_secs(1),
            Duration::from_secs(4),
            8,
        );
        match pool.get().await {
            Err(UpstreamError::Connect(m)) => assert!(m.contains(&addr), "{m}"),
            Err(e) => panic!("unexpected error {e}"),
            Ok(_) => panic!("connected to a closed port"),
        }
    }
}
