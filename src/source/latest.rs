//! The latest-frame slot between the capture thread and the inference thread.
//!
//! A camera delivers 15–30 fps; a backbone on a Pi 4 may manage 3. A queue between them would
//! grow without bound or, if bounded, hand the model frames that are seconds old. This slot
//! holds at most one frame: a new frame replaces the unconsumed one (counted as skipped), so
//! inference always works on the newest picture and memory stays flat (one frame in the slot,
//! one being captured, one being inferred), whatever the speed difference.
//!
//! Why not `tokio::sync::watch`: both ends are plain OS threads that block, and a watch
//! channel cannot count what was overwritten. A `Mutex` + `Condvar` does both in a page of code.
//!
//! Audio uses the same slot with room for a few values ([`bounded_slot`]): utterances are
//! events, not samples of a scene, and a short burst of them (the capture side reads a pipe
//! faster than real time) should all be classified; when the queue is full the *oldest* is
//! dropped and counted, so memory stays bounded just the same.
//!
//! Errors reuse `std::sync::mpsc`'s types, whose meaning every Rust reader already knows:
//! `send` fails with [`SendError`] once the receiver is gone (the capture thread should stop),
//! `recv_timeout` returns [`RecvTimeoutError::Timeout`] or, once the sender is gone and the
//! last frame was taken, [`RecvTimeoutError::Disconnected`].

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{RecvTimeoutError, SendError};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use crate::source::frame::Frame;

/// Constructor namespace for the frame slot; see [`latest_slot`] for other payloads (audio).
pub struct LatestFrame;

impl LatestFrame {
    /// A connected sender / receiver pair for frames.
    #[allow(clippy::new_ret_no_self)] // a channel constructor: returns its two ends, like mpsc
    pub fn new() -> (LatestSender<Frame>, LatestReceiver<Frame>) {
        latest_slot()
    }
}

/// A connected pair over any payload that holds one value (the newest).
pub fn latest_slot<T>() -> (LatestSender<T>, LatestReceiver<T>) {
    bounded_slot(1)
}

/// A connected pair that holds up to `capacity` values (at least one) in order; a value sent
/// to a full slot pushes out the oldest, counted as skipped.
pub fn bounded_slot<T>(capacity: usize) -> (LatestSender<T>, LatestReceiver<T>) {
    let capacity = capacity.max(1);
    let shared = Arc::new(SlotCell {
        state: Mutex::new(Slot {
            values: VecDeque::with_capacity(capacity),
            capacity,
            closed: false,
            bell: None,
        }),
        cond: Condvar::new(),
        counters: Arc::new(SlotCounters::default()),
    });
    (
        LatestSender {
            shared: shared.clone(),
        },
        LatestReceiver { shared },
    )
}

/// Counts kept apart from the slot so the stats publisher can hold them without keeping a
/// frame alive.
#[derive(Debug, Default)]
pub struct SlotCounters {
    sent: AtomicU64,
    skipped: AtomicU64,
    received: AtomicU64,
}

impl SlotCounters {
    /// Values accepted by `send`.
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }
    /// Values replaced before the receiver took them.
    pub fn skipped(&self) -> u64 {
        self.skipped.load(Ordering::Relaxed)
    }
    /// Values taken by the receiver. `sent = received + skipped + (0 or 1 pending)`.
    pub fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }
}

struct Slot<T> {
    values: VecDeque<T>,
    capacity: usize,
    closed: bool,
    /// Rung on every send and on close, for a consumer that watches several slots.
    bell: Option<Arc<Doorbell>>,
}

/// Wakes one consumer that watches several slots (the inference worker that serves every
/// camera of a daemon) when any of them gets a value or closes, so it can sleep on one
/// condition instead of polling each slot.
#[derive(Debug, Default)]
pub struct Doorbell {
    rings: Mutex<u64>,
    cond: Condvar,
}

impl Doorbell {
    pub fn new() -> Arc<Doorbell> {
        Arc::new(Doorbell::default())
    }

    fn lock(&self) -> MutexGuard<'_, u64> {
        // A counter: a poisoned lock is still consistent.
        self.rings.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn ring(&self) {
        *self.lock() += 1;
        self.cond.notify_all();
    }

    /// How often it has rung so far; pass it to [`Doorbell::wait`].
    pub fn rings(&self) -> u64 {
        *self.lock()
    }

    /// Waits up to `timeout` for a ring after the `seen`-th.
    pub fn wait(&self, seen: u64, timeout: Duration) {
        let guard = self.lock();
        let _ = self
            .cond
            .wait_timeout_while(guard, timeout, |rings| *rings == seen);
    }
}

/// What both ends of one slot share: the slot behind its lock, the condition the receiver
/// waits on, and the counters the stats read.
struct SlotCell<T> {
    state: Mutex<Slot<T>>,
    cond: Condvar,
    counters: Arc<SlotCounters>,
}

impl<T> SlotCell<T> {
    fn lock(&self) -> MutexGuard<'_, Slot<T>> {
        // A panic while holding this lock cannot leave the slot inconsistent (every update is
        // a single assignment), so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn close(&self) {
        let bell = {
            let mut slot = self.lock();
            slot.closed = true;
            slot.bell.clone()
        };
        self.cond.notify_all();
        if let Some(b) = bell {
            b.ring();
        }
    }
}

/// The capture side. Not `Clone`: one producer per slot. Dropping it closes the slot.
pub struct LatestSender<T> {
    shared: Arc<SlotCell<T>>,
}

impl<T> LatestSender<T> {
    /// Puts `value` in the slot, replacing (and counting as skipped) any value the receiver has
    /// not taken yet. Never blocks for long: only for the receiver's brief critical section.
    pub fn send(&self, value: T) -> Result<(), SendError<T>> {
        let (old, bell) = {
            let mut slot = self.shared.lock();
            if slot.closed {
                return Err(SendError(value));
            }
            slot.values.push_back(value);
            let old = if slot.values.len() > slot.capacity {
                slot.values.pop_front()
            } else {
                None
            };
            (old, slot.bell.clone())
        };
        self.shared.counters.sent.fetch_add(1, Ordering::Relaxed);
        if old.is_some() {
            self.shared.counters.skipped.fetch_add(1, Ordering::Relaxed);
        }
        self.shared.cond.notify_one();
        if let Some(b) = bell {
            b.ring();
        }
        // `old` (a whole frame) is freed here, outside the lock.
        drop(old);
        Ok(())
    }

    /// True once the receiver was dropped or closed: the capture loop can stop.
    pub fn is_closed(&self) -> bool {
        self.shared.lock().closed
    }

    /// Closes the slot; the receiver still gets a pending value, then `Disconnected`.
    pub fn close(&self) {
        self.shared.close();
    }

    pub fn counters(&self) -> Arc<SlotCounters> {
        self.shared.counters.clone()
    }
}

impl<T> Drop for LatestSender<T> {
    fn drop(&mut self) {
        self.shared.close();
    }
}

/// The inference side. Not `Clone`: one consumer per slot. Dropping it closes the slot.
pub struct LatestReceiver<T> {
    shared: Arc<SlotCell<T>>,
}

impl<T> LatestReceiver<T> {
    /// Waits up to `timeout` for a value newer than the last one taken. A pending value is
    /// returned even after the sender closed; then `Disconnected`.
    pub fn recv_timeout(&self, timeout: Duration) -> Result<T, RecvTimeoutError> {
        let slot = self.shared.lock();
        let (mut slot, _) = match self
            .shared
            .cond
            .wait_timeout_while(slot, timeout, |s| s.values.is_empty() && !s.closed)
        {
            Ok(r) => r,
            Err(e) => e.into_inner(),
        };
        self.take(&mut slot).ok_or(if slot.closed {
            RecvTimeoutError::Disconnected
        } else {
            RecvTimeoutError::Timeout
        })
    }

    /// Takes a pending value without waiting.
    pub fn try_recv(&self) -> Result<T, RecvTimeoutError> {
        let mut slot = self.shared.lock();
        self.take(&mut slot).ok_or(if slot.closed {
            RecvTimeoutError::Disconnected
        } else {
            RecvTimeoutError::Timeout
        })
    }

    /// Values waiting (0 or 1 for a frame slot).
    pub fn pending(&self) -> usize {
        self.shared.lock().values.len()
    }

    fn take(&self, slot: &mut Slot<T>) -> Option<T> {
        let v = slot.values.pop_front();
        if v.is_some() {
            self.shared
                .counters
                .received
                .fetch_add(1, Ordering::Relaxed);
        }
        v
    }

    /// Rings `bell` on every later send and on close (see [`Doorbell`]).
    pub fn ring_on_send(&self, bell: Arc<Doorbell>) {
        let pending = {
            let mut slot = self.shared.lock();
            slot.bell = Some(bell.clone());
            !slot.values.is_empty() || slot.closed
        };
        if pending {
            bell.ring();
        }
    }

    /// Closes the slot from the consumer side: the sender's next `send` fails, which tells the
    /// capture thread to stop.
    pub fn close(&self) {
        self.shared.close();
    }

    pub fn counters(&self) -> Arc<SlotCounters> {
        self.shared.counters.clone()
    }
}

impl<T> Drop for LatestReceiver<T> {
    fn drop(&mut self) {
        self.shared.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn frame(seq: u64) -> Frame {
        Frame::now(seq, image::RgbImage::new(1, 1), "test")
    }

    #[test]
    fn newest_frame_wins_and_replacements_are_counted() {
        let (tx, rx) = LatestFrame::new();
        for i in 0..5 {
            assert!(tx.send(frame(i)).is_ok());
        }
        let f = rx.recv_timeout(Duration::from_millis(10)).expect("a frame");
        assert_eq!(f.seq, 4);
        let c = rx.counters();
        assert_eq!((c.sent(), c.skipped(), c.received()), (5, 4, 1));
        assert_eq!(
            rx.recv_timeout(Duration::from_millis(20)).err(),
            Some(RecvTimeoutError::Timeout)
        );
    }

    #[test]
    fn a_bounded_slot_keeps_the_newest_values_in_order() {
        let (tx, rx) = bounded_slot::<u32>(3);
        for i in 0..5 {
            assert!(tx.send(i).is_ok());
        }
        drop(tx);
        let got: Vec<u32> =
            std::iter::from_fn(|| rx.recv_timeout(Duration::from_millis(10)).ok()).collect();
        assert_eq!(got, vec![2, 3, 4]);
        let c = rx.counters();
        assert_eq!((c.sent(), c.skipped(), c.received()), (5, 2, 3));
        assert_eq!(
            rx.recv_timeout(Duration::from_millis(5)).err(),
            Some(RecvTimeoutError::Disconnected)
        );
    }

    #[test]
    fn slow_consumer_sees_increasing_newest_frames_and_counts_add_up() {
        let (tx, rx) = LatestFrame::new();
        let producer = std::thread::spawn(move || {
            for i in 0..200 {
                if tx.send(frame(i)).is_err() {
                    break;
                }
                std::thread::sleep(Duration::from_micros(500));
            }
            // tx dropped: closes the slot.
        });
        let mut seen = Vec::new();
        loop {
            match rx.recv_timeout(Duration::from_secs(5)) {
                Ok(f) => {
                    seen.push(f.seq);
                    std::thread::sleep(Duration::from_millis(10)); // slow model
                }
                Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => panic!("producer stalled"),
            }
        }
        assert!(producer.join().is_ok());
        assert!(seen.windows(2).all(|w| w[0] < w[1]), "{seen:?}");
        assert_eq!(seen.last(), Some(&199), "the last frame is never lost");
        let c = rx.counters();
        assert_eq!(c.sent(), 200);
        assert_eq!(c.received(), seen.len() as u64);
        assert_eq!(c.skipped() + c.received(), c.sent());
        assert!(c.skipped() > 100, "a slow consumer skips: {}", c.skipped());
    }

    #[test]
    fn closing_wakes_a_blocked_receiver() {
        let (tx, rx) = LatestFrame::new();
        let t = Instant::now();
        let waiter = std::thread::spawn(move || rx.recv_timeout(Duration::from_secs(60)).err());
        std::thread::sleep(Duration::from_millis(50));
        drop(tx);
        assert_eq!(
            waiter.join().ok().flatten(),
            Some(RecvTimeoutError::Disconnected)
        );
        assert!(t.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn explicit_close_delivers_the_pending_frame_first() {
        let (tx, rx) = LatestFrame::new();
        assert!(tx.send(frame(1)).is_ok());
        tx.close();
        assert!(tx.send(frame(2)).is_err());
        assert_eq!(rx.try_recv().map(|f| f.seq).ok(), Some(1));
        assert_eq!(rx.try_recv().err(), Some(RecvTimeoutError::Disconnected));
    }

    #[test]
    fn dropping_the_receiver_tells_the_sender_to_stop() {
        let (tx, rx) = LatestFrame::new();
        assert!(!tx.is_closed());
        drop(rx);
        assert!(tx.is_closed());
        let back = tx.send(frame(3));
        assert_eq!(back.err().map(|e| e.0.seq), Some(3));
    }

    #[test]
    fn memory_stays_flat_one_pending_value_at_most() {
        // A payload that counts live instances.
        struct Counted(Arc<AtomicU64>);
        impl Drop for Counted {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::SeqCst);
            }
        }
        let live = Arc::new(AtomicU64::new(0));
        let (tx, rx) = latest_slot();
        for _ in 0..1000 {
            live.fetch_add(1, Ordering::SeqCst);
            assert!(tx.send(Counted(live.clone())).is_ok());
            assert!(live.load(Ordering::SeqCst) <= 1);
        }
        assert!(rx.try_recv().is_ok());
        assert_eq!(live.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn one_doorbell_rings_for_every_slot_it_watches() {
        let bell = Doorbell::new();
        let (tx_a, rx_a) = latest_slot::<u32>();
        let (tx_b, rx_b) = latest_slot::<u32>();
        // A value already waiting rings at once: the consumer must not sleep past it.
        assert!(tx_a.send(1).is_ok());
        rx_a.ring_on_send(bell.clone());
        assert_eq!(bell.rings(), 1);
        // An empty slot does not ring when watched, only when it gets a value.
        rx_b.ring_on_send(bell.clone());
        assert_eq!(bell.rings(), 1);
        assert!(tx_b.send(2).is_ok());
        assert_eq!(bell.rings(), 2);
        // Either slot's sends ring the same bell; a replaced value still rings.
        assert!(tx_a.send(3).is_ok());
        assert_eq!(bell.rings(), 3);
        assert_eq!(rx_a.try_recv().ok(), Some(3));
        assert_eq!(rx_b.try_recv().ok(), Some(2));
        // Closing rings too, so a consumer notices a camera that stopped.
        drop(tx_b);
        assert_eq!(bell.rings(), 4);
        assert_eq!(rx_b.try_recv().err(), Some(RecvTimeoutError::Disconnected));
    }

    #[test]
    fn a_waiter_wakes_on_a_ring_from_another_thread() {
        let bell = Doorbell::new();
        let (tx, rx) = latest_slot::<u32>();
        rx.ring_on_send(bell.clone());
        let seen = bell.rings();
        let producer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            tx.send(7).is_ok()
        });
        // A generous timeout: the test asserts the wake, never a duration.
        let mut waits = 0;
        while bell.rings() == seen && waits < 100 {
            bell.wait(seen, Duration::from_secs(10));
            waits += 1;
        }
        assert!(bell.rings() > seen, "woken by the send");
        assert_eq!(producer.join().ok(), Some(true));
        assert_eq!(rx.try_recv().ok(), Some(7));
        // A wait with a ring already past `seen` returns without sleeping.
        bell.wait(seen, Duration::from_secs(3600));
    }
}
