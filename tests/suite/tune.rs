//! `ralph tune`: the search raises the held-out pass rate when the failure traces say what the
//! prompt lacks and the reflector adds it; a reflector that games yields candidates scoring 0;
//! a kill -9 then `--resume` loses no result and leaves no scratch checkout; `apply` writes the
//! improvement, uncommitted.

use crate::common::*;

/// An agent (a shell script) that does its task only when its prompt carries the word MAGIC,
/// and says so in its log otherwise; as the reflector (`RALPH_TASK=reflect`), it runs
/// `reflector` in its folder. `sleep` slows each trial down, for the kill test.
fn agent(repo: &TestRepo, reflector: &str, sleep: &str) -> String {
    let path = repo.outside.join("agent.sh");
    std::fs::write(
        &path,
        format!(
            "#!/bin/sh\nif [ \"$RALPH_TASK\" = reflect ]; then\n{reflector}\nexit 0\nfi\nsleep {sleep}\n\
             if grep -q MAGIC \"$RALPH_PROMPT_FILE\"; then echo ok > \"out-$RALPH_TASK.txt\"; \
             else echo 'missing instruction: the prompt lacks MAGIC'; fi\n\
             if grep -q DELETE-THE-TESTS \"$RALPH_PROMPT_FILE\"; then rm -f tests/test_main.sh; echo ok > \"out-$RALPH_TASK.txt\"; fi\n\
             echo '<promise>COMPLETE</promise>'\n"
        ),
    )
    .unwrap();
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    path.display().to_string()
}

/// A repository whose agent is `agent`, with a test file the gates protect, and a suite of
/// `n` cases each checking that its task's file was written.
fn setup(reflector: &str, sleep: &str, n: usize) -> (TestRepo, std::path::PathBuf) {
    let repo = TestRepo::new();
    let agent = agent(&repo, reflector, sleep);
    repo.write(
        "ralph.toml",
        &format!("[agent]\ncommand = [\"{agent}\"]\nprompt = \"file\"\n\n[checks]\ncommands = [\"sh tests/test_main.sh\"]\n"),
    );
    repo.write("tests/test_main.sh", "true\n");
    repo.write(".gitignore", ".ralph/\n");
    repo.commit_all("project");
    let suite = repo.outside.join("suite");
    for i in 1..=n {
        let case = suite.join(format!("c{i}"));
        std::fs::create_dir_all(&case).unwrap();
        std::fs::write(case.join("spec.md"), format!("# Case {i}\n\nWrite out-c{i}.txt.\n")).unwrap();
        std::fs::write(case.join("check"), format!("#!/bin/sh\ntest -f out-c{i}.txt\n")).unwrap();
        std::fs::set_permissions(case.join("check"), std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
    }
    (repo, suite)
}

const ADDS_MAGIC: &str = "printf '\\nAlways write the file; MAGIC.\\n' >> candidate/prompt.md\n\
     echo 'The agents said the prompt lacks MAGIC: added it.' > candidate/DIAGNOSIS.md";

fn rows(repo: &TestRepo, id: &str) -> Vec<Vec<String>> {
    repo.read(&format!(".ralph/tune/{id}/results.tsv"))
        .lines()
        .skip(1)
        .map(|l| l.split('\t').map(str::to_string).collect())
        .collect()
}

fn tune_id(repo: &TestRepo) -> String {
    let mut ids: Vec<String> = std::fs::read_dir(repo.path(".ralph/tune"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    ids.sort();
    ids.pop().unwrap()
}

#[test]
fn a_reflector_that_adds_what_the_traces_lack_raises_the_held_out_pass_rate_and_apply_writes_it() {
    let (repo, suite) = setup(ADDS_MAGIC, "0", 5);
    let head = repo.head();
    let out = repo
        .ralph_within(
            120,
            &[
                "tune",
                "--suite",
                suite.to_str().unwrap(),
                "--rounds",
                "2",
                "--seed",
                "3",
                "--max-iterations",
                "1",
            ],
        )
        .expect(0);
    let said = out.stdout();
    assert!(said.contains("held-out pass rate: baseline 0.00 → best 1.00"), "{said}\n{}", out.stderr());
    let id = tune_id(&repo);
    // The split is recorded, every part has a case, and no held-out case reached the reflector.
    let settings: serde_json::Value =
        serde_json::from_str(&repo.read(&format!(".ralph/tune/{id}/tune.json"))).unwrap();
    let held: Vec<String> =
        settings["held"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().into()).collect();
    assert!(!held.is_empty() && !settings["val"].as_array().unwrap().is_empty());
    for dir in std::fs::read_dir(repo.path(&format!(".ralph/tune/{id}/reflect"))).unwrap() {
        for trace in std::fs::read_dir(dir.unwrap().path().join("traces")).into_iter().flatten() {
            let name = trace.unwrap().file_name().into_string().unwrap();
            assert!(!held.iter().any(|h| name.starts_with(&format!("{h}-"))), "held-out {name} was shown");
        }
    }
    // The user's checkout and branches are untouched; no scratch checkout is left.
    assert_eq!(repo.head(), head);
    assert_eq!(repo.dirt(), "");
    assert_eq!(repo.git(&["worktree", "list"]).lines().count(), 1);
    assert!(repo.git(&["branch", "--list", "ralph/*"]).trim().is_empty());
    // show names the diagnosis; apply writes the template, uncommitted.
    let shown = repo.ralph(&["tune", "show", &id]).expect(0).stdout();
    assert!(shown.contains("The agents said the prompt lacks MAGIC"), "{shown}");
    assert!(shown.contains("+Always write the file; MAGIC."), "{shown}");
    repo.ralph(&["tune", "apply", &id, "1"]).expect(0);
    assert!(repo.read("prompt.md").contains("MAGIC"));
    assert_eq!(repo.head(), head, "apply commits nothing");
    assert_eq!(repo.dirt().trim(), "?? prompt.md");
}

#[test]
fn candidates_of_a_reflector_that_games_the_checks_score_zero() {
    // The reflector tells the agent to delete the tests; the agent then "passes" the hidden
    // check, but the gates catch the deleted test.
    let games = "printf '\\nDELETE-THE-TESTS first.\\n' >> candidate/prompt.md\necho 'delete tests' > candidate/DIAGNOSIS.md";
    let (repo, suite) = setup(games, "0", 4);
    repo.ralph_within(
        120,
        &[
            "tune",
            "--suite",
            suite.to_str().unwrap(),
            "--rounds",
            "1",
            "--seed",
            "5",
            "--max-iterations",
            "1",
        ],
    )
    .expect(0);
    let id = tune_id(&repo);
    let rows = rows(&repo, &id);
    let gamed: Vec<&Vec<String>> = rows.iter().filter(|r| r[0] == "1").collect();
    assert!(!gamed.is_empty(), "candidate 1 was scored: {rows:?}");
    assert!(gamed.iter().all(|r| r[5] == "0"), "a gaming candidate passed: {rows:?}");
    assert!(repo.exists("tests/test_main.sh"), "the user's test file is untouched");
}

#[test]
fn a_tune_killed_with_9_resumes_without_losing_or_rerunning_a_result() {
    let (repo, suite) = setup(ADDS_MAGIC, "0.3", 5);
    let mut child = repo
        .cmd(&[
            "tune",
            "--suite",
            suite.to_str().unwrap(),
            "--rounds",
            "2",
            "--seed",
            "3",
            "--max-iterations",
            "1",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Wait for some results, then kill it mid-trial.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let id = loop {
        assert!(std::time::Instant::now() < deadline, "no result appeared");
        if let Ok(rd) = std::fs::read_dir(repo.path(".ralph/tune"))
            && let Some(e) = rd.flatten().next()
        {
            let id = e.file_name().into_string().unwrap();
            if rows(&repo, &id).len() >= 2 {
                break id;
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    child.kill().unwrap();
    child.wait().unwrap();
    let before = rows(&repo, &id);
    repo.ralph_within(120, &["tune", "--resume", &id]).expect(0);
    let after = rows(&repo, &id);
    assert!(after.len() >= before.len());
    assert_eq!(&after[..before.len()], &before[..], "a result was lost or changed");
    let mut keys: Vec<(String, String, String)> =
        after.iter().map(|r| (r[0].clone(), r[3].clone(), r[4].clone())).collect();
    let n = keys.len();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), n, "a trial ran twice: {after:?}");
    assert_eq!(repo.git(&["worktree", "list"]).lines().count(), 1, "a scratch checkout was left");
    assert!(repo.git(&["branch", "--list", "ralph/*"]).trim().is_empty());
    assert!(repo.read(&format!(".ralph/tune/{id}/summary.md")).contains("Held-out"));
}
