//! Tests of `beneath`: links on the way to a file are never followed.

use super::*;

#[test]
fn links_on_the_way_are_never_followed() {
    let t = tempfile::tempdir().unwrap();
    let root_path = t.path().join("root");
    let outside = t.path().join("outside");
    std::fs::create_dir_all(root_path.join("base")).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("secret"), b"keep").unwrap();
    // A directory link and a file link placed by someone else.
    std::os::unix::fs::symlink(&outside, root_path.join("global")).unwrap();
    std::os::unix::fs::symlink(outside.join("secret"), root_path.join("base/PG_VERSION")).unwrap();
    let root = Root::open(&root_path).unwrap();

    // Reading through a link: refused.
    assert!(root.open_existing("global/secret").is_none());
    assert!(root.open_existing("base/PG_VERSION").is_none());
    assert!(root.dir("global", false).is_err());

    // Writing: the links are replaced, their targets untouched.
    use std::io::Write;
    root.create_file("base/PG_VERSION", 0o600)
        .unwrap()
        .write_all(b"15\n")
        .unwrap();
    root.create_file("global/pg_control", 0o600).unwrap();
    assert_eq!(std::fs::read(outside.join("secret")).unwrap(), b"keep");
    assert!(!outside.join("pg_control").exists());
    assert!(std::fs::symlink_metadata(root_path.join("global"))
        .unwrap()
        .is_dir());
    assert_eq!(
        std::fs::read(root_path.join("base/PG_VERSION")).unwrap(),
        b"15\n"
    );

    // A hard link to someone else's file is never kept as if it were ours.
    std::fs::hard_link(outside.join("secret"), root_path.join("base/1259")).unwrap();
    assert!(root.open_existing("base/1259").is_none());
    root.create_file("base/1259", 0o600).unwrap();
    assert_eq!(std::fs::read(outside.join("secret")).unwrap(), b"keep");

    // Removing and chowning do not go through links either.
    std::os::unix::fs::symlink(&outside, root_path.join("pg_stat")).unwrap();
    root.remove("pg_stat").unwrap();
    assert!(outside.join("secret").exists());
    std::os::unix::fs::symlink(&outside, root_path.join("pg_notify")).unwrap();
    // SAFETY: getuid/getgid have no preconditions.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    root.chown("pg_notify", uid, gid).unwrap();
    assert_eq!(
        root.read_link("pg_notify").as_deref(),
        Some(outside.as_path())
    );
    let mut names = root.list("").unwrap();
    names.sort();
    assert_eq!(names, vec!["base", "global", "pg_notify"]);

    // A resolved path is opened without following links; a link swapped in is refused.
    let real = std::fs::canonicalize(&root_path).unwrap();
    assert!(Root::open_resolved(&real, false).unwrap().is_some());
    assert!(Root::open_resolved(&real.join("pg_notify"), false).is_err());
    assert!(Root::open_resolved(&real.join("new/dir"), true)
        .unwrap()
        .is_some());
    let staged = root.create_child(".x.stage").unwrap();
    staged.create_file("f", 0o600).unwrap();
    root.rename_noreplace(".x.stage", "x").unwrap();
    assert!(
        root.rename_noreplace("base", "x").is_err(),
        "never replaces"
    );
}
