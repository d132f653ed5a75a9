//! Whole numbers as PostgreSQL reads an integer setting (`parse_int` in guc.c), so that a value the
//! server accepts in postgresql.conf is read the same by the `strata` command: `strtol` with base 0
//! (`0x1F` hex, a leading `0` octal), and, when a `.` or an exponent follows, a decimal number rounded
//! half to even (`1.5` is 2, `1e1` is 10); C blanks around it; no unit (these settings have none).

/// C's `isspace` in the C locale (not Unicode's blanks).
fn c_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

/// The value, or `None` when PostgreSQL would refuse it (range checks are the caller's). Hex
/// fractions (`0x1.8`, which glibc's `strtod` reads) are refused here: not worth a parser.
pub fn parse_pg_int(value: &str) -> Option<i64> {
    let s = value.as_bytes();
    // strtol: blanks, a sign, then digits in base 16 (0x), 8 (a leading 0) or 10.
    let mut i = 0;
    while s.get(i).copied().is_some_and(c_space) {
        i += 1;
    }
    let negative = s.get(i) == Some(&b'-');
    if matches!(s.get(i), Some(b'+' | b'-')) {
        i += 1;
    }
    let hex = matches!(s.get(i..i + 2), Some(b"0x" | b"0X"))
        && s.get(i + 2).is_some_and(u8::is_ascii_hexdigit);
    let (radix, from) = match (hex, s.get(i)) {
        (true, _) => (16, i + 2),
        (false, Some(b'0')) => (8, i),
        _ => (10, i),
    };
    let len = s[from..]
        .iter()
        .take_while(|&&b| char::from(b).is_digit(radix))
        .count();
    // Where strtol stopped: after the digits, or at the very start when it converted none.
    let stop = if len == 0 { 0 } else { from + len };
    let (number, stop) = if matches!(s.get(stop), Some(b'.' | b'e' | b'E')) {
        // strtod from the start; PostgreSQL rounds half to even (rint).
        let text = float_prefix(s);
        let f: f64 = std::str::from_utf8(&s[..text])
            .ok()?
            .trim_start_matches(|c: char| c.is_ascii() && c_space(c as u8))
            .parse()
            .ok()?;
        let mantissa_nonzero = s[..text]
            .iter()
            .take_while(|b| !matches!(b, b'e' | b'E'))
            .any(|b| (b'1'..=b'9').contains(b));
        // ERANGE: too large, or a nonzero number too small for a normal double.
        if !f.is_finite()
            || f.abs() > i64::MAX as f64
            || (mantissa_nonzero && f.abs() < f64::MIN_POSITIVE)
        {
            return None;
        }
        (f.round_ties_even() as i64, text)
    } else {
        if len == 0 {
            return None;
        }
        let text = std::str::from_utf8(&s[from..stop]).ok()?;
        let magnitude = i64::from_str_radix(text, radix).ok()?;
        (if negative { -magnitude } else { magnitude }, stop)
    };
    // Blanks may follow; nothing else (these settings have no unit).
    s[stop..].iter().all(|&b| c_space(b)).then_some(number)
}

/// How much of `s` C's `strtod` reads as a decimal number: blanks, `[+-]?`, digits, `.` digits
/// (at least one digit in all), then an exponent if complete; 0 when it reads nothing.
fn float_prefix(s: &[u8]) -> usize {
    let digits = |mut i: usize| {
        while s.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        i
    };
    let mut i = 0;
    while s.get(i).copied().is_some_and(c_space) {
        i += 1;
    }
    if matches!(s.get(i), Some(b'+' | b'-')) {
        i += 1;
    }
    let whole = digits(i);
    let mut end = whole;
    if s.get(whole) == Some(&b'.') {
        end = digits(whole + 1);
    }
    if end == i || (end == i + 1 && s.get(i) == Some(&b'.')) {
        return 0;
    }
    if matches!(s.get(end), Some(b'e' | b'E')) {
        let sign = usize::from(matches!(s.get(end + 1), Some(b'+' | b'-')));
        let after = digits(end + 1 + sign);
        if after > end + 1 + sign {
            end = after;
        }
    }
    end
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
            // strtol converts nothing there, so strtod is never tried: refused, as by PostgreSQL.
            ("-.5", None),
            ("+.8", None),
            (" .5", None),
            ("5\u{a0}", None),
            ("1e-400", None),
            (" 12 ", Some(12)),
            ("1.5 ", Some(2)),
            ("0x1.8", None),
        ] {
            assert_eq!(parse_pg_int(text), want, "{text:?}");
        }
    }
}
