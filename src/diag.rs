//! Diagnostics: a problem in one of the user's files, pointing at the exact place.
//!
//! Loading never stops at the first problem: every loader pushes into a
//! [`Diagnostics`] list so that `branchguard check` can show them all at once.

use std::fmt;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_saphyr::{Location, Spanned};

/// One problem in one file, as `file:line:col: message`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    pub file: String,
    pub line: u64,
    pub column: u64,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file, self.line, self.column, self.message
        )
    }
}

/// Every problem found in a run, in the order found: errors (the files cannot
/// be used) and, apart, warnings (lints: it will run, but not as meant).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Diagnostics(pub Vec<Diagnostic>, pub Vec<Diagnostic>);

impl Diagnostics {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn push(&mut self, d: Diagnostic) {
        self.0.push(d);
    }

    /// Records a problem at a YAML location of `file`.
    pub fn at(&mut self, file: &str, loc: Location, message: impl Into<String>) {
        self.0.push(Diagnostic {
            file: file.to_string(),
            line: loc.line().max(1),
            column: loc.column().max(1),
            message: message.into(),
        });
    }

    /// Records a problem at an explicit line and column.
    pub fn at_pos(&mut self, file: &str, line: u64, column: u64, message: impl Into<String>) {
        self.0.push(Diagnostic {
            file: file.to_string(),
            line: line.max(1),
            column: column.max(1),
            message: message.into(),
        });
    }

    /// Records a problem at the place a spanned value was written.
    pub fn at_value<T>(&mut self, file: &str, v: &Spanned<T>, message: impl Into<String>) {
        self.at(file, v.referenced, message);
    }

    /// Records a warning at the place a spanned value was written. Shown as
    /// `file:line:col: warning: message`; it does not make the files invalid.
    pub fn warn_at_value<T>(&mut self, file: &str, v: &Spanned<T>, message: impl Into<String>) {
        self.1.push(Diagnostic {
            file: file.to_string(),
            line: v.referenced.line().max(1),
            column: v.referenced.column().max(1),
            message: format!("warning: {}", message.into()),
        });
    }

    /// The warnings found.
    pub fn warnings(&self) -> &[Diagnostic] {
        &self.1
    }

    /// Records a problem about a whole file (it could not be read, say).
    pub fn file(&mut self, file: &str, message: impl Into<String>) {
        self.0.push(Diagnostic {
            file: file.to_string(),
            line: 1,
            column: 1,
            message: message.into(),
        });
    }

    pub fn extend(&mut self, other: Diagnostics) {
        self.0.extend(other.0);
        self.1.extend(other.1);
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for d in &self.0 {
            writeln!(f, "{d}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Diagnostics {}

/// Parses YAML (or JSON, which is YAML) strictly into `T`.
///
/// The error names the field by its path (`steps[2].deadline`) as well as its
/// line and column, because serde's own messages ("invalid boolean") do not say
/// which field they are about.
pub fn parse_yaml<T: DeserializeOwned>(file: &str, text: &str) -> Result<T, Diagnostic> {
    let mut path = String::new();
    let options = serde_saphyr::options! { strict_booleans: true };
    let result = serde_saphyr::with_deserializer_from_str_with_options(text, options, |de| {
        serde_path_to_error::deserialize::<_, T>(de).map_err(|e| {
            path = e.path().to_string();
            e.into_inner()
        })
    });
    result.map_err(|e| {
        let inner = e.without_snippet();
        let loc = inner.location();
        let message = describe(
            &clean_path(&path),
            &with_hint(&strip_location(&inner.to_string())),
        );
        Diagnostic {
            file: file.to_string(),
            line: loc.map_or(1, |l| l.line().max(1)),
            column: loc.map_or(1, |l| l.column().max(1)),
            message,
        }
    })
}

fn describe(path: &str, message: &str) -> String {
    if path.is_empty() || path == "." {
        message.to_string()
    } else {
        format!("{path}: {message}")
    }
}

/// The YAML scanner says what it did not find, not what the writer should
/// do: each of its messages gets what was expected, in the writer's terms.
fn with_hint(message: &str) -> String {
    const HINTS: [(&str, &str); 6] = [
        (
            "did not find expected key",
            "expected `key: value` at the indentation of the lines above it (this line is indented differently, or a value needs quotes)",
        ),
        (
            "did not find expected '-' indicator",
            "expected another `- ` list item lined up with the ones above, or a key one level less indented",
        ),
        (
            "did not find expected ',' or '}'",
            "expected `,` between entries or `}` closing the `{ … }` on its line (or a value needs quotes)",
        ),
        (
            "did not find expected ',' or ']'",
            "expected `,` between items or `]` closing the `[ … ]` on its line",
        ),
        (
            "mapping values are not allowed in this context",
            "expected a new `key: value` line: a `:` follows a plain value (quote the value, or check the indentation)",
        ),
        (
            "unclosed quote",
            "expected the quote opened here to be closed on its line",
        ),
    ];
    match HINTS.iter().find(|(m, _)| message.contains(m)) {
        Some((_, hint)) => format!("{message}: {hint}"),
        None => message.to_string(),
    }
}

/// serde-saphyr appends " at line L, column C"; we print the location in front.
fn strip_location(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) if message[i..].contains(", column ") => message[..i].to_string(),
        _ => message.to_string(),
    }
}

/// `Spanned<T>` shows up in paths as a `.value` segment, and a duplicate key as `?`.
fn clean_path(path: &str) -> String {
    path.split('.')
        .filter(|seg| *seg != "value" && *seg != "?")
        .collect::<Vec<_>>()
        .join(".")
}

/// The most bytes of someone's input that an error file or a log line
/// quotes: enough to recognise a value, never a whole secret (a 32-byte key
/// in hex is 64 characters).
pub const QUOTE_MAX: usize = 40;

/// `message` with every quoted part (between `"` or `` ` ``) cut to
/// [`QUOTE_MAX`] bytes, and the whole to 400 bytes. Parsers quote the value
/// they refused; what they were given may be a file someone had no business
/// reading, so no more of it than this is written anywhere.
pub fn clip_quotes(message: &str) -> String {
    const WHOLE: usize = 400;
    let mut out = String::with_capacity(message.len().min(WHOLE + 4));
    let mut open: Option<char> = None;
    let mut quoted = 0usize;
    let mut clipped = false;
    for c in message.chars() {
        if out.len() >= WHOLE {
            out.push('…');
            return out;
        }
        match open {
            None => {
                // Not `'`: our own sentences use it as an apostrophe.
                if matches!(c, '"' | '`') {
                    open = Some(c);
                    quoted = 0;
                    clipped = false;
                }
                out.push(c);
            }
            Some(q) if c == q => {
                open = None;
                out.push(c);
            }
            Some(_) => {
                quoted += c.len_utf8();
                if quoted <= QUOTE_MAX {
                    out.push(c);
                } else if !clipped {
                    clipped = true;
                    out.push('…');
                }
            }
        }
    }
    out
}

/// An error with every cause under it, `outer: cause: root`: a network
/// library's own text ("error sending request for url …") hides the part a
/// person can act on ("connection refused", "dns error").
pub fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let more = c.to_string();
        // Some layers repeat the message of the one beneath.
        if !text.ends_with(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        cause = c.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Doc {
        name: Spanned<String>,
        #[serde(default)]
        flag: bool,
    }

    #[test]
    fn wrong_type_names_the_field_and_place() {
        let e = parse_yaml::<Doc>("f.yaml", "name: x\nflag: maybe\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "f.yaml:2:7: flag: invalid boolean (strict mode expects true/false)"
        );
    }

    #[test]
    fn unknown_field_lists_the_expected_ones() {
        let e = parse_yaml::<Doc>("f.yaml", "name: x\nflg: true\n").unwrap_err();
        assert_eq!(e.line, 2);
        assert!(e.message.contains("unknown field `flg`"), "{}", e.message);
        assert!(
            e.message.contains("expected one of name, flag"),
            "{}",
            e.message
        );
    }

    #[test]
    fn duplicate_key_is_an_error() {
        let e = parse_yaml::<Doc>("f.yaml", "name: x\nname: y\n").unwrap_err();
        assert_eq!((e.line, e.column), (2, 1));
        assert!(
            e.message.contains("duplicate mapping key: name"),
            "{}",
            e.message
        );
    }

    #[test]
    fn quoted_input_is_clipped_and_the_rest_kept() {
        let secret = "2767".repeat(16);
        let m = clip_quotes(&format!(
            "invalid type: string \"{secret}\", expected a map"
        ));
        assert!(!m.contains(&secret), "{m}");
        assert!(m.starts_with("invalid type: string \"2767"), "{m}");
        assert!(m.ends_with("…\", expected a map"), "{m}");
        let quoted = m.split('"').nth(1).unwrap();
        assert!(quoted.trim_end_matches('…').len() <= QUOTE_MAX, "{m}");
        assert_eq!(
            clip_quotes("unknown branch `sh-009`"),
            "unknown branch `sh-009`"
        );
        let long = "x".repeat(5000);
        assert!(clip_quotes(&long).len() <= 404);
        // An unclosed quote is clipped too; an apostrophe is not a quote.
        assert!(clip_quotes(&format!("bad `{long}")).len() < 100);
        let prose = format!("not owned by the daemon's user: {}", "y".repeat(60));
        assert_eq!(clip_quotes(&prose), prose);
    }

    #[test]
    fn a_yaml_syntax_error_says_what_was_expected() {
        let e = parse_yaml::<Doc>("f.yaml", "name: x\n flag: true\nother: 1\n").unwrap_err();
        assert!(
            e.message.contains("expected") && e.message.contains("indent"),
            "{e}"
        );
        let e = parse_yaml::<Doc>("f.yaml", "name: \"x\nflag: true\n").unwrap_err();
        assert!(e.message.contains("expected the quote"), "{e}");
    }
}
