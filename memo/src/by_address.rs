//! Answers about one shared allocation, computed by the first holder that asks.
//!
//! A simulated server sends every hospital the same key transcript and the same list of
//! nonces, and in one process "the same" can mean the very same `Arc`. Each hospital checks
//! them (`n` entries each, `n` hospitals: `O(n^2)` hashes a round), and each would get the
//! same answer, since the check is a pure function of bytes that cannot change while they are
//! shared: `Arc::get_mut` refuses a value some `Weak` points at, and `Arc::make_mut` copies it
//! elsewhere. That holds for values without interior mutability (no `Cell`, `Mutex` or atomic
//! inside), the only kind this table may be used for.
//!
//! So the answer is remembered under the allocation's address, and the table keeps a `Weak`
//! to it: a `Weak` keeps the allocation itself (not its value) alive, so no other value can be
//! placed at that address while the entry exists. Once the last `Arc` is gone the entry is
//! useless; a later sweep removes it, which frees the address.
//!
//! A holder that receives equal bytes in a different allocation (from the network, or from a
//! server that built two lists) computes its own answer: only identity is shared. A value of
//! no bytes (an empty list) is never remembered: every empty `Arc<[T]>` may share one static
//! address, so there the address names nothing.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};

/// A table of answers by key and by the allocation the answer is about, for values `T`
/// without interior mutability.
#[derive(Debug)]
pub struct ByAddress<K, T: ?Sized, V> {
    table: Mutex<Table<K, T, V>>,
}

#[derive(Debug)]
struct Table<K, T: ?Sized, V> {
    answers: Answers<K, T, V>,
    /// Entries left by the last sweep: the next comes when the table has doubled, so sweeping
    /// costs `O(1)` an insertion however many entries stay live.
    swept_to: usize,
}

/// Answers by key and address, each with the `Weak` that pins its address.
type Answers<K, T, V> = HashMap<(K, usize), (Weak<T>, V)>;

impl<K, T: ?Sized, V> Default for ByAddress<K, T, V> {
    fn default() -> Self {
        ByAddress {
            table: Mutex::new(Table {
                answers: HashMap::new(),
                swept_to: 0,
            }),
        }
    }
}

impl<K: Hash + Eq, T: ?Sized, V: Clone> ByAddress<K, T, V> {
    /// The answer for `key` about `value`'s allocation, computed by `answer` if no holder has
    /// asked yet. `key` names everything else the answer depends on (a session tag, a hash of
    /// what `value` is checked against).
    ///
    /// The lock is not held while `answer` runs, so two holders asking at once may both
    /// compute it; the first stored answer is kept, and both are equal since `answer` is pure.
    pub fn get_or_compute(&self, key: K, value: &Arc<T>, answer: impl FnOnce() -> V) -> V {
        if std::mem::size_of_val(&**value) == 0 {
            return answer();
        }
        let slot = (key, Arc::as_ptr(value).cast::<()>() as usize);
        if let Some((pin, known)) = self.lock().answers.get(&slot)
            && pin.strong_count() > 0
        {
            return known.clone();
        }
        let fresh = answer();
        let mut table = self.lock();
        if table.answers.len() >= 2 * table.swept_to.max(4) {
            table.answers.retain(|_, (pin, _)| pin.strong_count() > 0);
            table.swept_to = table.answers.len();
        }
        table
            .answers
            .entry(slot)
            .or_insert_with(|| (Arc::downgrade(value), fresh))
            .1
            .clone()
    }

    /// How many allocations have a remembered answer.
    pub fn len(&self) -> usize {
        self.lock()
            .answers
            .values()
            .filter(|(pin, _)| pin.strong_count() > 0)
            .count()
    }

    /// Whether no allocation has a remembered answer.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> MutexGuard<'_, Table<K, T, V>> {
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    #[test]
    fn the_same_allocation_is_answered_once_and_equal_bytes_elsewhere_again() {
        let memo: ByAddress<u8, [u32], u64> = ByAddress::default();
        let calls = Cell::new(0);
        let sum = |v: &[u32]| {
            calls.set(calls.get() + 1);
            v.iter().map(|&x| u64::from(x)).sum::<u64>()
        };
        let a: Arc<[u32]> = vec![1, 2, 3].into();
        let b = Arc::clone(&a);
        assert_eq!(memo.get_or_compute(0, &a, || sum(&a)), 6);
        assert_eq!(memo.get_or_compute(0, &b, || sum(&b)), 6);
        assert_eq!(calls.get(), 1);
        // Another key is another question.
        assert_eq!(memo.get_or_compute(1, &a, || sum(&a)), 6);
        assert_eq!(calls.get(), 2);
        // Equal bytes in another allocation are checked again.
        let c: Arc<[u32]> = vec![1, 2, 3].into();
        assert_eq!(memo.get_or_compute(0, &c, || sum(&c)), 6);
        assert_eq!(calls.get(), 3);
    }

    #[test]
    fn an_address_freed_and_reused_is_never_answered_from_its_old_entry() {
        let memo: ByAddress<u8, Vec<u32>, usize> = ByAddress::default();
        let first = Arc::new(vec![1u32; 4]);
        assert_eq!(memo.get_or_compute(0, &first, || first.len()), 4);
        let addr = Arc::as_ptr(&first) as usize;
        drop(first);
        // The entry's `Weak` keeps the old allocation: a new value cannot sit at its address
        // until the entry is swept.
        let second = Arc::new(vec![7u32; 9]);
        assert_ne!(Arc::as_ptr(&second) as usize, addr);
        assert_eq!(memo.get_or_compute(0, &second, || second.len()), 9);
        assert_eq!(memo.len(), 1);
        drop(second);
        let third = Arc::new(vec![0u32; 2]);
        assert_eq!(memo.get_or_compute(0, &third, || third.len()), 2);
        assert_eq!(memo.len(), 1);
        // Values come and go; the entries of dead ones are swept, the table stays small.
        for i in 0..1_000usize {
            let v = Arc::new(vec![0u32; i % 7 + 1]);
            assert_eq!(memo.get_or_compute(0, &v, || v.len()), i % 7 + 1);
        }
        assert!(
            memo.lock().answers.len() <= 16,
            "{}",
            memo.lock().answers.len()
        );
    }

    #[test]
    fn empty_values_are_never_remembered() {
        let memo: ByAddress<u8, [u32], usize> = ByAddress::default();
        let calls = Cell::new(0);
        for _ in 0..3 {
            let empty: Arc<[u32]> = Arc::default();
            memo.get_or_compute(0, &empty, || {
                calls.set(calls.get() + 1);
                0
            });
        }
        assert_eq!(calls.get(), 3);
        assert!(memo.is_empty());
    }
}
