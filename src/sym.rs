//! Interned names ([`Sym`]): series ids, value names and tags of readings.
//!
//! A [`Sym`] is a 16-byte `Copy` handle (pointer, length, dense index) to a string that lives
//! for the rest of the process. Every `Sym` of the same text has the same index, so equality
//! is one comparison, and copying or dropping one touches no reference count. That matters in the hot path:
//! readings move between worker threads, and an `Arc<str>` there costs an atomic add where a
//! reading is made and an atomic subtract on another core where it is dropped, on a cache line
//! the two cores then pass back and forth.
//!
//! The price: a distinct string is never freed. Each costs its bytes plus a table slot once
//! per process (and an entry in the cache of each thread that interned it), which is small
//! next to the per-series state the operators keep anyway; it does mean tags should not carry
//! unbounded free text (a message, a timestamp).
//!
//! Interning looks in a per-thread cache first and takes the process-wide table's lock only
//! the first time a thread sees a string. Hashing and ordering are by content, so maps keyed
//! by `Sym` iterate and partition the same way in every process; [`SymMap`] keys per-series
//! state by the dense index instead, with no hashing at all.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;
use std::sync::{Mutex, OnceLock};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::record::StrMap;

/// An interned string: `Copy`, compared by its dense process-wide [`index`](Sym::index),
/// hashed and ordered by content.
#[derive(Clone, Copy)]
pub struct Sym {
    ptr: std::ptr::NonNull<u8>,
    len: u32,
    index: u32,
}

// SAFETY: a `Sym` points at leaked, never-mutated bytes; sharing or sending it shares nothing
// mutable.
unsafe impl Send for Sym {}
// SAFETY: as above.
unsafe impl Sync for Sym {}

/// The process-wide table: every string interned so far (leaked once) and its index.
fn table() -> &'static Mutex<HashMap<&'static str, u32>> {
    static TABLE: OnceLock<Mutex<HashMap<&'static str, u32>>> = OnceLock::new();
    TABLE.get_or_init(Mutex::default)
}

thread_local! {
    /// This thread's view of the table (no lock on a hit).
    static CACHE: RefCell<StrMap<Sym>> = RefCell::new(StrMap::default());
}

impl Sym {
    /// The interned copy of `s` (made on first sight in this process).
    ///
    /// Names are capped at 4 GiB (far above anything an input can carry: a Kafka message, a
    /// CSV line held in memory).
    #[inline]
    pub fn new(s: &str) -> Sym {
        CACHE.with(|c| *c.borrow_mut().get_or_insert_with(s, || Sym::global(s)))
    }

    /// Looks `s` up in (or adds it to) the process-wide table.
    fn global(s: &str) -> Sym {
        // A poisoned lock still holds a valid table: entries are only ever added.
        let mut t = table().lock().unwrap_or_else(|p| p.into_inner());
        let (text, index) = match t.get_key_value(s) {
            Some((&k, &i)) => (k, i),
            None => {
                let k: &'static str = Box::leak(s.into());
                let i = u32::try_from(t.len()).expect("more than 4 billion distinct names");
                t.insert(k, i);
                (k, i)
            }
        };
        Sym {
            ptr: std::ptr::NonNull::from(text.as_bytes()).cast(),
            len: u32::try_from(text.len()).expect("a name over 4 GiB"),
            index,
        }
    }

    /// The text.
    #[inline]
    pub fn as_str(&self) -> &'static str {
        // SAFETY: `ptr`/`len` come from a leaked `&'static str` (see `global`).
        unsafe {
            std::str::from_utf8_unchecked(std::slice::from_raw_parts(
                self.ptr.as_ptr(),
                self.len as usize,
            ))
        }
    }

    /// Dense number of this name in the process: 0, 1, 2 ... in order of first sight. Equal
    /// for equal symbols; not stable across processes or runs. [`SymMap`] indexes by it.
    #[inline]
    pub fn index(&self) -> u32 {
        self.index
    }
}

impl PartialEq for Sym {
    #[inline]
    fn eq(&self, other: &Sym) -> bool {
        // Interned: the same text is the same entry.
        self.index == other.index
    }
}

impl Eq for Sym {}

impl PartialEq<str> for Sym {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for Sym {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl std::hash::Hash for Sym {
    #[inline]
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        self.as_str().hash(h)
    }
}

impl PartialOrd for Sym {
    fn partial_cmp(&self, other: &Sym) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Sym {
    fn cmp(&self, other: &Sym) -> std::cmp::Ordering {
        if self == other {
            std::cmp::Ordering::Equal
        } else {
            self.as_str().cmp(other.as_str())
        }
    }
}

impl std::ops::Deref for Sym {
    type Target = str;
    #[inline]
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for Sym {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl std::borrow::Borrow<str> for Sym {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

impl fmt::Debug for Sym {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for Sym {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<&str> for Sym {
    fn from(s: &str) -> Sym {
        Sym::new(s)
    }
}

impl From<&String> for Sym {
    fn from(s: &String) -> Sym {
        Sym::new(s)
    }
}

impl From<String> for Sym {
    fn from(s: String) -> Sym {
        Sym::new(&s)
    }
}

impl Serialize for Sym {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Sym {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Sym, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Sym;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Sym, E> {
                Ok(Sym::new(v))
            }
        }
        d.deserialize_str(V)
    }
}

/// A map keyed by [`Sym`] without hashing: a slot table indexed by [`Sym::index`] points into
/// a dense vector of entries, so a lookup is two array reads. Iterates in insertion order;
/// [`drain`](SymMap::drain) keeps both allocations for reuse.
///
/// Memory: 4 bytes per symbol of the process up to the highest index looked up, plus the
/// entries. Made for per-series operator state, where the process's symbols are mostly the
/// series the operator sees.
#[derive(Debug, Clone)]
pub struct SymMap<V> {
    /// Position in `entries` + 1 by symbol index (0: absent).
    slots: Vec<u32>,
    entries: Vec<(Sym, V)>,
}

impl<V> Default for SymMap<V> {
    fn default() -> Self {
        SymMap {
            slots: Vec::new(),
            entries: Vec::new(),
        }
    }
}

impl<V> SymMap<V> {
    /// An empty map with room for `n` entries.
    pub fn with_capacity(n: usize) -> Self {
        SymMap {
            slots: Vec::new(),
            entries: Vec::with_capacity(n),
        }
    }

    /// The value of `key`, made by `make` on first sight.
    #[inline]
    pub fn get_or_insert_with(&mut self, key: Sym, make: impl FnOnce() -> V) -> &mut V {
        let i = key.index as usize;
        if i >= self.slots.len() {
            self.slots.resize((i + 1).next_power_of_two(), 0);
        }
        let slot = self.slots[i] as usize;
        let pos = if slot == 0 {
            self.entries.push((key, make()));
            self.slots[i] = self.entries.len() as u32;
            self.entries.len() - 1
        } else {
            slot - 1
        };
        &mut self.entries[pos].1
    }

    /// The value of `key`, if present.
    pub fn get(&self, key: Sym) -> Option<&V> {
        match self.slots.get(key.index as usize) {
            Some(&s) if s > 0 => Some(&self.entries[s as usize - 1].1),
            _ => None,
        }
    }

    /// The value of `key` to change, if present.
    pub fn get_mut(&mut self, key: Sym) -> Option<&mut V> {
        match self.slots.get(key.index as usize) {
            Some(&s) if s > 0 => Some(&mut self.entries[s as usize - 1].1),
            _ => None,
        }
    }

    /// Removes `key`'s entry and returns its value; the last entry takes its place (so
    /// [`iter`](Self::iter) is in insertion order only while nothing was removed). O(1).
    pub fn remove(&mut self, key: Sym) -> Option<V> {
        let s = *self.slots.get(key.index as usize)? as usize;
        if s == 0 {
            return None;
        }
        self.slots[key.index as usize] = 0;
        let (_, v) = self.entries.swap_remove(s - 1);
        if let Some((moved, _)) = self.entries.get(s - 1) {
            self.slots[moved.index as usize] = s as u32;
        }
        Some(v)
    }

    /// Hints that `key` is looked up soon: prefetches its entry (when present) so that the
    /// lookup a few readings later finds it in cache. Operators call it some readings ahead.
    #[inline]
    pub fn prefetch(&self, key: Sym) {
        if let Some(&s) = self.slots.get(key.index as usize) {
            if s > 0 {
                // Every cache line of the entry (an entry can straddle two or three).
                let at = self
                    .entries
                    .as_ptr()
                    .wrapping_add(s as usize - 1)
                    .cast::<u8>();
                let size = std::mem::size_of::<(Sym, V)>();
                for off in (0..size).step_by(64) {
                    crate::prefetch(at.wrapping_add(off));
                }
                crate::prefetch(at.wrapping_add(size - 1));
            }
        }
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entries, in insertion order.
    pub fn iter(&self) -> impl Iterator<Item = &(Sym, V)> {
        self.entries.iter()
    }

    /// Keeps the entries for which `keep` (which may change the value) returns true, in
    /// insertion order, and drops the rest; gives back room when most entries went.
    pub fn retain(&mut self, mut keep: impl FnMut(Sym, &mut V) -> bool) {
        let slots = &mut self.slots;
        let mut pos = 0u32;
        self.entries.retain_mut(|(k, v)| {
            let kept = keep(*k, v);
            slots[k.index as usize] = if kept {
                pos += 1;
                pos
            } else {
                0
            };
            kept
        });
        if self.entries.len() < self.entries.capacity() / 4 {
            self.entries.shrink_to(self.entries.len() * 2);
        }
    }

    /// Removes and yields every entry in insertion order; the map keeps its capacity.
    pub fn drain(&mut self) -> impl Iterator<Item = (Sym, V)> + '_ {
        for (k, _) in &self.entries {
            self.slots[k.index as usize] = 0;
        }
        self.entries.drain(..)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_text_same_symbol_across_threads() {
        let long = "a/series/id/longer/than/twenty/three/bytes";
        let here = (Sym::new("s00001"), Sym::new(long), Sym::new(""));
        let there = std::thread::spawn(move || (Sym::new("s00001"), Sym::new(long), Sym::new("")))
            .join()
            .unwrap();
        assert_eq!(here, there);
        assert_eq!(here.0.as_str().as_ptr(), there.0.as_str().as_ptr());
        assert_eq!(here.0.index(), there.0.index());
        assert_ne!(here.0.index(), here.1.index());
        assert_ne!(Sym::new("s00001"), Sym::new("s00002"));
        assert_ne!(Sym::new(""), Sym::new("x"));
        assert_eq!(&*here.1, long);
    }

    #[test]
    fn orders_and_hashes_by_content() {
        use std::hash::{BuildHasher, RandomState};
        let (b, a) = (Sym::new("b-later"), Sym::new("a-first"));
        assert!(a < b);
        assert_eq!(a.cmp(&a), std::cmp::Ordering::Equal);
        let h = RandomState::new();
        assert_eq!(h.hash_one(a), h.hash_one("a-first"));
    }

    #[test]
    fn sym_map_agrees_with_a_hash_map() {
        let mut m: SymMap<u64> = SymMap::default();
        let mut oracle: std::collections::HashMap<String, u64> = Default::default();
        let mut order = Vec::new();
        for round in 0..3u64 {
            for i in 0..5_000u64 {
                let k = format!("k{}", (i * 7919 + round) % 3_001);
                *m.get_or_insert_with(Sym::new(&k), || 0) += i;
                let e = oracle.entry(k.clone()).or_insert_with(|| {
                    order.push(k.clone());
                    0
                });
                *e += i;
            }
            assert_eq!(m.len(), oracle.len());
            for (k, v) in &oracle {
                assert_eq!(m.get(Sym::new(k)), Some(v), "{k}");
            }
            assert_eq!(m.get(Sym::new("never-inserted")), None);
            // Keep the odd values (and double them): the rest are gone, in order.
            m.retain(|_, v| {
                *v *= 2;
                *v % 4 == 2
            });
            oracle.retain(|_, v| {
                *v *= 2;
                *v % 4 == 2
            });
            order.retain(|k| oracle.contains_key(k));
            assert_eq!(m.len(), oracle.len());
            for (k, v) in &oracle {
                assert_eq!(m.get(Sym::new(k)), Some(v), "{k} after retain");
            }
            for k in (0..3_001).map(|i| format!("k{i}")) {
                assert_eq!(
                    m.get(Sym::new(&k)).is_some(),
                    oracle.contains_key(&k),
                    "{k}"
                );
            }
            let drained: Vec<(String, u64)> = m.drain().map(|(k, v)| (k.to_string(), v)).collect();
            let want: Vec<(String, u64)> = order.iter().map(|k| (k.clone(), oracle[k])).collect();
            assert_eq!(drained, want, "insertion order");
            assert!(m.is_empty() && m.get(Sym::new("k1")).is_none());
            oracle.clear();
            order.clear();
        }
    }

    #[test]
    fn sym_map_remove_and_get_mut_agree_with_a_hash_map() {
        let mut m: SymMap<u64> = SymMap::default();
        let mut oracle: std::collections::HashMap<String, u64> = Default::default();
        let mut next = crate::testing::xorshift(7);
        for step in 0..50_000u64 {
            let k = format!("r{}", next() % 700);
            match next() % 3 {
                0 => assert_eq!(m.remove(Sym::new(&k)), oracle.remove(&k), "{k}"),
                1 => {
                    if let Some(v) = m.get_mut(Sym::new(&k)) {
                        *v += step;
                    }
                    if let Some(v) = oracle.get_mut(&k) {
                        *v += step;
                    }
                }
                _ => {
                    *m.get_or_insert_with(Sym::new(&k), || 0) += 1;
                    *oracle.entry(k).or_default() += 1;
                }
            }
            if step % 5_000 == 0 {
                assert_eq!(m.len(), oracle.len());
                for (k, v) in &oracle {
                    assert_eq!(m.get(Sym::new(k)), Some(v), "{k}");
                }
                for (k, v) in m.iter() {
                    assert_eq!(oracle.get(k.as_str()), Some(v), "{k:?}");
                }
            }
        }
    }

    #[test]
    fn serde_round_trip() {
        let s = Sym::new("dev/7");
        let j = serde_json::to_string(&s).unwrap();
        assert_eq!(j, "\"dev/7\"");
        let back: Sym = serde_json::from_str(&j).unwrap();
        assert_eq!(back, s);
        let owned: Sym = serde_json::from_str("\"esc\\u0061ped\"").unwrap();
        assert_eq!(owned, Sym::new("escaped"));
    }
}
