//! Reading the server's own configuration (`strata --config /etc/postgresql/15/main/postgresql.conf`)
//! the way PostgreSQL reads it, so that the command uses the repository and passphrase the server
//! uses: the tokens of its configuration lexer (`guc-file.l`), the files it includes (`include`,
//! `include_if_exists`, `include_dir`, relative to the including file, nested at most 10 deep), and,
//! after a file named `postgresql.conf`, the `postgresql.auto.conf` that `ALTER SYSTEM` writes in the
//! data directory (`data_directory`, else the file's directory). Later lines win.
//!
//! Only `strata.*` settings are kept. A `strata.*` or include line PostgreSQL cannot parse is an error
//! (the server refuses such a file too: at start, or on reload by keeping the old values), naming the
//! file and line but never the line's text, which may hold a secret.

use crate::{Error, Result};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// PostgreSQL's `CONF_FILE_MAX_DEPTH`.
const MAX_DEPTH: usize = 10;

/// The `strata.*` settings (names in lower case) of a configuration file and what it includes.
pub fn read_conf_file(path: &Path) -> Result<BTreeMap<String, String>> {
    let mut reader = Reader::default();
    reader.file(path, 0, true)?;
    if path.file_name().is_some_and(|n| n == "postgresql.conf") {
        let here = path.parent().unwrap_or(Path::new("."));
        let data_dir = match reader.data_directory.take() {
            Some(d) => here.join(d),
            None => here.to_path_buf(),
        };
        reader.file(&data_dir.join("postgresql.auto.conf"), 0, false)?;
    }
    Ok(reader.settings)
}

/// The `strata.*` settings of configuration text (no includes followed); lines that cannot be parsed
/// are left out.
pub fn parse_conf(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|line| parse_line(line).ok().flatten())
        .filter(|(name, _)| name.starts_with("strata."))
        .collect()
}

#[derive(Default)]
struct Reader {
    settings: BTreeMap<String, String>,
    data_directory: Option<String>,
}

impl Reader {
    fn file(&mut self, path: &Path, depth: usize, must_exist: bool) -> Result<()> {
        if depth > MAX_DEPTH {
            return Err(Error::BadInput(format!(
                "{}: configuration files nested more than {MAX_DEPTH} deep (PostgreSQL refuses \
                 them too): look for an include that includes itself",
                path.display()
            )));
        }
        let bytes = match read_bounded(path, depth > 0 || !must_exist) {
            Ok(b) => b,
            Err(e) if !must_exist && e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(source) => {
                return Err(Error::ReadFile {
                    path: path.into(),
                    source,
                })
            }
        };
        let text = String::from_utf8_lossy(&bytes);
        for (number, line) in text.lines().enumerate() {
            let (name, value) = match parse_line(line) {
                Ok(Some(setting)) => setting,
                Ok(None) => continue,
                // Only the lines that matter here: the server reports the others.
                Err(why) if ours(line) => {
                    return Err(Error::BadInput(format!(
                        "{}:{}: {why} (PostgreSQL cannot read this line either; fix it)",
                        path.display(),
                        number + 1
                    )))
                }
                Err(_) => continue,
            };
            match name.as_str() {
                n if n.starts_with("strata.") => {
                    self.settings.insert(name, value);
                }
                "include" | "include_if_exists" => {
                    let included = relative_to(path, &value);
                    self.file(&included, depth + 1, name == "include")?;
                }
                "include_dir" => {
                    let dir = relative_to(path, &value);
                    for file in conf_files_in(&dir)? {
                        self.file(&file, depth + 1, true)?;
                    }
                }
                "data_directory" => self.data_directory = Some(value),
                _ => {}
            }
        }
        Ok(())
    }
}

/// A configuration file larger than this is refused (PostgreSQL's are a few kilobytes).
const MAX_CONF_FILE: u64 = 16 << 20;

/// Reads a configuration file, bounded: `strata restore` may run as root and read files the postgres
/// user can write (postgresql.auto.conf, an included file), which must not make it read `/dev/zero`
/// until memory runs out, nor wait on a FIFO. A file named by a path from another file (`regular_only`)
/// must be a regular file; the operator's own `--config` may be a pipe (`--config <(...)`).
fn read_bounded(path: &Path, regular_only: bool) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    if regular_only {
        // Opening a FIFO for reading would wait for a writer.
        options.custom_flags(libc::O_NONBLOCK);
    }
    let f = options.open(path)?;
    if regular_only && !f.metadata()?.is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    let mut bytes = Vec::new();
    f.take(MAX_CONF_FILE + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_CONF_FILE {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!(
                "larger than {} MB: not a configuration file",
                MAX_CONF_FILE >> 20
            ),
        ));
    }
    Ok(bytes)
}

/// Whether a line is one this reader acts on (a `strata.*` setting or an include).
fn ours(line: &str) -> bool {
    let start = line.trim_start().to_ascii_lowercase();
    start.starts_with("strata.") || start.starts_with("include")
}

/// A path of an include, relative to the directory of the file naming it.
fn relative_to(file: &Path, value: &str) -> PathBuf {
    file.parent().unwrap_or(Path::new(".")).join(value)
}

/// The files `include_dir` reads: names ending in `.conf`, not starting with `.`, in byte order.
fn conf_files_in(dir: &Path) -> Result<Vec<PathBuf>> {
    let read_dir = |source| Error::ReadFile {
        path: dir.into(),
        source,
    };
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(read_dir)? {
        let entry = entry.map_err(read_dir)?;
        let name = entry.file_name();
        let name = name.as_encoded_bytes();
        if name.ends_with(b".conf") && !name.starts_with(b".") && entry.path().is_file() {
            files.push(entry.path());
        }
    }
    files.sort();
    Ok(files)
}

/// `[A-Za-z_\x80-\xff]`, the lexer's LETTER.
fn letter(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_' || b >= 0x80
}

fn letter_or_digit(b: u8) -> bool {
    letter(b) || b.is_ascii_digit()
}

fn space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | 0x0c)
}

/// One line: `None` for a blank or comment line, else the name (lower case) and value; `Err` says
/// what PostgreSQL's lexer would not accept.
fn parse_line(line: &str) -> std::result::Result<Option<(String, String)>, &'static str> {
    let s = line.as_bytes();
    let mut i = 0;
    let skip_space = |i: &mut usize| {
        while *i < s.len() && space(s[*i]) {
            *i += 1;
        }
    };
    skip_space(&mut i);
    if i == s.len() || s[i] == b'#' {
        return Ok(None);
    }
    // ID or QUALIFIED_ID (one dot).
    let start = i;
    let id = |i: &mut usize| -> std::result::Result<(), &'static str> {
        if *i == s.len() || !letter(s[*i]) {
            return Err("a setting name must start with a letter");
        }
        while *i < s.len() && letter_or_digit(s[*i]) {
            *i += 1;
        }
        Ok(())
    };
    id(&mut i)?;
    if i < s.len() && s[i] == b'.' {
        i += 1;
        id(&mut i)?;
    }
    let name = line[start..i].to_ascii_lowercase();
    skip_space(&mut i);
    if i < s.len() && s[i] == b'=' {
        i += 1;
        skip_space(&mut i);
    }
    if i == s.len() || s[i] == b'#' {
        return Err("a setting without a value");
    }
    let value = if s[i] == b'\'' {
        let (value, end) = quoted(s, i + 1)?;
        i = end;
        value
    } else {
        // An UNQUOTED_STRING (a letter first), or a number (INTEGER with unit letters, REAL).
        let first = s[i];
        if !(letter(first) || first.is_ascii_digit() || matches!(first, b'+' | b'-' | b'.')) {
            return Err("a value that is neither quoted nor a word or number (quote it)");
        }
        let from = i;
        while i < s.len()
            && (letter_or_digit(s[i]) || matches!(s[i], b'-' | b'.' | b':' | b'/' | b'+'))
        {
            i += 1;
        }
        line[from..i].to_string()
    };
    skip_space(&mut i);
    if i < s.len() && s[i] != b'#' {
        return Err("text after the value (quote a value that has spaces)");
    }
    Ok(Some((name, value)))
}

/// A quoted value from just after its opening quote: the value and where the closing quote ends.
/// As PostgreSQL's `DeescapeQuotedString`: `''` is a quote; `\b \f \n \r \t`, one to three octal
/// digits (a byte), and a backslash before any other character stands for that character; the value
/// ends at a NUL byte.
fn quoted(s: &[u8], mut i: usize) -> std::result::Result<(String, usize), &'static str> {
    let mut v = Vec::new();
    loop {
        match s.get(i) {
            None => return Err("a quoted value without its closing quote"),
            Some(b'\'') if s.get(i + 1) == Some(&b'\'') => {
                v.push(b'\'');
                i += 2;
            }
            Some(b'\'') => {
                i += 1;
                break;
            }
            Some(b'\\') => {
                let Some(&c) = s.get(i + 1) else {
                    return Err("a quoted value without its closing quote");
                };
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
                            match s.get(i) {
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
            Some(&c) => {
                v.push(c);
                i += 1;
            }
        }
    }
    if let Some(nul) = v.iter().position(|&b| b == 0) {
        v.truncate(nul);
    }
    Ok((String::from_utf8_lossy(&v).into_owned(), i))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_read_as_postgresql_reads_them() {
        let c = parse_conf(
            "# comment\nstrata.repo1 = 'file:///r' # c\nstrata.stanza=main\nshared_buffers = 1GB\n\
             strata.compress_level 5\nstrata.x = 'it''s'\nstrata.stanza = 'other'\n\
             STRATA.Repo2 = 's3://b/p'\nstrata.repo1_cipher_pass_file = '/k/it\\'s a \\\\ \\101\\tx'\n\
             strata.repo3 file:///unquoted:ok\nstrata.repo4_cipher_pass'glued'# no space needed\n\
             strata.process_max = +4\nstrata.repo2_s3_region = '\\303\\251\\0cut'\n",
        );
        assert_eq!(c["strata.repo1"], "file:///r");
        assert_eq!(c["strata.stanza"], "other");
        assert_eq!(c["strata.compress_level"], "5");
        assert_eq!(c["strata.x"], "it's");
        assert_eq!(c["strata.repo2"], "s3://b/p");
        assert_eq!(c["strata.repo1_cipher_pass_file"], "/k/it's a \\ A\tx");
        assert_eq!(c["strata.repo3"], "file:///unquoted:ok");
        assert_eq!(c["strata.repo4_cipher_pass"], "glued");
        assert_eq!(c["strata.process_max"], "+4");
        // Octal escapes are bytes (here the two of "é"), and a NUL ends the value.
        assert_eq!(c["strata.repo2_s3_region"], "é");
        assert_eq!(c.len(), 10);
    }

    #[test]
    fn lines_postgresql_refuses_are_errors_naming_the_place_not_the_text() {
        for bad in [
            "strata.repo1 = /var/lib/strata",
            "strata.repo1_cipher_pass = 'secret-one",
            "strata.repo1_cipher_pass = 'secret-two' 'more'",
            "strata.repo1_cipher_pass = secret three",
            "strata.repo1 =",
            "strata.repo1_cipher_pass:secret-four",
            "include = /etc/unquoted",
        ] {
            let dir = tempfile::tempdir().unwrap();
            let conf = dir.path().join("postgresql.conf");
            std::fs::write(&conf, format!("shared_buffers = 1GB\n{bad}\n")).unwrap();
            let e = read_conf_file(&conf).unwrap_err().to_string();
            assert!(e.contains(&format!("{}:2:", conf.display())), "{bad}: {e}");
            assert!(!e.contains("secret"), "{bad}: {e}");
        }
        // Lines that are not ours are the server's business.
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("other.conf");
        std::fs::write(&conf, "work_mem = 4 MB\nstrata.stanza = s\n").unwrap();
        assert_eq!(read_conf_file(&conf).unwrap()["strata.stanza"], "s");
    }

    #[test]
    fn includes_and_postgresql_auto_conf_are_followed_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let etc = dir.path().join("etc");
        let data = dir.path().join("data");
        std::fs::create_dir_all(etc.join("conf.d")).unwrap();
        std::fs::create_dir_all(&data).unwrap();
        std::fs::write(
            etc.join("postgresql.conf"),
            format!(
                "data_directory = '{}'\nstrata.stanza = 'main'\nstrata.repo1 = 'file:///first'\n\
                 include 'more.conf'\ninclude_if_exists = 'missing.conf'\ninclude_dir 'conf.d'\n\
                 strata.compress_level = 1\n",
                data.display()
            ),
        )
        .unwrap();
        std::fs::write(
            etc.join("more.conf"),
            "strata.repo1 = 'file:///from-more'\n",
        )
        .unwrap();
        std::fs::write(etc.join("conf.d/20-b.conf"), "strata.compress_level = 9\n").unwrap();
        std::fs::write(
            etc.join("conf.d/10-a.conf"),
            "strata.compress_level = 7\nstrata.repo2 = 's3://b/p'\n",
        )
        .unwrap();
        std::fs::write(etc.join("conf.d/.hidden.conf"), "strata.repo3 = 'x'\n").unwrap();
        std::fs::write(etc.join("conf.d/notes.txt"), "strata.repo4 = 'x'\n").unwrap();
        std::fs::write(
            data.join("postgresql.auto.conf"),
            "# Do not edit this file manually!\nstrata.stanza = 'from-alter-system'\n",
        )
        .unwrap();
        let c = read_conf_file(&etc.join("postgresql.conf")).unwrap();
        assert_eq!(c["strata.repo1"], "file:///from-more");
        assert_eq!(c["strata.repo2"], "s3://b/p");
        assert_eq!(
            c["strata.compress_level"], "1",
            "the line after the includes wins"
        );
        assert_eq!(c["strata.stanza"], "from-alter-system");
        assert!(!c.contains_key("strata.repo3") && !c.contains_key("strata.repo4"));

        // What a file names must be a regular file of sane size (the reader may be root).
        std::fs::write(etc.join("more.conf"), "include '/dev/zero'\n").unwrap();
        let e = read_conf_file(&etc.join("postgresql.conf")).unwrap_err();
        assert!(e.to_string().contains("not a regular file"), "{e}");
        let fifo = etc.join("fifo.conf");
        assert!(std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success());
        std::fs::write(etc.join("more.conf"), "include 'fifo.conf'\n").unwrap();
        let e = read_conf_file(&etc.join("postgresql.conf")).unwrap_err();
        assert!(e.to_string().contains("not a regular file"), "{e}");
        std::fs::write(
            etc.join("more.conf"),
            "strata.repo1 = 'file:///big'\n".repeat(600_000),
        )
        .unwrap();
        let e = read_conf_file(&etc.join("postgresql.conf")).unwrap_err();
        assert!(e.to_string().contains("larger than 16 MB"), "{e}");

        // A missing `include` is an error; an include of itself stops at the depth limit.
        std::fs::write(etc.join("more.conf"), "include 'gone.conf'\n").unwrap();
        let e = read_conf_file(&etc.join("postgresql.conf")).unwrap_err();
        assert!(e.to_string().contains("gone.conf"), "{e}");
        std::fs::write(etc.join("more.conf"), "include 'more.conf'\n").unwrap();
        let e = read_conf_file(&etc.join("postgresql.conf")).unwrap_err();
        assert!(e.to_string().contains("nested more than 10"), "{e}");
    }
}
