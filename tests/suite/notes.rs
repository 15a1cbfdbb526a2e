//! `ralph note`: a person steers a run without stopping it. The note, left while the run goes
//! on, reaches the next iteration's prompt once, is recorded there, and counts as an
//! intervention; a parallel run's coordinator hands it to the next worker it starts. The agent
//! cannot leave one: neither through `ralph note` nor by writing the file.

use crate::common::*;
use std::process::Stdio;

const NOTE: &str = "prefer the existing http client";

#[test]
fn a_note_left_during_a_run_is_carried_once_by_the_next_prompt_recorded_and_counted() {
    let repo = TestRepo::new();
    let started = repo.outside.join("started");
    let go = repo.outside.join("go");
    let hold = format!(
        "touch {}; while [ ! -f {} ]; do sleep 0.05; done",
        shell_quote(&started.to_string_lossy()),
        shell_quote(&go.to_string_lossy())
    );
    repo.set_scenario(&format!(
        r#"
[[step]]
task = "010-a"
iteration = 1
actions = [{{ run = {} }}, {{ write = {{ path = "a1.txt", content = "1\n" }} }}, {{ progress = "one" }}]
[[step]]
task = "010-a"
iteration = 2
actions = [{{ write = {{ path = "a2.txt", content = "2\n" }} }}, {{ progress = "two" }}]
[[step]]
task = "010-a"
iteration = 3
actions = [{{ write = {{ path = "a3.txt", content = "3\n" }} }}, {{ promise = true }}]
"#,
        toml_str(&hold)
    ));
    repo.write_config(&["true"], "");
    repo.write("specs/010-a.md", "# A\n");
    repo.commit_all("set up");

    let child = repo.cmd(&["run"]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    assert!(wait_for(60, || started.exists()), "iteration 1 never started");
    // While iteration 1 runs, holding the run's lock: no conflict.
    let said = repo.ralph(&["note", "prefer", "the", "existing", "http", "client"]).expect(0).stdout();
    assert!(said.contains("the run going on carries it in its next iteration's prompt"), "{said}");
    let listed = repo.ralph(&["note", "--list"]).expect(0).stdout();
    assert!(listed.contains(NOTE), "{listed}");
    std::fs::write(&go, "").unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains(&format!("note for iteration 2 (`ralph note`): {NOTE}"))
    );

    assert!(!repo.iter_file(1, "prompt.md").contains(NOTE));
    let second = repo.iter_file(2, "prompt.md");
    assert_eq!(second.matches(NOTE).count(), 1, "{second}");
    assert!(second.contains("## Notes from the person running this loop"), "{second}");
    assert!(!repo.iter_file(3, "prompt.md").contains(NOTE), "carried once");

    let records = repo.records();
    assert_eq!(records[1]["notes"], serde_json::json!([NOTE]));
    assert!(records[0].get("notes").is_none() && records[2].get("notes").is_none());
    assert!(repo.ralph(&["note", "--list"]).expect(0).stdout().contains("no notes waiting"));

    let stats: serde_json::Value =
        serde_json::from_str(&repo.ralph(&["stats", "--json"]).expect(0).stdout()).unwrap();
    assert_eq!(stats["interventions"]["notes"], 1, "{}", stats["interventions"]);
    assert_eq!(stats["interventions"]["total"], 1, "{}", stats["interventions"]);
}

#[test]
fn notes_can_be_listed_and_withdrawn_and_an_empty_one_is_refused() {
    let repo = TestRepo::new();
    let err = repo.ralph(&["note", "  "]).expect(2).stderr();
    assert!(err.contains("the note is empty"), "{err}");
    let said = repo.ralph(&["note", "first"]).expect(0).stdout();
    assert!(said.contains("no run is going on: the next `ralph run` carries it"), "{said}");
    repo.ralph(&["note", "second"]).expect(0);
    let listed = repo.ralph(&["note", "--list"]).expect(0).stdout();
    let order: Vec<&str> = listed.lines().map(|l| l.rsplit("  ").next().unwrap()).collect();
    assert_eq!(order, ["first", "second"], "{listed}");
    assert!(repo.ralph(&["note", "--clear"]).expect(0).stdout().contains("withdrew 2 note(s)"));
    assert!(repo.ralph(&["note", "--list"]).expect(0).stdout().contains("no notes waiting"));
    // Nothing of it is in git.
    assert_eq!(repo.dirt(), "");
}

#[test]
fn a_parallel_run_hands_a_note_to_the_first_iteration_it_starts() {
    let scenario: String = ["010-a", "020-b"]
        .iter()
        .map(|t| {
            format!("[[step]]\ntask = \"{t}\"\nactions = [{{ write = {{ path = \"{t}.txt\", content = \"x\\n\" }} }}, {{ promise = true }}]\n")
        })
        .collect();
    let repo = TestRepo::with_loop(&scenario, &["true"], "", &[("010-a.md", "# A\n"), ("020-b.md", "# B\n")]);
    repo.ralph(&["note", NOTE]).expect(0);
    repo.ralph_within(180, &["run", "-j", "2"]).expect(0);
    assert_eq!(repo.iter_file(1, "prompt.md").matches(NOTE).count(), 1, "{}", repo.iter_file(1, "prompt.md"));
    assert!(!repo.iter_file(2, "prompt.md").contains(NOTE));
    let records = repo.records();
    let with: Vec<u64> = records
        .iter()
        .filter(|r| r.get("notes").is_some())
        .map(|r| r["iteration"].as_u64().unwrap())
        .collect();
    assert_eq!(with, [1], "{records:#?}");
}

/// An unsandboxed agent tries to speak as the person: it runs `ralph note`, and it writes a
/// note file into `.ralph/notes/` itself. The first is refused to its face; the second is
/// removed and said when the next iteration starts; neither reaches a prompt or the stats.
#[test]
fn the_agent_cannot_leave_a_note_through_ralph_note_or_by_writing_the_file() {
    let repo = TestRepo::new();
    let forge = format!(
        "{} note FORGED-BY-COMMAND > note.out 2>&1; echo \"exit=$?\" >> note.out; mkdir -p .ralph/notes; printf '{{\"text\":\"FORGED-BY-FILE\",\"added_at\":\"2026-12-06T00:00:00Z\"}}' > .ralph/notes/000000000000000000000001-1-aaaaaaaa.json",
        shell_quote(RALPH)
    );
    repo.set_scenario(&format!(
        r#"
[[step]]
task = "010-a"
iteration = 1
actions = [{{ run = {} }}, {{ write = {{ path = "a1.txt", content = "1\n" }} }}, {{ progress = "one" }}]
[[step]]
task = "010-a"
iteration = 2
actions = [{{ write = {{ path = "a2.txt", content = "2\n" }} }}, {{ promise = true }}]
"#,
        toml_str(&forge)
    ));
    repo.write_config(&["true"], "");
    repo.write("specs/010-a.md", "# A\n");
    repo.write(".gitignore", ".ralph/\nnote.out\n");
    repo.commit_all("set up");
    let run = repo.ralph(&["run"]).expect(0);
    let said = repo.read("note.out");
    assert!(said.contains("refused the note: the run's own processes"), "{said}");
    assert!(said.contains("exit=2"), "{said}");
    let err = run.stderr();
    assert!(err.contains("not through `ralph note`") && err.contains("refused and removed"), "{err}");
    for i in 1..=2 {
        let prompt = repo.iter_file(i, "prompt.md");
        assert!(!prompt.contains("FORGED"), "iteration {i}: {prompt}");
    }
    assert!(repo.records().iter().all(|r| r.get("notes").is_none()));
    let stats: serde_json::Value =
        serde_json::from_str(&repo.ralph(&["stats", "--json"]).expect(0).stdout()).unwrap();
    assert_eq!(stats["interventions"]["notes"], 0, "{}", stats["interventions"]);
    assert!(repo.ralph(&["note", "--list"]).expect(0).stdout().contains("no notes waiting"));
}

/// ralph killed with -9 while its agent ran, after the agent wrote a note file: the next run
/// does not carry it (it cannot tell who wrote it), and says so.
#[test]
fn a_note_found_after_a_run_was_killed_is_set_aside_not_carried() {
    let repo = TestRepo::new();
    let written = repo.outside.join("written");
    let forge = format!(
        "mkdir -p .ralph/notes; printf '{{\"text\":\"FORGED-BEFORE-THE-KILL\",\"added_at\":\"2026-12-06T00:00:00Z\"}}' > .ralph/notes/000000000000000000000001-1-aaaaaaaa.json; touch {}; sleep 30",
        shell_quote(&written.to_string_lossy())
    );
    repo.set_scenario(&format!(
        r#"
[[step]]
task = "010-a"
iteration = 1
actions = [{{ run = {} }}]
[[step]]
task = "010-a"
actions = [{{ write = {{ path = "a.txt", content = "a\n" }} }}, {{ promise = true }}]
"#,
        toml_str(&forge)
    ));
    repo.write_config(&["true"], "");
    repo.write("specs/010-a.md", "# A\n");
    repo.commit_all("set up");
    let mut child = repo.cmd(&["run"]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    assert!(wait_for(60, || written.exists()), "the agent never wrote its note");
    child.kill().unwrap();
    child.wait().unwrap();
    let run = repo.ralph(&["run"]).expect(0);
    let err = run.stderr();
    assert!(err.contains("a note left when the last run was killed is not carried"), "{err}");
    for r in repo.records() {
        assert!(r.get("notes").is_none(), "{r}");
    }
    let last = repo.records().last().unwrap()["iteration"].as_u64().unwrap() as u32;
    assert!(!repo.iter_file(last, "prompt.md").contains("FORGED"));
    assert!(repo.ralph(&["note", "--list"]).expect(0).stdout().contains("no notes waiting"));
}
