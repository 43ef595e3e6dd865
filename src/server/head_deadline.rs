//! `timeouts.header`: a total deadline on each HTTP/1 request head; `timeouts.idle`: how long
//! a connection may wait for its next request, and each read of a head may wait.
//!
//! pingora 0.9 reads a head with a bound on each read and none on the whole, so a client that
//! trickles one header byte every few seconds holds its connection (and a task) forever. The
//! proxy's app is wrapped in [`HeadDeadline`], which hands pingora the connection inside
//! [`HeadTimed`]: from the first byte of a request head until its empty line, reads fail once
//! the deadline has passed, and pingora closes the connection as it does after any read error.
//! Between heads (body, response) the deadline is off; the body bound is pingora's own, set
//! per request by the proxy.
//!
//! The idle bound is here too, not pingora's keep-alive timeout: pingora arms a timer for
//! every request's head read under a keep-alive timeout (a registration in its timer wheel
//! per request, about 2% of a proxied request's instructions), where this reads the clock
//! when a wait begins and keeps one timer per connection, moved only when it fires early. A
//! connection idle past the bound between requests reads as closed by the client (pingora
//! drops it quietly, as after its own keep-alive timeout); a head stalled past it fails as a
//! late head does.
//!
//! It also counts the heads pingora refuses with its own 400 before any hook of the proxy runs
//! (pingora's only other report of them is a debug log line, and keeping debug lines on for
//! it cost about 1% of every request's instructions): the proxy marks each head it sees
//! (`proxy::seen`, a task-local of the connection's task), and a final response head
//! written with status 400 for a head the proxy never saw is pingora's refusal.
//!
//! The wrapper sees bytes, not requests, so where a head starts is read off the traffic: the
//! first bytes of a connection, and the first bytes read after a final response head was
//! written (interim 1xx answers do not end a request; a 101 turns the connection into a tunnel
//! that is never timed). HTTP/2 (ALPN h2) is passed through untouched: its frames are not heads.

use crate::proxy::seen;
use async_trait::async_trait;
use pingora_core::apps::ServerApp;
use pingora_core::protocols::raw_connect::ProxyDigest;
use pingora_core::protocols::tls::{SslDigest, TlsRef};
use pingora_core::protocols::Stream;
use pingora_core::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl,
    TimingDigest, UniqueID, UniqueIDType, ALPN,
};
use pingora_core::server::ShutdownWatch;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// The bounds of one connection: (`timeouts.header`, `timeouts.idle`).
pub type Limits = (Duration, Duration);

/// Wraps a pingora app so every HTTP/1 connection it serves has a total head deadline and an
/// idle bound; `limit` is asked per connection, so a reload's new `timeouts.header` and
/// `timeouts.idle` apply to the connections that come after it. `refused` is called for each
/// head pingora refuses itself.
pub struct HeadDeadline<A> {
    inner: Arc<A>,
    limit: Box<dyn Fn() -> Limits + Send + Sync>,
    refused: fn(),
}

impl<A> HeadDeadline<A> {
    pub fn new(
        inner: A,
        limit: impl Fn() -> Limits + Send + Sync + 'static,
        refused: fn(),
    ) -> Self {
        HeadDeadline {
            inner: Arc::new(inner),
            limit: Box::new(limit),
            refused,
        }
    }
}

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> ServerApp for HeadDeadline<A> {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        if matches!(stream.selected_alpn_proto(), Some(ALPN::H2)) {
            return self.inner.process_new(stream, shutdown).await;
        }
        let (head, idle) = (self.limit)();
        let timed = HeadTimed::new(stream, head, idle, self.refused);
        seen::scope(self.inner.process_new(Box::new(timed), shutdown)).await
    }

    async fn cleanup(&self) {
        self.inner.cleanup().await
    }
}

/// Where the connection is, as far as heads go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for a head's first byte: no deadline.
    Between,
    /// Inside a head: the deadline runs.
    Head,
    /// The head ended; its response has not been written yet.
    Answering,
    /// A 101 was written: whatever flows now is not HTTP.
    Tunnel,
}

/// The scan for a head's end: an empty line (`CRLF CRLF`, or a bare `LF LF`, which pingora's
/// parser accepts too, and the proxy then refuses). Empty lines before the request line are
/// skipped, as RFC 9112 2.2 allows.
#[derive(Debug, Default, Clone, Copy)]
struct HeadEnd {
    /// The current line has a byte other than CR.
    filled: bool,
    /// A non-empty line has been seen.
    started: bool,
}

impl HeadEnd {
    /// Feeds `bytes`; the offset just past the head's end, if it is in them. One `memchr` a
    /// line and a look at its first bytes: this runs on every read of every request.
    fn feed(&mut self, bytes: &[u8]) -> Option<usize> {
        let mut at = 0;
        while let Some(i) = memchr::memchr(b'\n', &bytes[at..]) {
            let filled = self.filled || bytes[at..at + i].iter().any(|&b| b != b'\r');
            at += i + 1;
            if !filled && self.started {
                *self = HeadEnd::default();
                return Some(at);
            }
            self.started |= filled;
            self.filled = false;
        }
        self.filled |= bytes[at..].iter().any(|&b| b != b'\r');
        None
    }
}

/// The status of a response head starting `buf`, if it is one.
fn status(buf: &[u8]) -> Option<&[u8]> {
    buf.strip_prefix(b"HTTP/1.")
        .and_then(|r| r.get(2..5))
        .filter(|s| s.iter().all(u8::is_ascii_digit))
}

/// What writing `buf` says about the request being answered, when it is the first write since
/// the head ended: `Some(phase)` once it is known.
fn after_response_head(buf: &[u8]) -> Option<Phase> {
    match status(buf) {
        Some(b"101") => Some(Phase::Tunnel),
        // 100 Continue, 103 Early Hints: the final answer is still to come.
        Some(s) if s[0] == b'1' => None,
        _ => Some(Phase::Between),
    }
}

/// A connection whose request heads must each arrive within `limit` of their first byte, and
/// which waits at most `idle` for a request or for the next bytes of its head; `refused` is
/// called for each head pingora refuses itself.
#[derive(Debug)]
pub struct HeadTimed {
    inner: Stream,
    heads: Heads,
    refused: fn(),
}

impl HeadTimed {
    pub fn new(inner: Stream, limit: Duration, idle: Duration, refused: fn()) -> Self {
        HeadTimed {
            inner,
            refused,
            heads: Heads {
                limit,
                idle,
                phase: Phase::Between,
                end: HeadEnd::default(),
                due: None,
                waiting: None,
                timer: None,
            },
        }
    }
}

/// Which bound a waiting read ran past.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Late {
    /// No request came within `idle`: the connection ends as if the client had closed it.
    Idle,
    /// A head did not arrive whole within `limit`, or stalled for `idle`.
    Head,
}

/// The head deadline costs nothing while heads arrive whole: `due` is set only when a head
/// spans reads (measured from the read that brought its first bytes), the clock is read only
/// then. The idle bound costs a clock read when a wait begins; the one timer serves both, and
/// it is moved only when it fires before what it waits for is due.
#[derive(Debug)]
struct Heads {
    limit: Duration,
    idle: Duration,
    phase: Phase,
    end: HeadEnd,
    due: Option<Instant>,
    /// Since when a read has been waiting (between requests or inside a head), if one is.
    waiting: Option<Instant>,
    /// Armed for `.1`; boxed and made on a connection's first wait.
    timer: Option<(Pin<Box<Sleep>>, Instant)>,
}

impl Heads {
    /// Accounts for `bytes` just read.
    fn saw(&mut self, bytes: &[u8]) {
        self.waiting = None;
        if bytes.is_empty() {
            return;
        }
        if self.phase == Phase::Between {
            self.phase = Phase::Head;
            self.end = HeadEnd::default();
            self.due = None;
        }
        if self.phase == Phase::Head {
            if self.end.feed(bytes).is_some() {
                self.phase = Phase::Answering;
                self.due = None;
            } else if self.due.is_none() {
                self.due = Some(Instant::now() + self.limit);
            }
        }
    }

    /// A head whose deadline has passed (a trickle keeps reads ready, so the clock is asked).
    fn overdue(&self) -> bool {
        self.phase == Phase::Head && self.due.is_some_and(|d| Instant::now() >= d)
    }

    /// A read is waiting: the task is woken when the head deadline or the idle bound comes;
    /// which one has passed, if one has. A request's body and a tunnel are not bounded here.
    fn wait_out(&mut self, cx: &mut Context<'_>) -> Option<Late> {
        if !matches!(self.phase, Phase::Between | Phase::Head) {
            return None;
        }
        let since = *self.waiting.get_or_insert_with(Instant::now);
        let idle_due = since + self.idle;
        let head_due = self.due.filter(|_| self.phase == Phase::Head);
        let due = head_due.map_or(idle_due, |h| h.min(idle_due));
        let (timer, armed) = self
            .timer
            .get_or_insert_with(|| (Box::pin(tokio::time::sleep_until(due)), due));
        // Armed for later than needed (a head deadline sooner than the idle bound): moved now.
        // Armed for sooner (a wait that ended since): it fires early once and is moved then.
        if *armed > due {
            timer.as_mut().reset(due);
            *armed = due;
        }
        while timer.as_mut().poll(cx).is_ready() {
            let now = Instant::now();
            if now >= due {
                return Some(match self.phase {
                    Phase::Head => Late::Head,
                    _ => Late::Idle,
                });
            }
            timer.as_mut().reset(due);
            *armed = due;
        }
        None
    }
}

fn timed_out() -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        "request head not complete within timeouts.header (or stalled for timeouts.idle)",
    )
}

impl AsyncRead for HeadTimed {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let me = &mut *self;
        if me.heads.overdue() {
            return Poll::Ready(Err(timed_out()));
        }
        let before = buf.filled().len();
        let r = Pin::new(&mut me.inner).poll_read(cx, buf);
        match r {
            Poll::Ready(Ok(())) => me.heads.saw(&buf.filled()[before..]),
            // A one-byte read is pingora's probe for the client's close while a response is
            // under way (`HttpSession::idle`): the connection is busy, not idle.
            Poll::Pending if buf.remaining() <= 1 => {}
            Poll::Pending => match me.heads.wait_out(cx) {
                // Nothing read: pingora takes it for the client's close and drops the
                // connection without a word, as after its own keep-alive timeout.
                Some(Late::Idle) => return Poll::Ready(Ok(())),
                Some(Late::Head) => return Poll::Ready(Err(timed_out())),
                None => {}
            },
            _ => {}
        }
        r
    }
}

impl HeadTimed {
    /// `first` (the start of a write that went out) is the answer to the head being read or
    /// just read: a final one ends the request; a 400 to a head the proxy never saw is
    /// pingora's refusal. (Inside a head, only pingora answers: it refuses before the end.)
    fn wrote(&mut self, first: &[u8]) {
        if !matches!(self.heads.phase, Phase::Head | Phase::Answering) {
            return;
        }
        let Some(next) = after_response_head(first) else {
            return;
        };
        self.heads.phase = next;
        if seen::take() == Some(false) && status(first) == Some(b"400") {
            (self.refused)();
        }
    }
}

impl AsyncWrite for HeadTimed {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let me = &mut *self;
        let r = Pin::new(&mut me.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = r {
            if n > 0 {
                me.wrote(buf);
            }
        }
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let me = &mut *self;
        let r = Pin::new(&mut me.inner).poll_write_vectored(cx, bufs);
        if let (Poll::Ready(Ok(n)), Some(first)) = (&r, bufs.iter().find(|b| !b.is_empty())) {
            if *n > 0 {
                me.wrote(first);
            }
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[async_trait]
impl Shutdown for HeadTimed {
    async fn shutdown(&mut self) {
        self.inner.shutdown().await
    }
}

impl UniqueID for HeadTimed {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

impl Ssl for HeadTimed {
    fn get_ssl(&self) -> Option<&TlsRef> {
        self.inner.get_ssl()
    }

    fn get_ssl_digest(&self) -> Option<Arc<SslDigest>> {
        self.inner.get_ssl_digest()
    }

    fn selected_alpn_proto(&self) -> Option<ALPN> {
        self.inner.selected_alpn_proto()
    }
}

impl GetTimingDigest for HeadTimed {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        self.inner.get_timing_digest()
    }

    fn get_read_pending_time(&self) -> Duration {
        self.inner.get_read_pending_time()
    }

    fn get_write_pending_time(&self) -> Duration {
        self.inner.get_write_pending_time()
    }
}

impl GetProxyDigest for HeadTimed {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        self.inner.get_proxy_digest()
    }

    fn set_proxy_digest(&mut self, digest: ProxyDigest) {
        self.inner.set_proxy_digest(digest)
    }
}

impl GetSocketDigest for HeadTimed {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.inner.get_socket_digest()
    }

    fn set_socket_digest(&mut self, digest: SocketDigest) {
        self.inner.set_socket_digest(digest)
    }
}

#[async_trait]
impl Peek for HeadTimed {
    async fn try_peek(&mut self, buf: &mut [u8]) -> io::Result<bool> {
        self.inner.try_peek(buf).await
    }
}

#[cfg(test)]
mod tests {
    use super::{after_response_head, HeadEnd, Phase};

    fn ends(chunks: &[&[u8]]) -> Vec<Option<usize>> {
        let mut e = HeadEnd::default();
        chunks.iter().map(|c| e.feed(c)).collect()
    }

    #[test]
    fn a_head_ends_at_its_empty_line_across_reads() {
        assert_eq!(
            ends(&[b"GET / HTTP/1.1\r\nHost: a\r\n\r\nbody"]),
            [Some(27)]
        );
        assert_eq!(
            ends(&[b"GET / HTTP/1.1\r", b"\nHost: a\r\n\r", b"\n"]),
            [None, None, Some(1)]
        );
        assert_eq!(ends(&[b"GET / HTTP/1.1\nHost: a\n\n"]), [Some(24)]);
        // Empty lines before the request line are not its end.
        assert_eq!(ends(&[b"\r\n\r\nGET / HTTP/1.1\r\n\r\n"]), [Some(22)]);
        assert_eq!(ends(&[b"GET / HTTP/1.1\r\nX: \r\n"]), [None]);
    }

    #[test]
    fn only_a_final_response_head_ends_a_request_and_101_makes_a_tunnel() {
        assert_eq!(
            after_response_head(b"HTTP/1.1 200 OK\r\n"),
            Some(Phase::Between)
        );
        assert_eq!(
            after_response_head(b"HTTP/1.0 400 Bad"),
            Some(Phase::Between)
        );
        assert_eq!(after_response_head(b"HTTP/1.1 100 Continue\r\n\r\n"), None);
        assert_eq!(after_response_head(b"HTTP/1.1 103 Early Hints"), None);
        assert_eq!(
            after_response_head(b"HTTP/1.1 101 Switching Protocols"),
            Some(Phase::Tunnel)
        );
        assert_eq!(after_response_head(b"whatever"), Some(Phase::Between));
    }
}
