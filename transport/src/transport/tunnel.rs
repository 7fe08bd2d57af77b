//! The byte stream an inner SSH session rides through a jump host, with its
//! two directions decoupled.
//!
//! A `-J` hop carries the next hop's whole SSH connection in one
//! `direct-tcpip` channel of the jump connection. russh's session loop (the
//! inner one, reading and writing that channel) stops reading while it
//! flushes its output; and the outer loop delivers the channel's incoming
//! data into a bounded queue, waiting when it is full. At a long RTT the
//! outer channel's send window (OpenSSH's 2 MiB) runs out in the middle of a
//! push: the inner loop waits in its write for a window adjust, stops
//! reading, the tunnel's queue fills with the registry's replies, the outer
//! loop waits to deliver them and never reads the window adjust the inner
//! write waits for. Both loops wait on each other for good (seen in
//! `bench/run --only wan` at 50 ms RTT: a push stalled with no CPU use).
//!
//! [`decouple`] breaks the cycle: a task drains the tunnel into a queue, and
//! a second task feeds the queue to the inner session at its own pace. The
//! queue holds at most [`QUEUE_LIMIT`] bytes while the inner session's
//! writes move; beyond it the tunnel is left unread, and the jump's flow
//! control holds the registry back (as a direct connection's full socket
//! buffer does), so the inner session's channel windows can be large without
//! becoming client memory: a slow disk under a fast link no longer queues a
//! whole window. Only while a write to the tunnel is under way (possibly
//! waiting for window) does the drain go past the limit, so the outer loop
//! always gets to the window adjust that write waits for. So a connection
//! that writes in bulk while it reads in bulk (a shim serving a push and a
//! pull at once through a jump) can still queue up to the inner window;
//! a pull or a push alone stays within the limit.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream};
use tokio::sync::{mpsc, Notify};

/// Size of the in-memory pipe between the inner session and the relay
/// tasks (a buffer each way).
const PIPE: usize = 256 << 10;

/// Largest read from the tunnel at a time.
const READ: usize = 64 << 10;

/// Most bytes waiting for the inner session before the tunnel is left
/// unread (see [`decouple`]).
const QUEUE_LIMIT: usize = 8 << 20;

/// What the relay tasks tell each other: how many bytes wait for the inner
/// session, and whether a write to the tunnel is under way.
#[derive(Default)]
struct Backlog {
    queued: AtomicUsize,
    writing: AtomicBool,
    changed: Notify,
}

impl Backlog {
    /// Whether the drain may take more off the tunnel.
    fn may_read(&self) -> bool {
        self.queued.load(Ordering::Acquire) < QUEUE_LIMIT || self.writing.load(Ordering::Acquire)
    }

    /// Returns once [`Self::may_read`] holds.
    async fn until_may_read(&self) {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if self.may_read() {
                return;
            }
            changed.await;
        }
    }

    fn queued(&self, n: usize) {
        self.queued.fetch_add(n, Ordering::AcqRel);
    }

    fn fed(&self, n: usize) {
        self.queued.fetch_sub(n, Ordering::AcqRel);
        self.changed.notify_waiters();
    }

    fn writing(&self, now: bool) {
        self.writing.store(now, Ordering::Release);
        if now {
            self.changed.notify_waiters();
        }
    }
}

/// A stream for the inner session whose writes never wait on its reads:
/// what the tunnel delivers is taken off it into a bounded queue, and past
/// the bound still whenever a write is under way (see the module comment),
/// while writes reach the tunnel in order, as fast as it accepts them. The
/// relay tasks end when either side closes.
pub(crate) fn decouple<S>(tunnel: S) -> DuplexStream
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (inner, relay) = tokio::io::duplex(PIPE);
    let (mut tunnel_read, mut tunnel_write) = tokio::io::split(tunnel);
    let (mut relay_read, mut relay_write) = tokio::io::split(relay);
    let (queue_tx, mut queue) = mpsc::unbounded_channel::<Bytes>();
    let backlog = Arc::new(Backlog::default());

    // tunnel → queue: up to the limit, or while a write waits.
    let drain = backlog.clone();
    tokio::spawn(async move {
        let mut buf = vec![0u8; READ];
        loop {
            drain.until_may_read().await;
            match tunnel_read.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    drain.queued(n);
                    if queue_tx.send(Bytes::copy_from_slice(&buf[..n])).is_err() {
                        break;
                    }
                }
            }
        }
    });
    // queue → inner session, at its pace.
    let feed = backlog.clone();
    tokio::spawn(async move {
        while let Some(chunk) = queue.recv().await {
            if relay_write.write_all(&chunk).await.is_err() {
                return;
            }
            feed.fed(chunk.len());
        }
        let _ = relay_write.shutdown().await;
    });
    // inner session → tunnel.
    tokio::spawn(async move {
        let mut buf = vec![0u8; READ];
        loop {
            let n = match relay_read.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            backlog.writing(true);
            let sent = async {
                tunnel_write.write_all(&buf[..n]).await?;
                tunnel_write.flush().await
            }
            .await;
            backlog.writing(false);
            if sent.is_err() {
                break;
            }
        }
        let _ = tunnel_write.shutdown().await;
    });
    inner
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::pin::Pin;
    use std::sync::{Arc, Mutex};
    use std::task::{Context, Poll, Waker};
    use std::time::Duration;

    /// A tunnel with a jump channel's flow control reduced to its core: it
    /// accepts `window` bytes of writes, and more only after `refill` bytes
    /// of what it has to deliver have been read (the window adjust arrives
    /// behind the registry's replies, and only a reader gets to it).
    struct WindowedTunnel {
        state: Arc<Mutex<TunnelState>>,
    }

    struct TunnelState {
        window: usize,
        to_deliver: Vec<u8>,
        delivered: usize,
        refill_after: usize,
        refill: usize,
        written: usize,
        writer: Option<Waker>,
        reader: Option<Waker>,
    }

    impl AsyncRead for WindowedTunnel {
        fn poll_read(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut tokio::io::ReadBuf<'_>,
        ) -> Poll<std::io::Result<()>> {
            let mut s = self.state.lock().unwrap();
            if s.delivered == s.to_deliver.len() {
                s.reader = Some(cx.waker().clone());
                return Poll::Pending;
            }
            let n = buf
                .remaining()
                .min(s.to_deliver.len() - s.delivered)
                .min(1024);
            let start = s.delivered;
            buf.put_slice(&s.to_deliver[start..start + n]);
            s.delivered += n;
            if s.delivered >= s.refill_after {
                s.window += s.refill;
                s.refill_after = usize::MAX;
                if let Some(w) = s.writer.take() {
                    w.wake();
                }
            }
            Poll::Ready(Ok(()))
        }
    }

    impl AsyncWrite for WindowedTunnel {
        fn poll_write(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            data: &[u8],
        ) -> Poll<std::io::Result<usize>> {
            let mut s = self.state.lock().unwrap();
            if s.window == 0 {
                s.writer = Some(cx.waker().clone());
                return Poll::Pending;
            }
            let n = data.len().min(s.window);
            s.window -= n;
            s.written += n;
            Poll::Ready(Ok(n))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    fn tunnel() -> (WindowedTunnel, Arc<Mutex<TunnelState>>) {
        tunnel_with_replies(4 << 20)
    }

    /// The model with `replies` bytes queued in front of the window adjust.
    fn tunnel_with_replies(replies: usize) -> (WindowedTunnel, Arc<Mutex<TunnelState>>) {
        let state = Arc::new(Mutex::new(TunnelState {
            window: 1 << 20,
            // The registry's replies queued in front of the window adjust.
            to_deliver: vec![7u8; replies],
            delivered: 0,
            refill_after: replies,
            refill: 8 << 20,
            written: 0,
            writer: None,
            reader: None,
        }));
        (
            WindowedTunnel {
                state: state.clone(),
            },
            state,
        )
    }

    /// The way russh's session loop uses its stream: write everything
    /// pending, and only then read (all `replies` bytes).
    async fn write_then_read(stream: impl AsyncRead + AsyncWrite + Unpin) -> usize {
        write_then_read_replies(stream, 4 << 20).await
    }

    async fn write_then_read_replies(
        mut stream: impl AsyncRead + AsyncWrite + Unpin,
        replies: usize,
    ) -> usize {
        stream.write_all(&vec![1u8; 3 << 20]).await.unwrap();
        stream.flush().await.unwrap();
        let mut buf = vec![0u8; replies];
        stream.read_exact(&mut buf).await.unwrap();
        buf.len()
    }

    /// Bounds a hang, generously: the decoupled stream finishes in
    /// milliseconds.
    const HANG: Duration = Duration::from_secs(60);

    #[tokio::test]
    async fn a_write_waiting_for_window_does_not_stop_the_tunnel_being_read() {
        let (t, state) = tunnel();
        let read = tokio::time::timeout(HANG, write_then_read(decouple(t)))
            .await
            .expect("the write completed once the tunnel was drained");
        assert_eq!(read, 4 << 20);
        assert_eq!(state.lock().unwrap().written, 3 << 20);
    }

    #[tokio::test]
    async fn the_raw_tunnel_deadlocks_the_same_way() {
        // The model is faithful: without decoupling, the same session
        // waits for ever (stopped here after a short wait: it cannot finish).
        let (t, state) = tunnel();
        let stuck = tokio::time::timeout(Duration::from_millis(300), write_then_read(t)).await;
        assert!(stuck.is_err(), "the raw tunnel must not make progress");
        let s = state.lock().unwrap();
        assert_eq!(s.written, 1 << 20, "only the first window was written");
        assert_eq!(s.delivered, 0, "nothing was read while the write waited");
    }

    #[tokio::test]
    async fn a_write_waiting_for_window_drains_past_the_queue_limit() {
        // More replies in front of the window adjust than the queue holds:
        // a queue that stopped at its limit would wait for the inner
        // session, which waits for the window: the same deadlock.
        let replies = QUEUE_LIMIT * 2;
        let (t, state) = tunnel_with_replies(replies);
        let read = tokio::time::timeout(HANG, write_then_read_replies(decouple(t), replies))
            .await
            .expect("the write completed once the tunnel was drained");
        assert_eq!(read, replies);
        assert_eq!(state.lock().unwrap().written, 3 << 20);
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_reader_holds_the_tunnel_back_instead_of_queueing_it_all() {
        // A pull whose client writes slower than the link delivers: nothing
        // is written, the tunnel has far more to deliver than the limit.
        let total = QUEUE_LIMIT * 4;
        let (t, state) = tunnel_with_replies(total);
        state.lock().unwrap().refill_after = usize::MAX;
        let mut inner = decouple(t);
        // With the clock paused, the runtime moves it on only once every
        // task waits: this returns when the relay tasks have stopped.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let taken = state.lock().unwrap().delivered;
        assert!(
            taken <= QUEUE_LIMIT + PIPE + READ,
            "took {taken} bytes off the tunnel for a reader that read none"
        );
        // Everything still arrives, in order, once the reader reads.
        let mut buf = vec![0u8; total];
        inner.read_exact(&mut buf).await.unwrap();
        assert!(buf.iter().all(|&b| b == 7));
        assert_eq!(state.lock().unwrap().delivered, total);
    }
}
