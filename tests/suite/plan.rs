//! `ralph plan`: the agent rewrites the backlog once, the result is left uncommitted for
//! review, validated, and nothing outside the backlog changes.

use crate::common::*;

const BIG: &str = "# Accounts\n\nSign-up, login and password reset.\n";

fn spec(title: &str, deps: &str) -> String {
    format!("---\ndepends_on: [{deps}]\n---\n# {title}\n\n## Done when\n\n- it works\n")
}

#[test]
fn plan_splits_one_spec_into_three_and_leaves_them_for_review() {
    let scenario = format!(
        r#"
[[step]]
task = "plan"
actions = [
  {{ expect_prompt = "Sign-up, login and password reset." }},
  {{ expect_prompt = "split accounts" }},
  {{ write = {{ path = "specs/010-signup.md", content = {} }} }},
  {{ write = {{ path = "specs/020-login.md", content = {} }} }},
  {{ write = {{ path = "specs/030-reset.md", content = {} }} }},
  {{ delete = "specs/010-accounts.md" }},
  {{ write = {{ path = "src/app.rs", content = "fn main() {{}}\n" }} }},
  {{ print = "Split accounts into three tasks." }},
]
"#,
        toml_str(&spec("Sign-up", "")),
        toml_str(&spec("Login", "010-signup")),
        toml_str(&spec("Password reset", "020-login"))
    );
    let repo = TestRepo::with_loop(&scenario, &["true"], "", &[("010-accounts.md", BIG)]);
    repo.write("notes.txt", "my uncommitted notes\n");
    let head = repo.head();
    let out = repo.ralph(&["plan", "split", "accounts"]).expect(0);
    let stdout = out.stdout();
    assert!(stdout.contains("added    specs/010-signup.md"), "{stdout}");
    assert!(stdout.contains("removed  specs/010-accounts.md"), "{stdout}");
    let order: Vec<&str> = stdout
        .lines()
        .filter_map(|l| l.trim().strip_prefix("todo    "))
        .map(|l| l.split("  ").next().unwrap())
        .collect();
    assert_eq!(order, ["010-signup", "020-login", "030-reset"], "{stdout}");
    assert!(stdout.contains("Nothing is committed"), "{stdout}");
    // Not committed; the stray file is put back, the user's own dirt kept.
    assert_eq!(repo.head(), head);
    assert!(!repo.exists("src/app.rs"));
    assert!(out.stderr().contains("put back") && out.stderr().contains("src/app.rs"), "{}", out.stderr());
    assert_eq!(repo.read("notes.txt"), "my uncommitted notes\n");
    let dirt = repo.dirt();
    assert!(dirt.contains("specs/020-login.md") && dirt.contains("specs/010-accounts.md"), "{dirt}");
    let v: serde_json::Value =
        serde_json::from_str(&repo.ralph(&["status", "--json"]).expect(0).stdout()).unwrap();
    assert_eq!(v["tasks"].as_array().unwrap().len(), 3);
    // The prompt and the agent's log are kept.
    let plans = std::fs::read_dir(repo.path(".ralph/plans")).unwrap().count();
    assert_eq!(plans, 1);
}

#[test]
fn an_invalid_plan_is_named_and_a_dirty_backlog_refused() {
    let scenario = r#"
[[step]]
task = "plan"
actions = [{ write = { path = "specs/020-next.md", content = "---\nstatus: soon\n---\n# Next\n" } }]
"#;
    let repo = TestRepo::with_loop(scenario, &["true"], "", &[("010-a.md", BIG)]);
    let err = repo.ralph(&["plan"]).expect(1).stderr();
    assert!(
        err.contains("the plan left an invalid backlog: specs/020-next.md:2: unknown status `soon`"),
        "{err}"
    );
    // The invalid spec is left for the user to fix; planning again is refused until it is dealt with.
    let err = repo.ralph(&["plan"]).expect(2).stderr();
    assert!(err.contains("specs/020-next.md:2: unknown status `soon`"), "{err}");
    repo.write(
        "specs/020-next.md",
        "# Next
",
    );
    let err = repo.ralph(&["plan"]).expect(2).stderr();
    assert!(err.contains("specs/ has uncommitted changes") && err.contains("specs/020-next.md"), "{err}");
}

#[test]
fn the_planning_prompt_can_be_replaced_and_a_broken_one_is_named() {
    let scenario = r##"
[[step]]
task = "plan"
actions = [{ expect_prompt = "OUR PLANNING RULES for specs/: order by risk" }, { write = { path = "specs/020-next.md", content = "# Next\n" } }]
"##;
    let repo = TestRepo::with_loop(
        scenario,
        &["true"],
        "[prompt]\nplan_template = \"PLAN.md\"\n",
        &[("010-a.md", BIG)],
    );
    repo.write("PLAN.md", "OUR PLANNING RULES for {{ source }}: {{ request }}\n{% for t in tasks %}- {{ t.label }}\n{% endfor %}");
    repo.commit_all("plan template");
    let out = repo.ralph(&["plan", "order", "by", "risk"]).expect(0).stdout();
    assert!(out.contains("added    specs/020-next.md"), "{out}");

    repo.write("PLAN.md", "line one\n{% for t in tasks %}\n");
    repo.write("specs/020-next.md", "# Next\n");
    repo.commit_all("broken plan template");
    let plans = || std::fs::read_dir(repo.path(".ralph/plans")).unwrap().count();
    let before = plans();
    let err = repo.ralph(&["plan"]).expect(2).stderr();
    assert!(err.contains("PLAN.md:"), "{err}");
    // Refused before the agent ran: no plan folder, nothing changed.
    assert_eq!(plans(), before);
    assert_eq!(repo.git(&["status", "--porcelain"]), "");
}

#[test]
fn a_flood_from_the_planner_is_capped_in_its_log_and_the_plan_still_stands() {
    let scenario = format!(
        r#"
[[step]]
task = "plan"
actions = [
  {{ run = "yes 'a line of planner noise' | head -c 3000000" }},
  {{ print = "" }},
  {{ write = {{ path = "specs/020-login.md", content = {} }} }},
  {{ print = "Added a login task." }},
]
"#,
        toml_str(&spec("Login", ""))
    );
    let repo =
        TestRepo::with_loop(&scenario, &["true"], "max_log_size = \"1MB\"\n", &[("010-accounts.md", BIG)]);
    let out = repo.ralph(&["plan"]).expect(0);
    assert!(out.stdout().contains("added    specs/020-login.md"), "{}", out.stdout());
    let plan = std::fs::read_dir(repo.path(".ralph/plans")).unwrap().next().unwrap().unwrap().path();
    let log = std::fs::read(plan.join("agent.log")).unwrap();
    assert!(log.len() < 1_100_000, "{} bytes", log.len());
    assert!(
        String::from_utf8_lossy(&log)
            .contains("[ralph: agent.log capped at 1000000 bytes ([agent] max_log_size)")
    );
}
