//! pg_strata's errors as PostgreSQL ERRORs: one place turns a `strata_core::Error` into an ERROR with
//! the SQLSTATE its class calls for (`Error::sqlstate`) and a HINT where the fix is known, so that
//! pg_cron's job history and client code can tell a corrupt repository (XX001) from a busy one (55006)
//! or a missing one (58P01). A backup's error crosses from its worker to the waiting `backup_start()`
//! as `Raised`, kept in shared memory.

use pgrx::pg_sys::errcodes::PgSqlErrorCode;
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::PgLogLevel;

/// An error ready to be raised: its SQLSTATE, message and hint.
#[derive(Clone, Debug)]
pub struct Raised {
    pub sqlstate: String,
    pub message: String,
    pub hint: Option<String>,
}

impl From<&strata_core::Error> for Raised {
    fn from(e: &strata_core::Error) -> Raised {
        Raised {
            sqlstate: e.sqlstate().to_string(),
            message: e.to_string(),
            hint: e.hint().map(str::to_string),
        }
    }
}

impl From<strata_core::Error> for Raised {
    fn from(e: strata_core::Error) -> Raised {
        Raised::from(&e)
    }
}

/// PostgreSQL's code of a five-character SQLSTATE (MAKE_SQLSTATE: six bits per character).
fn error_code(sqlstate: &str) -> PgSqlErrorCode {
    let b = sqlstate.as_bytes();
    if b.len() != 5 {
        return PgSqlErrorCode::ERRCODE_INTERNAL_ERROR;
    }
    let code = b.iter().enumerate().fold(0i32, |acc, (i, &c)| {
        acc | ((i32::from(c.wrapping_sub(b'0')) & 0x3F) << (6 * i))
    });
    PgSqlErrorCode::from(code)
}

/// The five characters of PostgreSQL's packed SQLSTATE code (the inverse of `error_code`).
pub fn sqlstate_text(code: PgSqlErrorCode) -> String {
    let packed = code as isize as i64;
    (0..5)
        .map(|i| (((packed >> (6 * i)) & 0x3F) as u8 + b'0') as char)
        .collect()
}

/// Raises `e` as an ERROR, its message prefixed by `context` ("cannot list backups").
pub fn raise(context: &str, e: impl Into<Raised>) -> ! {
    let r: Raised = e.into();
    let message = if context.is_empty() {
        r.message
    } else {
        format!("{context}: {}", r.message)
    };
    let mut report = ErrorReport::new(error_code(&r.sqlstate), message, "pg_strata");
    if let Some(hint) = r.hint {
        report = report.set_hint(hint);
    }
    report.report(PgLogLevel::ERROR);
    unreachable!("an ERROR does not return")
}

#[cfg(any(test, feature = "pg_test"))]
#[pgrx::pg_schema]
mod tests {
    use super::*;

    #[pgrx::pg_test]
    fn sqlstates_map_to_postgresql_codes() {
        assert_eq!(error_code("XX001"), PgSqlErrorCode::ERRCODE_DATA_CORRUPTED);
        assert_eq!(error_code("58P01"), PgSqlErrorCode::ERRCODE_UNDEFINED_FILE);
        assert_eq!(error_code("55006"), PgSqlErrorCode::ERRCODE_OBJECT_IN_USE);
        assert_eq!(
            error_code("22023"),
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE
        );
        assert_eq!(error_code("bad"), PgSqlErrorCode::ERRCODE_INTERNAL_ERROR);
        assert_eq!(
            sqlstate_text(PgSqlErrorCode::ERRCODE_DATA_CORRUPTED),
            "XX001"
        );
        assert_eq!(sqlstate_text(error_code("58P01")), "58P01");
    }
}
