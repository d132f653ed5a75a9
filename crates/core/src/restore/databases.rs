//! Restoring some databases only (`--db-include`, `--db-exclude`), as pgBackRest does: every other user
//! database's relation files are written as sparse files of their recorded length (all zeros, no disk
//! blocks), so that recovery can replay WAL into them; the operator drops those databases afterwards.
//! Their other files (`PG_VERSION`, `pg_filenode.map`) and the system databases (`template0`,
//! `template1`, `postgres`) and the global catalog are always restored. Names are resolved with the
//! databases the backup recorded (`pg_database` when it started); a database created during the backup
//! is not recorded and is restored whole.

use crate::manifest::Manifest;
use crate::{Error, Result};
use pgformat::relfile::parse_relation_path;
use std::collections::BTreeSet;

/// Always restored, whatever is included or excluded.
const SYSTEM: [&str; 3] = ["template0", "template1", "postgres"];

/// The OIDs of the databases whose relation files are written as zeros.
pub fn zeroed(m: &Manifest, include: &[String], exclude: &[String]) -> Result<BTreeSet<u32>> {
    if include.is_empty() && exclude.is_empty() {
        return Ok(BTreeSet::new());
    }
    if !include.is_empty() && !exclude.is_empty() {
        return Err(Error::BadInput(
            "--db-include and --db-exclude: use one or the other".into(),
        ));
    }
    if m.databases.is_empty() {
        return Err(Error::Unsupported(format!(
            "backup {} did not record its databases (it was taken by an older pg_strata): restore \
             the whole cluster, or take a new backup",
            m.label
        )));
    }
    let known: Vec<&str> = m.databases.iter().map(|d| d.name.as_str()).collect();
    for name in include.iter().chain(exclude) {
        if !known.contains(&name.as_str()) {
            return Err(Error::BadInput(format!(
                "database '{name}' is not in backup {} (it has: {})",
                m.label,
                known.join(", ")
            )));
        }
    }
    if let Some(system) = exclude.iter().find(|n| SYSTEM.contains(&n.as_str())) {
        return Err(Error::BadInput(format!(
            "--db-exclude {system}: the system databases (template0, template1, postgres) are always \
             restored"
        )));
    }
    let zeroed = m
        .databases
        .iter()
        .filter(|d| !SYSTEM.contains(&d.name.as_str()))
        .filter(|d| {
            if include.is_empty() {
                exclude.contains(&d.name)
            } else {
                !include.contains(&d.name)
            }
        })
        .map(|d| d.oid)
        .collect();
    Ok(zeroed)
}

/// Whether the file at `path` (relative to the data directory) is a relation file of a database in
/// `zeroed`.
pub fn is_zeroed(zeroed: &BTreeSet<u32>, path: &str) -> bool {
    !zeroed.is_empty()
        && parse_relation_path(path).is_some_and(|(rel, _, _)| zeroed.contains(&rel.db_node))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::tests::sample;
    use crate::manifest::Database;

    fn manifest() -> Manifest {
        let mut m = sample();
        m.databases = [
            (1, "template1"),
            (4, "template0"),
            (5, "postgres"),
            (16384, "app"),
            (16385, "crm"),
        ]
        .into_iter()
        .map(|(oid, name)| Database {
            oid,
            name: name.into(),
        })
        .collect();
        m
    }

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn include_and_exclude_choose_the_user_databases_to_zero() {
        let m = manifest();
        assert_eq!(
            zeroed(&m, &s(&["app"]), &[]).unwrap(),
            BTreeSet::from([16385])
        );
        assert_eq!(
            zeroed(&m, &[], &s(&["app"])).unwrap(),
            BTreeSet::from([16384])
        );
        // Including a system database changes nothing for the others.
        assert_eq!(
            zeroed(&m, &s(&["postgres"]), &[]).unwrap(),
            BTreeSet::from([16384, 16385])
        );
        assert!(zeroed(&m, &[], &[]).unwrap().is_empty());
        let z = zeroed(&m, &s(&["app"]), &[]).unwrap();
        assert!(is_zeroed(&z, "base/16385/2619"));
        assert!(is_zeroed(&z, "base/16385/2619_fsm"));
        assert!(is_zeroed(
            &z,
            "pg_tblspc/16400/PG_15_202209061/16385/16401.1"
        ));
        assert!(!is_zeroed(&z, "base/16385/PG_VERSION"));
        assert!(!is_zeroed(&z, "base/16385/pg_filenode.map"));
        assert!(!is_zeroed(&z, "base/16384/2619"));
        assert!(!is_zeroed(&z, "global/1262"));
    }

    #[test]
    fn bad_names_are_refused_listing_the_databases() {
        let m = manifest();
        let e = zeroed(&m, &s(&["nope"]), &[]).unwrap_err().to_string();
        assert!(e.contains("'nope'") && e.contains("app, crm"), "{e}");
        let e = zeroed(&m, &[], &s(&["template1"])).unwrap_err().to_string();
        assert!(e.contains("always"), "{e}");
        let e = zeroed(&m, &s(&["app"]), &s(&["crm"]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("one or the other"), "{e}");
        let mut old = manifest();
        old.databases.clear();
        let e = zeroed(&old, &s(&["app"]), &[]).unwrap_err().to_string();
        assert!(e.contains("did not record"), "{e}");
    }
}
