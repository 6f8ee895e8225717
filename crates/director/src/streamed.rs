//! Which methods stream replies.
//!
//! Fan-out must know whether to merge replies into one message (unary) or to
//! forward them as they arrive (streaming); gRPC does not say so on the wire.
//! Without a detector every method is treated as unary, like the Go library.

use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;

use switchyard_engine::ReplyShape;

/// Tells whether a method (`/package.Service/Method`) streams its replies.
#[derive(Clone)]
pub struct StreamedMethods(Arc<dyn Fn(&str) -> bool + Send + Sync>);

impl StreamedMethods {
    /// A detector from any predicate.
    pub fn from_fn(f: impl Fn(&str) -> bool + Send + Sync + 'static) -> Self {
        Self(Arc::new(f))
    }

    /// A detector from a list of full method names (`/package.Service/Method`).
    pub fn from_list<I, S>(methods: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let set: HashSet<String> = methods.into_iter().map(Into::into).collect();
        Self::from_fn(move |method| set.contains(method))
    }

    /// No method streams: every fan-out reply is merged as unary.
    pub fn none() -> Self {
        Self::from_fn(|_| false)
    }

    /// Whether `method` streams its replies.
    pub fn is_streamed(&self, method: &str) -> bool {
        (self.0)(method)
    }

    /// How fan-out replies of `method` reach the client.
    pub fn shape(&self, method: &str) -> ReplyShape {
        if self.is_streamed(method) {
            ReplyShape::Streamed
        } else {
            ReplyShape::Unary
        }
    }
}

impl Default for StreamedMethods {
    fn default() -> Self {
        Self::none()
    }
}

impl fmt::Debug for StreamedMethods {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StreamedMethods(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_detector_matches_full_names_only() {
        let d = StreamedMethods::from_list(["/a.B/List", "/a.B/Watch"]);
        assert!(d.is_streamed("/a.B/List"));
        assert_eq!(d.shape("/a.B/Watch"), ReplyShape::Streamed);
        assert!(!d.is_streamed("/a.B/Get"));
        assert_eq!(d.shape("/a.B/Get"), ReplyShape::Unary);
        assert!(!d.is_streamed("List"));
        assert!(!StreamedMethods::default().is_streamed("/a.B/List"));
    }
}
