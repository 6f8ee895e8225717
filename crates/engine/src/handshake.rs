//! Bounding the HTTP/2 handshake of a connection, both ways.
//!
//! A peer that connects and then sends nothing (or half a preface) would
//! otherwise hold a connection forever; one that accepts a TCP connection but
//! never speaks HTTP/2 (a hung or stopped machine) would make every call wait
//! for it. hyper exposes neither the preface nor the peer's SETTINGS, so
//! [`Handshake`] wraps the connection's I/O, watches the bytes hyper reads,
//! and fails the read once a deadline passes before the peer's first SETTINGS
//! frame (after the client preface, on the server side) has fully arrived.
//! Once it has, the wrapper only forwards reads.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::oneshot;
use tokio::time::{Instant, Sleep};

/// The client connection preface.
pub(crate) const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// How far the peer's handshake has come, fed with the bytes as they are read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Progress {
    /// `n` bytes of the client preface matched so far (server side).
    Preface(usize),
    /// `n` bytes of the first frame's 9-byte header.
    FrameHeader([u8; 9], usize),
    /// Bytes of the first frame's payload still to come.
    Payload(usize),
    /// The peer sent its first frame (SETTINGS, which must come first).
    Done,
    /// Not HTTP/2: the first bytes are not the preface (an HTTP/1 request,
    /// which the server answers itself), or the first frame is not SETTINGS.
    NotHttp2,
}

impl Progress {
    /// Where a server starts: expecting the client preface.
    pub(crate) const SERVER: Self = Self::Preface(0);
    /// Where a client starts: expecting the server's SETTINGS.
    pub(crate) const CLIENT: Self = Self::FrameHeader([0; 9], 0);

    /// Whether the watch is over (done, or not HTTP/2 at all).
    pub(crate) fn is_over(&self) -> bool {
        matches!(self, Self::Done | Self::NotHttp2)
    }

    /// Feeds the next bytes read from the peer.
    pub(crate) fn feed(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() && !self.is_over() {
            match self {
                Self::Preface(n) => {
                    let take = (PREFACE.len() - *n).min(bytes.len());
                    if bytes[..take] != PREFACE[*n..*n + take] {
                        *self = Self::NotHttp2;
                        return;
                    }
                    *n += take;
                    bytes = &bytes[take..];
                    if *n == PREFACE.len() {
                        *self = Self::CLIENT;
                    }
                }
                Self::FrameHeader(header, n) => {
                    let take = (9 - *n).min(bytes.len());
                    header[*n..*n + take].copy_from_slice(&bytes[..take]);
                    *n += take;
                    bytes = &bytes[take..];
                    if *n == 9 {
                        const SETTINGS: u8 = 4;
                        let len = u32::from_be_bytes([0, header[0], header[1], header[2]]);
                        *self = match (header[3], len) {
                            (SETTINGS, 0) => Self::Done,
                            (SETTINGS, len) => Self::Payload(len as usize),
                            _ => Self::NotHttp2,
                        };
                    }
                }
                Self::Payload(left) => {
                    let take = (*left).min(bytes.len());
                    *left -= take;
                    bytes = &bytes[take..];
                    if *left == 0 {
                        *self = Self::Done;
                    }
                }
                Self::Done | Self::NotHttp2 => {}
            }
        }
    }
}

/// I/O whose reads fail with `TimedOut` once the deadline passes before the
/// peer's handshake is over; the receiver returned by [`Handshake::new`]
/// hears when it is.
#[derive(Debug)]
pub(crate) struct Handshake<IO> {
    io: IO,
    progress: Progress,
    /// Boxed once per connection: hyper needs `Unpin` I/O.
    deadline: Pin<Box<Sleep>>,
    done: Option<oneshot::Sender<Progress>>,
}

impl<IO> Handshake<IO> {
    /// Watches `io` from `progress` until `deadline`.
    pub(crate) fn new(
        io: IO,
        progress: Progress,
        deadline: Instant,
    ) -> (Self, oneshot::Receiver<Progress>) {
        let (tx, rx) = oneshot::channel();
        let this = Self {
            io,
            progress,
            deadline: Box::pin(tokio::time::sleep_until(deadline)),
            done: Some(tx),
        };
        (this, rx)
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Handshake<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.progress.is_over() {
            return Pin::new(&mut this.io).poll_read(cx, buf);
        }
        if this.deadline.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "HTTP/2 handshake not completed in time",
            )));
        }
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.io).poll_read(cx, buf))?;
        this.progress.feed(&buf.filled()[before..]);
        if this.progress.is_over()
            && let Some(done) = this.done.take()
        {
            let _ = done.send(this.progress.clone());
        }
        Poll::Ready(Ok(()))
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Handshake<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    const SETTINGS_2: [u8; 21] = [
        0, 0, 12, 4, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 100, 0, 4, 0, 1, 0, 0,
    ];

    #[test]
    fn follows_preface_and_settings_in_any_split() {
        let mut stream = PREFACE.to_vec();
        stream.extend_from_slice(&SETTINGS_2);
        stream.extend_from_slice(b"more frames");
        for split in 1..stream.len() {
            let mut p = Progress::SERVER;
            for chunk in stream.chunks(split) {
                p.feed(chunk);
            }
            assert_eq!(p, Progress::Done, "chunks of {split}");
        }
        let mut p = Progress::SERVER;
        p.feed(&stream[..30]);
        assert!(!p.is_over());
        let mut client = Progress::CLIENT;
        client.feed(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
        assert_eq!(client, Progress::Done);
    }

    #[test]
    fn anything_else_is_not_http2() {
        let mut p = Progress::SERVER;
        p.feed(b"POST / HTTP/1.1\r\n");
        assert_eq!(p, Progress::NotHttp2);
        // A first frame other than SETTINGS (here a PING).
        let mut p = Progress::CLIENT;
        p.feed(&[0, 0, 8, 6, 0, 0, 0, 0, 0]);
        assert_eq!(p, Progress::NotHttp2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_peer_times_out_and_a_prompt_one_does_not() {
        let (client, server) = tokio::io::duplex(1024);
        let deadline = Instant::now() + Duration::from_secs(10);
        let (mut watched, done) = Handshake::new(server, Progress::SERVER, deadline);
        let mut client = client;
        client.write_all(&PREFACE[..10]).await.unwrap();
        let mut buf = [0u8; 64];
        let n = watched.read(&mut buf).await.unwrap();
        assert_eq!(n, 10);
        // Nothing more arrives: the read fails at the deadline, not before.
        let started = Instant::now();
        let err = watched.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), Duration::from_secs(10));
        drop(done);

        let (mut client, server) = tokio::io::duplex(1024);
        let (mut watched, done) = Handshake::new(
            server,
            Progress::SERVER,
            Instant::now() + Duration::from_secs(10),
        );
        client.write_all(PREFACE).await.unwrap();
        client.write_all(&SETTINGS_2).await.unwrap();
        let n = watched.read(&mut buf).await.unwrap();
        assert_eq!(n, PREFACE.len() + SETTINGS_2.len());
        assert_eq!(done.await.unwrap(), Progress::Done);
        // Later reads are not bounded any more.
        tokio::time::advance(Duration::from_secs(60)).await;
        client.write_all(b"x").await.unwrap();
        assert_eq!(watched.read(&mut buf).await.unwrap(), 1);
    }
}
