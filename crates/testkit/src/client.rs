//! tonic clients for the test services, over TCP or a Unix socket.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;
use tonic::metadata::{AsciiMetadataKey, MetadataValue};
use tonic::transport::{Channel, Endpoint};

use crate::MAX_MESSAGE_SIZE;
use crate::pb::multi_service_client::MultiServiceClient;
use crate::pb::test_service_client::TestServiceClient;

/// A lazily connected channel to `http://addr`.
///
/// Must be called within a tokio runtime.
pub fn tcp_channel(addr: SocketAddr) -> Channel {
    Endpoint::from_shared(format!("http://{addr}"))
        .expect("a socket address makes a valid URI")
        .connect_lazy()
}

/// A lazily connected channel to the Unix socket `path` (authority `localhost`).
///
/// Must be called within a tokio runtime.
pub fn unix_channel(path: impl Into<PathBuf>) -> Channel {
    let path = Arc::new(path.into());
    Endpoint::from_static("http://localhost").connect_with_connector_lazy(tower::service_fn(
        move |_: http::Uri| {
            let path = Arc::clone(&path);
            async move { UnixStream::connect(&*path).await.map(TokioIo::new) }
        },
    ))
}

/// `message` with metadata `key: value` entries, in that order.
///
/// # Panics
///
/// On a key or value that is not valid ASCII metadata.
pub fn with_meta<T>(message: T, meta: &[(&str, &str)]) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    for (key, value) in meta {
        let key = AsciiMetadataKey::from_bytes(key.as_bytes()).expect("a metadata key");
        let value: MetadataValue<_> = value.parse().expect("ASCII metadata");
        request.metadata_mut().append(key, value);
    }
    request
}

/// A `TestService` client accepting and sending messages up to 64 MiB.
pub fn test_client(channel: Channel) -> TestServiceClient<Channel> {
    TestServiceClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_SIZE)
        .max_encoding_message_size(MAX_MESSAGE_SIZE)
}

/// A `MultiService` client accepting and sending messages up to 64 MiB.
pub fn multi_client(channel: Channel) -> MultiServiceClient<Channel> {
    MultiServiceClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_SIZE)
        .max_encoding_message_size(MAX_MESSAGE_SIZE)
}
