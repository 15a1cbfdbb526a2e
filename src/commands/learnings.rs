//! `ralph learnings`: people review what the loop learned. Lists the store with provenance and
//! counts, shows one entry, removes one (retired, with the reason "removed by hand"), marks one
//! reviewed (with `require_review`, that is what lets it into AGENTS.md). A change re-renders
//! AGENTS.md and commits that file alone. Each removal and review is kept in the store's
//! `by_hand`, with its commit, for `ralph stats`.

use crate::cli::{LearningsAction, LearningsArgs};
use crate::error::CliError;
use crate::git;
use crate::learnings::{self, ByHand, Entry, EntryStatus, HandAction, Store};
use crate::state::{RALPH_DIR, RunLock};
use std::path::Path;

/// Runs `ralph learnings`.
pub fn run(cwd: &Path, a: &LearningsArgs) -> Result<u8, CliError> {
    let root = crate::runner::repo_root(cwd)?;
    crate::state::check_ralph_dir(&root)?;
    let mut store = Store::load(&root)?;
    match &a.action {
        None => list(&store, a.all, a.json),
        Some(LearningsAction::Show { id }) => {
            let e = find(&store, id)?;
            if a.json {
                crate::outln!(
                    "{}",
                    serde_json::to_string_pretty(e).map_err(|e| CliError::failure(e.to_string()))?
                );
            } else {
                show(e);
            }
            Ok(crate::exit_code::OK)
        }
        Some(LearningsAction::Remove { id }) | Some(LearningsAction::Review { id }) => {
            if let Some(pid) = RunLock::holder(&root.join(RALPH_DIR)) {
                return Err(CliError::usage(format!(
                    "a `ralph run` (pid {pid}) is running; change learnings after it"
                ))
                .hint("`ralph stop` ends it after the current iteration"));
            }
            let removing = matches!(a.action, Some(LearningsAction::Remove { .. }));
            let id = find(&store, id)?.id.clone();
            let now = crate::logs::now_rfc3339();
            let Some(e) = store.entries.iter_mut().find(|e| e.id == id) else {
                return Err(CliError::failure(format!("learning {id} vanished")));
            };
            // A removal of an entry already retired removes nothing: not counted again.
            let acted = !removing || e.status != EntryStatus::Retired;
            let verb = if removing {
                e.status = EntryStatus::Retired;
                e.retired_reason = Some(learnings::REMOVED_BY_HAND.into());
                "remove"
            } else {
                e.reviewed = true;
                if e.status == EntryStatus::Pending {
                    e.status = EntryStatus::Active;
                }
                "review"
            };
            e.updated_at.clone_from(&now);
            if acted {
                let action = if removing { HandAction::Remove } else { HandAction::Review };
                store.by_hand.push(ByHand { action, id: id.clone(), at: now, commit: None });
            }
            let cfg = crate::runner::load_config(&root, &Default::default())
                .map(|c| c.learnings)
                .unwrap_or_default();
            store.save(&root)?;
            if learnings::write_agents_md(&root, &store, &cfg, &crate::secrets::Secrets::from_env(&[]))? {
                let path = Path::new(learnings::AGENTS_MD);
                git::add_path(&root, path)?;
                let msg = format!("ralph: learnings: {verb} {id}\n");
                let parent = git::head(&root)?;
                match git::commit_only(&root, &msg, path)? {
                    git::CommitResult::Committed(sha) => {
                        // The commit is ralph's, not a person's: `ralph stats` is told so.
                        if let (true, Some(parent), Some(last)) = (acted, parent, store.by_hand.last_mut()) {
                            last.commit = Some(crate::state::OwnCommit { commit: sha.clone(), parent });
                            store.save(&root)?;
                        }
                        crate::outln!("{verb}d {id}; AGENTS.md updated in {}", &sha[..8.min(sha.len())])
                    }
                    git::CommitResult::Refused(t) => {
                        crate::outln!(
                            "{verb}d {id}; AGENTS.md updated but not committed (git refused: {})",
                            t.trim()
                        )
                    }
                }
            } else {
                crate::outln!("{verb}d {id}");
            }
            Ok(crate::exit_code::OK)
        }
    }
}

fn find<'a>(store: &'a Store, id: &str) -> Result<&'a Entry, CliError> {
    store.get(id).ok_or_else(|| {
        CliError::usage(format!("no learning `{id}`")).hint("`ralph learnings --all` lists them all")
    })
}

fn list(store: &Store, all: bool, json: bool) -> Result<u8, CliError> {
    let entries: Vec<&Entry> =
        store.entries.iter().filter(|e| all || e.status != EntryStatus::Retired).collect();
    if json {
        crate::outln!(
            "{}",
            serde_json::to_string_pretty(&entries).map_err(|e| CliError::failure(e.to_string()))?
        );
        return Ok(crate::exit_code::OK);
    }
    if entries.is_empty() {
        crate::outln!("No learnings yet. Agents propose them with <learning>one sentence</learning>.");
        return Ok(crate::exit_code::OK);
    }
    crate::outln!("{:<5} {:<8} {:>5} {:<8} {:<20} TEXT", "ID", "STATUS", "SEEN", "REVIEWED", "TASK");
    for e in entries {
        let status = match e.status {
            EntryStatus::Active => "active",
            EntryStatus::Pending => "pending",
            EntryStatus::Retired => "retired",
        };
        let text: String = e.text.chars().take(80).collect();
        crate::outln!(
            "{:<5} {:<8} {:>5} {:<8} {:<20} {text}",
            e.id,
            status,
            e.count,
            if e.reviewed { "yes" } else { "no" },
            e.task
        );
    }
    Ok(crate::exit_code::OK)
}

fn show(e: &Entry) {
    crate::outln!("{}  {}", e.id, e.text);
    crate::outln!("  status:    {:?}{}", e.status, if e.reviewed { ", reviewed" } else { "" });
    crate::outln!("  seen:      {} time(s)", e.count);
    crate::outln!("  task:      {} (run {}, iteration {})", e.task, e.run_id, e.iteration);
    crate::outln!(
        "  agent:     {}{}",
        e.agent,
        e.model.as_deref().map(|m| format!(" ({m})")).unwrap_or_default()
    );
    if let Some(f) = &e.failure {
        crate::outln!("  taught by: {f}");
    }
    if let Some(c) = &e.commit {
        crate::outln!("  commit:    {c}");
    }
    crate::outln!("  created:   {}; updated {}", e.created_at, e.updated_at);
    if let Some(r) = &e.retired_reason {
        crate::outln!("  retired:   {r}");
    }
}
