//! The legs of a fan-out call, polled inside the call's own future.
//!
//! One task per backend would cost a spawn, a task allocation and wake-ups
//! across tasks for every leg of every call; polling every leg on every
//! wake-up would cost N polls per message. [`LegSet`] gives each leg its own
//! waker that queues the leg's index, so a wake-up polls only the legs that
//! have something to say, in the order they woke (no leg starves another).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Wake, Waker};

use futures_util::task::AtomicWaker;

use super::leg::{Leg, LegEvent};

/// The legs still running, each polled when its own waker fired.
pub(super) struct LegSet {
    legs: Vec<Option<Leg>>,
    wakers: Vec<Waker>,
    ready: Arc<ReadyQueue>,
    live: usize,
}

/// Indices of the legs woken since they were last polled.
struct ReadyQueue {
    queue: Mutex<VecDeque<usize>>,
    queued: Vec<AtomicBool>,
    call: AtomicWaker,
}

impl ReadyQueue {
    fn push(&self, index: usize) {
        if !self.queued[index].swap(true, Ordering::AcqRel) {
            self.queue
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push_back(index);
        }
    }

    fn pop(&self) -> Option<usize> {
        let index = self
            .queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop_front()?;
        // Cleared before the leg is polled, so a wake-up during the poll
        // queues it again.
        self.queued[index].store(false, Ordering::Release);
        Some(index)
    }
}

/// The waker of one leg: queues it and wakes the call.
struct LegWaker {
    index: usize,
    ready: Arc<ReadyQueue>,
}

impl Wake for LegWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.ready.push(self.index);
        self.ready.call.wake();
    }
}

impl LegSet {
    pub(super) fn new(legs: Vec<Leg>) -> Self {
        let n = legs.len();
        let ready = Arc::new(ReadyQueue {
            queue: Mutex::new((0..n).collect()),
            queued: (0..n).map(|_| AtomicBool::new(true)).collect(),
            call: AtomicWaker::new(),
        });
        let wakers = (0..n)
            .map(|index| {
                Waker::from(Arc::new(LegWaker {
                    index,
                    ready: ready.clone(),
                }))
            })
            .collect();
        Self {
            legs: legs.into_iter().map(Some).collect(),
            wakers,
            ready,
            live: n,
        }
    }

    /// Stops leg `index` (its upstream stream is reset).
    pub(super) fn stop(&mut self, index: usize) {
        if self.legs[index].take().is_some() {
            self.live -= 1;
        }
    }

    /// The legs still running.
    pub(super) fn running(&self) -> impl Iterator<Item = usize> + '_ {
        self.legs
            .iter()
            .enumerate()
            .filter_map(|(index, leg)| leg.as_ref().map(|_| index))
    }

    /// Stops every leg.
    pub(super) fn stop_all(&mut self) {
        self.legs.iter_mut().for_each(|leg| *leg = None);
        self.live = 0;
    }

    /// The next event of any leg; `Ready(None)` once every leg has ended.
    pub(super) fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<(usize, LegEvent)>> {
        self.ready.call.register(cx.waker());
        while let Some(index) = self.ready.pop() {
            let Some(leg) = self.legs[index].as_mut() else {
                continue;
            };
            let mut leg_cx = Context::from_waker(&self.wakers[index]);
            match leg.poll_next(&mut leg_cx) {
                Poll::Ready(Some(event)) => {
                    // It may have more; after the others, to be fair.
                    self.ready.push(index);
                    return Poll::Ready(Some((index, event)));
                }
                Poll::Ready(None) => self.stop(index),
                Poll::Pending => {}
            }
        }
        if self.live == 0 {
            Poll::Ready(None)
        } else {
            Poll::Pending
        }
    }
}
