//! A deliberately small glob matcher for `files` / `exclude_files` (spin-reference §1.7).
//!
//! Supported syntax, per `/`-separated segment: `*` (any run of characters within a segment),
//! `?` (one character), `[abc]`, `[a-z]`, `[!a]`/`[^a]` (character classes) and a whole segment
//! `**` (zero or more segments). That covers every pattern in Spin's docs and templates; brace
//! lists (`{a,b}`) are not supported (Spin's `glob` crate does not support them either).
//! `*` also matches names starting with `.`, like the `glob` crate's default options.

use std::path::Path;

/// True if `pattern` contains glob metacharacters (otherwise it names one literal path).
pub(crate) fn has_wildcards(pattern: &str) -> bool {
    pattern.contains(['*', '?', '['])
}

/// Splits a relative pattern/path into its non-empty segments, ignoring `.` segments.
fn segments(s: &str) -> Vec<&str> {
    s.split('/')
        .filter(|seg| !seg.is_empty() && *seg != ".")
        .collect()
}

/// Whether the relative `/`-separated `path` matches `pattern`.
pub(crate) fn matches(pattern: &str, path: &str) -> bool {
    match_segments(&segments(pattern), &segments(path))
}

fn match_segments(pat: &[&str], path: &[&str]) -> bool {
    match pat.split_first() {
        None => path.is_empty(),
        Some((&"**", rest)) => (0..=path.len()).any(|skip| match_segments(rest, &path[skip..])),
        Some((p, rest)) => match path.split_first() {
            Some((name, path_rest)) => match_segment(p, name) && match_segments(rest, path_rest),
            None => false,
        },
    }
}

fn match_segment(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    match_chars(&p, &n)
}

fn match_chars(p: &[char], n: &[char]) -> bool {
    match p.first() {
        None => n.is_empty(),
        Some('*') => (0..=n.len()).any(|skip| match_chars(&p[1..], &n[skip..])),
        Some('?') => !n.is_empty() && match_chars(&p[1..], &n[1..]),
        Some('[') => match parse_class(&p[1..]) {
            Some((class, used)) => {
                !n.is_empty() && class.matches(n[0]) && match_chars(&p[1 + used..], &n[1..])
            }
            // An unterminated `[` is an ordinary character.
            None => n.first() == Some(&'[') && match_chars(&p[1..], &n[1..]),
        },
        Some(c) => n.first() == Some(c) && match_chars(&p[1..], &n[1..]),
    }
}

struct CharClass {
    negated: bool,
    ranges: Vec<(char, char)>,
}

impl CharClass {
    fn matches(&self, c: char) -> bool {
        self.ranges.iter().any(|&(lo, hi)| lo <= c && c <= hi) != self.negated
    }
}

/// Parses the inside of `[...]` (starting after `[`); returns the class and how many chars were
/// consumed including the closing `]`.
fn parse_class(p: &[char]) -> Option<(CharClass, usize)> {
    let mut i = 0;
    let negated = matches!(p.first(), Some('!' | '^'));
    if negated {
        i += 1;
    }
    let mut ranges = Vec::new();
    let start = i;
    while i < p.len() {
        let c = p[i];
        // A `]` right at the start is a literal member, as in POSIX globs.
        if c == ']' && i > start {
            return Some((CharClass { negated, ranges }, i + 1));
        }
        if i + 2 < p.len() && p[i + 1] == '-' && p[i + 2] != ']' {
            ranges.push((c, p[i + 2]));
            i += 3;
        } else {
            ranges.push((c, c));
            i += 1;
        }
    }
    None
}

/// Expands `pattern` (relative, `/`-separated) against `base`, returning the matching *files* as
/// relative `/`-separated paths, sorted. Directories are walked starting at the pattern's literal
/// prefix so `static/**/*` never scans `target/`. Symlinked directories are not descended into
/// (loops); symlinks to files are included.
pub(crate) fn expand(base: &Path, pattern: &str) -> std::io::Result<Vec<String>> {
    let segs = segments(pattern);
    let literal_len = segs.iter().take_while(|s| !has_wildcards(s)).count();
    let prefix = segs[..literal_len].join("/");
    let mut out = Vec::new();
    if literal_len == segs.len() {
        if !prefix.is_empty() && base.join(&prefix).is_file() {
            out.push(prefix);
        }
        return Ok(out);
    }
    let max_depth = if segs[literal_len..].contains(&"**") {
        usize::MAX
    } else {
        segs.len() - literal_len
    };
    let start = if prefix.is_empty() {
        base.to_path_buf()
    } else {
        base.join(&prefix)
    };
    if start.is_dir() {
        walk(&start, &prefix, max_depth, &mut |rel| {
            if match_segments(&segs, &segments(rel)) {
                out.push(rel.to_string());
            }
        })?;
    }
    out.sort();
    Ok(out)
}

fn walk(
    dir: &Path,
    rel: &str,
    depth_left: usize,
    found: &mut dyn FnMut(&str),
) -> std::io::Result<()> {
    if depth_left == 0 {
        return Ok(());
    }
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let child_rel = if rel.is_empty() {
            name
        } else {
            format!("{rel}/{name}")
        };
        let ft = entry.file_type()?;
        if ft.is_dir() {
            walk(&entry.path(), &child_rel, depth_left - 1, found)?;
        } else if entry.path().is_file() {
            found(&child_rel);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_matching() {
        assert!(matches("*.txt", "a.txt"));
        assert!(!matches("*.txt", "dir/a.txt"));
        assert!(matches("**/*.txt", "a.txt"));
        assert!(matches("**/*.txt", "x/y/a.txt"));
        assert!(matches("static/**", "static/a/b"));
        assert!(matches("a?c", "abc"));
        assert!(!matches("a?c", "ac"));
        assert!(matches("[a-c]x", "bx"));
        assert!(!matches("[!a-c]x", "bx"));
        assert!(matches("[!a-c]x", "dx"));
        assert!(matches("./static/*.css", "static/site.css"));
        assert!(matches("*", ".hidden"));
        assert!(matches("a[", "a["));
    }
}
