//! `ralph run -j N`: tasks run at once by workers in their own worktrees, green work landed on
//! the branch one task at a time. What a user relies on: every task done lands exactly once,
//! work that no longer fits (a conflict, checks red on the combined result) is kept and never
//! recorded done, the user's checkout only ever fast-forwards, a killed run leaves nothing
//! behind that the next run does not clean, budgets and usage limits hold across workers, and
//! `-j 1` is the single loop.

use crate::common::*;
use std::time::{Duration, Instant};

/// A scenario step for `task`: its actions, inline tables.
fn step(task: &str, actions: &str) -> String {
    format!("[[step]]\ntask = \"{task}\"\nactions = [{actions}]\n")
}

/// Actions that sleep, write `<file>` holding `content` and print the promise.
fn work(sleep: &str, file: &str, content: &str) -> String {
    format!(
        "{{ sleep = \"{sleep}\" }}, {{ write = {{ path = \"{file}\", content = {} }} }}, {{ promise = true }}",
        toml_str(content)
    )
}

/// Ids `010-t1`, `020-t2`, ...
fn ids(n: usize) -> Vec<String> {
    (1..=n).map(|i| format!("{:03}-t{i}", i * 10)).collect()
}

/// A repository with one spec per id (`# T<i>`), the scenario, checks and extra TOML.
fn repo_with(scenario: &str, ids: &[String], checks: &[&str], extra: &str) -> TestRepo {
    let specs: Vec<(String, String)> = ids
        .iter()
        .map(|id| (format!("{id}.md"), format!("# {}\n", id.rsplit('-').next().unwrap().to_uppercase())))
        .collect();
    let specs: Vec<(&str, &str)> = specs.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    TestRepo::with_loop(scenario, checks, extra, &specs)
}

/// Independent tasks: each sleeps `sleep`, writes `<id>.txt` and promises.
fn independent(n: usize, sleep: &str, extra: &str) -> (TestRepo, Vec<String>) {
    let ids = ids(n);
    let scenario: String =
        ids.iter().map(|id| step(id, &work(sleep, &format!("{id}.txt"), &format!("{id}\n")))).collect();
    (repo_with(&scenario, &ids, &["true"], extra), ids)
}

/// The status in a spec's front matter as committed on main.
fn status_on_main(repo: &TestRepo, id: &str) -> String {
    repo.git(&["show", &format!("main:specs/{id}.md")])
        .lines()
        .find_map(|l| l.strip_prefix("status:").map(|s| s.trim().to_string()))
        .unwrap_or_else(|| "todo".into())
}

/// Full messages of main's commits, newest first.
fn messages_on_main(repo: &TestRepo) -> Vec<String> {
    repo.git(&["log", "main", "--format=%B%x00"])
        .split('\0')
        .map(|m| m.trim().to_string())
        .filter(|m| !m.is_empty())
        .collect()
}

fn on_main(repo: &TestRepo, commit: &str) -> bool {
    let mut cmd = std::process::Command::new("git");
    cmd.args(["merge-base", "--is-ancestor", commit, "main"]).current_dir(&repo.root);
    hermetic(&mut cmd, &repo.outside);
    cmd.status().unwrap().success()
}

/// `git worktree list`, one line per checkout.
fn worktree_list(repo: &TestRepo) -> Vec<String> {
    repo.git(&["worktree", "list"]).lines().map(str::to_string).collect()
}

/// Every branch name of the repository.
fn branches(repo: &TestRepo) -> Vec<String> {
    repo.git(&["for-each-ref", "--format=%(refname:short)", "refs/heads"])
        .lines()
        .map(str::to_string)
        .collect()
}

/// Whether a process of a ralph run of this repository (the coordinator, a worker or an
/// agent) is still running.
fn run_processes_left(repo: &TestRepo) -> bool {
    std::fs::read_dir("/proc").unwrap().flatten().any(|e| {
        std::fs::read(e.path().join("environ"))
            .map(|env| {
                let env = String::from_utf8_lossy(&env);
                env.contains("RALPH_RUN_ID=") && env.contains(&format!("HOME={}", repo.outside.display()))
            })
            .unwrap_or(false)
    })
}

fn time(record: &serde_json::Value, key: &str) -> jiff::Timestamp {
    record[key].as_str().unwrap_or_else(|| panic!("no {key} in {record}")).parse().unwrap()
}

fn check_passes(repo: &TestRepo, check: &str) -> bool {
    std::process::Command::new("sh").arg("-c").arg(check).current_dir(&repo.root).status().unwrap().success()
}

#[test]
fn independent_tasks_run_at_once_and_each_lands_exactly_once() {
    let (repo, ids) = independent(8, "2s", "");
    let started = Instant::now();
    let run = repo.ralph_within(60, &["run", "-j", "4"]).expect(0);
    let took = started.elapsed();
    // Eight tasks of 2 s each, four at a time: about 4 s, never the 16 s of one at a time.
    assert!(took < Duration::from_secs(10), "took {took:?}:\n{}", run.stderr());

    let messages = messages_on_main(&repo);
    for id in &ids {
        assert_eq!(status_on_main(&repo, id), "done", "{id}");
        assert_eq!(repo.git(&["show", &format!("main:{id}.txt")]), format!("{id}\n"));
        let mine: Vec<&String> =
            messages.iter().filter(|m| m.starts_with(&format!("ralph({id}):"))).collect();
        assert_eq!(mine.len(), 1, "{id} landed {} times: {mine:?}", mine.len());
        let worker = mine[0]
            .lines()
            .find_map(|l| l.strip_prefix("Ralph-Worker: "))
            .unwrap_or_else(|| panic!("{id}'s commit has no Ralph-Worker trailer: {}", mine[0]));
        assert!(matches!(worker, "1" | "2" | "3" | "4"), "{id}: worker {worker}");
        // The work is in one commit only.
        let touched = repo.git(&["log", "main", "--format=%h", "--", &format!("{id}.txt")]);
        assert_eq!(touched.lines().count(), 1, "{id}: {touched}");
    }

    let records = repo.records();
    assert_eq!(records.len(), 8, "{records:?}");
    let mut seen = std::collections::BTreeSet::new();
    for r in &records {
        assert_eq!(r["outcome"], "done", "{r}");
        assert!(seen.insert(r["task"].as_str().unwrap().to_string()), "task recorded twice: {r}");
        assert!(matches!(r["worker"].as_u64(), Some(1..=4)), "{r}");
        assert!(on_main(&repo, r["commit"].as_str().unwrap()), "recorded commit not on main: {r}");
    }
    // The user's checkout followed main; nothing of the workers is left.
    assert_eq!(repo.head(), repo.git(&["rev-parse", "main"]).trim());
    assert_eq!(repo.dirt(), "");
    assert_eq!(worktree_list(&repo).len(), 1, "{:?}", worktree_list(&repo));
    let run_files: Vec<String> = std::fs::read_dir(repo.latest_run_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with("workers.json"))
        .collect();
    assert!(run_files.is_empty(), "the workers' list outlived the run: {run_files:?}");
}

#[test]
fn two_tasks_editing_the_same_line_never_lose_work_or_claim_what_did_not_land() {
    let scenario = format!(
        "{}{}",
        step("010-a", &work("300ms", "shared.txt", "from a\n")),
        step("020-b", &work("800ms", "shared.txt", "from b\n"))
    );
    let repo = TestRepo::with_loop(&scenario, &["true"], "", &[("010-a.md", "# A\n"), ("020-b.md", "# B\n")]);
    repo.write("shared.txt", "base\n");
    repo.commit_all("a shared file");
    let run = repo.ralph_within(60, &["run", "-j", "2"]);
    assert!(matches!(run.code(), 0 | 4), "stdout:\n{}\nstderr:\n{}", run.stdout(), run.stderr());

    let records = repo.records();
    let content = |task: &str| if task == "010-a" { "from a\n" } else { "from b\n" };
    let mut landed_order = Vec::new();
    for r in &records {
        let task = r["task"].as_str().unwrap();
        if r["outcome"] == "done" {
            let commit = r["commit"].as_str().unwrap_or_else(|| panic!("done without a commit: {r}"));
            assert!(on_main(&repo, commit), "recorded done, not on main: {r}");
            assert_eq!(repo.git(&["show", &format!("{commit}:shared.txt")]), content(task), "{r}");
            landed_order.push(task);
        } else {
            assert_eq!(r["commit"], serde_json::Value::Null, "{r}");
            // Work that did not land is kept.
            let patch = repo.iter_file(r["iteration"].as_u64().unwrap() as u32, "rejected.patch");
            assert!(patch.contains(&format!("+{}", content(task).trim())), "{r}\npatch:\n{patch}");
            if r["cause"] == "land_conflict" {
                assert!(r["failure"].as_str().unwrap().contains("another task landed first"), "{r}");
            }
        }
    }
    assert!(!landed_order.is_empty(), "nothing landed: {records:?}");
    // The file is the last landed task's version, and main's history of it is the landings.
    let last = landed_order.last().unwrap();
    assert_eq!(repo.read("shared.txt"), content(last));
    assert_eq!(repo.git(&["show", "main:shared.txt"]), content(last));
    let history = repo.git(&["log", "main", "--format=%s", "--", "shared.txt"]);
    let landed_subjects: Vec<&str> =
        history.lines().filter(|s| s.starts_with("ralph(") && !s.contains("blocked")).collect();
    assert_eq!(landed_subjects.len(), landed_order.len(), "{history}");
    for (subject, task) in landed_subjects.iter().rev().zip(&landed_order) {
        assert!(subject.starts_with(&format!("ralph({task}):")), "{history} vs {landed_order:?}");
    }
    for id in ["010-a", "020-b"] {
        let status = status_on_main(&repo, id);
        if status == "done" {
            assert!(landed_order.contains(&id), "{id} done on main but never landed: {records:?}");
        } else {
            assert_eq!(status, "blocked", "{id}");
            let spec = repo.git(&["show", &format!("main:specs/{id}.md")]);
            assert!(spec.contains("another task landed first"), "the block names the conflict:\n{spec}");
        }
    }
    // This run has both land (the second after a conflict and a run on the new tip).
    assert_eq!(run.code(), 0, "{}", run.stderr());
    assert_eq!(landed_order.len(), 2, "{records:?}");
}

#[test]
fn conflict_markers_a_rework_leaves_unresolved_never_land() {
    // B's work conflicts with A's; put back on the new tip (markers and all), its rework
    // iteration only says it is done; afresh, it does the work again.
    let scenario = format!(
        "{}[[step]]\ntask = \"020-b\"\niteration = 1\nactions = [{}]\n\
         [[step]]\ntask = \"020-b\"\niteration = 2\nactions = [{{ promise = true }}]\n{}",
        step("010-a", &work("300ms", "shared.txt", "from a\n")),
        work("800ms", "shared.txt", "from b\n"),
        step("020-b", &work("0s", "shared.txt", "from b\n")),
    );
    let repo = TestRepo::with_loop(&scenario, &["true"], "", &[("010-a.md", "# A\n"), ("020-b.md", "# B\n")]);
    repo.write("shared.txt", "base\n");
    repo.commit_all("a shared file");
    let run = repo.ralph_within(60, &["run", "-j", "2"]).expect(0);

    let history = repo.git(&["log", "-p", "main", "--", "shared.txt"]);
    assert!(!history.contains("+<<<<<<<") && !history.contains("+>>>>>>>"), "markers landed:\n{history}");
    let records = repo.records();
    let b: Vec<&serde_json::Value> = records.iter().filter(|r| r["task"] == "020-b").collect();
    let outcomes: Vec<(&str, &str)> =
        b.iter().map(|r| (r["outcome"].as_str().unwrap(), r["cause"].as_str().unwrap_or("-"))).collect();
    assert_eq!(
        outcomes,
        vec![("checks_failed", "land_conflict"), ("checks_failed", "land_conflict"), ("done", "-")],
        "{}",
        run.stderr()
    );
    assert!(
        b[1]["failure"].as_str().unwrap().contains("conflict markers are left in shared.txt"),
        "{}",
        b[1]
    );
    let patch = repo.iter_file(b[1]["iteration"].as_u64().unwrap() as u32, "rejected.patch");
    assert!(patch.contains("+<<<<<<<"), "the rework's work is kept as it was:\n{patch}");
    assert_eq!(repo.git(&["show", "main:shared.txt"]), "from b\n");
    assert_eq!(status_on_main(&repo, "020-b"), "done");
}

#[test]
fn work_green_alone_but_red_combined_is_not_landed() {
    // Each task adds a flag file; the check allows one.
    let check = "test $(ls *.flag 2>/dev/null | wc -l) -le 1";
    let scenario = format!(
        "{}{}",
        step("010-a", &work("300ms", "a.flag", "a\n")),
        step("020-b", &work("800ms", "b.flag", "b\n"))
    );
    let repo = TestRepo::with_loop(
        &scenario,
        &[check],
        "[budget]\nmax_attempts = 2\n",
        &[("010-a.md", "# A\n"), ("020-b.md", "# B\n")],
    );
    let run = repo.ralph_within(60, &["run", "-j", "2"]);

    let records = repo.records();
    let red: Vec<&serde_json::Value> =
        records.iter().filter(|r| r["cause"] == "land_checks_failed").collect();
    assert_eq!(red.len(), 1, "{records:?}\n{}", run.stderr());
    let loser = red[0]["task"].as_str().unwrap();
    let winner = if loser == "010-a" { "020-b" } else { "010-a" };
    let flag = |task: &str| format!("{}.flag", &task[4..]);
    assert_eq!(red[0]["outcome"], "checks_failed");
    assert_eq!(red[0]["commit"], serde_json::Value::Null);
    let patch = repo.iter_file(red[0]["iteration"].as_u64().unwrap() as u32, "rejected.patch");
    assert!(patch.contains(&flag(loser)), "{patch}");

    assert_eq!(status_on_main(&repo, winner), "done");
    assert_ne!(status_on_main(&repo, loser), "done");
    assert_eq!(repo.git(&["log", "main", "--format=%h", "--", &flag(loser)]), "", "the red work landed");
    assert!(!repo.exists(&flag(loser)));
    // Main's tip (the user's checkout follows it) passes the check.
    assert_eq!(repo.head(), repo.git(&["rev-parse", "main"]).trim());
    assert_eq!(repo.dirt(), "");
    assert!(check_passes(&repo, check));
    // The loser ran again on the new tip, failed there too and was blocked.
    assert_eq!(status_on_main(&repo, loser), "blocked");
    assert_eq!(run.code(), 4, "{}", run.stderr());
}

#[test]
fn a_coordinator_killed_with_9_leaves_nothing_the_next_run_does_not_clean() {
    let ids = ids(4);
    // Until the go file exists, every agent sleeps (the kill comes while they do).
    let scenario: String = ids
        .iter()
        .map(|id| {
            step(
                id,
                &format!(
                    "{{ run = {} }}, {}",
                    toml_str("test -f \"$HOME/go\" || sleep 30"),
                    work("0s", &format!("{id}.txt"), id)
                ),
            )
        })
        .collect();
    let repo = repo_with(&scenario, &ids, &["true"], "");
    let go = repo.outside.join("go");
    let mut child = repo
        .cmd(&["run", "-j", "4"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let busy = wait_for(30, || {
        let Ok(mut runs) = std::fs::read_dir(repo.path(".ralph/runs")) else { return false };
        let Some(Ok(run)) = runs.next() else { return false };
        (1..=4).all(|i| {
            std::fs::read_to_string(run.path().join(format!("iter-{i:04}/agent.log")))
                .is_ok_and(|l| l.contains("scripted-agent: run"))
        })
    });
    assert!(busy, "four agents never ran at once");
    assert!(worktree_list(&repo).len() > 1, "no worker checkout while they ran");
    // SAFETY: our own child, not reaped yet.
    unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
    child.wait().unwrap();
    // The workers die with their coordinator, and their agents with them.
    assert!(wait_for(15, || !run_processes_left(&repo)), "a worker or agent outlived the coordinator");

    std::fs::write(&go, "").unwrap();
    let run = repo.ralph_within(60, &["run", "-j", "4"]).expect(0);
    for id in &ids {
        assert_eq!(status_on_main(&repo, id), "done", "{id}\n{}", run.stderr());
        let touched = repo.git(&["log", "main", "--format=%h", "--", &format!("{id}.txt")]);
        assert_eq!(touched.lines().count(), 1, "{id}: {touched}");
    }
    assert_eq!(worktree_list(&repo).len(), 1, "{:?}", worktree_list(&repo));
    let left: Vec<String> = branches(&repo).into_iter().filter(|b| b.starts_with("ralph/slot-")).collect();
    assert!(left.is_empty(), "slot branches left: {left:?}");
    assert!(!repo.path(".git/ralph-slots").exists());
    let fsck = std::process::Command::new("git")
        .args(["fsck", "--no-progress", "--strict"])
        .current_dir(&repo.root)
        .output()
        .unwrap();
    assert!(fsck.status.success(), "git fsck: {}", String::from_utf8_lossy(&fsck.stderr));
    assert_eq!(repo.dirt(), "");
    assert!(!run_processes_left(&repo));
    // Every iteration, the killed ones too, has exactly one record.
    repo.assert_each_iteration_recorded_once();
}

#[test]
fn the_users_checkout_stays_on_main_and_only_fast_forwards() {
    let (repo, _) = independent(4, "400ms", "");
    // Ignored by git, there before the run: a build cache, say.
    repo.write(".gitignore", "cache/\n");
    repo.commit_all("ignore the cache");
    repo.write("cache/built.bin", "cached\n");
    let before = repo.head();
    let mut child = repo
        .cmd(&["run", "-j", "2"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The user writes a new file of their own while the run goes on.
    let started = wait_for(30, || repo.path(".ralph/runs").exists());
    assert!(started);
    repo.write("notes.txt", "my notes\n");
    let mut branch_seen = std::collections::BTreeSet::new();
    while child.try_wait().unwrap().is_none() {
        let mut cmd = std::process::Command::new("git");
        cmd.args(["symbolic-ref", "-q", "HEAD"]).current_dir(&repo.root);
        hermetic(&mut cmd, &repo.outside);
        branch_seen.insert(String::from_utf8_lossy(&cmd.output().unwrap().stdout).trim().to_string());
        std::thread::sleep(Duration::from_millis(30));
    }
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));

    assert_eq!(branch_seen, ["refs/heads/main".to_string()].into(), "HEAD left main during the run");
    assert_eq!(repo.git(&["symbolic-ref", "HEAD"]).trim(), "refs/heads/main");
    // Every value main and HEAD took descends from the one before: fast-forwards only.
    for reference in ["main", "HEAD"] {
        let values: Vec<String> =
            repo.git(&["reflog", "show", "--format=%H", reference]).lines().map(str::to_string).collect();
        for pair in values.windows(2) {
            assert!(
                repo.git(&["merge-base", &pair[0], &pair[1]]).trim() == pair[1],
                "{reference} moved from {} to {} without a fast-forward",
                pair[1],
                pair[0]
            );
        }
    }
    let moves = repo.git(&["reflog", "show", "--format=%gs", "HEAD"]);
    assert!(!moves.contains("checkout:") && !moves.contains("reset:"), "{moves}");
    assert_eq!(repo.git(&["merge-base", &before, "HEAD"]).trim(), before);
    assert_eq!(repo.git(&["rev-list", "--count", &format!("{before}..HEAD")]).trim(), "4");
    // The user's files are as they left them; nothing is staged.
    assert_eq!(repo.read("notes.txt"), "my notes\n");
    assert_eq!(repo.read("cache/built.bin"), "cached\n");
    assert_eq!(repo.dirt(), "?? notes.txt\n");
    assert_eq!(repo.git(&["diff", "--cached", "--name-only"]), "");
}

#[test]
fn one_job_is_the_single_loop() {
    let ids = ids(2);
    let probe = |id: &str| {
        format!(
            "{{ run = {} }}",
            toml_str(&format!(
                "{{ pwd; git worktree list | wc -l; echo worker=${{RALPH_WORKER:-none}}; }} > \"$HOME/{id}.probe\""
            ))
        )
    };
    let scenario: String = ids
        .iter()
        .map(|id| step(id, &format!("{}, {}", probe(id), work("0s", &format!("{id}.txt"), id))))
        .collect();
    let repo = repo_with(&scenario, &ids, &["true"], "");
    let run = repo.ralph_within(60, &["run", "-j", "1"]).expect(0);
    assert!(!run.stderr().contains("workers"), "{}", run.stderr());

    for id in &ids {
        let probe = std::fs::read_to_string(repo.outside.join(format!("{id}.probe"))).unwrap();
        // The agent ran in the user's checkout, the only one, as no worker.
        assert_eq!(probe, format!("{}\n1\nworker=none\n", repo.root.display()), "{id}");
        assert_eq!(status_on_main(&repo, id), "done");
    }
    let records = repo.records();
    assert_eq!(records.len(), 2);
    for r in &records {
        assert_eq!(r["outcome"], "done");
        assert!(r.get("worker").is_none(), "{r}");
    }
    for m in messages_on_main(&repo) {
        assert!(!m.contains("Ralph-Worker:"), "{m}");
    }
    assert!(!repo.path(".git/ralph-slots").exists());
    assert!(branches(&repo).iter().all(|b| !b.starts_with("ralph/")), "{:?}", branches(&repo));
    assert!(!repo.latest_run_dir().join("workers.json").exists());
}

#[test]
fn the_iteration_budget_holds_across_workers() {
    let (repo, _) = independent(6, "300ms", "");
    let run = repo.ralph_within(60, &["run", "-j", "2", "--max-iterations", "3"]).expect(3);
    let records = repo.records();
    assert!(
        records.len() <= 3,
        "{} iterations ran under --max-iterations 3:\n{}",
        records.len(),
        run.stderr()
    );
    let folders = std::fs::read_dir(repo.latest_run_dir())
        .unwrap()
        .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().starts_with("iter-"))
        .count();
    assert!(folders <= 3, "{folders} iterations started");
    let done = repo.git(&["log", "main", "--format=%s"]).lines().filter(|s| s.starts_with("ralph(")).count();
    assert_eq!(done, records.len());
}

#[test]
fn a_usage_limit_seen_by_one_worker_pauses_starting_new_workers() {
    let ids = ids(4);
    let mut scenario = String::new();
    scenario.push_str(
        "[[step]]\ntask = \"010-t1\"\niteration = 1\nactions = [{ eprint = \"You've hit your usage limit. Try again in 2 seconds.\" }, { exit = 1 }]\n",
    );
    for id in &ids {
        scenario.push_str(&step(id, &work("500ms", &format!("{id}.txt"), id)));
    }
    let repo = repo_with(&scenario, &ids, &["true"], "retry_wait = \"2s\"\n");
    repo.ralph_within(60, &["run", "-j", "2"]).expect(0);

    let records = repo.records();
    let limited: Vec<&serde_json::Value> =
        records.iter().filter(|r| r["outcome"] == "rate_limited").collect();
    assert_eq!(limited.len(), 1, "{records:?}");
    let limited = limited[0];
    assert_eq!(limited["task"], "010-t1");
    for id in &ids {
        assert_eq!(status_on_main(&repo, id), "done", "{id}");
    }
    // Iterations 1 and 2 started together; the limit came while 2 ran. From the limit until
    // it lifts no worker started (a margin for the clocks), though worker 2 finished meanwhile.
    let hit = time(limited, "ended_at");
    let lifts = time(limited, "limit_resets_at") - jiff::SignedDuration::from_millis(100);
    let other = records.iter().find(|r| r["iteration"] == 2).unwrap();
    let freed = time(other, "ended_at");
    assert!(
        freed > hit && freed < lifts,
        "worker 2 did not finish during the pause: {other}\nlimit: {limited}"
    );
    for r in records.iter().filter(|r| r["iteration"].as_u64().unwrap() > 2) {
        assert!(time(r, "started_at") >= lifts, "iteration started during the pause: {r}\nlimit: {limited}");
    }
}
