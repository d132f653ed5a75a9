//! Block-change summaries: for one LSN range of one timeline, which blocks of which relation forks were
//! modified, and each fork's "limit block" (the smallest length the fork had in the range: it was
//! created, truncated or dropped). This is the idea of PostgreSQL 17's WAL summaries
//! (src/common/blkreftable.c), computed by pg_strata on PG 15 from archived WAL.
//!
//! Rules:
//! - every block reference of every record counts; setting a limit forgets modified blocks at or above it
//!   (they are covered by the limit: everything from the limit up must be copied);
//! - a heap record's modified heap pages also count their visibility map page as modified: heap
//!   records clear VM bits without a block reference to the VM page;
//! - the free space map fork is never tracked (backups copy it whole), so it is not recorded;
//! - the visibility map's limit is in VM blocks, rounded *down*: the partial VM page left by a truncation
//!   is changed without WAL when checksums are off, so it must be copied whole;
//! - a created or dropped database is recorded as such: backups copy a new database whole;
//! - a summary that could not be computed is stored "missing" with the reason, so that backups know
//!   they cannot trust the map for that range.
//!
//! Stored format (little-endian), pinned by a golden test:
//! ```text
//! magic "STRATABR" | version u16 = 1 | flags u16 (bit 0: missing) | timeline u32 | start u64 | end u64
//! n_db_events u32, each: kind u8 (1 created, 2 dropped) spc u32 db u32
//! n_forks u32, each: spc u32 db u32 rel u32 fork u8 limit u32 (0xFFFFFFFF: none) n_runs u32,
//!                    each run: first_block u32 count u32
//! reason_len u16, reason (UTF-8; empty unless missing)
//! crc32c u32 of everything before
//! ```

use pgformat::bytes::Reader;
use pgformat::lsn::{Lsn, TimeLineId};
use pgformat::relfile::{ForkNumber, RelFileNode, HEAPBLOCKS_PER_VM_PAGE};
use pgformat::rmgr::{relation_changes, RelChange};
use pgformat::wal::{rmid, DecodedRecord, WalError};
use std::collections::{BTreeMap, BTreeSet};

pub const MAGIC: &[u8; 8] = b"STRATABR";
pub const VERSION: u16 = 1;
const FLAG_MISSING: u16 = 1;
const NO_LIMIT: u32 = u32::MAX;

/// One relation fork: the relation's (tablespace, database, relfilenode) and the fork. Ordered by
/// tablespace, database, relfilenode, then fork number (the order of the stored format).
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ForkKey {
    pub rel: RelFileNode,
    pub fork: ForkNumber,
}

impl ForkKey {
    pub fn new(rel: RelFileNode, fork: ForkNumber) -> ForkKey {
        ForkKey { rel, fork }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ForkChanges {
    /// Smallest length (in blocks) the fork had in the range, if it was created, truncated or dropped.
    pub limit: Option<u32>,
    /// Blocks modified (below the limit, or after the fork regrew past it).
    pub blocks: BTreeSet<u32>,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum DbEvent {
    Created { spc: u32, db: u32 },
    Dropped { spc: u32, db: u32 },
}

/// The last pages `Summary::add_record_after` marked in one summary (see there).
#[derive(Clone, Copy, Debug, Default)]
pub struct RecentMarks {
    page: Option<(ForkKey, u32)>,
    vm_page: Option<(ForkKey, u32)>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Summary {
    pub timeline: TimeLineId,
    pub start: Lsn,
    pub end: Lsn,
    /// `Some(reason)` when the range could not be summarized: its map must not be trusted.
    pub missing: Option<String>,
    pub db_events: Vec<DbEvent>,
    pub forks: BTreeMap<ForkKey, ForkChanges>,
}

#[derive(Debug, thiserror::Error)]
#[error("block-change summary {what}: {reason}")]
pub struct SummaryFormatError {
    pub what: String,
    pub reason: String,
}

impl Summary {
    pub fn new(timeline: TimeLineId, start: Lsn, end: Lsn) -> Summary {
        Summary {
            timeline,
            start,
            end,
            missing: None,
            db_events: Vec::new(),
            forks: BTreeMap::new(),
        }
    }

    pub fn missing(timeline: TimeLineId, start: Lsn, end: Lsn, reason: String) -> Summary {
        Summary {
            missing: Some(reason),
            ..Summary::new(timeline, start, end)
        }
    }

    pub fn mark_modified(&mut self, key: ForkKey, block: u32) {
        if key.fork == ForkNumber::Fsm {
            return;
        }
        self.forks.entry(key).or_default().blocks.insert(block);
    }

    pub fn set_limit(&mut self, key: ForkKey, limit: u32) {
        if key.fork == ForkNumber::Fsm {
            return;
        }
        let e = self.forks.entry(key).or_default();
        e.limit = Some(e.limit.map_or(limit, |l| l.min(limit)));
        e.blocks.retain(|&b| b < limit);
    }

    /// Adds one decoded WAL record: its block references and its relation-level changes.
    pub fn add_record(&mut self, rec: &DecodedRecord) -> Result<(), WalError> {
        self.add_record_after(rec, &mut RecentMarks::default())
    }

    /// `add_record` for one of a sequence of records: `recent` remembers the last pages marked (by
    /// the records before, into this summary), which are not looked up again. One visibility map
    /// page covers 32672 heap pages, so most heap records would mark the one marked just before.
    pub fn add_record_after(
        &mut self,
        rec: &DecodedRecord,
        recent: &mut RecentMarks,
    ) -> Result<(), WalError> {
        // Relation-level changes first: a record that both truncates and references blocks (none in PG 15
        // do) would keep the references.
        let changes = relation_changes(rec)?;
        if !changes.is_empty() {
            // A truncation or a drop may have removed what was marked.
            *recent = RecentMarks::default();
        }
        for change in changes {
            self.apply_change(change);
        }
        let heap = rec.rmid == rmid::HEAP || rec.rmid == rmid::HEAP2;
        for b in &rec.blocks {
            let page = (ForkKey::new(b.rel, b.fork), b.block);
            if recent.page != Some(page) {
                self.mark_modified(page.0, page.1);
                recent.page = Some(page);
            }
            if heap && b.fork == ForkNumber::Main {
                // Heap records clear visibility map bits without referencing the VM page (redo clears
                // them by flag): count the VM page of every modified heap page as modified.
                let vm = (
                    ForkKey::new(b.rel, ForkNumber::VisibilityMap),
                    b.block / HEAPBLOCKS_PER_VM_PAGE,
                );
                if recent.vm_page != Some(vm) {
                    self.mark_modified(vm.0, vm.1);
                    recent.vm_page = Some(vm);
                }
            }
        }
        Ok(())
    }

    /// Adds a summary of a later LSN range, so that `self` covers both.
    pub fn absorb(&mut self, later: &Summary) {
        if let (None, Some(reason)) = (&self.missing, &later.missing) {
            self.missing = Some(reason.clone());
        }
        self.end = self.end.max(later.end);
        self.db_events.extend(later.db_events.iter().copied());
        for (key, f) in &later.forks {
            if let Some(limit) = f.limit {
                self.set_limit(*key, limit);
            }
            let e = self.forks.entry(*key).or_default();
            e.blocks.extend(f.blocks.iter().copied());
        }
    }

    fn apply_change(&mut self, change: RelChange) {
        match change {
            RelChange::Create { rel, fork } => self.set_limit(ForkKey::new(rel, fork), 0),
            RelChange::Truncate {
                rel,
                heap_blocks,
                main,
                vm,
                fsm: _,
            } => {
                if main {
                    self.set_limit(ForkKey::new(rel, ForkNumber::Main), heap_blocks);
                }
                if vm {
                    self.set_limit(
                        ForkKey::new(rel, ForkNumber::VisibilityMap),
                        heap_blocks / HEAPBLOCKS_PER_VM_PAGE,
                    );
                }
            }
            RelChange::DropRelation { rel } => {
                for fork in [
                    ForkNumber::Main,
                    ForkNumber::VisibilityMap,
                    ForkNumber::Init,
                ] {
                    self.set_limit(ForkKey::new(rel, fork), 0);
                }
            }
            RelChange::CreateDatabase { spc_node, db_node } => {
                self.db_events.push(DbEvent::Created {
                    spc: spc_node,
                    db: db_node,
                })
            }
            RelChange::DropDatabase { db_node, spc_nodes } => {
                for spc in spc_nodes {
                    self.db_events.push(DbEvent::Dropped { spc, db: db_node });
                }
            }
        }
    }

    /// Number of (fork, block) pairs recorded.
    pub fn block_count(&self) -> usize {
        self.forks.values().map(|f| f.blocks.len()).sum()
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + self.forks.len() * 32);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.extend_from_slice(
            &(if self.missing.is_some() {
                FLAG_MISSING
            } else {
                0
            })
            .to_le_bytes(),
        );
        out.extend_from_slice(&self.timeline.to_le_bytes());
        out.extend_from_slice(&self.start.0.to_le_bytes());
        out.extend_from_slice(&self.end.0.to_le_bytes());
        out.extend_from_slice(&(self.db_events.len() as u32).to_le_bytes());
        for ev in &self.db_events {
            let (kind, spc, db) = match *ev {
                DbEvent::Created { spc, db } => (1u8, spc, db),
                DbEvent::Dropped { spc, db } => (2u8, spc, db),
            };
            out.push(kind);
            out.extend_from_slice(&spc.to_le_bytes());
            out.extend_from_slice(&db.to_le_bytes());
        }
        out.extend_from_slice(&(self.forks.len() as u32).to_le_bytes());
        for (k, f) in &self.forks {
            out.extend_from_slice(&k.rel.spc_node.to_le_bytes());
            out.extend_from_slice(&k.rel.db_node.to_le_bytes());
            out.extend_from_slice(&k.rel.rel_node.to_le_bytes());
            out.push(k.fork as u8);
            out.extend_from_slice(&f.limit.unwrap_or(NO_LIMIT).to_le_bytes());
            let runs = runs_of(&f.blocks);
            out.extend_from_slice(&(runs.len() as u32).to_le_bytes());
            for (first, count) in runs {
                out.extend_from_slice(&first.to_le_bytes());
                out.extend_from_slice(&count.to_le_bytes());
            }
        }
        let reason = self.missing.as_deref().unwrap_or("").as_bytes();
        let reason = &reason[..reason.len().min(u16::MAX as usize)];
        out.extend_from_slice(&(reason.len() as u16).to_le_bytes());
        out.extend_from_slice(reason);
        let crc = crc32c::crc32c(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    /// Decodes a stored summary; `what` names it in errors (its key).
    pub fn decode(what: &str, bytes: &[u8]) -> Result<Summary, SummaryFormatError> {
        let err = |reason: &str| SummaryFormatError {
            what: what.to_string(),
            reason: reason.to_string(),
        };
        if bytes.len() < 8 + 2 + 2 + 4 + 8 + 8 + 4 + 4 + 2 + 4 {
            return Err(err("too short"));
        }
        let (body, crc) = bytes.split_at(bytes.len() - 4);
        if crc32c::crc32c(body).to_le_bytes() != crc {
            return Err(err("CRC mismatch: the object is corrupt"));
        }
        let mut r = Reader::new(body);
        let short = || err("truncated");
        if r.take(8).ok_or_else(short)? != MAGIC {
            return Err(err("bad magic: not a block-change summary"));
        }
        let version = r.u16().ok_or_else(short)?;
        if version != VERSION {
            return Err(err(&format!(
                "format version {version}, this pg_strata reads {VERSION}"
            )));
        }
        let flags = r.u16().ok_or_else(short)?;
        let timeline = r.u32().ok_or_else(short)?;
        let start = Lsn(r.u64().ok_or_else(short)?);
        let end = Lsn(r.u64().ok_or_else(short)?);
        let mut s = Summary::new(timeline, start, end);
        let n_ev = r.u32().ok_or_else(short)?;
        for _ in 0..n_ev {
            let kind = r.u8().ok_or_else(short)?;
            let spc = r.u32().ok_or_else(short)?;
            let db = r.u32().ok_or_else(short)?;
            s.db_events.push(match kind {
                1 => DbEvent::Created { spc, db },
                2 => DbEvent::Dropped { spc, db },
                _ => return Err(err(&format!("unknown database event kind {kind}"))),
            });
        }
        let n_forks = r.u32().ok_or_else(short)?;
        for _ in 0..n_forks {
            let rel = RelFileNode {
                spc_node: r.u32().ok_or_else(short)?,
                db_node: r.u32().ok_or_else(short)?,
                rel_node: r.u32().ok_or_else(short)?,
            };
            let fork = r.u8().ok_or_else(short)?;
            let fork = ForkNumber::from_u8(fork)
                .ok_or_else(|| err(&format!("unknown fork number {fork}")))?;
            let key = ForkKey::new(rel, fork);
            let limit = r.u32().ok_or_else(short)?;
            let n_runs = r.u32().ok_or_else(short)?;
            let mut f = ForkChanges {
                limit: (limit != NO_LIMIT).then_some(limit),
                blocks: BTreeSet::new(),
            };
            for _ in 0..n_runs {
                let first = r.u32().ok_or_else(short)?;
                let count = r.u32().ok_or_else(short)?;
                let last = first
                    .checked_add(count)
                    .ok_or_else(|| err("block run overflows"))?;
                if count > 1 << 22 {
                    return Err(err("block run too long"));
                }
                f.blocks.extend(first..last);
            }
            s.forks.insert(key, f);
        }
        let reason_len = r.u16().ok_or_else(short)? as usize;
        let reason = r.take(reason_len).ok_or_else(short)?;
        if flags & FLAG_MISSING != 0 {
            s.missing = Some(String::from_utf8_lossy(reason).into_owned());
        }
        if r.remaining() != 0 {
            return Err(err("trailing bytes"));
        }
        Ok(s)
    }
}

/// Consecutive blocks as (first, count) runs.
fn runs_of(blocks: &BTreeSet<u32>) -> Vec<(u32, u32)> {
    let mut runs: Vec<(u32, u32)> = Vec::new();
    for &b in blocks {
        match runs.last_mut() {
            Some((first, count)) if *first + *count == b => *count += 1,
            _ => runs.push((b, 1)),
        }
    }
    runs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(rel: u32, fork: u8) -> ForkKey {
        ForkKey::new(
            RelFileNode {
                spc_node: 1663,
                db_node: 5,
                rel_node: rel,
            },
            ForkNumber::from_u8(fork).unwrap(),
        )
    }

    fn record(rmid: u8, info: u8, blocks: &[(u32, u32)], main_data: Vec<u8>) -> DecodedRecord {
        DecodedRecord {
            lsn: Lsn(0x1000),
            end_lsn: Lsn(0x1100),
            rmid,
            info,
            xid: 0,
            prev: Lsn(0),
            blocks: blocks
                .iter()
                .map(|&(rel, block)| pgformat::wal::BlockRef {
                    id: 0,
                    rel: key(rel, 0).rel,
                    fork: ForkNumber::Main,
                    block,
                    has_image: false,
                    apply_image: false,
                    will_init: false,
                    has_data: true,
                })
                .collect(),
            main_data,
        }
    }

    #[test]
    fn pages_marked_just_before_are_marked_again_after_a_truncation() {
        let heap = |blocks: &[(u32, u32)]| record(pgformat::wal::rmid::HEAP, 0, blocks, vec![]);
        // SMGR TRUNCATE of relation 16384 to 8 blocks (main fork and visibility map).
        let mut truncate = 8u32.to_le_bytes().to_vec();
        for v in [1663u32, 5, 16384] {
            truncate.extend_from_slice(&v.to_le_bytes());
        }
        truncate.extend_from_slice(&3i32.to_le_bytes());
        let truncate = record(pgformat::wal::rmid::SMGR, 0x20 | 0x01, &[], truncate);
        // Block 9 is the last page marked before the truncation removes it, and the first after.
        let records = [
            heap(&[(16384, 9), (16384, 9)]),
            heap(&[(16385, 3), (16384, 9)]),
            truncate,
            heap(&[(16384, 9)]),
            heap(&[(16384, 9)]),
        ];
        let mut one_by_one = Summary::new(1, Lsn(0), Lsn(0x100_0000));
        let mut in_sequence = one_by_one.clone();
        let mut recent = RecentMarks::default();
        for r in &records {
            one_by_one.add_record(r).unwrap();
            in_sequence.add_record_after(r, &mut recent).unwrap();
        }
        assert_eq!(in_sequence, one_by_one);
        let main = &in_sequence.forks[&key(16384, 0)];
        assert_eq!(main.limit, Some(8));
        assert_eq!(main.blocks.iter().copied().collect::<Vec<_>>(), vec![9]);
        assert!(in_sequence.forks[&key(16384, 2)].blocks.contains(&0));
        assert!(in_sequence.forks[&key(16385, 0)].blocks.contains(&3));
    }

    #[test]
    fn limits_forget_blocks_above_them() {
        let mut s = Summary::new(1, Lsn(0), Lsn(0x100_0000));
        for b in [0, 1, 2, 7, 8, 9] {
            s.mark_modified(key(16384, 0), b);
        }
        s.set_limit(key(16384, 0), 8);
        s.mark_modified(key(16384, 0), 9); // the table grew again after the truncation
        s.set_limit(key(16384, 0), 10); // a later, larger truncation keeps the smaller limit
        let f = &s.forks[&key(16384, 0)];
        assert_eq!(f.limit, Some(8));
        assert_eq!(
            f.blocks.iter().copied().collect::<Vec<_>>(),
            vec![0, 1, 2, 7, 9]
        );
        // FSM is never tracked.
        s.mark_modified(key(16384, 1), 3);
        s.set_limit(key(16384, 1), 0);
        assert!(!s.forks.contains_key(&key(16384, 1)));
    }

    #[test]
    fn golden_bytes() {
        let mut s = Summary::new(2, Lsn(0x0100_0000), Lsn(0x0200_0000));
        s.mark_modified(key(16384, 0), 3);
        s.mark_modified(key(16384, 0), 4);
        s.mark_modified(key(16384, 0), 10);
        s.set_limit(key(16385, 2), 0);
        s.db_events.push(DbEvent::Created {
            spc: 1663,
            db: 16400,
        });
        let bytes = s.encode();
        let expected = concat!(
            "5354524154414252", // STRATABR
            "0100",             // version 1
            "0000",             // flags
            "02000000",         // timeline 2
            "0000000100000000", // start 0/1000000
            "0000000200000000", // end 0/2000000
            "01000000",         // 1 database event
            "01",
            "7f060000",
            "10400000", // created 1663/16400
            "02000000", // 2 forks
            "7f060000",
            "05000000",
            "00400000",
            "00",
            "ffffffff",
            "02000000", // 1663/5/16384 main, no limit, 2 runs
            "0300000002000000",
            "0a00000001000000", // blocks 3-4, 10
            "7f060000",
            "05000000",
            "01400000",
            "02",
            "00000000",
            "00000000", // 1663/5/16385 vm, limit 0
            "0000",     // no reason
        );
        assert_eq!(hex::encode(&bytes[..bytes.len() - 4]), expected);
        assert_eq!(
            bytes[bytes.len() - 4..],
            crc32c::crc32c(&bytes[..bytes.len() - 4]).to_le_bytes()
        );
        assert_eq!(Summary::decode("k", &bytes).unwrap(), s);
    }

    #[test]
    fn missing_summaries_and_corruption() {
        let s = Summary::missing(1, Lsn(0), Lsn(0x100_0000), "bad CRC at 0/10".into());
        let mut bytes = s.encode();
        assert_eq!(
            Summary::decode("k", &bytes).unwrap().missing.as_deref(),
            Some("bad CRC at 0/10")
        );
        bytes[20] ^= 1;
        assert!(Summary::decode("main/summary/x", &bytes)
            .unwrap_err()
            .to_string()
            .contains("main/summary/x"));
        assert!(Summary::decode("k", &bytes[..10]).is_err());
    }
}
