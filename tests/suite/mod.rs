mod agent_process;
mod agents;
mod bad_input;
mod commands;
mod git_rules;
mod learnings;
mod loop_outcomes;
mod overnight;
