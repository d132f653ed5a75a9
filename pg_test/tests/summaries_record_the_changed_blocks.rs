//! Block-change summaries written while archiving, after known workloads on a real server: the blocks
//! and limits recorded for the user relations are exactly the expected ones.
//! (System catalogs are not asserted: the server changes them on its own.)

use pg_test::Archiving;
use pgformat::lsn::{WalFileName, DEFAULT_WAL_SEGMENT_SIZE as SEG};
use pgformat::relfile::{ForkNumber, RelFileNode};
use std::collections::BTreeSet;
use strata_core::summary::{DbEvent, ForkKey, Summary};

/// User relations have relfilenodes at or above FirstNormalObjectId.
const FIRST_NORMAL_OID: u32 = 16384;

struct Lab {
    a: Archiving,
    db: u32,
}

impl Lab {
    fn new() -> Lab {
        // No data checksums: hint-bit full-page images would add catalog noise, nothing else changes.
        let a = Archiving::new_with("summaries", "autovacuum = off\n", &[]);
        let db = a
            .cluster
            .psql(
                "postgres",
                "SELECT oid FROM pg_database WHERE datname = 'postgres'",
            )
            .parse()
            .unwrap();
        Lab { a, db }
    }

    fn filenode(&self, rel: &str) -> u32 {
        self.a
            .cluster
            .psql("postgres", &format!("SELECT pg_relation_filenode('{rel}')"))
            .parse()
            .unwrap()
    }

    fn key(&self, rel: u32, fork: u8) -> ForkKey {
        ForkKey::new(
            RelFileNode::new(1663, self.db, rel),
            ForkNumber::from_u8(fork).unwrap(),
        )
    }

    /// Runs `sql` in WAL segments of its own and returns the union of their summaries.
    fn summarize(&self, sql: &str) -> Summary {
        let before = self.a.switch_wal();
        self.a.wait_archived(&before);
        self.a.cluster.psql("postgres", sql);
        let last = self.a.switch_wal();
        self.a.wait_archived(&last);
        let segno = |name: &str| match WalFileName::parse(name, SEG) {
            Some(WalFileName::Segment { segno, .. }) => segno,
            _ => panic!("{name}"),
        };
        let mut total: Option<Summary> = None;
        for s in segno(&before) + 1..=segno(&last) {
            let start = s * SEG as u64;
            let key = format!(
                "main/summary/00000001/{:016X}-{:016X}.blkref",
                start,
                start + SEG as u64
            );
            let bytes = std::fs::read(self.a.repo.path().join(&key))
                .unwrap_or_else(|e| panic!("{key}: {e}"));
            let summary = Summary::decode(&key, &bytes).unwrap();
            assert_eq!(summary.missing, None, "{key}");
            match &mut total {
                None => total = Some(summary),
                Some(t) => t.absorb(&summary),
            }
        }
        total.expect("at least one segment")
    }
}

fn user_forks(s: &Summary) -> Vec<(ForkKey, Option<u32>, Vec<u32>)> {
    s.forks
        .iter()
        .filter(|(k, _)| k.rel.rel_node >= FIRST_NORMAL_OID)
        .map(|(k, f)| (*k, f.limit, f.blocks.iter().copied().collect()))
        .collect()
}

#[test]
fn summaries_hold_exactly_the_expected_blocks_and_limits() {
    let lab = Lab::new();
    let c = &lab.a.cluster;
    c.psql(
        "postgres",
        "CREATE TABLE u (k int, v int) WITH (fillfactor = 50);
         INSERT INTO u SELECT g, 0 FROM generate_series(1, 20000) g;
         CREATE TABLE shrink (k int, pad text);
         INSERT INTO shrink SELECT g, repeat('x', 200) FROM generate_series(1, 6000) g;
         CREATE TABLE victim (k int); INSERT INTO victim SELECT generate_series(1, 1000);
         CREATE TABLE gone (k int); INSERT INTO gone SELECT generate_series(1, 1000);
         VACUUM (FREEZE) u; VACUUM (FREEZE) shrink; CHECKPOINT;",
    );

    // 1. One UPDATE of one known row (a HOT update: fillfactor leaves room on its page): exactly its heap
    //    page, and the visibility map page that covers it.
    let u = lab.filenode("u");
    let page: u32 = c
        .psql(
            "postgres",
            "SELECT (ctid::text::point)[0]::int FROM u WHERE k = 5000",
        )
        .parse()
        .unwrap();
    let s = lab.summarize("UPDATE u SET v = v + 1 WHERE k = 5000");
    let after: u32 = c
        .psql(
            "postgres",
            "SELECT (ctid::text::point)[0]::int FROM u WHERE k = 5000",
        )
        .parse()
        .unwrap();
    assert_eq!(after, page, "the update was expected to be HOT");
    assert_eq!(
        user_forks(&s),
        vec![
            (lab.key(u, 0), None, vec![page]),
            (lab.key(u, 2), None, vec![0])
        ],
        "summary: {s:?}"
    );
    assert!(s.db_events.is_empty());

    // 2. VACUUM that truncates: rows of the second half deleted, the table cut to the first half. Pages
    //    below the cut were all-visible and untouched; the VM is cut to floor(blocks / 32672) = 0.
    let shrink = lab.filenode("shrink");
    let pages: u32 = c
        .psql("postgres", "SELECT pg_relation_size('shrink') / 8192")
        .parse()
        .unwrap();
    let cut = pages / 2;
    let s = lab.summarize(&format!(
        "DELETE FROM shrink WHERE ctid >= '({cut},0)'::tid; VACUUM shrink;"
    ));
    let now: u32 = c
        .psql("postgres", "SELECT pg_relation_size('shrink') / 8192")
        .parse()
        .unwrap();
    assert_eq!(
        now, cut,
        "VACUUM should have truncated the table to {cut} pages"
    );
    assert_eq!(
        user_forks(&s),
        vec![
            (lab.key(shrink, 0), Some(cut), vec![]),
            (lab.key(shrink, 2), Some(0), vec![])
        ],
        "summary: {s:?}"
    );

    // 3. TRUNCATE: a new relfilenode is created empty, the old one dropped at commit.
    let old = lab.filenode("victim");
    let s = lab.summarize("TRUNCATE victim");
    let new = lab.filenode("victim");
    assert_ne!(old, new);
    let forks = user_forks(&s);
    assert!(
        forks.contains(&(lab.key(new, 0), Some(0), vec![])),
        "{forks:?}"
    );
    for fork in [0, 2, 3] {
        assert!(
            forks.contains(&(lab.key(old, fork), Some(0), vec![])),
            "fork {fork} of {old}: {forks:?}"
        );
    }
    let touched: BTreeSet<u32> = forks.iter().map(|(k, _, _)| k.rel.rel_node).collect();
    assert_eq!(
        touched,
        [old.min(new), old.max(new)].into_iter().collect(),
        "{forks:?}"
    );

    // 4. DROP TABLE: every tracked fork of the relation gets limit 0, no blocks.
    let gone = lab.filenode("gone");
    let s = lab.summarize("DROP TABLE gone");
    assert_eq!(
        user_forks(&s),
        vec![
            (lab.key(gone, 0), Some(0), vec![]),
            (lab.key(gone, 2), Some(0), vec![]),
            (lab.key(gone, 3), Some(0), vec![])
        ]
    );

    // 5. CREATE and DROP DATABASE.
    let s = lab.summarize("CREATE DATABASE scratch");
    let oid: u32 = c
        .psql(
            "postgres",
            "SELECT oid FROM pg_database WHERE datname = 'scratch'",
        )
        .parse()
        .unwrap();
    assert_eq!(s.db_events, vec![DbEvent::Created { spc: 1663, db: oid }]);
    let s = lab.summarize("DROP DATABASE scratch");
    assert_eq!(s.db_events, vec![DbEvent::Dropped { spc: 1663, db: oid }]);

    // Nothing went missing along the way.
    assert_eq!(lab.a.status("summaries_missing"), "0");
}
