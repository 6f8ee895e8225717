//! A bare HTTP/2 client speaking frames by hand, for requests that no
//! well-behaved client library can send: a `:authority` that is not an
//! authority (the socket path gRPC clients send on Unix sockets), or none at
//! all. HPACK comes from `loona-hpack`; everything else is a few lines of
//! framing, enough for one gRPC call at a time.

use std::io;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const DATA: u8 = 0;
const HEADERS: u8 = 1;
const RST_STREAM: u8 = 3;
const SETTINGS: u8 = 4;
const PING: u8 = 6;
const GOAWAY: u8 = 7;
const CONTINUATION: u8 = 9;
const END_STREAM: u8 = 0x1;
const ACK: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;

/// How the server ended one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RawOutcome {
    /// A response: its header list, body, and trailer list (empty for a
    /// Trailers-Only response, whose status sits in `headers`).
    Response {
        /// Response headers, `:status` included.
        headers: Vec<(String, String)>,
        /// The body, DATA frames concatenated.
        body: Bytes,
        /// Trailers.
        trailers: Vec<(String, String)>,
    },
    /// The stream was reset with this HTTP/2 error code.
    Reset(u32),
    /// The connection was closed with GOAWAY and this error code.
    GoAway(u32),
}

impl RawOutcome {
    /// The value of `name` in the trailers, or else in the headers.
    pub fn grpc(&self, name: &str) -> Option<&str> {
        let RawOutcome::Response {
            headers, trailers, ..
        } = self
        else {
            return None;
        };
        trailers
            .iter()
            .chain(headers)
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// One HTTP/2 connection, one request at a time.
#[derive(Debug)]
pub struct RawH2<IO> {
    io: IO,
    encoder: HpackEncoder,
    next_stream: u32,
}

struct HpackEncoder(loona_hpack::Encoder<'static>);

impl std::fmt::Debug for HpackEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HpackEncoder")
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> RawH2<IO> {
    /// Sends the connection preface and empty SETTINGS.
    pub async fn handshake(mut io: IO) -> io::Result<Self> {
        io.write_all(PREFACE).await?;
        write_frame(&mut io, SETTINGS, 0, 0, &[]).await?;
        Ok(Self {
            io,
            encoder: HpackEncoder(loona_hpack::Encoder::new()),
            next_stream: 1,
        })
    }

    /// Sends one request with exactly these header fields (pseudo-headers
    /// included, in this order) and `body` as one DATA frame, and reads
    /// until the server ends that stream.
    pub async fn request(
        &mut self,
        fields: &[(&str, &str)],
        body: &[u8],
    ) -> io::Result<RawOutcome> {
        let stream = self.next_stream;
        self.next_stream += 2;
        let block = self
            .encoder
            .0
            .encode(fields.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes())));
        write_frame(&mut self.io, HEADERS, END_HEADERS, stream, &block).await?;
        write_frame(&mut self.io, DATA, END_STREAM, stream, body).await?;
        self.read_response(stream).await
    }

    async fn read_response(&mut self, stream: u32) -> io::Result<RawOutcome> {
        let mut decoder = loona_hpack::Decoder::new();
        let mut headers: Option<Vec<(String, String)>> = None;
        let mut trailers = Vec::new();
        let mut body = BytesMut::new();
        let mut block = Vec::new();
        loop {
            let (kind, flags, id, mut payload) = read_frame(&mut self.io).await?;
            match kind {
                SETTINGS if flags & ACK == 0 => {
                    write_frame(&mut self.io, SETTINGS, ACK, 0, &[]).await?;
                }
                PING if flags & ACK == 0 => {
                    write_frame(&mut self.io, PING, ACK, 0, &payload).await?;
                }
                GOAWAY if payload.len() >= 8 => {
                    payload.advance(4);
                    return Ok(RawOutcome::GoAway(payload.get_u32()));
                }
                RST_STREAM if id == stream && payload.len() >= 4 => {
                    return Ok(RawOutcome::Reset(payload.get_u32()));
                }
                DATA if id == stream => {
                    body.extend_from_slice(&unpad(flags, payload)?);
                    if flags & END_STREAM != 0 {
                        return Ok(done(headers, body, trailers));
                    }
                }
                HEADERS | CONTINUATION if id == stream => {
                    let mut fragment = if kind == HEADERS {
                        unpad(flags, payload)?
                    } else {
                        payload
                    };
                    if kind == HEADERS && flags & PRIORITY != 0 {
                        fragment.advance(5.min(fragment.len()));
                    }
                    block.extend_from_slice(&fragment);
                    if flags & END_HEADERS == 0 {
                        continue;
                    }
                    let fields = decoder
                        .decode(&block)
                        .map_err(|e| io::Error::other(format!("bad HPACK block: {e:?}")))?
                        .into_iter()
                        .map(|(n, v)| {
                            (
                                String::from_utf8_lossy(&n).into_owned(),
                                String::from_utf8_lossy(&v).into_owned(),
                            )
                        })
                        .collect();
                    block.clear();
                    match headers {
                        None => headers = Some(fields),
                        Some(_) => trailers = fields,
                    }
                    if flags & END_STREAM != 0 {
                        return Ok(done(headers, body, trailers));
                    }
                }
                _ => {}
            }
        }
    }
}

fn done(
    headers: Option<Vec<(String, String)>>,
    body: BytesMut,
    trailers: Vec<(String, String)>,
) -> RawOutcome {
    RawOutcome::Response {
        headers: headers.unwrap_or_default(),
        body: body.freeze(),
        trailers,
    }
}

fn unpad(flags: u8, mut payload: Bytes) -> io::Result<Bytes> {
    if flags & PADDED == 0 {
        return Ok(payload);
    }
    let pad = usize::from(
        *payload
            .first()
            .ok_or_else(|| io::Error::other("no pad length"))?,
    );
    payload.advance(1);
    let keep = payload
        .len()
        .checked_sub(pad)
        .ok_or_else(|| io::Error::other("padding longer than the frame"))?;
    Ok(payload.slice(..keep))
}

async fn write_frame<IO: AsyncWrite + Unpin>(
    io: &mut IO,
    kind: u8,
    flags: u8,
    stream: u32,
    payload: &[u8],
) -> io::Result<()> {
    let mut frame = BytesMut::with_capacity(9 + payload.len());
    let len = u32::try_from(payload.len()).map_err(io::Error::other)?;
    frame.put_slice(&len.to_be_bytes()[1..]);
    frame.put_u8(kind);
    frame.put_u8(flags);
    frame.put_u32(stream);
    frame.put_slice(payload);
    io.write_all(&frame).await?;
    io.flush().await
}

async fn read_frame<IO: AsyncRead + Unpin>(io: &mut IO) -> io::Result<(u8, u8, u32, Bytes)> {
    let mut head = [0u8; 9];
    io.read_exact(&mut head).await?;
    let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
    let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
    let mut payload = vec![0u8; len];
    io.read_exact(&mut payload).await?;
    Ok((head[3], head[4], stream, payload.into()))
}

/// The header fields of a gRPC call to `path` with this `:authority` (none
/// when `None`), in the order a gRPC client sends them.
pub fn grpc_request<'a>(
    path: &'a str,
    authority: Option<&'a str>,
    metadata: &[(&'a str, &'a str)],
) -> Vec<(&'a str, &'a str)> {
    let mut fields = vec![(":method", "POST"), (":scheme", "http"), (":path", path)];
    if let Some(authority) = authority {
        fields.push((":authority", authority));
    }
    fields.extend([("content-type", "application/grpc"), ("te", "trailers")]);
    fields.extend_from_slice(metadata);
    fields
}
