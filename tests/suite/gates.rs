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
