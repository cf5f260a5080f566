//! Fast paths for the cells a CSV row is made of: trimming, plain integers and plain decimals.
//! Each handles the common shape only (ASCII digits, at most 15 to 18 of them) and says `None`
//! otherwise, so the caller falls back to the general `str` methods; where a fast path answers,
//! it answers exactly what the general method would (tested below on edge cases and on a
//! million random cells).

/// `s.trim()`, without Unicode tables when the ends are plain ASCII characters.
#[inline]
pub fn trim(s: &str) -> &str {
    let b = s.as_bytes();
    match (b.first(), b.last()) {
        // A printable ASCII byte at an end is a whole character that is not white space.
        (Some(&f), Some(&l)) if (0x21..0x80).contains(&f) && (0x21..0x80).contains(&l) => s,
        _ => s.trim(),
    }
}

/// Eight ASCII digits (the first at the lowest address) as their value, or `None` when any
/// byte is not a digit.
#[inline]
fn eight_digits(chunk: [u8; 8]) -> Option<u64> {
    let w = u64::from_le_bytes(chunk);
    const HIGH: u64 = 0xF0F0_F0F0_F0F0_F0F0;
    const ZEROS: u64 = 0x3030_3030_3030_3030;
    // Every byte is 0x30..=0x39: its high nibble is 3, and adding 6 to its low nibble does
    // not carry into the high one.
    if w & HIGH != ZEROS || w.wrapping_add(0x0606_0606_0606_0606) & HIGH != ZEROS {
        return None;
    }
    // Combine neighbouring digits, then pairs, then quads (each step multiplies the more
    // significant half by 10, 100, 10^4 and adds the other).
    let d = w - ZEROS;
    let d = (d.wrapping_mul(10 * 256 + 1) >> 8) & 0x00FF_00FF_00FF_00FF;
    let d = (d.wrapping_mul(100 * 65_536 + 1) >> 16) & 0x0000_FFFF_0000_FFFF;
    Some(d.wrapping_mul(10_000 * (1 << 32) + 1) >> 32)
}

/// The value of 1 to 18 ASCII digits (it cannot overflow), or `None`.
#[inline]
pub fn digits(b: &[u8]) -> Option<u64> {
    if b.is_empty() || b.len() > 18 {
        return None;
    }
    let lead = b.len() % 8;
    let mut v: u64 = 0;
    for &c in &b[..lead] {
        let d = c.wrapping_sub(b'0');
        if d > 9 {
            return None;
        }
        v = v * 10 + d as u64;
    }
    for chunk in b[lead..].chunks_exact(8) {
        v = v * 100_000_000 + eight_digits(chunk.try_into().expect("8 bytes"))?;
    }
    Some(v)
}

/// An integer of 1 to 18 ASCII digits with an optional leading `-`, or `None`.
#[inline]
pub fn int(s: &str) -> Option<i64> {
    let (neg, b) = match s.as_bytes() {
        [b'-', rest @ ..] => (true, rest),
        all => (false, all),
    };
    let v = digits(b)? as i64;
    Some(if neg { -v } else { v })
}

/// Exact powers of ten as `f64` (every one up to 10^22 is exact).
const POW10: [f64; 16] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
];

/// A decimal `-?D+(.D+)?` with at most 15 digits in all, or `None`. The digits as an integer
/// (below 2^53, so exact) divided by an exact power of ten is one correctly rounded IEEE
/// division: the same `f64` as `str::parse`, which is correctly rounded too.
#[inline]
pub fn decimal(s: &str) -> Option<f64> {
    let (neg, b) = match s.as_bytes() {
        [b'-', rest @ ..] => (true, rest),
        all => (false, all),
    };
    // A byte loop: cells are short, and a memchr call costs more than it saves here.
    let (int_part, frac) = match b.iter().position(|&c| c == b'.') {
        Some(i) => (&b[..i], &b[i + 1..]),
        None => (b, &b""[..]),
    };
    if int_part.is_empty() || int_part.len() + frac.len() > 15 {
        return None;
    }
    let mut m = digits(int_part)?;
    if b.len() > int_part.len() {
        // A point must have digits after it here (`5.` goes the general way).
        m = m * 10u64.pow(frac.len() as u32) + digits(frac)?;
    }
    let v = m as f64 / POW10[frac.len()];
    Some(if neg { -v } else { v })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trim_agrees_with_str_trim() {
        for s in [
            "", " ", "a", " a", "a ", "\ta\n", "\u{a0}x", "x\u{85}", "\u{3000}", "é", "a b", "\x01",
        ] {
            assert_eq!(trim(s), s.trim(), "{s:?}");
        }
    }

    #[test]
    fn int_agrees_with_str_parse() {
        for s in [
            "0",
            "-0",
            "7",
            "12345678",
            "123456789",
            "1700000000123",
            "999999999999999999",
            "-999999999999999999",
            "1000000000000000000",
            "1234567/",
            "1234567:",
            "12345678/",
            "/2345678",
            "+5",
            "--5",
            "-",
            "",
            "1e3",
            "0012",
            "١٢",
        ] {
            if let Some(v) = int(s) {
                assert_eq!(Some(v), s.parse::<i64>().ok(), "{s:?}");
            } else {
                // Every plain integer of up to 18 digits is answered by the fast path.
                let d = s.strip_prefix('-').unwrap_or(s);
                assert!(
                    d.is_empty() || d.len() > 18 || !d.bytes().all(|c| c.is_ascii_digit()),
                    "{s:?}"
                );
            }
        }
        // Every digit value in every position of an 8-digit chunk.
        for pos in 0..16 {
            for d in 0..10u8 {
                let mut b = *b"1234567890123456";
                b[pos] = b'0' + d;
                let s = std::str::from_utf8(&b).unwrap();
                assert_eq!(int(s), s.parse::<i64>().ok(), "{s:?}");
            }
        }
    }

    #[test]
    fn decimal_agrees_with_str_parse() {
        for s in [
            "0",
            "-0",
            "0.0",
            "-0.0",
            "20.1234",
            "-81.952",
            "1.5",
            "0.1",
            "0.3",
            "9.999999999999999",
            "123456789012345",
            "1234567890123456",
            "0.000000000000001",
            "5.",
            ".5",
            "1e5",
            "+1.5",
            "1.2.3",
            "-",
            "",
            "nan",
            "inf",
            "1_0",
            "12a",
            "9007199254740993",
        ] {
            if let Some(v) = decimal(s) {
                let want: f64 = s.parse().unwrap();
                assert_eq!(v.to_bits(), want.to_bits(), "{s:?}");
            }
        }
        assert_eq!(decimal("20.1234"), Some(20.1234));
        assert_eq!(decimal("5."), None);
        // A million random cells of W1's shape and wider: bit-identical where answered.
        let mut rng = crate::dataset::generate::SplitMix64(0x9E37_79B9_7F4A_7C15);
        let mut answered = 0;
        for _ in 0..1_000_000 {
            let int_digits = 1 + rng.below(9) as u32;
            let frac_digits = rng.below(9) as usize;
            let s = format!(
                "{}{}{}{}",
                if rng.below(2) == 1 { "-" } else { "" },
                rng.below(10u64.pow(int_digits)),
                if frac_digits > 0 { "." } else { "" },
                if frac_digits > 0 {
                    format!(
                        "{:0w$}",
                        rng.below(10u64.pow(frac_digits as u32)),
                        w = frac_digits
                    )
                } else {
                    String::new()
                }
            );
            let want: f64 = s.parse().unwrap();
            if let Some(v) = decimal(&s) {
                answered += 1;
                assert_eq!(v.to_bits(), want.to_bits(), "{s:?}");
            }
        }
        assert!(answered > 900_000, "the fast path answered only {answered}");
    }
}
