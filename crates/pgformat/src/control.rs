//! `global/pg_control`: only what pg_strata needs of it. The file starts with the cluster's system
//! identifier (`ControlFileData.system_identifier`, a uint64 in the server's byte order; little-endian
//! on every platform pg_strata supports).

/// The system identifier recorded in a pg_control file's bytes; None when the file is too short.
pub fn system_identifier(control: &[u8]) -> Option<u64> {
    let bytes: [u8; 8] = control.get(..8)?.try_into().ok()?;
    Some(u64::from_le_bytes(bytes))
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_the_leading_system_identifier() {
        let mut control = 7_300_000_000_000_000_001u64.to_le_bytes().to_vec();
        control.extend_from_slice(&[0; 8184]);
        assert_eq!(
            super::system_identifier(&control),
            Some(7_300_000_000_000_000_001)
        );
        assert_eq!(super::system_identifier(&[1, 2, 3]), None);
    }
}
