//! Gates: protected paths and test weakening are rejected with the reason, which the next
//! prompt shows.

use crate::common::*;

fn gate_repo(step1: &str, step2_expect: &str) -> TestRepo {
    let scenario = format!(
        "[[step]]\niteration = 1\nactions = [{step1}, {{ write = {{ path = \"work.txt\", content = \"w\\n\" }} }}, {{ promise = true }}]\n\
         [[step]]\niteration = 2\nactions = [{{ expect_prompt = {} }}, {{ write = {{ path = \"work.txt\", content = \"w\\n\" }} }}, {{ promise = true }}]\n",
        toml_str(step2_expect)
    );
    let repo =
        TestRepo::with_loop(&scenario, &["sh check.sh"], "", &[("010-a.md", "# A\n\nMake work.txt.\n")]);
    repo.write("check.sh", "#!/bin/sh\ntest -f work.txt\n");
    repo.write("tests/parser_test.py", "def test_x():\n    assert True\n");
    repo.commit_all("check script and tests");
    repo
}

#[test]
fn the_judge_cannot_be_gamed() {
    let cases = [
        (
            "{ write = { path = \"check.sh\", content = \"exit 0\\n\" } }",
            "it changed the protected path check.sh",
        ),
        (
            "{ write = { path = \".github/workflows/ci.yml\", content = \"on: []\\n\" } }",
            "protected path .github/workflows/ci.yml",
        ),
        (
            "{ run = \"sed -i 's/Make work.txt./Do nothing./' specs/010-a.md\" }",
            "it rewrote the spec specs/010-a.md",
        ),
        ("{ delete = \"tests/parser_test.py\" }", "it deleted the test file tests/parser_test.py"),
        (
            "{ write = { path = \"src/lib.rs\", content = \"#[test]\\n#[ignore]\\nfn t() {}\\n\" } }",
            "it added a skip marker in src/lib.rs",
        ),
    ];
    for (step, reason) in cases {
        let repo = gate_repo(step, reason);
        repo.ralph(&["run"]).expect(0);
        let r = repo.records();
        assert_eq!(r[0]["outcome"], "checks_failed", "{step}");
        let failure = r[0]["failure"].as_str().unwrap();
        assert!(
            failure.starts_with("a gate rejected the work") && failure.contains(reason),
            "{step}: {failure}"
        );
        // The second iteration's prompt showed why (the scenario expected it), and passed.
        assert_eq!(r[1]["outcome"], "done", "{step}");
        assert_eq!(repo.read("check.sh"), "#!/bin/sh\ntest -f work.txt\n");
        assert!(repo.exists("tests/parser_test.py"));
    }
}

#[test]
fn fewer_tests_than_before_is_rejected() {
    // The "runner" reports as many tests as tests.txt has lines.
    let check = "echo \"test result: ok. $(wc -l < tests.txt) passed; 0 failed; 0 ignored\"";
    let scenario = r#"
[[step]]
task = "010-add"
actions = [{ append = { path = "tests.txt", content = "t3\n" } }, { promise = true }]
[[step]]
task = "020-trim"
iteration = 1
actions = [{ write = { path = "tests.txt", content = "t1\n" } }, { promise = true }]
[[step]]
task = "020-trim"
iteration = 2
actions = [{ expect_prompt = "fewer tests than before" }, { write = { path = "other.txt", content = "o\n" } }, { promise = true }]
"#;
    let repo = TestRepo::with_loop(
        scenario,
        &[check],
        "",
        &[("010-add.md", "# Add\n"), ("020-trim.md", "# Trim\n")],
    );
    repo.write("tests.txt", "t1\nt2\n");
    repo.commit_all("two tests");
    repo.ralph(&["run"]).expect(0);
    let r = repo.records();
    assert_eq!(r[0]["outcome"], "done");
    assert_eq!(r[1]["outcome"], "checks_failed");
    let failure = r[1]["failure"].as_str().unwrap();
    assert!(failure.contains("ran 1 tests, 3 before"), "{failure}");
    assert_eq!(r[2]["outcome"], "done");
    assert_eq!(repo.read("tests.txt"), "t1\nt2\nt3\n");
}

#[test]
fn protected_paths_can_be_configured() {
    let scenario = "[[step]]\nactions = [{ write = { path = \"docs/api.md\", content = \"x\\n\" } }, { promise = true }]\n";
    let repo = TestRepo::with_loop(
        scenario,
        &["true"],
        "[gates]\nprotected = [\"docs/**\"]\n[budget]\nmax_attempts = 1\n",
        &[("010-a.md", "# A\n")],
    );
    repo.ralph(&["run"]).expect(4);
    assert!(
        repo.records()[0]["failure"].as_str().unwrap().contains("protected path docs/api.md (`docs/**`)")
    );
}

#[test]
fn failures_the_clean_tree_already_had_are_tolerated_new_ones_are_not() {
    let scenario = r#"
[[step]]
task = "010-feature"
actions = [{ write = { path = "feature.txt", content = "f\n" } }, { promise = true }]
[[step]]
task = "020-breaks"
actions = [{ append = { path = "failing.txt", content = "c\n" } }, { promise = true }]
"#;
    // A cargo-like runner: each line of failing.txt is a failing test.
    let check = "while read t; do echo \"test $t ... FAILED\"; done < failing.txt; test ! -s failing.txt";
    let repo = TestRepo::with_loop(
        scenario,
        &[check],
        "[budget]\nmax_attempts = 1\n",
        &[("010-feature.md", "# Feature\n"), ("020-breaks.md", "# Breaks\n")],
    );
    repo.write("failing.txt", "a\nb\n");
    repo.commit_all("two tests already fail");
    let run = repo.ralph(&["run"]).expect(4);
    assert!(run.stderr().contains("already fails on the clean tree (2 tests)"), "{}", run.stderr());
    let r = repo.records();
    assert_eq!(r[0]["outcome"], "done", "the old failures were tolerated: {}", r[0]);
    assert_eq!(r[0]["checks"][0]["tolerated"], true);
    assert_eq!(r[0]["checks"][0]["failed_tests"], serde_json::json!(["a", "b"]));
    assert_eq!(r[1]["outcome"], "checks_failed", "a new failing test is not: {}", r[1]);
    assert!(repo.latest_run_dir().join("iter-0001/baseline.log").exists());
    // The second iteration reused the baseline of the first one's commit: no second baseline run.
    assert!(!repo.latest_run_dir().join("iter-0002/baseline.log").exists());

    // gate = "all-green": any failure is red.
    let text = repo.read("ralph.toml").replace("[checks]\n", "[checks]\ngate = \"all-green\"\n");
    repo.write("ralph.toml", &text);
    repo.write("specs/030-more.md", "# More\n");
    repo.commit_all("strict");
    repo.set_scenario(
        "[[step]]\nactions = [{ write = { path = \"more.txt\", content = \"m\\n\" } }, { promise = true }]\n",
    );
    repo.ralph(&["run", "--new-run"]).expect(4);
    assert_eq!(repo.records()[0]["outcome"], "checks_failed");
}

#[test]
fn a_clean_tree_failure_that_names_no_test_tolerates_nothing() {
    // Like pytest not installed, or a collection error: the check fails on the clean tree and
    // its runner names no failing test. An agent that breaks the source must not get through.
    let scenario = r#"
[[step]]
iteration = 1
actions = [{ write = { path = "src.txt", content = "garbage\n" } }, { promise = true }]
[[step]]
iteration = 2
actions = [{ write = { path = "generated.txt", content = "g\n" } }, { write = { path = "src.txt", content = "fine\n" } }, { promise = true }]
"#;
    let check = "test -f generated.txt && ! grep -q garbage src.txt";
    let repo = TestRepo::with_loop(scenario, &[check], "", &[("010-a.md", "# A\n")]);
    repo.write("src.txt", "fine\n");
    repo.commit_all("source");
    let run = repo.ralph(&["run"]).expect(0);
    assert!(
        run.stderr()
            .contains("fails on the clean tree and names no failing test: nothing of it is tolerated"),
        "{}",
        run.stderr()
    );
    let r = repo.records();
    assert_eq!(r[0]["outcome"], "checks_failed", "garbage was let through: {}", r[0]);
    assert_ne!(r[0]["checks"][0]["tolerated"], true);
    assert_eq!(r[1]["outcome"], "done", "work that makes the check pass is committed: {}", r[1]);
    assert_eq!(repo.read("src.txt"), "fine\n");
    assert!(!repo.git(&["log", "-p", "--", "src.txt"]).contains("garbage"));
}

/// Two todo tasks, the second with a `status:` line to flip.
fn two_tasks(scenario: &str) -> TestRepo {
    TestRepo::with_loop(
        scenario,
        &["true"],
        "",
        &[("010-a.md", "# A\n"), ("020-b.md", "---\nstatus: todo\n---\n# B\n")],
    )
}

#[test]
fn no_other_task_changes_status_during_an_iteration() {
    // The agent marks the next task done with a command that never names its spec: rejected.
    let scenario = r#"
[[step]]
task = "010-a"
iteration = 1
actions = [{ run = "for f in specs/*; do sed -i 's/status: todo/status: done/' $f; done" }, { write = { path = "a.txt", content = "a\n" } }, { promise = true }]
[[step]]
task = "010-a"
iteration = 2
actions = [{ expect_prompt = "it changed the status of specs/020-b.md (todo → done)" }, { write = { path = "a.txt", content = "a\n" } }, { promise = true }]
[[step]]
task = "020-b"
actions = [{ write = { path = "b.txt", content = "b\n" } }, { promise = true }]
"#;
    let repo = two_tasks(scenario);
    repo.ralph(&["run"]).expect(0);
    let r = repo.records();
    assert_eq!(r[0]["outcome"], "checks_failed");
    assert!(r[0]["failure"].as_str().unwrap().contains("ralph sets task status"), "{}", r[0]);
    assert_eq!(r.len(), 3, "020-b still ran");
    assert!(repo.exists("b.txt"));

    // Who wrote it cannot be told: a change made while an agent works is rejected with the
    // iteration, and kept in its rejected.patch to be made again between iterations.
    let scenario = r#"
[[step]]
task = "010-a"
actions = [{ write = { path = "started.txt", content = "1\n" } }, { sleep = "1500ms" }, { write = { path = "a.txt", content = "a\n" } }, { promise = true }]
"#;
    let repo = two_tasks(scenario);
    let child =
        repo.cmd(&["run", "--max-iterations", "1"]).stderr(std::process::Stdio::piped()).spawn().unwrap();
    assert!(wait_for(20, || repo.exists("started.txt")));
    repo.write("specs/020-b.md", "---\nstatus: done\n---\n# B\n");
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", String::from_utf8_lossy(&out.stderr));
    let r = repo.records();
    assert_eq!(r[0]["outcome"], "checks_failed");
    assert!(r[0]["failure"].as_str().unwrap().contains("make it again between iterations"), "{}", r[0]);
    assert_eq!(repo.spec_status("020-b"), "todo");
    assert!(repo.iter_file(1, "rejected.patch").contains("+status: done"));
}

/// After a green iteration ralph knows the index held its commit, and judges the next one from
/// `git add -v` instead of a diff: the same gates must hold there.
#[test]
fn the_judge_cannot_be_gamed_after_a_green_iteration_either() {
    let cases = [
        (
            "{ write = { path = \"check.sh\", content = \"exit 0\\n\" } }",
            "it changed the protected path check.sh",
        ),
        ("{ delete = \"tests/parser_test.py\" }", "it deleted the test file tests/parser_test.py"),
        (
            "{ write = { path = \"src/lib.rs\", content = \"#[test]\\n#[ignore]\\nfn t() {}\\n\" } }",
            "it added a skip marker in src/lib.rs",
        ),
        // A file that already held a marker: only its added lines count.
        (
            "{ append = { path = \"tests/old_test.py\", content = \"@pytest.mark.skip\\ndef test_y(): pass\\n\" } }",
            "it added a skip marker in tests/old_test.py: `@pytest.mark.skip`",
        ),
    ];
    for (step, reason) in cases {
        let scenario = format!(
            "[[step]]\ntask = \"010-a\"\nactions = [{{ write = {{ path = \"work.txt\", content = \"w\\n\" }} }}, {{ promise = true }}]\n\
             [[step]]\ntask = \"020-b\"\niteration = 1\nactions = [{step}, {{ write = {{ path = \"work2.txt\", content = \"w\\n\" }} }}, {{ promise = true }}]\n\
             [[step]]\ntask = \"020-b\"\niteration = 2\nactions = [{{ expect_prompt = {} }}, {{ append = {{ path = \"tests/old_test.py\", content = \"def test_z(): pass\\n\" }} }}, {{ promise = true }}]\n",
            toml_str(reason)
        );
        let repo = TestRepo::with_loop(
            &scenario,
            &["sh check.sh"],
            "",
            &[("010-a.md", "# A\n\nMake work.txt.\n"), ("020-b.md", "# B\n\nMake work2.txt.\n")],
        );
        repo.write("check.sh", "#!/bin/sh\ntest -f work.txt\n");
        repo.write("tests/parser_test.py", "def test_x():\n    assert True\n");
        repo.write("tests/old_test.py", "@pytest.mark.skip\ndef test_x(): pass\n");
        repo.commit_all("check script and tests");
        let run = repo.cmd(&["run"]).env("RALPH_LOG", "ralph::git=debug").output().unwrap();
        assert_eq!(run.status.code(), Some(0), "{step}: {}", String::from_utf8_lossy(&run.stderr));
        let r = repo.records();
        let outcomes: Vec<&str> = r.iter().map(|r| r["outcome"].as_str().unwrap()).collect();
        assert_eq!(outcomes, ["done", "checks_failed", "done"], "{step}");
        let failure = r[1]["failure"].as_str().unwrap();
        assert!(
            failure.starts_with("a gate rejected the work") && failure.contains(reason),
            "{step}: {failure}"
        );
        assert_eq!(repo.read("check.sh"), "#!/bin/sh\ntest -f work.txt\n");
        assert!(repo.exists("tests/parser_test.py"));
        // The rejection came from the listed add: the index held the first commit.
        let log = String::from_utf8_lossy(&run.stderr);
        assert!(log.contains(r#""add", "-A", "-v""#), "{step}: {log}");
    }
}

/// Three tasks; the first two are done by the scenario's first steps.
fn after_two_done(third: &str) -> TestRepo {
    let scenario = format!(
        r#"
[[step]]
task = "010-a"
actions = [{{ write = {{ path = "a.txt", content = "a\n" }} }}, {{ promise = true }}]
[[step]]
task = "020-b"
actions = [{{ write = {{ path = "b.txt", content = "b\n" }} }}, {{ promise = true }}]
[[step]]
task = "030-c"
iteration = 1
actions = [{third}, {{ write = {{ path = "c.txt", content = "c\n" }} }}, {{ promise = true }}]
[[step]]
task = "030-c"
iteration = 2
actions = [{{ write = {{ path = "c.txt", content = "c\n" }} }}, {{ promise = true }}]
"#
    );
    TestRepo::with_loop(
        &scenario,
        &["true"],
        "",
        &[("010-a.md", "# A\n"), ("020-b.md", "# B\n"), ("030-c.md", "# C\n\nMake c.txt.\n")],
    )
}

#[test]
fn an_agent_that_rewinds_the_branch_loses_nobody_s_work() {
    for (action, reason) in [
        (r#"{ run = "git reset -q --hard HEAD~2 && git gc -q" }"#, "rewrote the branch's history"),
        (
            r#"{ run = "git reset -q --soft HEAD~1 && git commit -q --amend -m squashed" }"#,
            "rewrote the branch's history",
        ),
        (r#"{ run = "git rm -q a.txt" }"#, "it deleted a.txt, which task 010-a made"),
        (r#"{ delete = "b.txt" }"#, "it deleted b.txt, which task 020-b made"),
    ] {
        let repo = after_two_done(action);
        repo.ralph(&["run"]).expect(0);
        let r = repo.records();
        let outcomes: Vec<&str> = r.iter().map(|r| r["outcome"].as_str().unwrap()).collect();
        assert_eq!(outcomes[..2], ["done", "done"], "{action}");
        assert_ne!(outcomes[2], "done", "{action}: {}", r[2]);
        assert!(r[2]["failure"].as_str().unwrap().contains(reason), "{action}: {}", r[2]);
        assert_eq!(outcomes[3], "done", "{action}");
        assert!(repo.exists("a.txt") && repo.exists("b.txt") && repo.exists("c.txt"), "{action}");
        for id in ["010-a", "020-b", "030-c"] {
            assert_eq!(repo.spec_status(id), "done", "{action}: {id}");
        }
        let log = repo.git(&["log", "--format=%s"]);
        assert!(log.contains("ralph(010-a): A") && log.contains("ralph(020-b): B"), "{action}: {log}");
        assert_eq!(repo.dirt(), "", "{action}");
    }
}

#[test]
fn a_task_whose_spec_asks_for_a_removal_may_remove_another_task_s_file() {
    let scenario = r#"
[[step]]
task = "010-a"
actions = [{ write = { path = "old.txt", content = "a\n" } }, { promise = true }]
[[step]]
task = "020-b"
actions = [{ delete = "old.txt" }, { promise = true }]
"#;
    let repo = TestRepo::with_loop(
        scenario,
        &["true"],
        "",
        &[("010-a.md", "# A\n"), ("020-b.md", "# B\n\nRemove old.txt, it is dead code.\n")],
    );
    repo.ralph(&["run"]).expect(0);
    let outcomes: Vec<String> =
        repo.records().iter().map(|r| r["outcome"].as_str().unwrap().into()).collect();
    assert_eq!(outcomes, ["done", "done"]);
    assert!(!repo.exists("old.txt"));
}

/// A runner that reported its tests at the last green round and now passes without reporting
/// any (a conftest.py that exits at once): no tests ran, which is fewer than before.
#[test]
fn a_runner_that_stops_reporting_its_tests_is_rejected() {
    // The "runner" reports its tests unless a conftest cuts it short, exit 0.
    let check = "if [ -f conftest.sh ]; then sh conftest.sh; else echo \"test result: ok. $(wc -l < tests.txt) passed; 0 failed; 0 ignored\"; fi";
    let scenario = r#"
[[step]]
task = "010-add"
actions = [{ append = { path = "tests.txt", content = "t3\n" } }, { promise = true }]
[[step]]
task = "020-cut"
iteration = 1
actions = [{ write = { path = "conftest.sh", content = "exit 0\n" } }, { write = { path = "src.txt", content = "garbage\n" } }, { promise = true }]
[[step]]
task = "020-cut"
iteration = 2
actions = [{ expect_prompt = "reported no tests" }, { write = { path = "other.txt", content = "o\n" } }, { promise = true }]
"#;
    let repo =
        TestRepo::with_loop(scenario, &[check], "", &[("010-add.md", "# Add\n"), ("020-cut.md", "# Cut\n")]);
    repo.write("tests.txt", "t1\nt2\n");
    repo.commit_all("two tests");
    repo.ralph(&["run"]).expect(0);
    let r = repo.records();
    assert_eq!(r[0]["outcome"], "done");
    assert_eq!(r[1]["outcome"], "checks_failed");
    let failure = r[1]["failure"].as_str().unwrap();
    assert!(failure.contains("reported no tests, 3 before"), "{failure}");
    assert!(!repo.exists("src.txt") && !repo.exists("conftest.sh"));
    assert_eq!(r[2]["outcome"], "done");
}

/// A test file git shows as binary (an attribute, a NUL byte) shows no added lines: its skip
/// marker is found all the same.
#[test]
fn a_skip_marker_in_a_file_git_shows_as_binary_is_found() {
    for hide in [
        r#"{ write = { path = ".gitattributes", content = "*.py -diff\n" } }"#,
        r#"{ run = "printf '# \\000\\n' >> tests/test_x.py" }"#,
    ] {
        let scenario = format!(
            r#"
[[step]]
task = "010-a"
actions = [{{ write = {{ path = "tests/test_x.py", content = "def test_a():\n    assert 1\n" }} }}, {{ promise = true }}]
[[step]]
task = "020-b"
iteration = 1
actions = [{{ write = {{ path = "tests/test_x.py", content = "import pytest\n@pytest.mark.skip\ndef test_a():\n    assert 0\n" }} }}, {hide}, {{ promise = true }}]
[[step]]
actions = [{{ write = {{ path = "b.txt", content = "b\n" }} }}, {{ promise = true }}]
"#
        );
        let repo =
            TestRepo::with_loop(&scenario, &["true"], "", &[("010-a.md", "# A\n"), ("020-b.md", "# B\n")]);
        repo.ralph(&["run"]).expect(0);
        let r = repo.records();
        assert_eq!(r[1]["outcome"], "checks_failed", "{hide}: {}", r[1]);
        let failure = r[1]["failure"].as_str().unwrap();
        assert!(failure.contains("it added a skip marker in tests/test_x.py"), "{hide}: {failure}");
        assert_eq!(r[2]["outcome"], "done");
    }
}

/// The clean tree fails with named tests; the agent's work cuts the runner short so it prints
/// only an old failure's name (a conftest.py that prints it and exits): that is no tolerated
/// failure but a runner that ran fewer tests than the clean tree, from the first iteration on.
#[test]
fn a_runner_cut_short_to_an_old_failure_is_not_tolerated() {
    // A cargo-like runner: failing.txt names the failing tests, tests.txt all of them.
    let check = "if [ -f cut.sh ]; then sh cut.sh; exit 1; fi; while read t; do echo \"test $t ... FAILED\"; done < failing.txt; echo \"test result: FAILED. $(wc -l < tests.txt) passed; $(wc -l < failing.txt) failed\"; test ! -s failing.txt";
    let scenario = r#"
[[step]]
task = "010-a"
iteration = 1
actions = [{ write = { path = "cut.sh", content = "echo 'test a ... FAILED'\n" } }, { write = { path = "src.txt", content = "garbage\n" } }, { promise = true }]
[[step]]
actions = [{ write = { path = "ok.txt", content = "ok\n" } }, { promise = true }]
"#;
    let repo = TestRepo::with_loop(scenario, &[check], "", &[("010-a.md", "# A\n")]);
    repo.write("failing.txt", "a\n");
    repo.write("tests.txt", "t1\nt2\nt3\n");
    repo.commit_all("one test already fails");
    let run = repo.ralph(&["run"]).expect(0);
    let r = repo.records();
    assert_eq!(r[0]["outcome"], "checks_failed", "{}: {}", r[0], run.stderr());
    let failure = r[0]["failure"].as_str().unwrap();
    assert!(failure.contains("reported no tests, 4 before"), "{failure}");
    assert!(!repo.exists("src.txt") && !repo.exists("cut.sh"));
    assert_eq!(r[1]["outcome"], "done");
}
