//! Relations on disk: a relation fork is identified by (tablespace, database, relfilenode, fork) and is
//! stored in 1 GB segment files under PGDATA: `base/DB/REL[_fsm|_vm|_init][.N]` for the default
//! tablespace, `global/REL...` for shared catalogs, `pg_tblspc/SPC/PG_15_202209061/DB/REL...` otherwise.

/// Data page size (BLCKSZ).
pub const BLCKSZ: u32 = 8192;
/// Blocks per relation segment file (RELSEG_SIZE, 1 GB).
pub const RELSEG_SIZE: u32 = 131072;
/// Heap blocks covered by one visibility map page: (BLCKSZ - MAXALIGN(page header)) bytes, 4 heap
/// blocks per byte.
pub const HEAPBLOCKS_PER_VM_PAGE: u32 = (BLCKSZ - 24) * 4;

/// VM pages wholly covered by `heap_blocks` heap blocks: `heap_blocks / HEAPBLOCKS_PER_VM_PAGE`. It is
/// also the number of the VM page holding heap block `heap_blocks`.
///
/// This is the safe visibility-map limit after a truncation to `heap_blocks` heap blocks: the fork keeps
/// `ceil(heap_blocks / HEAPBLOCKS_PER_VM_PAGE)` pages, but when the cut falls inside a VM page, that last
/// page has its tail bits cleared by the truncation itself, without a block reference in WAL unless
/// `wal_log_hints` or data checksums make PostgreSQL log it. Counting from the floor treats that page as
/// changed.
pub fn vm_blocks_for_heap_blocks_floor(heap_blocks: u32) -> u32 {
    heap_blocks / HEAPBLOCKS_PER_VM_PAGE
}

/// Tablespace OIDs of pg_default and pg_global.
pub const DEFAULTTABLESPACE_OID: u32 = 1663;
pub const GLOBALTABLESPACE_OID: u32 = 1664;
/// The directory PG 15 creates inside each tablespace (catalog version 202209061).
pub const TABLESPACE_VERSION_DIRECTORY: &str = "PG_15_202209061";

/// The directory a server of major version `pg_major` creates inside each tablespace
/// (`PG_<major>_<catalog version>`), for the versions whose formats this crate reads.
pub fn tablespace_version_directory(pg_major: u32) -> Option<&'static str> {
    (pg_major == 15).then_some(TABLESPACE_VERSION_DIRECTORY)
}

/// RelFileNode: where a relation's files are.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RelFileNode {
    pub spc_node: u32,
    pub db_node: u32,
    pub rel_node: u32,
}

impl RelFileNode {
    pub fn new(spc_node: u32, db_node: u32, rel_node: u32) -> RelFileNode {
        RelFileNode {
            spc_node,
            db_node,
            rel_node,
        }
    }

    /// Decodes the 12-byte on-disk/WAL form (three little-endian OIDs).
    pub fn from_le_bytes(b: &[u8; 12]) -> RelFileNode {
        let u = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        RelFileNode {
            spc_node: u(0),
            db_node: u(4),
            rel_node: u(8),
        }
    }
}

/// Relation fork numbers.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum ForkNumber {
    Main = 0,
    Fsm = 1,
    VisibilityMap = 2,
    Init = 3,
}

impl ForkNumber {
    pub fn from_u8(v: u8) -> Option<ForkNumber> {
        match v {
            0 => Some(ForkNumber::Main),
            1 => Some(ForkNumber::Fsm),
            2 => Some(ForkNumber::VisibilityMap),
            3 => Some(ForkNumber::Init),
            _ => None,
        }
    }

    /// The name PostgreSQL uses (in file suffixes and pg_waldump output).
    pub fn name(self) -> &'static str {
        match self {
            ForkNumber::Main => "main",
            ForkNumber::Fsm => "fsm",
            ForkNumber::VisibilityMap => "vm",
            ForkNumber::Init => "init",
        }
    }

    fn suffix(self) -> &'static str {
        match self {
            ForkNumber::Main => "",
            ForkNumber::Fsm => "_fsm",
            ForkNumber::VisibilityMap => "_vm",
            ForkNumber::Init => "_init",
        }
    }
}

/// Path of a relation fork's first segment file, relative to PGDATA.
pub fn relation_path(rel: RelFileNode, fork: ForkNumber) -> String {
    let s = fork.suffix();
    match rel.spc_node {
        GLOBALTABLESPACE_OID => format!("global/{}{s}", rel.rel_node),
        DEFAULTTABLESPACE_OID => format!("base/{}/{}{s}", rel.db_node, rel.rel_node),
        spc => format!(
            "pg_tblspc/{spc}/{TABLESPACE_VERSION_DIRECTORY}/{}/{}{s}",
            rel.db_node, rel.rel_node
        ),
    }
}

/// Path of segment file `segno` of a relation fork (`.N` suffix from the second segment on).
pub fn relation_segment_path(rel: RelFileNode, fork: ForkNumber, segno: u32) -> String {
    let base = relation_path(rel, fork);
    if segno == 0 {
        base
    } else {
        format!("{base}.{segno}")
    }
}

/// Parses a relation file path relative to PGDATA into (relation, fork, segment number).
pub fn parse_relation_path(path: &str) -> Option<(RelFileNode, ForkNumber, u32)> {
    let parts: Vec<&str> = path.split('/').collect();
    let (spc, db, file) = match parts.as_slice() {
        ["global", file] => (GLOBALTABLESPACE_OID, 0, *file),
        ["base", db, file] => (DEFAULTTABLESPACE_OID, parse_oid(db)?, *file),
        ["pg_tblspc", spc, ver, db, file] if *ver == TABLESPACE_VERSION_DIRECTORY => {
            (parse_oid(spc)?, parse_oid(db)?, *file)
        }
        _ => return None,
    };
    let (rel_node, fork, segno) = parse_relation_file_name(file)?;
    Some((
        RelFileNode {
            spc_node: spc,
            db_node: db,
            rel_node,
        },
        fork,
        segno,
    ))
}

/// Parses a relation file's name, `REL[_fsm|_vm|_init][.N]`, into (relfilenode, fork, segment number).
pub fn parse_relation_file_name(file: &str) -> Option<(u32, ForkNumber, u32)> {
    let (name, segno) = match file.split_once('.') {
        Some((n, s)) => (n, parse_oid(s).filter(|&s| s > 0)?),
        None => (file, 0),
    };
    let (rel, fork) = match name.split_once('_') {
        Some((r, "fsm")) => (r, ForkNumber::Fsm),
        Some((r, "vm")) => (r, ForkNumber::VisibilityMap),
        Some((r, "init")) => (r, ForkNumber::Init),
        Some(_) => return None,
        None => (name, ForkNumber::Main),
    };
    Some((parse_oid(rel)?, fork, segno))
}

fn parse_oid(s: &str) -> Option<u32> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) || (s.len() > 1 && s.starts_with('0'))
    {
        return None;
    }
    s.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_round_trip() {
        let r = RelFileNode {
            spc_node: 1663,
            db_node: 5,
            rel_node: 16384,
        };
        assert_eq!(relation_path(r, ForkNumber::Main), "base/5/16384");
        assert_eq!(
            relation_path(r, ForkNumber::VisibilityMap),
            "base/5/16384_vm"
        );
        assert_eq!(
            parse_relation_path("base/5/16384"),
            Some((r, ForkNumber::Main, 0))
        );
        assert_eq!(
            parse_relation_path("base/5/16384_vm"),
            Some((r, ForkNumber::VisibilityMap, 0))
        );
        assert_eq!(
            parse_relation_path("base/5/16384.2"),
            Some((r, ForkNumber::Main, 2))
        );
        let g = RelFileNode {
            spc_node: 1664,
            db_node: 0,
            rel_node: 1262,
        };
        assert_eq!(relation_path(g, ForkNumber::Main), "global/1262");
        assert_eq!(
            parse_relation_path("global/1262"),
            Some((g, ForkNumber::Main, 0))
        );
        let t = RelFileNode {
            spc_node: 16390,
            db_node: 5,
            rel_node: 16391,
        };
        assert_eq!(
            relation_path(t, ForkNumber::Fsm),
            "pg_tblspc/16390/PG_15_202209061/5/16391_fsm"
        );
        assert_eq!(
            parse_relation_path("pg_tblspc/16390/PG_15_202209061/5/16391_fsm.1"),
            Some((t, ForkNumber::Fsm, 1))
        );
        for bad in [
            "base/5/pg_filenode.map",
            "base/5/16384_x",
            "base/5/16384.0",
            "base/x/1",
            "global/pg_control",
            "base/5/t3_16384",
        ] {
            assert_eq!(parse_relation_path(bad), None, "{bad}");
        }
        assert_eq!(
            relation_path(t, ForkNumber::Init),
            "pg_tblspc/16390/PG_15_202209061/5/16391_init"
        );
        assert_eq!(
            relation_segment_path(r, ForkNumber::Main, 0),
            "base/5/16384"
        );
        assert_eq!(
            relation_segment_path(t, ForkNumber::Fsm, 1),
            "pg_tblspc/16390/PG_15_202209061/5/16391_fsm.1"
        );
        assert_eq!(
            parse_relation_path("base/5/16384_init.3"),
            Some((r, ForkNumber::Init, 3))
        );
        assert_eq!(
            parse_relation_path("global/1262_vm"),
            Some((
                RelFileNode {
                    rel_node: 1262,
                    ..g
                },
                ForkNumber::VisibilityMap,
                0
            ))
        );
    }

    #[test]
    fn file_names_and_version_directories() {
        assert_eq!(
            parse_relation_file_name("16384_vm.3"),
            Some((16384, ForkNumber::VisibilityMap, 3))
        );
        assert_eq!(
            parse_relation_file_name("1259"),
            Some((1259, ForkNumber::Main, 0))
        );
        for bad in [
            "pg_filenode.map",
            "16384_x",
            "016384",
            "16384.",
            "",
            "t3_16384",
            "é",
        ] {
            assert_eq!(parse_relation_file_name(bad), None, "{bad}");
        }
        assert_eq!(tablespace_version_directory(15), Some("PG_15_202209061"));
        assert_eq!(tablespace_version_directory(16), None);
    }

    #[test]
    fn forks_and_visibility_map_arithmetic() {
        for (n, name) in [(0, "main"), (1, "fsm"), (2, "vm"), (3, "init")] {
            let f = ForkNumber::from_u8(n).unwrap();
            assert_eq!(f as u8, n);
            assert_eq!(f.name(), name);
        }
        assert_eq!(ForkNumber::from_u8(4), None);
        assert_eq!(HEAPBLOCKS_PER_VM_PAGE, 32672);
        assert_eq!(vm_blocks_for_heap_blocks_floor(0), 0);
        assert_eq!(vm_blocks_for_heap_blocks_floor(32671), 0);
        assert_eq!(vm_blocks_for_heap_blocks_floor(32672), 1);
        assert_eq!(vm_blocks_for_heap_blocks_floor(32673), 1);
        assert_eq!(vm_blocks_for_heap_blocks_floor(u32::MAX), u32::MAX / 32672);
    }
}
