//! The client's request, copied to every leg of a fan-out call.
//!
//! Each leg gets its own small queue of request chunks (reference-counted,
//! not copied), so legs take the request at their own pace and the bytes
//! held for the slowest one are bounded by its queue. A leg whose queue stays
//! full for longer than the stall bound is dropped from the broadcast (its
//! request is reset with `CANCEL`) and reported, so one stuck machine cannot
//! stop the others' streams. A client that cancels has its reset reason
//! passed to every leg.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use futures_channel::mpsc;
use futures_util::Stream;
use http_body::{Body, Frame};
use tokio::time::{Instant, Sleep};
use tonic::Status;

use crate::codec::frame::FrameScanner;
use crate::upstream::UpstreamBody;
use crate::{BoxError, status};

/// Request chunks queued per leg; with frames of at most 64 KiB, what a
/// stalled leg holds stays under a megabyte.
const QUEUE: usize = 8;

/// What a leg's request queue carries.
#[derive(Debug)]
enum Item {
    Data(Bytes),
    /// The client's request ended cleanly.
    End,
    /// The client's request failed: reset the leg's stream with this reason.
    Reset(h2::Reason),
}

/// The request body of one leg. The queue closing without [`Item::End`]
/// means the leg was dropped from the broadcast: its stream is reset.
pub(super) struct RequestFeed(mpsc::Receiver<Item>);

impl Body for RequestFeed {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let item = ready!(Pin::new(&mut self.get_mut().0).poll_next(cx));
        Poll::Ready(match item {
            Some(Item::Data(data)) => Some(Ok(Frame::data(data))),
            Some(Item::End) => None,
            Some(Item::Reset(reason)) => Some(Err(status::reset(reason))),
            None => Some(Err(status::reset(h2::Reason::CANCEL))),
        })
    }
}

/// The sending side of one leg's queue.
struct Feed {
    tx: mpsc::Sender<Item>,
    /// The pending chunk is not delivered to this leg yet.
    waiting: bool,
    /// The stall timer: allocated at the leg's first full queue, then reset
    /// at each later one; it counts only while `stalled`.
    timer: Option<Pin<Box<Sleep>>>,
    stalled: bool,
}

/// What the broadcast reports to the call.
#[derive(Debug)]
pub(super) enum BroadcastEvent {
    /// Every leg got the whole request (or left the broadcast).
    Finished,
    /// The client's request was invalid or failed: the whole call fails.
    Failed(Status),
    /// Leg `.0` did not take request messages within the stall bound.
    Stalled(usize),
}

/// Copies the client's request body to every leg.
pub(super) struct Broadcast {
    body: UpstreamBody,
    scanner: FrameScanner,
    feeds: Vec<Option<Feed>>,
    /// A chunk read from the client, until every waiting feed has it.
    pending: Option<Bytes>,
    /// The client's request ended; `End` is being delivered.
    ending: bool,
    stall_timeout: Duration,
    /// Counts the request bytes, when the call is observed.
    bytes_in: Option<Arc<AtomicU64>>,
}

impl Broadcast {
    /// A broadcast of `body` to `legs` legs, and each leg's request body.
    pub(super) fn new(
        body: UpstreamBody,
        legs: usize,
        max_message_size: usize,
        stall_timeout: Duration,
        bytes_in: Option<Arc<AtomicU64>>,
    ) -> (Self, Vec<RequestFeed>) {
        let (feeds, bodies) = (0..legs)
            .map(|_| {
                let (tx, rx) = mpsc::channel(QUEUE);
                let feed = Feed {
                    tx,
                    waiting: false,
                    timer: None,
                    stalled: false,
                };
                (Some(feed), RequestFeed(rx))
            })
            .unzip();
        let broadcast = Self {
            body,
            scanner: FrameScanner::new(max_message_size),
            feeds,
            pending: None,
            ending: false,
            stall_timeout,
            bytes_in,
        };
        (broadcast, bodies)
    }

    /// Stops feeding leg `index` (it ended).
    pub(super) fn drop_leg(&mut self, index: usize) {
        self.feeds[index] = None;
    }

    /// Moves the request forward as far as the legs take it.
    pub(super) fn poll(&mut self, cx: &mut Context<'_>) -> Poll<BroadcastEvent> {
        loop {
            if let Some(chunk) = &self.pending {
                let item = |chunk: &Bytes| match chunk.is_empty() {
                    // An empty chunk marks the end of the request.
                    true => Item::End,
                    false => Item::Data(chunk.clone()),
                };
                let mut waiting = false;
                for index in 0..self.feeds.len() {
                    let Some(feed) = self.feeds[index].as_mut().filter(|f| f.waiting) else {
                        continue;
                    };
                    match feed.tx.poll_ready(cx) {
                        Poll::Ready(Ok(())) => {
                            let _ = feed.tx.start_send(item(chunk));
                            feed.waiting = false;
                            feed.stalled = false;
                        }
                        // The leg's stream is gone (it ended): nothing to feed.
                        Poll::Ready(Err(_)) => self.feeds[index] = None,
                        Poll::Pending => {
                            let deadline = || Instant::now() + self.stall_timeout;
                            let timer = match &mut feed.timer {
                                Some(timer) if feed.stalled => timer,
                                Some(timer) => {
                                    timer.as_mut().reset(deadline());
                                    timer
                                }
                                None => feed
                                    .timer
                                    .insert(Box::pin(tokio::time::sleep_until(deadline()))),
                            };
                            feed.stalled = true;
                            if timer.as_mut().poll(cx).is_ready() {
                                self.feeds[index] = None;
                                return Poll::Ready(BroadcastEvent::Stalled(index));
                            }
                            waiting = true;
                        }
                    }
                }
                if waiting {
                    return Poll::Pending;
                }
                self.pending = None;
                if self.ending {
                    return Poll::Ready(BroadcastEvent::Finished);
                }
            }
            let frame = ready!(Pin::new(&mut self.body).poll_frame(cx));
            let chunk = match frame {
                Some(Ok(frame)) => {
                    let Ok(data) = frame.into_data() else {
                        continue;
                    };
                    if let Err(err) = self.scanner.observe(&data) {
                        return Poll::Ready(self.fail(status::request_frame(&err), None));
                    }
                    if data.is_empty() {
                        continue;
                    }
                    if let Some(bytes) = &self.bytes_in {
                        bytes.fetch_add(data.len() as u64, Ordering::Relaxed);
                    }
                    data
                }
                Some(Err(err)) => {
                    let reason = status::reset_reason(&*err);
                    let status = Status::cancelled(format!("client request failed: {err}"));
                    return Poll::Ready(self.fail(status, Some(reason)));
                }
                None => {
                    if let Err(err) = self.scanner.finish() {
                        return Poll::Ready(self.fail(status::request_frame(&err), None));
                    }
                    self.ending = true;
                    Bytes::new()
                }
            };
            for feed in self.feeds.iter_mut().flatten() {
                feed.waiting = true;
            }
            self.pending = Some(chunk);
        }
    }

    /// Ends every leg's request with `reason` (best effort: a full queue
    /// closes, which resets with `CANCEL`) and reports `status`.
    fn fail(&mut self, status: Status, reason: Option<h2::Reason>) -> BroadcastEvent {
        for feed in self.feeds.iter_mut().filter_map(Option::take) {
            let mut tx = feed.tx;
            let _ = tx.try_send(Item::Reset(reason.unwrap_or(h2::Reason::CANCEL)));
        }
        self.pending = None;
        BroadcastEvent::Failed(status)
    }
}
