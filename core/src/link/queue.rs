//! A connection's outbound queue: bounded, one reader, and holding no memory while it is empty.
//!
//! tokio's `mpsc` allocates its channel state and a first block of 32 slots with every channel,
//! about 1 KiB a connection for the whole life of even an idle one (benchmarks.md, issue 19,
//! third pass). This queue is a `VecDeque` that is released whenever the reader empties it, so
//! an idle connection pays only for the queue's fixed state. A push never waits (a full queue
//! is the caller's decision: drop, or disconnect a slow consumer); [`Sender::push_waiting`]
//! waits for room, for traffic the reader paces.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::Notify;

/// Why a push did not queue its item.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum PushError<T> {
    /// The queue holds its capacity already.
    Full(T),
    /// The reader is gone.
    Gone(T),
}

/// What [`Receiver::try_pop`] found.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Pop<T> {
    Item(T),
    Empty,
    /// Empty, and every sender is gone: nothing will come.
    Closed,
}

struct State<T> {
    items: VecDeque<T>,
    senders: usize,
    reader_gone: bool,
    /// A sender waits in [`Sender::push_waiting`] for the reader to make room.
    room_wanted: bool,
}

struct Shared<T> {
    state: Mutex<State<T>>,
    capacity: usize,
    /// Wakes the reader: an item, the last sender gone, or [`Sender::wake`]. `notify_one`
    /// keeps a permit when the reader is not waiting, so no wake-up is lost between its check
    /// and its wait.
    readable: Notify,
    /// Wakes the senders waiting for room.
    room: Notify,
}

impl<T> Shared<T> {
    fn lock(&self) -> MutexGuard<'_, State<T>> {
        // A queue's state is consistent between statements: a panic elsewhere leaves it usable.
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A queue of at most `capacity` items (at least one).
pub(super) fn bounded<T>(capacity: usize) -> (Sender<T>, Receiver<T>) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State { items: VecDeque::new(), senders: 1, reader_gone: false, room_wanted: false }),
        capacity: capacity.max(1),
        readable: Notify::new(),
        room: Notify::new(),
    });
    (Sender { shared: Arc::clone(&shared) }, Receiver { shared })
}

/// The writing end; clones share the queue.
pub(super) struct Sender<T> {
    shared: Arc<Shared<T>>,
}

impl<T> std::fmt::Debug for Sender<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sender").field("len", &self.len()).finish_non_exhaustive()
    }
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        self.shared.lock().senders += 1;
        Self { shared: Arc::clone(&self.shared) }
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        let last = {
            let mut s = self.shared.lock();
            s.senders -= 1;
            s.senders == 0
        };
        if last {
            self.shared.readable.notify_one();
        }
    }
}

impl<T> Sender<T> {
    /// Items waiting.
    pub(super) fn len(&self) -> usize {
        self.shared.lock().items.len()
    }

    /// The most items it holds.
    pub(super) fn capacity(&self) -> usize {
        self.shared.capacity
    }

    /// Queues `item` if there is room; `Ok` with how many items were waiting before it.
    pub(super) fn push(&self, item: T) -> Result<usize, PushError<T>> {
        self.push_or_want_room(item, false)
    }

    /// `want_room`: when full, ask the reader (under the same lock, so that no pop is missed)
    /// to wake the senders waiting for room.
    fn push_or_want_room(&self, item: T, want_room: bool) -> Result<usize, PushError<T>> {
        let depth = {
            let mut s = self.shared.lock();
            if s.reader_gone {
                return Err(PushError::Gone(item));
            }
            if s.items.len() >= self.shared.capacity {
                s.room_wanted |= want_room;
                return Err(PushError::Full(item));
            }
            let depth = s.items.len();
            s.items.push_back(item);
            depth
        };
        self.shared.readable.notify_one();
        Ok(depth)
    }

    /// Queues `item`, waiting for room; `Err` with the item if the reader is gone.
    /// Cancel-safe: a dropped wait queued nothing.
    pub(super) async fn push_waiting(&self, item: T) -> Result<(), T> {
        let mut item = item;
        loop {
            let room = self.shared.room.notified();
            tokio::pin!(room);
            // Registered before the check, so that room made after it still wakes this wait.
            room.as_mut().enable();
            match self.push_or_want_room(item, true) {
                Ok(_) => return Ok(()),
                Err(PushError::Gone(back)) => return Err(back),
                Err(PushError::Full(back)) => item = back,
            }
            room.await;
        }
    }

    /// Wakes the reader without an item, for a change it watches outside the queue.
    pub(super) fn wake(&self) {
        self.shared.readable.notify_one();
    }
}

/// The reading end (one reader).
pub(super) struct Receiver<T> {
    shared: Arc<Shared<T>>,
}

impl<T> std::fmt::Debug for Receiver<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Receiver").finish_non_exhaustive()
    }
}

impl<T> Receiver<T> {
    /// The next item, if one is waiting.
    pub(super) fn try_pop(&self) -> Pop<T> {
        let (popped, wake_senders) = {
            let mut s = self.shared.lock();
            let popped = match s.items.pop_front() {
                Some(item) => {
                    if s.items.is_empty() {
                        // Nothing kept while idle: the next burst allocates again.
                        s.items = VecDeque::new();
                    }
                    Pop::Item(item)
                }
                None if s.senders == 0 => Pop::Closed,
                None => Pop::Empty,
            };
            let wake = matches!(popped, Pop::Item(_)) && std::mem::take(&mut s.room_wanted);
            (popped, wake)
        };
        if wake_senders {
            self.shared.room.notify_waiters();
        }
        popped
    }

    /// Waits until an item may be waiting (or the last sender left, or [`Sender::wake`]).
    /// May return without one; the caller checks again. Cancel-safe.
    pub(super) async fn readable(&self) {
        self.shared.readable.notified().await;
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        let items = {
            let mut s = self.shared.lock();
            s.reader_gone = true;
            std::mem::take(&mut s.items)
        };
        // Dropped outside the lock: an item's drop may run anything.
        drop(items);
        self.shared.room.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_in_order_and_released_when_empty() {
        let (tx, rx) = bounded(2);
        assert_eq!(tx.push(1), Ok(0));
        assert_eq!(tx.push(2), Ok(1));
        assert_eq!(tx.push(3), Err(PushError::Full(3)));
        assert_eq!(tx.len(), 2);
        assert_eq!(rx.try_pop(), Pop::Item(1));
        assert_eq!(rx.try_pop(), Pop::Item(2));
        assert_eq!(rx.try_pop(), Pop::Empty);
        assert_eq!(rx.shared.lock().items.capacity(), 0, "an empty queue holds no memory");
    }

    #[test]
    fn closed_after_the_last_sender_once_drained() {
        let (tx, rx) = bounded(4);
        let tx2 = tx.clone();
        tx.push(7).ok();
        drop(tx);
        assert_eq!(rx.try_pop(), Pop::Item(7));
        assert_eq!(rx.try_pop(), Pop::Empty, "a clone still holds it open");
        drop(tx2);
        assert_eq!(rx.try_pop(), Pop::Closed);
    }

    #[test]
    fn push_after_the_reader_left_is_refused() {
        let (tx, rx) = bounded(4);
        drop(rx);
        assert_eq!(tx.push(1), Err(PushError::Gone(1)));
    }

    #[tokio::test]
    async fn the_reader_wakes_for_an_item_pushed_before_it_waits() {
        let (tx, rx) = bounded(4);
        tx.push(1).ok();
        tokio::time::timeout(std::time::Duration::from_secs(5), rx.readable()).await.expect("woken");
        assert_eq!(rx.try_pop(), Pop::Item(1));
    }

    #[tokio::test]
    async fn a_waiting_push_gets_room_when_the_reader_takes_one() {
        let (tx, rx) = bounded(1);
        tx.push(1).ok();
        let waiting = tokio::spawn(async move { tx.push_waiting(2).await.map(|()| tx) });
        tokio::task::yield_now().await;
        assert_eq!(rx.try_pop(), Pop::Item(1));
        let tx = tokio::time::timeout(std::time::Duration::from_secs(5), waiting)
            .await
            .expect("room made")
            .expect("task")
            .expect("queued");
        assert_eq!(rx.try_pop(), Pop::Item(2));
        drop(tx);
        assert_eq!(rx.try_pop(), Pop::Closed);
    }

    #[tokio::test]
    async fn a_waiting_push_ends_when_the_reader_leaves() {
        let (tx, rx) = bounded(1);
        tx.push(1).ok();
        let waiting = tokio::spawn(async move { tx.push_waiting(2).await });
        tokio::task::yield_now().await;
        drop(rx);
        let r = tokio::time::timeout(std::time::Duration::from_secs(5), waiting).await.expect("ended").expect("task");
        assert_eq!(r, Err(2));
    }
}
