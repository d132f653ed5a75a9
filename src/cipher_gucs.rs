//! The encryption settings of repo1: `strata.repo1_cipher_type` (the cipher of a stanza created from
//! now on: none or aes-256-gcm) and `strata.repo1_cipher_pass` (its passphrase). The passphrase is
//! superuser-only, not in `SHOW ALL` nor the sample file, and shown as `********` even to superusers
//! (a show hook), so it leaves the server only in messages that never hold it.

use pgrx::prelude::*;
use pgrx::{GucContext, GucFlags, GucRegistry, GucSetting, PostgresGucEnum};
use std::ffi::CString;
use strata_core::crypto::{CipherSettings, CipherType, Passphrase};

#[derive(PostgresGucEnum, Clone, Copy, PartialEq, Eq, Debug)]
pub enum CipherTypeGuc {
    #[name = c"none"]
    None,
    #[name = c"aes-256-gcm"]
    Aes256Gcm,
}

pub static REPO1_CIPHER_TYPE: GucSetting<CipherTypeGuc> =
    GucSetting::<CipherTypeGuc>::new(CipherTypeGuc::None);
pub static REPO1_CIPHER_PASS: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(None);

pub fn register() {
    GucRegistry::define_enum_guc(
        c"strata.repo1_cipher_type",
        c"Cipher of a stanza created from now on: none or aes-256-gcm.",
        c"Chosen when the stanza is created (its first archived WAL file); it cannot be turned on later.",
        &REPO1_CIPHER_TYPE,
        GucContext::Sighup,
        GucFlags::SUPERUSER_ONLY,
    );
    // SAFETY: the show hook is a pg_guard'ed extern function returning a static string.
    unsafe {
        GucRegistry::define_string_guc_with_hooks(
            c"strata.repo1_cipher_pass",
            c"Passphrase of the encrypted repository (superuser only, never shown).",
            c"",
            &REPO1_CIPHER_PASS,
            GucContext::Sighup,
            GucFlags::SUPERUSER_ONLY | GucFlags::NO_SHOW_ALL,
            None,
            None,
            Some(show_hidden),
        );
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn show_hidden() -> *const std::ffi::c_char {
    let set = REPO1_CIPHER_PASS
        .get()
        .is_some_and(|c| !c.as_bytes().is_empty());
    if set {
        c"********".as_ptr()
    } else {
        c"".as_ptr()
    }
}

/// The encryption settings as the repository layer takes them.
pub fn settings() -> strata_core::Result<CipherSettings> {
    let kind = match REPO1_CIPHER_TYPE.get() {
        CipherTypeGuc::None => CipherType::None,
        CipherTypeGuc::Aes256Gcm => CipherType::Aes256Gcm,
    };
    let pass = match REPO1_CIPHER_PASS.get() {
        Some(c) if !c.as_bytes().is_empty() => Some(Passphrase::new(
            c.into_string().map_err(|_| {
                strata_core::Error::Cipher("strata.repo1_cipher_pass is not valid UTF-8".into())
            })?,
            "strata.repo1_cipher_pass",
        )?),
        _ => None,
    };
    Ok(CipherSettings {
        kind: Some(kind),
        pass,
    })
}
