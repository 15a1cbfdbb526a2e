//! Gates beyond the checks, so that passing them means the work is done, not the judge gamed:
//!
//! - protected paths: an iteration that changes them is rejected. By default the check scripts
//!   (files the check commands name), CI configuration, and the specs' bodies (ralph owns their
//!   `status:` lines); `[gates] protected` replaces the list with glob patterns.
//! - test weakening: deleted test files, new skip or ignore markers in added lines, and a drop
//!   in the number of tests a check's runner reports (cargo test, nextest, pytest, jest,
//!   vitest), compared with the last green count.

use crate::git::Change;
use crate::record::Cause;
use std::collections::BTreeMap;

/// CI configuration, protected by default.
const CI_PATTERNS: &[&str] = &[
    ".github/workflows/**",
    ".gitlab-ci.yml",
    ".circleci/**",
    ".ci/**",
    "Jenkinsfile",
    "azure-pipelines.yml",
    ".travis.yml",
    ".buildkite/**",
];

/// Where tests live.
const TEST_PATTERNS: &[&str] = &[
    "tests/**",
    "test/**",
    "**/tests/**",
    "**/__tests__/**",
    "**/*_test.go",
    "**/test_*.py",
    "**/*_test.py",
    "**/*.test.js",
    "**/*.test.ts",
    "**/*.test.jsx",
    "**/*.test.tsx",
    "**/*.spec.js",
    "**/*.spec.ts",
    "**/*Test.java",
];

/// Markers that switch a test off, as they appear in added lines.
const SKIP_MARKERS: &[&str] = &[
    "#[ignore",
    "@pytest.mark.skip",
    "@pytest.mark.xfail",
    "@unittest.skip",
    "pytest.skip(",
    "it.skip(",
    "test.skip(",
    "describe.skip(",
    "it.only(",
    "test.only(",
    "describe.only(",
    "xit(",
    "xdescribe(",
    "t.Skip(",
    "@Disabled",
    "@Ignore",
];

/// Whether `path` (relative to the repository root) is where tests live, by [`TEST_PATTERNS`]:
/// the files whose deletion the gates reject, and the ones `ralph eval` puts back before its
/// hidden check.
pub fn is_test_file(path: &str) -> bool {
    TEST_PATTERNS.iter().any(|p| glob_match(p, path))
}

/// Whether `path` matches a glob: `*` within one path segment, `**` across segments.
pub fn glob_match(pattern: &str, path: &str) -> bool {
    fn rec(p: &[&str], s: &[&str]) -> bool {
        match p.split_first() {
            None => s.is_empty(),
            Some((&"**", rest)) => (0..=s.len()).any(|i| rec(rest, &s[i..])),
            Some((seg, rest)) => {
                !s.is_empty() && seg_match(seg.as_bytes(), s[0].as_bytes()) && rec(rest, &s[1..])
            }
        }
    }
    fn seg_match(p: &[u8], s: &[u8]) -> bool {
        match p.split_first() {
            None => s.is_empty(),
            Some((b'*', rest)) => (0..=s.len()).any(|i| seg_match(rest, &s[i..])),
            Some((c, rest)) => s.first() == Some(c) && seg_match(rest, &s[1..]),
        }
    }
    let p: Vec<&str> = pattern.split('/').collect();
    let s: Vec<&str> = path.split('/').collect();
    rec(&p, &s)
}

/// The protected patterns: the configured ones, or the defaults for these check commands.
pub fn protected_patterns(
    configured: Option<&[String]>,
    check_commands: &[String],
    root: &std::path::Path,
) -> Vec<String> {
    if let Some(c) = configured {
        return c.to_vec();
    }
    const INTERPRETERS: &[&str] =
        &["sh", "bash", "zsh", "python", "python3", "node", "ruby", "perl", "deno", "bun"];
    let mut out: Vec<String> = CI_PATTERNS.iter().map(|s| s.to_string()).collect();
    // A check's script: the program it runs, or what an interpreter runs, when that is a file
    // in the repository (`./check.sh`, `sh scripts/check.sh`; not the `docs.md` of `grep x docs.md`).
    for cmd in check_commands {
        let words: Vec<&str> = cmd.split_whitespace().map(|w| w.trim_matches(['"', '\''])).collect();
        for (i, w) in words.iter().enumerate() {
            let runs_it = i == 0
                || INTERPRETERS.contains(&words[i - 1])
                || ["&&", "||", ";", "|"].contains(&words[i - 1]);
            let w = w.trim_start_matches("./");
            if runs_it
                && !w.is_empty()
                && !w.contains("..")
                && root.join(w).is_file()
                && !out.iter().any(|o| o == w)
            {
                out.push(w.to_string());
            }
        }
    }
    out
}

/// One thing a gate caught: its kind (the record's `cause`) and what it says of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub cause: Cause,
    pub message: String,
}

impl Rejection {
    pub fn new(cause: Cause, message: String) -> Rejection {
        Rejection { cause, message }
    }
}

/// Why an iteration was rejected by a gate; empty when it passed.
pub fn inspect(
    changes: &[Change],
    added_lines: &[(String, String)],
    protected: &[String],
    spec_bodies_before: &BTreeMap<String, String>,
    spec_bodies_after: &BTreeMap<String, String>,
) -> Vec<Rejection> {
    let mut out = Vec::new();
    for c in changes {
        if let Some(p) = protected.iter().find(|p| glob_match(p, &c.path)) {
            out.push(Rejection::new(
                Cause::ProtectedPath,
                format!("it changed the protected path {} (`{p}`)", c.path),
            ));
        }
        if c.kind == 'D' && is_test_file(&c.path) {
            out.push(Rejection::new(Cause::TestDeleted, format!("it deleted the test file {}", c.path)));
        }
    }
    for (path, before) in spec_bodies_before {
        match spec_bodies_after.get(path) {
            Some(after) if after.trim() != before.trim() => {
                out.push(Rejection::new(Cause::SpecRewritten, format!("it rewrote the spec {path}")))
            }
            _ => {}
        }
    }
    for (path, line) in added_lines {
        if let Some(m) = SKIP_MARKERS.iter().find(|m| line.contains(*m)) {
            out.push(Rejection::new(
                Cause::SkipMarker,
                format!("it added a skip marker in {path}: `{}` ({m})", line.trim()),
            ));
        }
    }
    out
}

/// Whether `text` holds a skip or ignore marker anywhere: when a changed file holds none, none
/// of the lines it adds can, and its diff need not be read.
pub fn holds_skip_marker(text: &[u8]) -> bool {
    // Every marker holds a `#`, `@` or `(` (a test checks it): one vectorised pass finds those,
    // and only there are the markers compared. Most changed files have few, where a search per
    // marker read the whole file sixteen times.
    memchr::memchr3_iter(b'#', b'@', b'(', text).any(|i| {
        SKIP_MARKERS.iter().any(|m| {
            let m = m.as_bytes();
            m.iter()
                .enumerate()
                .any(|(k, &c)| c == text[i] && i >= k && text.get(i - k..i - k + m.len()) == Some(m))
        })
    })
}

/// The number of tests a runner's output line reports, if it is a summary line.
pub fn test_count(line: &str) -> Option<u64> {
    let l = crate::text::strip_ansi(line);
    let l = l.trim();
    let num_before = |s: &str, word: &str| -> Option<u64> {
        let i = s.find(word)?;
        s[..i].trim_end().rsplit(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
    };
    // cargo test: "test result: ok. 12 passed; 1 failed; 2 ignored; ..."
    if let Some(rest) = l.strip_prefix("test result:") {
        return Some(num_before(rest, " passed").unwrap_or(0) + num_before(rest, " failed").unwrap_or(0));
    }
    // nextest: "Summary [   6.888s] 84 tests run: 84 passed, 0 skipped"
    if l.starts_with("Summary [") {
        return num_before(l, " test");
    }
    // jest: "Tests:       1 failed, 5 passed, 6 total"
    if l.starts_with("Tests:") {
        return num_before(l, " total");
    }
    // vitest: "Tests  5 passed (5)"
    if let Some(rest) = l.strip_prefix("Tests ") {
        let open = rest.rfind('(')?;
        return rest[open + 1..].trim_end_matches(')').trim().parse().ok();
    }
    // pytest: "===== 5 passed, 1 failed, 2 skipped in 0.12s ====="
    if l.starts_with('=')
        && l.ends_with('=')
        && (l.contains(" passed") || l.contains(" failed"))
        && l.contains(" in ")
    {
        return Some(num_before(l, " passed").unwrap_or(0) + num_before(l, " failed").unwrap_or(0));
    }
    None
}

/// The failing test a runner's output line names, if it names one.
pub fn failing_test(line: &str) -> Option<String> {
    let l = crate::text::strip_ansi(line);
    let t = l.trim();
    // cargo test: "test parser::tests::nested ... FAILED"
    if let Some(rest) = t.strip_prefix("test ")
        && let Some(name) = rest.strip_suffix(" ... FAILED")
    {
        return Some(name.trim().to_string());
    }
    // nextest: "FAIL [   0.003s] crate::bin module::test"
    if let Some(rest) = t.strip_prefix("FAIL [")
        && let Some((_, name)) = rest.split_once("] ")
    {
        return Some(name.trim().to_string());
    }
    // pytest: "FAILED tests/test_x.py::test_name - AssertionError"
    if let Some(rest) = t.strip_prefix("FAILED ") {
        return Some(rest.split(" - ").next().unwrap_or(rest).trim().to_string());
    }
    // go test: "--- FAIL: TestName (0.00s)"
    if let Some(rest) = t.strip_prefix("--- FAIL: ") {
        return Some(rest.split(" (").next().unwrap_or(rest).trim().to_string());
    }
    // jest: "✕ adds numbers (5 ms)"; vitest: "× adds numbers"
    for mark in ["✕ ", "× "] {
        if let Some(rest) = t.strip_prefix(mark) {
            let name = match rest.rfind(" (") {
                Some(i) if rest.ends_with(')') => &rest[..i],
                _ => rest,
            };
            return Some(name.trim().to_string());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The pre-check must find every marker the line check names, anywhere in a file: a file it
    /// passes over is never diffed, and a marker in it would go unseen.
    #[test]
    fn every_skip_marker_is_found_anywhere_in_a_file() {
        for m in SKIP_MARKERS {
            assert!(m.contains(['#', '@', '(']), "{m} has no byte the pre-check looks for");
        }
        let filler = "fn f() -> u32 { 1 }\n".repeat(500);
        for m in SKIP_MARKERS {
            for text in [m.to_string(), format!("{filler}    {m}x\n{filler}"), format!("{filler}{m}")] {
                assert!(holds_skip_marker(text.as_bytes()), "{m} not found");
            }
        }
        assert!(!holds_skip_marker(filler.as_bytes()));
        assert!(!holds_skip_marker(b"#[test]\nfn it_skips() { skip(1) }\n"));
    }

    #[test]
    fn globs() {
        assert!(glob_match(".github/workflows/**", ".github/workflows/ci.yml"));
        assert!(glob_match("**/*_test.go", "pkg/a/b_test.go"));
        assert!(glob_match("**/*_test.go", "b_test.go"));
        assert!(glob_match("tests/**", "tests/suite/a.rs"));
        assert!(!glob_match("tests/**", "src/tests.rs"));
        assert!(glob_match("check.sh", "check.sh"));
        assert!(!glob_match("*.sh", "dir/check.sh"));
    }

    #[test]
    fn failing_tests_from_runner_output() {
        assert_eq!(
            failing_test("test parser::tests::nested ... FAILED").as_deref(),
            Some("parser::tests::nested")
        );
        assert_eq!(
            failing_test("        FAIL [   0.003s] ralph::all suite::x::y").as_deref(),
            Some("ralph::all suite::x::y")
        );
        assert_eq!(
            failing_test("FAILED tests/test_a.py::test_b - assert 1 == 2").as_deref(),
            Some("tests/test_a.py::test_b")
        );
        assert_eq!(failing_test("--- FAIL: TestAdd (0.00s)").as_deref(), Some("TestAdd"));
        assert_eq!(failing_test("    ✕ adds numbers (5 ms)").as_deref(), Some("adds numbers"));
        assert_eq!(failing_test("test parser::tests::nested ... ok"), None);
    }

    #[test]
    fn test_counts_from_runner_summaries() {
        assert_eq!(test_count("test result: ok. 12 passed; 1 failed; 2 ignored; 0 measured"), Some(13));
        assert_eq!(test_count("     Summary [   6.888s] 84 tests run: 84 passed, 0 skipped"), Some(84));
        assert_eq!(test_count("Tests:       1 failed, 5 passed, 6 total"), Some(6));
        assert_eq!(test_count(" Tests  5 passed (5)"), Some(5));
        assert_eq!(test_count("============ 5 passed, 1 failed, 2 skipped in 0.12s ============"), Some(6));
        assert_eq!(test_count("running 12 tests"), None);
    }

    #[test]
    fn gates_name_what_they_caught() {
        let changes = vec![
            Change { kind: 'M', path: ".github/workflows/ci.yml".into() },
            Change { kind: 'D', path: "tests/parser_test.rs".into() },
            Change { kind: 'M', path: "src/lib.rs".into() },
        ];
        let added = vec![("src/lib.rs".to_string(), "    #[ignore]".to_string())];
        let before = BTreeMap::from([("specs/010-a.md".to_string(), "# A\n\nDo it.\n".to_string())]);
        let after = BTreeMap::from([("specs/010-a.md".to_string(), "# A\n\nDo less.\n".to_string())]);
        let found = inspect(&changes, &added, &[".github/workflows/**".to_string()], &before, &after);
        assert_eq!(found.len(), 4, "{found:?}");
        assert!(found[0].message.contains("protected path .github/workflows/ci.yml"));
        assert!(found[1].message.contains("deleted the test file tests/parser_test.rs"));
        assert!(found[2].message.contains("rewrote the spec specs/010-a.md"));
        assert!(found[3].message.contains("skip marker in src/lib.rs"));
        let causes: Vec<Cause> = found.iter().map(|r| r.cause).collect();
        assert_eq!(
            causes,
            [Cause::ProtectedPath, Cause::TestDeleted, Cause::SpecRewritten, Cause::SkipMarker]
        );
    }

    #[test]
    fn default_protection_names_the_check_scripts() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("check.sh"), "").unwrap();
        std::fs::write(dir.path().join("docs.md"), "").unwrap();
        let cmds =
            ["sh ./check.sh --fast".to_string(), "cargo test".to_string(), "grep -q x docs.md".to_string()];
        let p = protected_patterns(None, &cmds, dir.path());
        assert!(p.contains(&"check.sh".to_string()));
        assert!(!p.contains(&"docs.md".to_string()));
        assert!(p.contains(&".github/workflows/**".to_string()));
        assert!(!p.contains(&"cargo".to_string()));
        let p = protected_patterns(Some(&["docs/**".to_string()]), &[], dir.path());
        assert_eq!(p, vec!["docs/**"]);
    }
}
