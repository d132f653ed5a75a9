//! Explicit little-endian reading of PostgreSQL structures. PostgreSQL writes its WAL in the byte order
//! of the machine that produced it; every supported server pg_strata runs on is little-endian, so all
//! fields are read with `from_le_bytes`, field by field, never by reinterpreting memory.
//!
//! A `Reader` walks a byte slice and returns `None` when the slice is too short: callers turn that into
//! an error that carries the LSN of what they were decoding. Public so that pg_strata's own binary
//! formats (summaries) read their fields the same way.

use crate::relfile::RelFileNode;

/// A cursor over a byte slice.
pub struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(bytes: &'a [u8]) -> Reader<'a> {
        Reader { bytes, pos: 0 }
    }

    /// Bytes not read yet.
    pub fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    pub fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.bytes.len())?;
        let s = &self.bytes[self.pos..end];
        self.pos = end;
        Some(s)
    }

    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }

    pub fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }

    pub fn u16(&mut self) -> Option<u16> {
        self.array().map(u16::from_le_bytes)
    }

    pub fn u32(&mut self) -> Option<u32> {
        self.array().map(u32::from_le_bytes)
    }

    pub fn i32(&mut self) -> Option<i32> {
        self.array().map(i32::from_le_bytes)
    }

    pub fn u64(&mut self) -> Option<u64> {
        self.array().map(u64::from_le_bytes)
    }

    /// A RelFileNode: three OIDs (tablespace, database, relation).
    pub fn rel_file_node(&mut self) -> Option<RelFileNode> {
        Some(RelFileNode {
            spc_node: self.u32()?,
            db_node: self.u32()?,
            rel_node: self.u32()?,
        })
    }
}

/// The little-endian u16 at `off`, if the slice holds it.
pub fn le_u16(b: &[u8], off: usize) -> Option<u16> {
    Reader::new(b.get(off..)?).u16()
}

/// The little-endian u32 at `off`, if the slice holds it.
pub fn le_u32(b: &[u8], off: usize) -> Option<u32> {
    Reader::new(b.get(off..)?).u32()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_little_endian_and_stops_at_the_end() {
        let b = [1, 0, 2, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0, 0xFF];
        let mut r = Reader::new(&b);
        assert_eq!(r.u16(), Some(1));
        assert_eq!(r.u32(), Some(2));
        assert_eq!(r.u64(), Some(3));
        assert_eq!(r.remaining(), 1);
        assert_eq!(r.u16(), None, "one byte left");
        assert_eq!(r.u8(), Some(0xFF));
        assert_eq!(r.u8(), None);
        assert_eq!(le_u16(&b, 2), Some(2));
        assert_eq!(le_u32(&b, 12), None);
        assert_eq!(le_u32(&b, 100), None);
        let neg = (-1i32).to_le_bytes();
        assert_eq!(Reader::new(&neg).i32(), Some(-1));
        let rel = [0x7F, 6, 0, 0, 5, 0, 0, 0, 0, 0x40, 0, 0];
        assert_eq!(
            Reader::new(&rel).rel_file_node(),
            Some(RelFileNode {
                spc_node: 1663,
                db_node: 5,
                rel_node: 16384
            })
        );
    }
}
