//! Streams opened ahead of demand ("warm") for `berth shim` (issue 17).
//!
//! Over `ssh://` a new stream is a new subsystem channel of the shared SSH
//! connection: channel open and subsystem request, two round trips before a
//! tool's first request can go out. skopeo opens a new TCP connection for
//! most blob requests, so on a long link those round trips added up (a push
//! at 20 ms RTT took 1.66× skopeo → distribution). A [`WarmPool`] keeps a
//! few streams open so that an accepted connection takes one at once, and a
//! background task opens the replacement.
//!
//! A warm stream must still be usable when it is taken:
//! * the registry closes a connection that sends no request head within its
//!   header timeout (30 s by default), so a stream is discarded
//!   [`MAX_AGE`] after its open began, well before that;
//! * a stream whose other end has closed (the server, or the SSH
//!   connection dropping) is discarded when taken ([`still_open`]: one
//!   read polled without waiting);
//! * the pool refills only while connections come: after [`KEEP_WARM`]
//!   without one, expired streams are not replaced (an idle shim opens
//!   nothing), and the next connection opens its own stream and re-arms the
//!   pool.
//!
//! Errors: a background open that fails stops the refill until the next
//! connection, which then opens a stream itself when the pool is empty, so
//! the tool is answered with the real error (the shim's 502), never with
//! one the pool kept.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tokio::io::{AsyncRead, ReadBuf};
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::transport::{Stream, TransportError};

/// Age (from the start of its open) at which a warm stream is discarded
/// unused: a third of berth-server's default 30 s header timeout, so the
/// server has not given up on it when the tool's first request arrives.
pub const MAX_AGE: Duration = Duration::from_secs(10);

/// How long after the last connection the pool keeps replacing expired
/// streams.
pub const KEEP_WARM: Duration = Duration::from_secs(60);

/// Largest pool `--warm` accepts: far below berth-server's default of 64
/// channels per connection, which the tool's own connections share.
pub const MAX_WARM: usize = 16;

/// A pending open, as the pool's opener returns it.
pub type OpenFuture = Pin<Box<dyn Future<Output = Result<Stream, TransportError>> + Send>>;

/// How the pool opens a stream (`Transport::open` in the shim).
pub type Opener = Arc<dyn Fn() -> OpenFuture + Send + Sync>;

/// Where a taken stream comes from, which decides what may be retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// Opened ahead of demand: its other end may have closed since.
    Warm,
    /// Opened for this connection just now.
    Fresh,
}

/// Up to `size` streams opened ahead of demand, refilled in the background.
pub struct WarmPool {
    inner: Arc<Inner>,
    /// Wakes the filler; shared with it so it can wait without keeping
    /// the pool alive.
    wake: Arc<Notify>,
}

struct Inner {
    open: Opener,
    size: usize,
    max_age: Duration,
    keep_warm: Duration,
    state: Mutex<State>,
}

struct State {
    /// Opened streams, roughly oldest first.
    ready: VecDeque<Warm>,
    /// Background opens under way.
    opening: usize,
    /// The last connection (or the pool's start).
    last_demand: Instant,
    /// A background open failed: no refill until the next connection.
    failed: bool,
}

struct Warm {
    /// When its open began (the server's header timer starts after that).
    since: Instant,
    stream: Stream,
}

impl WarmPool {
    /// A pool of `size` streams (at most [`MAX_WARM`]) made by `open`,
    /// filled from now on; `size` 0 opens every stream on demand. Must be
    /// called inside a Tokio runtime.
    pub fn new(open: Opener, size: usize) -> WarmPool {
        WarmPool::with_ages(open, size, MAX_AGE, KEEP_WARM)
    }

    /// [`WarmPool::new`] with other ages (tests).
    pub fn with_ages(
        open: Opener,
        size: usize,
        max_age: Duration,
        keep_warm: Duration,
    ) -> WarmPool {
        let inner = Arc::new(Inner {
            open,
            size: size.min(MAX_WARM),
            max_age,
            keep_warm,
            state: Mutex::new(State {
                ready: VecDeque::new(),
                opening: 0,
                last_demand: Instant::now(),
                failed: false,
            }),
        });
        let wake = Arc::new(Notify::new());
        if inner.size > 0 {
            tokio::spawn(fill(Arc::downgrade(&inner), wake.clone()));
        }
        WarmPool { inner, wake }
    }

    /// A stream for a new connection: the oldest warm one still usable,
    /// else one opened now (whose error is the caller's to report).
    pub async fn take(&self) -> Result<(Stream, Origin), TransportError> {
        if self.inner.size == 0 {
            return Ok((self.open_fresh().await?, Origin::Fresh));
        }
        let now = Instant::now();
        let mut stale = Vec::new();
        let picked = {
            let mut st = self.inner.lock();
            st.last_demand = now;
            st.failed = false;
            let mut picked = None;
            while let Some(mut w) = st.ready.pop_front() {
                if self.inner.usable(&mut w, now) {
                    picked = Some(w.stream);
                    break;
                }
                stale.push(w);
            }
            picked
        };
        drop(stale);
        self.wake.notify_one();
        match picked {
            Some(s) => Ok((s, Origin::Warm)),
            None => Ok((self.open_fresh().await?, Origin::Fresh)),
        }
    }

    /// A stream opened now, bypassing the pool (for a retry after a warm
    /// stream failed).
    pub async fn open_fresh(&self) -> Result<Stream, TransportError> {
        (self.inner.open)().await
    }

    /// Streams ready now (tests and diagnostics).
    pub fn ready(&self) -> usize {
        self.inner.lock().ready.len()
    }
}

impl Drop for WarmPool {
    /// Wakes the filler so it sees the pool gone and ends.
    fn drop(&mut self) {
        self.wake.notify_one();
    }
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether a warm stream may still be handed out at `now`: younger
    /// than the age limit and still open.
    fn usable(&self, w: &mut Warm, now: Instant) -> bool {
        now.duration_since(w.since) < self.max_age && still_open(&mut w.stream)
    }
}

/// Whether a stream's other end may still answer: one read polled without
/// waiting must be pending. End of stream or an error means it closed;
/// bytes mean the server spoke before any request (a timeout answer), so
/// the stream is unusable as well (the byte read is lost with it).
fn still_open(stream: &mut Stream) -> bool {
    let mut cx = Context::from_waker(Waker::noop());
    let mut byte = [0u8; 1];
    let mut buf = ReadBuf::new(&mut byte);
    matches!(Pin::new(stream).poll_read(&mut cx, &mut buf), Poll::Pending)
}

/// The background task: drops expired streams, opens replacements while
/// connections come, sleeps until the next expiry or the next take. Ends
/// when the pool is dropped.
async fn fill(pool: Weak<Inner>, wake: Arc<Notify>) {
    loop {
        let Some(inner) = pool.upgrade() else { return };
        let now = Instant::now();
        let mut stale = Vec::new();
        let (want, next_expiry) = {
            let mut st = inner.lock();
            let mut kept = VecDeque::with_capacity(st.ready.len());
            for mut w in st.ready.drain(..) {
                if inner.usable(&mut w, now) {
                    kept.push_back(w);
                } else {
                    stale.push(w);
                }
            }
            st.ready = kept;
            let active = now.duration_since(st.last_demand) < inner.keep_warm;
            let want = if active && !st.failed {
                inner.size.saturating_sub(st.ready.len() + st.opening)
            } else {
                0
            };
            st.opening += want;
            let next = st.ready.iter().map(|w| w.since + inner.max_age).min();
            (want, next)
        };
        drop(stale);
        for _ in 0..want {
            tokio::spawn(open_one(pool.clone(), inner.open.clone(), wake.clone()));
        }
        drop(inner);
        match next_expiry {
            Some(at) => {
                tokio::select! {
                    _ = wake.notified() => {}
                    _ = tokio::time::sleep_until(at) => {}
                }
            }
            None => wake.notified().await,
        }
    }
}

/// One background open; its stream joins the pool, or its failure stops
/// the refill until the next connection.
async fn open_one(pool: Weak<Inner>, open: Opener, wake: Arc<Notify>) {
    let since = Instant::now();
    let result = open().await;
    let Some(inner) = pool.upgrade() else { return };
    {
        let mut st = inner.lock();
        st.opening -= 1;
        match result {
            Ok(stream) => st.ready.push_back(Warm { since, stream }),
            Err(e) => {
                tracing::debug!("opening a warm stream failed: {e}");
                st.failed = true;
            }
        }
    }
    wake.notify_one();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::Diagnostics;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

    /// An opener of in-memory streams that counts its opens and hands the
    /// far ends to the test; `fail` makes every open fail.
    struct Fake {
        opens: Arc<AtomicUsize>,
        ends: Arc<Mutex<Vec<DuplexStream>>>,
        fail: Arc<std::sync::atomic::AtomicBool>,
        opened: Arc<Notify>,
    }

    impl Fake {
        fn new() -> Fake {
            Fake {
                opens: Arc::default(),
                ends: Arc::default(),
                fail: Arc::default(),
                opened: Arc::new(Notify::new()),
            }
        }

        fn opener(&self) -> Opener {
            let (opens, ends, fail, opened) = (
                self.opens.clone(),
                self.ends.clone(),
                self.fail.clone(),
                self.opened.clone(),
            );
            Arc::new(move || {
                let (opens, ends, fail, opened) =
                    (opens.clone(), ends.clone(), fail.clone(), opened.clone());
                Box::pin(async move {
                    opens.fetch_add(1, Ordering::SeqCst);
                    let result = if fail.load(Ordering::SeqCst) {
                        Err(TransportError::NoUser)
                    } else {
                        let (near, far) = tokio::io::duplex(1024);
                        ends.lock().unwrap().push(far);
                        Ok(Stream::new(near, Diagnostics::default()))
                    };
                    opened.notify_one();
                    result
                })
            })
        }
    }

    /// Bounds a wait for an event of the pool, only so that a bug fails
    /// the test instead of hanging it.
    const HANG: Duration = Duration::from_secs(60);

    /// Waits (bounded) until `pool` holds `n` ready streams.
    async fn until_ready(pool: &WarmPool, n: usize) {
        tokio::time::timeout(HANG, async {
            while pool.ready() != n {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("the pool never reached its size");
    }

    #[tokio::test]
    async fn a_taken_stream_was_opened_before_and_is_replaced() {
        let fake = Fake::new();
        let pool = WarmPool::new(fake.opener(), 1);
        until_ready(&pool, 1).await;
        assert_eq!(fake.opens.load(Ordering::SeqCst), 1);
        let (mut s, origin) = pool.take().await.unwrap();
        assert_eq!(origin, Origin::Warm);
        // The stream is the first far end's peer: bytes written reach it.
        s.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        let mut far = fake.ends.lock().unwrap().remove(0);
        let mut got = [0u8; 4];
        far.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"GET ");
        until_ready(&pool, 1).await;
        assert_eq!(fake.opens.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_closed_stream_is_not_handed_out() {
        let fake = Fake::new();
        let pool = WarmPool::new(fake.opener(), 1);
        until_ready(&pool, 1).await;
        // The server side closes the warm stream.
        fake.ends.lock().unwrap().clear();
        let (_s, origin) = pool.take().await.unwrap();
        assert_eq!(origin, Origin::Fresh);
    }

    #[tokio::test(start_paused = true)]
    async fn streams_expire_and_an_idle_pool_stops_refilling() {
        let fake = Fake::new();
        let pool = WarmPool::with_ages(
            fake.opener(),
            1,
            Duration::from_secs(10),
            Duration::from_secs(25),
        );
        until_ready(&pool, 1).await;
        // Expired at 10 s and 20 s, replaced each time; not at 30 s.
        tokio::time::sleep(Duration::from_secs(40)).await;
        assert_eq!(fake.opens.load(Ordering::SeqCst), 3);
        assert_eq!(pool.ready(), 0);
        // A connection opens its own stream and re-arms the pool.
        let (_s, origin) = pool.take().await.unwrap();
        assert_eq!(origin, Origin::Fresh);
        until_ready(&pool, 1).await;
        assert_eq!(fake.opens.load(Ordering::SeqCst), 5);
    }

    #[tokio::test]
    async fn a_failed_background_open_leaves_the_error_to_the_connection() {
        let fake = Fake::new();
        fake.fail.store(true, Ordering::SeqCst);
        let pool = WarmPool::new(fake.opener(), 2);
        tokio::time::timeout(HANG, async {
            while fake.opens.load(Ordering::SeqCst) < 2 {
                fake.opened.notified().await;
            }
        })
        .await
        .unwrap();
        let err = pool.take().await.err().expect("no stream can be opened");
        assert!(matches!(err, TransportError::NoUser), "{err}");
        // The connection re-armed the pool: two more background opens fail
        // (2 at the start, the connection's own, 2 more).
        tokio::time::timeout(HANG, async {
            while fake.opens.load(Ordering::SeqCst) < 5 {
                fake.opened.notified().await;
            }
        })
        .await
        .unwrap();
        fake.fail.store(false, Ordering::SeqCst);
        let (_s, origin) = pool.take().await.unwrap();
        assert_eq!(origin, Origin::Fresh);
    }

    #[tokio::test]
    async fn size_zero_opens_on_demand_only() {
        let fake = Fake::new();
        let pool = WarmPool::new(fake.opener(), 0);
        assert_eq!(fake.opens.load(Ordering::SeqCst), 0);
        let (_s, origin) = pool.take().await.unwrap();
        assert_eq!(origin, Origin::Fresh);
        assert_eq!(fake.opens.load(Ordering::SeqCst), 1);
    }
}
