//! `ralph worker`: several workers, each in its own clone, coordinated through one bare
//! repository (over `file://`): every task lands exactly once; of two claimants one wins; a
//! worker killed with -9 is taken over once its lease runs out; a worker paused past its lease
//! lands nothing; a target moved by a person is rebased onto and checked again; a worker whose
//! clock is hours off neither steals early nor holds forever.

use crate::common::*;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A bare repository with `n` tasks; the agent sleeps `sleep` seconds, writes its task's
/// file and prints the promise. Returns the scratch folder and the bare repository's path.
fn origin(n: usize, sleep: &str, ttl: &str) -> (TestRepo, PathBuf) {
    origin_with(n, sleep, ttl, None)
}

/// [`origin`], with `limited`: the main agent (`limited.sh`) always hits a usage limit saying
/// these words, and the agent that does the work is its fallback, `[agents.backup]`.
fn origin_with(n: usize, sleep: &str, ttl: &str, limited: Option<&str>) -> (TestRepo, PathBuf) {
    let seed = TestRepo::new();
    let agent = seed.outside.join("agent.sh");
    std::fs::write(
        &agent,
        format!("#!/bin/sh\nsleep {sleep}\necho \"work of $RALPH_TASK\" > \"out-$RALPH_TASK.txt\"\necho '<promise>COMPLETE</promise>'\n"),
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
            "{agents}\n[checks]\ncommands = [\"true\"]\n\n[git]\nbranch = \"main\"\n\n[remote]\nlease_ttl = \"{ttl}\"\n"
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
    git(bare, &["for-each-ref", "refs/ralph"])
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
    for c in children {
        let (code, err) = finish(c, 120);
        assert_eq!(code, 0, "{err}");
    }
    let subjects = landed(&bare);
    for i in 1..=9 {
        let n = subjects.iter().filter(|s| s.starts_with(&format!("ralph(t{i}):"))).count();
        assert_eq!(n, 1, "t{i} landed {n} times: {subjects:?}");
    }
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
    let (seed, bare) = origin_with(2, "0", "5s", Some("You've hit your usage limit. Try again in 1 hours."));
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
}

#[test]
fn no_task_is_claimed_once_the_landed_commits_spent_the_shared_ceiling() {
    let (seed, bare) = origin(2, "0", "30s");
    let a = clone(&seed, &bare, "a");
    let toml = std::fs::read_to_string(a.join("ralph.toml")).unwrap() + "max_cost = 4.0\n";
    std::fs::write(a.join("ralph.toml"), &toml).unwrap();
    git(
        &a,
        &[
            "commit",
            "-qam",
            "a ceiling\n\nRalph-Worker: earlier\nRalph-Iterations: 3\nRalph-Tokens: 10\nRalph-Cost: 5.000000",
        ],
    );
    git(&a, &["push", "-q", "origin", "HEAD:main"]);
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
    assert_eq!(claims(&bare), "");
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
    let toml = std::fs::read_to_string(a.join("ralph.toml")).unwrap() + "land = \"pull-request\"\n";
    std::fs::write(a.join("ralph.toml"), &toml).unwrap();
    git(&a, &["commit", "-qam", "land through pull requests"]);
    git(&a, &["push", "-q", "origin", "HEAD:main"]);
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
    let toml = std::fs::read_to_string(a.join("ralph.toml")).unwrap() + "\n[budget]\nmax_iterations = 2\n";
    std::fs::write(a.join("ralph.toml"), &toml).unwrap();
    git(&a, &["commit", "-qam", "two iterations a worker"]);
    git(&a, &["push", "-q", "origin", "HEAD:main"]);
    let (code, err) = finish(worker(&seed, &a, "a", &["--until-empty"], None), 60);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("max_iterations 2 reached"), "{err}");
    let n = landed(&bare).iter().filter(|s| s.starts_with("ralph(t")).count();
    assert_eq!(n, 2, "{:?}", landed(&bare));
    assert_eq!(claims(&bare), "", "no claim is left behind");
}
