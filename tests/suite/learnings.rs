//! Governed learnings: the loop compounds (a failure's learning reaches the next fresh
//! context), people review the store, agents update or retire entries by id.

use crate::common::*;

#[test]
fn the_loop_compounds_a_failure_teaches_the_next_fresh_iteration() {
    let scenario = r#"
[[step]]
iteration = 1
actions = [
  { write = { path = "config.txt", content = "port=80\n" } },
  { learning = "The service must listen on port 8080, not 80." },
  { promise = true },
]
[[step]]
iteration = 2
actions = [
  { expect_prompt = "The service must listen on port 8080, not 80." },
  { write = { path = "config.txt", content = "port=8080\n" } },
  { promise = true },
]
"#;
    // The acceptance check is the task's own: it fails on the clean tree, and must pass.
    let repo = TestRepo::with_loop(
        scenario,
        &["true"],
        "",
        &[(
            "010-port.md",
            "---\nchecks: [\"grep -qx port=8080 config.txt\"]\n---\n# Port\n\nConfigure the service.\n",
        )],
    );
    repo.ralph(&["run"]).expect(0);
    let r = repo.records();
    assert_eq!(r[0]["outcome"], "checks_failed");
    assert_eq!(r[0]["learnings_added"], serde_json::json!(["The service must listen on port 8080, not 80."]));
    assert_eq!(r[1]["outcome"], "done", "the second, fresh agent found the learning in its prompt");
    assert!(
        repo.iter_file(2, "prompt.md")
            .contains("- [L1] The service must listen on port 8080, not 80. (010-port)")
    );
    // The learnings commit changed no code: the clean tree's checks were not run again.
    assert!(repo.latest_run_dir().join("iter-0001/baseline.log").exists());
    assert!(!repo.latest_run_dir().join("iter-0002/baseline.log").exists());
}

#[test]
fn people_list_show_remove_and_review_learnings() {
    let scenario = r#"
[[step]]
task = "010-a"
actions = [{ learning = "Run make gen before the tests." }, { write = { path = "a.txt", content = "a\n" } }, { promise = true }]
[[step]]
task = "020-b"
actions = [{ learning = "run make gen before the tests" }, { learning = "Never skip the test suite, use #[ignore] sparingly" }, { write = { path = "b.txt", content = "b\n" } }, { promise = true }]
"#;
    let repo = TestRepo::with_loop(scenario, &["true"], "", &[("010-a.md", "# A\n"), ("020-b.md", "# B\n")]);
    repo.ralph(&["run"]).expect(0);
    let list = repo.ralph(&["learnings"]).expect(0).stdout();
    assert!(list.contains("L1"), "{list}");
    assert!(list.contains("active") && list.contains("    2 "), "seen twice: {list}");
    let r = repo.records();
    assert!(r[1]["learnings_rejected"][0]["reason"].as_str().unwrap().contains("weaken"), "{}", r[1]);
    let show = repo.ralph(&["learnings", "show", "L1"]).expect(0).stdout();
    assert!(show.contains("task:      010-a (run ") && show.contains("iteration 1)"), "{show}");
    assert!(show.contains("commit:"), "{show}");
    let json: serde_json::Value =
        serde_json::from_str(&repo.ralph(&["learnings", "show", "L1", "--json"]).expect(0).stdout()).unwrap();
    assert_eq!(json["count"], 2);

    let out = repo.ralph(&["learnings", "remove", "L1"]).expect(0).stdout();
    assert!(out.contains("removed L1"), "{out}");
    assert!(!repo.read("AGENTS.md").contains("make gen"));
    assert_eq!(repo.git(&["log", "-1", "--format=%s"]).trim(), "ralph: learnings: remove L1");
    assert_eq!(repo.dirt(), "");
    assert!(!repo.ralph(&["learnings"]).expect(0).stdout().contains("L1"));
    assert!(repo.ralph(&["learnings", "--all"]).expect(0).stdout().contains("retired"));
    let err = repo.ralph(&["learnings", "show", "L9"]).expect(2);
    assert!(err.stderr().contains("no learning `L9`"));
}

#[test]
fn with_require_review_new_learnings_wait_for_a_person() {
    let scenario = r#"
[[step]]
task = "010-a"
actions = [{ learning = "Use the staging database for tests." }, { write = { path = "a.txt", content = "a\n" } }, { promise = true }]
[[step]]
task = "020-b"
actions = [{ write = { path = "b.txt", content = "b\n" } }, { promise = true }]
"#;
    let repo = TestRepo::with_loop(
        scenario,
        &["true"],
        "[learnings]\nrequire_review = true\n",
        &[("010-a.md", "# A\n"), ("020-b.md", "# B\n")],
    );
    repo.ralph(&["run"]).expect(0);
    assert!(!repo.read("AGENTS.md").contains("staging database"));
    assert!(
        !repo.iter_file(2, "prompt.md").contains("staging database"),
        "a pending learning reached a prompt"
    );
    assert!(repo.ralph(&["learnings"]).expect(0).stdout().contains("pending"));
    repo.ralph(&["learnings", "review", "L1"]).expect(0);
    assert!(repo.read("AGENTS.md").contains("- [L1] Use the staging database for tests. (010-a)"));
    assert_eq!(repo.dirt(), "");
}

#[test]
fn agents_update_and_retire_learnings_by_id() {
    let scenario = r#"
[[step]]
iteration = 1
actions = [{ learning = "Builds need gcc." }, { run = "date +%N > x.txt" }]
[[step]]
iteration = 2
actions = [{ expect_prompt = "[L1] Builds need gcc." }, { print = "<learning update=\"L1\">Builds need gcc 12 or newer.</learning>" }, { run = "date +%N > x.txt" }]
[[step]]
iteration = 3
actions = [{ expect_prompt = "[L1] Builds need gcc 12 or newer." }, { print = "<learning retire=\"L1\">the build moved to clang</learning>" }, { run = "date +%N > x.txt" }, { promise = true }]
"#;
    let repo = TestRepo::with_loop(scenario, &["true"], "", &[("010-a.md", "# A\n")]);
    repo.ralph(&["run"]).expect(0);
    assert!(!repo.read("AGENTS.md").contains("gcc"), "{}", repo.read("AGENTS.md"));
    let json: serde_json::Value =
        serde_json::from_str(&repo.ralph(&["learnings", "show", "L1", "--json"]).expect(0).stdout()).unwrap();
    assert_eq!(json["status"], "retired");
    assert!(json["retired_reason"].as_str().unwrap().contains("the build moved to clang"));
}
