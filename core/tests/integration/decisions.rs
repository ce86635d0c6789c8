//! Decision points in SQL: a decision step's outcome skips the dependents
//! it does not name and, level by level, every step whose dependencies are
//! all skipped; a step with a dependency that ran and the rest skipped
//! runs; a task whose steps are all complete or skipped is complete. Steps
//! are run by hand (the test's worker completes each job it is given), so
//! each assertion sees the state between two outcomes.

use crate::common;

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{json, Value};
use tasker_core::{CreateTask, TaskTemplate, TaskerClient, WorkerHandle};
use uuid::Uuid;

/// A template whose steps are `(name, dependencies, decision)`.
fn template(namespace: &str, name: &str, steps: &[(&str, &[&str], bool)]) -> TaskTemplate {
    let mut yaml = format!("namespace: {namespace}\nname: {name}\nversion: 1.0.0\nsteps:\n");
    for (step, deps, decision) in steps {
        yaml.push_str(&format!(
            "  - {{name: {step}, dependencies: [{}], decision: {decision}, handler: {{callable: Decide::Step}}}}\n",
            deps.join(", ")
        ));
    }
    TaskTemplate::from_yaml(&yaml, name).expect("template is valid")
}

struct Bench {
    ns: String,
    ctx: std::sync::Arc<tasker_core::Context>,
    client: TaskerClient,
    worker: WorkerHandle,
    task: Uuid,
}

async fn bench(steps: &[(&str, &[&str], bool)]) -> Bench {
    let ns = common::unique_namespace("decide");
    let ctx = common::context().await;
    ctx.register_template(template(&ns, "flow", steps)).await.unwrap();
    let client = TaskerClient::new(ctx.clone());
    let worker = WorkerHandle::start(ctx.clone(), std::slice::from_ref(&ns), 4).await.unwrap();
    let task = client.create_task(&CreateTask::new(&ns, "flow", "1.0.0", json!({}))).await.unwrap().task_uuid;
    Bench { ns, ctx, client, worker, task }
}

impl Bench {
    /// The next `n` jobs, by step name (a job's step name, its uuid).
    async fn jobs(&self, n: usize) -> BTreeMap<String, Uuid> {
        let mut jobs = BTreeMap::new();
        while jobs.len() < n {
            let job = self.worker.next_job(Duration::from_secs(10)).await.unwrap().expect("a job comes");
            assert!(jobs.insert(job.step_name, job.step_uuid).is_none());
        }
        jobs
    }

    /// Takes the one job `name` and completes it with `result`.
    async fn run(&self, name: &str, result: Value) {
        let jobs = self.jobs(1).await;
        let step = jobs.get(name).unwrap_or_else(|| panic!("expected {name}, got {jobs:?}"));
        self.worker.complete(*step, result).await.unwrap();
    }

    async fn nothing_runs(&self) {
        let job = self.worker.next_job(Duration::from_millis(300)).await.unwrap();
        assert!(job.is_none(), "no step is ready, got {job:?}");
    }

    async fn states(&self) -> Vec<(String, String)> {
        self.client.steps(self.task).await.unwrap().into_iter().map(|s| (s.name, s.status)).collect()
    }

    /// Each skipped step's history: (from, to, why) after '' -> pending.
    async fn skips(&self) -> BTreeMap<String, Vec<(String, String, Value)>> {
        let steps = self.client.steps(self.task).await.unwrap();
        let names: BTreeMap<Uuid, String> = steps.iter().map(|s| (s.step_uuid, s.name.clone())).collect();
        let mut skips: BTreeMap<String, Vec<(String, String, Value)>> = BTreeMap::new();
        for t in self.client.step_transitions(self.task).await.unwrap() {
            let name = &names[&t.step_uuid];
            if steps.iter().any(|s| &s.name == name && s.status == "skipped") && !t.from_state.is_empty() {
                let why = json!([t.metadata["decision_step"], t.metadata["reason"]]);
                skips.entry(name.clone()).or_default().push((t.from_state, t.to_state, why));
            }
        }
        skips
    }

    /// This process's `tasker_steps_skipped_total` of the bench's
    /// namespace (None when it counted none).
    async fn skipped_total(&self) -> Option<f64> {
        let metrics = tasker_core::metrics_text(&self.ctx).await.unwrap();
        let sample = format!("tasker_steps_skipped_total{{namespace=\"{}\",template=\"flow\"}} ", self.ns);
        metrics.lines().find_map(|l| l.strip_prefix(&sample)).map(|v| v.parse().unwrap())
    }

    async fn finished(self, status: &str) {
        let done = self.client.wait_for_task(self.task, Duration::from_secs(10)).await.unwrap();
        assert_eq!(done.status, status);
        self.nothing_runs().await;
        self.worker.shutdown(Duration::from_secs(5)).await.unwrap();
    }
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter().map(|(a, b)| ((*a).to_owned(), (*b).to_owned())).collect()
}

fn skipped(decision: &str, reason: &str) -> Vec<(String, String, Value)> {
    vec![("pending".to_owned(), "skipped".to_owned(), json!([decision, reason]))]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_skip_cascades_through_every_step_left_with_only_skipped_dependencies() {
    // d chooses b: a and its chain a2 -> a3 are skipped; c joins a2 and b
    // (runs: b ran); e depends on a3 alone (skipped).
    let b = bench(&[
        ("d", &[], true),
        ("a", &["d"], false),
        ("b", &["d"], false),
        ("a2", &["a"], false),
        ("a3", &["a2"], false),
        ("c", &["a2", "b"], false),
        ("e", &["a3"], false),
    ])
    .await;
    assert_eq!(b.skipped_total().await, None);
    b.run("d", json!({"run": ["b"]})).await;
    // d's outcome skipped a, a2, a3 and e, and this process counted them.
    assert_eq!(b.skipped_total().await, Some(4.0));
    assert_eq!(
        b.states().await,
        pairs(&[
            ("d", "complete"),
            ("a", "skipped"),
            ("b", "in_progress"),
            ("a2", "skipped"),
            ("a3", "skipped"),
            ("c", "pending"),
            ("e", "skipped")
        ]),
        "b was claimed eagerly in d's outcome"
    );
    let skips = b.skips().await;
    assert_eq!(skips.keys().collect::<Vec<_>>(), ["a", "a2", "a3", "e"]);
    assert_eq!(skips["a"], skipped("d", "not_chosen"));
    for name in ["a2", "a3", "e"] {
        assert_eq!(skips[name], skipped("d", "dependencies_skipped"), "{name}");
    }
    b.run("b", json!("b")).await;
    b.run("c", json!("c")).await;
    assert_eq!(b.skipped_total().await, Some(4.0), "outcomes without a decision skip nothing");
    b.finished("complete").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_with_skipped_and_complete_parents_runs_once_every_chosen_parent_completed() {
    let b = bench(&[
        ("d", &[], true),
        ("x", &["d"], false),
        ("y", &["d"], false),
        ("z", &["d"], false),
        ("j", &["x", "y", "z"], false),
    ])
    .await;
    b.run("d", json!({"run": ["z", "x"]})).await;
    let branches = b.jobs(2).await;
    assert_eq!(branches.keys().collect::<Vec<_>>(), ["x", "z"]);
    b.worker.complete(branches["x"], json!("x")).await.unwrap();
    b.nothing_runs().await;
    assert_eq!(b.states().await[4], ("j".to_owned(), "pending".to_owned()), "z has not finished");
    b.worker.complete(branches["z"], json!("z")).await.unwrap();
    b.run("j", json!("j")).await;
    assert_eq!(
        b.states().await,
        pairs(&[("d", "complete"), ("x", "complete"), ("y", "skipped"), ("z", "complete"), ("j", "complete")])
    );
    b.finished("complete").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_diamond_with_one_branch_skipped_runs_its_join_after_the_other() {
    let b = bench(&[
        ("start", &[], false),
        ("d", &["start"], true),
        ("left", &["d"], false),
        ("right", &["d"], false),
        ("finish", &["left", "right"], false),
    ])
    .await;
    b.run("start", json!(1)).await;
    b.run("d", json!({"run": ["left"]})).await;
    b.run("left", json!(2)).await;
    b.run("finish", json!(3)).await;
    assert_eq!(
        b.states().await,
        pairs(&[
            ("start", "complete"),
            ("d", "complete"),
            ("left", "complete"),
            ("right", "skipped"),
            ("finish", "complete")
        ])
    );
    let steps = b.client.steps(b.task).await.unwrap();
    assert_eq!(steps[1].results, Some(json!({"run": ["left"]})));
    assert_eq!(steps[3].results, None);
    b.finished("complete").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_whose_other_dependency_already_ran_becomes_ready_in_the_decisions_outcome() {
    // r and d are roots; j waits for r and x; d skips x after r completed,
    // so j is ready there and then (found among the skipped step's
    // dependents, not the completed one's).
    let b = bench(&[("r", &[], false), ("d", &[], true), ("x", &["d"], false), ("j", &["r", "x"], false)]).await;
    let roots = b.jobs(2).await;
    b.worker.complete(roots["r"], json!("r")).await.unwrap();
    b.nothing_runs().await;
    b.worker.complete(roots["d"], json!({"run": []})).await.unwrap();
    b.run("j", json!("j")).await;
    assert_eq!(b.states().await, pairs(&[("r", "complete"), ("d", "complete"), ("x", "skipped"), ("j", "complete")]));
    b.finished("complete").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decision_that_chooses_nothing_skips_everything_below_it_and_the_task_completes() {
    let b = bench(&[("d", &[], true), ("a", &["d"], false), ("b", &["d"], false), ("c", &["a", "b"], false)]).await;
    b.run("d", json!({"run": []})).await;
    assert_eq!(b.states().await, pairs(&[("d", "complete"), ("a", "skipped"), ("b", "skipped"), ("c", "skipped")]));
    let skips = b.skips().await;
    assert_eq!(skips["c"], skipped("d", "dependencies_skipped"));
    b.finished("complete").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_decision_fails_its_step_for_good_and_nothing_below_runs() {
    for (result, message) in [
        (
            json!({"run": ["a", "nope", "c"]}),
            "decision step d of template NS/flow@1.0.0 chose c, nope, not among its dependents (a, b)",
        ),
        (
            json!({"run": [1]}),
            "decision step d of template NS/flow@1.0.0 returned run: [1]; run must list step names (strings)",
        ),
        (
            json!(["a"]),
            "decision step d of template NS/flow@1.0.0 returned [\"a\"], which is not a decision: return \
             TaskerCore::Decision.new(run: [names of its dependents]), recorded as {\"run\": [...]}",
        ),
    ] {
        let b = bench(&[("d", &[], true), ("a", &["d"], false), ("b", &["d"], false), ("c", &["a"], false)]).await;
        b.run("d", result).await;
        let done = b.client.wait_for_task(b.task, Duration::from_secs(10)).await.unwrap();
        assert_eq!(done.status, "error");
        let message = message.replace("NS", &done.namespace);
        let steps = b.client.steps(b.task).await.unwrap();
        assert_eq!(steps[0].status, "error");
        assert_eq!(steps[0].results, None);
        let error = steps[0].last_error.clone().unwrap();
        assert_eq!(
            (&error["class"], &error["message"], &error["retryable"]),
            (&json!("TaskerCore::DecisionError"), &json!(message), &json!(false))
        );
        assert_eq!(steps.iter().skip(1).map(|s| s.status.as_str()).collect::<Vec<_>>(), ["pending"; 3]);
        b.finished("error").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_decision_resolved_by_hand_is_applied_and_a_skipped_step_refuses_operator_actions() {
    let b = bench(&[("d", &[], true), ("a", &["d"], false), ("b", &["d"], false)]).await;
    b.run("d", json!({"run": ["z"]})).await;
    assert_eq!(b.client.wait_for_task(b.task, Duration::from_secs(10)).await.unwrap().status, "error");
    let steps = b.client.steps(b.task).await.unwrap();
    let err = b.client.resolve_step_manually(steps[0].step_uuid, &json!({"run": ["z"]}), "by hand").await.unwrap_err();
    assert!(
        err.to_string().contains("cannot resolve it by hand with that result: decision step d of template"),
        "{err}"
    );
    assert!(b.client.resolve_step_manually(steps[0].step_uuid, &json!({"run": ["b"]}), "by hand").await.unwrap());
    b.run("b", json!("b")).await;
    let done = b.client.wait_for_task(b.task, Duration::from_secs(10)).await.unwrap();
    assert_eq!(done.status, "complete");
    assert_eq!(b.states().await, pairs(&[("d", "resolved_manually"), ("a", "skipped"), ("b", "complete")]));
    let a = steps[1].step_uuid;
    assert!(!b.client.retry_step(a, "again").await.unwrap());
    assert!(!b.client.resolve_step_manually(a, &json!(1), "by hand").await.unwrap());
    assert!(!b.client.cancel_task(b.task, "late").await.unwrap());
    assert_eq!(b.states().await[1], ("a".to_owned(), "skipped".to_owned()));
    b.finished("complete").await;
}
