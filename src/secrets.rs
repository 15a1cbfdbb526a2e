//! Masking of credentials. Values of environment variables whose names look like credentials
//! (KEY, TOKEN, SECRET, PASSWORD, ...) never reach anything ralph writes: agent logs, check
//! logs, saved prompts, records, AGENTS.md.
//!
//! [`StreamMasker`] masks a byte stream chunk by chunk. It holds back only the end of a chunk
//! that could be the start of a secret, so a secret split across two chunks is still caught
//! while ordinary output (the last words of a hung agent included) reaches the log at once.

/// What a masked value is replaced with.
pub const MASK: &str = "[MASKED]";

/// Name fragments that mark a variable as a credential.
const CREDENTIAL_WORDS: &[&str] = &["KEY", "TOKEN", "SECRET", "PASSWORD", "PASSWD", "CREDENTIAL", "AUTH"];

/// Values shorter than this are not masked: `DEBUG_KEY=1` would otherwise mask every "1".
const MIN_SECRET_LEN: usize = 6;

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
            .map(|(_, v)| v.as_bytes().to_vec())
            .collect();
        values.sort_by(|a, b| b.len().cmp(&a.len()).then(a.cmp(b)));
        values.dedup();
        Self { values }
    }

    /// Collects secrets from ralph's own environment plus `extra` (the agent's configured env).
    pub fn from_env(extra: &[(String, String)]) -> Self {
        let env: Vec<(String, String)> = std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
            .chain(extra.iter().cloned())
            .collect();
        Self::from_vars(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// The length of the longest end of `bytes` that is the beginning of a secret.
    fn partial_suffix(&self, bytes: &[u8]) -> usize {
        let mut hold = 0;
        for secret in &self.values {
            let max = (secret.len() - 1).min(bytes.len());
            for k in (hold + 1..=max).rev() {
                if bytes[bytes.len() - k..] == secret[..k] {
                    hold = k;
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
        let mut cur = bytes.to_vec();
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
            cur = out;
        }
        cur
    }
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

    /// Masks `chunk` and returns what is safe to write now.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<u8> {
        if self.secrets.is_empty() {
            return chunk.to_vec();
        }
        self.pending.extend_from_slice(chunk);
        let masked = self.secrets.mask_bytes(&self.pending);
        let hold = self.secrets.partial_suffix(&masked);
        let cut = masked.len() - hold;
        self.pending = masked[cut..].to_vec();
        masked[..cut].to_vec()
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
            out.extend(m.push(chunk.as_bytes()));
        }
        out.extend(m.finish());
        assert_eq!(String::from_utf8(out).unwrap(), "log: [MASKED] end\n[MASKED]");
    }

    #[test]
    fn ordinary_output_is_not_held_back() {
        let mut m = StreamMasker::new(secrets());
        assert_eq!(m.push(b"working\n"), b"working\n");
        assert_eq!(m.push(b"key: sk-an"), b"key: ");
        assert_eq!(m.push(b"swer"), b"sk-answer");
    }

    #[test]
    fn no_secrets_means_no_hold_back() {
        let mut m = StreamMasker::new(Secrets::default());
        assert_eq!(m.push(b"abc"), b"abc");
        assert!(m.finish().is_empty());
    }
}
