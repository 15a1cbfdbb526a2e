//! `[hooks]`: the user's commands at the loop's points. Each gets the event's JSON on stdin,
//! its output lands in the iteration's `hooks.log`, and a failing `before_iteration` skips
//! the task with its reason: no agent runs, no attempt is used, other tasks go on.

use crate::common::*;

/// A hook that keeps its stdin as `<dir>/<hook>-<iteration>.json` and says it ran.
fn keeping(dir: &std::path::Path) -> String {
    format!(
        "cat > {}/$RALPH_HOOK-$RALPH_EVENT_ITERATION.json; echo \"$RALPH_HOOK ran for $RALPH_EVENT_TASK\"",
        shell_quote(&dir.to_string_lossy())
    )
}

fn kept(dir: &std::path::Path, hook: &str, iteration: u32) -> serde_json::Value {
    let path = dir.join(format!("{hook}-{iteration}.json"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

#[test]
fn each_hook_runs_at_its_point_with_the_event_on_stdin_and_its_output_in_the_iteration_folder() {
    let repo = TestRepo::new();
    let out = repo.outside.join("hooks");
    std::fs::create_dir(&out).unwrap();
    repo.set_scenario(
        r#"
[[step]]
task = "010-good"
actions = [{ write = { path = "ok.txt", content = "ok\n" } }, { promise = true }]
[[step]]
task = "020-bad"
actions = [{ delete = "ok.txt" }]
"#,
    );
    let hook = toml_str(&keeping(&out));
    repo.write_config(
        &["test -f ok.txt"],
        &format!(
            "\n[budget]\nmax_attempts = 1\n\n[hooks]\nbefore_iteration = {hook}\nafter_iteration = {hook}\non_land = {hook}\non_blocked = [{hook}, \"echo second command\"]\n"
        ),
    );
    repo.write("specs/010-good.md", "# Good\n");
    repo.write("specs/020-bad.md", "# Bad\n");
    repo.commit_all("set up");
    let run = repo.ralph_within(120, &["run"]).expect(4);

    // Iteration 1: before, after, on_land; iteration 2: before, after, on_blocked.
    let before = kept(&out, "before_iteration", 1);
    assert_eq!(
        (before["event"].as_str(), before["task"].as_str()),
        (Some("before_iteration"), Some("010-good"))
    );
    assert_eq!(before["outcome"], serde_json::Value::Null, "nothing ran yet");
    let after = kept(&out, "after_iteration", 1);
    assert_eq!((after["outcome"].as_str(), after["iteration"].as_u64()), (Some("done"), Some(1)));
    let land = kept(&out, "on_land", 1);
    let records = repo.records();
    assert_eq!(land["commit"], records[0]["commit"]);
    assert!(!out.join("on_blocked-1.json").exists() && !out.join("on_land-2.json").exists());
    let after = kept(&out, "after_iteration", 2);
    assert_eq!(after["outcome"], "checks_failed");
    let blocked = kept(&out, "on_blocked", 2);
    assert_eq!(blocked["task"], "020-bad");
    assert!(blocked["reason"].as_str().unwrap().contains("1 failed attempts"), "{blocked}");

    // Their output, in order, in each iteration's folder.
    let log = repo.iter_file(1, "hooks.log");
    let lines: Vec<&str> = log.lines().filter(|l| l.ends_with("ran for 010-good")).collect();
    assert_eq!(
        lines,
        ["before_iteration ran for 010-good", "after_iteration ran for 010-good", "on_land ran for 010-good"],
        "{log}"
    );
    assert!(log.contains("before_iteration `cat > "), "{log}");
    let log = repo.iter_file(2, "hooks.log");
    assert!(log.contains("on_blocked ran for 020-bad") && log.contains("second command"), "{log}");
    assert!(!run.stderr().contains("hook "), "no hook failed: {}", run.stderr());
}

#[test]
fn a_failing_before_iteration_skips_the_task_with_its_reason_and_the_others_go_on() {
    let repo = TestRepo::with_loop(
        r#"
[[step]]
task = "020-open"
actions = [{ write = { path = "open.txt", content = "ok\n" } }, { promise = true }]
"#,
        &["true"],
        "\n[hooks]\nbefore_iteration = 'if [ \"$RALPH_EVENT_TASK\" = 010-closed ]; then echo \"maintenance window until 06:00\"; exit 3; fi'\nskip_wait = \"1h\"\n",
        &[("010-closed.md", "# Closed\n"), ("020-open.md", "# Open\n")],
    );
    // 010-closed is skipped (and waits an hour); 020-open runs; then only the skipped task is
    // left, and the run waits for it until its time budget ends.
    let run = repo.ralph_within(120, &["run", "--max-duration", "4s"]).expect(3);
    let records = repo.records();
    assert_eq!(records.len(), 2, "{records:#?}");
    let skipped = &records[0];
    assert_eq!(
        (skipped["task"].as_str(), skipped["outcome"].as_str()),
        (Some("010-closed"), Some("skipped"))
    );
    assert_eq!(skipped["cause"], "hook_skipped");
    let why = skipped["failure"].as_str().unwrap();
    assert!(why.contains("maintenance window until 06:00") && why.contains("exit 3"), "{why}");
    assert!(why.contains("tried again in 1h"), "{why}");
    assert_eq!(
        (records[1]["task"].as_str(), records[1]["outcome"].as_str()),
        (Some("020-open"), Some("done"))
    );

    // No agent ran for the skip: no prompt, no agent log; the hook's words are kept.
    assert!(repo.iter_file(1, "prompt.md").is_empty() && repo.iter_file(1, "agent.log").is_empty());
    assert!(repo.iter_file(1, "hooks.log").contains("maintenance window until 06:00"));
    // Shown as it happened, and no attempt used: the task is still todo, not blocked.
    let err = run.stderr();
    assert!(err.contains("iteration 1 · 010-closed → skipped"), "{err}");
    assert!(err.contains("the before_iteration hook skipped every runnable task"), "{err}");
    assert_eq!(repo.spec_status("010-closed"), "todo");
    let state: serde_json::Value = serde_json::from_str(&repo.read(".ralph/state.json")).unwrap();
    assert_eq!(state["tasks"]["010-closed"]["attempts"].as_u64().unwrap_or(0), 0, "{state}");
    // The skip spent nothing of the iteration budget.
    assert!(err.lines().last().unwrap().contains("2 iteration(s): 1 done, 1 skipped"), "{err}");
}

#[test]
fn a_parallel_run_runs_the_hooks_from_its_coordinator() {
    let repo = TestRepo::with_loop(
        r#"
[[step]]
task = "020-open"
actions = [{ write = { path = "open.txt", content = "ok\n" } }, { promise = true }]
[[step]]
task = "030-open"
actions = [{ write = { path = "other.txt", content = "ok\n" } }, { promise = true }]
"#,
        &["true"],
        &format!(
            "\n[hooks]\nbefore_iteration = 'if [ \"$RALPH_EVENT_TASK\" = 010-closed ]; then echo closed; exit 1; fi'\non_land = {}\nskip_wait = \"1h\"\n",
            toml_str("cat > /dev/null; echo \"landed $RALPH_EVENT_TASK at $RALPH_EVENT_COMMIT\"")
        ),
        &[("010-closed.md", "# Closed\n"), ("020-open.md", "# Open\n"), ("030-open.md", "# Other\n")],
    );
    let err = repo.ralph_within(180, &["run", "-j", "2", "--max-duration", "6s"]).expect(3).stderr();
    assert!(err.contains("the before_iteration hook skipped every runnable task"), "{err}");
    assert!(err.lines().last().unwrap().contains("the time budget (6s) is spent"), "{err}");
    let records = repo.records();
    let by_task = |t: &str| {
        records.iter().find(|r| r["task"] == t).unwrap_or_else(|| panic!("{t}: {records:#?}")).clone()
    };
    let skipped = by_task("010-closed");
    assert_eq!(
        (skipped["outcome"].as_str(), skipped["cause"].as_str()),
        (Some("skipped"), Some("hook_skipped"))
    );
    for t in ["020-open", "030-open"] {
        let r = by_task(t);
        assert_eq!(r["outcome"], "done");
        let n = r["iteration"].as_u64().unwrap() as u32;
        let log = repo.iter_file(n, "hooks.log");
        assert!(log.contains(&format!("landed {t} at {}", r["commit"].as_str().unwrap())), "{log}");
    }
    assert_eq!(repo.spec_status("010-closed"), "todo");
}
