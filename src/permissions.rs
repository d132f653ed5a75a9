//! Who may use the extension: nothing is granted to PUBLIC. Every function and view the extension
//! creates — the ones that exist today and any added later — is revoked from PUBLIC and granted to the
//! `strata_operator` role, by one loop over the extension's members that runs last in the install
//! script. A loop rather than a list, so that a new function cannot be forgotten: `archive_status()`
//! once was (its `last_error` names the repository path, which only superusers may `SHOW`).

use pgrx::prelude::*;

extension_sql!(
    r#"
DO $$
DECLARE
    member record;
BEGIN
    FOR member IN
        SELECT d.classid, d.objid
        FROM pg_depend d
        WHERE d.refclassid = 'pg_extension'::regclass
          AND d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'pg_strata')
          AND d.deptype = 'e'
    LOOP
        IF member.classid = 'pg_proc'::regclass THEN
            EXECUTE format('REVOKE ALL ON FUNCTION %s FROM PUBLIC', member.objid::regprocedure);
            EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO strata_operator', member.objid::regprocedure);
        ELSIF member.classid = 'pg_class'::regclass
              AND (SELECT relkind FROM pg_class WHERE oid = member.objid) IN ('r', 'v', 'm', 'p', 'f') THEN
            EXECUTE format('REVOKE ALL ON %s FROM PUBLIC', member.objid::regclass);
            EXECUTE format('GRANT SELECT ON %s TO strata_operator', member.objid::regclass);
        END IF;
    END LOOP;
END
$$;
"#,
    name = "operator_privileges",
    finalize,
);
