//! File ownership by name: a backup records who owns the data directory, and a restore run as root
//! gives every restored file to that user and group (PostgreSQL refuses a data directory it does not
//! own), as pgBackRest does. Names, not numbers, because the restore may run on another machine.

use crate::manifest::Owner;
use std::ffi::{CStr, CString};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// The user and group names owning `path`, when they have names.
pub fn owner_of(path: &Path) -> Option<Owner> {
    let meta = std::fs::metadata(path).ok()?;
    Some(Owner {
        user: user_name(meta.uid())?,
        group: group_name(meta.gid())?,
    })
}

fn user_name(uid: u32) -> Option<String> {
    // SAFETY: getpwuid returns a pointer to static storage or null; we copy the name out at once.
    unsafe {
        let pw = libc::getpwuid(uid);
        (!pw.is_null()).then(|| CStr::from_ptr((*pw).pw_name).to_string_lossy().into_owned())
    }
}

fn group_name(gid: u32) -> Option<String> {
    // SAFETY: as for getpwuid.
    unsafe {
        let gr = libc::getgrgid(gid);
        (!gr.is_null()).then(|| CStr::from_ptr((*gr).gr_name).to_string_lossy().into_owned())
    }
}

/// Numeric ids of an owner on this machine, if both names exist here.
pub fn resolve(owner: &Owner) -> Option<(u32, u32)> {
    let user = CString::new(owner.user.as_str()).ok()?;
    let group = CString::new(owner.group.as_str()).ok()?;
    // SAFETY: as for getpwuid; the C strings outlive the calls.
    unsafe {
        let pw = libc::getpwnam(user.as_ptr());
        let gr = libc::getgrnam(group.as_ptr());
        (!pw.is_null() && !gr.is_null()).then(|| ((*pw).pw_uid, (*gr).gr_gid))
    }
}
