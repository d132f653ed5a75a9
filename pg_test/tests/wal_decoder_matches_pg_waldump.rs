//! The WAL decoder against PostgreSQL's own `pg_waldump`, on segments written by a real server under a
//! workload that produces every shape of WAL the decoder must handle: records crossing pages and
//! segments (one longer than a whole segment), full-page images plain and compressed, several block
//! references per record, other tablespaces, and every kind of record that changes relations outside
//! block references. For every record, the LSN, resource manager and block references (relation, fork,
//! block, full-page image) must equal pg_waldump's, with none missing; the relation-level changes must
//! match what pg_waldump's descriptions say; each segment decoded on its own (skipping the record it
//! starts inside) must give what `pg_waldump SEGMENT` gives.

use pg_test::{pg_bin, run_as_postgres, Cluster, PgDir};
use pgformat::lsn::{segment_file_name, Lsn, WalFileName, DEFAULT_WAL_SEGMENT_SIZE as SEG};
use pgformat::relfile::{relation_path, ForkNumber, RelFileNode};
use pgformat::rmgr::{relation_changes, RelChange};
use pgformat::wal::{rmid, DecodedRecord, WalDecoder};
use std::collections::BTreeMap;
use std::process::Command;

/// What both sides say about a record.
#[derive(Debug, PartialEq, Eq, Clone)]
struct Rec {
    rmgr: String,
    /// id, "spc/db/rel", fork name, block, full-page image
    blocks: Vec<(u8, String, String, u32, bool)>,
}

/// A pg_waldump line: the record, its total length and its description.
struct Dumped {
    rec: Rec,
    tot_len: u64,
    desc: String,
}

fn field<'a>(line: &'a str, key: &str) -> &'a str {
    let at = line
        .find(key)
        .unwrap_or_else(|| panic!("no {key:?} in {line}"))
        + key.len();
    line[at..].split(',').next().unwrap().trim()
}

/// Parses pg_waldump's default output: `rmgr: Heap len (rec/tot): 54/ 190, tx: 735, lsn: 0/01A2B3C8,
/// prev 0/01A2B390, desc: INSERT off 2 flags 0x00, blkref #0: rel 1663/5/16384 [fork vm] blk 0 [FPW]`.
fn parse_waldump(text: &str) -> BTreeMap<Lsn, Dumped> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("rmgr: ") else {
            continue;
        };
        let rmgr = rest.split_whitespace().next().unwrap().to_string();
        let lsn: Lsn = field(line, ", lsn: ").parse().expect("lsn value");
        let tot_len = field(line, "len (rec/tot): ")
            .split('/')
            .nth(1)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let desc_at = line.find(", desc: ").expect("desc") + 8;
        let (desc, blkrefs) = match line[desc_at..].find(", blkref #") {
            Some(i) => (&line[desc_at..desc_at + i], &line[desc_at + i..]),
            None => (&line[desc_at..], ""),
        };
        let mut blocks = Vec::new();
        for part in blkrefs.split("blkref #").skip(1) {
            // "0: rel 1663/5/16384 fork vm blk 0 FPW, "
            let part = part.trim_end_matches([',', ' ']);
            let (id, rest) = part.split_once(": rel ").expect("blkref");
            let words: Vec<&str> = rest.split_whitespace().collect();
            let (fork, blk_at) = if words[1] == "fork" {
                (words[2], 4)
            } else {
                ("main", 2)
            };
            assert_eq!(words[blk_at - 1], "blk", "{line}");
            let fpw = words.get(blk_at + 1).is_some_and(|w| w.starts_with("FPW"));
            blocks.push((
                id.parse().unwrap(),
                words[0].to_string(),
                fork.to_string(),
                words[blk_at].parse().unwrap(),
                fpw,
            ));
        }
        let dumped = Dumped {
            rec: Rec { rmgr, blocks },
            tot_len,
            desc: desc.to_string(),
        };
        assert!(
            out.insert(lsn, dumped).is_none(),
            "pg_waldump printed {lsn} twice"
        );
    }
    out
}

fn ours(r: &DecodedRecord) -> Rec {
    Rec {
        rmgr: rmid::name(r.rmid),
        blocks: r
            .blocks
            .iter()
            .map(|b| {
                let rel = format!("{}/{}/{}", b.rel.spc_node, b.rel.db_node, b.rel.rel_node);
                (b.id, rel, b.fork.name().to_string(), b.block, b.has_image)
            })
            .collect(),
    }
}

/// pg_waldump's stdout, whatever its exit status (it complains at the end of what it can read).
fn waldump(args: &[String]) -> String {
    let out = run_as_postgres(Command::new(pg_bin("pg_waldump")).args(args));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn segno(c: &Cluster, sql: &str) -> u64 {
    let name = c.psql("postgres", sql);
    match WalFileName::parse(&name, SEG) {
        Some(WalFileName::Segment { segno, .. }) => segno,
        other => panic!("{name}: {other:?}"),
    }
}

/// Emits a logical message of `len` bytes: one WAL record.
fn message(c: &Cluster, len: usize) {
    c.psql(
        "postgres",
        &format!("SELECT pg_logical_emit_message(false, 'strata', repeat('m', {len}))"),
    );
}

/// Emits a logical message of `len` bytes that starts at least 1 MB before the end of a segment,
/// so that it crosses into the next one.
fn message_across_segment(c: &Cluster, len: usize) {
    let at: Lsn = c
        .psql("postgres", "SELECT pg_current_wal_insert_lsn()")
        .parse()
        .unwrap();
    let left = SEG as usize - at.segment_offset(SEG) as usize;
    if left < 1 << 20 || left > len - (1 << 20) {
        // Move to 2 MB before a segment end first.
        let pad = (left + SEG as usize - (2 << 20)) % SEG as usize;
        message(c, pad.max(1));
    }
    message(c, len);
}

fn workload(c: &Cluster, tablespace: &PgDir) {
    c.psql(
        "postgres",
        &format!(
            "CREATE EXTENSION pg_visibility;
             CREATE TABLESPACE ts LOCATION '{}';
             CREATE TABLE wide (k int, v text); ALTER TABLE wide ALTER v SET STORAGE plain;
             CREATE TABLE narrow (k int PRIMARY KEY, v text);
             CREATE TABLE docs (k int, body text);
             CREATE TABLE elsewhere (k int, v text) TABLESPACE ts;
             CREATE UNLOGGED TABLE scratch (k int);
             CREATE TABLE doomed (k int); CREATE TABLE doomed2 (k int);",
            tablespace.path().display()
        ),
    );
    // Rows of about 3 kB (records crossing page boundaries) and a large value, stored out of line.
    c.psql(
        "postgres",
        "INSERT INTO wide SELECT g, repeat(md5(g::text), 90) FROM generate_series(1, 3000) g",
    );
    c.psql(
        "postgres",
        "INSERT INTO docs SELECT 0, string_agg(md5(g::text), '') FROM generate_series(1, 30000) g",
    );
    c.psql(
        "postgres",
        "INSERT INTO narrow SELECT g, md5(g::text) FROM generate_series(1, 100000) g",
    );
    c.psql(
        "postgres",
        "INSERT INTO elsewhere SELECT g, md5(g::text) FROM generate_series(1, 20000) g",
    );
    // A record longer than a whole segment, and one crossing a segment boundary.
    message(c, 17 << 20);
    message_across_segment(c, 3 << 20);
    // After a checkpoint, the first change of each page logs its image: plain, then compressed.
    c.psql("postgres", "CHECKPOINT");
    c.psql("postgres", "UPDATE narrow SET v = 'u' WHERE k % 50 = 0");
    c.psql("postgres", "UPDATE elsewhere SET v = 'u' WHERE k % 20 = 0");
    c.psql(
        "postgres",
        "ALTER SYSTEM SET wal_compression = 'zstd'; SELECT pg_reload_conf()",
    );
    c.psql("postgres", "CHECKPOINT");
    c.psql("postgres", "UPDATE narrow SET v = 'z' WHERE k % 50 = 1");
    c.psql(
        "postgres",
        "ALTER SYSTEM SET wal_compression = 'lz4'; SELECT pg_reload_conf()",
    );
    c.psql("postgres", "CHECKPOINT");
    c.psql("postgres", "UPDATE wide SET k = k + 1 WHERE k % 30 = 0");
    c.psql(
        "postgres",
        "ALTER SYSTEM RESET wal_compression; SELECT pg_reload_conf()",
    );
    // Index builds log batches of page images: records of up to 32 pages.
    c.psql(
        "postgres",
        "CREATE INDEX ON wide (k); CREATE INDEX ON narrow (v); CREATE INDEX ON elsewhere (v)",
    );
    // Truncations: by VACUUM, of the visibility map alone, and TRUNCATE (a new relfilenode).
    c.psql(
        "postgres",
        "CREATE TABLE shrink AS SELECT g AS k FROM generate_series(1, 50000) g;
         DELETE FROM shrink WHERE k > 10000; VACUUM shrink; VACUUM narrow; VACUUM elsewhere",
    );
    c.psql("postgres", "SELECT pg_truncate_visibility_map('narrow')");
    c.psql(
        "postgres",
        "TRUNCATE wide; INSERT INTO scratch SELECT generate_series(1, 1000)",
    );
    // Relations dropped at commit, at abort, and by prepared transactions.
    c.psql("postgres", "DROP TABLE scratch");
    c.psql(
        "postgres",
        "BEGIN; CREATE TABLE rolled_back (k int PRIMARY KEY); ROLLBACK",
    );
    c.psql(
        "postgres",
        "BEGIN; CREATE TABLE prepared_created (k int); PREPARE TRANSACTION 'a'; ROLLBACK PREPARED 'a';
         BEGIN; DROP TABLE doomed; PREPARE TRANSACTION 'b'; COMMIT PREPARED 'b';
         BEGIN; CREATE TABLE t_sub (k int); SAVEPOINT s; DROP TABLE doomed2; RELEASE s; COMMIT",
    );
    // Databases: both creation strategies, a move between tablespaces, drops.
    c.psql("postgres", "CREATE DATABASE d_copy STRATEGY file_copy");
    c.psql("postgres", "CREATE DATABASE d_wal TABLESPACE ts");
    c.psql("postgres", "ALTER DATABASE d_copy SET TABLESPACE ts");
    c.psql(
        "d_wal",
        "CREATE TABLE t (k int); INSERT INTO t SELECT generate_series(1, 100)",
    );
    c.psql("postgres", "DROP DATABASE d_copy; DROP DATABASE d_wal");
    c.psql(
        "postgres",
        "INSERT INTO narrow SELECT g, md5(g::text) FROM generate_series(100001, 140000) g",
    );
}

/// What pg_waldump's description must mention for each relation-level change we decode.
fn check_changes_against_desc(lsn: Lsn, changes: &[RelChange], d: &Dumped) {
    let desc = &d.desc;
    let main = |rel: RelFileNode| relation_path(rel, ForkNumber::Main);
    for ch in changes {
        let expected = match ch {
            RelChange::Create { rel, fork } => format!("CREATE {}", relation_path(*rel, *fork)),
            RelChange::Truncate {
                rel,
                heap_blocks,
                main: m,
                vm,
                fsm,
            } => {
                let flags = *m as u8 | (*vm as u8) << 1 | (*fsm as u8) << 2;
                format!(
                    "TRUNCATE {} to {heap_blocks} blocks flags {flags}",
                    main(*rel)
                )
            }
            RelChange::DropRelation { rel } => format!(" {}", main(*rel)),
            RelChange::CreateDatabase { spc_node, db_node } => format!("{spc_node}/{db_node}"),
            RelChange::DropDatabase { db_node, spc_nodes } => spc_nodes
                .iter()
                .map(|s| format!(" {s}/{db_node}"))
                .collect(),
        };
        assert!(
            desc.contains(&expected),
            "record at {lsn}: {ch:?} not in pg_waldump's {desc:?}"
        );
    }
    // As many dropped relations as pg_waldump lists after "rels:".
    if let Some(rels) = desc.split("; rels:").nth(1) {
        let listed = rels.split(';').next().unwrap().split_whitespace().count();
        let dropped = changes
            .iter()
            .filter(|c| matches!(c, RelChange::DropRelation { .. }))
            .count();
        assert_eq!(listed, dropped, "record at {lsn}: {desc}");
    }
}

#[test]
fn decoder_matches_pg_waldump_on_real_segments() {
    let tablespace = PgDir::new("strata-waldump-ts-"); // dropped after the cluster
    let c = Cluster::init(
        "waldump",
        "wal_level = replica\nwal_keep_size = '2GB'\nmax_wal_size = '2GB'\n\
         max_prepared_transactions = 4\nautovacuum = off\n",
    );
    c.start();
    let first = segno(&c, "SELECT pg_walfile_name(pg_current_wal_lsn())");
    workload(&c, &tablespace);
    let last = segno(&c, "SELECT pg_walfile_name(pg_current_wal_insert_lsn())");
    c.psql("postgres", "SELECT pg_switch_wal()");
    c.psql("postgres", "CHECKPOINT");
    assert!(
        last >= first + 3,
        "the workload made only {} segments",
        last - first + 1
    );
    let seg_path = |s: u64| c.wal_dir().join(segment_file_name(1, s, SEG));
    let read = |s: u64| std::fs::read(seg_path(s)).unwrap();

    // Decode segments first..=last in one decoder, fed 8 kB at a time.
    let mut decoded: Vec<DecodedRecord> = Vec::new();
    let mut dec = WalDecoder::new(Lsn(first * SEG as u64), SEG);
    for s in first..=last {
        for chunk in read(s).chunks(8192) {
            dec.feed(chunk);
            while let Some(r) = dec.next_record().unwrap_or_else(|e| panic!("decode: {e}")) {
                decoded.push(r);
            }
        }
    }
    let expected_sysid = c.psql(
        "postgres",
        "SELECT system_identifier FROM pg_control_system()",
    );
    assert_eq!(
        dec.system_identifier().map(|s| s.to_string()),
        Some(expected_sysid)
    );
    assert_eq!(
        dec.position(),
        Lsn((last + 1) * SEG as u64),
        "decoded up to the switch"
    );
    let crossing_segment = decoded
        .iter()
        .filter(|r| r.lsn.segment_number(SEG) != (r.end_lsn.0 - 1) / SEG as u64)
        .count();
    let crossing_page = decoded
        .iter()
        .filter(|r| r.lsn.0 / 8192 != (r.end_lsn.0 - 1) / 8192)
        .count();
    let images = decoded
        .iter()
        .flat_map(|r| &r.blocks)
        .filter(|b| b.has_image)
        .count();
    assert!(
        crossing_segment >= 2,
        "only {crossing_segment} records crossed a segment boundary"
    );
    assert!(
        crossing_page >= 1000,
        "only {crossing_page} records crossed a page boundary"
    );
    assert!(images >= 1000, "only {images} full-page images");
    assert!(
        decoded.iter().any(|r| r.end_lsn.0 - r.lsn.0 > SEG as u64),
        "no record longer than a segment"
    );

    // Whole segments fed at once give exactly the same records.
    let mut again = WalDecoder::new(Lsn(first * SEG as u64), SEG);
    let mut n = 0;
    for s in first..=last {
        again.feed(&read(s));
        while let Some(r) = again.next_record().unwrap() {
            assert!(
                r == decoded[n],
                "record {n} at {} differs when fed whole segments",
                r.lsn
            );
            n += 1;
        }
    }
    assert_eq!(n, decoded.len());

    // Every record as pg_waldump sees it.
    let first_lsn = decoded[0].lsn;
    let last_lsn = decoded.last().unwrap().lsn;
    let out = waldump(&[
        "-p".into(),
        c.wal_dir().display().to_string(),
        "-s".into(),
        first_lsn.to_string(),
        "-e".into(),
        Lsn((last + 1) * SEG as u64).to_string(),
    ]);
    let mut dumped = parse_waldump(&out);
    dumped.retain(|l, _| *l >= first_lsn && *l <= last_lsn);
    assert!(
        dumped.len() > 10_000,
        "pg_waldump printed only {} records",
        dumped.len()
    );
    assert_eq!(dumped.len(), decoded.len(), "record counts differ");
    let mut kinds = BTreeMap::new();
    for r in &decoded {
        let d = dumped
            .get(&r.lsn)
            .unwrap_or_else(|| panic!("pg_waldump has no record at {}", r.lsn));
        assert_eq!(ours(r), d.rec, "record at {}", r.lsn);
        // Records within one page end right after their MAXALIGNed length (XLOG_SWITCH: at the
        // segment end).
        let switch = r.rmid == rmid::XLOG && r.info & 0xF0 == 0x40;
        if r.lsn.0 / 8192 == (r.end_lsn.0 - 1) / 8192 && !switch {
            assert_eq!(
                r.end_lsn.0 - r.lsn.0,
                (d.tot_len + 7) & !7,
                "end of {}",
                r.lsn
            );
        }
        let changes = relation_changes(r).unwrap_or_else(|e| panic!("{e}"));
        check_changes_against_desc(r.lsn, &changes, d);
        let mentions_rels = d.desc.contains("; rels:");
        let relational = r.rmid == rmid::SMGR || r.rmid == rmid::DBASE || mentions_rels;
        assert_eq!(
            !changes.is_empty(),
            relational,
            "record at {}: {}",
            r.lsn,
            d.desc
        );
        for ch in changes {
            let kind = match ch {
                RelChange::Create { fork, .. } => format!("create {}", fork.name()),
                RelChange::Truncate { main, .. } => format!("truncate main={main}"),
                RelChange::DropRelation { .. } => {
                    format!("drop ({})", d.desc.split(' ').next().unwrap())
                }
                RelChange::CreateDatabase { .. } => {
                    format!("create db ({})", d.desc.split(' ').next().unwrap())
                }
                RelChange::DropDatabase { spc_nodes, .. } => {
                    format!("drop db in {}", spc_nodes.len())
                }
            };
            *kinds.entry(kind).or_insert(0) += 1;
        }
    }
    let kinds: Vec<&str> = kinds.keys().map(|k| k.as_str()).collect();
    for kind in [
        "create main",
        "create init",
        "truncate main=true",
        "truncate main=false",
        "drop (COMMIT)",
        "drop (ABORT)",
        "drop (COMMIT_PREPARED)",
        "drop (ABORT_PREPARED)",
        "create db (CREATE_FILE_COPY)",
        "create db (CREATE_WAL_LOG)",
        "drop db in 1",
    ] {
        assert!(kinds.contains(&kind), "no {kind:?} among {kinds:?}");
    }

    // The images include compressed ones with a hole (whose header has the extra hole length).
    let details = waldump(&[
        "-b".into(),
        "-p".into(),
        c.wal_dir().display().to_string(),
        "-s".into(),
        first_lsn.to_string(),
        "-e".into(),
        Lsn((last + 1) * SEG as u64).to_string(),
    ]);
    for method in ["zstd", "lz4"] {
        let holed = details
            .lines()
            .filter(|l| l.contains(&format!("method: {method}")) && !l.contains("hole: offset: 0,"))
            .count();
        assert!(
            holed >= 10,
            "only {holed} {method}-compressed images with a hole"
        );
    }

    // Each segment on its own, as `pg_waldump SEGMENT` reads it: the records complete in it, from the
    // first that starts in it (skipping the rest of one begun before).
    let mut skipped = 0;
    for s in first..=last {
        let mut d = WalDecoder::new(Lsn(s * SEG as u64), SEG);
        d.feed(&read(s));
        let mut mine = Vec::new();
        while let Some(r) = d.next_record().unwrap() {
            mine.push((r.lsn, ours(&r)));
        }
        skipped += d.skipped_leading_contrecord() as usize;
        let theirs: Vec<(Lsn, Rec)> = parse_waldump(&waldump(&[seg_path(s).display().to_string()]))
            .into_iter()
            .map(|(l, d)| (l, d.rec))
            .collect();
        assert!(
            mine == theirs,
            "segment {s:X}: {} records decoded, pg_waldump {}",
            mine.len(),
            theirs.len()
        );
    }
    assert!(
        skipped >= 2,
        "only {skipped} segments began inside a record"
    );
}
