//! Equal values held once: each value is named by a key that determines it, and lives as long
//! as some holder keeps it.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex, PoisonError, Weak};

/// How many values are added between sweeps of the entries whose values are gone.
const SWEEP_EVERY: usize = 1024;

/// A table of weakly held values by key, shared between the holders of one process.
///
/// A key should determine its value (a height and tip hash, a session tag); the value is
/// compared in full anyway, so a holder whose value differs under the same key keeps its own.
/// That happens when a key names less than the whole value (two configurations, one
/// resolving a default the other states, have one session tag), or through a bug; never by
/// attack, since every value here was computed by its holder. The first value under a key is
/// the one shared.
#[derive(Debug)]
pub struct Interner<K, V: ?Sized> {
    table: Mutex<Table<K, V>>,
}

#[derive(Debug)]
struct Table<K, V: ?Sized> {
    held: HashMap<K, Weak<V>>,
    added: usize,
}

impl<K, V: ?Sized> Default for Interner<K, V> {
    fn default() -> Self {
        Interner {
            table: Mutex::new(Table {
                held: HashMap::new(),
                added: 0,
            }),
        }
    }
}

impl<K: Hash + Eq, V: ?Sized + PartialEq> Interner<K, V> {
    /// The held value under `key` if it equals `value`; else `value`, held under `key` if no
    /// other value is.
    pub fn intern(&self, key: K, value: Arc<V>) -> Arc<V> {
        let mut table = self.table.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(held) = table.held.get(&key).and_then(Weak::upgrade) {
            if Arc::ptr_eq(&held, &value) || *held == *value {
                return held;
            }
            return value;
        }
        table.added += 1;
        if table.added.is_multiple_of(SWEEP_EVERY) {
            table.held.retain(|_, v| v.strong_count() > 0);
        }
        table.held.insert(key, Arc::downgrade(&value));
        value
    }

    /// The value held under `key`, if some holder still keeps it: for values that are costly
    /// to compute and a pure function of what the key names.
    pub fn get(&self, key: &K) -> Option<Arc<V>> {
        let table = self.table.lock().unwrap_or_else(PoisonError::into_inner);
        table.held.get(key).and_then(Weak::upgrade)
    }

    /// How many keys have a live value.
    pub fn len(&self) -> usize {
        let table = self.table.lock().unwrap_or_else(PoisonError::into_inner);
        table.held.values().filter(|v| v.strong_count() > 0).count()
    }

    /// Whether no key has a live value.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_values_are_held_once_and_only_while_someone_holds_them() {
        let interner: Interner<u64, Vec<u8>> = Interner::default();
        let a = interner.intern(1, Arc::new(vec![1, 2, 3]));
        let b = interner.intern(1, Arc::new(vec![1, 2, 3]));
        assert!(Arc::ptr_eq(&a, &b));
        // Same key, different value: kept apart.
        let c = interner.intern(1, Arc::new(vec![9]));
        assert!(!Arc::ptr_eq(&a, &c));
        assert_eq!(*c, vec![9]);
        assert_eq!(interner.len(), 1);
        drop((a, b));
        assert!(interner.get(&1).is_none());
        assert!(interner.is_empty());
    }
}
