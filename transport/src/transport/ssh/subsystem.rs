//! A subsystem channel that carries the first request before the server has
//! answered the subsystem request. Waiting for that answer costs a round
//! trip on every new channel; the SSH protocol keeps a channel's messages
//! in order, so a server that starts the subsystem reads the request right
//! after it (berth-server queues the channel's data from its open on; sshd
//! starts the subsystem before reading on), as OpenSSH's own `ssh -s` does.
//!
//! russh's channel stream drops the answer unread, and sshd leaves the
//! channel open when it refuses a subsystem, so a plain stream would wait
//! forever for a response that never comes. [`SubsystemStream`] reads the
//! channel's messages itself: a refusal ends the stream with the clear
//! error (also the stream's [`Diagnostics`] verdict, which the message
//! the caller prints gives as the reason).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use russh::{client, ChannelMsg, ChannelReadHalf, ChannelWriteHalf};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::super::Diagnostics;

/// The next message of the channel, with the read half handed back.
type NextMessage = Pin<Box<dyn Future<Output = (ChannelReadHalf, Option<ChannelMsg>)> + Send>>;

/// Both directions of a subsystem channel whose request is still
/// unanswered. Closes the channel when dropped.
pub(crate) struct SubsystemStream {
    writer: Pin<Box<dyn AsyncWrite + Send>>,
    reader: Reader,
    /// Kept to close the channel on drop.
    channel: Option<ChannelWriteHalf<client::Msg>>,
}

struct Reader {
    /// The read half, while no message is awaited.
    half: Option<ChannelReadHalf>,
    next: Option<NextMessage>,
    /// A data message and how much of it was read.
    data: Option<(ChannelMsg, usize)>,
    /// The server accepted the subsystem.
    accepted: bool,
    /// End of stream reached (end of data, close, or refusal).
    ended: bool,
    /// What a refusal says.
    refusal: String,
    diagnostics: Diagnostics,
}

impl SubsystemStream {
    /// Wraps the halves of a channel on which the subsystem request was
    /// just sent (with a reply wanted). `refusal` is the error a refusal
    /// gives.
    pub(crate) fn new(
        read: ChannelReadHalf,
        write: ChannelWriteHalf<client::Msg>,
        refusal: String,
        diagnostics: Diagnostics,
    ) -> SubsystemStream {
        SubsystemStream {
            writer: Box::pin(write.make_writer()),
            reader: Reader {
                half: Some(read),
                next: None,
                data: None,
                accepted: false,
                ended: false,
                refusal,
                diagnostics,
            },
            channel: Some(write),
        }
    }
}

impl Reader {
    /// Copies buffered data into `buf`; false when nothing is buffered.
    fn drain_into(&mut self, buf: &mut ReadBuf<'_>) -> bool {
        let Some((ChannelMsg::Data { data }, at)) = &mut self.data else {
            return false;
        };
        let n = buf.remaining().min(data.len() - *at);
        buf.put_slice(&data[*at..*at + n]);
        *at += n;
        if *at == data.len() {
            self.data = None;
        }
        true
    }

    fn poll_read(&mut self, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        loop {
            if self.drain_into(buf) || self.ended {
                return Poll::Ready(Ok(()));
            }
            let next = match &mut self.next {
                Some(next) => next,
                None => {
                    let Some(mut half) = self.half.take() else {
                        self.ended = true;
                        continue;
                    };
                    self.next.insert(Box::pin(async move {
                        let msg = half.wait().await;
                        (half, msg)
                    }))
                }
            };
            let (half, msg) = ready!(next.as_mut().poll(cx));
            self.next = None;
            self.half = Some(half);
            match msg {
                // An empty one is skipped: handing back no bytes would
                // read as the end of the stream.
                Some(ChannelMsg::Data { data }) if data.is_empty() => {}
                Some(msg @ ChannelMsg::Data { .. }) => self.data = Some((msg, 0)),
                Some(ChannelMsg::Success) => self.accepted = true,
                Some(ChannelMsg::Failure) if !self.accepted => {
                    self.ended = true;
                    self.diagnostics.conclude(&self.refusal);
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::ConnectionRefused,
                        self.refusal.clone(),
                    )));
                }
                Some(ChannelMsg::Eof) | Some(ChannelMsg::Close) | None => self.ended = true,
                // Window adjusts (the writer tracks them), stderr, exit
                // status: nothing the stream carries.
                Some(_) => {}
            }
        }
    }
}

impl AsyncRead for SubsystemStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.reader.poll_read(cx, buf)
    }
}

impl AsyncWrite for SubsystemStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.writer.as_mut().poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.writer.as_mut().poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.writer.as_mut().poll_shutdown(cx)
    }
}

impl Drop for SubsystemStream {
    fn drop(&mut self) {
        // As russh's own channel stream does: the server frees the channel
        // (and its slot in --max-channels) only once it is closed.
        if let Some(channel) = self.channel.take() {
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(async move {
                    let _ = channel.close().await;
                });
            }
        }
    }
}
