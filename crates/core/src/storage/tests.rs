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
