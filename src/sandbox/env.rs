//! The environment allowlist: which of ralph's variables reach a sandboxed agent (or any agent
//! with `[agent] env_allowlist = true`). The child starts from an empty environment and gets
//! only the variables a pattern names, plus those ralph sets itself; nothing is removed by
//! name, so a variable nobody thought of (a cloud key, a token for another service) never
//! passes.
//!
//! A pattern is a variable's name, or a prefix followed by `*` (`LC_*`).

/// What every agent gets: the basics of a working process (its search path, home, user,
/// locale, terminal, time zone, temporary folder), the proxy settings it needs to reach its
/// model through a corporate proxy, the certificate bundles that go with them, and the worker
/// number ralph gives a parallel run's agents.
pub const BASE: &[&str] = &[
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "SHELL",
    "LANG",
    "LANGUAGE",
    "LC_*",
    "TERM",
    "COLORTERM",
    "NO_COLOR",
    "TZ",
    "TMPDIR",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "ALL_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "all_proxy",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "NODE_EXTRA_CA_CERTS",
    "RALPH_WORKER",
];

/// Whether `name` matches `pattern` (a name, or a prefix ending in `*`).
pub fn matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => name == pattern,
    }
}

/// Whether `pattern` is a pattern at all: a variable name, optionally ending in `*`.
pub fn valid_pattern(pattern: &str) -> bool {
    let name = pattern.strip_suffix('*').unwrap_or(pattern);
    !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The child's whole environment: the variables of `inherited` that a pattern of `allowed`
/// names (none of `removed`), then `explicit` (what ralph and `[agent.env]` set), which wins.
/// Sorted by name.
pub fn allowed(
    inherited: &[(String, String)],
    allowed: &[&str],
    explicit: &[(String, String)],
    removed: &[String],
) -> Vec<(String, String)> {
    let mut env: std::collections::BTreeMap<String, String> = inherited
        .iter()
        .filter(|(k, _)| !removed.contains(k) && allowed.iter().any(|p| matches(p, k)))
        .cloned()
        .collect();
    env.extend(explicit.iter().cloned());
    env.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn only_named_variables_pass_and_ralphs_own_win() {
        let inherited = vars(&[
            ("PATH", "/bin"),
            ("LC_ALL", "C"),
            ("AWS_SECRET_ACCESS_KEY", "cloud"),
            ("ANTHROPIC_API_KEY", "model"),
            ("ANTHROPIC", "not a prefix match"),
            ("CLAUDECODE", "1"),
            ("RALPH_TASK", "stale"),
        ]);
        let explicit = vars(&[("RALPH_TASK", "010-a"), ("MY_SETTING", "x")]);
        let mut patterns = BASE.to_vec();
        patterns.extend(["ANTHROPIC_*", "CLAUDE*"]);
        let env = allowed(&inherited, &patterns, &explicit, &["CLAUDECODE".to_string()]);
        assert_eq!(
            env,
            vars(&[
                ("ANTHROPIC_API_KEY", "model"),
                ("LC_ALL", "C"),
                ("MY_SETTING", "x"),
                ("PATH", "/bin"),
                ("RALPH_TASK", "010-a"),
            ])
        );
    }

    #[test]
    fn patterns_are_names_or_prefixes() {
        for ok in ["PATH", "LC_*", "my_var", "X1"] {
            assert!(valid_pattern(ok), "{ok}");
        }
        for bad in ["", "*", "1X", "A-B", "A*B", "A B", "A=1"] {
            assert!(!valid_pattern(bad), "{bad}");
        }
        assert!(matches("LC_*", "LC_ALL") && !matches("LC_*", "LANG") && !matches("PATH", "PATHX"));
    }
}
