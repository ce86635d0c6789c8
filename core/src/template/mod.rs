//! YAML task templates: parse, validate, register in the database, cache.

mod limits;
mod registry;
mod schedule;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Error, Result};

pub use limits::{ConcurrencySpec, RateLimitSpec};
pub(crate) use registry::TemplateRegistry;
pub use schedule::{CronSchedule, SlotPlan};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskTemplate {
    pub namespace: String,
    pub name: String,
    pub version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// JSON Schema the task context must satisfy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_schema: Option<Value>,
    pub steps: Vec<StepTemplate>,
    /// The deadline of each task of this template, counted from its start
    /// (`create_task(timeout_seconds:)` overrides it): a task still running
    /// past it ends in error with reason `deadline`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<u32>,
    /// Cron schedules: an orchestrator creates one task per slot.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub schedules: Vec<ScheduleSpec>,
    /// At most `max` tasks of this template in progress at once per value
    /// of `key`; the others wait pending.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<ConcurrencySpec>,
    /// The priority of each task of this template (`create_task(priority:)`
    /// overrides it): -5..5, higher runs first, 0 when not given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<i32>,
}

/// One cron schedule of a template (`schedules:` in the YAML).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleSpec {
    /// Names the schedule in the slots table and in status; the schedule's
    /// index in the list (`"0"`, `"1"`, ...) when not given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Five fields (minute precision) or six (seconds first).
    pub cron: String,
    /// The context of each task the schedule creates.
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub context: Value,
    /// An IANA time zone (`Europe/Berlin`) the cron fields are read in; UTC
    /// when not given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<String>,
}

impl ScheduleSpec {
    /// The schedule's name, or its index in the template's list.
    pub fn key(&self, index: usize) -> String {
        self.name.clone().unwrap_or_else(|| index.to_string())
    }

    /// The parsed cron expression in its time zone.
    pub fn parse(&self) -> std::result::Result<CronSchedule, String> {
        CronSchedule::parse(&self.cron, self.time_zone.as_deref())
    }

    /// The context of a task of this schedule (an empty object if none).
    pub fn task_context(&self) -> Value {
        if self.context.is_null() {
            Value::Object(Default::default())
        } else {
            self.context.clone()
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepTemplate {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default)]
    pub dependencies: Vec<String>,
    /// The namespace whose queue and workers run this step, when not the
    /// template's own (a step that needs other machines, say).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub handler: HandlerSpec,
    #[serde(default)]
    pub retry: RetryPolicy,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<u32>,
    /// A decision point: the handler returns which of this step's
    /// dependents run (`TaskerCore::Decision.new(run: [...])`); the others,
    /// and what can then no longer run, end `skipped`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub decision: bool,
    /// Dynamic fan-out: when this step completes, one child step per
    /// element of its result's `from` array (see [`FanOutSpec`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fan_out: Option<FanOutSpec>,
    /// At most `max` of this step's runs (across tasks) at once per value
    /// of `key`; the others wait pending.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<ConcurrencySpec>,
    /// At most `burst` of this step's runs start in any `burst /
    /// per_second` seconds per value of `key`; the others wait enqueued.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimitSpec>,
}

/// `fan_out:` on a step. Its result's array at key `from` makes one child
/// step per element, named `<step>[<index>]`, run by `handler` with the
/// children's own `retry` and `timeout_seconds`; `join` (a step that
/// depends on this one) runs once every child is complete. `from`,
/// `handler` and `join` are required: they are options here only so that
/// a missing one is reported naming the template and the step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FanOutSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handler: Option<HandlerSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub join: Option<String>,
    #[serde(default)]
    pub retry: RetryPolicy,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<u32>,
}

impl FanOutSpec {
    /// The name of the named step the children of fan-out step `step` run
    /// as (`step[]`: no template step can have it).
    pub fn child_step_name(step: &str) -> String {
        format!("{step}[]")
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HandlerSpec {
    /// The handler's class (Ruby) or registered name.
    pub callable: String,
    /// Free-form settings handed to the handler.
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub initialization: Value,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetryPolicy {
    pub retryable: bool,
    /// Total attempts, the first one included.
    pub max_attempts: u32,
    pub backoff_base_ms: u32,
    pub max_backoff_ms: u32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self { retryable: true, max_attempts: 3, backoff_base_ms: 1000, max_backoff_ms: 30_000 }
    }
}

impl TaskTemplate {
    /// Parses and validates one template. `origin` (a file name) prefixes
    /// errors.
    pub fn from_yaml(yaml: &str, origin: &str) -> Result<Self> {
        let template: TaskTemplate =
            serde_yaml_ng::from_str(yaml).map_err(|e| Error::template(format!("template {origin}: {e}")))?;
        template.validate()?;
        Ok(template)
    }

    /// Reads and validates one YAML file.
    pub fn from_file(path: &Path) -> Result<Self> {
        let yaml = std::fs::read_to_string(path)
            .map_err(|e| Error::template(format!("template {}: cannot read: {e}", path.display())))?;
        Self::from_yaml(&yaml, &path.display().to_string())
    }

    /// Every `.yml`/`.yaml` file below the given folders (or the files
    /// themselves), sorted by path so errors come in a stable order.
    pub fn load_paths<P: AsRef<Path>>(paths: &[P]) -> Result<Vec<Self>> {
        let mut files = Vec::new();
        for path in paths {
            collect_yaml(path.as_ref(), &mut files)?;
        }
        files.sort();
        // Two files declaring one namespace/name/version would both register,
        // the last silently winning: refused, naming both.
        let mut seen: std::collections::HashMap<String, &std::path::PathBuf> = std::collections::HashMap::new();
        let mut templates = Vec::with_capacity(files.len());
        for file in &files {
            let template = Self::from_file(file)?;
            if let Some(first) = seen.insert(template.key(), file) {
                return Err(Error::template(format!(
                    "template {} is declared twice: in {} and in {}",
                    template.key(),
                    first.display(),
                    file.display()
                )));
            }
            templates.push(template);
        }
        Ok(templates)
    }

    /// Every template file below the paths, each parsed and validated on
    /// its own (with its path), so one bad file does not hide the others'
    /// problems; a template key defined by two files is an error on the
    /// second. Touches no database. Fails only when a path cannot be read.
    pub fn check_paths<P: AsRef<Path>>(paths: &[P]) -> Result<Vec<(PathBuf, Result<Self>)>> {
        let mut files = Vec::new();
        for path in paths {
            collect_yaml(path.as_ref(), &mut files)?;
        }
        files.sort();
        let mut seen: HashMap<String, PathBuf> = HashMap::new();
        Ok(files
            .into_iter()
            .map(|file| {
                let checked = Self::from_file(&file).and_then(|template| match seen.get(&template.key()) {
                    Some(first) => Err(Error::template(format!(
                        "template {}: {} is also defined in {}",
                        file.display(),
                        template.key(),
                        first.display()
                    ))),
                    None => {
                        seen.insert(template.key(), file.clone());
                        Ok(template)
                    }
                });
                (file, checked)
            })
            .collect())
    }

    /// Checks a task context against `input_schema`, naming every field
    /// that does not fit.
    pub fn validate_context(&self, context: &Value) -> Result<()> {
        let Some(schema) = &self.input_schema else { return Ok(()) };
        let validator = jsonschema::validator_for(schema)
            .map_err(|e| Error::template(format!("template {}: input_schema is invalid: {e}", self.key())))?;
        let problems: Vec<String> = validator
            .iter_errors(context)
            .map(|e| {
                let path = e.instance_path().to_string();
                format!("{}: {e}", if path.is_empty() { "(context)".to_owned() } else { path })
            })
            .collect();
        if problems.is_empty() {
            Ok(())
        } else {
            Err(Error::new(
                crate::ErrorKind::Validation,
                format!(
                    "the context of a {} task does not match its input_schema: {}",
                    self.key(),
                    problems.join("; ")
                ),
            ))
        }
    }

    /// Every namespace the template's steps run in, the template's own first.
    pub fn step_namespaces(&self) -> Vec<&str> {
        let mut namespaces = vec![self.namespace.as_str()];
        for step in &self.steps {
            let namespace = step.namespace.as_deref().unwrap_or(&self.namespace);
            if !namespaces.contains(&namespace) {
                namespaces.push(namespace);
            }
        }
        namespaces
    }

    /// `namespace/name@version`, as errors and logs name a template.
    pub fn key(&self) -> String {
        format!("{}/{}@{}", self.namespace, self.name, self.version)
    }

    /// Refuses duplicate and unknown step names, cycles, empty step lists,
    /// bad versions and bad retry settings; names every problem found.
    pub fn validate(&self) -> Result<()> {
        let mut problems = Vec::new();
        for (what, value) in [("namespace", &self.namespace), ("name", &self.name)] {
            if let Err(p) = check_identifier(what, value) {
                problems.push(p);
            }
        }
        if semver::Version::parse(&self.version).is_err() {
            problems.push(format!("version {:?} is not a semantic version like 1.0.0", self.version));
        }
        if self.steps.is_empty() {
            problems.push("it has no steps".to_owned());
        }
        if let Some(schema) = &self.input_schema {
            if let Err(e) = jsonschema::validator_for(schema) {
                problems.push(format!("input_schema is not a valid JSON Schema: {e}"));
            }
        }
        let mut seen = HashSet::new();
        for step in &self.steps {
            if let Err(p) = check_identifier("step name", &step.name) {
                problems.push(p);
            }
            if let Some(namespace) = &step.namespace {
                if let Err(p) = check_identifier("namespace", namespace) {
                    problems.push(format!("step {:?}: {p}", step.name));
                }
            }
            if !seen.insert(step.name.as_str()) {
                problems.push(format!("step {:?} is defined more than once", step.name));
            }
        }
        for step in &self.steps {
            let mut deps = HashSet::new();
            for dep in &step.dependencies {
                if dep == &step.name {
                    problems.push(format!("step {:?} depends on itself", step.name));
                } else if !seen.contains(dep.as_str()) {
                    problems.push(format!("step {:?} depends on unknown step {:?}", step.name, dep));
                }
                if !deps.insert(dep) {
                    problems.push(format!("step {:?} lists dependency {:?} twice", step.name, dep));
                }
            }
            if !is_constant_path(&step.handler.callable) {
                problems.push(format!(
                    "step {:?} has handler.callable {:?}, which is not a class name like Module::Handler",
                    step.name, step.handler.callable
                ));
            }
            let retry = &step.retry;
            if retry.max_attempts == 0 {
                problems.push(format!("step {:?} has retry.max_attempts 0; it must be at least 1", step.name));
            }
            if retry.backoff_base_ms > retry.max_backoff_ms {
                problems.push(format!(
                    "step {:?} has retry.backoff_base_ms {} above retry.max_backoff_ms {}",
                    step.name, retry.backoff_base_ms, retry.max_backoff_ms
                ));
            }
            if step.timeout_seconds == Some(0) {
                problems.push(format!("step {:?} has timeout_seconds 0; it must be at least 1", step.name));
            }
            if step.decision && !self.steps.iter().any(|s| s.dependencies.contains(&step.name)) {
                problems.push(format!(
                    "step {:?} is a decision (decision: true) but no step depends on it; a decision chooses which \
                     of its dependents run",
                    step.name
                ));
            }
            if let Some(limit) = &step.concurrency {
                problems.extend(limit.problems(&format!("step {:?}", step.name)));
            }
            if let Some(limit) = &step.rate_limit {
                problems.extend(limit.problems(&format!("step {:?}", step.name)));
            }
        }
        if let Some(limit) = &self.concurrency {
            problems.extend(limit.problems("the template"));
        }
        self.validate_fan_outs(&mut problems);
        if self.timeout_seconds == Some(0) {
            problems.push("timeout_seconds 0; it must be at least 1".to_owned());
        }
        if let Some(problem) = self.priority.and_then(|p| crate::priority::problem("priority", i64::from(p))) {
            problems.push(problem);
        }
        if self.timeout_seconds.is_some_and(|t| t > i32::MAX as u32) {
            problems.push(format!("timeout_seconds {} is too large", self.timeout_seconds.unwrap_or_default()));
        }
        self.validate_schedules(&mut problems);
        if problems.is_empty() {
            if let Some(cycle) = self.find_cycle() {
                problems.push(format!("steps form a cycle: {}", cycle.join(" -> ")));
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(Error::template(format!("template {}: {}", self.key(), problems.join("; "))))
        }
    }

    /// Each `fan_out:`: `from`, `handler` and `join` given, the join a step
    /// of the template that depends on the fan-out step, and the children's
    /// handler and retry settings as valid as a step's.
    fn validate_fan_outs(&self, problems: &mut Vec<String>) {
        for step in &self.steps {
            let Some(fan_out) = &step.fan_out else { continue };
            let at = format!("step {:?} has fan_out", step.name);
            match fan_out.from.as_deref() {
                None => problems.push(format!("{at} without from (the key of its result's array)")),
                Some("") => problems.push(format!("{at} with an empty from")),
                Some(_) => {}
            }
            match &fan_out.handler {
                None => problems.push(format!("{at} without handler (the children's handler)")),
                Some(handler) if !is_constant_path(&handler.callable) => problems.push(format!(
                    "{at} with handler.callable {:?}, which is not a class name like Module::Handler",
                    handler.callable
                )),
                Some(_) => {}
            }
            match fan_out.join.as_deref() {
                None => problems.push(format!("{at} without join (the step that waits for every child)")),
                Some(join) => match self.steps.iter().find(|s| s.name == join) {
                    None => problems.push(format!("{at} with join {join:?}, which is not a step of the template")),
                    Some(j) if !j.dependencies.contains(&step.name) => problems.push(format!(
                        "{at} with join {join:?}, which does not depend on {:?} (add it to {join:?}'s dependencies)",
                        step.name
                    )),
                    Some(_) => {}
                },
            }
            if fan_out.retry.max_attempts == 0 {
                problems.push(format!("{at} with retry.max_attempts 0; it must be at least 1"));
            }
            if fan_out.retry.backoff_base_ms > fan_out.retry.max_backoff_ms {
                problems.push(format!(
                    "{at} with retry.backoff_base_ms {} above retry.max_backoff_ms {}",
                    fan_out.retry.backoff_base_ms, fan_out.retry.max_backoff_ms
                ));
            }
            if fan_out.timeout_seconds == Some(0) {
                problems.push(format!("{at} with timeout_seconds 0; it must be at least 1"));
            }
        }
    }

    /// Each schedule: a cron expression croner parses, a known time zone, a
    /// name unique in the template, and a context that is an object and
    /// fits `input_schema`.
    fn validate_schedules(&self, problems: &mut Vec<String>) {
        let mut names = HashSet::new();
        for (i, schedule) in self.schedules.iter().enumerate() {
            let at = format!("schedules[{i}]");
            if let Some(name) = &schedule.name {
                if let Err(p) = check_identifier("name", name) {
                    problems.push(format!("{at}: {p}"));
                }
            }
            if !names.insert(schedule.key(i)) {
                problems.push(format!("{at}: schedule name {:?} is used twice", schedule.key(i)));
            }
            if let Some(tz) = &schedule.time_zone {
                if tz.parse::<chrono_tz::Tz>().is_err() {
                    problems
                        .push(format!("{at}.time_zone {tz:?} is not a known time zone (like Europe/Berlin or UTC)"));
                }
            }
            if let Err(e) = CronSchedule::parse(&schedule.cron, None) {
                problems.push(format!("{at}.cron {:?} is not a valid cron expression: {e}", schedule.cron));
            }
            if !(schedule.context.is_null() || schedule.context.is_object()) {
                problems.push(format!("{at}.context must be a mapping, got {}", schedule.context));
            } else if let Err(e) = self.validate_context(&schedule.task_context()) {
                problems.push(format!("{at}.context: {e}"));
            }
        }
    }

    /// Step names in an order where every step follows its dependencies
    /// (template order among equals). Only valid on an acyclic template.
    pub fn topological_order(&self) -> Vec<&str> {
        let (order, _) = self.kahn();
        order
    }

    fn find_cycle(&self) -> Option<Vec<String>> {
        let (order, remaining) = self.kahn();
        if order.len() == self.steps.len() {
            return None;
        }
        // Walk dependencies from a remaining step until one repeats.
        let deps: HashMap<&str, Vec<&str>> =
            self.steps.iter().map(|s| (s.name.as_str(), s.dependencies.iter().map(String::as_str).collect())).collect();
        let mut path: Vec<&str> = vec![*remaining.iter().next()?];
        loop {
            let current = *path.last()?;
            let next = *deps[current].iter().find(|d| remaining.contains(*d))?;
            if let Some(start) = path.iter().position(|p| *p == next) {
                let mut cycle: Vec<String> = path[start..].iter().rev().map(|s| (*s).to_owned()).collect();
                cycle.push(cycle[0].clone());
                return Some(cycle);
            }
            path.push(next);
        }
    }

    /// Kahn's algorithm: the order found and the steps left over (on a cycle).
    fn kahn(&self) -> (Vec<&str>, HashSet<&str>) {
        let mut indegree: BTreeMap<usize, usize> = BTreeMap::new();
        let index: HashMap<&str, usize> = self.steps.iter().enumerate().map(|(i, s)| (s.name.as_str(), i)).collect();
        let mut children: Vec<Vec<usize>> = vec![Vec::new(); self.steps.len()];
        for (i, step) in self.steps.iter().enumerate() {
            let known: Vec<usize> = step.dependencies.iter().filter_map(|d| index.get(d.as_str()).copied()).collect();
            indegree.insert(i, known.len());
            for parent in known {
                children[parent].push(i);
            }
        }
        let mut order = Vec::with_capacity(self.steps.len());
        let mut ready: std::collections::BTreeSet<usize> =
            indegree.iter().filter(|(_, d)| **d == 0).map(|(i, _)| *i).collect();
        while let Some(i) = ready.pop_first() {
            order.push(self.steps[i].name.as_str());
            for &child in &children[i] {
                let d = indegree.get_mut(&child).expect("every step has an indegree");
                *d -= 1;
                if *d == 0 {
                    ready.insert(child);
                }
            }
        }
        let placed: HashSet<&str> = order.iter().copied().collect();
        let remaining = self.steps.iter().map(|s| s.name.as_str()).filter(|n| !placed.contains(n)).collect();
        (order, remaining)
    }
}

/// Names used in queue names and SQL identifiers: lower snake case.
pub(crate) fn check_identifier(what: &str, value: &str) -> std::result::Result<(), String> {
    let ok = value.len() <= 40
        && value.starts_with(|c: char| c.is_ascii_lowercase())
        && value.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(format!("{what} {value:?} must be 1-40 characters of a-z, 0-9 and _, starting with a letter"))
    }
}

fn is_constant_path(callable: &str) -> bool {
    !callable.is_empty()
        && callable.split("::").all(|part| {
            part.starts_with(|c: char| c.is_ascii_uppercase())
                && part.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        })
}

fn collect_yaml(path: &Path, out: &mut Vec<std::path::PathBuf>) -> Result<()> {
    let meta =
        std::fs::metadata(path).map_err(|e| Error::template(format!("template path {}: {e}", path.display())))?;
    if meta.is_file() {
        out.push(path.to_path_buf());
        return Ok(());
    }
    let entries =
        std::fs::read_dir(path).map_err(|e| Error::template(format!("template path {}: {e}", path.display())))?;
    for entry in entries {
        let entry = entry.map_err(|e| Error::template(format!("template path {}: {e}", path.display())))?;
        let child = entry.path();
        if child.is_dir() {
            collect_yaml(&child, out)?;
        } else if matches!(child.extension().and_then(|e| e.to_str()), Some("yml" | "yaml")) {
            out.push(child);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_files_declaring_one_template_are_refused_naming_both() {
        let dir = std::env::temp_dir().join(format!("tasker_dup_{}", std::process::id()));
        std::fs::create_dir_all(dir.join("nested")).unwrap();
        let yaml = "namespace: demo\nname: flow\nversion: 1.0.0\nsteps:\n  - {name: a, handler: {callable: A}}\n";
        std::fs::write(dir.join("flow.yaml"), yaml).unwrap();
        std::fs::write(dir.join("nested/copy.yml"), yaml).unwrap();
        let err = TaskTemplate::load_paths(&[&dir]).unwrap_err().to_string();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(
            err,
            format!(
                "template demo/flow@1.0.0 is declared twice: in {} and in {}",
                dir.join("flow.yaml").display(),
                dir.join("nested/copy.yml").display()
            )
        );
    }

    fn template(steps: &str) -> String {
        format!("namespace: demo\nname: flow\nversion: 1.0.0\nsteps:\n{steps}")
    }

    fn err(yaml: &str) -> String {
        TaskTemplate::from_yaml(yaml, "test.yml").unwrap_err().to_string()
    }

    #[test]
    fn parses_a_diamond_in_dependency_order() {
        let yaml = template(
            "  - {name: finish, dependencies: [left, right], handler: {callable: D::Finish}}\n\
             \x20 - {name: left, dependencies: [start], handler: {callable: D::Left}}\n\
             \x20 - {name: right, dependencies: [start], handler: {callable: D::Right}}\n\
             \x20 - {name: start, handler: {callable: D::Start}}\n",
        );
        let t = TaskTemplate::from_yaml(&yaml, "test.yml").unwrap();
        assert_eq!(t.topological_order(), vec!["start", "left", "right", "finish"]);
        assert_eq!(t.steps[0].retry, RetryPolicy::default());
    }

    #[test]
    fn names_duplicates_and_unknown_dependencies() {
        let msg = err(&template(
            "  - {name: a, handler: {callable: A}}\n\
             \x20 - {name: a, handler: {callable: A}}\n\
             \x20 - {name: b, dependencies: [zzz], handler: {callable: B}}\n",
        ));
        assert!(msg.starts_with("template demo/flow@1.0.0: "), "{msg}");
        assert!(msg.contains("step \"a\" is defined more than once"), "{msg}");
        assert!(msg.contains("step \"b\" depends on unknown step \"zzz\""), "{msg}");
    }

    #[test]
    fn names_the_cycle() {
        let msg = err(&template(
            "  - {name: a, handler: {callable: A}}\n\
             \x20 - {name: b, dependencies: [a, d], handler: {callable: B}}\n\
             \x20 - {name: c, dependencies: [b], handler: {callable: C}}\n\
             \x20 - {name: d, dependencies: [c], handler: {callable: D}}\n",
        ));
        assert!(msg.contains("steps form a cycle: "), "{msg}");
        for step in ["b", "c", "d"] {
            assert!(msg.contains(step), "{msg}");
        }
        assert!(!msg.contains("a ->") && !msg.contains("-> a"), "{msg}");
    }

    #[test]
    fn refuses_empty_steps_bad_version_and_bad_retry() {
        let msg = err("namespace: demo\nname: flow\nversion: one\nsteps: []\n");
        assert!(msg.contains("version \"one\" is not a semantic version"), "{msg}");
        assert!(msg.contains("it has no steps"), "{msg}");
        let msg = err(&template(
            "  - {name: a, handler: {callable: A}, retry: {max_attempts: 0, backoff_base_ms: 10, max_backoff_ms: 5}}\n",
        ));
        assert!(msg.contains("step \"a\" has retry.max_attempts 0"), "{msg}");
        assert!(msg.contains("retry.backoff_base_ms 10 above retry.max_backoff_ms 5"), "{msg}");
    }

    #[test]
    fn validates_contexts_against_the_input_schema() {
        let yaml = "namespace: demo\nname: flow\nversion: 1.0.0\n\
                    input_schema: {type: object, required: [n], properties: {n: {type: integer}}}\n\
                    steps:\n  - {name: a, handler: {callable: A}}\n";
        let t = TaskTemplate::from_yaml(yaml, "test.yml").unwrap();
        t.validate_context(&serde_json::json!({"n": 6})).unwrap();
        let msg = t.validate_context(&serde_json::json!({"n": "six"})).unwrap_err().to_string();
        assert!(msg.starts_with("the context of a demo/flow@1.0.0 task does not match its input_schema: "), "{msg}");
        assert!(msg.contains("/n: \"six\" is not of type \"integer\""), "{msg}");
        let msg = t.validate_context(&serde_json::json!({})).unwrap_err().to_string();
        assert!(msg.contains("\"n\" is a required property"), "{msg}");
        let bad = "namespace: demo\nname: flow\nversion: 1.0.0\ninput_schema: {type: 12}\n\
                   steps:\n  - {name: a, handler: {callable: A}}\n";
        assert!(err(bad).contains("input_schema is not a valid JSON Schema"));
    }

    #[test]
    fn parses_schedules_and_a_task_timeout() {
        let yaml = "namespace: demo\nname: flow\nversion: 1.0.0\ntimeout_seconds: 60\n\
                    schedules:\n  - {cron: '0 2 * * *', context: {n: 1}, time_zone: Europe/Berlin}\n\
                    \x20 - {name: fast, cron: '*/5 * * * * *'}\n\
                    steps:\n  - {name: a, handler: {callable: A}}\n";
        let t = TaskTemplate::from_yaml(yaml, "test.yml").unwrap();
        assert_eq!(t.timeout_seconds, Some(60));
        assert_eq!(t.schedules.iter().enumerate().map(|(i, s)| s.key(i)).collect::<Vec<_>>(), vec!["0", "fast"]);
        assert_eq!(t.schedules[0].task_context(), serde_json::json!({"n": 1}));
        assert_eq!(t.schedules[1].task_context(), serde_json::json!({}));
        // Stored as JSON and read back unchanged (the scheduler reads it so).
        let stored: TaskTemplate = serde_json::from_value(serde_json::to_value(&t).unwrap()).unwrap();
        assert_eq!(stored, t);
    }

    #[test]
    fn refuses_bad_schedules_naming_the_template_and_the_field() {
        let yaml = "namespace: demo\nname: flow\nversion: 1.0.0\ntimeout_seconds: 0\n\
                    input_schema: {type: object, required: [n]}\n\
                    schedules:\n  - {cron: '0 25 * * *', context: {n: 1}}\n\
                    \x20 - {cron: '0 2 * * *', time_zone: Mars/Olympus, context: {n: 1}}\n\
                    \x20 - {name: nightly, cron: '@daily', context: {m: 1}}\n\
                    \x20 - {name: nightly, cron: '@daily', context: [1]}\n\
                    \x20 - {name: Bad-Name, cron: '@daily', context: {n: 1}}\n\
                    steps:\n  - {name: a, handler: {callable: A}}\n";
        let msg = err(yaml);
        assert!(msg.starts_with("template demo/flow@1.0.0: "), "{msg}");
        assert!(msg.contains("timeout_seconds 0; it must be at least 1"), "{msg}");
        assert!(msg.contains("schedules[0].cron \"0 25 * * *\" is not a valid cron expression: "), "{msg}");
        assert!(
            msg.contains(
                "schedules[1].time_zone \"Mars/Olympus\" is not a known time zone (like Europe/Berlin or UTC)"
            ),
            "{msg}"
        );
        assert!(msg.contains("schedules[2].context: the context of a demo/flow@1.0.0 task does not match"), "{msg}");
        assert!(msg.contains("\"n\" is a required property"), "{msg}");
        assert!(msg.contains("schedules[3]: schedule name \"nightly\" is used twice"), "{msg}");
        assert!(msg.contains("schedules[3].context must be a mapping, got [1]"), "{msg}");
        assert!(msg.contains("schedules[4]: name \"Bad-Name\" must be 1-40 characters"), "{msg}");
        let msg =
            err(&template("  - {name: a, handler: {callable: A}}\nschedules: [{cron: '* * * * *', when: now}]\n"));
        assert!(msg.contains("unknown field `when`"), "{msg}");
    }

    #[test]
    fn reads_a_priority_and_refuses_one_out_of_range_naming_it() {
        let t = TaskTemplate::from_yaml(
            &format!("priority: -5\n{}", template("  - {name: a, handler: {callable: A}}\n")),
            "t.yml",
        )
        .unwrap();
        assert_eq!(t.priority, Some(-5));
        let stored: TaskTemplate = serde_json::from_value(serde_json::to_value(&t).unwrap()).unwrap();
        assert_eq!(stored, t);
        assert_eq!(
            TaskTemplate::from_yaml(&template("  - {name: a, handler: {callable: A}}\n"), "t.yml").unwrap().priority,
            None
        );
        assert_eq!(
            err(&format!("priority: 9\n{}", template("  - {name: a, handler: {callable: A}}\n"))),
            "template demo/flow@1.0.0: priority 9 is outside -5..5 (higher runs first; 0 is the default)"
        );
        let msg = err(&format!("priority: high\n{}", template("  - {name: a, handler: {callable: A}}\n")));
        assert!(msg.starts_with("template test.yml: priority: invalid type: string \"high\""), "{msg}");
    }

    #[test]
    fn refuses_unknown_keys_and_bad_callables() {
        let msg = err(&template("  - {name: a, handler: {callable: A}, retries: 3}\n"));
        assert!(msg.contains("template test.yml: ") && msg.contains("unknown field `retries`"), "{msg}");
        let msg = err(&template("  - {name: a, handler: {callable: 'not a class'}}\n"));
        assert!(msg.contains("step \"a\" has handler.callable \"not a class\""), "{msg}");
    }
}
