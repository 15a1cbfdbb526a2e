//! What an agent wrote, made safe for the user's terminal. An agent's output may carry control
//! sequences that act on the terminal rather than show text: OSC 52 writes the clipboard,
//! OSC 0/2 set the window title, OSC 8 hides a link behind text, DCS and other strings and
//! CSI sequences move the cursor, clear the screen or answer queries. [`Sanitizer`] drops
//! every escape sequence (colours, CSI `m`, kept on request), the C1 controls (U+0080 to
//! U+009F) and the C0 controls but newline and tab. It works on a stream: a sequence cut
//! between two chunks is held back until its end arrives, never shown half.
//!
//! `text::strip_ansi` is [`sanitize`] without colours: what ralph scans an agent's
//! output for (the promise, learnings, test summaries) is the text `ralph logs` shows.

/// The longest escape sequence held back waiting for its end; a longer one is dropped whole.
const MAX_PENDING: usize = 64 * 1024;

/// A streaming sanitiser; see the module doc.
#[derive(Debug, Default)]
pub struct Sanitizer {
    keep_colours: bool,
    pending: Vec<u8>,
}

/// How far an escape sequence starting at `b[0] == ESC` runs, or `None` if `b` ends first.
/// Returns the sequence's length and whether it is a colour (SGR) sequence.
fn escape_len(b: &[u8]) -> Option<(usize, bool)> {
    match *b.get(1)? {
        b'[' => {
            // CSI: parameter bytes, intermediate bytes, one final byte.
            let mut j = 2;
            while let Some(&c) = b.get(j) {
                match c {
                    // Parameter (0x30-0x3F) and intermediate (0x20-0x2F) bytes.
                    0x20..=0x3F => j += 1,
                    0x40..=0x7E => {
                        let sgr = c == b'm'
                            && b[2..j].iter().all(|&p| p.is_ascii_digit() || p == b';' || p == b':');
                        return Some((j + 1, sgr));
                    }
                    // Not a valid sequence: drop what was read, show the rest.
                    _ => return Some((j, false)),
                }
            }
            None
        }
        // OSC, DCS, SOS, PM, APC: a string up to BEL (OSC) or ST (ESC \ or C1 ST).
        b']' | b'P' | b'X' | b'^' | b'_' => {
            let mut j = 2;
            while j < b.len() {
                match b[j] {
                    0x07 => return Some((j + 1, false)),
                    0x1B if b.get(j + 1) == Some(&b'\\') => return Some((j + 2, false)),
                    0x1B if j + 1 == b.len() => return None,
                    0xC2 if b.get(j + 1) == Some(&0x9C) => return Some((j + 2, false)),
                    _ => j += 1,
                }
            }
            None
        }
        // Other escapes: intermediates, then one final byte (ESC c resets the terminal).
        _ => {
            let mut j = 1;
            while let Some(&c) = b.get(j) {
                match c {
                    0x20..=0x2F => j += 1,
                    // Not a final byte: the first byte of a character, which is kept whole.
                    0x80.. => return Some((j, false)),
                    _ => return Some((j + 1, false)),
                }
            }
            None
        }
    }
}

impl Sanitizer {
    pub fn new(keep_colours: bool) -> Self {
        Sanitizer { keep_colours, pending: Vec::new() }
    }

    /// Sanitises `chunk`; returns what is safe to show now.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<u8> {
        let mut buf = std::mem::take(&mut self.pending);
        buf.extend_from_slice(chunk);
        let mut out = Vec::with_capacity(buf.len());
        let mut i = 0;
        while i < buf.len() {
            match buf[i] {
                0x1B => match escape_len(&buf[i..]) {
                    Some((n, sgr)) => {
                        if sgr && self.keep_colours {
                            out.extend_from_slice(&buf[i..i + n]);
                        }
                        i += n;
                    }
                    None => {
                        if buf.len() - i <= MAX_PENDING {
                            self.pending = buf[i..].to_vec();
                        }
                        return out;
                    }
                },
                b'\n' | b'\t' => {
                    out.push(buf[i]);
                    i += 1;
                }
                0x00..=0x1F | 0x7F => i += 1,
                // C1 controls, UTF-8 encoded: a terminal may take U+009B as CSI.
                0xC2 => match buf.get(i + 1) {
                    Some(0x80..=0x9F) => i += 2,
                    Some(_) => {
                        out.push(0xC2);
                        i += 1;
                    }
                    None => {
                        self.pending = vec![0xC2];
                        return out;
                    }
                },
                c => {
                    out.push(c);
                    i += 1;
                }
            }
        }
        out
    }

    /// Ends the stream: a sequence still unfinished is dropped.
    pub fn finish(&mut self) {
        self.pending.clear();
    }
}

/// `text` sanitised whole.
pub fn sanitize(text: &str, keep_colours: bool) -> String {
    // Most lines carry no control at all (the scanner sanitises every line an agent prints).
    let plain = |b: &u8| matches!(b, b'\n' | b'\t' | 0x20..=0x7E) || (*b >= 0x80 && *b != 0xC2);
    if text.as_bytes().iter().all(plain) {
        return text.to_string();
    }
    let mut s = Sanitizer::new(keep_colours);
    String::from_utf8(s.push(text.as_bytes()))
        .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_sequences_are_dropped_and_colours_kept_on_request() {
        let text = "a\x1b]52;c;ZWNobyBwd25lZA==\x07b\x1b]0;title\x1b\\c\x1b[2J\x1b[31mred\x1b[0m\x1bcd\u{9b}31m\x08e\r\n";
        assert_eq!(sanitize(text, true), "abc\x1b[31mred\x1b[0md31me\n");
        assert_eq!(sanitize(text, false), "abcredd31me\n");
        // An OSC ended by ST does not swallow the text after it.
        assert_eq!(sanitize("x\x1b]8;;http://evil\x1b\\link\x1b]8;;\x1b\\ y", false), "xlink y");
    }

    #[test]
    fn a_sequence_split_across_chunks_is_held_back() {
        let mut s = Sanitizer::new(true);
        let mut out = Vec::new();
        // The last two chunks split U+009D (OSC as a C1 control) between its two bytes.
        let chunks: [&[u8]; 6] =
            [b"one \x1b", b"]52;c;", b"aGk=", b"\x07two \x1b[3", b"2mgreen\xc2", b"\x9d"];
        for chunk in chunks {
            out.extend(s.push(chunk));
        }
        out.extend(s.push("\x1b[0m".as_bytes()));
        assert_eq!(String::from_utf8(out).unwrap(), "one two \x1b[32mgreen\x1b[0m");
        assert!(s.push(b"\x1b]2;never ended").is_empty());
        s.finish();
        assert_eq!(s.push(b"after"), b"after");
    }
}
