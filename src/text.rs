//! Small text helpers with no dependency above the terminal sanitizer, so any module may use
//! them without a cycle: ANSI stripping for what ralph scans, an error's cause chain on one
//! line, line and column of an offset, and durations as people write them.

use std::time::Duration;

/// Removes escape sequences (CSI, OSC, DCS and the other strings, whether ended by BEL or ST)
/// and control characters but newline and tab, carriage returns included (PTY output carries
/// both): the terminal module's [`crate::term::sanitize`], colours dropped, so what is scanned
/// is what `ralph logs` shows.
pub fn strip_ansi(s: &str) -> String {
    crate::term::sanitize(s, false)
}

/// Formats an error and its `source()` chain as "a: b: c".
pub fn chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut cur = err.source();
    while let Some(e) = cur {
        let s = e.to_string();
        if !out.contains(&s) {
            out.push_str(": ");
            out.push_str(&s);
        }
        cur = e.source();
    }
    out
}

/// 1-based line and column of a byte offset.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// Parses "30m", "2h", "1h 30m", "500ms"; a bare number is seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    if let Ok(secs) = t.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    humantime::parse_duration(t)
        .map_err(|e| format!("invalid duration `{s}` ({e}); write it like \"30s\", \"10m\" or \"2h\""))
}
