mod agent_process;
mod agents;
mod bad_input;
mod commands;
mod git_rules;
mod loop_outcomes;
mod overnight;
