//! Turning failures into gRPC statuses, statuses into trailers, and request
//! failures into the HTTP/2 reset reason the upstream stream ends with.

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode};
use tonic::{Code, Status};

use crate::BoxError;
use crate::codec::frame::FrameError;
use crate::names::GRPC_STATUS;

/// The `content-type` of every gRPC response the engine writes itself.
pub(crate) const GRPC_CONTENT_TYPE: HeaderValue = HeaderValue::from_static("application/grpc");

/// Trailers carrying `status` (`grpc-status`, `grpc-message`, `grpc-status-details-bin`).
pub fn trailers(status: &Status) -> HeaderMap {
    let mut map = HeaderMap::with_capacity(3);
    if status.add_header(&mut map).is_err() {
        // Only fails on a message or details that cannot be a header value,
        // which `add_header` percent-encodes; keep the code in any case.
        map.insert(GRPC_STATUS, HeaderValue::from(status.code() as i32));
    }
    map
}

/// The gRPC code for a non-200 HTTP status, per the gRPC HTTP/2 mapping.
pub fn code_from_http(status: StatusCode) -> Code {
    match status.as_u16() {
        400 => Code::Internal,
        401 => Code::Unauthenticated,
        403 => Code::PermissionDenied,
        404 => Code::Unimplemented,
        429 | 502 | 503 | 504 => Code::Unavailable,
        _ => Code::Unknown,
    }
}

/// The gRPC code for an HTTP/2 stream or connection error, per the gRPC
/// HTTP/2 mapping of RST_STREAM reasons.
pub fn code_from_h2(err: &h2::Error) -> Code {
    match err.reason() {
        Some(h2::Reason::REFUSED_STREAM) => Code::Unavailable,
        Some(h2::Reason::CANCEL) => Code::Cancelled,
        Some(h2::Reason::ENHANCE_YOUR_CALM) => Code::ResourceExhausted,
        Some(h2::Reason::INADEQUATE_SECURITY) => Code::PermissionDenied,
        Some(_) => Code::Internal,
        None if err.is_io() || err.is_go_away() => Code::Unavailable,
        None => Code::Internal,
    }
}

/// A status for an error of an upstream call to `backend`.
pub(crate) fn from_upstream_error(
    err: &(dyn std::error::Error + 'static),
    backend: &dyn std::fmt::Display,
) -> Status {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    let mut code = Code::Unavailable;
    while let Some(e) = source {
        if let Some(status) = e.downcast_ref::<Status>() {
            return status.clone();
        }
        if let Some(h2) = e.downcast_ref::<h2::Error>() {
            code = code_from_h2(h2);
            break;
        }
        source = e.source();
    }
    Status::new(code, format!("backend {backend}: {}", chain(err)))
}

/// The status for a malformed or oversize message from the client.
pub(crate) fn request_frame(err: &FrameError) -> Status {
    match err {
        FrameError::TooLarge { .. } => Status::resource_exhausted(format!("request {err}")),
        _ => Status::internal(format!("malformed request: {err}")),
    }
}

/// The status for a malformed or oversize message from `backend`.
pub(crate) fn reply_frame(err: &FrameError, backend: &dyn std::fmt::Display) -> Status {
    let code = match err {
        FrameError::TooLarge { .. } => Code::ResourceExhausted,
        _ => Code::Internal,
    };
    Status::new(code, format!("reply from backend {backend}: {err}"))
}

/// Longest status message of a machine the engine passes into a fan-out
/// error entry or a log line: the detail a machine chose to send stays in
/// its own logs.
const MAX_MESSAGE: usize = 1024;

/// Largest `grpc-status-details-bin` a fan-out error entry carries.
const MAX_DETAILS: usize = 4096;

/// `status` with its message cut to [`MAX_MESSAGE`] bytes (at a character
/// boundary, with an ellipsis) and its details dropped beyond
/// [`MAX_DETAILS`]; borrowed when already within both.
pub(crate) fn bounded(status: &Status) -> std::borrow::Cow<'_, Status> {
    let message = status.message();
    if message.len() <= MAX_MESSAGE && status.details().len() <= MAX_DETAILS {
        return std::borrow::Cow::Borrowed(status);
    }
    let message = if message.len() <= MAX_MESSAGE {
        message.to_owned()
    } else {
        let mut end = MAX_MESSAGE - 3;
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}…", &message[..end])
    };
    let details = match status.details() {
        details if details.len() <= MAX_DETAILS => Bytes::copy_from_slice(details),
        _ => Bytes::new(),
    };
    std::borrow::Cow::Owned(Status::with_details(status.code(), message, details))
}

/// The HTTP/2 reason an upstream stream is reset with when the client's
/// request failed with `err`: the reason the client reset its own stream
/// with when there is one (`CANCEL` for a cancelled call), so it reaches the
/// backend unchanged; `CANCEL` otherwise.
pub(crate) fn reset_reason(err: &(dyn std::error::Error + 'static)) -> h2::Reason {
    let mut source = Some(err);
    while let Some(e) = source {
        if let Some(reason) = e.downcast_ref::<h2::Error>().and_then(h2::Error::reason) {
            return reason;
        }
        source = e.source();
    }
    h2::Reason::CANCEL
}

/// A request-body error that makes hyper reset the upstream stream with
/// `reason` (hyper looks for an `h2::Error` in the chain; without one it
/// resets with `INTERNAL_ERROR`).
pub(crate) fn reset(reason: h2::Reason) -> BoxError {
    Box::new(h2::Error::from(reason))
}

/// `err` and its sources, joined by ": ".
pub(crate) fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(e) = source {
        let s = e.to_string();
        if !text.contains(&s) {
            text.push_str(": ");
            text.push_str(&s);
        }
        source = e.source();
    }
    text
}

/// The canonical name of a gRPC status code (`UNAVAILABLE`), as in
/// `google.rpc.Code`: the one spelling of metrics labels, logs and the CLI.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trailers_carry_code_message_and_details() {
        let status = Status::with_details(
            Code::NotFound,
            "no such thing: é",
            b"\x01\x02".to_vec().into(),
        );
        let map = trailers(&status);
        let back = Status::from_header_map(&map).unwrap();
        assert_eq!(back.code(), Code::NotFound);
        assert_eq!(back.message(), "no such thing: é");
        assert_eq!(back.details(), b"\x01\x02");
    }

    #[test]
    fn http_codes_map_per_spec() {
        assert_eq!(code_from_http(StatusCode::NOT_FOUND), Code::Unimplemented);
        assert_eq!(
            code_from_http(StatusCode::SERVICE_UNAVAILABLE),
            Code::Unavailable
        );
        assert_eq!(code_from_http(StatusCode::IM_A_TEAPOT), Code::Unknown);
    }

    #[test]
    fn messages_are_bounded_at_a_character_boundary() {
        let short = Status::unavailable("short");
        assert_eq!(bounded(&short).message(), "short");
        assert!(matches!(bounded(&short), std::borrow::Cow::Borrowed(_)));
        let long = Status::unavailable("é".repeat(MAX_MESSAGE));
        let cut = bounded(&long);
        assert!(
            cut.message().len() <= MAX_MESSAGE,
            "{}",
            cut.message().len()
        );
        assert!(cut.message().ends_with('…'));
        assert_eq!(cut.code(), Code::Unavailable);
        let details = Status::with_details(Code::Internal, "x", vec![0; MAX_DETAILS + 1].into());
        assert!(bounded(&details).details().is_empty());
    }

    #[test]
    fn the_clients_reset_reason_is_kept() {
        let cancel: BoxError = Box::new(h2::Error::from(h2::Reason::CANCEL));
        assert_eq!(reset_reason(&*cancel), h2::Reason::CANCEL);
        let refused: BoxError = Box::new(h2::Error::from(h2::Reason::REFUSED_STREAM));
        assert_eq!(reset_reason(&*refused), h2::Reason::REFUSED_STREAM);
        let other = std::io::Error::other("gone");
        assert_eq!(reset_reason(&other), h2::Reason::CANCEL);
    }

    #[test]
    fn upstream_errors_name_the_backend() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let s = from_upstream_error(&io, &"[fd00::2]:51000");
        assert_eq!(s.code(), Code::Unavailable);
        assert!(s.message().contains("[fd00::2]:51000"), "{}", s.message());
        assert!(s.message().contains("refused"));
    }
}
