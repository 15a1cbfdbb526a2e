//! The review stage: a second agent approves or rejects green work; a rejection's reasons
//! reach the next prompt; whitespace noise and ralph's files stay out of the diff it sees.

use crate::common::*;

#[test]
fn a_rejection_fails_the_iteration_and_its_reasons_reach_the_next_prompt() {
    let scenario = r##"
[[step]]
iteration = 1
actions = [{ write = { path = "calc.py", content = "def add(a, b):\n    return 4\n" } }, { write = { path = "README.md", content = "# test project  \n" } }, { learning = "add is in calc.py" }, { promise = true }]
[[step]]
iteration = 2
actions = [{ expect_prompt = "hard-coded result" }, { write = { path = "calc.py", content = "def add(a, b):\n    return a + b\n" } }, { promise = true }]

[[step]]
review = true
iteration = 1
actions = [
  { expect_prompt = "return 4" },
  { expect_prompt = "Create the add function" },
  { print = "REJECTED: hard-coded result, add must compute a + b." },
]
[[step]]
review = true
iteration = 2
actions = [{ expect_prompt = "return a + b" }, { print = "**APPROVED** the function computes the sum." }]
"##;
    let repo = TestRepo::with_loop(
        scenario,
        &["true"],
        "",
        &[("010-add.md", "# Add\n\nCreate the add function in calc.py.\n")],
    );
    add_reviewer(&repo);
    repo.ralph(&["run"]).expect(0);
    let r = repo.records();
    assert_eq!(r[0]["outcome"], "checks_failed");
    assert_eq!(r[0]["review"]["approved"], false);
    assert!(
        r[0]["failure"].as_str().unwrap().contains("the review rejected it: hard-coded result"),
        "{}",
        r[0]
    );
    assert_eq!(r[1]["outcome"], "done");
    assert_eq!(r[1]["review"]["approved"], true);
    assert_eq!(r[1]["review"]["reasons"], "the function computes the sum.");
    // The reviewer saw neither whitespace noise nor ralph's files.
    let prompt = repo.iter_file(1, "review-prompt.md");
    assert!(!prompt.contains("README.md") && !prompt.contains("AGENTS.md"), "{prompt}");
    assert!(repo.read("calc.py").contains("a + b"));
}

#[test]
fn a_reviewer_without_a_verdict_or_that_edits_files_does_not_pass_work() {
    let scenario = r#"
[[step]]
actions = [{ write = { path = "x.txt", content = "x\n" } }, { promise = true }]
[[step]]
review = true
actions = [{ write = { path = "x.txt", content = "reviewer was here\n" } }, { print = "Looks fine to me." }]
"#;
    let repo = TestRepo::with_loop(scenario, &["true"], "", &[("010-a.md", "# A\n")]);
    add_reviewer(&repo);
    repo.ralph(&["run", "--max-iterations", "1"]).expect(3);
    let r = &repo.records()[0];
    assert_eq!(r["outcome"], "checks_failed");
    let reasons = r["review"]["reasons"].as_str().unwrap();
    assert!(
        reasons.contains("neither APPROVED nor REJECTED") && reasons.contains("ralph put them back"),
        "{reasons}"
    );
    assert!(!repo.exists("x.txt"), "the rejected work was reverted");
    assert_eq!(repo.dirt(), "");
}

#[test]
fn a_flood_from_the_reviewer_is_capped_in_review_log_and_its_verdict_still_counts() {
    let scenario = r#"
[[step]]
actions = [{ write = { path = "x.txt", content = "x\n" } }, { promise = true }]
[[step]]
review = true
actions = [
  { run = "yes 'a line of reviewer noise' | head -c 3000000 >&2" },
  { print = "APPROVED: fine." },
]
"#;
    let repo = TestRepo::with_loop(scenario, &["true"], "", &[("010-a.md", "# A\n")]);
    add_reviewer(&repo);
    let text = repo.read("ralph.toml") + "max_log_size = \"1MB\"\n";
    repo.write("ralph.toml", &text);
    repo.commit_all("a capped reviewer");
    repo.ralph(&["run"]).expect(0);
    let r = &repo.records()[0];
    assert_eq!(r["outcome"], "done", "{r}");
    assert_eq!(r["review"]["approved"], true, "{r}");
    let log = repo.iter_file(1, "review.log");
    assert!(log.len() < 1_100_000, "{} bytes", log.len());
    assert!(
        log.contains("[ralph: review.log capped at 1000000 bytes ([review] max_log_size)"),
        "{}",
        &log[log.len().saturating_sub(300)..]
    );
}

/// A `[review]` that is the scripted agent playing the scenario's `review = true` steps.
fn add_reviewer(repo: &TestRepo) {
    let text = repo.read("ralph.toml")
        + &format!(
            "\n[review]\ncommand = [{}, \"scripted-agent\", {}]\n",
            toml_str(RALPH),
            toml_str(&repo.scenario_path().to_string_lossy())
        );
    repo.write("ralph.toml", &text);
    repo.commit_all("reviewer");
}

/// The reviewer is at its usage limit the first time it is asked: the iteration waits for the
/// limit (a second here) and asks again; its approval commits the work. No rejection, no
/// attempt, the same green work.
#[test]
fn a_reviewer_at_its_usage_limit_is_waited_for_and_asked_again() {
    let scenario = r#"
[[step]]
actions = [{ write = { path = "x.txt", content = "x\n" } }, { promise = true }]
"#;
    let repo = TestRepo::with_loop(scenario, &["true"], "", &[("010-a.md", "# A\n")]);
    let marker = repo.outside.join("asked-once");
    let reviewer = repo.outside.join("reviewer.sh");
    std::fs::write(
        &reviewer,
        format!(
            "#!/bin/sh\ncat > /dev/null\nif [ -f {m} ]; then echo 'APPROVED: fine.'; exit 0; fi\ntouch {m}\necho \"You've hit your usage limit. Try again in 1 seconds.\" >&2\nexit 1\n",
            m = shell_quote(&marker.to_string_lossy())
        ),
    )
    .unwrap();
    std::fs::set_permissions(&reviewer, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let text = repo.read("ralph.toml")
        + &format!(
            "\n[review]\ncommand = [{}]\noutput_format = \"text\"\nretry_wait = \"1s\"\n",
            toml_str(&reviewer.to_string_lossy())
        );
    repo.write("ralph.toml", &text);
    repo.commit_all("reviewer");
    let run = repo.ralph_within(60, &["run"]).expect(0);
    assert!(
        run.stderr().contains("the reviewer hit a usage limit: it reviews the same work again in"),
        "{}",
        run.stderr()
    );
    let r = repo.records();
    assert_eq!(r.len(), 1, "one iteration: {r:?}");
    assert_eq!(r[0]["outcome"], "done");
    assert_eq!(r[0]["review"]["approved"], true);
    assert_eq!(repo.read("x.txt"), "x\n");
}

/// Ctrl-C while the reviewer works: the work was not judged, so it is no rejection (and uses
/// no attempt): the iteration is interrupted like any other.
#[test]
fn ctrl_c_during_the_review_interrupts_the_iteration_rather_than_reject_it() {
    let scenario = r#"
[[step]]
actions = [{ write = { path = "x.txt", content = "x\n" } }, { promise = true }]
"#;
    let repo = TestRepo::with_loop(scenario, &["true"], "", &[("010-a.md", "# A\n")]);
    let asked = repo.outside.join("asked");
    let reviewer = repo.outside.join("reviewer.sh");
    std::fs::write(
        &reviewer,
        format!(
            "#!/bin/sh\ncat > /dev/null\ntouch {}\nsleep 30\necho 'APPROVED'\n",
            shell_quote(&asked.to_string_lossy())
        ),
    )
    .unwrap();
    std::fs::set_permissions(&reviewer, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let text = repo.read("ralph.toml")
        + &format!(
            "\n[review]\ncommand = [{}]\noutput_format = \"text\"\nkill_grace = \"200ms\"\n",
            toml_str(&reviewer.to_string_lossy())
        );
    repo.write("ralph.toml", &text);
    repo.commit_all("reviewer");
    let mut child = repo
        .cmd(&["run"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    assert!(wait_for(30, || asked.exists()), "the reviewer never started");
    // SAFETY: sending SIGINT to our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    assert_eq!(child.wait().unwrap().code(), Some(130));
    let r = repo.records();
    assert_eq!(r[0]["outcome"], "interrupted", "{}", r[0]);
    let status: serde_json::Value =
        serde_json::from_str(&repo.ralph(&["status", "--json"]).expect(0).stdout()).unwrap();
    assert_eq!(status["tasks"][0]["attempts"], 0, "{status}");
    assert!(!repo.exists("x.txt"), "the unjudged work is put back");
}
