//! Reading the server's own configuration (`strata --config /etc/postgresql/15/main/postgresql.conf`)
//! the way PostgreSQL reads it, so that the command uses the repository and passphrase the server
//! uses: every line parsed by its rules (`conf_lexer`), the files it includes (`include`,
//! `include_if_exists`, `include_dir`, relative to the including file's path as written, nested at
//! most 10 deep), and, after a file named `postgresql.conf`, the `postgresql.auto.conf` that `ALTER
//! SYSTEM` writes in the data directory (`data_directory`, else the file's directory). Later lines win.
//!
//! Only `strata.*` settings are kept, each with the file and line it came from. A line PostgreSQL
//! cannot parse is an error naming the file and line, never the line's text (it may hold a secret):
//! the server refuses such a file too (at start; on reload it keeps its old values, which no reader of
//! the file can know).

use super::conf_lexer::parse_line;
use crate::{Error, Result};
use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

/// PostgreSQL's `CONF_FILE_MAX_DEPTH`.
const MAX_DEPTH: usize = 10;
/// More files than this in one configuration is refused (an include of the same files from several
/// places would otherwise read them exponentially often).
const MAX_FILES: usize = 1000;
/// A configuration file larger than this is refused (PostgreSQL's are a few kilobytes).
const MAX_CONF_FILE: u64 = 16 << 20;

/// The `strata.*` settings of a configuration: values by name (lower case), and where each was set.
#[derive(Clone, Debug, Default)]
pub struct ConfSettings {
    pub values: BTreeMap<String, String>,
    /// `file:line` of the line each value comes from.
    pub origins: BTreeMap<String, String>,
}

/// The `strata.*` settings of a configuration file and what it includes.
pub fn read_conf_file(path: &Path) -> Result<ConfSettings> {
    let path = lexically_normal(
        &std::path::absolute(path).map_err(|source| Error::ReadFile {
            path: path.into(),
            source,
        })?,
    );
    let mut reader = Reader::default();
    reader.file(&path, 0, true)?;
    if path.file_name().is_some_and(|n| n == "postgresql.conf") {
        let data_dir = match reader.data_directory.take() {
            Some(d) => relative_to(&path, &d),
            None => path.parent().unwrap_or(Path::new("/")).to_path_buf(),
        };
        reader.file(&data_dir.join("postgresql.auto.conf"), 0, false)?;
    }
    Ok(reader.settings)
}

/// The `strata.*` settings of configuration text (no includes followed); lines that cannot be parsed
/// are left out.
pub fn parse_conf(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|line| parse_line(line.as_bytes()).ok().flatten())
        .filter(|(name, _)| name.starts_with("strata."))
        .map(|(name, value)| (name, String::from_utf8_lossy(&value).into_owned()))
        .collect()
}

#[derive(Default)]
struct Reader {
    settings: ConfSettings,
    data_directory: Option<String>,
    files_read: usize,
}

impl Reader {
    fn file(&mut self, path: &Path, depth: usize, must_exist: bool) -> Result<()> {
        let refuse = |what: String| Err(Error::BadInput(format!("{}: {what}", path.display())));
        if depth > MAX_DEPTH {
            return refuse(format!(
                "configuration files nested more than {MAX_DEPTH} deep (PostgreSQL refuses them \
                 too): look for an include that includes itself"
            ));
        }
        self.files_read += 1;
        if self.files_read > MAX_FILES {
            return refuse(format!(
                "more than {MAX_FILES} configuration files read: look for files included from \
                 several places"
            ));
        }
        let bytes = match read_bounded(path) {
            Ok(b) => b,
            Err(e) if !must_exist && e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(source) => {
                return Err(Error::ReadFile {
                    path: path.into(),
                    source,
                })
            }
        };
        // Lines as `str::lines` cuts them (a `\r` before the newline is blank to the lexer anyway),
        // kept as bytes: the server reads bytes, and a value it reads is not always UTF-8.
        let text = bytes.strip_suffix(b"\n").unwrap_or(&bytes);
        for (number, line) in text.split(|&b| b == b'\n').enumerate() {
            let at = || format!("{}:{}", path.display(), number + 1);
            let (name, value) = match parse_line(line) {
                Ok(Some(setting)) => setting,
                Ok(None) => continue,
                Err(why) => {
                    return Err(Error::BadInput(format!(
                        "{}: syntax error: {why}; PostgreSQL cannot read this file either (it \
                         refuses to start with it, and a reload keeps the old settings): fix the \
                         line",
                        at()
                    )))
                }
            };
            let acted_on = name.starts_with("strata.")
                || matches!(
                    name.as_str(),
                    "include" | "include_if_exists" | "include_dir" | "data_directory"
                );
            if !acted_on {
                continue;
            }
            // A value this command uses must be the bytes the server uses: text, not a guess.
            let Ok(value) = String::from_utf8(value) else {
                return Err(Error::BadInput(format!(
                    "{}: the value of {name} is not UTF-8 text, so this command cannot use the \
                     bytes the server does: write it in UTF-8",
                    at()
                )));
            };
            match name.as_str() {
                n if n.starts_with("strata.") => {
                    self.settings.origins.insert(name.clone(), at());
                    self.settings.values.insert(name, value);
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

/// Reads a configuration file, bounded, and only a regular file: `strata restore` may run as root and
/// read files the postgres user can write (postgresql.conf on Debian, postgresql.auto.conf, included
/// files), which must not make it open a device (opening some has effects), read `/dev/zero` until
/// memory runs out, or wait on a FIFO. Checked before opening (following symlinks, as the server
/// does), and again on the opened file.
fn read_bounded(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let not_regular = || {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a regular file (a configuration file must be one)",
        )
    };
    if !std::fs::metadata(path)?.is_file() {
        return Err(not_regular());
    }
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)?;
    if !f.metadata()?.is_file() {
        return Err(not_regular());
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

/// A path named in `file`, relative to the directory of `file` as written: `..` is taken from the
/// text, as PostgreSQL's `canonicalize_path` does, not from where a symlink leads.
fn relative_to(file: &Path, value: &str) -> PathBuf {
    lexically_normal(&file.parent().unwrap_or(Path::new("/")).join(value))
}

/// `path` without `.` components, each `..` taking away the component before it.
fn lexically_normal(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    out.push(c);
                }
            }
            c => out.push(c),
        }
    }
    out
}

/// The files `include_dir` reads: names ending in `.conf`, not starting with `.`, in byte order;
/// directories among them are skipped, anything that cannot be looked at is an error (as PostgreSQL).
fn conf_files_in(dir: &Path) -> Result<Vec<PathBuf>> {
    let cannot = |path: &Path| {
        let path = path.to_path_buf();
        move |source| Error::ReadFile { path, source }
    };
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(cannot(dir))? {
        let entry = entry.map_err(cannot(dir))?;
        let name = entry.file_name();
        let name = name.as_encoded_bytes();
        if !name.ends_with(b".conf") || name.starts_with(b".") {
            continue;
        }
        let path = dir.join(entry.file_name());
        if !std::fs::metadata(&path).map_err(cannot(&path))?.is_dir() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(path: &Path, text: &str) {
        std::fs::write(path, text).unwrap();
    }

    #[test]
    fn a_line_postgresql_cannot_parse_is_an_error_naming_the_place_not_the_text() {
        for bad in [
            "strata.repo1 = /var/lib/strata",
            "strata.repo1_cipher_pass = 'secret-one",
            "strata.repo1_cipher_pass:secret-four",
            "include = /etc/unquoted",
            // Not a strata line: the server refuses the whole file all the same.
            "work_mem = 4 MB",
        ] {
            let dir = tempfile::tempdir().unwrap();
            let conf = dir.path().join("postgresql.conf");
            write(
                &conf,
                &format!("shared_buffers = 1GB\n{bad}\nstrata.stanza = s\n"),
            );
            let e = read_conf_file(&conf).unwrap_err().to_string();
            assert!(
                e.contains(&format!("{}:2: syntax error", conf.display())),
                "{bad}: {e}"
            );
            assert!(!e.contains("secret"), "{bad}: {e}");
        }
    }

    #[test]
    fn includes_and_postgresql_auto_conf_are_followed_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let etc = dir.path().join("etc");
        let data = dir.path().join("data");
        std::fs::create_dir_all(etc.join("conf.d/sub.conf")).unwrap();
        std::fs::create_dir_all(&data).unwrap();
        let main = etc.join("postgresql.conf");
        write(
            &main,
            &format!(
                "data_directory = '{}'\nstrata.stanza = 'main'\nstrata.repo1 = 'file:///first'\n\
                 include 'more.conf'\ninclude_if_exists = 'missing.conf'\ninclude_dir 'conf.d'\n\
                 strata.compress_level = 1\n",
                data.display()
            ),
        );
        write(
            &etc.join("more.conf"),
            "strata.repo1 = 'file:///from-more'\n",
        );
        write(&etc.join("conf.d/20-b.conf"), "strata.compress_level = 9\n");
        write(
            &etc.join("conf.d/10-a.conf"),
            "strata.compress_level = 7\nstrata.repo2 = 's3://b/p'\n",
        );
        write(&etc.join("conf.d/.hidden.conf"), "strata.repo3 = 'x'\n");
        write(&etc.join("conf.d/notes.txt"), "strata.repo4 = 'x'\n");
        write(
            &data.join("postgresql.auto.conf"),
            "# Do not edit this file manually!\nstrata.stanza = 'from-alter-system'\n",
        );
        let c = read_conf_file(&main).unwrap();
        assert_eq!(c.values["strata.repo1"], "file:///from-more");
        assert_eq!(
            c.origins["strata.repo1"],
            format!("{}:1", etc.join("more.conf").display())
        );
        assert_eq!(c.values["strata.repo2"], "s3://b/p");
        assert_eq!(
            c.values["strata.compress_level"], "1",
            "the line after the includes wins"
        );
        assert_eq!(c.values["strata.stanza"], "from-alter-system");
        assert_eq!(
            c.origins["strata.stanza"],
            format!("{}:2", data.join("postgresql.auto.conf").display())
        );
        assert!(!c.values.contains_key("strata.repo3") && !c.values.contains_key("strata.repo4"));

        // `..` is taken from the path as written, not from where a symlinked directory leads.
        let elsewhere = dir.path().join("elsewhere");
        std::fs::create_dir_all(&elsewhere).unwrap();
        std::os::unix::fs::symlink(&elsewhere, etc.join("linked")).unwrap();
        write(&elsewhere.join("a.inc"), "include '../b.inc'\n");
        write(
            &etc.join("b.inc"),
            "strata.repo4_s3_region = 'written-path'\n",
        );
        write(
            &dir.path().join("b.inc"),
            "strata.repo4_s3_region = 'symlink-target'\n",
        );
        write(&etc.join("more.conf"), "include 'linked/a.inc'\n");
        let c = read_conf_file(&main).unwrap();
        assert_eq!(c.values["strata.repo4_s3_region"], "written-path");

        // A dangling symlink in an include_dir is an error, as for PostgreSQL.
        std::os::unix::fs::symlink(dir.path().join("gone"), etc.join("conf.d/30-c.conf")).unwrap();
        let e = read_conf_file(&main).unwrap_err();
        assert!(e.to_string().contains("30-c.conf"), "{e}");
        std::fs::remove_file(etc.join("conf.d/30-c.conf")).unwrap();

        // Only regular files of sane size are read (the reader may be root): not opened otherwise.
        for target in ["/dev/zero", "/dev/null"] {
            write(&etc.join("more.conf"), &format!("include '{target}'\n"));
            let e = read_conf_file(&main).unwrap_err();
            assert!(e.to_string().contains("not a regular file"), "{e}");
        }
        let fifo = etc.join("fifo.conf");
        assert!(std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success());
        write(&etc.join("more.conf"), "include 'fifo.conf'\n");
        let e = read_conf_file(&main).unwrap_err();
        assert!(e.to_string().contains("not a regular file"), "{e}");
        let e = read_conf_file(&fifo).unwrap_err();
        assert!(e.to_string().contains("not a regular file"), "{e}");
        write(
            &etc.join("more.conf"),
            &"strata.repo1 = 'file:///big'\n".repeat(600_000),
        );
        let e = read_conf_file(&main).unwrap_err();
        assert!(e.to_string().contains("larger than 16 MB"), "{e}");

        // A missing `include` is an error; an include of itself stops at the depth limit; files
        // included from several places stop at the file limit instead of taking forever.
        write(&etc.join("more.conf"), "include 'gone.conf'\n");
        let e = read_conf_file(&main).unwrap_err();
        assert!(e.to_string().contains("gone.conf"), "{e}");
        write(&etc.join("more.conf"), "include 'more.conf'\n");
        let e = read_conf_file(&main).unwrap_err();
        assert!(e.to_string().contains("nested more than 10"), "{e}");
        for level in 0..5 {
            write(
                &etc.join(format!("l{level}.conf")),
                &format!("include 'l{}.conf'\n", level + 1).repeat(20),
            );
        }
        write(&etc.join("l5.conf"), "strata.stanza = 'leaf'\n");
        write(&etc.join("more.conf"), "include 'l0.conf'\n");
        let e = read_conf_file(&main).unwrap_err();
        assert!(e.to_string().contains("more than 1000"), "{e}");
    }
}
