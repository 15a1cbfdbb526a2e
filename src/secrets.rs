//! Masking of credentials. Values of environment variables whose names look like credentials
//! (KEY, TOKEN, SECRET, PASSWORD, ...) never reach anything ralph writes: agent logs, check
//! logs, saved prompts, records, AGENTS.md.
//!
//! A value is masked in the forms it is written in, not only as itself: the agents' logs are
//! stream JSON, where a `"`, a `\` or a control character in a value is escaped (`\"`, `\\`,
//! `\n`), and a tool's JSON quoted inside a JSON string is escaped twice.
//!
//! [`StreamMasker`] masks a byte stream chunk by chunk. It holds back only the end of a chunk
//! that could be the start of a secret, so a secret split across two chunks is still caught
//! while ordinary output (the last words of a hung agent included) reaches the log at once.

use std::borrow::Cow;

/// What a masked value is replaced with.
pub const MASK: &str = "[MASKED]";

/// Name fragments that mark a variable as a credential.
const CREDENTIAL_WORDS: &[&str] = &["KEY", "TOKEN", "SECRET", "PASSWORD", "PASSWD", "CREDENTIAL", "AUTH"];

/// Values shorter than this are not masked: `DEBUG_KEY=1` would otherwise mask every "1".
const MIN_SECRET_LEN: usize = 6;

/// The shortest piece of a secret that [`Secrets::holds_part`] counts as a leak of it.
const MIN_PART_LEN: usize = 12;

/// The set of secret values to mask.
#[derive(Debug, Clone, Default)]
pub struct Secrets {
    /// Longest first, so a secret containing another is masked whole.
    values: Vec<Vec<u8>>,
}

impl Secrets {
    /// Collects secrets from `vars` (name, value pairs).
    pub fn from_vars<'a>(vars: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        let mut values: Vec<Vec<u8>> = vars
            .into_iter()
            .filter(|(name, value)| is_credential_name(name) && value.trim().len() >= MIN_SECRET_LEN)
            .flat_map(|(_, v)| written_forms(v))
            .collect();
        values.sort_by(|a, b| b.len().cmp(&a.len()).then(a.cmp(b)));
        values.dedup();
        Self { values }
    }

    /// The secrets an agent could see: ralph's own environment plus the agent's configured env.
    pub fn for_agent(agent: &crate::agent::AgentConfig) -> Self {
        let extra: Vec<(String, String)> = agent.env.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        Self::from_env(&extra)
    }

    /// Collects secrets from ralph's own environment plus `extra` (the agent's configured env).
    pub fn from_env(extra: &[(String, String)]) -> Self {
        let env: Vec<(String, String)> = std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
            .chain(extra.iter().cloned())
            .collect();
        Self::from_vars(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
    }

    /// These secrets and `values` besides, whatever the names of the variables that held them
    /// (`[[notify]]` URLs and tokens: a Slack webhook's URL is a credential in a variable
    /// named `SLACK_WEBHOOK_URL`).
    pub fn with_values<S: AsRef<str>>(mut self, values: impl IntoIterator<Item = S>) -> Self {
        self.values.extend(
            values
                .into_iter()
                .filter(|v| v.as_ref().trim().len() >= MIN_SECRET_LEN)
                .flat_map(|v| written_forms(v.as_ref())),
        );
        self.values.sort_by(|a, b| b.len().cmp(&a.len()).then(a.cmp(b)));
        self.values.dedup();
        self
    }

    /// Whether `word` is a piece of a secret long enough to count as a leak of it (an agent
    /// that writes a token's first 20 characters has leaked them).
    pub fn holds_part(&self, word: &str) -> bool {
        word.len() >= MIN_PART_LEN
            && self.values.iter().any(|v| memchr::memmem::find(v, word.as_bytes()).is_some())
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// The length of the longest end of `bytes` that is the beginning of a secret.
    fn partial_suffix(&self, bytes: &[u8]) -> usize {
        let mut hold = 0;
        for secret in &self.values {
            let max = (secret.len() - 1).min(bytes.len());
            if max <= hold {
                continue;
            }
            // Only a position holding the secret's first byte can start it: one memchr pass
            // over the window instead of a comparison per length (this runs on every chunk).
            let window = &bytes[bytes.len() - max..];
            for i in memchr::memchr_iter(secret[0], &window[..max - hold]) {
                if window[i..] == secret[..max - i] {
                    hold = max - i;
                    break;
                }
            }
        }
        hold
    }

    /// Masks every secret in `text`.
    pub fn mask(&self, text: &str) -> String {
        if self.values.is_empty() {
            return text.to_string();
        }
        String::from_utf8_lossy(&self.mask_bytes(text.as_bytes())).into_owned()
    }

    /// Masks every secret in `bytes`.
    pub fn mask_bytes(&self, bytes: &[u8]) -> Vec<u8> {
        self.mask_cow(bytes).into_owned()
    }

    /// Masks every secret in `bytes`, copying only when one is found.
    fn mask_cow<'a>(&self, bytes: &'a [u8]) -> Cow<'a, [u8]> {
        let mut cur = Cow::Borrowed(bytes);
        for secret in &self.values {
            if memchr::memmem::find(&cur, secret).is_none() {
                continue;
            }
            let mut out = Vec::with_capacity(cur.len());
            let mut rest = &cur[..];
            while let Some(i) = memchr::memmem::find(rest, secret) {
                out.extend_from_slice(&rest[..i]);
                out.extend_from_slice(MASK.as_bytes());
                rest = &rest[i + secret.len()..];
            }
            out.extend_from_slice(rest);
            cur = Cow::Owned(out);
        }
        cur
    }
}

/// `value` as itself and as JSON escapes it, once and twice (JSON quoted in a JSON string):
/// the stream-JSON logs hold a value with a `"` or a `\` only in those forms.
fn written_forms(value: &str) -> Vec<Vec<u8>> {
    let mut forms = vec![value.as_bytes().to_vec()];
    let mut cur = value.to_string();
    for _ in 0..2 {
        let quoted = serde_json::to_string(&cur).unwrap_or_default();
        let escaped = quoted.get(1..quoted.len().saturating_sub(1)).unwrap_or_default().to_string();
        if escaped == cur || escaped.is_empty() {
            break;
        }
        forms.push(escaped.as_bytes().to_vec());
        cur = escaped;
    }
    forms
}

/// The agents' own credential variables, listed so that a renamed one is still caught (all
/// of today's also match [`CREDENTIAL_WORDS`]).
const KNOWN_CREDENTIALS: &[&str] = &[
    "ANTHROPIC_API_KEY",
    "ANTHROPIC_AUTH_TOKEN",
    "CLAUDE_CODE_OAUTH_TOKEN",
    "OPENAI_API_KEY",
    "CODEX_API_KEY",
    "AZURE_OPENAI_API_KEY",
    "GEMINI_API_KEY",
    "GOOGLE_API_KEY",
    "GOOGLE_APPLICATION_CREDENTIALS",
    "OPENROUTER_API_KEY",
    "AMP_API_KEY",
    "CURSOR_API_KEY",
    "DASHSCOPE_API_KEY",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "GH_TOKEN",
    "GITHUB_TOKEN",
    "HF_TOKEN",
];

fn is_credential_name(name: &str) -> bool {
    let upper = name.to_ascii_uppercase();
    KNOWN_CREDENTIALS.contains(&upper.as_str()) || CREDENTIAL_WORDS.iter().any(|w| upper.contains(w))
}

/// Masks a stream; see the module doc for the hold-back rule.
#[derive(Debug)]
pub struct StreamMasker {
    secrets: Secrets,
    pending: Vec<u8>,
}

impl StreamMasker {
    pub fn new(secrets: Secrets) -> Self {
        Self { secrets, pending: Vec::new() }
    }

    /// Masks `chunk` and returns what is safe to write now. Output holding no secret is
    /// passed through without a copy (an agent's flood of output goes through here).
    pub fn push<'a>(&mut self, chunk: &'a [u8]) -> Cow<'a, [u8]> {
        if self.secrets.is_empty() {
            return Cow::Borrowed(chunk);
        }
        let masked = if self.pending.is_empty() {
            self.secrets.mask_cow(chunk)
        } else {
            self.pending.extend_from_slice(chunk);
            Cow::Owned(self.secrets.mask_bytes(&self.pending))
        };
        let hold = self.secrets.partial_suffix(&masked);
        let cut = masked.len() - hold;
        self.pending = masked[cut..].to_vec();
        match masked {
            Cow::Borrowed(b) => Cow::Borrowed(&b[..cut]),
            Cow::Owned(mut v) => {
                v.truncate(cut);
                Cow::Owned(v)
            }
        }
    }

    /// Returns the held-back tail, masked, at the end of the stream.
    pub fn finish(&mut self) -> Vec<u8> {
        let rest = std::mem::take(&mut self.pending);
        self.secrets.mask_bytes(&rest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secrets() -> Secrets {
        Secrets::from_vars([
            ("ANTHROPIC_API_KEY", "sk-ant-123456"),
            ("GITHUB_TOKEN", "ghp_abcdef"),
            ("HOME", "/root/home-dir"),
            ("DEBUG_KEY", "1"),
        ])
    }

    #[test]
    fn credential_values_are_masked_and_others_kept() {
        let s = secrets();
        assert_eq!(
            s.mask("key sk-ant-123456 tok ghp_abcdef home /root/home-dir 1"),
            "key [MASKED] tok [MASKED] home /root/home-dir 1"
        );
    }

    #[test]
    fn a_secret_split_across_chunks_is_masked() {
        let mut m = StreamMasker::new(secrets());
        let mut out = Vec::new();
        for chunk in ["log: sk-a", "nt-12", "3456 end\n", "gh", "p_abcdef"] {
            out.extend_from_slice(&m.push(chunk.as_bytes()));
        }
        out.extend(m.finish());
        assert_eq!(String::from_utf8(out).unwrap(), "log: [MASKED] end\n[MASKED]");
    }

    #[test]
    fn ordinary_output_is_not_held_back() {
        let mut m = StreamMasker::new(secrets());
        assert_eq!(&*m.push(b"working\n"), b"working\n");
        assert_eq!(&*m.push(b"key: sk-an"), b"key: ");
        assert_eq!(&*m.push(b"swer"), b"sk-answer");
    }

    #[test]
    fn the_held_back_end_is_the_longest_start_of_a_secret() {
        let s =
            Secrets::from_vars([("A_TOKEN", "abcabd-x"), ("B_KEY", "aaaaaab"), ("C_SECRET", "zz-123456")]);
        // The definition, one length at a time: what the memchr-driven search must agree with.
        let naive = |bytes: &[u8]| {
            let mut hold = 0;
            for secret in &s.values {
                for k in (1..secret.len()).rev() {
                    if k <= bytes.len() && bytes[bytes.len() - k..] == secret[..k] {
                        hold = hold.max(k);
                        break;
                    }
                }
            }
            hold
        };
        let alphabet = b"abdz-x1";
        let mut seed = 7u32;
        for len in 0..40 {
            for _ in 0..200 {
                let bytes: Vec<u8> = (0..len)
                    .map(|_| {
                        seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                        alphabet[(seed >> 16) as usize % alphabet.len()]
                    })
                    .collect();
                assert_eq!(s.partial_suffix(&bytes), naive(&bytes), "{}", String::from_utf8_lossy(&bytes));
            }
        }
        assert_eq!(s.partial_suffix(b"log: aaaaaa"), 6);
        assert_eq!(s.partial_suffix(b"log: abcab"), 5);
    }

    #[test]
    fn output_without_secrets_is_passed_through_uncopied() {
        let mut m = StreamMasker::new(secrets());
        assert!(matches!(m.push(b"plain output\n"), Cow::Borrowed(b"plain output\n")));
        assert!(matches!(m.push(b"key sk-ant-123456 end\n"), Cow::Owned(_)));
    }

    #[test]
    fn a_secret_is_masked_in_its_json_escaped_forms() {
        let s = Secrets::from_vars([("DB_PASSWORD", r#"pa"ss\word-1"#)]);
        // A stream-JSON log holds it escaped; a tool's JSON output inside one, escaped twice.
        let line = r#"{"text":"login pa\"ss\\word-1 ok","raw":"{\"p\":\"pa\\\"ss\\\\word-1\"}"}"#;
        let mut m = StreamMasker::new(s.clone());
        let mut out = Vec::new();
        for chunk in line.as_bytes().chunks(5) {
            out.extend_from_slice(&m.push(chunk));
        }
        out.extend(m.finish());
        let out = String::from_utf8(out).unwrap();
        assert_eq!(out, r#"{"text":"login [MASKED] ok","raw":"{\"p\":\"[MASKED]\"}"}"#);
        assert_eq!(s.mask(r#"as is: pa"ss\word-1"#), "as is: [MASKED]");
    }

    #[test]
    fn no_secrets_means_no_hold_back() {
        let mut m = StreamMasker::new(Secrets::default());
        assert_eq!(&*m.push(b"abc"), b"abc");
        assert!(m.finish().is_empty());
    }
}
