//! The prompt: rendered per iteration from a minijinja template. The default lives in
//! `templates/prompt.md` and is compiled into the binary; `[prompt] template` in ralph.toml
//! overrides it. A template is rendered once with sample values when ralph starts, so a broken
//! override fails before any iteration with the file and line.

use serde::Serialize;
use std::path::{Path, PathBuf};

/// The default template.
pub const DEFAULT_TEMPLATE: &str = include_str!("../templates/prompt.md");

/// Why the template cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum PromptError {
    #[error("cannot read prompt template {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}: {message}")]
    Template { path: String, line: usize, message: String },
}

/// What a template can use.
#[derive(Debug, Clone, Serialize)]
pub struct Context {
    pub task: TaskContext,
    pub other_specs: Vec<OtherSpec>,
    pub agents_md: String,
    /// The last iteration on this task, if any.
    pub previous: Option<Previous>,
    /// This iteration's attempt number (1 + failed attempts so far).
    pub attempt: u32,
    pub max_attempts: u32,
    pub promise: String,
    pub checks: Vec<String>,
    pub run_id: String,
    pub iteration: u32,
    /// Notes from the person running the loop (`ralph note`), carried by this prompt only.
    pub notes: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TaskContext {
    pub id: String,
    pub title: String,
    pub path: String,
    /// The spec without its front matter.
    pub spec: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct OtherSpec {
    pub path: String,
    pub status: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Previous {
    pub iteration: u32,
    pub outcome: String,
    pub failure: Option<String>,
    pub progress: Option<String>,
}

/// The heading of the notes' section, in the default template and where ralph adds it.
pub const NOTES_HEADING: &str = "## Notes from the person running this loop";

/// A loaded template.
#[derive(Debug)]
pub struct Template {
    env: minijinja::Environment<'static>,
    /// For messages: the override's path, or the embedded default's.
    name: String,
}

impl Template {
    /// Loads the override at `root/path`, or the default.
    pub fn load(root: &Path, path: Option<&Path>) -> Result<Template, PromptError> {
        let (name, source) = match path {
            Some(p) => {
                let abs = root.join(p);
                let text = crate::fsx::read_input(&abs)
                    .map_err(|source| PromptError::Read { path: p.to_path_buf(), source })?;
                (p.to_string_lossy().into_owned(), text)
            }
            None => ("templates/prompt.md (built in)".to_string(), DEFAULT_TEMPLATE.to_string()),
        };
        let mut env = minijinja::Environment::new();
        if let Ok(syntax) = minijinja::syntax::SyntaxConfig::builder().keep_trailing_newline(true).build() {
            env.set_syntax(syntax);
        }
        env.add_template_owned("prompt", source).map_err(|e| to_error(&name, &e))?;
        let t = Template { env, name };
        t.render(&sample())?;
        Ok(t)
    }

    /// Renders the prompt. Notes a template does not show (an override written before
    /// `notes` existed) are added at its end: a note a person sent always reaches the agent.
    pub fn render(&self, ctx: &Context) -> Result<String, PromptError> {
        let tmpl = self.env.get_template("prompt").map_err(|e| to_error(&self.name, &e))?;
        let mut text = tmpl.render(minijinja::value::Serde(ctx)).map_err(|e| to_error(&self.name, &e))?;
        let missing: Vec<&String> = ctx.notes.iter().filter(|n| !text.contains(n.trim())).collect();
        if !missing.is_empty() {
            text.push_str(if text.ends_with('\n') { "\n" } else { "\n\n" });
            text.push_str(NOTES_HEADING);
            text.push_str("\n\n");
            for n in missing {
                text.push_str(&format!("- {}\n", n.trim()));
            }
        }
        Ok(text)
    }
}

fn to_error(name: &str, e: &minijinja::Error) -> PromptError {
    let mut message = e.to_string();
    if let Some(detail) = e.detail()
        && !message.contains(detail)
    {
        message = format!("{message}: {detail}");
    }
    PromptError::Template { path: name.to_string(), line: e.line().unwrap_or(1), message }
}

fn sample() -> Context {
    Context {
        task: TaskContext {
            id: "000-sample".into(),
            title: "Sample".into(),
            path: "specs/000-sample.md".into(),
            spec: "# Sample\n".into(),
        },
        other_specs: vec![OtherSpec { path: "specs/001-other.md".into(), status: "todo".into() }],
        agents_md: "# Notes\n".into(),
        previous: Some(Previous {
            iteration: 1,
            outcome: "checks_failed".into(),
            failure: Some("failed".into()),
            progress: Some("half".into()),
        }),
        attempt: 2,
        max_attempts: 3,
        promise: crate::config::DEFAULT_PROMISE.into(),
        checks: vec!["true".into()],
        run_id: "r".into(),
        iteration: 2,
        notes: vec!["prefer the existing http client".into()],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_renders_spec_failure_and_never_puts_the_promise_alone_on_a_line() {
        let t = Template::load(Path::new("/"), None).unwrap();
        let out = t.render(&sample()).unwrap();
        assert!(out.contains("# Task 000-sample: Sample"));
        assert!(out.contains("specs/001-other.md (todo)"));
        assert!(out.contains("failed"));
        assert!(out.contains("half"));
        assert!(out.contains(crate::config::DEFAULT_PROMISE));
        assert!(!out.lines().any(|l| l.trim() == crate::config::DEFAULT_PROMISE));
    }

    #[test]
    fn notes_are_shown_once_by_the_default_and_added_to_an_override_that_does_not_show_them() {
        let t = Template::load(Path::new("/"), None).unwrap();
        let out = t.render(&sample()).unwrap();
        assert_eq!(out.matches("prefer the existing http client").count(), 1, "{out}");
        assert_eq!(out.matches(NOTES_HEADING).count(), 1, "{out}");
        let none = Context { notes: Vec::new(), ..sample() };
        assert!(!t.render(&none).unwrap().contains(NOTES_HEADING));

        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("p.md"), "Do {{ task.id }}.").unwrap();
        let custom = Template::load(dir.path(), Some(Path::new("p.md"))).unwrap();
        let out = custom.render(&sample()).unwrap();
        assert_eq!(out, format!("Do 000-sample.\n\n{NOTES_HEADING}\n\n- prefer the existing http client\n"));
        std::fs::write(dir.path().join("q.md"), "{% for n in notes %}note: {{ n }}\n{% endfor %}").unwrap();
        let shows = Template::load(dir.path(), Some(Path::new("q.md"))).unwrap();
        assert_eq!(shows.render(&sample()).unwrap(), "note: prefer the existing http client\n");
    }

    #[test]
    fn a_broken_override_names_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("p.md"), "line one\n{% if %}\n").unwrap();
        let e = Template::load(dir.path(), Some(Path::new("p.md"))).unwrap_err().to_string();
        assert!(e.starts_with("p.md:2:"), "{e}");
    }
}
