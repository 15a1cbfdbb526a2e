//! A hostile agent: links planted in ralph's folder or committed as inputs never take ralph
//! outside the repository (no write through them, no endless read); each is a clear error
//! naming the path.

use crate::common::*;
use std::path::{Path, PathBuf};

/// Files outside the repository, each with its own content, and an empty folder: what a
/// planted link points at. Returns their paths and contents.
fn targets(repo: &TestRepo, names: &[&str]) -> (PathBuf, Vec<(PathBuf, Vec<u8>)>) {
    let elsewhere = repo.outside.join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    let files = names
        .iter()
        .map(|n| {
            let p = repo.outside.join(n);
            let bytes = format!("precious {n}\n").into_bytes();
            std::fs::write(&p, &bytes).unwrap();
            (p, bytes)
        })
        .collect();
    (elsewhere, files)
}

fn untouched(elsewhere: &Path, files: &[(PathBuf, Vec<u8>)]) {
    for (p, bytes) in files {
        assert_eq!(&std::fs::read(p).unwrap(), bytes, "{} changed", p.display());
    }
    let inside: Vec<_> = std::fs::read_dir(elsewhere).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert!(inside.is_empty(), "ralph wrote into {}: {inside:?}", elsewhere.display());
}

fn scenario(command: &str) -> String {
    format!(
        "[[step]]\niteration = 1\nactions = [\n  {{ run = {} }},\n  {{ write = {{ path = \"src/a.txt\", content = \"a\\n\" }} }},\n  {{ promise = true }},\n]\n",
        toml_str(command)
    )
}

#[test]
fn links_planted_in_ralphs_folder_lead_nowhere_outside() {
    let repo = TestRepo::new();
    let (elsewhere, files) = targets(&repo, &["prev.txt", "spare.txt", "lock.txt", "records.txt", "run.txt"]);
    let o = repo.outside.display();
    let e = elsewhere.display();
    // The agent's shell: links at ralph's scratch files, its lock, its records, its run's
    // metadata, and the next iteration's folder.
    let plant = format!(
        "cd .ralph && ln -sf {o}/prev.txt state.json.prev && ln -sf {o}/spare.txt state.json.spare \
         && ln -sf {o}/lock.txt lock \
         && cd \"$RALPH_ITER_DIR/..\" && ln -sf {o}/records.txt iterations.jsonl \
         && ln -sf {o}/run.txt run.json && ln -s {e} iter-0002"
    );
    repo.set_scenario(&scenario(&plant));
    repo.write_config(&["true"], "");
    repo.write("specs/010-a.md", "# A\n");
    repo.write("specs/020-b.md", "# B\n");
    repo.commit_all("set up ralph");

    let run = repo.ralph_within(120, &["run", "--max-iterations", "3"]);
    untouched(&elsewhere, &files);
    assert_ne!(run.code(), 0, "{}", run.stdout());
    let err = run.stderr();
    assert!(err.contains("iter-0002 is a symbolic link"), "{err}");
    // ralph's own files are its own again: the frame put them back.
    assert!(repo.path(".ralph/state.json").is_file());
    let run_dir = repo.latest_run_dir();
    for name in ["run.json", "iterations.jsonl"] {
        let m = std::fs::symlink_metadata(run_dir.join(name)).unwrap();
        assert!(m.is_file(), "{name} is not a regular file");
    }
    assert_eq!(repo.records().len(), 1, "iteration 1 is recorded");

    // The lock is a link now: the next run refuses it, naming it.
    let run = repo.ralph_within(120, &["run"]);
    assert_ne!(run.code(), 0);
    assert!(run.stderr().contains(".ralph/lock is a symbolic link"), "{}", run.stderr());
    untouched(&elsewhere, &files);
}

#[test]
fn a_link_in_the_iterations_own_folder_is_an_error_naming_it() {
    let repo = TestRepo::new();
    let (elsewhere, files) = targets(&repo, &["checks.txt"]);
    let plant = format!(
        "ln -s {}/checks.txt \"$RALPH_ITER_DIR/checks.log\" && ln -s {} \"$RALPH_ITER_DIR/frame\"",
        repo.outside.display(),
        elsewhere.display()
    );
    repo.set_scenario(&scenario(&plant));
    repo.write_config(&["true"], "");
    repo.write("specs/010-a.md", "# A\n");
    repo.commit_all("set up ralph");
    let head = repo.head();

    let run = repo.ralph_within(120, &["run", "--max-iterations", "1"]);
    untouched(&elsewhere, &files);
    assert_eq!(run.code(), 1, "{}", run.stdout());
    assert!(run.stderr().contains("iter-0001/checks.log is a symbolic link"), "{}", run.stderr());
    assert_eq!(repo.head(), head, "nothing unchecked is committed");
}

#[test]
fn a_linked_ralph_folder_is_refused() {
    let repo = TestRepo::with_loop(&scenario("true"), &["true"], "", &[("010-a.md", "# A\n")]);
    let (elsewhere, files) = targets(&repo, &[]);
    std::os::unix::fs::symlink(&elsewhere, repo.path(".ralph")).unwrap();
    for args in [&["run"][..], &["plan", "more"], &["init", "--force"]] {
        let run = repo.ralph_within(60, args).expect(2);
        assert!(run.stderr().contains(".ralph is a symbolic link"), "{args:?}: {}", run.stderr());
    }
    untouched(&elsewhere, &files);
}

/// A spec committed as a link to `/dev/zero`, or made a FIFO: a clear error naming it, at once,
/// not a read without end.
#[test]
fn a_spec_that_is_not_a_regular_file_is_named_not_read() {
    let repo = TestRepo::with_loop(&scenario("true"), &["true"], "", &[("010-a.md", "# A\n")]);
    std::os::unix::fs::symlink("/dev/zero", repo.path("specs/020-zero.md")).unwrap();
    repo.commit_all("a hostile spec");
    let run = repo.ralph_within(60, &["run"]).expect(2);
    assert!(run.stderr().contains("specs/020-zero.md is a symbolic link"), "{}", run.stderr());

    repo.git(&["rm", "-q", "specs/020-zero.md"]);
    repo.commit_all("gone");
    let fifo =
        std::ffi::CString::new(repo.path("specs/030-fifo.md").into_os_string().into_encoded_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
    let run = repo.ralph_within(60, &["run"]).expect(2);
    assert!(run.stderr().contains("specs/030-fifo.md is not a regular file"), "{}", run.stderr());
    let run = repo.ralph_within(60, &["status"]);
    assert!(run.stderr().contains("specs/030-fifo.md"), "{}", run.stderr());
    assert!(!repo.exists(".ralph/runs"), "a run was started");
}
