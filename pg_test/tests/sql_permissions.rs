//! Who may use the extension's SQL: every function and view of pg_strata is denied to a role without
//! `strata_operator` (nothing is granted to PUBLIC) and allowed to a role that has it. The lists come
//! from the catalog (the extension's members), so a function added later is covered too.

use pg_test::Archiving;

const MEMBERS: &str = "FROM pg_depend d \
     WHERE d.refclassid = 'pg_extension'::regclass AND d.deptype = 'e' \
       AND d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'pg_strata')";

fn lines(s: String) -> Vec<String> {
    s.lines().map(str::to_string).collect()
}

#[test]
fn every_function_and_view_is_denied_without_strata_operator_and_allowed_with_it() {
    let a = Archiving::new("perms", "");
    let c = &a.cluster;
    c.psql(
        "postgres",
        "CREATE ROLE plain LOGIN; CREATE ROLE op LOGIN; GRANT strata_operator TO op;",
    );
    let functions = lines(c.psql(
        "postgres",
        &format!(
            "SELECT d.objid::regprocedure {MEMBERS} AND d.classid = 'pg_proc'::regclass ORDER BY 1"
        ),
    ));
    let relations = lines(c.psql(
        "postgres",
        &format!(
            "SELECT d.objid::regclass {MEMBERS} AND d.classid = 'pg_class'::regclass ORDER BY 1"
        ),
    ));
    for expected in [
        "archive_status()",
        "backup_start(text,boolean,integer)",
        "backup_cancel()",
        "backup_progress()",
        "backup_list()",
        "strata_metrics()",
        "strata_metrics_text()",
    ] {
        assert!(
            functions.iter().any(|f| f == expected),
            "{expected} in {functions:?}"
        );
    }
    for expected in ["strata_backups", "strata_backup_progress"] {
        assert!(
            relations.iter().any(|v| v == expected),
            "{expected} in {relations:?}"
        );
    }

    // The catalog's answer for every member, both roles.
    for f in &functions {
        let q = |role: &str| {
            c.psql(
                "postgres",
                &format!("SELECT has_function_privilege('{role}', '{f}', 'EXECUTE')"),
            )
        };
        assert_eq!(q("plain"), "f", "{f} must not be executable by PUBLIC");
        assert_eq!(q("op"), "t", "{f} must be executable by strata_operator");
    }
    for v in &relations {
        let q = |role: &str| {
            c.psql(
                "postgres",
                &format!("SELECT has_table_privilege('{role}', '{v}', 'SELECT')"),
            )
        };
        assert_eq!(q("plain"), "f", "{v} must not be readable by PUBLIC");
        assert_eq!(q("op"), "t", "{v} must be readable by strata_operator");
    }

    // And for real: every call is refused to the plain role...
    let calls = [
        "SELECT count(*) FROM archive_status()",
        "SELECT count(*) FROM backup_list()",
        "SELECT count(*) FROM backup_progress()",
        "SELECT backup_cancel()",
        "SELECT count(*) FROM strata_backups",
        "SELECT count(*) FROM strata_backup_progress",
        "SELECT count(*) FROM strata_metrics()",
        "SELECT length(strata_metrics_text())",
        "SELECT backup_start('full')",
    ];
    for sql in calls {
        let e = c
            .try_psql("postgres", &format!("SET ROLE plain; {sql};"))
            .expect_err(sql);
        assert!(e.contains("permission denied"), "{sql}: {e}");
    }
    // ...and works for the operator (the backup last, so that the listings have something to show).
    for sql in calls {
        c.try_psql("postgres", &format!("SET ROLE op; {sql};"))
            .unwrap_or_else(|e| panic!("{sql} as strata_operator: {e}"));
    }
    assert_eq!(
        c.psql(
            "postgres",
            "SET ROLE op; SELECT count(*) FROM strata_backups;"
        ),
        "1"
    );
}
