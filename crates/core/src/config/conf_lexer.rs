//! One line of a PostgreSQL configuration file, read with the token rules of the server's lexer
//! (`guc-file.l`) and the grammar of `ParseConfigFp`: a name (`ID` or `QUALIFIED_ID`), an optional
//! `=`, one value (`STRING`, `ID`, `UNQUOTED_STRING`, `INTEGER` or `REAL`), an optional comment. A line
//! the server would call a syntax error is one here too, so that `strata --config` never acts on a
//! file the server refuses.

/// What PostgreSQL makes of one line (its bytes, without the newline): nothing (blank or comment),
/// a name (lower case) and its value's bytes (the server keeps bytes; whether they must be text is
/// the caller's decision), or a syntax error (what is wrong, never the line's text: it may hold a
/// secret).
pub fn parse_line(s: &[u8]) -> Result<Option<(String, Vec<u8>)>, &'static str> {
    let mut i = skip_space(s, 0);
    if i == s.len() || s[i] == b'#' {
        return Ok(None);
    }
    // The longest token here must be an ID or a QUALIFIED_ID (`strata.stanza-x` is one longer
    // UNQUOTED_STRING, which is no name).
    let end = word_end(s, i).ok_or("a setting name must start with a letter")?;
    if !(is_id(&s[i..end]) || is_qualified_id(&s[i..end])) {
        return Err("a setting name is letters, digits and _, with at most one dot");
    }
    let name = String::from_utf8_lossy(&s[i..end]).to_ascii_lowercase();
    i = skip_space(s, end);
    if s.get(i) == Some(&b'=') {
        i = skip_space(s, i + 1);
    }
    let (value, end) = match s.get(i) {
        None | Some(b'#') => return Err("a setting without a value"),
        Some(b'\'') => quoted(s, i + 1)?,
        Some(&c) if letter(c) => {
            let end = word_end(s, i).unwrap_or(i);
            // `name.name` is lexed as a QUALIFIED_ID, which the grammar takes as no value.
            if is_qualified_id(&s[i..end]) {
                return Err("an unquoted value of the form word.word (quote it)");
            }
            (s[i..end].to_vec(), end)
        }
        Some(_) => {
            let end = number_end(s, i)
                .ok_or("a value that is neither quoted nor a word or a number (quote it)")?;
            (s[i..end].to_vec(), end)
        }
    };
    i = skip_space(s, end);
    if i < s.len() && s[i] != b'#' {
        return Err("text after the value (quote a value that has spaces)");
    }
    Ok(Some((name, value)))
}

/// `[A-Za-z_\x80-\xff]`, the lexer's LETTER.
fn letter(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_' || b >= 0x80
}

fn letter_or_digit(b: u8) -> bool {
    letter(b) || b.is_ascii_digit()
}

/// The lexer skips `[ \t\r]` (a form feed is a syntax error).
fn skip_space(s: &[u8], mut i: usize) -> usize {
    while i < s.len() && matches!(s[i], b' ' | b'\t' | b'\r') {
        i += 1;
    }
    i
}

/// The end of the longest `UNQUOTED_STRING` at `i`: a letter, then letters, digits and `-._:/` (an
/// `ID` or `QUALIFIED_ID` is never longer).
fn word_end(s: &[u8], i: usize) -> Option<usize> {
    if !s.get(i).copied().is_some_and(letter) {
        return None;
    }
    let mut j = i + 1;
    while j < s.len() && (letter_or_digit(s[j]) || b"-._:/".contains(&s[j])) {
        j += 1;
    }
    Some(j)
}

fn is_id(t: &[u8]) -> bool {
    t.first().copied().is_some_and(letter) && t.iter().all(|&b| letter_or_digit(b))
}

fn is_qualified_id(t: &[u8]) -> bool {
    match t.iter().position(|&b| b == b'.') {
        Some(dot) => is_id(&t[..dot]) && is_id(&t[dot + 1..]),
        None => false,
    }
}

/// The end of the longest number at `i`: `INTEGER` (`[+-]?(DIGIT+|0x HEXDIGIT+)UNIT_LETTER*`) or
/// `REAL` (`[+-]?DIGIT*.DIGIT*([Ee][+-]?DIGIT+)?`).
fn number_end(s: &[u8], i: usize) -> Option<usize> {
    let at = |k: usize, f: fn(&u8) -> bool| s.get(k).is_some_and(f);
    let run = |mut k: usize, f: fn(&u8) -> bool| {
        while at(k, f) {
            k += 1;
        }
        k
    };
    let j = if matches!(s.get(i), Some(b'+' | b'-')) {
        i + 1
    } else {
        i
    };
    let integer = if s[j..].starts_with(b"0x") && at(j + 2, u8::is_ascii_hexdigit) {
        Some(run(j + 2, u8::is_ascii_hexdigit))
    } else {
        Some(run(j, u8::is_ascii_digit)).filter(|&k| k > j)
    }
    .map(|k| run(k, u8::is_ascii_alphabetic));
    let digits = run(j, u8::is_ascii_digit);
    let real = (s.get(digits) == Some(&b'.')).then(|| {
        let k = run(digits + 1, u8::is_ascii_digit);
        let e = if matches!(s.get(k + 1), Some(b'+' | b'-')) {
            k + 2
        } else {
            k + 1
        };
        if matches!(s.get(k), Some(b'e' | b'E')) && at(e, u8::is_ascii_digit) {
            run(e, u8::is_ascii_digit)
        } else {
            k
        }
    });
    integer.max(real)
}

/// A quoted value from just after its opening quote: its bytes and where the closing quote ends.
/// The token is `'([^'\\\n]|\\.|'')*'`; its value as PostgreSQL's `DeescapeQuotedString` makes it:
/// `''` is a quote; `\b \f \n \r \t`, one to three octal digits (a byte), and a backslash before
/// any other character stands for that character; the value ends at a NUL byte. (A raw NUL inside the
/// quotes makes the server take the token's C string up to it, less its last byte as the "closing
/// quote": the same here.)
fn quoted(s: &[u8], start: usize) -> Result<(Vec<u8>, usize), &'static str> {
    const UNTERMINATED: &str = "a quoted value without its closing quote";
    // The token's end.
    let mut i = start;
    let close = loop {
        match s.get(i) {
            None => return Err(UNTERMINATED),
            Some(b'\'') if s.get(i + 1) == Some(&b'\'') => i += 2,
            Some(b'\'') => break i,
            Some(b'\\') if s.get(i + 1).is_some() => i += 2,
            Some(b'\\') => return Err(UNTERMINATED),
            Some(_) => i += 1,
        }
    };
    let body = match s[start..close].iter().position(|&b| b == 0) {
        Some(nul) => &s[start..(start + nul).saturating_sub(1).max(start)],
        None => &s[start..close],
    };
    let mut v = Vec::new();
    let mut i = 0;
    while i < body.len() {
        match body[i] {
            b'\'' if body.get(i + 1) == Some(&b'\'') => {
                v.push(b'\'');
                i += 2;
            }
            b'\\' if i + 1 < body.len() => {
                let c = body[i + 1];
                i += 2;
                match c {
                    b'b' => v.push(0x08),
                    b'f' => v.push(0x0c),
                    b'n' => v.push(b'\n'),
                    b'r' => v.push(b'\r'),
                    b't' => v.push(b'\t'),
                    b'0'..=b'7' => {
                        let mut code = u32::from(c - b'0');
                        for _ in 0..2 {
                            match body.get(i) {
                                Some(&d @ b'0'..=b'7') => {
                                    code = code * 8 + u32::from(d - b'0');
                                    i += 1;
                                }
                                _ => break,
                            }
                        }
                        v.push((code & 0xff) as u8);
                    }
                    other => v.push(other),
                }
            }
            c => {
                v.push(c);
                i += 1;
            }
        }
    }
    if let Some(nul) = v.iter().position(|&b| b == 0) {
        v.truncate(nul);
    }
    Ok((v, close + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(line: &str) -> String {
        let v = parse_line(line.as_bytes())
            .unwrap_or_else(|e| panic!("{line}: {e}"))
            .expect("a setting")
            .1;
        String::from_utf8(v).unwrap()
    }

    #[test]
    fn what_postgresql_accepts() {
        assert_eq!(parse_line(b"  # comment").unwrap(), None);
        assert_eq!(parse_line(b"").unwrap(), None);
        assert_eq!(
            parse_line(b"STRATA.Repo2 = 's3://b/p' # c").unwrap(),
            Some(("strata.repo2".into(), b"s3://b/p".to_vec()))
        );
        assert_eq!(value("strata.stanza=main"), "main");
        assert_eq!(value("strata.compress_level 5"), "5");
        assert_eq!(value("strata.x = 'it''s'"), "it's");
        assert_eq!(
            value(r"strata.p = '/k/it\'s a \\ \101\tx'"),
            "/k/it's a \\ A\tx"
        );
        assert_eq!(
            value("strata.repo3 file:///unquoted:ok-1.2"),
            "file:///unquoted:ok-1.2"
        );
        assert_eq!(value("strata.p'glued'# no space needed"), "glued");
        assert_eq!(value("strata.process_max = +4"), "+4");
        assert_eq!(value("shared_buffers = 128MB"), "128MB");
        assert_eq!(value("x = 0x1F"), "0x1F");
        assert_eq!(value("x = -1"), "-1");
        assert_eq!(value("x = 1.5e-3"), "1.5e-3");
        assert_eq!(value("x = .5"), ".5");
        assert_eq!(value("x = on\r"), "on");
        // Octal escapes are bytes (here the two of "é"), and a NUL ends the value.
        assert_eq!(value(r"x = '\303\251\0cut'"), "é");
        assert_eq!(value("x = '#not a comment' # one"), "#not a comment");
        assert_eq!(value("x = ''"), "");
        // Bytes stay bytes (a Latin-1 é), and a raw NUL cuts the token as the server's strlen does.
        assert_eq!(
            parse_line(b"x = '\xe9t\xe9'").unwrap().unwrap().1,
            b"\xe9t\xe9"
        );
        assert_eq!(parse_line(b"x = 'ab\0cd'").unwrap().unwrap().1, b"a");
    }

    #[test]
    fn what_postgresql_calls_a_syntax_error() {
        for line in [
            "strata.repo1 = /var/lib/strata",
            "strata.p = 'secret-one",
            "strata.p = 'secret-two' 'more'",
            "strata.p = secret three",
            "strata.repo1 =",
            "strata.p:secret-four",
            "strata.stanza = 1-main",
            "strata.stanza = -main",
            "strata.stanza = main.v2",
            "strata.stanza\x0c= 'x'",
            "strata.a.b = 1",
            "strata.stanza-x = 1",
            "work_mem = 4 MB",
            "x = 1.5GB",
            "= 3",
        ] {
            assert!(parse_line(line.as_bytes()).is_err(), "{line}");
        }
    }
}
