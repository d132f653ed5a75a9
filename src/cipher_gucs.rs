//! The encryption settings of each repository N (1 to 4): `strata.repoN_cipher_type` (the cipher of a
//! stanza created from now on: none or aes-256-gcm), `strata.repoN_cipher_pass` (its passphrase) and
//! `strata.repoN_cipher_pass_file` (a file whose first line is the passphrase: changing the passphrase
//! then never puts it in a reload's log line). The passphrase is superuser-only, not in `SHOW ALL` nor
//! the sample file, and shown as `********` even to superusers (a show hook), so it leaves the server
//! only in messages that never hold it.
//!
//! The values are read back by name with the other repository settings (`repo_gucs::repos`), so the
//! server and the CLI resolve them with the same code (`strata_core::config::repos::cipher_settings`).

use crate::repo_gucs::leak;
use pgrx::prelude::*;
use pgrx::{GucContext, GucFlags, GucRegistry, GucSetting, PostgresGucEnum};
use std::ffi::CString;
use strata_core::config::repos::MAX_REPOS;

#[derive(PostgresGucEnum, Clone, Copy, PartialEq, Eq, Debug)]
pub enum CipherTypeGuc {
    #[name = c"none"]
    None,
    #[name = c"aes-256-gcm"]
    Aes256Gcm,
}

type PassGuc = GucSetting<Option<CString>>;
const REPOS: usize = MAX_REPOS as usize;

static CIPHER_TYPE: [GucSetting<CipherTypeGuc>; REPOS] =
    [const { GucSetting::<CipherTypeGuc>::new(CipherTypeGuc::None) }; REPOS];
static CIPHER_PASS: [PassGuc; REPOS] = [const { PassGuc::new(None) }; REPOS];
static CIPHER_PASS_FILE: [PassGuc; REPOS] = [const { PassGuc::new(None) }; REPOS];

/// A show hook per repository (a hook takes no argument saying which setting it shows).
macro_rules! show_hidden {
    ($name:ident, $index:expr) => {
        #[pg_guard]
        unsafe extern "C-unwind" fn $name() -> *const std::ffi::c_char {
            hidden(&CIPHER_PASS[$index])
        }
    };
}
show_hidden!(show_pass_1, 0);
show_hidden!(show_pass_2, 1);
show_hidden!(show_pass_3, 2);
show_hidden!(show_pass_4, 3);
const SHOW_PASS: [pg_sys::GucShowHook; REPOS] = [
    Some(show_pass_1),
    Some(show_pass_2),
    Some(show_pass_3),
    Some(show_pass_4),
];

fn hidden(pass: &PassGuc) -> *const std::ffi::c_char {
    if pass.get().is_some_and(|c| !c.as_bytes().is_empty()) {
        c"********".as_ptr()
    } else {
        c"".as_ptr()
    }
}

pub fn register() {
    for i in 0..REPOS {
        let n = i + 1;
        GucRegistry::define_enum_guc(
            leak(format!("strata.repo{n}_cipher_type")),
            c"Cipher of a stanza created from now on in this repository: none or aes-256-gcm.",
            c"Chosen when the stanza is created (its first archived WAL file); it cannot be turned on later.",
            &CIPHER_TYPE[i],
            GucContext::Sighup,
            GucFlags::SUPERUSER_ONLY,
        );
        // SAFETY: the show hook is a pg_guard'ed extern function returning a static string.
        unsafe {
            GucRegistry::define_string_guc_with_hooks(
                leak(format!("strata.repo{n}_cipher_pass")),
                c"Passphrase of this encrypted repository (superuser only, never shown).",
                c"",
                &CIPHER_PASS[i],
                GucContext::Sighup,
                GucFlags::SUPERUSER_ONLY | GucFlags::NO_SHOW_ALL,
                None,
                None,
                SHOW_PASS[i],
            );
        }
        GucRegistry::define_string_guc(
            leak(format!("strata.repo{n}_cipher_pass_file")),
            c"File whose first line is the passphrase of this encrypted repository.",
            c"Read by the server user; a relative path is relative to the data directory.",
            &CIPHER_PASS_FILE[i],
            GucContext::Sighup,
            GucFlags::SUPERUSER_ONLY,
        );
    }
}
