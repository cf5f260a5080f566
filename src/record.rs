//! The one record type that crosses every boundary (a [`Reading`]) and its wire formats.
//!
//! A reading is a series id, an event time in UTC milliseconds, one or more named `f64` values
//! and optional string tags. On Kafka the key is the series id and the value is the encoding
//! chosen by [`WireFormat`] (JSON today; the enum is where a binary format goes).

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use smallvec::SmallVec;
use thiserror::Error;

pub use crate::sym::Sym;

/// Event time: milliseconds since the Unix epoch, UTC. Also the timely timestamp type.
pub type EventTime = i64;

/// Named values of a reading; one value is stored inline (no allocation).
pub type Values = SmallVec<[(Sym, f64); 1]>;

/// A measurement of one series at one event time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reading {
    /// Series id; also the Kafka key, so one series always lands in one partition.
    pub series: Sym,
    /// Event time, UTC milliseconds.
    pub ts: EventTime,
    /// Named values, in the order the source gave them (at least one).
    pub values: Values,
    /// Optional tags (unit, location, source ...).
    pub tags: Vec<(Sym, Sym)>,
}

impl Reading {
    /// A reading with a single value named `value` and no tags.
    pub fn single(series: Sym, ts: EventTime, value: f64) -> Self {
        Reading {
            series,
            ts,
            values: smallvec::smallvec![(value_name(), value)],
            tags: Vec::new(),
        }
    }

    /// The value with the given name, if present.
    pub fn value(&self, name: &str) -> Option<f64> {
        self.values
            .iter()
            .find(|(n, _)| &**n == name)
            .map(|(_, v)| *v)
    }
}

/// The name `value`, used by single-valued readings.
pub fn value_name() -> Sym {
    static VALUE: std::sync::OnceLock<Sym> = std::sync::OnceLock::new();
    *VALUE.get_or_init(|| Sym::new("value"))
}

/// An interner key for strings up to 23 bytes: the bytes, zero-padded, in three words, with
/// the length in the last byte. A lookup copies the string into one such key and compares and
/// hashes three words (no `memcmp` call, no UTF-8 check, no pointer chase).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ShortKey([u64; 3]);

impl std::hash::Hash for ShortKey {
    #[inline]
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        for w in self.0 {
            h.write_u64(w);
        }
    }
}

/// Longest string a [`ShortKey`] holds.
const SHORT: usize = 23;

impl ShortKey {
    #[inline]
    fn new(s: &str) -> ShortKey {
        debug_assert!(s.len() <= SHORT);
        let mut b = [0u8; 24];
        b[..s.len()].copy_from_slice(s.as_bytes());
        b[23] = s.len() as u8;
        let w = |i: usize| {
            u64::from_le_bytes([
                b[i],
                b[i + 1],
                b[i + 2],
                b[i + 3],
                b[i + 4],
                b[i + 5],
                b[i + 6],
                b[i + 7],
            ])
        };
        ShortKey([w(0), w(8), w(16)])
    }
}

/// Longest string a [`tiny_key`] holds.
const TINY: usize = 7;

/// A string of up to [`TINY`] bytes as one word: the bytes, zero-padded, with the length plus
/// one in the top byte (so `"a"` and `"a\0"` differ, and no key is 0). Ids like `s01234` or
/// `AAPL` are this short.
///
/// Built from two overlapping loads of the text, in registers: assembling it in a stack array
/// and reading that back as a word stalled on store forwarding (the word's load waits for the
/// byte stores), which was half of the interner's time.
#[inline]
fn tiny_key(s: &[u8]) -> u64 {
    debug_assert!(s.len() <= TINY);
    let n = s.len();
    let word = |b: &[u8]| -> u64 {
        match *b {
            [a, b, c, d] => u64::from(u32::from_le_bytes([a, b, c, d])),
            [a, b] => u64::from(u16::from_le_bytes([a, b])),
            _ => 0,
        }
    };
    // The first and the last 4 (or 2) bytes, shifted into place; where they overlap they
    // carry the same bytes, so OR-ing them is exact.
    let text = if n >= 4 {
        word(&s[..4]) | word(&s[n - 4..]) << (8 * (n - 4))
    } else if n >= 2 {
        word(&s[..2]) | word(&s[n - 2..]) << (8 * (n - 2))
    } else if n == 1 {
        u64::from(s[0])
    } else {
        0
    };
    text | (n as u64 + 1) << 56
}

/// Open-addressing table of [`tiny_key`]s (linear probing, at most half full, 0 = free).
/// A slot is the key and the value side by side, so a hit reads one cache line, and the slot
/// of a key is known from the key alone: [`prefetch`](TinyTable::prefetch) can ask for it
/// while earlier rows are still being read, which hides the cache miss a random key costs
/// once the table outgrows the core's caches (thousands of series).
#[derive(Debug)]
struct TinyTable<V> {
    slots: Vec<(u64, Option<V>)>,
    len: usize,
    /// `64 - log2(slots.len())`: the slot is the top bits of the mixed key.
    shift: u32,
}

impl<V> Default for TinyTable<V> {
    fn default() -> Self {
        TinyTable {
            slots: Vec::new(),
            len: 0,
            shift: 64,
        }
    }
}

impl<V> TinyTable<V> {
    #[inline]
    fn home(&self, key: u64) -> usize {
        // Fibonacci hashing: the multiply spreads sequential ids over the top bits.
        (key.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> self.shift) as usize
    }

    #[inline]
    fn prefetch(&self, key: u64) {
        if !self.slots.is_empty() {
            crate::prefetch(self.slots.as_ptr().wrapping_add(self.home(key)));
        }
    }

    #[inline]
    fn get_or_insert_with(&mut self, key: u64, make: impl FnOnce() -> V) -> &mut V {
        if (self.len + 1) * 2 > self.slots.len() {
            self.grow();
        }
        let mask = self.slots.len() - 1;
        let mut i = self.home(key);
        loop {
            let k = self.slots[i].0;
            if k == key {
                break;
            }
            if k == 0 {
                self.slots[i] = (key, Some(make()));
                self.len += 1;
                break;
            }
            i = (i + 1) & mask;
        }
        self.slots[i]
            .1
            .as_mut()
            .expect("an occupied slot has a value")
    }

    fn grow(&mut self) {
        let cap = (self.slots.len() * 2).max(64);
        let old = std::mem::replace(
            &mut self.slots,
            std::iter::repeat_with(|| (0, None)).take(cap).collect(),
        );
        self.shift = 64 - cap.trailing_zeros();
        let mask = cap - 1;
        for (k, v) in old {
            if k != 0 {
                let mut i = self.home(k);
                while self.slots[i].0 != 0 {
                    i = (i + 1) & mask;
                }
                self.slots[i] = (k, v);
            }
        }
    }
}

/// A map keyed by strings: those of up to [`TINY`] bytes by one word ([`tiny_key`]), up to
/// [`SHORT`] by their [`ShortKey`] (three words hashed and compared, no `memcmp` or pointer
/// chase per lookup), longer ones by the string. The interner keeps its per-thread and
/// per-reader caches in it.
#[derive(Debug)]
pub(crate) struct StrMap<V> {
    tiny: TinyTable<V>,
    short: HashMap<ShortKey, V, crate::engine::FastBuild>,
    /// Long keys to their slot in `long_values` (one lookup per hit).
    long: HashMap<Box<str>, usize, crate::engine::FastBuild>,
    long_values: Vec<V>,
}

impl<V> Default for StrMap<V> {
    fn default() -> Self {
        StrMap {
            tiny: TinyTable::default(),
            short: HashMap::default(),
            long: HashMap::default(),
            long_values: Vec::new(),
        }
    }
}

impl<V> StrMap<V> {
    /// The value of `key`, made by `make` on first sight.
    #[inline]
    pub(crate) fn get_or_insert_with(&mut self, key: &str, make: impl FnOnce() -> V) -> &mut V {
        if key.len() <= TINY {
            return self.tiny.get_or_insert_with(tiny_key(key.as_bytes()), make);
        }
        if key.len() <= SHORT {
            return self.short.entry(ShortKey::new(key)).or_insert_with(make);
        }
        let i = match self.long.get(key) {
            Some(&i) => i,
            None => {
                self.long_values.push(make());
                self.long.insert(key.into(), self.long_values.len() - 1);
                self.long_values.len() - 1
            }
        };
        &mut self.long_values[i]
    }

    /// Hints that `key` is looked up soon (only keys of up to [`TINY`] bytes; others are
    /// hashed anyway when looked up).
    #[inline]
    pub(crate) fn prefetch(&self, key: &[u8]) {
        if key.len() <= TINY {
            self.tiny.prefetch(tiny_key(key));
        }
    }

    /// Number of keys.
    pub(crate) fn len(&self) -> usize {
        self.tiny.len + self.short.len() + self.long.len()
    }
}

/// One reader's cache of interned names: a [`Sym`] per distinct string, without the
/// thread-local lookup of [`Sym::new`] on every hit.
#[derive(Debug, Default)]
pub struct Interner {
    map: StrMap<Sym>,
}

impl Interner {
    /// The symbol of `s`, interned on first sight.
    #[inline]
    pub fn intern(&mut self, s: &str) -> Sym {
        *self.map.get_or_insert_with(s, || Sym::new(s))
    }

    /// Hints that `s` is interned soon: a reader that knows the next rows calls this a few
    /// rows ahead, so the lookup finds its table slot in cache.
    #[inline]
    pub fn prefetch(&self, s: &[u8]) {
        self.map.prefetch(s);
    }

    /// Number of distinct strings seen.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// True when nothing was interned yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Why a payload could not be decoded into a reading.
#[derive(Debug, Error)]
pub enum DecodeError {
    /// The bytes are not the expected encoding.
    #[error("malformed JSON reading: {0}")]
    Json(#[from] serde_json::Error),
    /// Structurally fine, semantically not a reading.
    #[error("invalid reading: {0}")]
    Invalid(String),
}

/// How readings are encoded on Kafka. Only JSON exists today.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WireFormat {
    /// `{"series":"s1","ts":1700000000000,"values":{"value":20.5},"tags":{"unit":"C"}}`
    #[default]
    Json,
}

// Borrowed view of the JSON shape: names stay slices of the payload until interned. Objects are
// read into ordered pairs by a map visitor (see `pairs`), keeping the source's value order.
#[derive(Deserialize)]
struct JsonReading<'a> {
    #[serde(borrow)]
    series: std::borrow::Cow<'a, str>,
    ts: i64,
    #[serde(borrow, deserialize_with = "pairs::deserialize")]
    values: Vec<(std::borrow::Cow<'a, str>, Option<f64>)>,
    #[serde(default, borrow, deserialize_with = "pairs::deserialize_tags")]
    tags: Vec<(std::borrow::Cow<'a, str>, std::borrow::Cow<'a, str>)>,
}

mod pairs {
    use std::borrow::Cow;
    use std::fmt;

    use serde::de::{MapAccess, Visitor};
    use serde::Deserializer;

    type Pairs<'de, V> = Vec<(Cow<'de, str>, V)>;

    struct PairVisitor<V>(std::marker::PhantomData<V>);

    impl<'de, V: serde::Deserialize<'de>> Visitor<'de> for PairVisitor<V> {
        type Value = Vec<(Cow<'de, str>, V)>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("an object of named entries")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut out = Vec::with_capacity(map.size_hint().unwrap_or(1));
            while let Some((k, v)) = map.next_entry::<Cow<'de, str>, V>()? {
                out.push((k, v));
            }
            Ok(out)
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Pairs<'de, Option<f64>>, D::Error> {
        d.deserialize_map(PairVisitor(std::marker::PhantomData))
    }

    pub fn deserialize_tags<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Pairs<'de, Cow<'de, str>>, D::Error> {
        d.deserialize_map(PairVisitor(std::marker::PhantomData))
    }
}

impl WireFormat {
    /// Encodes a reading into `out` (cleared first).
    pub fn encode(self, r: &Reading, out: &mut Vec<u8>) {
        out.clear();
        match self {
            WireFormat::Json => encode_json(r, out),
        }
    }

    /// Appends a reading to `out` (batched messages: one reading per line).
    pub fn append(self, r: &Reading, out: &mut Vec<u8>) {
        match self {
            WireFormat::Json => encode_json(r, out),
        }
    }

    /// Decodes a payload, interning names through `interner`.
    pub fn decode(self, bytes: &[u8], interner: &mut Interner) -> Result<Reading, DecodeError> {
        match self {
            WireFormat::Json => decode_json(bytes, interner),
        }
    }

    /// Decodes a payload of one reading or of several, one per line (a batched message), and
    /// hands each line's index, bytes and result to `each`: a bad line is one error, the
    /// other lines still decode. Empty lines are skipped.
    pub fn decode_lines(
        self,
        bytes: &[u8],
        interner: &mut Interner,
        mut each: impl FnMut(usize, &[u8], Result<Reading, DecodeError>),
    ) {
        if !bytes.contains(&b'\n') {
            each(0, bytes, self.decode(bytes, interner));
            return;
        }
        for (i, line) in bytes.split(|&b| b == b'\n').enumerate() {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            each(i, line, self.decode(line, interner));
        }
    }
}

/// Appends `r` as one JSON object (no newline).
fn encode_json(r: &Reading, out: &mut Vec<u8>) {
    out.extend_from_slice(b"{\"series\":");
    serde_json::to_writer(&mut *out, &*r.series).expect("writing to a Vec cannot fail");
    out.extend_from_slice(b",\"ts\":");
    write_i64(out, r.ts);
    out.extend_from_slice(b",\"values\":{");
    for (i, (name, v)) in r.values.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        serde_json::to_writer(&mut *out, &**name).expect("vec write");
        out.push(b':');
        write_f64(out, *v);
    }
    out.push(b'}');
    if !r.tags.is_empty() {
        out.extend_from_slice(b",\"tags\":{");
        for (i, (k, v)) in r.tags.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            serde_json::to_writer(&mut *out, &**k).expect("vec write");
            out.push(b':');
            serde_json::to_writer(&mut *out, &**v).expect("vec write");
        }
        out.push(b'}');
    }
    out.push(b'}');
}

/// Writes a finite f64 in its shortest round-trip form (`null` for non-finite, which JSON lacks).
/// Formatted by `zmij` (the formatter serde_json itself uses), about 1.7x faster than `ryu` on
/// our values with the same digits.
///
/// The formatter's buffer is placed in `out`'s spare capacity, so the digits are written where
/// they stay: copying them out of a buffer on the stack cost as much as formatting them (the
/// wide loads of a `memmove` wait on the formatter's narrow stores, and its length-dependent
/// branches mispredict on numbers of varying length).
///
/// A value with at most four decimals (an input reading of most sensors, a window's min or
/// max) takes a shorter path, `write_four_decimals`, which writes the same text.
#[inline]
pub fn write_f64(out: &mut Vec<u8>, v: f64) {
    if !v.is_finite() {
        out.extend_from_slice(b"null");
        return;
    }
    if write_four_decimals(out, v) {
        return;
    }
    const N: usize = std::mem::size_of::<zmij::Buffer>();
    out.reserve(N);
    let end = out.len();
    // SAFETY: `end` is the vector's length, so `end <= capacity`.
    let dst = unsafe { out.as_mut_ptr().add(end) };
    let slot = dst.cast::<zmij::Buffer>();
    if slot.is_aligned() {
        // SAFETY: `slot` points at `N` bytes of spare capacity, aligned for a `Buffer`; a
        // fresh `Buffer` is written there (it has no `Drop`, and leaking one is harmless), so
        // the `&mut` is to a valid value. The text it returns lies inside that buffer, so
        // inside the allocation; it is moved to the vector's end (it already is there in
        // zmij's layout) and `set_len` takes exactly its bytes, which zmij initialised.
        unsafe {
            slot.write(zmij::Buffer::new());
            let text = (*slot).format_finite(v);
            let (at, len) = (text.as_ptr(), text.len());
            if at != dst.cast_const() {
                std::ptr::copy(at, dst, len);
            }
            out.set_len(end + len);
        }
    } else {
        push_short(out, zmij::Buffer::new().format_finite(v).as_bytes());
    }
}

/// Writes `v` and returns true when it is exactly the double nearest a decimal with at most
/// four decimals and at most 15 significant digits, with 1e-3 <= |v| < 1e11; false (and
/// nothing written) otherwise.
///
/// The text is the shortest that reads back as `v`, as zmij writes it: two decimals of at most
/// 15 significant digits and the same magnitude are further apart than a double's precision,
/// so when that decimal reads back as `v` no other of its length or shorter does.
#[inline]
fn write_four_decimals(out: &mut Vec<u8>, v: f64) -> bool {
    let a = v.abs();
    if !(1e-3..1e11).contains(&a) {
        return false;
    }
    let n = (a * 1e4).round();
    // `n / 1e4` is the double nearest the decimal n/10^4 (both operands are exact).
    if n / 1e4 != a {
        return false;
    }
    let n = n as u64;
    let (whole, frac) = (n / 10_000, (n % 10_000) as u32);
    if v < 0.0 {
        out.push(b'-');
    }
    write_i64(out, whole as i64);
    // The four decimals as ASCII, little-endian, and how many are kept (trailing zeros go,
    // but one digit stays: zmij writes `20.0`).
    let digits = u32::from_le_bytes([
        b'0' + (frac / 1000) as u8,
        b'0' + (frac / 100 % 10) as u8,
        b'0' + (frac / 10 % 10) as u8,
        b'0' + (frac % 10) as u8,
    ]);
    let keep = if frac % 1000 == 0 {
        1
    } else if frac % 100 == 0 {
        2
    } else if frac % 10 == 0 {
        3
    } else {
        4
    };
    out.reserve(5);
    // SAFETY: `reserve` left at least 5 bytes of spare capacity; `set_len` keeps the dot and
    // the `keep` digits written.
    unsafe {
        let end = out.len();
        let dst = out.as_mut_ptr().add(end);
        *dst = b'.';
        dst.add(1)
            .cast::<[u8; 4]>()
            .write_unaligned(digits.to_le_bytes());
        out.set_len(end + 1 + keep);
    }
    true
}

/// Appends `sep`, then a copy of `out[text]`: how a row writes a number a second time
/// (text [`write_f64`] wrote, at most the size of zmij's buffer, 24 bytes) without
/// formatting it again. Longer text is repeated too, by a slower path.
#[inline]
pub fn repeat_text(out: &mut Vec<u8>, text: std::ops::Range<usize>, sep: &[u8]) {
    // One fixed-size copy covers any number `write_f64` writes.
    const N: usize = std::mem::size_of::<zmij::Buffer>();
    assert!(
        text.start <= text.end && text.end <= out.len(),
        "text inside the vector"
    );
    out.extend_from_slice(sep);
    let len = text.len();
    if len > N {
        out.extend_from_within(text);
        return;
    }
    out.reserve(N);
    // SAFETY: `text.start + N <= len + N <= capacity` after `reserve`, so both the source and
    // the destination ranges lie in the allocation; `ptr::copy` allows overlap and copies
    // untyped bytes, and only the `len` initialised source bytes end up inside the vector.
    unsafe {
        let end = out.len();
        let p = out.as_mut_ptr();
        std::ptr::copy(p.add(text.start), p.add(end), N);
        out.set_len(end + len);
    }
}

/// Writes an integer in decimal.
#[inline]
pub fn write_i64(out: &mut Vec<u8>, v: i64) {
    push_short(out, itoa::Buffer::new().format(v).as_bytes());
}

/// Appends `s` with at most two overlapping fixed-size copies when it is at most 32 bytes
/// long, so a short field (an id, a number's digits) costs no call into `memmove`.
#[inline(always)]
pub fn push_short(out: &mut Vec<u8>, s: &[u8]) {
    let n = s.len();
    if n > 32 {
        out.extend_from_slice(s);
        return;
    }
    out.reserve(32);
    // SAFETY: `s` does not alias `out`'s spare capacity, which `reserve` made at least 32
    // bytes long; every copy reads inside `s` and writes inside `[len, len + n)`.
    unsafe {
        let src = s.as_ptr();
        let end = out.len();
        let dst = out.as_mut_ptr().add(end);
        let cp = std::ptr::copy_nonoverlapping::<u8>;
        if n >= 16 {
            cp(src, dst, 16);
            cp(src.add(n - 16), dst.add(n - 16), 16);
        } else if n >= 8 {
            cp(src, dst, 8);
            cp(src.add(n - 8), dst.add(n - 8), 8);
        } else if n >= 4 {
            cp(src, dst, 4);
            cp(src.add(n - 4), dst.add(n - 4), 4);
        } else if n > 0 {
            *dst = *src;
            *dst.add(n / 2) = *src.add(n / 2);
            *dst.add(n - 1) = *src.add(n - 1);
        }
        out.set_len(end + n);
    }
}

fn decode_json(bytes: &[u8], interner: &mut Interner) -> Result<Reading, DecodeError> {
    if let Some(r) = decode_canonical(bytes, interner) {
        return Ok(r);
    }
    decode_json_serde(bytes, interner)
}

/// A cursor over a payload for [`decode_canonical`].
struct Cursor<'a> {
    b: &'a [u8],
    i: usize,
}

impl<'a> Cursor<'a> {
    #[inline]
    fn lit(&mut self, s: &[u8]) -> Option<()> {
        let end = self.i + s.len();
        (self.b.get(self.i..end)? == s).then(|| self.i = end)
    }
    #[inline]
    fn byte(&mut self) -> Option<u8> {
        let c = *self.b.get(self.i)?;
        self.i += 1;
        Some(c)
    }
    /// The rest of a string up to its closing quote, if it has no escapes or control bytes.
    #[inline]
    fn plain_str(&mut self) -> Option<&'a str> {
        let start = self.i;
        let len = self.b[start..].iter().position(|&c| c == b'"')?;
        let raw = &self.b[start..start + len];
        if raw.iter().any(|&c| c == b'\\' || c < 0x20) {
            return None;
        }
        self.i = start + len + 1;
        std::str::from_utf8(raw).ok()
    }
    #[inline]
    fn digits(&mut self) -> usize {
        let start = self.i;
        while self.b.get(self.i).is_some_and(u8::is_ascii_digit) {
            self.i += 1;
        }
        self.i - start
    }
    /// A JSON integer that fits an i64.
    fn int(&mut self) -> Option<i64> {
        let neg = self.lit(b"-").is_some();
        let start = self.i;
        let n = self.digits();
        if n == 0 || (n > 1 && self.b[start] == b'0') {
            return None;
        }
        let mut v: i64 = 0;
        for &d in &self.b[start..self.i] {
            v = v.checked_mul(10)?.checked_add(i64::from(d - b'0'))?;
        }
        // serde_json reads `-0` as a float, which no i64 field takes: leave it to serde.
        match (neg, v) {
            (true, 0) => None,
            (true, v) => Some(-v),
            (false, v) => Some(v),
        }
    }
    /// A number in JSON's grammar (Rust's own parser also takes `inf`, `+1`, `.5`: those are
    /// not JSON and go to the full parser).
    fn number(&mut self) -> Option<f64> {
        let start = self.i;
        let _ = self.lit(b"-");
        let int_start = self.i;
        let n = self.digits();
        if n == 0 || (n > 1 && self.b[int_start] == b'0') {
            return None;
        }
        if self.lit(b".").is_some() && self.digits() == 0 {
            return None;
        }
        if matches!(self.b.get(self.i), Some(b'e' | b'E')) {
            self.i += 1;
            if matches!(self.b.get(self.i), Some(b'+' | b'-')) {
                self.i += 1;
            }
            if self.digits() == 0 {
                return None;
            }
        }
        std::str::from_utf8(&self.b[start..self.i])
            .ok()?
            .parse()
            .ok()
    }
}

/// The fast path of the JSON decoder: exactly the shape [`WireFormat::encode`] writes
/// (`{"series":..,"ts":..,"values":{..}}`, optional `"tags"` last, no whitespace, no escapes,
/// finite values). Anything else returns None and goes to the full serde parser, which accepts
/// any JSON layout and gives the error for what is wrong; both give the same reading for the
/// same payload (tested).
fn decode_canonical(b: &[u8], interner: &mut Interner) -> Option<Reading> {
    let mut c = Cursor { b, i: 0 };
    c.lit(b"{\"series\":\"")?;
    let series = c.plain_str()?;
    if series.is_empty() {
        return None;
    }
    c.lit(b",\"ts\":")?;
    let ts = c.int()?;
    c.lit(b",\"values\":{")?;
    let mut values = Values::new();
    loop {
        c.lit(b"\"")?;
        let name = c.plain_str()?;
        c.lit(b":")?;
        let v = c.number().filter(|v| v.is_finite())?;
        values.push((interner.intern(name), v));
        match c.byte()? {
            b',' => {}
            b'}' => break,
            _ => return None,
        }
    }
    let mut tags = Vec::new();
    match c.byte()? {
        b'}' => {}
        b',' => {
            c.lit(b"\"tags\":{")?;
            loop {
                c.lit(b"\"")?;
                let k = c.plain_str()?;
                c.lit(b":\"")?;
                let v = c.plain_str()?;
                tags.push((interner.intern(k), interner.intern(v)));
                match c.byte()? {
                    b',' => {}
                    b'}' => break,
                    _ => return None,
                }
            }
            c.lit(b"}")?;
        }
        _ => return None,
    }
    (c.i == b.len()).then(|| Reading {
        series: interner.intern(series),
        ts,
        values,
        tags,
    })
}

/// The full JSON decoder (any layout, precise errors).
fn decode_json_serde(bytes: &[u8], interner: &mut Interner) -> Result<Reading, DecodeError> {
    let j: JsonReading = serde_json::from_slice(bytes)?;
    if j.series.is_empty() {
        return Err(DecodeError::Invalid("empty series id".into()));
    }
    if j.values.is_empty() {
        return Err(DecodeError::Invalid("no values".into()));
    }
    let mut values = Values::with_capacity(j.values.len());
    for (name, v) in j.values {
        match v {
            Some(v) if v.is_finite() => values.push((interner.intern(&name), v)),
            _ => {
                return Err(DecodeError::Invalid(format!(
                    "value {name:?} is not a finite number"
                )))
            }
        }
    }
    let tags = j
        .tags
        .iter()
        .map(|(k, v)| (interner.intern(k), interner.intern(v)))
        .collect();
    Ok(Reading {
        series: interner.intern(&j.series),
        ts: j.ts,
        values,
        tags,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiny_key_is_the_zero_padded_bytes_and_the_length() {
        let mut next = crate::testing::xorshift(0x2545_f491_4f6c_dd1d);
        for _ in 0..20_000 {
            let rng = next();
            let n = (rng % 8) as usize;
            let bytes: Vec<u8> = (0..n).map(|i| (rng >> (8 * i)) as u8).collect();
            let mut want = [0u8; 8];
            want[..n].copy_from_slice(&bytes);
            want[7] = n as u8 + 1;
            assert_eq!(tiny_key(&bytes), u64::from_le_bytes(want), "{bytes:?}");
        }
    }

    #[test]
    fn str_map_keeps_keys_of_every_length_apart() {
        // Lengths across the three key kinds and their borders, with NUL bytes and prefixes
        // of one another: keys that a careless packing would confuse.
        let mut keys: Vec<String> = Vec::new();
        for len in 0..=30 {
            keys.push("x".repeat(len));
            keys.push("\0".repeat(len));
            keys.push(format!("{}\0", "y".repeat(len)));
            keys.push(
                (0..len)
                    .map(|i| char::from(b'a' + (i % 26) as u8))
                    .collect(),
            );
        }
        keys.push("é".into());
        keys.push("s01234".into());
        keys.sort();
        keys.dedup();
        let mut map: StrMap<usize> = StrMap::default();
        let mut oracle: HashMap<String, usize> = HashMap::new();
        for round in 0..3 {
            for (i, k) in keys.iter().enumerate() {
                let want = *oracle.entry(k.clone()).or_insert(i);
                let got = *map.get_or_insert_with(k, || i);
                assert_eq!(got, want, "round {round}, key {k:?}");
            }
        }
        assert_eq!(map.len(), keys.len());
    }

    #[test]
    fn number_writers_match_the_formatters_at_every_offset_and_capacity() {
        // Values of every text length zmij produces (1 to 24 bytes) and integers of 1 to 20
        // digits, appended after prefixes of every length into vectors that are full, nearly
        // full or roomy, so the fixed-size copies meet every border.
        let mut next = crate::testing::xorshift(0x9e37_79b9_7f4a_7c15);
        let mut floats = vec![
            0.0,
            -0.0,
            1.0,
            -1.5,
            1e-300,
            -2.2250738585072014e-308,
            f64::MAX,
        ];
        let mut ints = vec![0i64, -1, 7, i64::MIN, i64::MAX, 1_700_000_000_000];
        for _ in 0..3000 {
            let bits = next();
            let f = f64::from_bits(bits);
            if f.is_finite() {
                floats.push(f);
            }
            floats.push((bits % 10_000_000) as f64 / 10_000.0 - 500.0);
            ints.push((bits as i64) >> (bits % 63));
        }
        // Four-decimal values, as sensors and W1 write them, around every border of the
        // short path (magnitude limits, whole numbers, trailing zeros, 15 digits).
        for k in 0..20_000u64 {
            let n = next() % 10u64.pow(1 + (k % 15) as u32);
            let sign = if k % 3 == 0 { -1.0 } else { 1.0 };
            floats.push(sign * n as f64 / 1e4);
            floats.push(sign * n as f64 / 1e3);
            floats.push(sign * (n as f64 / 1e4 + 1e-9));
        }
        for b in [
            1e-3f64,
            1e11,
            99_999_999_999.999_9,
            0.0009999,
            0.00099995,
            1e10 + 0.5,
        ] {
            floats.extend([b, -b, b.next_up(), b.next_down()]);
        }
        floats.push(f64::NAN);
        floats.push(f64::NEG_INFINITY);
        let mut lengths = std::collections::BTreeSet::new();
        for (k, &f) in floats.iter().enumerate() {
            let prefix = k % 40;
            let want = if f.is_finite() {
                zmij::Buffer::new().format_finite(f).to_owned()
            } else {
                "null".to_owned()
            };
            lengths.insert(want.len());
            for cap in [prefix, prefix + 1, prefix + 23, prefix + 64] {
                let mut out = Vec::with_capacity(cap);
                out.extend(std::iter::repeat_n(b'p', prefix));
                write_f64(&mut out, f);
                assert_eq!(&out[..prefix], "p".repeat(prefix).as_bytes());
                assert_eq!(std::str::from_utf8(&out[prefix..]).unwrap(), want, "{f:e}");
                if f.is_finite() {
                    let end = out.len();
                    repeat_text(&mut out, prefix..end, b",\"x\":");
                    assert_eq!(
                        std::str::from_utf8(&out[prefix..]).unwrap(),
                        format!("{want},\"x\":{want}")
                    );
                }
            }
        }
        assert!(lengths.contains(&24) && lengths.contains(&3), "{lengths:?}");
        for (k, &v) in ints.iter().enumerate() {
            let prefix = k % 40;
            let want = itoa::Buffer::new().format(v).to_owned();
            for cap in [prefix, prefix + 5, prefix + 64] {
                let mut out = Vec::with_capacity(cap);
                out.extend(std::iter::repeat_n(b'p', prefix));
                write_i64(&mut out, v);
                assert_eq!(&out[..prefix], "p".repeat(prefix).as_bytes());
                assert_eq!(std::str::from_utf8(&out[prefix..]).unwrap(), want);
            }
        }
        // A long text is repeated whole.
        let mut out = b"a".repeat(40);
        repeat_text(&mut out, 3..33, b";");
        assert_eq!(out.len(), 71);
        assert_eq!(out[40], b';');
    }

    #[test]
    fn json_round_trip() {
        let mut i = Interner::default();
        let r = Reading {
            series: "turbine/CO".into(),
            ts: 1_700_000_000_123,
            values: smallvec::smallvec![("co".into(), 0.32663), ("nox".into(), -81.952e-3)],
            tags: vec![("unit".into(), "mg/m3".into())],
        };
        let mut buf = Vec::new();
        WireFormat::Json.encode(&r, &mut buf);
        let back = WireFormat::Json.decode(&buf, &mut i).unwrap();
        assert_eq!(back, r);
        let text = std::str::from_utf8(&buf).unwrap();
        assert!(
            text.starts_with(
                "{\"series\":\"turbine/CO\",\"ts\":1700000000123,\"values\":{\"co\":0.32663"
            ),
            "{text}"
        );
    }

    /// The fast path and the serde path agree on every payload: canonical ones (random
    /// readings, every float shape write_f64 writes) and every variation the fast path hands over.
    #[test]
    fn fast_and_full_json_decoders_agree() {
        let mut i = Interner::default();
        let agree = |payload: &[u8], i: &mut Interner| {
            let full = decode_json_serde(payload, i);
            let fast = decode_canonical(payload, i);
            let got = WireFormat::Json.decode(payload, i);
            let text = String::from_utf8_lossy(payload);
            match (&full, &got) {
                (Ok(a), Ok(b)) => assert_eq!(a, b, "{text}"),
                (Err(_), Err(_)) => {}
                _ => panic!("{text}: full {full:?}, decoded {got:?}"),
            }
            if let Some(r) = fast {
                assert_eq!(Some(&r), full.as_ref().ok(), "{text}");
            }
        };
        let mut rng = crate::dataset::generate::SplitMix64(5);
        let mut buf = Vec::new();
        let mut fast_hits = 0;
        for k in 0..20_000 {
            let x = match k % 5 {
                0 => rng.normal() * 1e-300,
                1 => rng.normal() * 1e300,
                2 => (rng.normal() * 1e4).round(),
                3 => -0.0,
                _ => rng.normal(),
            };
            let r = Reading {
                series: format!("s{k}/é").into(),
                ts: (rng.next_f64() * 4e12) as i64 - 2_000_000_000_000,
                values: smallvec::smallvec![("v".into(), x), ("w".into(), 1.0 / (1.0 + x.abs()))],
                tags: if k % 2 == 0 {
                    vec![("unit".into(), "C".into())]
                } else {
                    Vec::new()
                },
            };
            WireFormat::Json.encode(&r, &mut buf);
            assert_eq!(WireFormat::Json.decode(&buf, &mut i).unwrap(), r);
            fast_hits += usize::from(decode_canonical(&buf, &mut i).is_some());
            agree(&buf, &mut i);
        }
        assert_eq!(fast_hits, 20_000, "canonical payloads take the fast path");
        for p in [
            r#"{"series":"a","ts":1,"values":{"v":1}}"#,
            r#"{"series":"a","ts":1,"values":{"v":1},"tags":{"u":"C","k":"x"}}"#,
            r#"{ "series":"a","ts":1,"values":{"v":1}}"#,
            r#"{"ts":1,"series":"a","values":{"v":1}}"#,
            r#"{"series":"a\"b","ts":1,"values":{"v":1}}"#,
            r#"{"series":"a\u00e9","ts":1,"values":{"v\n":1}}"#,
            r#"{"series":"","ts":1,"values":{"v":1}}"#,
            r#"{"series":"a","ts":01,"values":{"v":1}}"#,
            r#"{"series":"a","ts":-0,"values":{"v":-0}}"#,
            r#"{"series":"a","ts":99999999999999999999,"values":{"v":1}}"#,
            r#"{"series":"a","ts":1.5,"values":{"v":1}}"#,
            r#"{"series":"a","ts":1,"values":{}}"#,
            r#"{"series":"a","ts":1,"values":{"v":null}}"#,
            r#"{"series":"a","ts":1,"values":{"v":1e999}}"#,
            r#"{"series":"a","ts":1,"values":{"v":inf}}"#,
            r#"{"series":"a","ts":1,"values":{"v":NaN}}"#,
            r#"{"series":"a","ts":1,"values":{"v":+1}}"#,
            r#"{"series":"a","ts":1,"values":{"v":.5}}"#,
            r#"{"series":"a","ts":1,"values":{"v":1.}}"#,
            r#"{"series":"a","ts":1,"values":{"v":01}}"#,
            r#"{"series":"a","ts":1,"values":{"v":1e}}"#,
            r#"{"series":"a","ts":1,"values":{"v":2.5E-3,"v":4}}"#,
            r#"{"series":"a","ts":1,"values":{"v":"1"}}"#,
            r#"{"series":"a","ts":1,"values":{"v":1},"tags":{}}"#,
            r#"{"series":"a","ts":1,"values":{"v":1},"tags":{"u":1}}"#,
            r#"{"series":"a","ts":1,"values":{"v":1},"extra":true}"#,
            r#"{"series":"a","ts":1,"values":{"v":1}} "#,
            r#"{"series":"a","ts":1,"values":{"v":1}}x"#,
            r#"{"series":"a","ts":1,"values":{"v":1}"#,
            r#"{"series":"a","ts":1,"values":{"v":1"#,
            r#"{"series":"a"#,
            "",
        ] {
            agree(p.as_bytes(), &mut i);
        }
        agree(
            b"{\"series\":\"a\xff\",\"ts\":1,\"values\":{\"v\":1}}",
            &mut i,
        );
        agree(
            b"{\"series\":\"a\tb\",\"ts\":1,\"values\":{\"v\":1}}",
            &mut i,
        );
    }

    #[test]
    fn rejects_bad_payloads_with_reasons() {
        let mut i = Interner::default();
        for (bad, why) in [
            (&b"not json"[..], "malformed"),
            (br#"{"series":"","ts":1,"values":{"v":1}}"#, "empty series"),
            (br#"{"series":"a","ts":1,"values":{}}"#, "no values"),
            (
                br#"{"series":"a","ts":1,"values":{"v":null}}"#,
                "not a finite",
            ),
            (br#"{"series":"a","values":{"v":1}}"#, "missing field"),
        ] {
            let e = WireFormat::Json
                .decode(bad, &mut i)
                .unwrap_err()
                .to_string();
            assert!(e.contains(why), "{e}");
        }
    }
}
