//! Restore: rebuilding a data directory from a backup (being written).
