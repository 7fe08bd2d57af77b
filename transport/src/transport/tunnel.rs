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
//! [`decouple`] breaks the cycle: a task always drains the tunnel into an
//! unbounded queue, so the outer loop never waits on the inner one, and a
//! second task feeds the queue to the inner session at its own pace. The
//! queue stays small: the registry cannot send more than the inner
//! session's channel windows allow, and the inner loop grants more window
//! only while it reads.

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream};
use tokio::sync::mpsc;

/// Size of the in-memory pipe between the inner session and the relay
/// tasks (a buffer each way).
const PIPE: usize = 256 << 10;

/// Largest read from the tunnel at a time.
const READ: usize = 64 << 10;

/// A stream for the inner session whose reads never hold up the tunnel:
/// everything the tunnel delivers is taken off it at once (see the module
/// comment), while writes reach the tunnel in order, as fast as it accepts
/// them. The relay tasks end when either side closes.
pub(crate) fn decouple<S>(tunnel: S) -> DuplexStream
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (inner, relay) = tokio::io::duplex(PIPE);
    let (mut tunnel_read, mut tunnel_write) = tokio::io::split(tunnel);
    let (mut relay_read, mut relay_write) = tokio::io::split(relay);
    let (queued, mut queue) = mpsc::unbounded_channel::<Bytes>();

    // tunnel → queue: never waits for the inner session.
    tokio::spawn(async move {
        let mut buf = vec![0u8; READ];
        loop {
            match tunnel_read.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if queued.send(Bytes::copy_from_slice(&buf[..n])).is_err() {
                        break;
                    }
                }
            }
        }
    });
    // queue → inner session, at its pace.
    tokio::spawn(async move {
        while let Some(chunk) = queue.recv().await {
            if relay_write.write_all(&chunk).await.is_err() {
                return;
            }
        }
        let _ = relay_write.shutdown().await;
    });
    // inner session → tunnel.
    tokio::spawn(async move {
        let _ = tokio::io::copy(&mut relay_read, &mut tunnel_write).await;
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
        let state = Arc::new(Mutex::new(TunnelState {
            window: 1 << 20,
            // The registry's replies queued in front of the window adjust.
            to_deliver: vec![7u8; 4 << 20],
            delivered: 0,
            refill_after: 4 << 20,
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
    /// pending, and only then read.
    async fn write_then_read(mut stream: impl AsyncRead + AsyncWrite + Unpin) -> usize {
        stream.write_all(&vec![1u8; 3 << 20]).await.unwrap();
        stream.flush().await.unwrap();
        let mut buf = vec![0u8; 4 << 20];
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
}
