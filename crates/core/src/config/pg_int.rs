//! Whole numbers as PostgreSQL reads an integer setting (`parse_int` in guc.c), so that a value the
//! server accepts in postgresql.conf is read the same by the `strata` command: `strtol` with base 0
//! (`0x1F` hex, a leading `0` octal), and, when a `.` or an exponent follows, a decimal number rounded
//! half to even (`1.5` is 2, `1e1` is 10); blanks around it; no unit (these settings have none).

/// The value, or `None` when PostgreSQL would refuse it (range checks are the caller's).
pub fn parse_pg_int(value: &str) -> Option<i64> {
    let s = value.trim_start().as_bytes();
    let (negative, digits_at) = match s.first() {
        Some(b'-') => (true, 1),
        Some(b'+') => (false, 1),
        _ => (false, 0),
    };
    let rest = &s[digits_at..];
    let (radix, from) = if (rest.starts_with(b"0x") || rest.starts_with(b"0X"))
        && rest.get(2).is_some_and(u8::is_ascii_hexdigit)
    {
        (16, 2)
    } else if rest.first() == Some(&b'0') {
        (8, 0)
    } else {
        (10, 0)
    };
    let len = rest[from..]
        .iter()
        .take_while(|&&b| char::from(b).is_digit(radix))
        .count();
    let end = digits_at + from + len;
    let number = if matches!(s.get(end), Some(b'.' | b'e' | b'E')) {
        let text = std::str::from_utf8(float_prefix(s)).ok()?;
        let f: f64 = text.parse().ok()?;
        if !f.is_finite() || f.abs() > i64::MAX as f64 {
            return None;
        }
        let rest = std::str::from_utf8(&s[text.len()..]).ok()?;
        return rest.trim().is_empty().then_some(f.round_ties_even() as i64);
    } else {
        if len == 0 {
            return None;
        }
        let text = std::str::from_utf8(&s[digits_at + from..end]).ok()?;
        let magnitude = i64::from_str_radix(text, radix).ok()?;
        if negative {
            -magnitude
        } else {
            magnitude
        }
    };
    std::str::from_utf8(&s[end..])
        .ok()?
        .trim()
        .is_empty()
        .then_some(number)
}

/// The longest prefix of `s` that `strtod` reads as a decimal number: `[+-]?digits*(.digits*)?`
/// then an exponent if complete.
fn float_prefix(s: &[u8]) -> &[u8] {
    let digits = |mut i: usize| {
        while s.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        i
    };
    let mut i = usize::from(matches!(s.first(), Some(b'+' | b'-')));
    i = digits(i);
    if s.get(i) == Some(&b'.') {
        i = digits(i + 1);
    }
    if matches!(s.get(i), Some(b'e' | b'E')) {
        let sign = usize::from(matches!(s.get(i + 1), Some(b'+' | b'-')));
        let end = digits(i + 1 + sign);
        if end > i + 1 + sign {
            i = end;
        }
    }
    &s[..i]
}

#[cfg(test)]
mod tests {
    use super::parse_pg_int;

    #[test]
    fn as_postgresql_reads_an_integer_setting() {
        for (text, want) in [
            ("3", Some(3)),
            (" 7 ", Some(7)),
            ("+4", Some(4)),
            ("-2", Some(-2)),
            ("0x3", Some(3)),
            ("0X1f", Some(31)),
            ("010", Some(8)),
            ("0", Some(0)),
            ("1.6", Some(2)),
            ("2.5", Some(2)),
            ("3.5", Some(4)),
            ("1e1", Some(10)),
            ("-1.5", Some(-2)),
            (".5", Some(0)),
            ("", None),
            ("abc", None),
            ("5 days", None),
            ("08", None),
            ("1e", None),
            ("0x", None),
        ] {
            assert_eq!(parse_pg_int(text), want, "{text:?}");
        }
    }
}
