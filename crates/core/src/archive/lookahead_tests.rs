use super::*;
use crate::archive::MultiPusher;
use crate::repo::Repo;

const SEG: u32 = 16 << 20;

fn facts() -> ServerFacts {
    ServerFacts {
        system_identifier: 42,
        pg_version: 15,
        wal_segment_size: SEG,
    }
}

/// Two local repositories (lz4) and a pg_wal with segments 1..=4 of timeline 1, each filled with its
/// own byte; `.ready` files for the segments in `ready`.
struct Setup {
    _dirs: Vec<tempfile::TempDir>,
    set: RepoSet,
    wal: PathBuf,
}

fn name(segno: u64) -> String {
    segment_file_name(1, segno, SEG)
}

fn setup(ready: &[u64]) -> Setup {
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let settings = [
        (
            "strata.repo1",
            format!("file://{}", dirs[0].path().display()),
        ),
        (
            "strata.repo2",
            format!("file://{}", dirs[1].path().display()),
        ),
        ("strata.compress_type", "lz4".to_string()),
    ];
    let get = |n: &str| {
        settings
            .iter()
            .find(|(k, _)| *k == n)
            .map(|(_, v)| v.clone())
    };
    let set = RepoSet::from_settings(&get).unwrap();
    let wal = dirs[2].path().to_path_buf();
    std::fs::create_dir(wal.join("archive_status")).unwrap();
    for segno in 1..=4u64 {
        std::fs::write(wal.join(name(segno)), vec![segno as u8; SEG as usize]).unwrap();
    }
    for segno in ready {
        std::fs::write(ready_file(&wal, &name(*segno)), "").unwrap();
    }
    Setup {
        _dirs: dirs,
        set,
        wal,
    }
}

fn stored(set: &RepoSet, segno: u64) -> Vec<Option<Vec<u8>>> {
    set.repos()
        .iter()
        .map(|c| {
            Repo::open_config(c)
                .unwrap()
                .fetch_wal(&name(segno), SEG)
                .unwrap()
                .map(|(_, bytes)| bytes)
        })
        .collect()
}

#[test]
fn the_segments_waiting_after_the_one_asked_for_are_stored_ahead_in_every_repository() {
    let s = setup(&[1, 2, 3, 4]);
    // The archiver's first call makes the stanzas (workers never create one; on a new stanza they
    // fail until it exists, and the calls do their work).
    MultiPusher::new(&s.set, facts())
        .push(&s.wal.join(name(1)), &name(1))
        .unwrap();
    let mut pusher = MultiPusher::new(&s.set, facts()).with_look_ahead(&s.set, 2);
    let first = pusher.push(&s.wal.join(name(1)), &name(1)).unwrap();
    assert!(first.reports.iter().all(|(_, r)| r.already_archived));
    // Asking for 1 handed 2 and 3 to the workers (two of them), not 4.
    let second = pusher.push(&s.wal.join(name(2)), &name(2)).unwrap();
    for (n, report) in &second.reports {
        assert!(report.stored_ahead, "repo{n}: {report:?}");
        assert!(!report.already_archived);
        assert!(report.stored_bytes > 0 && report.stored_bytes < SEG as u64);
    }
    // Segment 4 was handed out when 2 was asked for; asking for it finds it stored.
    pusher.push(&s.wal.join(name(3)), &name(3)).unwrap();
    let fourth = pusher.push(&s.wal.join(name(4)), &name(4)).unwrap();
    assert!(fourth.reports.iter().all(|(_, r)| r.stored_ahead));
    for segno in 1..=4 {
        for copy in stored(&s.set, segno) {
            assert_eq!(copy.as_deref(), Some(&vec![segno as u8; SEG as usize][..]));
        }
    }
}

#[test]
fn nothing_is_stored_ahead_without_its_ready_file_and_a_changed_file_is_refused() {
    // Segment 3 is not waiting: neither it nor 4 after it is stored ahead.
    let s = setup(&[1, 2, 4]);
    // The archiver's own call makes the stanzas (workers never create one).
    MultiPusher::new(&s.set, facts())
        .push(&s.wal.join(name(1)), &name(1))
        .unwrap();
    let mut ahead = LookAhead::new(&s.set, facts(), 3);
    assert!(ahead.asked_for(&name(1), &s.wal.join(name(1))).is_none());
    // Workers write segment 2 only once segment 1 is known stored.
    ahead.reported(&name(1), true);
    let outcome = ahead.asked_for(&name(2), &s.wal.join(name(2))).unwrap();
    let done = outcome.unwrap();
    assert_eq!(done.stored.len(), 2, "stored in both repositories");
    assert!(stored(&s.set, 3).iter().all(Option::is_none));
    assert!(stored(&s.set, 4).iter().all(Option::is_none));
    // The worker hands over what it read and stored, and its digest, while the file is the one read.
    let path2 = s.wal.join(name(2));
    let read = done
        .read_bytes(&path2)
        .expect("the file is the one the worker read");
    assert_eq!(read.data, &vec![2u8; SEG as usize][..]);
    assert_eq!(read.digest, crate::object::digest(read.data));
    // Another file renamed over the name (a recycled segment) is not the one read.
    let other = s.wal.join("other");
    std::fs::write(&other, vec![2u8; SEG as usize]).unwrap();
    std::fs::rename(&other, &path2).unwrap();
    assert!(done.read_bytes(&path2).is_none(), "a replaced file");
    // Nor is a file grown or shrunk since.
    std::fs::write(ready_file(&s.wal, &name(3)), "").unwrap();
    ahead.reported(&name(2), true);
    // Asked for again (a retry), 2 hands out 3 now that it waits.
    assert!(ahead.asked_for(&name(2), &path2).is_none());
    let path3 = s.wal.join(name(3));
    let done_again = ahead.asked_for(&name(3), &path3).unwrap().unwrap();
    assert!(done_again.read_bytes(&path3).is_some());
    std::fs::OpenOptions::new()
        .append(true)
        .open(&path3)
        .and_then(|mut f| std::io::Write::write_all(&mut f, b"x"))
        .unwrap();
    assert!(done_again.read_bytes(&path3).is_none(), "a file written to");
    std::fs::write(&path3, vec![3u8; SEG as usize]).unwrap();

    // The file asked for holds other bytes than were stored ahead (a real segment never changes): the
    // call hashes what it reads, and refuses (never overwrites).
    std::fs::write(s.wal.join(name(2)), vec![9u8; SEG as usize]).unwrap();
    let mut pusher = ArchivePusher::new(s.set.repos()[0].clone(), facts()).unwrap();
    let e = pusher
        .push_hinted(&s.wal.join(name(2)), &name(2), Some(1), None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("different content"), "{e}");
    assert_eq!(
        stored(&s.set, 2)[0].as_deref(),
        Some(&vec![2u8; SEG as usize][..])
    );
}

#[test]
fn a_segment_no_longer_waiting_or_replaced_is_not_read_ahead() {
    let s = setup(&[2]);
    let mut buf = Vec::new();
    read_waiting_segment(&s.wal.join(name(2)), &name(2), &mut buf).unwrap();
    assert_eq!(buf.len(), SEG as usize);
    let e = read_waiting_segment(&s.wal.join(name(3)), &name(3), &mut buf).unwrap_err();
    assert!(e.to_string().contains("no longer waiting"), "{e}");
    // A segment that was not waiting when the one before it was asked for is stored by its own call.
    let mut pusher = MultiPusher::new(&s.set, facts()).with_look_ahead(&s.set, 1);
    std::fs::remove_file(ready_file(&s.wal, &name(2))).unwrap();
    pusher.push(&s.wal.join(name(1)), &name(1)).unwrap();
    std::fs::write(ready_file(&s.wal, &name(2)), "").unwrap();
    let report = pusher.push(&s.wal.join(name(2)), &name(2)).unwrap();
    assert!(report.reports.iter().all(|(_, r)| !r.stored_ahead));
    assert!(stored(&s.set, 2).iter().all(Option::is_some));
}

#[test]
fn nothing_is_written_past_a_segment_that_failed() {
    let s = setup(&[1, 2, 3, 4]);
    MultiPusher::new(&s.set, facts())
        .push(&s.wal.join(name(1)), &name(1))
        .unwrap();
    let mut ahead = LookAhead::new(&s.set, facts(), 3);
    assert!(ahead.asked_for(&name(1), &s.wal.join(name(1))).is_none());
    // Segment 1 was refused (say another cluster's object holds its name): 2, 3 and 4 are read and
    // compressed, but none is written.
    ahead.reported(&name(1), false);
    for segno in 2..=4 {
        let outcome = ahead.asked_for(&name(segno), &s.wal.join(name(segno)));
        let e = outcome.unwrap().unwrap_err();
        assert!(e.contains("nothing is stored past it"), "{e}");
        assert!(stored(&s.set, segno).iter().all(Option::is_none));
    }
}

#[test]
fn dropping_the_look_ahead_abandons_what_waits() {
    let s = setup(&[1, 2, 3]);
    MultiPusher::new(&s.set, facts())
        .push(&s.wal.join(name(1)), &name(1))
        .unwrap();
    let mut ahead = LookAhead::new(&s.set, facts(), 2);
    ahead.asked_for(&name(1), &s.wal.join(name(1)));
    // Segment 1 is never reported: the workers wait at the gate, and dropping lets them go without
    // writing anything (a shutdown or new settings never wait on a repository).
    drop(ahead);
    for segno in 2..=3 {
        assert!(stored(&s.set, segno).iter().all(Option::is_none));
    }
}

#[test]
fn workers_are_capped_by_memory_but_the_setting_is_what_is_compared() {
    let s = setup(&[]);
    let with_segments = |size: u32| ServerFacts {
        wal_segment_size: size,
        ..facts()
    };
    // Within 1 GB: the call's segment, and per worker a segment read, its stored form and a finished
    // one waiting for its call.
    let ahead = LookAhead::new(&s.set, with_segments(16 << 20), 32);
    assert_eq!((ahead.workers, ahead.requested()), (21, 32));
    drop(ahead);
    let ahead = LookAhead::new(&s.set, with_segments(256 << 20), 4);
    assert_eq!((ahead.workers, ahead.requested()), (1, 4));
    drop(ahead);
    // 1 GB segments: none fits (no look-ahead); the pusher still counts as made for 4, so the
    // archiver does not rebuild it (and retry starting threads) on every call.
    let big = with_segments(1 << 30);
    let ahead = LookAhead::new(&s.set, big, 4);
    assert_eq!((ahead.workers, ahead.requested()), (0, 4));
    let pusher = MultiPusher::new(&s.set, big).with_look_ahead(&s.set, 4);
    assert_eq!(pusher.look_ahead_workers(), 4);
}

#[test]
fn finished_jobs_of_a_timeline_left_give_their_bytes_back_and_are_checked_again() {
    let s = setup(&[1, 2, 3, 4]);
    let mut pusher = MultiPusher::new(&s.set, facts());
    pusher.push(&s.wal.join(name(1)), &name(1)).unwrap();
    let mut ahead = LookAhead::new(&s.set, facts(), 2);
    assert!(ahead.asked_for(&name(1), &s.wal.join(name(1))).is_none());
    ahead.reported(&name(1), true);
    // Segments 2 and 3 are stored ahead (the workers finish them).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while stored(&s.set, 3).iter().any(Option::is_none) {
        assert!(
            std::time::Instant::now() < deadline,
            "segment 3 never stored ahead"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // The server moves to timeline 2 (a promotion): timeline 1's finished jobs let their bytes go.
    let other = segment_file_name(2, 5, SEG);
    assert!(ahead.asked_for(&other, &s.wal.join(&other)).is_none());
    let two = ahead
        .asked_for(&name(2), &s.wal.join(name(2)))
        .expect("segment 2 was handed out")
        .unwrap();
    assert!(two.data.is_empty(), "{two:?} kept its bytes");
    assert!(
        two.read_bytes(&s.wal.join(name(2))).is_none(),
        "released bytes must not stand for the file"
    );
    // The call then reads the file again and finds it stored with the same bytes.
    let report = pusher.push(&s.wal.join(name(2)), &name(2)).unwrap();
    assert!(report.reports.iter().all(|(_, r)| r.already_archived));
}
