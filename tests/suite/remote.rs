//! `ralph worker`: several workers, each in its own clone, coordinated through one bare
//! repository (over `file://`): every task lands exactly once; of two claimants one wins; a
//! worker killed with -9 is taken over once its lease runs out; a worker paused past its lease
//! lands nothing; a target moved by a person is rebased onto and checked again; a worker whose
//! clock is hours off neither steals early nor holds forever; the agents' learnings from
//! every worker reach AGENTS.md; attempts count across workers; the same over `git daemon` on
//! 127.0.0.1, and with each worker in a network namespace of its own.

use crate::common::*;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A bare repository with `n` tasks; the agent sleeps `sleep` seconds, writes its task's
/// file and prints the promise. Returns the scratch folder and the bare repository's path.
fn origin(n: usize, sleep: &str, ttl: &str) -> (TestRepo, PathBuf) {
    origin_full(n, &format!("sleep {sleep}\n"), ttl, "true", "", None)
}

/// [`origin`] with `before` run by the agent before it writes its file, the checks `check`
/// and `extra` appended to ralph.toml.
fn origin_with(n: usize, before: &str, ttl: &str, check: &str, extra: &str) -> (TestRepo, PathBuf) {
    origin_full(n, before, ttl, check, extra, None)
}

/// [`origin`], with `limited`: the main agent (`limited.sh`) always hits a usage limit saying
/// these words, and the agent that does the work is its fallback, `[agents.backup]`.
fn origin_limited(n: usize, sleep: &str, ttl: &str, limited: &str) -> (TestRepo, PathBuf) {
    origin_full(n, &format!("sleep {sleep}\n"), ttl, "true", "", Some(limited))
}

fn origin_full(
    n: usize,
    before: &str,
    ttl: &str,
    check: &str,
    extra: &str,
    limited: Option<&str>,
) -> (TestRepo, PathBuf) {
    let seed = TestRepo::new();
    let agent = seed.outside.join("agent.sh");
    std::fs::write(
        &agent,
        format!("#!/bin/sh\n{before}echo \"work of $RALPH_TASK\" > \"out-$RALPH_TASK.txt\"\necho '<promise>COMPLETE</promise>'\n"),
    )
    .unwrap();
    std::fs::set_permissions(&agent, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let agents = match limited {
        None => format!("[agent]\ncommand = [\"{}\"]\nprompt = \"file\"\n", agent.display()),
        Some(words) => {
            let main = seed.outside.join("limited.sh");
            std::fs::write(&main, format!("#!/bin/sh\necho {} >&2\nexit 1\n", shell_quote(words))).unwrap();
            std::fs::set_permissions(&main, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
            format!(
                "[agent]\ncommand = [\"{}\"]\nprompt = \"file\"\nfallback = [\"backup\"]\n\n[agents.backup]\ncommand = [\"{}\"]\nprompt = \"file\"\n",
                main.display(),
                agent.display()
            )
        }
    };
    seed.write(
        "ralph.toml",
        &format!(
            "{agents}\n[checks]\ncommands = [{check:?}]\n\n[git]\nbranch = \"main\"\n{extra}\n[remote]\nlease_ttl = \"{ttl}\"\n"
        ),
    );
    seed.write(".gitignore", ".ralph/\n");
    for i in 1..=n {
        seed.write(&format!("specs/t{i}.md"), &format!("# Task {i}\n\nWrite out-t{i}.txt.\n"));
    }
    seed.commit_all("backlog");
    let bare = seed.outside.join("origin.git");
    git(&seed.outside, &["clone", "-q", "--bare", seed.root.to_str().unwrap(), bare.to_str().unwrap()]);
    (seed, bare)
}

fn git(dir: &Path, args: &[&str]) -> String {
    let mut cmd = Command::new("git");
    cmd.args(args).current_dir(dir);
    hermetic(&mut cmd, dir);
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Appends `extra` to the clone's ralph.toml, commits it with `message` and pushes it to main.
fn push_config(clone: &Path, extra: &str, message: &str) {
    let toml = std::fs::read_to_string(clone.join("ralph.toml")).unwrap() + extra;
    std::fs::write(clone.join("ralph.toml"), &toml).unwrap();
    git(clone, &["commit", "-qam", message]);
    git(clone, &["push", "-q", "origin", "HEAD:main"]);
}

/// A clone of `bare` for worker `name`.
fn clone(seed: &TestRepo, bare: &Path, name: &str) -> PathBuf {
    let dir = seed.outside.join(name);
    git(&seed.outside, &["clone", "-q", bare.to_str().unwrap(), dir.to_str().unwrap()]);
    dir
}

/// Starts `ralph worker ARGS` in `dir`; `clock` shifts its clock (libfaketime's `FAKETIME`,
/// preloaded into the worker itself, so that killing the child kills the worker).
fn worker(seed: &TestRepo, dir: &Path, name: &str, args: &[&str], clock: Option<&str>) -> Child {
    let mut cmd = Command::new(RALPH);
    cmd.arg("worker")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    hermetic(&mut cmd, &seed.outside);
    cmd.env("RALPH_WORKER_ID", name);
    if let Some(offset) = clock {
        cmd.env("LD_PRELOAD", libfaketime()).env("FAKETIME", offset);
    }
    cmd.spawn().unwrap()
}

/// libfaketime's library, where Debian puts it.
fn libfaketime() -> PathBuf {
    let found = ["x86_64-linux-gnu", "aarch64-linux-gnu", "."]
        .iter()
        .map(|arch| Path::new("/usr/lib").join(arch).join("faketime/libfaketime.so.1"))
        .find(|p| p.exists());
    found.expect("libfaketime is not installed: scripts/test installs it (apt-get install faketime)")
}

fn finish(child: Child, secs: u64) -> (i32, String) {
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(Duration::from_secs(secs)) {
        Ok(out) => {
            let out = out.unwrap();
            (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into_owned())
        }
        Err(_) => {
            // SAFETY: our own child, not reaped yet.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            panic!("a worker was still running after {secs}s");
        }
    }
}

/// The commits on the remote's main, oldest first, as subjects.
fn landed(bare: &Path) -> Vec<String> {
    git(bare, &["log", "--reverse", "--format=%s", "main"]).lines().map(str::to_string).collect()
}

fn claims(bare: &Path) -> String {
    git(bare, &["for-each-ref", "refs/ralph/claims"])
}

/// Every ref of ralph's on the remote: claims, counts of tries, the learnings store.
fn ralph_refs(bare: &Path) -> String {
    git(bare, &["for-each-ref", "--format=%(refname)", "refs/ralph"])
}

/// Each worker ends with exit 0 (within two minutes).
fn all_succeed(children: Vec<Child>) {
    for c in children {
        let (code, err) = finish(c, 120);
        assert_eq!(code, 0, "{err}");
    }
}

/// Tasks t1..=n each landed exactly once on the remote's main.
fn each_landed_once(bare: &Path, n: usize) {
    let subjects = landed(bare);
    for i in 1..=n {
        let count = subjects.iter().filter(|s| s.starts_with(&format!("ralph(t{i}):"))).count();
        assert_eq!(count, 1, "t{i} landed {count} times: {subjects:?}");
    }
}

/// Waits until `f` holds (at most `secs`).
fn until(secs: u64, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn three_workers_land_nine_tasks_each_exactly_once_in_a_linear_history() {
    let (seed, bare) = origin(9, "0.2", "5s");
    let children: Vec<Child> = (1..=3)
        .map(|i| {
            let name = format!("w{i}");
            let dir = clone(&seed, &bare, &name);
            worker(&seed, &dir, &name, &["--until-empty"], None)
        })
        .collect();
    all_succeed(children);
    each_landed_once(&bare, 9);
    assert_eq!(git(&bare, &["rev-list", "--merges", "--count", "main"]).trim(), "0", "merge-free");
    assert_eq!(claims(&bare), "", "no claim is left");
    let check = clone(&seed, &bare, "check");
    for i in 1..=9 {
        assert!(
            std::fs::read_to_string(check.join(format!("specs/t{i}.md"))).unwrap().contains("status: done")
        );
        assert!(check.join(format!("out-t{i}.txt")).exists());
    }
    // The figures come back from the history alone, in any clone.
    let mut cmd = Command::new(RALPH);
    cmd.args(["stats", "--remote", "--json"]).current_dir(&check);
    hermetic(&mut cmd, &seed.outside);
    let out = cmd.output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(v["total"]["iterations"], 9, "{v}");
    let landings: u64 = v["workers"].as_array().unwrap().iter().map(|w| w["landed"].as_u64().unwrap()).sum();
    assert_eq!(landings, 9, "{v}");
}

#[test]
fn a_worker_whose_agent_is_limited_goes_on_with_its_fallback() {
    let (seed, bare) = origin_limited(2, "0", "5s", "You've hit your usage limit. Try again in 1 hours.");
    let dir = clone(&seed, &bare, "w1");
    let (code, err) = finish(worker(&seed, &dir, "w1", &["--until-empty"], None), 120);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("task t1: limited.sh hit a usage limit that lifts in"), "{err}");
    let subjects = landed(&bare);
    for t in ["t1", "t2"] {
        assert_eq!(
            subjects.iter().filter(|s| s.starts_with(&format!("ralph({t}):"))).count(),
            1,
            "{subjects:?}"
        );
    }
    // The limited agent is not tried again for the second task.
    let runs = dir.join(".ralph/runs");
    let run = std::fs::read_dir(&runs).unwrap().next().unwrap().unwrap().path();
    let agents: Vec<String> = std::fs::read_to_string(run.join("iterations.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let r: serde_json::Value = serde_json::from_str(l).unwrap();
            format!("{} {}", r["agent"].as_str().unwrap(), r["outcome"].as_str().unwrap())
        })
        .collect();
    assert_eq!(agents, ["limited.sh rate_limited", "backup done", "backup done"]);

    // A worker started again in the clone keeps the limit: the next task goes to the backup.
    let person = clone(&seed, &bare, "person");
    std::fs::write(person.join("specs/t3.md"), "# Task 3\n\nWrite out-t3.txt.\n").unwrap();
    git(&person, &["add", "specs/t3.md"]);
    git(&person, &["commit", "-qm", "a third task"]);
    git(&person, &["push", "-q", "origin", "HEAD:main"]);
    let (code, err) = finish(worker(&seed, &dir, "w1", &["--until-empty"], None), 120);
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains("limited.sh hit a usage limit"), "the limited agent was tried again: {err}");
    each_landed_once(&bare, 3);
}

#[test]
fn no_task_is_claimed_once_the_landed_commits_spent_the_shared_ceiling() {
    let (seed, bare) = origin(2, "0", "30s");
    let a = clone(&seed, &bare, "a");
    push_config(
        &a,
        "max_cost = 4.0\n",
        "a ceiling\n\nRalph-Worker: earlier\nRalph-Iterations: 3\nRalph-Tokens: 10\nRalph-Cost: 5.000000",
    );
    let (code, err) = finish(worker(&seed, &a, "a", &["--until-empty"], None), 60);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("max_cost"), "{err}");
    assert_eq!(claims(&bare), "", "nothing was claimed");
}

#[test]
fn of_two_workers_started_at_once_on_one_task_one_claims_it() {
    let (seed, bare) = origin(1, "0.5", "30s");
    let a = clone(&seed, &bare, "a");
    let b = clone(&seed, &bare, "b");
    let (ca, cb) =
        (worker(&seed, &a, "a", &["--until-empty"], None), worker(&seed, &b, "b", &["--until-empty"], None));
    let (ea, eb) = (finish(ca, 120), finish(cb, 120));
    assert_eq!((ea.0, eb.0), (0, 0), "{}\n{}", ea.1, eb.1);
    let claimed = [&ea.1, &eb.1].iter().filter(|e| e.contains("claimed t1")).count();
    assert_eq!(claimed, 1, "both claimed:\n{}\n{}", ea.1, eb.1);
    assert_eq!(landed(&bare).iter().filter(|s| s.starts_with("ralph(t1):")).count(), 1);
}

#[test]
fn a_worker_killed_with_9_is_taken_over_once_its_lease_runs_out() {
    let (seed, bare) = origin(1, "3", "2s");
    let a = clone(&seed, &bare, "a");
    let mut ca = worker(&seed, &a, "a", &["--until-empty"], None);
    until(30, "a's claim", || claims(&bare).contains("refs/ralph/claims/t1"));
    let started = Instant::now();
    ca.kill().unwrap();
    ca.wait().unwrap();
    let b = clone(&seed, &bare, "b");
    let (code, err) = finish(worker(&seed, &b, "b", &["--until-empty"], None), 120);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("taking it over"), "{err}");
    assert!(started.elapsed() >= Duration::from_secs(2), "stolen before the lease ran out");
    let subjects = landed(&bare);
    assert_eq!(subjects.iter().filter(|s| s.starts_with("ralph(t1):")).count(), 1, "{subjects:?}");
    // The vanished worker's try was counted, and the count went with the landing.
    assert!(err.contains("claimed t1 (Task 1, attempt 2)"), "{err}");
    assert_eq!(ralph_refs(&bare), "", "no claim or count of tries is left");
}

#[test]
fn a_worker_paused_past_its_lease_finds_it_lost_the_claim_and_lands_nothing() {
    let (seed, bare) = origin(1, "3", "1s");
    let a = clone(&seed, &bare, "a");
    let ca = worker(&seed, &a, "a", &["--until-empty"], None);
    until(30, "a's claim", || claims(&bare).contains("refs/ralph/claims/t1"));
    // SAFETY: our own child; SIGSTOP and SIGCONT change nothing else.
    unsafe { libc::kill(ca.id() as i32, libc::SIGSTOP) };
    let b = clone(&seed, &bare, "b");
    let (code, err) = finish(worker(&seed, &b, "b", &["--until-empty"], None), 120);
    assert_eq!(code, 0, "{err}");
    let before = landed(&bare);
    // SAFETY: as above.
    unsafe { libc::kill(ca.id() as i32, libc::SIGCONT) };
    let (_, err_a) = finish(ca, 120);
    assert!(err_a.contains("lost"), "a did not notice: {err_a}");
    assert_eq!(landed(&bare), before, "a landed after losing its claim");
    assert_eq!(before.iter().filter(|s| s.starts_with("ralph(t1):")).count(), 1);
}

#[test]
fn a_target_moved_by_a_person_mid_task_is_rebased_onto_and_checked_again() {
    let (seed, bare) = origin(1, "2", "30s");
    let a = clone(&seed, &bare, "a");
    let ca = worker(&seed, &a, "a", &["--until-empty"], None);
    until(30, "a's claim", || claims(&bare).contains("refs/ralph/claims/t1"));
    let person = clone(&seed, &bare, "person");
    std::fs::write(person.join("theirs.txt"), "a person's commit\n").unwrap();
    git(&person, &["add", "theirs.txt"]);
    git(&person, &["commit", "-qm", "a person's commit"]);
    git(&person, &["push", "-q", "origin", "HEAD:main"]);
    let (code, err) = finish(ca, 120);
    assert_eq!(code, 0, "{err}");
    let subjects = landed(&bare);
    let theirs = subjects.iter().position(|s| s == "a person's commit").unwrap();
    let ours = subjects.iter().position(|s| s.starts_with("ralph(t1):")).unwrap();
    assert!(theirs < ours, "the work is on top of the person's commit: {subjects:?}");
    let landing_logs =
        walk(&a.join(".ralph/runs")).into_iter().filter(|p| p.ends_with("landing.log")).count();
    assert!(landing_logs >= 1, "the checks ran again on the combined result");
}

#[test]
#[ignore = "needs faketime: scripts/test installs it"]
fn a_worker_whose_clock_is_hours_off_neither_steals_early_nor_holds_forever() {
    libfaketime();
    // b's clock runs five hours ahead: it must still wait the lease out (by its own monotonic
    // clock) while a's heartbeats renew the claim, and a lands.
    let (seed, bare) = origin(1, "3", "2s");
    let a = clone(&seed, &bare, "a");
    let ca = worker(&seed, &a, "a", &["--until-empty"], Some("-5h"));
    until(30, "a's claim", || claims(&bare).contains("refs/ralph/claims/t1"));
    let b = clone(&seed, &bare, "b");
    let cb = worker(&seed, &b, "b", &["--until-empty"], Some("+5h"));
    let (ea, eb) = (finish(ca, 120), finish(cb, 120));
    assert_eq!((ea.0, eb.0), (0, 0), "{}\n{}", ea.1, eb.1);
    assert!(!eb.1.contains("taking it over"), "b stole a live claim: {}", eb.1);
    assert_eq!(landed(&bare).iter().filter(|s| s.starts_with("ralph(t1):")).count(), 1);
    // a, hours behind, dies holding a claim: b (normal clock) takes it over after the lease.
    let (seed, bare) = origin(1, "3", "2s");
    let a = clone(&seed, &bare, "a2");
    let mut ca = worker(&seed, &a, "a2", &["--until-empty"], Some("-5h"));
    until(30, "a's claim", || claims(&bare).contains("refs/ralph/claims/t1"));
    ca.kill().unwrap();
    ca.wait().unwrap();
    let b = clone(&seed, &bare, "b2");
    let (code, err) = finish(worker(&seed, &b, "b2", &["--until-empty"], None), 120);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("taking it over"), "{err}");
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn status_remote_shows_who_holds_which_task_from_any_clone() {
    let (seed, bare) = origin(1, "2", "30s");
    let a = clone(&seed, &bare, "a");
    let ca = worker(&seed, &a, "a", &["--until-empty"], None);
    until(30, "a's claim", || claims(&bare).contains("refs/ralph/claims/t1"));
    let other = clone(&seed, &bare, "other");
    let mut cmd = Command::new(RALPH);
    cmd.args(["status", "--remote", "--json"]).current_dir(&other);
    hermetic(&mut cmd, &seed.outside);
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let c = &v["claims"][0];
    assert_eq!((c["task"].as_str(), c["worker"].as_str()), (Some("t1"), Some("a")), "{v}");
    assert_eq!(c["base"].as_str().map(str::len), Some(40), "{v}");
    let (code, err) = finish(ca, 120);
    assert_eq!(code, 0, "{err}");
    let out = {
        let mut cmd = Command::new(RALPH);
        cmd.args(["status", "--remote"]).current_dir(&other);
        hermetic(&mut cmd, &seed.outside);
        cmd.output().unwrap()
    };
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("no claim on origin"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn with_pull_requests_a_task_is_pushed_as_a_branch_and_its_claim_waits_for_the_merge() {
    let (seed, bare) = origin(2, "0.2", "1s");
    // land = "pull-request": the target is protected, the forge lands.
    let a = clone(&seed, &bare, "a");
    push_config(&a, "land = \"pull-request\"\n", "land through pull requests");
    let before = landed(&bare);
    let (code, err) = finish(worker(&seed, &a, "a", &["--until-empty"], None), 120);
    assert_eq!(code, 0, "{err}");
    assert_eq!(landed(&bare), before, "nothing landed on the protected target");
    let refs = claims(&bare);
    assert!(refs.contains("refs/ralph/claims/t1") && refs.contains("refs/ralph/claims/t2"), "{refs}");
    let branches = git(&bare, &["branch", "--list", "ralph/*"]);
    assert!(branches.contains("ralph/t1") && branches.contains("ralph/t2"), "{branches}");
    // A pending claim is never stale: a second worker, after the lease, takes nothing over.
    std::thread::sleep(Duration::from_millis(1200));
    let b = clone(&seed, &bare, "b");
    let (code, err) = finish(worker(&seed, &b, "b", &["--until-empty"], None), 120);
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains("taking it over") && !err.contains("claimed"), "{err}");
    // The forge merges t1's branch: the next worker lets its claim go.
    git(&bare, &["update-ref", "refs/heads/main", "refs/heads/ralph/t1"]);
    let (code, err) = finish(worker(&seed, &b, "b", &["--until-empty"], None), 120);
    assert_eq!(code, 0, "{err}");
    let refs = claims(&bare);
    assert!(!refs.contains("refs/ralph/claims/t1") && refs.contains("refs/ralph/claims/t2"), "{refs}");
}

#[test]
fn ralph_toml_budgets_hold_per_worker() {
    let (seed, bare) = origin(4, "0", "30s");
    let a = clone(&seed, &bare, "a");
    push_config(&a, "\n[budget]\nmax_iterations = 2\n", "two iterations a worker");
    let (code, err) = finish(worker(&seed, &a, "a", &["--until-empty"], None), 60);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("max_iterations 2 reached"), "{err}");
    let n = landed(&bare).iter().filter(|s| s.starts_with("ralph(t")).count();
    assert_eq!(n, 2, "{:?}", landed(&bare));
    assert_eq!(claims(&bare), "", "no claim is left behind");
}

/// Three workers, each task's agent proposing a learning of its own: AGENTS.md on the target
/// shows every one of them, once, with ids unique across the workers, and the store on the
/// remote holds them with their provenance.
#[test]
fn the_learnings_of_every_worker_reach_agents_md_on_the_target() {
    let lessons = [
        "alpha parsers want tabs",
        "bravo builds need jq installed",
        "charlie fixtures live under data",
        "delta migrations run twice",
        "echo logs rotate hourly",
        "foxtrot docs use sentence case",
    ];
    let mut case = String::from("case \"$RALPH_TASK\" in\n");
    for (i, l) in lessons.iter().enumerate() {
        case.push_str(&format!("t{}) echo '<learning>{l}</learning>' ;;\n", i + 1));
    }
    case.push_str("esac\nsleep 0.2\n");
    let (seed, bare) = origin_with(6, &case, "5s", "true", "");
    let children: Vec<Child> = (1..=3)
        .map(|i| {
            let name = format!("w{i}");
            let dir = clone(&seed, &bare, &name);
            worker(&seed, &dir, &name, &["--until-empty"], None)
        })
        .collect();
    all_succeed(children);
    let check = clone(&seed, &bare, "check");
    let agents = std::fs::read_to_string(check.join("AGENTS.md")).unwrap();
    for l in lessons {
        assert_eq!(agents.matches(l).count(), 1, "{l} in AGENTS.md:\n{agents}");
    }
    let mut ids: Vec<&str> =
        agents.lines().filter_map(|l| l.strip_prefix("- [")?.split_once(']').map(|(id, _)| id)).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), lessons.len(), "ids unique across workers:\n{agents}");
    let store: serde_json::Value =
        serde_json::from_str(&git(&bare, &["show", "refs/ralph/store/learnings:learnings.json"])).unwrap();
    let entries = store["entries"].as_array().unwrap();
    assert_eq!(entries.len(), lessons.len(), "{store}");
    assert!(entries.iter().all(|e| e["task"].as_str().is_some_and(|t| t.starts_with('t'))), "{store}");
    assert_eq!(claims(&bare), "", "no claim is left");
}

/// A task that fails its checks every time, `max_attempts = 2`: one worker tries once and is
/// stopped; the next worker tries once more (its claim says attempt 2) and blocks the task.
#[test]
fn attempts_count_across_workers_and_the_last_one_blocks_the_task() {
    let (seed, bare) =
        origin_with(1, "sleep 2\n", "30s", "test ! -e out-t1.txt", "\n[budget]\nmax_attempts = 2\n");
    let a = clone(&seed, &bare, "a");
    let ca = worker(&seed, &a, "a", &["--until-empty"], None);
    until(60, "a's first failed attempt", || ralph_refs(&bare).contains("refs/ralph/tries/t1"));
    // SAFETY: our own child: it stops gracefully and lets the claim go.
    unsafe { libc::kill(ca.id() as i32, libc::SIGTERM) };
    let (_, err_a) = finish(ca, 60);
    until(30, "a's claim to go", || claims(&bare).is_empty());
    let b = clone(&seed, &bare, "b");
    let (code, err) = finish(worker(&seed, &b, "b", &["--until-empty"], None), 120);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("blocked: 2 failed attempts"), "{err_a}\n---\n{err}");
    assert!(err.contains("claimed t1 (Task 1, attempt 2)"), "b's claim names the second attempt: {err}");
    let records = walk(&b.join(".ralph/runs"))
        .into_iter()
        .filter(|p| p.ends_with("iterations.jsonl"))
        .map(|p| std::fs::read_to_string(p).unwrap().lines().count())
        .sum::<usize>();
    assert_eq!(records, 1, "b tried once, not max_attempts times");
    let main = clone(&seed, &bare, "check");
    let spec = std::fs::read_to_string(main.join("specs/t1.md")).unwrap();
    assert!(spec.contains("status: blocked"), "{spec}");
    assert_eq!(ralph_refs(&bare), "", "the claim and the count went with the block");
}

/// The remote served by `git daemon` on 127.0.0.1 (the git protocol, not a path): three
/// workers land six tasks once each.
#[test]
fn workers_coordinate_through_git_daemon_on_127_0_0_1() {
    let (seed, bare) = origin(6, "0.2", "5s");
    git(&bare, &["config", "receive.advertiseAtomic", "true"]);
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let base = bare.parent().unwrap();
    let mut daemon = Command::new("git");
    daemon
        .args([
            "daemon",
            "--listen=127.0.0.1",
            &format!("--port={port}"),
            "--export-all",
            "--enable=receive-pack",
            "--reuseaddr",
            "--informative-errors",
            &format!("--base-path={}", base.display()),
            &base.display().to_string(),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    hermetic(&mut daemon, &seed.outside);
    let _daemon = KillOnDrop(daemon.spawn().unwrap());
    until(30, "git daemon to listen", || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
    let url = format!("git://127.0.0.1:{port}/origin.git");
    let children: Vec<Child> = (1..=3)
        .map(|i| {
            let name = format!("g{i}");
            let dir = seed.outside.join(&name);
            git(&seed.outside, &["clone", "-q", &url, dir.to_str().unwrap()]);
            worker(&seed, &dir, &name, &["--until-empty"], None)
        })
        .collect();
    all_succeed(children);
    each_landed_once(&bare, 6);
    assert_eq!(ralph_refs(&bare), "", "no claim is left");
}

/// A network namespace of its own for one worker, joined to the host's by a veth pair: the
/// worker at `10.X.i.2` sees the host at `10.X.i.1` and nothing else (not the host's loopback).
/// The pair goes with the namespace when its holder dies.
struct Netns {
    holder: KillOnDrop,
    host: String,
}

impl Netns {
    fn new(subnet: u8, i: u8) -> Netns {
        let holder = KillOnDrop(Command::new("unshare").args(["--net", "sleep", "600"]).spawn().unwrap());
        let pid = holder.0.id().to_string();
        let mine = std::fs::read_link("/proc/self/ns/net").unwrap();
        until(10, "the namespace", || {
            std::fs::read_link(format!("/proc/{pid}/ns/net")).is_ok_and(|ns| ns != mine)
        });
        let tag = std::process::id() % 10_000;
        let (host_if, ns_if) = (format!("rh{tag}x{i}"), format!("rw{tag}x{i}"));
        let host = format!("10.{subnet}.{i}.1");
        let sh = |args: &str| {
            let out = Command::new("sh").args(["-c", args]).output().unwrap();
            assert!(out.status.success(), "{args}: {}", String::from_utf8_lossy(&out.stderr));
        };
        sh(&format!("ip link add {host_if} type veth peer name {ns_if} netns {pid}"));
        sh(&format!("ip addr add {host}/30 dev {host_if} && ip link set {host_if} up"));
        sh(&format!(
            "nsenter -t {pid} -n sh -c 'ip addr add 10.{subnet}.{i}.2/30 dev {ns_if} && ip link set {ns_if} up && ip link set lo up'"
        ));
        Netns { holder, host }
    }

    /// `cmd` to run inside the namespace.
    fn enter(&self, program: &str) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.args(["-t", &self.holder.0.id().to_string(), "-n", "--", program]);
        cmd
    }
}

/// Each worker in a network namespace of its own, reaching `git daemon` over a veth pair (and
/// not through the host's loopback, which its namespace does not share).
#[test]
#[ignore = "needs root for network namespaces and veth pairs: CI runs as root"]
fn workers_in_network_namespaces_of_their_own_land_through_git_daemon() {
    // SAFETY: geteuid has no preconditions.
    assert!(unsafe { libc::geteuid() } == 0, "network namespaces need root");
    let (seed, bare) = origin(6, "0.2", "5s");
    let subnet = 200 + (std::process::id() % 50) as u8;
    let spaces: Vec<Netns> = (1..=3).map(|i| Netns::new(subnet, i)).collect();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let base = bare.parent().unwrap();
    let mut daemon = Command::new("git");
    daemon.args([
        "daemon",
        &format!("--port={port}"),
        "--export-all",
        "--enable=receive-pack",
        "--reuseaddr",
    ]);
    daemon.arg("--listen=127.0.0.1");
    for n in &spaces {
        daemon.arg(format!("--listen={}", n.host));
    }
    daemon
        .arg(format!("--base-path={}", base.display()))
        .arg(base)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    hermetic(&mut daemon, &seed.outside);
    let _daemon = KillOnDrop(daemon.spawn().unwrap());
    until(30, "git daemon to listen", || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
    let children: Vec<Child> = spaces
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let name = format!("n{}", i + 1);
            let dir = seed.outside.join(&name);
            git(
                &seed.outside,
                &["clone", "-q", &format!("git://127.0.0.1:{port}/origin.git"), dir.to_str().unwrap()],
            );
            git(&dir, &["remote", "set-url", "origin", &format!("git://{}:{port}/origin.git", n.host)]);
            // The host's loopback is not the namespace's: only the veth reaches the remote.
            let mut probe = n.enter("git");
            probe.args(["ls-remote", &format!("git://127.0.0.1:{port}/origin.git")]).current_dir(&dir);
            hermetic(&mut probe, &seed.outside);
            assert!(!probe.output().unwrap().status.success(), "the namespace reached the host's loopback");
            let mut cmd = n.enter(RALPH);
            cmd.args(["worker", "--until-empty"])
                .current_dir(&dir)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            hermetic(&mut cmd, &seed.outside);
            cmd.env("RALPH_WORKER_ID", &name);
            cmd.spawn().unwrap()
        })
        .collect();
    all_succeed(children);
    each_landed_once(&bare, 6);
    assert_eq!(ralph_refs(&bare), "", "no claim is left");
}

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The landing push is refused because a person's commit moved the target meanwhile, and that
/// commit changed AGENTS.md too: the worker takes its own rendering back out, rebases, renders
/// the learnings again on the new tip and lands (rebased, the two AGENTS.md would conflict).
#[test]
fn a_refused_landing_renders_agents_md_again_on_the_new_tip() {
    let (seed, bare) =
        origin_with(1, "echo '<learning>golf tests need a warm cache</learning>'\n", "30s", "true", "");
    let a = clone(&seed, &bare, "a");
    let person = clone(&seed, &bare, "person");
    // a's pre-push hook: the first time a push would move main, the person pushes first.
    let hook = a.join(".git/hooks/pre-push");
    std::fs::write(
        &hook,
        format!(
            "#!/bin/sh\nwhile read -r _ _ remote _; do\n  if [ \"$remote\" = refs/heads/main ] && [ ! -e {marker} ]; then\n    touch {marker}\n    cd {person} && printf '# Notes\\n\\n## Learnings\\n\\n- a person keeps this line\\n' > AGENTS.md && git add AGENTS.md && git commit -qm 'a person writes AGENTS.md' && git push -q origin HEAD:main\n  fi\ndone\nexit 0\n",
            marker = seed.outside.join("pushed-once").display(),
            person = person.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&hook, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let (code, err) = finish(worker(&seed, &a, "a", &["--until-empty"], None), 120);
    assert_eq!(code, 0, "{err}");
    assert!(seed.outside.join("pushed-once").exists(), "the person's push happened");
    let subjects = landed(&bare);
    assert!(subjects.iter().any(|s| s == "a person writes AGENTS.md"), "{subjects:?}");
    assert!(subjects.iter().any(|s| s.starts_with("ralph(t1):")), "t1 landed: {err}\n{subjects:?}");
    let check = clone(&seed, &bare, "check");
    let agents = std::fs::read_to_string(check.join("AGENTS.md")).unwrap();
    assert!(
        agents.contains("a person keeps this line") && agents.contains("golf tests need a warm cache"),
        "{agents}"
    );
    assert!(!agents.contains("<<<<<<<"), "{agents}");
    assert!(std::fs::read_to_string(check.join("specs/t1.md")).unwrap().contains("status: done"));
}
