//! `ralph eval` from history: the tasks earlier runs finished become cases, judged by the
//! project's checks with the test files of the commit that finished each put back.

use crate::common::*;

/// Three tasks, each writing its file and a test of it; the project's check runs every test.
const THREE: &str = r#"
[[step]]
task = "010-one"
actions = [{ write = { path = "one.txt", content = "1\n" } }, { write = { path = "tests/test_one.sh", content = "test -f one.txt\n" } }, { promise = true }]
[[step]]
task = "020-two"
actions = [{ write = { path = "two.txt", content = "2\n" } }, { write = { path = "tests/test_two.sh", content = "test -f two.txt\n" } }, { promise = true }]
[[step]]
task = "030-three"
actions = [{ write = { path = "three.txt", content = "3\n" } }, { write = { path = "tests/test_three.sh", content = "test -f three.txt\n" } }, { promise = true }]
"#;

const CHECK: &str = "for t in tests/test_*.sh; do [ -e \"$t\" ] || continue; sh \"$t\" || exit 1; done";

fn finished_three() -> TestRepo {
    let repo = TestRepo::with_loop(
        THREE,
        &[CHECK],
        "",
        &[
            ("010-one.md", "# One\n\nWrite one.txt.\n"),
            ("020-two.md", "# Two\n\nWrite two.txt.\n"),
            ("030-three.md", "# Three\n\nWrite three.txt.\n"),
        ],
    );
    repo.ralph(&["run"]).expect(0);
    repo
}

#[test]
fn three_finished_tasks_are_three_cases_scored_with_their_own_tests_put_back() {
    let repo = finished_three();
    let head = repo.head();
    let out = repo.ralph_within(120, &["eval", "--json"]).expect(0);
    let v: serde_json::Value = serde_json::from_str(&out.stdout())
        .unwrap_or_else(|e| panic!("{e}: {}\n{}", out.stdout(), out.stderr()));
    let ids: Vec<&str> = v["cases"].as_array().unwrap().iter().map(|c| c["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["010-one", "020-two", "030-three"], "{v}");
    assert_eq!(v["score"], 1.0, "{v}");
    assert_eq!(repo.head(), head, "the user's branch did not move");
    assert_eq!(repo.dirt(), "");
    assert_eq!(repo.git(&["worktree", "list"]).lines().count(), 1);
}

#[test]
fn an_agent_that_does_not_do_the_task_fails_the_put_back_test_even_if_it_deletes_its_own() {
    let repo = finished_three();
    // Now the agent only writes a test that passes trivially, not the file.
    repo.set_scenario(
        r#"
[[step]]
actions = [{ write = { path = "tests/test_one.sh", content = "true\n" } }, { write = { path = "tests/test_two.sh", content = "true\n" } }, { write = { path = "tests/test_three.sh", content = "true\n" } }, { promise = true }]
"#,
    );
    let out = repo.ralph_within(120, &["eval", "--json"]).expect(0);
    let v: serde_json::Value = serde_json::from_str(&out.stdout()).unwrap();
    assert_eq!(v["score"], 0.0, "weakened tests must not pass: {v}");
}
