//! Shell integration: the completion scripts complete in the real shells, and the man pages
//! render. The tests that need zsh, fish or groff are `#[ignore]`d: a plain `cargo test` shows
//! them as ignored, and `scripts/test` installs the tools and runs them, failing when one is
//! missing.

use crate::common::*;
use std::path::Path;
use std::process::Command;

fn ralph(args: &[&str]) -> Run {
    Run(Command::new(RALPH).args(args).output().unwrap())
}

/// Asserts that `tool` can run: a test that needs it is ignored unless asked for.
fn require(tool: &str) {
    let found = Command::new(tool).arg("--version").output().is_ok_and(|o| o.status.success());
    assert!(found, "{tool} is not installed: scripts/test installs it (apt-get install {tool})");
}

/// What bash completes for `words` (the last one is the word being completed).
fn bash_complete(script: &Path, words: &[&str]) -> Vec<String> {
    let quoted: Vec<String> = words.iter().map(|w| format!("'{w}'")).collect();
    let cword = words.len() - 1;
    let prev = if cword > 0 { words[cword - 1] } else { "" };
    let line = words.join(" ");
    let program = format!(
        "source '{}'\nCOMP_WORDS=({})\nCOMP_CWORD={cword}\nCOMP_LINE='{line}'\nCOMP_POINT=${{#COMP_LINE}}\n_ralph ralph '{}' '{prev}'\nprintf '%s\\n' \"${{COMPREPLY[@]}}\"\n",
        script.display(),
        quoted.join(" "),
        words[cword],
    );
    let out = Command::new("bash").arg("--norc").arg("-c").arg(&program).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).lines().map(str::to_string).collect()
}

#[test]
fn the_bash_script_completes_subcommands_flags_and_values() {
    let run = ralph(&["completions", "bash"]).expect(0);
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("ralph.bash");
    std::fs::write(&script, run.stdout()).unwrap();
    require("bash");
    assert_eq!(bash_complete(&script, &["ralph", "st"]), ["status", "stats", "stop"]);
    assert_eq!(bash_complete(&script, &["ralph", "logs", "--ch"]), ["--checks"]);
    assert_eq!(bash_complete(&script, &["ralph", "learnings", "re"]), ["remove", "review"]);
    let shells = bash_complete(&script, &["ralph", "completions", ""]);
    for shell in ["bash", "zsh", "fish"] {
        assert!(shells.iter().any(|s| s == shell), "{shells:?}");
    }
    let run_flags = bash_complete(&script, &["ralph", "run", "--max-"]);
    assert_eq!(run_flags, ["--max-iterations", "--max-duration", "--max-tokens", "--max-cost"]);
}

#[test]
fn the_zsh_and_fish_scripts_name_the_subcommands() {
    for shell in ["zsh", "fish"] {
        let script = ralph(&["completions", shell]).expect(0).stdout();
        for sub in ["status", "stop", "learnings", "completions", "man", "plan", "stats", "report"] {
            assert!(script.contains(sub), "{shell} script lacks {sub}");
        }
    }
    let bad = ralph(&["completions", "tcsh"]).expect(2);
    assert!(bad.stderr().contains("invalid value 'tcsh'"), "{}", bad.stderr());
}

#[test]
#[ignore = "needs zsh and fish: scripts/test installs them"]
fn the_zsh_and_fish_scripts_parse_and_fish_completes() {
    let dir = tempfile::tempdir().unwrap();
    for shell in ["zsh", "fish"] {
        require(shell);
        let path = dir.path().join(format!("ralph.{shell}"));
        std::fs::write(&path, ralph(&["completions", shell]).expect(0).stdout()).unwrap();
        let out = Command::new(shell).arg("-n").arg(&path).output().unwrap();
        assert!(out.status.success(), "{shell} -n: {}", String::from_utf8_lossy(&out.stderr));
    }
    // fish can say what it would complete.
    let script = dir.path().join("ralph.fish");
    let out = Command::new("fish")
        .arg("--no-config")
        .arg("-c")
        .arg(format!("source '{}'; complete -C 'ralph st'", script.display()))
        .output()
        .unwrap();
    let offered: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.split('\t').next().unwrap().to_string())
        .collect();
    assert_eq!(offered, ["stats", "status", "stop"], "{}", String::from_utf8_lossy(&out.stderr));
}

/// The page as `man` shows it, plain; groff's warnings fail the test.
fn render(page: &Path) -> String {
    let out = Command::new("groff")
        .args(["-man", "-Tutf8", "-ww", "-P-c", "-P-b", "-P-u"])
        .arg(page)
        .output()
        .unwrap();
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "{}: {}",
        page.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `ralph man` and `ralph man --out-dir`: the main page and one per subcommand; the names.
fn man_pages(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf, Vec<String>) {
    let page = ralph(&["man"]).expect(0).stdout();
    assert!(page.contains(".TH ralph 1"), "{page}");
    let printed = dir.join("printed.1");
    std::fs::write(&printed, &page).unwrap();
    let out = dir.join("man1");
    // A relative directory is taken from -C, like every path ralph is given.
    ralph(&["-C", dir.to_str().unwrap(), "man", "--out-dir", "man1"]).expect(0);
    let mut pages: Vec<String> =
        std::fs::read_dir(&out).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    pages.sort();
    assert_eq!(
        std::fs::read_to_string(out.join("ralph.1")).unwrap(),
        page,
        "the printed page is the written one"
    );
    (printed, out, pages)
}

#[test]
fn the_man_pages_are_written_one_per_subcommand() {
    let dir = tempfile::tempdir().unwrap();
    let (_, _, pages) = man_pages(dir.path());
    for expected in
        ["ralph.1", "ralph-run.1", "ralph-status.1", "ralph-learnings-show.1", "ralph-completions.1"]
    {
        assert!(pages.iter().any(|p| p == expected), "{expected} missing from {pages:?}");
    }
}

#[test]
#[ignore = "needs groff: scripts/test installs it"]
fn the_man_pages_render_with_every_subcommand_and_the_exit_codes() {
    require("groff");
    let dir = tempfile::tempdir().unwrap();
    let (printed, out, pages) = man_pages(dir.path());
    let main = render(&printed);
    for sub in [
        "ralph-init(1)",
        "ralph-run(1)",
        "ralph-status(1)",
        "ralph-logs(1)",
        "ralph-completions(1)",
        "ralph-man(1)",
    ] {
        assert!(main.contains(sub), "ralph.1 lacks {sub}:\n{main}");
    }
    assert!(main.contains("EXIT STATUS"), "{main}");
    assert!(main.contains("130    Interrupted"), "{main}");
    for p in &pages {
        render(&out.join(p));
    }
    let run = render(&out.join("ralph-run.1"));
    assert!(run.contains("--max-iterations <N>"), "{run}");
    assert!(run.contains("overrides [budget] max_itera"), "{run}");
}
