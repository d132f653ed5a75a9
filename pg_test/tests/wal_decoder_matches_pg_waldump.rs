//! The WAL decoder against PostgreSQL's own `pg_waldump`, on segments written by a real server: every
//! record's LSN, resource manager and block references (relation, fork, block, full-page image) must be
//! equal, with none missing — including records that cross page and segment boundaries.

use pg_test::{pg_bin, run_ok, Cluster};
use pgformat::lsn::{segment_file_name, Lsn, WalFileName, DEFAULT_WAL_SEGMENT_SIZE as SEG};
use pgformat::wal::{rmid, WalDecoder};
use std::collections::BTreeMap;
use std::process::Command;

#[derive(Debug, PartialEq, Eq, Clone)]
struct Rec {
    rmgr: String,
    blocks: Vec<(u8, String, String, u32, bool)>, // id, "spc/db/rel", fork, block, has image
}

/// Parses pg_waldump's default output into LSN -> record.
fn parse_waldump(text: &str) -> BTreeMap<Lsn, Rec> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("rmgr: ") else {
            continue;
        };
        let rmgr = rest.split_whitespace().next().unwrap().to_string();
        let lsn_at = line.find(", lsn: ").expect("lsn") + 7;
        let lsn: Lsn = line[lsn_at..]
            .split(',')
            .next()
            .unwrap()
            .parse()
            .expect("lsn value");
        let mut blocks = Vec::new();
        for part in line.split("blkref #").skip(1) {
            // "0: rel 1663/5/16384 fork vm blk 0 FPW, ..."
            let part = part.split(", ").next().unwrap();
            let (id, rest) = part.split_once(": rel ").expect("blkref");
            let words: Vec<&str> = rest.split_whitespace().collect();
            let rel = words[0].to_string();
            let (fork, blk_at) = if words[1] == "fork" {
                (words[2].to_string(), 4)
            } else {
                ("main".to_string(), 2)
            };
            assert_eq!(words[blk_at - 1], "blk", "{line}");
            let blk: u32 = words[blk_at].parse().unwrap();
            let fpw = words.get(blk_at + 1).is_some_and(|w| w.starts_with("FPW"));
            blocks.push((id.parse().unwrap(), rel, fork, blk, fpw));
        }
        out.insert(lsn, Rec { rmgr, blocks });
    }
    out
}

#[test]
fn decoder_matches_pg_waldump_on_real_segments() {
    let c = Cluster::init("waldump", "wal_level = replica\nwal_keep_size = '1GB'\n");
    c.start();
    let start_seg = c.psql("postgres", "SELECT pg_walfile_name(pg_current_wal_lsn())");
    c.psql(
        "postgres",
        "CREATE TABLE wide (k int, v text); ALTER TABLE wide ALTER v SET STORAGE plain;
         CREATE TABLE narrow (k int PRIMARY KEY, v text);
         CREATE UNLOGGED TABLE scratch (k int);",
    );
    // Rows of ~7 kB: single records that often cross a page boundary.
    c.psql(
        "postgres",
        "INSERT INTO wide SELECT g, repeat(md5(g::text), 220) FROM generate_series(1, 3000) g",
    );
    c.psql(
        "postgres",
        "INSERT INTO narrow SELECT g, md5(g::text) FROM generate_series(1, 200000) g",
    );
    c.psql("postgres", "CHECKPOINT");
    // After a checkpoint, the first touch of each page logs a full-page image.
    c.psql("postgres", "UPDATE narrow SET v = 'u' WHERE k % 50 = 0");
    // CREATE INDEX logs batches of page images: records of ~256 kB crossing many pages (and segments).
    c.psql(
        "postgres",
        "CREATE INDEX ON wide (k); CREATE INDEX ON narrow (v)",
    );
    c.psql(
        "postgres",
        "DELETE FROM narrow WHERE k > 150000; VACUUM narrow; TRUNCATE wide; DROP TABLE scratch",
    );
    c.psql("postgres", "CREATE DATABASE other; DROP DATABASE other");
    c.psql(
        "postgres",
        "INSERT INTO narrow SELECT g, md5(g::text) FROM generate_series(150001, 250000) g",
    );
    let last_seg = c.psql("postgres", "SELECT pg_walfile_name(pg_current_wal_lsn())");
    c.psql("postgres", "SELECT pg_switch_wal()");
    c.psql("postgres", "CHECKPOINT");

    let (WalFileName::Segment { segno: first, .. }, WalFileName::Segment { segno: last, .. }) = (
        WalFileName::parse(&start_seg, SEG).unwrap(),
        WalFileName::parse(&last_seg, SEG).unwrap(),
    ) else {
        panic!("segment names")
    };
    assert!(
        last >= first + 3,
        "workload made only {} segments",
        last - first + 1
    );

    // Decode all complete segments in one decoder, fed in 8 kB chunks for the first pass.
    let mut decoded = BTreeMap::new();
    let mut crossing_segment = 0;
    let mut crossing_page = 0;
    let mut images = 0;
    let mut dec = WalDecoder::new(Lsn(first * SEG as u64), SEG);
    let mut sysid = None;
    for segno in first..=last {
        let bytes = std::fs::read(c.wal_dir().join(segment_file_name(1, segno, SEG))).unwrap();
        for chunk in bytes.chunks(8192) {
            dec.feed(chunk);
            while let Some(r) = dec.next_record().unwrap_or_else(|e| panic!("decode: {e}")) {
                if r.lsn.0 / SEG as u64 != (r.end_lsn.0 - 1) / SEG as u64 {
                    crossing_segment += 1;
                }
                if r.lsn.0 / 8192 != (r.end_lsn.0 - 1) / 8192 {
                    crossing_page += 1;
                }
                images += r.blocks.iter().filter(|b| b.has_image).count();
                let rec = Rec {
                    rmgr: rmid::NAMES[r.rmid as usize].to_string(),
                    blocks: r
                        .blocks
                        .iter()
                        .map(|b| {
                            (
                                b.id,
                                format!("{}/{}/{}", b.rel.spc_node, b.rel.db_node, b.rel.rel_node),
                                b.fork.name().to_string(),
                                b.block,
                                b.has_image,
                            )
                        })
                        .collect(),
                };
                decoded.insert(r.lsn, (rec, r.end_lsn));
            }
        }
        sysid = sysid.or(dec.system_identifier());
    }
    let expected_sysid: u64 = c
        .psql(
            "postgres",
            "SELECT system_identifier FROM pg_control_system()",
        )
        .parse()
        .unwrap();
    assert_eq!(sysid, Some(expected_sysid));
    assert!(
        crossing_segment >= 1,
        "no record crossed a segment boundary"
    );
    assert!(
        crossing_page >= 100,
        "only {crossing_page} records crossed a page boundary"
    );
    assert!(images >= 100, "only {images} full-page images");

    // Whole segments at once give exactly the same records.
    let mut again = WalDecoder::new(Lsn(first * SEG as u64), SEG);
    let mut n = 0;
    for segno in first..=last {
        again.feed(&std::fs::read(c.wal_dir().join(segment_file_name(1, segno, SEG))).unwrap());
        while let Some(r) = again.next_record().unwrap() {
            assert_eq!(decoded[&r.lsn].1, r.end_lsn);
            n += 1;
        }
    }
    assert_eq!(n, decoded.len());

    let first_lsn = *decoded.keys().next().unwrap();
    let (last_lsn, (_, last_end)) = decoded
        .iter()
        .next_back()
        .map(|(k, v)| (*k, v.clone()))
        .unwrap();
    let out = run_ok(
        Command::new(pg_bin("pg_waldump"))
            .arg("-p")
            .arg(c.wal_dir())
            .arg("-s")
            .arg(first_lsn.to_string())
            .arg("-e")
            .arg(last_end.to_string()),
    );
    let waldump: BTreeMap<Lsn, Rec> = parse_waldump(&out)
        .into_iter()
        .filter(|(l, _)| *l >= first_lsn && *l <= last_lsn)
        .collect();
    assert!(
        waldump.len() > 10_000,
        "pg_waldump printed only {} records",
        waldump.len()
    );
    assert_eq!(waldump.len(), decoded.len(), "record counts differ");
    for (lsn, w) in &waldump {
        let (d, _) = decoded
            .get(lsn)
            .unwrap_or_else(|| panic!("record at {lsn} missing from the decoder"));
        assert_eq!(d, w, "record at {lsn}");
    }
}
