//! Connections that have not yet sent their A-ASSOCIATE-RQ. They are accepted at once
//! and kept apart from established associations, in a bounded queue: when the queue (or
//! one address's share of it) is full, the oldest waiting connection is dropped to make
//! room. Sockets that never speak cannot lock peers out: a peer that sends its request
//! right after connecting always gets in, however many idle sockets there are.

use std::collections::VecDeque;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use tokio_util::sync::CancellationToken;

/// The waiting connections, oldest first.
pub struct Pending {
    max_total: usize,
    max_per_address: usize,
    waiting: Mutex<VecDeque<Waiting>>,
    next_id: std::sync::atomic::AtomicU64,
}

struct Waiting {
    id: u64,
    address: IpAddr,
    evict: CancellationToken,
}

/// A place in the queue; cancelled when evicted, released when dropped.
pub struct Slot {
    pending: Arc<Pending>,
    id: u64,
    pub evicted: CancellationToken,
}

impl Pending {
    pub fn new(max_total: usize, max_per_address: usize) -> Arc<Self> {
        Arc::new(Self {
            max_total: max_total.max(1),
            max_per_address: max_per_address.max(1),
            waiting: Mutex::new(VecDeque::new()),
            next_id: std::sync::atomic::AtomicU64::new(1),
        })
    }

    /// Queues a new connection from `address`, evicting the oldest connection of that
    /// address, or the oldest of all, where a limit would be exceeded. Returns the
    /// number evicted with the slot.
    pub fn enter(self: &Arc<Self>, address: IpAddr) -> (Slot, usize) {
        let id = self
            .next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let evicted = CancellationToken::new();
        let mut waiting = self.waiting.lock().expect("pending queue lock");
        let mut dropped = 0;
        let from_address = waiting.iter().filter(|w| w.address == address).count();
        if from_address >= self.max_per_address
            && let Some(i) = waiting.iter().position(|w| w.address == address)
        {
            waiting.remove(i).expect("index found").evict.cancel();
            dropped += 1;
        }
        if waiting.len() >= self.max_total
            && let Some(oldest) = waiting.pop_front()
        {
            oldest.evict.cancel();
            dropped += 1;
        }
        waiting.push_back(Waiting {
            id,
            address,
            evict: evicted.clone(),
        });
        (
            Slot {
                pending: self.clone(),
                id,
                evicted,
            },
            dropped,
        )
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.waiting.lock().expect("pending queue lock").len()
    }

    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut waiting = self.pending.waiting.lock().expect("pending queue lock");
        if let Some(i) = waiting.iter().position(|w| w.id == self.id) {
            waiting.remove(i);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    #[test]
    fn the_oldest_of_an_address_makes_room_for_its_newest() {
        let pending = Pending::new(100, 2);
        let (a, _) = pending.enter(ip(1));
        let (b, _) = pending.enter(ip(1));
        let (other, _) = pending.enter(ip(2));
        let (c, dropped) = pending.enter(ip(1));
        assert_eq!(dropped, 1);
        assert!(a.evicted.is_cancelled());
        assert!(!b.evicted.is_cancelled() && !c.evicted.is_cancelled());
        assert!(!other.evicted.is_cancelled());
        assert_eq!(pending.len(), 3);
        drop((b, c, other));
        drop(a);
        assert!(pending.is_empty());
    }

    #[test]
    fn a_full_queue_drops_its_oldest() {
        let pending = Pending::new(3, 3);
        let slots: Vec<Slot> = (0..3).map(|i| pending.enter(ip(i)).0).collect();
        let (newest, dropped) = pending.enter(ip(9));
        assert_eq!(dropped, 1);
        assert!(slots[0].evicted.is_cancelled());
        assert!(!slots[1].evicted.is_cancelled() && !newest.evicted.is_cancelled());
        assert_eq!(pending.len(), 3);
    }
}
