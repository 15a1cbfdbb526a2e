//! A task's `touches`: glob patterns naming the files it is likely to change, and the test of
//! whether two tasks' patterns may name a file in common. `ralph run -j N` keeps two tasks
//! whose patterns may overlap from running at the same time.
//!
//! Patterns are relative to the repository root, with `/` between components: `*` and `?`
//! stay within one component, `**` as a whole component matches any number of them (none
//! included). A pattern names files, not folders: `src/parser` is one file, and the folder with
//! everything below it is `src/parser/**` or, as in `.gitignore`, `src/parser/`. (Taking every
//! pattern as a possible folder would make `**/mod.rs` overlap every other pattern: any path
//! could be a folder holding a `mod.rs`.)
//!
//! Invariant: [`may_conflict`] never answers `false` for two lists that share a file. Where the
//! syntax is beyond this small dialect (braces, an unclosed class) or unsure, it answers `true`:
//! a needless wait costs some speed, two tasks editing one file at once cost a failed merge.

/// Why a `touches` pattern is refused; the caller adds the spec's file and line.
pub fn validate(pattern: &str) -> Result<(), String> {
    if pattern.trim().is_empty() {
        return Err("`touches` has an empty pattern".into());
    }
    // A rooted or drive-lettered path names a place outside the repository's frame of
    // reference; patterns are matched against paths relative to its root.
    let bytes = pattern.as_bytes();
    let drive = bytes.len() >= 2 && bytes[0].is_ascii_alphabetic() && bytes[1] == b':';
    if pattern.starts_with(['/', '\\']) || drive {
        return Err(format!(
            "`touches` pattern `{pattern}` is absolute (patterns are relative to the repository root)"
        ));
    }
    if pattern.split(['/', '\\']).any(|c| c == "..") {
        return Err(format!(
            "`touches` pattern `{pattern}` holds `..` (patterns stay inside the repository)"
        ));
    }
    if components(pattern).is_empty() {
        return Err(format!("`touches` pattern `{pattern}` names no path"));
    }
    Ok(())
}

/// Whether some file could match a pattern of `a` and a pattern of `b`. A task without
/// `touches` (an empty list) conflicts with nothing: it states no constraint.
pub fn may_conflict(a: &[String], b: &[String]) -> bool {
    if a.is_empty() || b.is_empty() {
        return false;
    }
    let a: Vec<Option<Vec<Comp>>> = a.iter().map(|p| compile(p)).collect();
    let b: Vec<Option<Vec<Comp>>> = b.iter().map(|p| compile(p)).collect();
    a.iter().any(|pa| {
        b.iter().any(|pb| match (pa, pb) {
            (Some(pa), Some(pb)) => overlap(pa, pb),
            // A pattern this dialect cannot read may name any file.
            _ => true,
        })
    })
}

/// One character position inside a component.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tok {
    Lit(char),
    /// `?` or a `[...]` class: exactly one character (a class taken as any one, a superset).
    One,
    /// `*`: any run of characters within the component.
    Star,
}

/// One path component of a pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Comp {
    Seg(Vec<Tok>),
    /// `**`: any number of whole components, none included.
    Any,
}

/// The pattern's components without empty and `.` ones (`./src//a/` is `src/a`).
fn components(pattern: &str) -> Vec<&str> {
    pattern.split('/').filter(|c| !c.is_empty() && *c != ".").collect()
}

/// The pattern as components, a trailing `/` read as `/**`; `None` when it is beyond this
/// dialect, to be taken as matching every file.
fn compile(pattern: &str) -> Option<Vec<Comp>> {
    if validate(pattern).is_err() || pattern.contains(['{', '}']) {
        return None;
    }
    let mut comps = Vec::new();
    for c in components(pattern) {
        // `**` beside other characters (`**.rs`) is a plain `*` to some matchers and crosses
        // `/` to others; a whole `**` component covers both readings.
        if c.contains("**") {
            comps.push(Comp::Any);
        } else {
            comps.push(Comp::Seg(segment(c)?));
        }
    }
    if pattern.ends_with('/') {
        comps.push(Comp::Any);
    }
    Some(comps)
}

fn segment(c: &str) -> Option<Vec<Tok>> {
    let chars: Vec<char> = c.chars().collect();
    let mut toks = Vec::with_capacity(chars.len());
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '*' => {
                if toks.last() != Some(&Tok::Star) {
                    toks.push(Tok::Star);
                }
            }
            '?' => toks.push(Tok::One),
            '\\' => {
                i += 1;
                toks.push(Tok::Lit(*chars.get(i)?));
            }
            '[' => {
                // `[!]...]`: a leading `!` or `^` negates, and a `]` right after it is a member.
                let mut j = i + 1;
                if matches!(chars.get(j), Some('!' | '^')) {
                    j += 1;
                }
                if chars.get(j) == Some(&']') {
                    j += 1;
                }
                // A class not closed within its component may hold a `/` to some matcher.
                let close = chars[j.min(chars.len())..].iter().position(|&ch| ch == ']')?;
                i = j + close;
                toks.push(Tok::One);
            }
            ch => toks.push(Tok::Lit(ch)),
        }
        i += 1;
    }
    Some(toks)
}

/// Whether one path matches both component lists: a walk over pairs of positions, where a
/// `**` may take no component or one more and two segments step together when they share a
/// name.
fn overlap(a: &[Comp], b: &[Comp]) -> bool {
    walk(a.len(), b.len(), |i, j, next| match (a.get(i), b.get(j)) {
        (Some(Comp::Any), _) => {
            next(i + 1, j);
            if j < b.len() {
                next(i, j + 1);
            }
        }
        (_, Some(Comp::Any)) => {
            next(i, j + 1);
            if i < a.len() {
                next(i + 1, j);
            }
        }
        (Some(Comp::Seg(x)), Some(Comp::Seg(y))) if segments_overlap(x, y) => next(i + 1, j + 1),
        _ => {}
    })
}

/// Whether some non-empty name matches both segments. (A segment that matches only the empty
/// name is all `*`, which matches every name, so the empty name never decides alone.)
fn segments_overlap(a: &[Tok], b: &[Tok]) -> bool {
    walk(a.len(), b.len(), |i, j, next| {
        let (x, y) = (a.get(i), b.get(j));
        // A `*` may match nothing.
        if x == Some(&Tok::Star) {
            next(i + 1, j);
        }
        if y == Some(&Tok::Star) {
            next(i, j + 1);
        }
        // Or both take one character they can agree on; a `*` stays where it is.
        if let (Some(&x), Some(&y)) = (x, y) {
            let agree = match (x, y) {
                // Compared without case: on macOS and Windows `README.md` and `readme.md` are
                // one file.
                (Tok::Lit(p), Tok::Lit(q)) => p == q || p.to_lowercase().eq(q.to_lowercase()),
                _ => true,
            };
            if agree {
                let step = |t: Tok, k: usize| if t == Tok::Star { k } else { k + 1 };
                next(step(x, i), step(y, j));
            }
        }
    })
}

/// Reachability from `(0, 0)` to `(n, m)` over pairs of positions, each visited once; `moves`
/// calls `next` with the pairs one step from `(i, j)`.
fn walk(n: usize, m: usize, moves: impl Fn(usize, usize, &mut dyn FnMut(usize, usize))) -> bool {
    let mut seen = vec![false; (n + 1) * (m + 1)];
    let mut todo = vec![(0, 0)];
    seen[0] = true;
    while let Some((i, j)) = todo.pop() {
        if (i, j) == (n, m) {
            return true;
        }
        moves(i, j, &mut |i2, j2| {
            if i2 <= n && j2 <= m && !seen[i2 * (m + 1) + j2] {
                seen[i2 * (m + 1) + j2] = true;
                todo.push((i2, j2));
            }
        });
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(patterns: &str) -> Vec<String> {
        patterns.split_whitespace().map(String::from).collect()
    }

    /// `may_conflict` both ways round, which must agree.
    fn conflict(a: &str, b: &str) -> bool {
        let (a, b) = (list(a), list(b));
        let there = may_conflict(&a, &b);
        assert_eq!(there, may_conflict(&b, &a), "asymmetric for {a:?} and {b:?}");
        there
    }

    #[test]
    fn the_examples() {
        assert!(conflict("src/a/**", "src/a/b.rs"));
        assert!(!conflict("src/*.rs", "src/x/y.rs"));
        assert!(!conflict("src/**", "tests/**"));
        assert!(conflict("Cargo.toml", "Cargo.toml"));
        assert!(conflict("*.md", "README.md"));
        assert!(conflict("src/**/mod.rs", "src/a/b/mod.rs"));
        assert!(!conflict("docs/*", "src/*"));
    }

    #[test]
    fn no_touches_conflicts_with_nothing() {
        assert!(!conflict("", ""));
        assert!(!conflict("", "**"));
        assert!(!conflict("", "Cargo.toml"));
    }

    #[test]
    fn literal_paths() {
        assert!(!conflict("Cargo.toml", "Cargo.lock"));
        assert!(!conflict("src/a.rs", "src/b.rs"));
        assert!(!conflict("src/a.rs", "a.rs"));
        assert!(conflict("./src//a.rs", "src/a.rs"));
        assert!(conflict("README.md", "readme.md"));
    }

    #[test]
    fn a_trailing_slash_names_a_folder() {
        assert!(conflict("src/parser/", "src/parser/lexer.rs"));
        assert!(conflict("src/parser/", "src/parser/**/*.rs"));
        assert!(conflict("src/parser/", "src/parser/a/b/c.rs"));
        assert!(!conflict("src/parser/", "src/parsers/a.rs"));
        // Without it, a pattern names files only.
        assert!(!conflict("src/parser", "src/parser/lexer.rs"));
        assert!(!conflict("src/*", "src/a/b.rs"));
    }

    #[test]
    fn star_stays_within_one_component() {
        assert!(conflict("src/*.rs", "src/lib.rs"));
        assert!(conflict("src/*.rs", "src/*"));
        assert!(conflict("src/a*.rs", "src/*b.rs"));
        assert!(!conflict("src/a*", "src/b*"));
        assert!(!conflict("src/*.rs", "src/*.toml"));
        assert!(!conflict("*.md", "docs/README.md"));
        assert!(!conflict("src/*/mod.rs", "src/mod.rs"));
        assert!(conflict("src/*/mod.rs", "src/a/mod.rs"));
        assert!(conflict("a*b*c", "*bc"));
        assert!(!conflict("a*b", "*c"));
    }

    #[test]
    fn question_mark_is_one_character() {
        assert!(conflict("src/?.rs", "src/a.rs"));
        assert!(!conflict("src/?.rs", "src/ab.rs"));
        assert!(!conflict("src/?.rs", "src/.rs"));
        assert!(conflict("src/??.rs", "src/*b.rs"));
        assert!(!conflict("src/?", "src/a?*c.rs/x"));
    }

    #[test]
    fn double_star_takes_any_number_of_components() {
        assert!(conflict("**", "anything/at/all"));
        assert!(conflict("**/mod.rs", "mod.rs"));
        assert!(conflict("**/mod.rs", "src/a/b/mod.rs"));
        assert!(!conflict("**/mod.rs", "src/a/b/lib.rs"));
        assert!(conflict("src/**/tests/*.rs", "**/tests/x.rs"));
        assert!(conflict("a/**/b", "a/b"));
        assert!(conflict("a/**/z/*.rs", "a/*/*/z/y.rs"));
        assert!(!conflict("a/**/z/*.rs", "b/**/z/*.rs"));
        assert!(!conflict("src/**/*.rs", "tests/**"));
        assert!(conflict("src/**.rs", "src/a/b.rs"));
    }

    #[test]
    fn any_pattern_of_either_list_counts() {
        assert!(conflict("docs/* Cargo.toml", "src/** Cargo.toml"));
        assert!(conflict("docs/* src/lib.rs", "tests/** src/*.rs"));
        assert!(!conflict("docs/* Cargo.toml", "src/** tests/** Cargo.lock"));
    }

    #[test]
    fn classes_escapes_and_braces() {
        assert!(conflict("src/[ab].rs", "src/a.rs"));
        assert!(!conflict("src/[ab].rs", "src/ab.rs"));
        assert!(conflict("src/[]x].rs", "src/?.rs"));
        assert!(conflict(r"src/\*.rs", "src/*.rs"));
        assert!(!conflict(r"src/\*.rs", "src/a.rs"));
        // Beyond the dialect: taken as any file.
        assert!(conflict("src/{a,b}.rs", "tests/x.rs"));
        assert!(conflict("src/[ab", "tests/x.rs"));
        assert!(conflict("a[/]b", "a/b"));
    }

    #[test]
    fn refused_patterns() {
        assert!(validate("src/**").is_ok());
        assert!(validate("./Cargo.toml").is_ok());
        assert!(validate("a..b/c").is_ok());
        for bad in ["", "  ", "/etc/passwd", r"\x", "C:/x", "../x", "src/../x", "src/..", ".", "./", "//"] {
            assert!(validate(bad).is_err(), "{bad:?} is accepted");
        }
        // A refused pattern that reaches `may_conflict` anyway may name any file.
        assert!(conflict("../x", "src/a.rs"));
    }
}
