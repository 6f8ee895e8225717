//! HTTP/2 connections and one gRPC call of each kind, on hyper directly.
//!
//! Requests are built once per run ([`CallSpec`]) and cloned per call: the
//! encoded message is a reference-counted [`Bytes`], so a call costs the
//! generator a header-map clone and nothing proportional to the payload.
//! Responses are not decoded, only followed: the generator counts message
//! boundaries (5-byte gRPC prefixes) and bytes, and reads the status from
//! the trailers (or from the headers of a trailers-only response).

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, TE};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Uri, Version};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use prost::Message;
use switchyard_testkit::pb::PingRequest;
use tokio::net::{TcpStream, UnixStream};
use tokio::sync::mpsc;
use tokio::time::Instant;

use switchyard_engine::Address;
use switchyard_engine::tls::{ClientTls, PeerName};

/// Handle to one HTTP/2 connection of the generator.
pub type Connection = hyper::client::conn::http2::SendRequest<RequestBody>;

/// The three kinds of call the generator makes.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum CallKind {
    /// One request, one reply (`Ping`: the payload is echoed).
    Unary,
    /// One request, `count` replies each carrying the payload (`PingList`).
    ServerStream,
    /// `count` request messages, each echoed before the next is sent
    /// (`PingStream`).
    Bidi,
}

impl CallKind {
    /// The default method of this kind on the sample backend.
    ///
    /// Unary calls use `MultiService/Ping`, whose reply has the fan-out shape
    /// (`repeated … messages = 1`), so the same method serves direct,
    /// one-to-one and fan-out runs.
    pub fn default_method(self) -> &'static str {
        match self {
            Self::Unary => "/switchyard.test.v1.MultiService/Ping",
            Self::ServerStream => "/switchyard.test.v1.TestService/PingList",
            Self::Bidi => "/switchyard.test.v1.TestService/PingStream",
        }
    }
}

/// HTTP/2 settings of the generator's connections (the same windows as
/// Switchyard's own upstream connections, so no hop is favoured).
#[derive(Debug, Clone)]
pub struct ConnSettings {
    /// Stream receive window.
    pub stream_window: u32,
    /// Connection receive window.
    pub connection_window: u32,
    /// Largest frame the generator accepts.
    pub max_frame_size: u32,
    /// Bound of one connection attempt.
    pub connect_timeout: Duration,
    /// Mutual TLS on TCP targets (a Switchyard with `[tls]`): the client
    /// certificate and the CA the server's must chain to, naming its IP.
    pub tls: Option<ClientTls>,
}

impl Default for ConnSettings {
    fn default() -> Self {
        Self {
            stream_window: 2 * 1024 * 1024,
            connection_window: 8 * 1024 * 1024,
            max_frame_size: 64 * 1024,
            connect_timeout: Duration::from_secs(5),
            tls: None,
        }
    }
}

/// Opens one HTTP/2 (prior knowledge, cleartext) connection to `target`.
pub async fn connect(target: &Address, settings: &ConnSettings) -> anyhow::Result<Connection> {
    let attempt = async {
        match target {
            Address::Tcp(addr) => {
                let stream = TcpStream::connect(addr).await?;
                stream.set_nodelay(true)?;
                match &settings.tls {
                    Some(tls) => {
                        let peer = PeerName::new(addr.ip(), None)?;
                        let stream = tls.connect(&peer, stream).await?;
                        handshake(stream, settings).await
                    }
                    None => handshake(stream, settings).await,
                }
            }
            Address::Unix(path) => handshake(UnixStream::connect(path).await?, settings).await,
        }
    };
    match tokio::time::timeout(settings.connect_timeout, attempt).await {
        Ok(Ok(conn)) => Ok(conn),
        Ok(Err(err)) => Err(err.context(format!("cannot connect to {target}"))),
        Err(_) => anyhow::bail!(
            "connecting to {target} timed out after {:?}",
            settings.connect_timeout
        ),
    }
}

async fn handshake<S>(stream: S, settings: &ConnSettings) -> anyhow::Result<Connection>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let mut builder = hyper::client::conn::http2::Builder::new(TokioExecutor::new());
    builder
        .timer(TokioTimer::new())
        .initial_stream_window_size(settings.stream_window)
        .initial_connection_window_size(settings.connection_window)
        .max_frame_size(settings.max_frame_size);
    let (send, conn) = builder.handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(send)
}

/// A request body: one buffer, or messages fed one at a time (bidi).
#[derive(Debug)]
pub enum RequestBody {
    /// The whole body; `None` once sent.
    Full(Option<Bytes>),
    /// Chunks sent as they come; the body ends when the sender is dropped.
    Channel(mpsc::Receiver<Bytes>),
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            Self::Full(data) => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            Self::Channel(rx) => rx.poll_recv(cx).map(|d| d.map(|d| Ok(Frame::data(d)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self, Self::Full(None))
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Full(data) => SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64)),
            Self::Channel(_) => SizeHint::default(),
        }
    }
}

/// Everything needed to make one call, built once per run.
#[derive(Debug, Clone)]
pub struct CallSpec {
    /// The kind of call.
    pub kind: CallKind,
    /// Full request URI (`http://authority/pkg.Service/Method`).
    pub uri: Uri,
    /// Request headers (content type, `te`, metadata).
    pub headers: HeaderMap,
    /// One encoded, length-prefixed request message.
    pub message: Bytes,
    /// Bidi: messages per call.
    pub count: u32,
}

impl CallSpec {
    /// A call of `kind` to `method` on `target`; `payload` bytes are echoed
    /// (`count` times for server streaming and bidi), `metadata` is sent as is.
    pub fn new(
        target: &Address,
        kind: CallKind,
        method: &str,
        payload: usize,
        count: u32,
        metadata: &[(String, String)],
    ) -> anyhow::Result<Self> {
        let uri: Uri = format!("http://{}{method}", target.authority()).parse()?;
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
        headers.insert(TE, HeaderValue::from_static("trailers"));
        for (key, value) in metadata {
            headers.append(
                HeaderName::from_bytes(key.as_bytes())?,
                HeaderValue::from_str(value)?,
            );
        }
        let request = PingRequest {
            payload: vec![0xa5; payload],
            count: if kind == CallKind::ServerStream {
                count
            } else {
                0
            },
            ..PingRequest::default()
        };
        let message = switchyard_engine::codec::frame::encode_message(&request.encode_to_vec())?;
        Ok(Self {
            kind,
            uri,
            headers,
            message,
            count: count.max(1),
        })
    }

    fn request(&self, body: RequestBody) -> Request<RequestBody> {
        let mut request = Request::new(body);
        *request.method_mut() = Method::POST;
        *request.uri_mut() = self.uri.clone();
        *request.version_mut() = Version::HTTP_2;
        *request.headers_mut() = self.headers.clone();
        request
    }
}

/// Why a call failed; the key errors are counted under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallError {
    /// `UNAVAILABLE`, `http-503`, `transport`, `no-grpc-status`, …
    pub key: String,
    /// What the server or the connection said.
    pub message: String,
}

impl CallError {
    fn transport(err: impl std::fmt::Display) -> Self {
        Self {
            key: "transport".into(),
            message: err.to_string(),
        }
    }
}

/// Counts response bytes that arrive inside the measurement window.
#[derive(Debug, Clone, Copy)]
pub struct ByteMeter {
    /// Window start.
    pub from: Instant,
    /// Window end, if known.
    pub until: Option<Instant>,
    /// Bytes counted so far.
    pub bytes: u64,
}

impl ByteMeter {
    /// A meter counting from `from` to `until`.
    pub fn new(from: Instant, until: Option<Instant>) -> Self {
        Self {
            from,
            until,
            bytes: 0,
        }
    }

    fn add(&mut self, n: usize) {
        let now = Instant::now();
        if now >= self.from && self.until.is_none_or(|until| now <= until) {
            self.bytes += n as u64;
        }
    }
}

/// Makes one call of `spec.kind` on `conn`.
pub async fn call(
    conn: &mut Connection,
    spec: &CallSpec,
    meter: &mut ByteMeter,
) -> Result<(), CallError> {
    match spec.kind {
        CallKind::Unary | CallKind::ServerStream => {
            let body = RequestBody::Full(Some(spec.message.clone()));
            let response = conn
                .send_request(spec.request(body))
                .await
                .map_err(CallError::transport)?;
            let mut reader = ResponseReader::new(response)?;
            reader.read_to_end(meter).await
        }
        CallKind::Bidi => {
            let (tx, mut reader) = start_bidi(conn, spec).await?;
            for sent in 1..=u64::from(spec.count) {
                if !reader.read_until_messages(sent, meter).await? {
                    return reader.finish();
                }
                if sent < u64::from(spec.count) && tx.send(spec.message.clone()).await.is_err() {
                    return Err(CallError::transport("request stream closed early"));
                }
            }
            drop(tx);
            reader.read_to_end(meter).await
        }
    }
}

/// Starts a bidi call with its first message sent; further messages go
/// through the returned sender, and dropping it half-closes the call.
async fn start_bidi(
    conn: &mut Connection,
    spec: &CallSpec,
) -> Result<(mpsc::Sender<Bytes>, ResponseReader), CallError> {
    let (tx, rx) = mpsc::channel(2);
    let _ = tx.try_send(spec.message.clone());
    let response = conn
        .send_request(spec.request(RequestBody::Channel(rx)))
        .await
        .map_err(CallError::transport)?;
    Ok((tx, ResponseReader::new(response)?))
}

/// A bidi call kept open after one echo (for memory measurements).
#[derive(Debug)]
pub struct OpenStream {
    _requests: mpsc::Sender<Bytes>,
    _reader: ResponseReader,
}

/// Opens a bidi call, sends one message and waits for its echo; the call
/// stays open until the returned value is dropped.
pub async fn open_stream(conn: &mut Connection, spec: &CallSpec) -> Result<OpenStream, CallError> {
    let (tx, mut reader) = start_bidi(conn, spec).await?;
    let mut meter = ByteMeter::new(Instant::now(), None);
    if !reader.read_until_messages(1, &mut meter).await? {
        reader.finish()?;
        return Err(CallError {
            key: "ended".into(),
            message: "the stream ended before the echo".into(),
        });
    }
    Ok(OpenStream {
        _requests: tx,
        _reader: reader,
    })
}

/// Follows a response: message boundaries, bytes and the final status.
#[derive(Debug)]
struct ResponseReader {
    body: Incoming,
    counter: MessageCounter,
    /// The status when it came in the headers (trailers-only response).
    status: Option<HeaderMap>,
    trailers: Option<HeaderMap>,
    ended: bool,
}

impl ResponseReader {
    fn new(response: http::Response<Incoming>) -> Result<Self, CallError> {
        let (parts, body) = response.into_parts();
        if parts.status != http::StatusCode::OK {
            return Err(CallError {
                key: format!("http-{}", parts.status.as_u16()),
                message: parts.status.to_string(),
            });
        }
        let status = parts
            .headers
            .contains_key("grpc-status")
            .then_some(parts.headers);
        Ok(Self {
            body,
            counter: MessageCounter::default(),
            status,
            trailers: None,
            ended: false,
        })
    }

    /// Reads until `n` messages arrived (`true`) or the stream ended (`false`).
    async fn read_until_messages(
        &mut self,
        n: u64,
        meter: &mut ByteMeter,
    ) -> Result<bool, CallError> {
        while self.counter.messages < n {
            if !self.next_frame(meter).await? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    async fn read_to_end(&mut self, meter: &mut ByteMeter) -> Result<(), CallError> {
        while self.next_frame(meter).await? {}
        self.finish()
    }

    async fn next_frame(&mut self, meter: &mut ByteMeter) -> Result<bool, CallError> {
        if self.ended {
            return Ok(false);
        }
        match self.body.frame().await {
            None => {
                self.ended = true;
                Ok(false)
            }
            Some(Err(err)) => Err(CallError::transport(err)),
            Some(Ok(frame)) => {
                match frame.into_data() {
                    Ok(data) => {
                        meter.add(data.len());
                        self.counter.feed(&data);
                    }
                    Err(frame) => {
                        if let Ok(trailers) = frame.into_trailers() {
                            self.trailers = Some(trailers);
                        }
                    }
                }
                Ok(true)
            }
        }
    }

    fn finish(&self) -> Result<(), CallError> {
        let headers = self
            .trailers
            .as_ref()
            .or(self.status.as_ref())
            .ok_or_else(|| CallError {
                key: "no-grpc-status".into(),
                message: "the response ended without a grpc-status".into(),
            })?;
        check_status(headers)
    }
}

/// `Ok` for `grpc-status: 0`, the status otherwise.
pub fn check_status(headers: &HeaderMap) -> Result<(), CallError> {
    let code = headers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i32>().ok())
        .ok_or_else(|| CallError {
            key: "no-grpc-status".into(),
            message: "missing or malformed grpc-status".into(),
        })?;
    if code == 0 {
        return Ok(());
    }
    let message = headers
        .get("grpc-message")
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .unwrap_or_default();
    Err(CallError {
        key: code_name(code),
        message,
    })
}

/// `UNAVAILABLE` for 14, and so on; unknown codes as `code-N`.
pub fn code_name(code: i32) -> String {
    match code {
        0..=16 => switchyard_engine::status::code_name(tonic::Code::from(code)).to_owned(),
        _ => format!("code-{code}"),
    }
}

/// Counts whole gRPC messages in a byte stream, without keeping them.
#[derive(Debug, Default, Clone)]
pub struct MessageCounter {
    prefix: [u8; 5],
    prefix_len: usize,
    payload_left: u64,
    /// Whole messages seen.
    pub messages: u64,
}

impl MessageCounter {
    /// Feeds the next chunk.
    pub fn feed(&mut self, mut chunk: &[u8]) {
        while !chunk.is_empty() {
            if self.payload_left > 0 {
                let n = (self.payload_left.min(chunk.len() as u64)) as usize;
                self.payload_left -= n as u64;
                chunk = &chunk[n..];
                if self.payload_left == 0 {
                    self.messages += 1;
                }
                continue;
            }
            let n = (5 - self.prefix_len).min(chunk.len());
            self.prefix[self.prefix_len..self.prefix_len + n].copy_from_slice(&chunk[..n]);
            self.prefix_len += n;
            chunk = &chunk[n..];
            if self.prefix_len == 5 {
                self.prefix_len = 0;
                let p = self.prefix;
                self.payload_left = u64::from(u32::from_be_bytes([p[1], p[2], p[3], p[4]]));
                if self.payload_left == 0 {
                    self.messages += 1;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_messages_across_any_split() {
        let mut stream = Vec::new();
        for len in [0usize, 3, 70_000, 1] {
            stream.extend_from_slice(&[0]);
            stream.extend_from_slice(&(len as u32).to_be_bytes());
            stream.extend(std::iter::repeat_n(7u8, len));
        }
        for step in [1, 2, 5, 7, 1000, stream.len()] {
            let mut counter = MessageCounter::default();
            for chunk in stream.chunks(step) {
                counter.feed(chunk);
            }
            assert_eq!(counter.messages, 4, "step {step}");
        }
    }

    #[test]
    fn a_non_zero_status_is_an_error() {
        let mut h = HeaderMap::new();
        h.insert("grpc-status", HeaderValue::from_static("0"));
        assert!(check_status(&h).is_ok());
        h.insert("grpc-status", HeaderValue::from_static("14"));
        h.insert("grpc-message", HeaderValue::from_static("down"));
        let err = check_status(&h).unwrap_err();
        assert_eq!(
            (err.key.as_str(), err.message.as_str()),
            ("UNAVAILABLE", "down")
        );
        assert_eq!(
            check_status(&HeaderMap::new()).unwrap_err().key,
            "no-grpc-status"
        );
        assert_eq!(code_name(99), "code-99");
    }
}
