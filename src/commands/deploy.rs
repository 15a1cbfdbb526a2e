//! `ralph deploy kubernetes|github-actions`: prints a launcher that starts N workers on other
//! machines, each `ralph worker --until-empty` in a fresh clone of the repository: a
//! Kubernetes Indexed Job, or a GitHub Actions workflow with a matrix of workers. It reads the
//! repository (origin's URL, the branch) and ralph.toml (the agent, hence the credentials the
//! workers need and how to install its CLI) and changes nothing.
//!
//! Invariants of the text it prints (YAML written by hand, no YAML library):
//! - every value that comes from the user or the repository is a double-quoted scalar, quoted
//!   as JSON (YAML's double-quoted style reads every JSON string the same), and holds no control
//!   character, so it can neither end its line nor open a comment;
//! - such a value reaches a shell only through an environment variable, never spliced into a
//!   script;
//! - Kubernetes expands `$(NAME)` in a container's command and env values: its scripts hold no
//!   `$(`, and each `$` of a value is doubled, which Kubernetes reads back as one;
//! - GitHub Actions evaluates `${{ … }}` anywhere in a workflow: a value holding `${{` is
//!   refused.

use crate::agent::preset::{self, Preset, Quirk};
use crate::cli::{ActionsArgs, DEPLOY_IMAGE, DEPLOY_MAX_WORKERS, DeployArgs, DeployTarget, KubernetesArgs};
use crate::error::CliError;
use crate::git;
use std::fmt::Write as _;
use std::path::Path;

/// The command each worker runs, in its clone.
pub const WORKER_COMMAND: [&str; 3] = ["ralph", "worker", "--until-empty"];

/// Where the clone lives in a Kubernetes worker.
const WORK_DIR: &str = "/work";

/// What the launchers need to know about the configured agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Agent {
    /// The preset's name, or `custom`.
    pub name: String,
    /// The environment variables that carry its credentials.
    pub credentials: Vec<String>,
    /// How to install its CLI, when ralph knows.
    pub install: Option<String>,
    /// It refuses to run as root unless `IS_SANDBOX=1` (a worker's container is a sandbox).
    pub needs_sandbox: bool,
}

impl Agent {
    /// The facts of a preset.
    pub fn of(p: &Preset) -> Agent {
        Agent {
            name: p.name.to_string(),
            credentials: p.credentials_env.iter().map(|s| s.to_string()).collect(),
            install: Some(p.install.to_string()),
            needs_sandbox: p.quirks.contains(&Quirk::RootNeedsIsSandbox),
        }
    }

    /// A custom command ralph knows nothing about.
    fn custom() -> Agent {
        Agent { name: "custom".into(), credentials: Vec::new(), install: None, needs_sandbox: false }
    }

    /// Whether its CLI installs with npm (so the runner needs Node.js).
    fn npm(&self) -> bool {
        self.install.as_deref().is_some_and(|i| i.starts_with("npm "))
    }
}

/// A Kubernetes Indexed Job of workers.
#[derive(Debug, Clone)]
pub struct Kubernetes {
    pub workers: u32,
    pub image: String,
    /// The clone URL, without credentials.
    pub repo: String,
    pub branch: String,
    /// The Secret's name.
    pub secret: String,
    pub agent: Agent,
}

/// A GitHub Actions workflow of workers.
#[derive(Debug, Clone)]
pub struct Actions {
    /// The default of the dispatch's `workers` input.
    pub workers: u32,
    pub branch: String,
    /// A container image to run the workers in, instead of installing ralph and the agent.
    pub image: Option<String>,
    /// How the runner installs ralph; none prints a placeholder.
    pub install_ralph: Option<String>,
    pub agent: Agent,
}

/// Runs `ralph deploy`.
pub fn run(cwd: &Path, a: &DeployArgs) -> Result<u8, CliError> {
    let root = crate::runner::repo_root(cwd)?;
    // The workers run the loop from the committed ralph.toml: without one they cannot start.
    let cfg = crate::runner::load_config(&root, &crate::config::Overrides::default())?;
    let agent = match cfg
        .agent
        .preset
        .or_else(|| cfg.agent.command.first().and_then(|c| preset::by_program(c)))
    {
        Some(p) => Agent::of(p),
        None => {
            eprintln!(
                "note: the agent is a custom command: add what installs it and the variables it needs to the launcher"
            );
            Agent::custom()
        }
    };
    let (workers, branch) = match &a.target {
        DeployTarget::Kubernetes(k) => (k.common.workers, k.common.branch.clone()),
        DeployTarget::GithubActions(g) => (g.common.workers, g.common.branch.clone()),
    };
    let branch = match branch.or_else(|| cfg.branch.clone()) {
        Some(b) => b,
        None => git::current_branch(&root)?.ok_or_else(|| {
            CliError::usage(
                "HEAD is detached and ralph.toml names no [git] branch: which branch do the workers work on?",
            )
            .hint("name it: `ralph deploy ... --branch main`")
        })?,
    };
    if !git::valid_branch_name(&root, &branch) {
        return Err(CliError::usage(format!("`{branch}` is not a valid branch name")));
    }
    let text = match &a.target {
        DeployTarget::Kubernetes(k) => {
            let plan = kubernetes_plan(&root, k, workers, branch, agent)?;
            kubernetes(&plan)
        }
        DeployTarget::GithubActions(g) => {
            let plan = actions_plan(g, workers, branch, agent)?;
            github_actions(&plan)
        }
    };
    crate::out!("{text}");
    Ok(crate::exit_code::OK)
}

fn kubernetes_plan(
    root: &Path,
    k: &KubernetesArgs,
    workers: u32,
    branch: String,
    agent: Agent,
) -> Result<Kubernetes, CliError> {
    plain_value("--image", &k.image)?;
    if k.image.chars().any(char::is_whitespace) {
        return Err(CliError::usage(format!("--image {:?} holds white space: not an image name", k.image)));
    }
    if !dns_subdomain(&k.secret) {
        return Err(CliError::usage(format!(
            "--secret {:?} is not a Kubernetes name: lower-case letters, digits, '-' and '.', at most 253",
            k.secret
        )));
    }
    let from_origin = k.repo.is_none();
    let url = match &k.repo {
        Some(u) => u.clone(),
        None => git::remote_url(root, "origin")?.ok_or_else(|| {
            CliError::usage("this repository has no remote `origin`: where do the workers clone it from?")
                .hint("name the URL the workers clone: `ralph deploy kubernetes --repo https://host/owner/repo.git`")
        })?,
    };
    plain_value("the repository URL", &url)?;
    let (repo, had_credentials) = without_credentials(&url);
    let kind = url_kind(&repo);
    if kind == UrlKind::Local {
        return Err(CliError::usage(format!(
            "{repo} is a path on this machine: workers on other machines cannot clone it"
        ))
        .hint("name the URL they clone: `ralph deploy kubernetes --repo https://host/owner/repo.git`"));
    }
    // Everything is valid from here on: what follows only warns.
    if had_credentials {
        eprintln!(
            "note: the credentials in the repository URL are left out of the Job: put a token that may push in the Secret as GIT_TOKEN"
        );
    }
    if kind == UrlKind::Ssh {
        eprintln!(
            "note: {repo} is an SSH URL: the Job mounts no SSH key, so the clone fails unless the image has one; an HTTPS URL (--repo) with GIT_TOKEN in the Secret needs nothing more"
        );
    }
    if from_origin {
        let tracking = format!("refs/remotes/origin/{branch}");
        if git::rev_parse(root, &tracking)?.is_none() {
            eprintln!(
                "note: origin has no branch {branch} as far as this clone knows: push it before the workers start"
            );
        } else if git::file_at(root, &tracking, crate::config::FILE_NAME)?.is_none() {
            eprintln!(
                "note: origin/{branch} has no {}: commit and push it before the workers start",
                crate::config::FILE_NAME
            );
        }
    }
    if k.image == DEPLOY_IMAGE {
        eprintln!(
            "note: {DEPLOY_IMAGE} is a placeholder: build an image with git, ralph and the agent CLI, and pass it with --image (README: Launchers)"
        );
    }
    Ok(Kubernetes { workers, image: k.image.clone(), repo, branch, secret: k.secret.clone(), agent })
}

fn actions_plan(g: &ActionsArgs, workers: u32, branch: String, agent: Agent) -> Result<Actions, CliError> {
    for (what, value) in [
        ("the branch", Some(&branch)),
        ("--image", g.image.as_ref()),
        ("--install-ralph", g.install_ralph.as_ref()),
    ] {
        if let Some(v) = value {
            plain_value(what, v)?;
            if v.contains("${{") {
                return Err(CliError::usage(format!(
                    "{what} {v:?} holds `${{{{`, which GitHub Actions would evaluate as an expression"
                )));
            }
        }
    }
    if let Some(image) = &g.image
        && image.chars().any(char::is_whitespace)
    {
        return Err(CliError::usage(format!("--image {image:?} holds white space: not an image name")));
    }
    if g.image.is_none() && g.install_ralph.is_none() {
        eprintln!(
            "note: the workflow's \"Install ralph\" step is a placeholder: pass how your runners install ralph with --install-ralph, or an image with --image (README: Launchers)"
        );
    }
    Ok(Actions { workers, branch, image: g.image.clone(), install_ralph: g.install_ralph.clone(), agent })
}

/// Refuses an empty value or one with a control character (a line break would end its YAML
/// line).
fn plain_value(what: &str, v: &str) -> Result<(), CliError> {
    if v.is_empty() {
        return Err(CliError::usage(format!("{what} is empty")));
    }
    if v.chars().any(char::is_control) {
        return Err(CliError::usage(format!("{what} {v:?} holds a control character")));
    }
    Ok(())
}

/// A Kubernetes object name (RFC 1123 subdomain).
fn dns_subdomain(s: &str) -> bool {
    let ok = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    !s.is_empty()
        && s.len() <= 253
        && s.chars().all(|c| ok(c) || c == '-' || c == '.')
        && s.split('.').all(|part| part.starts_with(ok) && part.ends_with(ok))
}

/// How a clone URL reaches its repository, by git's own rules: `scheme://` is a URL, a `:`
/// before any `/` is scp-like SSH (`git@host:owner/repo`), anything else a path.
#[derive(Debug, PartialEq, Eq)]
enum UrlKind {
    Http,
    Ssh,
    Local,
}

fn url_kind(url: &str) -> UrlKind {
    match url.split_once("://") {
        Some((scheme, _)) => match scheme.to_ascii_lowercase().as_str() {
            "file" => UrlKind::Local,
            "http" | "https" => UrlKind::Http,
            _ => UrlKind::Ssh,
        },
        None => {
            let colon = url.find(':');
            let slash = url.find('/');
            match (colon, slash) {
                (Some(c), Some(s)) if c < s => UrlKind::Ssh,
                (Some(_), None) => UrlKind::Ssh,
                _ => UrlKind::Local,
            }
        }
    }
}

/// `url` without the credentials it carries, and whether it carried any: over HTTP(S) the
/// whole user part goes (a token is often the user name), elsewhere only a password (the user
/// of `ssh://git@host` is part of the address).
fn without_credentials(url: &str) -> (String, bool) {
    let Some((scheme, rest)) = url.split_once("://") else {
        return (url.to_string(), false);
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    let Some(at) = authority.rfind('@') else {
        return (url.to_string(), false);
    };
    let (user, host) = (&authority[..at], &authority[at + 1..]);
    let http = matches!(scheme.to_ascii_lowercase().as_str(), "http" | "https");
    if http {
        (format!("{scheme}://{host}{path}"), true)
    } else if let Some((name, _password)) = user.split_once(':') {
        (format!("{scheme}://{name}@{host}{path}"), true)
    } else {
        (url.to_string(), false)
    }
}

/// `s` as a YAML double-quoted scalar.
fn q(s: &str) -> String {
    // A JSON string is a valid YAML double-quoted scalar with the same value; serializing a
    // str cannot fail.
    serde_json::to_string(s).unwrap_or_else(|_| String::from("\"\""))
}

/// `s` as a Kubernetes env value or argument: `$` doubled, so `$(NAME)` is not expanded.
fn k8s_literal(s: &str) -> String {
    q(&s.replace('$', "$$"))
}

/// Appends `text` as a literal block scalar (`|`) indented by `indent` spaces.
fn block(y: &mut String, indent: usize, text: &str) {
    for line in text.lines() {
        if line.is_empty() {
            y.push('\n');
        } else {
            let _ = writeln!(y, "{:indent$}{line}", "");
        }
    }
}

/// The init container's script, run in the empty shared folder: clone the branch there, and
/// leave the clone set up to push with `GIT_TOKEN` (when the Secret has one) and to commit as
/// ralph.
pub const CLONE_SCRIPT: &str = r#"set -eu
# Answers git's requests for HTTPS credentials with GIT_TOKEN, read when git asks; nothing
# when it is unset (a public repository clones without it).
helper='!f() { test "$1" = get && test -n "${GIT_TOKEN:-}" && printf "username=%s\npassword=%s\n" "${GIT_USERNAME:-x-access-token}" "$GIT_TOKEN"; return 0; }; f'
git -c credential.helper="$helper" clone --branch "$RALPH_BRANCH" -- "$RALPH_REPO" .
git config credential.helper "$helper"
# The workers' commits; GIT_AUTHOR_NAME and GIT_AUTHOR_EMAIL in the Secret win over these.
git config user.name ralph
git config user.email ralph@localhost
"#;

/// The Job's text.
pub fn kubernetes(k: &Kubernetes) -> String {
    let mut y = String::new();
    let n = k.workers;
    let _ =
        writeln!(y, "# ralph workers: a Kubernetes Indexed Job (`ralph deploy kubernetes --workers {n}`).");
    let _ =
        writeln!(y, "# {n} pods, each `{}` in a fresh clone of the repository.", WORKER_COMMAND.join(" "));
    let _ = writeln!(y, "#");
    let _ = writeln!(
        y,
        "# Before `kubectl apply -f`, create the Secret they read their credentials from, with the"
    );
    let _ = writeln!(y, "# agent's key and GIT_TOKEN, a token that may push to the branch over HTTPS:");
    let _ = writeln!(y, "#   kubectl create secret generic {} \\", k.secret);
    if let Some(var) = k.agent.credentials.first() {
        let _ = writeln!(y, "#     --from-literal={var}=... \\");
    }
    let _ = writeln!(y, "#     --from-literal=GIT_TOKEN=...");
    if let [_, others @ ..] = k.agent.credentials.as_slice()
        && !others.is_empty()
    {
        let _ = writeln!(
            y,
            "# ({} also reads {}: every key of the Secret reaches the workers.)",
            k.agent.name,
            others.join(", ")
        );
    }
    let _ = writeln!(y, "# The image needs git, ralph and the agent CLI ({}).", install_hint(&k.agent));
    let _ = writeln!(y, "# Run it again: `kubectl delete job ralph-workers` first.");
    y.push_str("apiVersion: batch/v1\nkind: Job\nmetadata:\n  name: ralph-workers\n");
    y.push_str("  labels:\n    app.kubernetes.io/name: ralph\n    app.kubernetes.io/component: worker\n");
    y.push_str("spec:\n  completionMode: Indexed\n");
    let _ = writeln!(y, "  completions: {n}\n  parallelism: {n}");
    y.push_str("  # A failed worker is retried once on its own; the others go on.\n");
    y.push_str("  backoffLimitPerIndex: 1\n");
    y.push_str("  # Kept a day for `kubectl logs`, then removed with its pods.\n");
    y.push_str("  ttlSecondsAfterFinished: 86400\n");
    y.push_str("  template:\n    metadata:\n      labels:\n");
    y.push_str("        app.kubernetes.io/name: ralph\n        app.kubernetes.io/component: worker\n");
    y.push_str("    spec:\n      restartPolicy: Never\n");
    y.push_str("      initContainers:\n        - name: clone\n");
    let _ = writeln!(y, "          image: {}", q(&k.image));
    y.push_str("          command:\n            - /bin/sh\n            - -c\n            - |\n");
    block(&mut y, 14, CLONE_SCRIPT);
    let _ = writeln!(y, "          workingDir: {WORK_DIR}");
    y.push_str("          env:\n");
    let _ = writeln!(y, "            - name: RALPH_REPO\n              value: {}", k8s_literal(&k.repo));
    let _ = writeln!(y, "            - name: RALPH_BRANCH\n              value: {}", k8s_literal(&k.branch));
    secret_ref(&mut y, &k.secret);
    y.push_str("          volumeMounts:\n            - name: work\n");
    let _ = writeln!(y, "              mountPath: {WORK_DIR}");
    y.push_str("      containers:\n        - name: worker\n");
    let _ = writeln!(y, "          image: {}", q(&k.image));
    y.push_str("          command:\n");
    for arg in WORKER_COMMAND {
        let _ = writeln!(y, "            - {}", q(arg));
    }
    let _ = writeln!(y, "          workingDir: {WORK_DIR}");
    y.push_str("          env:\n");
    y.push_str("            # The worker's number, 0 to completions - 1.\n");
    y.push_str("            - name: RALPH_WORKER_ID\n              valueFrom:\n                fieldRef:\n");
    let _ = writeln!(
        y,
        "                  fieldPath: {}",
        q("metadata.annotations['batch.kubernetes.io/job-completion-index']")
    );
    if k.agent.needs_sandbox {
        let _ = writeln!(
            y,
            "            # {} refuses to run as root elsewhere than in a sandbox: a pod is one.",
            k.agent.name
        );
        y.push_str("            - name: IS_SANDBOX\n              value: \"1\"\n");
    }
    secret_ref(&mut y, &k.secret);
    y.push_str(
        "          resources:\n            requests:\n              cpu: \"1\"\n              memory: 2Gi\n",
    );
    y.push_str("            limits:\n              memory: 4Gi\n");
    y.push_str("          volumeMounts:\n            - name: work\n");
    let _ = writeln!(y, "              mountPath: {WORK_DIR}");
    y.push_str("      volumes:\n        - name: work\n          emptyDir: {}\n");
    y
}

/// A container's `envFrom` of the whole Secret (absent, the pod waits: it does not start
/// without credentials).
fn secret_ref(y: &mut String, secret: &str) {
    y.push_str("          envFrom:\n            - secretRef:\n");
    let _ = writeln!(y, "                name: {}", q(secret));
}

fn install_hint(a: &Agent) -> String {
    match &a.install {
        Some(i) => format!("{}: {i}", a.name),
        None => "a custom command: whatever it needs".into(),
    }
}

/// The workflow's text.
pub fn github_actions(g: &Actions) -> String {
    let mut y = String::new();
    let n = g.workers;
    let secrets = &g.agent.credentials;
    let _ = writeln!(
        y,
        "# ralph workers: a GitHub Actions workflow (`ralph deploy github-actions --workers {n}`)."
    );
    let _ =
        writeln!(y, "# Each worker runs `{}` in a fresh checkout of the branch.", WORKER_COMMAND.join(" "));
    let _ = writeln!(y, "#");
    if secrets.is_empty() {
        let _ = writeln!(y, "# Needs: the secrets the agent's command reads, added to the last step's env.");
    } else {
        let _ =
            writeln!(y, "# Needs: a repository secret (Settings > Secrets and variables > Actions) named");
        let _ = writeln!(y, "# {}{};", if secrets.len() > 1 { "one of " } else { "" }, secrets.join(", "));
    }
    let _ =
        writeln!(y, "# the workers push with the workflow's GITHUB_TOKEN (contents: write), so the branch's");
    let _ = writeln!(y, "# protection must let it. Start it from the Actions tab or with");
    let _ = writeln!(y, "# `gh workflow run <this file> -f workers={n}`.");
    y.push_str("name: ralph workers\n");
    y.push_str("on:\n  workflow_dispatch:\n    inputs:\n      workers:\n");
    let _ =
        writeln!(y, "        description: {}", q(&format!("Workers to start (1 to {DEPLOY_MAX_WORKERS})")));
    let _ = writeln!(y, "        type: number\n        required: true\n        default: {n}");
    y.push_str("permissions:\n  contents: write\n");
    y.push_str("# One dispatch at a time: a second waits for the first to finish instead of racing it.\n");
    let _ = writeln!(
        y,
        "concurrency:\n  group: {}\n  cancel-in-progress: false",
        q(&format!("ralph-workers-{}", g.branch))
    );
    y.push_str("jobs:\n");
    // The matrix is built from the dispatch's input, which a static list could not follow.
    y.push_str("  plan:\n    runs-on: ubuntu-latest\n    outputs:\n");
    y.push_str("      workers: ${{ steps.list.outputs.workers }}\n");
    y.push_str("    steps:\n      - id: list\n        env:\n          WORKERS: ${{ inputs.workers }}\n        run: |\n");
    let plan = format!(
        r#"case "$WORKERS" in
  ''|*[!0-9]*) echo "::error::workers must be a whole number from 1 to {DEPLOY_MAX_WORKERS}"; exit 1 ;;
esac
if [ "$WORKERS" -lt 1 ] || [ "$WORKERS" -gt {DEPLOY_MAX_WORKERS} ]; then
  echo "::error::workers must be a whole number from 1 to {DEPLOY_MAX_WORKERS}"; exit 1
fi
echo "workers=[$(seq -s, 1 "$WORKERS")]" >> "$GITHUB_OUTPUT"
"#
    );
    block(&mut y, 10, &plan);
    y.push_str(
        "  worker:\n    name: worker ${{ matrix.worker }}\n    needs: plan\n    runs-on: ubuntu-latest\n",
    );
    if let Some(image) = &g.image {
        let _ = writeln!(
            y,
            "    # The image holds git, ralph and the agent CLI.\n    container:\n      image: {}",
            q(image)
        );
    }
    y.push_str("    timeout-minutes: 360\n");
    y.push_str("    strategy:\n      fail-fast: false\n      matrix:\n");
    y.push_str("        worker: ${{ fromJSON(needs.plan.outputs.workers) }}\n");
    y.push_str("    steps:\n      - uses: actions/checkout@v5\n        with:\n");
    let _ = writeln!(y, "          ref: {}\n          fetch-depth: 0", q(&g.branch));
    y.push_str("      - name: Commit as github-actions[bot]\n        run: |\n");
    block(
        &mut y,
        10,
        "git config user.name \"github-actions[bot]\"\ngit config user.email \"41898299+github-actions[bot]@users.noreply.github.com\"\n",
    );
    if g.image.is_none() {
        if g.agent.npm() {
            y.push_str("      - uses: actions/setup-node@v5\n        with:\n          node-version: 22\n");
        }
        match &g.agent.install {
            Some(install) => {
                let _ =
                    writeln!(y, "      - name: {}", q(&format!("Install the agent CLI ({})", g.agent.name)));
                let _ = writeln!(y, "        run: {}", q(install));
            }
            None => y.push_str("      # The agent is a custom command: install what it needs here.\n"),
        }
        match &g.install_ralph {
            Some(install) => {
                let _ = writeln!(y, "      - name: Install ralph\n        run: {}", q(install));
            }
            None => {
                y.push_str(
                    "      # A placeholder: ralph is not on crates.io under this name yet. Replace it with how\n",
                );
                y.push_str(
                    "      # you install ralph (cargo install --git <ralph's repository>, or a release binary),\n",
                );
                y.push_str("      # or print this file again with --install-ralph.\n");
                y.push_str("      - name: Install ralph\n        run: cargo install --locked ralph\n");
            }
        }
    }
    y.push_str("      - name: Work until the backlog is empty\n        env:\n");
    y.push_str("          RALPH_WORKER_ID: ${{ matrix.worker }}\n");
    if g.agent.needs_sandbox && g.image.is_some() {
        let _ = writeln!(
            y,
            "          # {} refuses to run as root elsewhere than in a sandbox: a job's container is one.",
            g.agent.name
        );
        y.push_str("          IS_SANDBOX: \"1\"\n");
    }
    for s in secrets {
        let _ = writeln!(y, "          {s}: ${{{{ secrets.{s} }}}}");
    }
    y.push_str("        run: |\n");
    let mut script = String::new();
    if !secrets.is_empty() {
        // A secret that is not set arrives as an empty variable, which an agent may take for
        // its key: only the ones set are left.
        let _ = writeln!(script, "for name in {}; do", secrets.join(" "));
        script.push_str("  if [ -z \"$(printenv \"$name\")\" ]; then unset \"$name\"; fi\ndone\n");
    }
    let _ = writeln!(script, "{}", WORKER_COMMAND.join(" "));
    block(&mut y, 10, &script);
    y
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claude() -> Agent {
        Agent::of(preset::find("claude").unwrap())
    }

    fn job(agent: Agent) -> Kubernetes {
        Kubernetes {
            workers: 8,
            image: "registry.example/ralph-worker:1".into(),
            repo: "https://git.example/team/app.git".into(),
            branch: "main".into(),
            secret: "ralph-agent".into(),
            agent,
        }
    }

    fn workflow(agent: Agent, image: Option<&str>) -> Actions {
        Actions {
            workers: 8,
            branch: "main".into(),
            image: image.map(String::from),
            install_ralph: None,
            agent,
        }
    }

    /// The lines of `text` from the one that is exactly `start` until the next line indented
    /// no deeper than it.
    fn section<'a>(text: &'a str, start: &str) -> Vec<&'a str> {
        let indent = start.len() - start.trim_start().len();
        let mut lines = text.lines().skip_while(|l| *l != start);
        let first = lines.next().unwrap_or_else(|| panic!("no line {start:?} in\n{text}"));
        std::iter::once(first)
            .chain(lines.take_while(|l| l.is_empty() || l.len() - l.trim_start().len() > indent))
            .collect()
    }

    #[test]
    fn the_job_runs_one_indexed_pod_per_worker_until_the_backlog_is_empty() {
        let y = kubernetes(&job(claude()));
        for line in [
            "apiVersion: batch/v1",
            "kind: Job",
            "  completionMode: Indexed",
            "  completions: 8",
            "  parallelism: 8",
            "  backoffLimitPerIndex: 1",
            "      restartPolicy: Never",
            "          workingDir: /work",
            "              mountPath: /work",
            "          emptyDir: {}",
        ] {
            assert!(y.lines().any(|l| l == line), "no line {line:?} in\n{y}");
        }
        let worker = section(&y, "        - name: worker").join("\n");
        assert!(
            worker.contains(
                "command:\n            - \"ralph\"\n            - \"worker\"\n            - \"--until-empty\""
            ),
            "{worker}"
        );
        assert!(worker.contains(
            "- name: RALPH_WORKER_ID\n              valueFrom:\n                fieldRef:\n                  fieldPath: \"metadata.annotations['batch.kubernetes.io/job-completion-index']\""
        ), "{worker}");
        assert!(
            worker.contains("envFrom:\n            - secretRef:\n                name: \"ralph-agent\""),
            "{worker}"
        );
        assert!(
            worker.contains("requests:\n              cpu: \"1\"\n              memory: 2Gi"),
            "{worker}"
        );
        // claude refuses --dangerously-skip-permissions as root outside a sandbox.
        assert!(worker.contains("- name: IS_SANDBOX\n              value: \"1\""), "{worker}");
        assert!(worker.contains("image: \"registry.example/ralph-worker:1\""), "{worker}");
    }

    #[test]
    fn the_job_clones_the_branch_in_an_init_container_with_the_secret() {
        let y = kubernetes(&job(claude()));
        let clone = section(&y, "        - name: clone").join("\n");
        assert!(
            clone.contains(
                "git -c credential.helper=\"$helper\" clone --branch \"$RALPH_BRANCH\" -- \"$RALPH_REPO\" ."
            ),
            "{clone}"
        );
        assert!(clone.contains("          workingDir: /work"), "{clone}");
        assert!(
            clone.contains("- name: RALPH_REPO\n              value: \"https://git.example/team/app.git\""),
            "{clone}"
        );
        assert!(clone.contains("- name: RALPH_BRANCH\n              value: \"main\""), "{clone}");
        assert!(clone.contains("secretRef:\n                name: \"ralph-agent\""), "{clone}");
        assert!(clone.contains("mountPath: /work"), "{clone}");
        // The header tells how to make the Secret, with the agent's variables.
        assert!(y.contains("#   kubectl create secret generic ralph-agent \\\n#     --from-literal=ANTHROPIC_API_KEY=... \\"), "{y}");
        assert!(y.contains("npm install -g @anthropic-ai/claude-code"), "{y}");
    }

    #[test]
    fn no_kubernetes_expansion_reaches_the_scripts_or_the_values() {
        // Kubernetes expands $(NAME) in commands and env values, and turns $$ into $.
        assert!(!CLONE_SCRIPT.contains("$("), "{CLONE_SCRIPT}");
        assert!(!CLONE_SCRIPT.contains("$$"), "{CLONE_SCRIPT}");
        let mut k = job(claude());
        k.branch = "x/$(HOME)-\"it's\"-#1".into();
        let y = kubernetes(&k);
        assert!(y.contains(r#"value: "x/$$(HOME)-\"it's\"-#1""#), "{y}");
    }

    #[test]
    fn the_job_of_an_agent_that_runs_as_root_anyway_sets_no_sandbox() {
        let y = kubernetes(&job(Agent::of(preset::find("codex").unwrap())));
        assert!(!y.contains("IS_SANDBOX"), "{y}");
        assert!(y.contains("--from-literal=CODEX_API_KEY=..."), "{y}");
        assert!(y.contains("(codex also reads OPENAI_API_KEY: every key"), "{y}");
    }

    #[test]
    fn the_workflow_runs_a_matrix_of_workers_one_dispatch_at_a_time() {
        let y = github_actions(&workflow(claude(), None));
        for line in [
            "  workflow_dispatch:",
            "        default: 8",
            "  contents: write",
            "  group: \"ralph-workers-main\"",
            "  cancel-in-progress: false",
            "        worker: ${{ fromJSON(needs.plan.outputs.workers) }}",
            "      fail-fast: false",
            "      - uses: actions/checkout@v5",
            "          ref: \"main\"",
            "          fetch-depth: 0",
            "          RALPH_WORKER_ID: ${{ matrix.worker }}",
            "          ANTHROPIC_API_KEY: ${{ secrets.ANTHROPIC_API_KEY }}",
            "          CLAUDE_CODE_OAUTH_TOKEN: ${{ secrets.CLAUDE_CODE_OAUTH_TOKEN }}",
            "          ralph worker --until-empty",
            "      - uses: actions/setup-node@v5",
            "        run: \"npm install -g @anthropic-ai/claude-code\"",
            "        run: cargo install --locked ralph",
        ] {
            assert!(y.lines().any(|l| l == line), "no line {line:?} in\n{y}");
        }
        // The credentials reach only the step that runs the agent, not the installs.
        assert_eq!(y.matches("secrets.ANTHROPIC_API_KEY").count(), 1, "{y}");
        let last = section(&y, "      - name: Work until the backlog is empty").join("\n");
        assert!(last.contains("secrets.ANTHROPIC_API_KEY"), "{last}");
        // A runner is not root: no sandbox flag.
        assert!(!y.contains("IS_SANDBOX"), "{y}");
    }

    #[test]
    fn a_workflow_in_a_container_installs_nothing() {
        let y = github_actions(&workflow(claude(), Some("ghcr.io/team/ralph-worker:1")));
        assert!(y.contains("    container:\n      image: \"ghcr.io/team/ralph-worker:1\""), "{y}");
        assert!(!y.contains("npm install"), "{y}");
        assert!(!y.contains("cargo install"), "{y}");
        assert!(!y.contains("setup-node"), "{y}");
        assert!(y.contains("IS_SANDBOX: \"1\""), "{y}");
    }

    #[test]
    fn a_custom_agent_gets_no_install_and_no_secret() {
        let y = github_actions(&workflow(Agent::custom(), None));
        assert!(y.contains("# The agent is a custom command: install what it needs here."), "{y}");
        assert!(!y.contains("secrets."), "{y}");
        assert!(!y.contains("setup-node"), "{y}");
        let k = kubernetes(&job(Agent::custom()));
        assert!(
            k.contains(
                "#   kubectl create secret generic ralph-agent \\\n#     --from-literal=GIT_TOKEN=..."
            ),
            "{k}"
        );
    }

    #[test]
    fn quoted_values_are_json_strings() {
        assert_eq!(q("main"), "\"main\"");
        assert_eq!(q("a\"b\\c: #d"), r#""a\"b\\c: #d""#);
        assert_eq!(k8s_literal("$(X)$"), "\"$$(X)$$\"");
    }

    #[test]
    fn urls_lose_their_credentials_and_are_told_apart() {
        assert_eq!(
            without_credentials("https://x-access-token:ghp_abc@github.com/o/r.git"),
            ("https://github.com/o/r.git".into(), true)
        );
        assert_eq!(
            without_credentials("https://ghp_abc@github.com/o/r"),
            ("https://github.com/o/r".into(), true)
        );
        assert_eq!(
            without_credentials("https://github.com/o/r@x"),
            ("https://github.com/o/r@x".into(), false)
        );
        assert_eq!(without_credentials("ssh://git@host/o/r"), ("ssh://git@host/o/r".into(), false));
        assert_eq!(without_credentials("ssh://git:pw@host/o/r"), ("ssh://git@host/o/r".into(), true));
        assert_eq!(without_credentials("git@github.com:o/r.git"), ("git@github.com:o/r.git".into(), false));
        assert_eq!(url_kind("https://github.com/o/r.git"), UrlKind::Http);
        assert_eq!(url_kind("git@github.com:o/r.git"), UrlKind::Ssh);
        assert_eq!(url_kind("ssh://git@host/o/r"), UrlKind::Ssh);
        assert_eq!(url_kind("/srv/git/r.git"), UrlKind::Local);
        assert_eq!(url_kind("../r"), UrlKind::Local);
        assert_eq!(url_kind("file:///srv/r"), UrlKind::Local);
        assert_eq!(url_kind("./a:b"), UrlKind::Local);
    }

    #[test]
    fn secret_names_follow_kubernetes_rules() {
        assert!(dns_subdomain("ralph-agent"));
        assert!(dns_subdomain("team.ralph"));
        assert!(!dns_subdomain("Ralph"));
        assert!(!dns_subdomain("-x"));
        assert!(!dns_subdomain("x_y"));
        assert!(!dns_subdomain(""));
    }
}
