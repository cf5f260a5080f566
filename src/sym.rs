//! Interned names ([`Sym`]): series ids, value names and tags of readings.
//!
//! A [`Sym`] is one pointer-sized, `Copy` handle to a string that lives for the rest of the
//! process. Every `Sym` of the same text is the same pointer, so equality is one comparison,
//! and copying or dropping one touches no reference count. That matters in the hot path:
//! readings move between worker threads, and an `Arc<str>` there costs an atomic add where a
//! reading is made and an atomic subtract on another core where it is dropped, on a cache line
//! the two cores then pass back and forth.
//!
//! The price: a distinct string is never freed. Each costs its bytes plus a table slot once
//! per process, which is small next to the per-series state the operators keep anyway; it
//! does mean tags should not carry unbounded free text (a message, a timestamp).
//!
//! Interning looks in a per-thread cache first and takes the process-wide table's lock only
//! the first time a thread sees a string. Hashing and ordering are by content, so maps keyed
//! by `Sym` iterate and partition the same way in every process; [`Sym::addr`] is the cheaper
//! key for lookup-only maps within one process.

use std::cell::RefCell;
use std::collections::HashSet;
use std::fmt;
use std::sync::{Mutex, OnceLock};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::record::StrMap;

/// An interned string: `Copy`, compared by pointer, hashed and ordered by content.
#[derive(Clone, Copy)]
pub struct Sym(&'static str);

/// The process-wide table: every string interned so far, leaked once.
fn table() -> &'static Mutex<HashSet<&'static str>> {
    static TABLE: OnceLock<Mutex<HashSet<&'static str>>> = OnceLock::new();
    TABLE.get_or_init(Mutex::default)
}

thread_local! {
    /// This thread's view of the table (no lock on a hit).
    static CACHE: RefCell<StrMap<Sym>> = RefCell::new(StrMap::default());
}

impl Sym {
    /// The interned copy of `s` (made on first sight in this process).
    #[inline]
    pub fn new(s: &str) -> Sym {
        CACHE.with(|c| *c.borrow_mut().get_or_insert_with(s, || Sym::global(s)))
    }

    /// Looks `s` up in (or adds it to) the process-wide table.
    fn global(s: &str) -> Sym {
        // A poisoned lock still holds a valid set: entries are only ever added.
        let mut t = table().lock().unwrap_or_else(|p| p.into_inner());
        match t.get(s) {
            Some(&k) => Sym(k),
            None => {
                let k: &'static str = Box::leak(s.into());
                t.insert(k);
                Sym(k)
            }
        }
    }

    /// The text.
    #[inline]
    pub fn as_str(&self) -> &'static str {
        self.0
    }

    /// The address of the interned text: equal for equal symbols within one process, a cheap
    /// key for lookup-only maps (not stable across processes or runs).
    #[inline]
    pub fn addr(&self) -> usize {
        self.0.as_ptr() as usize
    }
}

impl PartialEq for Sym {
    #[inline]
    fn eq(&self, other: &Sym) -> bool {
        // Interned: the same text is the same pointer (and the length rules out `""` aliasing
        // the start of another string).
        std::ptr::eq(self.0.as_ptr(), other.0.as_ptr()) && self.0.len() == other.0.len()
    }
}

impl Eq for Sym {}

impl PartialEq<str> for Sym {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for Sym {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

impl std::hash::Hash for Sym {
    #[inline]
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        self.0.hash(h)
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
            self.0.cmp(other.0)
        }
    }
}

impl std::ops::Deref for Sym {
    type Target = str;
    #[inline]
    fn deref(&self) -> &str {
        self.0
    }
}

impl AsRef<str> for Sym {
    fn as_ref(&self) -> &str {
        self.0
    }
}

impl std::borrow::Borrow<str> for Sym {
    fn borrow(&self) -> &str {
        self.0
    }
}

impl fmt::Debug for Sym {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.0, f)
    }
}

impl fmt::Display for Sym {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl Default for Sym {
    fn default() -> Self {
        Sym::new("")
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

impl From<Sym> for std::sync::Arc<str> {
    fn from(s: Sym) -> std::sync::Arc<str> {
        std::sync::Arc::from(s.0)
    }
}

impl Serialize for Sym {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.0)
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
        assert_eq!(here.0.addr(), there.0.addr());
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
