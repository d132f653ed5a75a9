//! The storage conformance suite: `pub(super)` checks that take a fresh, empty store and run against
//! every backend (here on local directories; `s3_tests` runs them on a real S3 server).

use super::*;

pub(super) fn k(key: &str) -> RepoKey {
    RepoKey::from_listing(key.to_string()).unwrap()
}

fn local() -> (tempfile::TempDir, Storage) {
    let dir = tempfile::tempdir().unwrap();
    let s = Storage::open(&RepoUrl::Local(dir.path().to_path_buf())).unwrap();
    (dir, s)
}

#[test]
fn put_new_never_overwrites() {
    let (_d, s) = local();
    check_put_new_never_overwrites(&s);
}

pub(super) fn check_put_new_never_overwrites(s: &Storage) {
    assert_eq!(
        s.put_new(&k("st/a/b.bin"), b"one".to_vec()).unwrap(),
        PutOutcome::Written
    );
    assert_eq!(
        s.put_new(&k("st/a/b.bin"), b"two".to_vec()).unwrap(),
        PutOutcome::AlreadyExists
    );
    assert_eq!(s.get(&k("st/a/b.bin")).unwrap().unwrap().as_ref(), b"one");
    // The same bytes again: they are what is stored.
    assert_eq!(
        s.put_new(&k("st/a/b.bin"), b"one".to_vec()).unwrap(),
        PutOutcome::Written
    );
    assert_eq!(
        s.get_prefix(&k("st/a/b.bin"), 2).unwrap().unwrap().as_ref(),
        b"on"
    );
    assert!(s.exists(&k("st/a/b.bin")).unwrap());
    assert!(!s.exists(&k("st/a/c.bin")).unwrap());
    assert_eq!(s.get(&k("st/missing")).unwrap(), None);
}

#[test]
fn list_and_delete() {
    let (_d, s) = local();
    check_list_and_delete(&s);
}

pub(super) fn check_list_and_delete(s: &Storage) {
    s.put_new(&k("st/x/2"), vec![1, 2]).unwrap();
    s.put_new(&k("st/x/1"), vec![1]).unwrap();
    s.put_replace(&k("st/y"), vec![]).unwrap();
    s.put_replace(&k("st/y"), vec![9]).unwrap();
    assert_eq!(
        s.list(&k("st/x")).unwrap(),
        vec![(k("st/x/1"), 1), (k("st/x/2"), 2)]
    );
    assert_eq!(
        s.get_range(&k("st/x/2"), 1, 1).unwrap().unwrap().as_ref(),
        &[2]
    );
    assert!(s.get_range(&k("st/x/2"), 1, 5).is_err());
    assert_eq!(s.list_dirs(&k("st")).unwrap(), vec![k("st/x")]);
    s.put_new(&k("st/z/a/b"), vec![1]).unwrap();
    s.delete_prefix(&k("st/z")).unwrap();
    assert_eq!(s.list_dirs(&k("st")).unwrap(), vec![k("st/x")]);
    s.delete(&k("st/x/1")).unwrap();
    s.delete(&k("st/x/1")).unwrap();
    assert_eq!(s.list(&k("st")).unwrap().len(), 2);
    assert_eq!(s.get(&k("st/y")).unwrap().unwrap().as_ref(), &[9]);
}

#[test]
fn get_limited_reads_nothing_past_the_limit() {
    let (_d, s) = local();
    check_get_limited_reads_nothing_past_the_limit(&s);
}

pub(super) fn check_get_limited_reads_nothing_past_the_limit(s: &Storage) {
    s.put_new(&k("st/w"), vec![7u8; 100]).unwrap();
    assert_eq!(s.get_limited(&k("st/w"), 100).unwrap().unwrap().len(), 100);
    assert_eq!(s.get_limited(&k("st/w"), 1000).unwrap().unwrap().len(), 100);
    let e = s.get_limited(&k("st/w"), 99).unwrap_err();
    assert!(matches!(e, Error::CorruptObject { .. }), "{e}");
    assert_eq!(s.get_limited(&k("st/none"), 10).unwrap(), None);
    // An empty object is read as empty (callers report it as damaged), not as a storage error.
    s.put_new(&k("st/empty"), vec![]).unwrap();
    assert_eq!(s.get_limited(&k("st/empty"), 10).unwrap().unwrap().len(), 0);
    assert!(s.get_range(&k("st/empty"), 0, 4).is_err());
    let before = s.requests();
    s.get_limited(&k("st/w"), 100).unwrap();
    assert_eq!(s.requests() - before, 1);
}

#[test]
fn read_once_reads_whole_objects() {
    let (_d, s) = local();
    check_read_once_reads_whole_objects(&s);
}

/// `read_once` gives the whole object (of any size, aligned or not: locally it reads around the page
/// cache), `None` for a missing one, and refuses one larger than the limit, in one request.
pub(super) fn check_read_once_reads_whole_objects(s: &Storage) {
    for (i, len) in [0usize, 1, 4095, 4096, 4097, 3 << 20, (5 << 20) + 123]
        .into_iter()
        .enumerate()
    {
        let data: Vec<u8> = (0..len).map(|j| (j * 7 + i) as u8).collect();
        let key = k(&format!("st/r/{i}"));
        s.put_new(&key, data.clone()).unwrap();
        let before = s.requests();
        let got = s
            .read_once(&key, len as u64, |b| b.to_vec())
            .unwrap()
            .unwrap();
        // (An empty object, always damage, may take a second request on S3: a range past its end.)
        if len > 0 {
            assert_eq!(s.requests() - before, 1);
        }
        assert!(got == data, "{len} bytes came back different");
        if len > 0 {
            let e = s.read_once(&key, len as u64 - 1, |_| ()).unwrap_err();
            assert!(matches!(e, Error::CorruptObject { .. }), "{e}");
        }
    }
    assert_eq!(s.read_once(&k("st/r/none"), 10, |_| ()).unwrap(), None);
}

/// A link planted in a local repository is never followed.
#[test]
fn read_once_never_follows_a_link() {
    let (d, s) = local();
    let secret = d.path().join("outside");
    std::fs::write(&secret, b"not an object").unwrap();
    std::fs::create_dir_all(d.path().join("st")).unwrap();
    std::os::unix::fs::symlink(&secret, d.path().join("st/link")).unwrap();
    let e = s.read_once(&k("st/link"), 100, |b| b.to_vec()).unwrap_err();
    assert!(e.to_string().contains("st/link"), "{e}");
}

#[test]
fn missing_root_is_a_clear_error() {
    let e = Storage::open(&RepoUrl::Local("/nonexistent/strata-repo".into()))
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("/nonexistent/strata-repo") && e.contains("does not exist"),
        "{e}"
    );
}
