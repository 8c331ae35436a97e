//! The little-endian building blocks every codec of the format shares: fixed
//! fields at known offsets of a header whose length was checked, and a
//! bounds-checked cursor over variable-length bodies.
//!
//! This module owns how an integer or a string is laid out in bytes; it must
//! never know what a frame, an index or a checkpoint is.

/// A body that does not decode: a field runs past its end, or a string is not UTF-8.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeError(pub &'static str);

/// The `u32` at `at`; the caller has checked that `b` holds `at + 4` bytes.
pub(crate) fn le_u32(b: &[u8], at: usize) -> u32 {
    let mut x = [0u8; 4];
    x.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(x)
}

/// The `u64` at `at`; the caller has checked that `b` holds `at + 8` bytes.
pub(crate) fn le_u64(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(x)
}

/// The `i64` at `at`; the caller has checked that `b` holds `at + 8` bytes.
pub(crate) fn le_i64(b: &[u8], at: usize) -> i64 {
    i64::from_le_bytes(le_u64(b, at).to_le_bytes())
}

/// A bounds-checked little-endian cursor; every read past the end is a [`DecodeError`].
pub(crate) struct Reader<'a> {
    pub(crate) buf: &'a [u8],
}

impl<'a> Reader<'a> {
    /// A cursor at the start of `buf`.
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Reader { buf }
    }
    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.buf.len() < n {
            return Err(DecodeError("field runs past the end of the body"));
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }
    pub(crate) fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }
    pub(crate) fn u16(&mut self) -> Result<u16, DecodeError> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    pub(crate) fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(le_u32(self.take(4)?, 0))
    }
    pub(crate) fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(le_u64(self.take(8)?, 0))
    }
    /// An unsigned LEB128 integer ([`put_varint`]): at most 10 bytes, and a
    /// value that does not fit 64 bits is a [`DecodeError`].
    pub(crate) fn varint(&mut self) -> Result<u64, DecodeError> {
        let buf = self.buf;
        let mut v: u64 = 0;
        for (i, &b) in buf.iter().take(10).enumerate() {
            if i == 9 && b > 1 {
                return Err(DecodeError("varint overflows 64 bits"));
            }
            v |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                self.buf = &buf[i + 1..];
                return Ok(v);
            }
        }
        Err(if buf.len() < 10 {
            DecodeError("field runs past the end of the body")
        } else {
            DecodeError("varint longer than 10 bytes")
        })
    }
    /// A string with a `u16` length before it.
    pub(crate) fn str16(&mut self) -> Result<&'a str, DecodeError> {
        let n = usize::from(self.u16()?);
        std::str::from_utf8(self.take(n)?).map_err(|_| DecodeError("string is not UTF-8"))
    }
}

/// Appends `v` as unsigned LEB128: seven bits per byte, least significant
/// first, the high bit set on every byte but the last.
#[allow(
    clippy::cast_possible_truncation,
    reason = "each byte takes the low seven bits on purpose"
)]
pub(crate) fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_fields_and_the_cursor_read_little_endian_and_stop_at_the_end() {
        let b = [1u8, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 3, 0, b'h', b'i'];
        assert_eq!(le_u32(&b, 0), 1);
        assert_eq!(le_u64(&b, 4), 2);
        let mut r = Reader::new(&b[12..]);
        assert_eq!(r.u16(), Ok(3));
        assert_eq!(r.take(2), Ok(&b"hi"[..]));
        assert!(r.u8().is_err());
        let mut r = Reader::new(&[2, 0, 0xff, 0xfe]);
        assert_eq!(r.str16(), Err(DecodeError("string is not UTF-8")));
    }

    #[test]
    fn varints_round_trip_and_refuse_what_overflows() {
        for v in [0, 1, 127, 128, 300, u64::from(u32::MAX), u64::MAX - 1, u64::MAX] {
            let mut b = Vec::new();
            put_varint(&mut b, v);
            assert_eq!(b.len(), (64 - v.leading_zeros() as usize).max(1).div_ceil(7));
            let mut r = Reader::new(&b);
            assert_eq!(r.varint(), Ok(v));
            assert!(r.buf.is_empty());
        }
        assert_eq!(Reader::new(&[0x96, 0x01]).varint(), Ok(150));
        assert!(Reader::new(&[0x80]).varint().is_err());
        assert!(Reader::new(&[0xff; 10]).varint().is_err());
        assert!(
            Reader::new(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02])
                .varint()
                .is_err()
        );
    }
}
