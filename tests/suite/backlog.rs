//! The backlog between runs: ids, per-task attempt limits, duplicate ids, and done specs that
//! were edited since being reopened.

use crate::common::*;

#[test]
fn a_done_spec_edited_since_is_shown_changed_and_reopened() {
    let scenario = r#"
[[step]]
iteration = 1
actions = [{ write = { path = "a.txt", content = "v1\n" } }, { promise = true }]
[[step]]
iteration = 2
actions = [{ expect_prompt = "now with v2" }, { write = { path = "a.txt", content = "v2\n" } }, { promise = true }]
"#;
    let repo = TestRepo::with_loop(scenario, &["true"], "", &[("010-a.md", "# A\n\nWrite a.txt.\n")]);
    repo.ralph(&["run"]).expect(0);
    assert_eq!(repo.spec_status("010-a"), "done");
    // The user edits the spec of a done task.
    let text = repo.read("specs/010-a.md").replace("Write a.txt.", "Write a.txt, now with v2.");
    repo.write("specs/010-a.md", &text);
    repo.commit_all("more to do");
    let status = repo.ralph(&["status"]).expect(0).stdout();
    assert!(status.contains("010-a  changed"), "{status}");
    let v: serde_json::Value =
        serde_json::from_str(&repo.ralph(&["status", "--json"]).expect(0).stdout()).unwrap();
    assert_eq!(v["tasks"][0]["changed"], true);
    let run = repo.ralph(&["run"]).expect(0);
    assert!(run.stderr().contains("changed since 010-a was done: reopened"), "{}", run.stderr());
    assert_eq!(repo.read("a.txt"), "v2\n");
    assert!(
        repo.git(&["log", "--format=%s"])
            .contains("ralph(010-a): reopened: the spec changed since it was done")
    );
    // Unedited since: done stays done, nothing runs.
    let again = repo.ralph(&["run"]).expect(0);
    assert!(!again.stderr().contains("reopened"), "{}", again.stderr());
    assert!(repo.records().is_empty());
}

#[test]
fn ids_and_per_task_attempts_come_from_the_front_matter() {
    let scenario =
        "[[step]]\ntask = \"login\"\nactions = [{ exit = 1 }]\n[[step]]\nactions = [{ promise = true }]\n";
    let repo = TestRepo::with_loop(
        scenario,
        &["true"],
        "[budget]\nmax_attempts = 5\n",
        &[
            ("010-login.md", "---\nid: login\nmax_attempts: 1\n---\n# Login\n"),
            ("020-after.md", "---\ndepends_on: [login]\n---\n# After\n"),
        ],
    );
    repo.ralph(&["run"]).expect(4);
    let r = repo.records();
    assert_eq!(r.len(), 1, "one attempt, then blocked");
    assert_eq!(r[0]["task"], "login");
    assert_eq!(repo.spec_status("010-login"), "blocked");

    repo.write("specs/030-dup.md", "---\nid: login\n---\n");
    repo.commit_all("dup");
    let err = repo.ralph(&["run"]).expect(2).stderr();
    assert!(err.contains("specs/030-dup.md: the task id `login` is already specs/010-login.md's"), "{err}");
}

#[test]
fn watch_waits_for_new_specs_and_live_edits_are_reported_and_kept() {
    let (repo, child) = watching_after_one_task();
    // A new spec, written while ralph waits, not committed: picked up, done, and kept.
    std::thread::sleep(std::time::Duration::from_millis(300));
    repo.write("specs/020-b.md", "# B\n");
    assert!(wait_for(20, || repo.exists("020-b.txt") && repo.spec_status("020-b") == "done"));
    repo.ralph(&["stop", "--now"]).expect(0);
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{err}");
    assert!(err.contains("waiting for new or changed specs"), "{err}");
    assert!(err.contains("specs/020-b.md is new; applies from iteration 2"), "{err}");
    assert!(
        repo.git(&["ls-files"]).contains("specs/020-b.md"),
        "the user's new spec was committed, not lost"
    );
}

#[test]
fn an_uncommitted_spec_edit_survives_a_reverted_iteration() {
    // The agent fails; meanwhile the user adds a spec without committing it.
    let scenario = "[[step]]\ntask = \"010-a\"\nactions = [{ run = \"echo '# Later' > specs/020-later.md; echo x > junk.txt\" }, { exit = 1 }]\n";
    let repo =
        TestRepo::with_loop(scenario, &["true"], "[budget]\nmax_attempts = 1\n", &[("010-a.md", "# A\n")]);
    repo.write("specs/015-mine.md", "# Mine\n\nUncommitted.\n");
    repo.set_scenario("[[step]]\ntask = \"010-a\"\nactions = [{ write = { path = \"junk.txt\", content = \"x\\n\" } }, { exit = 1 }]\n[[step]]\nactions = [{ exit = 1 }]\n");
    repo.ralph(&["run", "--allow-dirty"]).expect(4);
    // It joined the backlog (and, its agent failing too, was blocked): its text is intact.
    assert!(
        repo.read("specs/015-mine.md").ends_with("# Mine\n\nUncommitted.\n"),
        "the user's uncommitted spec was lost"
    );
    assert!(!repo.exists("junk.txt"));
}

#[test]
fn ralph_toml_edited_during_a_run_applies_from_the_next_iteration() {
    let (repo, child) = watching_after_one_task();
    std::thread::sleep(std::time::Duration::from_millis(300));
    // Between iterations (ralph waits for work): a new limit, a note, then two more tasks.
    let text = repo.read("ralph.toml") + "[budget]\nmax_iterations = 2\n";
    repo.write("ralph.toml", &text);
    repo.write("AGENTS.md", "# AGENTS.md\n\nUse tabs.\n");
    repo.write("specs/020-b.md", "# B\n");
    repo.write("specs/030-c.md", "# C\n");
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(err.contains("ralph.toml or the prompt template changed; applies from iteration 2"), "{err}");
    assert!(err.contains("iteration budget (2) is spent"), "{err}");
    assert!(err.contains("AGENTS.md changed; applies from iteration 2"), "{err}");
    assert!(repo.iter_file(2, "prompt.md").contains("Use tabs."));
    assert!(repo.exists("020-b.txt") && !repo.exists("030-c.txt"));
    assert!(repo.read("ralph.toml").contains("max_iterations = 2"), "the user's edit is kept");
}

#[test]
fn ralph_stop_ends_an_idle_watch_as_a_normal_end() {
    let (repo, child) = watching_after_one_task();
    let waiting = || {
        let v: serde_json::Value =
            serde_json::from_str(&repo.ralph(&["status", "--json"]).expect(0).stdout()).unwrap_or_default();
        v["run"]["state"] == "running"
    };
    assert!(wait_for(20, waiting));
    // Past the commit, into the wait for specs.
    std::thread::sleep(std::time::Duration::from_millis(1000));
    repo.ralph(&["stop"]).expect(0);
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "the backlog is done: {err}");
    assert!(err.contains("backlog done"), "{err}");
    let v: serde_json::Value =
        serde_json::from_str(&repo.ralph(&["status", "--json"]).expect(0).stdout()).unwrap();
    assert_eq!(v["run"]["exit_code"], 0);
}

/// `ralph run --watch` on a one-task backlog, once that task is done and committed.
fn watching_after_one_task() -> (TestRepo, std::process::Child) {
    let scenario =
        "[[step]]\nactions = [{ run = \"echo $RALPH_TASK > $RALPH_TASK.txt\" }, { promise = true }]\n";
    let repo = TestRepo::with_loop(scenario, &["true"], "", &[("010-a.md", "# A\n")]);
    let child = repo.cmd(&["run", "--watch"]).stderr(std::process::Stdio::piped()).spawn().unwrap();
    assert!(wait_for(20, || repo.exists("010-a.txt") && repo.dirt().is_empty()));
    (repo, child)
}

#[test]
fn import_turns_a_prd_or_a_checklist_into_specs() {
    let repo = TestRepo::with_loop("[[step]]\nactions = [{ promise = true }]\n", &["true"], "", &[]);
    repo.write(
        "prd.json",
        r#"{"userStories":[{"id":"US-001","title":"Add login","acceptanceCriteria":["Form posts"],"priority":2,"passes":false},{"id":"US-002","title":"Logout","priority":1,"passes":true}]}"#,
    );
    let out = repo.ralph(&["import", "prd.json"]).expect(0).stdout();
    assert!(
        out.contains("created   specs/010-add-login.md") && out.contains("created   specs/020-logout.md"),
        "{out}"
    );
    assert_eq!(
        repo.read("specs/010-add-login.md"),
        "---\nid: US-001\nstatus: todo\npriority: 2\n---\n# Add login\n\n## Done when\n\n- Form posts\n"
    );
    assert_eq!(repo.spec_status("020-logout"), "done");
    repo.write("IMPLEMENTATION_PLAN.md", "- [ ] Parse flags\n- [x] Set up CI\n");
    repo.ralph(&["import", "IMPLEMENTATION_PLAN.md"]).expect(0);
    assert!(repo.exists("specs/030-parse-flags.md") && repo.exists("specs/040-set-up-ci.md"));
    let v: serde_json::Value =
        serde_json::from_str(&repo.ralph(&["status", "--json"]).expect(0).stdout()).unwrap();
    assert_eq!(v["tasks"].as_array().unwrap().len(), 4);
    assert_eq!(v["tasks"][0]["id"], "US-001");
    // Bad input: one message with the file and line, nothing written.
    repo.write("bad.json", "{\n\"userStories\": [}\n");
    let err = repo.ralph(&["import", "bad.json"]).expect(2).stderr();
    assert!(err.contains("bad.json:2:"), "{err}");
    assert_eq!(std::fs::read_dir(repo.path("specs")).unwrap().count(), 4);
}

const PRD: &str = r#"{
  "project": "shop",
  "branchName": "ralph/login",
  "userStories": [
    {
      "id": "US-001",
      "title": "Add login",
      "acceptanceCriteria": ["Form posts"],
      "priority": 1,
      "passes": false
    },
    {
      "id": "US-002",
      "title": "Log out",
      "acceptanceCriteria": ["Button works"],
      "priority": 2,
      "passes": false,
      "notes": "keep me"
    }
  ]
}
"#;

#[test]
fn a_prd_json_is_the_backlog_and_its_passes_are_kept_up_to_date() {
    let scenario = r#"
[[step]]
task = "US-001"
actions = [{ expect_prompt = "- Form posts" }, { write = { path = "login.txt", content = "ok\n" } }, { promise = true }]
[[step]]
task = "US-002"
actions = [{ exit = 1 }]
"#;
    let repo = TestRepo::with_loop(scenario, &["true"], "[budget]\nmax_attempts = 1\n", &[]);
    repo.write("prd.json", PRD);
    repo.commit_all("prd");
    let status = repo.ralph(&["status"]).expect(0).stdout();
    assert!(status.contains("US-001  todo") && status.contains("Log out"), "{status}");

    repo.ralph(&["run"]).expect(4);
    // US-001 is done: only its `passes` changed, every other byte as the user wrote it.
    let after = repo.read("prd.json");
    assert_eq!(after, PRD.replacen("\"passes\": false", "\"passes\": true", 1));
    assert_eq!(repo.git(&["show", "HEAD~0:prd.json"]), after);
    assert!(repo.git(&["log", "--format=%s"]).contains("ralph(US-001)"));
    // US-002 failed its one attempt: blocked in ralph's state (prd.json has no place for it).
    let v: serde_json::Value =
        serde_json::from_str(&repo.ralph(&["status", "--json"]).expect(0).stdout()).unwrap();
    assert_eq!(v["tasks"][0]["status"], "done");
    assert_eq!(v["tasks"][1]["status"], "blocked");
    assert!(v["tasks"][1]["blocked_reason"].as_str().unwrap().contains("1 failed attempts"), "{v}");
    assert!(repo.dirt().is_empty(), "{}", repo.dirt());

    // Editing the story lifts the block; it runs again and passes.
    repo.set_scenario(
        "[[step]]\nactions = [{ expect_prompt = \"Button works, twice\" }, { promise = true }]\n",
    );
    repo.write("prd.json", &after.replace("\"Button works\"", "\"Button works, twice\""));
    repo.commit_all("clarify US-002");
    repo.ralph(&["run"]).expect(0);
    let prd: serde_json::Value = serde_json::from_str(&repo.read("prd.json")).unwrap();
    assert_eq!(prd["userStories"][1]["passes"], true);
    assert_eq!(prd["userStories"][1]["notes"], "keep me");
}

#[test]
fn a_checklist_plan_is_the_backlog_and_items_are_ticked() {
    let plan = "# Plan\n\n- [x] Set up CI\n- [ ] Parse the config\n  Keep comments.\n- [ ] Write docs\n\nNotes stay.\n";
    let scenario = r#"
[[step]]
task = "parse-the-config"
actions = [{ expect_prompt = "Keep comments." }, { write = { path = "config.txt", content = "parsed\n" } }, { promise = true }]
[[step]]
task = "write-docs"
actions = [{ write = { path = "docs.txt", content = "docs\n" } }, { promise = true }]
"#;
    let repo = TestRepo::with_loop(scenario, &["true"], "[backlog]\nfile = \"docs/fix_plan.md\"\n", &[]);
    repo.write("docs/fix_plan.md", plan);
    repo.commit_all("plan");
    repo.ralph(&["run"]).expect(0);
    assert_eq!(repo.read("docs/fix_plan.md"), plan.replace("- [ ]", "- [x]"));
    let r = repo.records();
    let tasks: Vec<&str> = r.iter().map(|r| r["task"].as_str().unwrap()).collect();
    assert_eq!(tasks, ["parse-the-config", "write-docs"], "in file order");

    // A plan that ralph.toml names but that is missing: one clear error.
    repo.write_config(&["true"], "[backlog]\nfile = \"IMPLEMENTATION_PLAN.md\"\n");
    repo.commit_all("wrong plan");
    let err = repo.ralph(&["run"]).expect(2).stderr();
    assert!(err.contains("cannot read IMPLEMENTATION_PLAN.md"), "{err}");
}

#[test]
fn a_broken_prd_json_is_named_with_line_and_column() {
    let repo = TestRepo::with_loop("", &["true"], "", &[]);
    repo.write("prd.json", "{\n  \"userStories\": [\n    {\"title\": \"x\",}\n  ]\n}\n");
    repo.commit_all("broken prd");
    let err = repo.ralph(&["run"]).expect(2).stderr();
    assert!(err.contains("prd.json:3:"), "{err}");
    assert_eq!(repo.git(&["status", "--porcelain"]), "");
}

/// Starts `ralph run` on one task whose agent marks its start and then sleeps for `sleep`.
fn running_agent(extra_toml: &str, sleep: &str, then: &str) -> (TestRepo, std::process::Child) {
    let scenario = format!(
        r#"
[[step]]
iteration = 1
actions = [{{ write = {{ path = "started.txt", content = "1\n" }} }}, {{ sleep = "{sleep}" }}, {{ write = {{ path = "a.txt", content = "first\n" }} }}, {{ promise = true }}]
[[step]]
iteration = 2
actions = [{{ expect_prompt = "Now in blue." }}, {{ write = {{ path = "a.txt", content = "blue\n" }} }}, {{ promise = true }}{then}]
"#
    );
    let repo =
        TestRepo::with_loop(&scenario, &["true"], extra_toml, &[("010-a.md", "# A\n\nWrite a.txt.\n")]);
    let child = repo.cmd(&["run"]).stderr(std::process::Stdio::piped()).spawn().unwrap();
    assert!(wait_for(20, || repo.exists("started.txt")));
    // The user edits the running task's spec in their editor.
    std::thread::sleep(std::time::Duration::from_millis(100));
    repo.write("specs/010-a.md", "# A\n\nWrite a.txt. Now in blue.\n");
    (repo, child)
}

#[test]
fn editing_the_running_tasks_spec_restarts_its_iteration_by_default() {
    // The agent would sleep for minutes: only the restart ends it in time.
    let (repo, child) = running_agent("", "300s", "");
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(
        err.contains(
            "specs/010-a.md was edited during iteration 1: its agent is stopped and the task runs again"
        ),
        "{err}"
    );
    let r = repo.records();
    assert_eq!(r[0]["outcome"], "restarted");
    assert_eq!(r[0]["spec_edited"], true);
    // Stopped by the edit, not by the idle timeout (30 s) or its 300 s of sleep.
    let took = r[0]["duration_ms"].as_u64().unwrap();
    assert!(took < 10_000, "the edit did not stop the agent: {took} ms");
    assert!(r[0]["commit"].is_null());
    assert_eq!(r[1]["outcome"], "done");
    // The user's edit was not reverted with the agent's work, and went in with the new work.
    assert_eq!(repo.read("a.txt"), "blue\n");
    assert_eq!(repo.read("specs/010-a.md"), "---\nstatus: done\n---\n# A\n\nWrite a.txt. Now in blue.\n");
    assert!(repo.dirt().is_empty(), "{}", repo.dirt());
    let v: serde_json::Value =
        serde_json::from_str(&repo.ralph(&["status", "--json"]).expect(0).stdout()).unwrap();
    assert_eq!(v["tasks"][0]["attempts"], 0, "a restart uses no attempt");
}

#[test]
fn with_finish_the_iteration_ends_on_its_spec_and_the_edit_reopens_the_task() {
    let (repo, child) = running_agent("[backlog]\non_spec_edit = \"finish\"\n", "2s", "");
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("the iteration finishes on the spec it started with"), "{err}");
    let r = repo.records();
    // Iteration 1 is judged on the spec it was given (no gate blames the agent for the edit)...
    assert_eq!(r[0]["outcome"], "done", "{err}");
    assert_eq!(r[0]["spec_edited"], true);
    // ...and the edited spec is a changed done task: reopened and done again, in blue.
    assert!(err.contains("changed since 010-a was done: reopened"), "{err}");
    assert_eq!(r[1]["outcome"], "done");
    assert_eq!(repo.read("a.txt"), "blue\n");
}

#[test]
fn an_agent_that_edits_its_own_spec_is_still_caught() {
    // Its tool call names the spec (Claude's stream-json): the edit is the agent's, not the user's.
    let tool_use = r#"{"type":"assistant","message":{"content":[{"type":"tool_use","name":"Edit","input":{"file_path":"specs/010-a.md"}}]}}"#;
    let scenario = format!(
        "[[step]]\niteration = 1\nactions = [{{ print = {} }}, {{ write = {{ path = \"specs/010-a.md\", content = \"# A\\n\\nNothing to do.\\n\" }} }}]\n\
         [[step]]\niteration = 2\nactions = [{{ exit = 0 }}]\n",
        toml_str(tool_use)
    );
    let repo = TestRepo::with_loop(
        &scenario,
        &["true"],
        "output_format = \"claude-stream-json\"\n",
        &[("010-a.md", "# A\n\nWrite a.txt.\n")],
    );
    repo.ralph(&["run", "--max-iterations", "1"]).expect(3);
    let r = repo.records();
    assert_eq!(r[0]["outcome"], "checks_failed");
    assert!(r[0]["failure"].as_str().unwrap().contains("it rewrote the spec specs/010-a.md"), "{}", r[0]);
    assert!(r[0].get("spec_edited").is_none());
    assert_eq!(repo.read("specs/010-a.md"), "# A\n\nWrite a.txt.\n");
}

#[test]
fn init_in_a_repository_with_a_prd_json_uses_it_in_place() {
    let repo = TestRepo::new();
    repo.write("prd.json", PRD);
    let out = repo.ralph(&["init"]).expect(0).stdout();
    assert!(out.contains("using     prd.json as the backlog"), "{out}");
    assert!(!repo.exists("specs"), "no example spec to shadow the prd");
    assert!(repo.read("ralph.toml").contains("[backlog]\nfile = \"prd.json\""));
    let status = repo.ralph(&["status"]).expect(0).stdout();
    assert!(status.contains("US-001  todo") && status.contains("US-002  todo"), "{status}");
    // Converting to specs later: ralph says the configured file still wins.
    let out = repo.ralph(&["import", "prd.json"]).expect(0).stdout();
    assert!(out.contains("[backlog] file still names prd.json"), "{out}");
}

#[test]
fn three_restarts_in_a_row_and_the_next_edited_iteration_finishes() {
    // Something edits the spec every time without the agent's output naming it (a hidden
    // writer): the loop must not restart for ever.
    let scenario = "[[step]]\nactions = [{ run = \"cd specs && echo more >> 010-a.md\" }, { sleep = \"4s\" }, { write = { path = \"a.txt\", content = \"a\\n\" } }, { promise = true }]\n";
    let repo = TestRepo::with_loop(scenario, &["true"], "", &[("010-a.md", "# A\n")]);
    repo.ralph(&["run", "--max-iterations", "4"]).expect(3);
    let outcomes: Vec<String> =
        repo.records().iter().map(|r| r["outcome"].as_str().unwrap().to_string()).collect();
    assert_eq!(outcomes, ["restarted", "restarted", "restarted", "done"]);
    // Each restart stopped its agent (one watcher for the run, every iteration's spec).
    for r in &repo.records()[..3] {
        let took = r["duration_ms"].as_u64().unwrap();
        assert!(took < 3_000, "iteration {} was not stopped by the edit: {took} ms", r["iteration"]);
    }
}
