//! Templates that change: a registration that changes a template (new
//! content or a new version) is announced, and every process that cached
//! the old one drops it; one that changes nothing is not announced. A
//! claimed step carries its handler's settings as last registered.

use crate::common;

use std::time::Duration;

use serde_json::json;
use sqlx::postgres::PgListener;
use tasker_core::{CreateTask, TaskTemplate, TaskerClient, WorkerHandle};

fn template(namespace: &str, version: &str, greeting: &str) -> TaskTemplate {
    let yaml = format!(
        "namespace: {namespace}\nname: greetings\nversion: {version}\nsteps:\n\
         \x20 - {{name: greet, handler: {{callable: Greet, initialization: {{greeting: {greeting}}}}}}}\n"
    );
    TaskTemplate::from_yaml(&yaml, "greetings.yml").expect("template is valid")
}

/// The next announcement of a template of namespace `ns` within `within`
/// (other tests, running beside this one, register templates of their own).
async fn next_announcement(listener: &mut PgListener, ns: &str, within: Duration) -> Option<String> {
    let ours = async {
        loop {
            let payload = listener.recv().await.expect("LISTEN works").payload().to_owned();
            if payload.starts_with(&format!("{ns}/")) {
                return payload;
            }
        }
    };
    tokio::time::timeout(within, ours).await.ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_template_reaches_every_process_that_cached_it() {
    let ns = common::unique_namespace("tmpl");
    let deployment = common::one_deployment(json!({}));
    // Two processes of one deployment: one runs (and caches the template),
    // the other registers.
    let running = common::context_with(deployment.clone()).await;
    let operator = common::context_with(deployment).await;
    let mut listener = PgListener::connect_with(operator.pool()).await.unwrap();
    listener.listen("tasker_template_changed").await.unwrap();

    assert!(operator.register_template(template(&ns, "1.0.0", "hej")).await.unwrap(), "a new template");
    assert_eq!(
        next_announcement(&mut listener, &ns, Duration::from_secs(5)).await,
        Some(format!("{ns}/greetings@1.0.0"))
    );
    let client = TaskerClient::new(running.clone());
    assert_eq!(client.handler_config(&ns, "greetings", "1.0.0", "greet").await.unwrap(), json!({"greeting": "hej"}));

    // The same content again changes nothing and announces nothing.
    assert!(!operator.register_template(template(&ns, "1.0.0", "hej")).await.unwrap());
    assert_eq!(next_announcement(&mut listener, &ns, Duration::from_millis(500)).await, None);

    // New content: announced, and the running process reads it next time.
    assert!(operator.register_template(template(&ns, "1.0.0", "hola")).await.unwrap());
    assert_eq!(
        next_announcement(&mut listener, &ns, Duration::from_secs(5)).await,
        Some(format!("{ns}/greetings@1.0.0"))
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let config = client.handler_config(&ns, "greetings", "1.0.0", "greet").await.unwrap();
        if config == json!({"greeting": "hola"}) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the running process still has {config}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // A new version is announced too.
    assert!(operator.register_template(template(&ns, "1.1.0", "hi")).await.unwrap());
    assert_eq!(
        next_announcement(&mut listener, &ns, Duration::from_secs(5)).await,
        Some(format!("{ns}/greetings@1.1.0"))
    );
    assert_eq!(client.handler_config(&ns, "greetings", "1.1.0", "greet").await.unwrap(), json!({"greeting": "hi"}));
}

/// greet (settings `{greeting: <greeting>}`), then reply, which has none.
fn two_step_template(namespace: &str, greeting: &str) -> TaskTemplate {
    let yaml = format!(
        "namespace: {namespace}\nname: exchange\nversion: 1.0.0\nsteps:\n\
         \x20 - {{name: greet, handler: {{callable: Greet, initialization: {{greeting: {greeting}}}}}}}\n\
         \x20 - {{name: reply, dependencies: [greet], handler: {{callable: Reply}}}}\n"
    );
    TaskTemplate::from_yaml(&yaml, "exchange.yml").expect("template is valid")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claimed_step_carries_its_handlers_settings_as_last_registered() {
    let ns = common::unique_namespace("settings");
    let ctx = common::context().await;
    ctx.register_template(two_step_template(&ns, "hej")).await.unwrap();
    let client = TaskerClient::new(ctx.clone());
    let worker = WorkerHandle::start(ctx.clone(), std::slice::from_ref(&ns), 1).await.unwrap();
    let mut seen = Vec::new();
    for greeting in ["hej", "hola"] {
        if greeting != "hej" {
            assert!(ctx.register_template(two_step_template(&ns, greeting)).await.unwrap(), "new settings");
        }
        let task = client.create_task(&CreateTask::new(&ns, "exchange", "1.0.0", json!({}))).await.unwrap();
        // The root comes from its message, the dependent from the root's
        // outcome (claimed eagerly): both carry their settings.
        for _ in 0..2 {
            let job = worker.next_job(Duration::from_secs(10)).await.unwrap().expect("a step is claimed");
            seen.push((job.step_name.clone(), job.handler_config.clone()));
            worker.complete(job.step_uuid, json!(null)).await.unwrap();
        }
        assert_eq!(client.wait_for_status(task.task_uuid, Duration::from_secs(10)).await.unwrap(), "complete");
        let reply = common::step_history(&client, task.task_uuid, "reply").await;
        assert!(
            reply.iter().any(|(from, to, _)| from == "pending" && to == "in_progress"),
            "claimed eagerly: {reply:?}"
        );
    }
    worker.shutdown(Duration::from_secs(5)).await.unwrap();
    let expected = [
        ("greet", json!({"greeting": "hej"})),
        ("reply", json!({})),
        ("greet", json!({"greeting": "hola"})),
        ("reply", json!({})),
    ];
    assert_eq!(seen, expected.map(|(step, config)| (step.to_owned(), config)));
}

#[test]
fn checking_template_files_reports_each_file_and_touches_no_database() {
    let dir = std::env::temp_dir().join(format!("tasker_templates_{}", common::unique_prefix()));
    std::fs::create_dir_all(dir.join("nested")).unwrap();
    std::fs::write(
        dir.join("a.yaml"),
        "namespace: good\nname: one\nversion: 1.0.0\nsteps:\n  - {name: s, handler: {callable: S}}\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("b.yml"),
        "namespace: bad\nname: cyc\nversion: 1.0.0\nsteps:\n  - {name: x, dependencies: [y], handler: {callable: X}}\n  \
         - {name: y, dependencies: [x], handler: {callable: Y}}\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("nested/c.yaml"),
        "namespace: good\nname: one\nversion: 1.0.0\nsteps:\n  - {name: t, handler: {callable: T}}\n",
    )
    .unwrap();
    std::fs::write(dir.join("notes.txt"), "not a template").unwrap();

    let checked = TaskTemplate::check_paths(&[&dir]).unwrap();
    let summary: Vec<(String, Result<String, String>)> = checked
        .into_iter()
        .map(|(path, r)| {
            (path.strip_prefix(&dir).unwrap().display().to_string(), r.map(|t| t.key()).map_err(|e| e.to_string()))
        })
        .collect();
    assert_eq!(summary[0], ("a.yaml".to_owned(), Ok("good/one@1.0.0".to_owned())));
    assert_eq!(summary[1].0, "b.yml");
    assert!(
        summary[1].1.as_ref().unwrap_err().starts_with("template bad/cyc@1.0.0: steps form a cycle: "),
        "{:?}",
        summary[1]
    );
    assert_eq!(
        summary[2],
        (
            "nested/c.yaml".to_owned(),
            Err(format!(
                "template {}: good/one@1.0.0 is also defined in {}",
                dir.join("nested/c.yaml").display(),
                dir.join("a.yaml").display()
            ))
        )
    );
    assert_eq!(summary.len(), 3);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_decision_must_have_dependents_and_is_stored_with_its_steps() {
    let yaml = "namespace: shop\nname: ship\nversion: 1.0.0\nsteps:\n\
                \x20 - {name: choose, decision: true, handler: {callable: Choose}}\n\
                \x20 - {name: post, dependencies: [choose], handler: {callable: Post}}\n\
                \x20 - {name: last, decision: true, dependencies: [post], handler: {callable: Last}}\n";
    let err = TaskTemplate::from_yaml(yaml, "ship.yml").unwrap_err();
    assert_eq!(
        err.message(),
        "template shop/ship@1.0.0: step \"last\" is a decision (decision: true) but no step depends on it; \
         a decision chooses which of its dependents run"
    );
    assert_eq!(err.kind(), tasker_core::ErrorKind::Template);

    let ok = TaskTemplate::from_yaml(
        &yaml.replace(", decision: true, dependencies: [post]", ", dependencies: [post]"),
        "ship.yml",
    )
    .expect("a decision with a dependent is valid");
    assert_eq!(ok.steps.iter().map(|s| s.decision).collect::<Vec<_>>(), [true, false, false]);
    // Only a decision says so in the stored definition.
    let stored = serde_json::to_value(&ok).unwrap();
    assert_eq!(stored["steps"][0]["decision"], json!(true));
    assert!(stored["steps"][1].get("decision").is_none());

    let err =
        TaskTemplate::from_yaml(&yaml.replace("decision: true,", "decision: yes please,"), "ship.yml").unwrap_err();
    let msg = err.message();
    assert!(msg.starts_with("template ship.yml: ") && msg.contains("expected a boolean"), "{msg}");
}

fn fan_out_template(split: &str, summarize_deps: &str) -> String {
    format!(
        "namespace: fan\nname: doubles\nversion: 1.0.0\nsteps:\n\
         \x20 - {{name: split, handler: {{callable: F::Split}}{split}}}\n\
         \x20 - {{name: other, handler: {{callable: F::Other}}}}\n\
         \x20 - {{name: summarize, dependencies: [{summarize_deps}], handler: {{callable: F::Sum}}}}\n"
    )
}

fn fan_out_error(split: &str, summarize_deps: &str) -> String {
    TaskTemplate::from_yaml(&fan_out_template(split, summarize_deps), "doubles.yml").unwrap_err().to_string()
}

#[test]
fn a_fan_out_parses_with_its_childrens_handler_retry_and_timeout() {
    let t = TaskTemplate::from_yaml(
        &fan_out_template(
            ", fan_out: {from: items, handler: {callable: F::Double, initialization: {factor: 2}}, join: summarize, \
             retry: {max_attempts: 5, backoff_base_ms: 10, max_backoff_ms: 20}, timeout_seconds: 7}",
            "split",
        ),
        "doubles.yml",
    )
    .unwrap();
    let fan_out = t.steps[0].fan_out.as_ref().unwrap();
    assert_eq!(fan_out.from.as_deref(), Some("items"));
    assert_eq!(fan_out.join.as_deref(), Some("summarize"));
    let handler = fan_out.handler.as_ref().unwrap();
    assert_eq!((handler.callable.as_str(), &handler.initialization), ("F::Double", &json!({"factor": 2})));
    assert_eq!(
        (fan_out.retry.retryable, fan_out.retry.max_attempts, fan_out.retry.backoff_base_ms, fan_out.timeout_seconds),
        (true, 5, 10, Some(7))
    );
    assert_eq!(tasker_core::FanOutSpec::child_step_name("split"), "split[]");
    assert!(t.steps[1].fan_out.is_none());
    // Stored as JSON and read back unchanged.
    let stored: TaskTemplate = serde_json::from_value(serde_json::to_value(&t).unwrap()).unwrap();
    assert_eq!(stored, t);
}

#[test]
fn a_fan_out_without_from_handler_or_join_is_refused_naming_the_template_and_step() {
    assert_eq!(
        fan_out_error(", fan_out: {handler: {callable: F::Double}, join: summarize}", "split"),
        "template fan/doubles@1.0.0: step \"split\" has fan_out without from (the key of its result's array)"
    );
    assert_eq!(
        fan_out_error(", fan_out: {from: '', handler: {callable: F::Double}, join: summarize}", "split"),
        "template fan/doubles@1.0.0: step \"split\" has fan_out with an empty from"
    );
    assert_eq!(
        fan_out_error(", fan_out: {from: items, join: summarize}", "split"),
        "template fan/doubles@1.0.0: step \"split\" has fan_out without handler (the children's handler)"
    );
    assert_eq!(
        fan_out_error(", fan_out: {from: items, handler: {callable: F::Double}}", "split"),
        "template fan/doubles@1.0.0: step \"split\" has fan_out without join (the step that waits for every child)"
    );
    assert_eq!(
        fan_out_error(", fan_out: {from: items, handler: {callable: 'not a class'}, join: summarize}", "split"),
        "template fan/doubles@1.0.0: step \"split\" has fan_out with handler.callable \"not a class\", which is not \
         a class name like Module::Handler"
    );
}

#[test]
fn a_fan_out_join_that_is_not_a_step_or_does_not_wait_for_it_is_refused() {
    assert_eq!(
        fan_out_error(", fan_out: {from: items, handler: {callable: F::Double}, join: summary}", "split"),
        "template fan/doubles@1.0.0: step \"split\" has fan_out with join \"summary\", which is not a step of the \
         template"
    );
    assert_eq!(
        fan_out_error(", fan_out: {from: items, handler: {callable: F::Double}, join: summarize}", "other"),
        "template fan/doubles@1.0.0: step \"split\" has fan_out with join \"summarize\", which does not depend on \
         \"split\" (add it to \"summarize\"'s dependencies)"
    );
    let msg = fan_out_error(
        ", fan_out: {from: items, handler: {callable: F::Double}, join: summarize, timeout_seconds: 0, \
         retry: {max_attempts: 0, backoff_base_ms: 9, max_backoff_ms: 1}}",
        "split",
    );
    assert!(msg.starts_with("template fan/doubles@1.0.0: "), "{msg}");
    assert!(msg.contains("step \"split\" has fan_out with retry.max_attempts 0; it must be at least 1"), "{msg}");
    assert!(
        msg.contains("step \"split\" has fan_out with retry.backoff_base_ms 9 above retry.max_backoff_ms 1"),
        "{msg}"
    );
    assert!(msg.contains("step \"split\" has fan_out with timeout_seconds 0; it must be at least 1"), "{msg}");
    let msg =
        fan_out_error(", fan_out: {from: items, handler: {callable: F::Double}, join: summarize, each: 1}", "split");
    assert!(msg.contains("unknown field `each`"), "{msg}");
}

#[test]
fn bad_concurrency_limits_are_refused_naming_the_template_the_step_and_the_problem() {
    let err = |extra_template: &str, step_limit: &str| {
        let yaml = format!(
            "namespace: lim\nname: billing\nversion: 1.0.0\n{extra_template}steps:\n\
             \x20 - {{name: charge, handler: {{callable: Billing::Charge}}{step_limit}}}\n"
        );
        TaskTemplate::from_yaml(&yaml, "billing.yml").unwrap_err().to_string()
    };
    assert_eq!(
        err("", ", concurrency: {key: customer_id, max: 2}"),
        "template lim/billing@1.0.0: step \"charge\" has concurrency.key \"customer_id\", which is not a path \
         into the task context like context.customer_id"
    );
    assert_eq!(
        err("", ", concurrency: {key: context.customer_id, max: 0}"),
        "template lim/billing@1.0.0: step \"charge\" has concurrency.max 0; it must be at least 1"
    );
    assert_eq!(
        err("concurrency: {key: context., max: 1}\n", ""),
        "template lim/billing@1.0.0: the template has concurrency.key \"context.\", which is not a path into the \
         task context like context.customer_id"
    );
    assert_eq!(
        err("concurrency: {key: context.a..b, max: 3000000000}\n", ""),
        "template lim/billing@1.0.0: the template has concurrency.key \"context.a..b\", which is not a path into \
         the task context like context.customer_id; the template has concurrency.max 3000000000, which is too large"
    );
    let unknown = err("", ", concurrency: {key: context.customer_id, limit: 2}");
    assert!(unknown.starts_with("template billing.yml: ") && unknown.contains("unknown field `limit`"), "{unknown}");
    let good = TaskTemplate::from_yaml(
        "namespace: lim\nname: billing\nversion: 1.0.0\nconcurrency: {key: context.account.id, max: 1}\nsteps:\n\
         \x20 - {name: charge, handler: {callable: Billing::Charge}, concurrency: {key: context.customer_id, max: 2}}\n",
        "billing.yml",
    )
    .unwrap();
    assert_eq!(good.concurrency.as_ref().unwrap().path(), Some(vec!["account", "id"]));
    assert_eq!(good.steps[0].concurrency.as_ref().map(|c| c.max), Some(2));
}

#[test]
fn bad_rate_limits_are_refused_naming_the_template_the_step_and_the_problem() {
    let err = |limit: &str| {
        let yaml = format!(
            "namespace: lim\nname: payouts\nversion: 1.0.0\nsteps:\n\
             \x20 - {{name: pay, handler: {{callable: Payouts::Pay}}, rate_limit: {limit}}}\n"
        );
        TaskTemplate::from_yaml(&yaml, "payouts.yml").unwrap_err().to_string()
    };
    assert_eq!(
        err("{key: merchant_id, per_second: 3}"),
        "template lim/payouts@1.0.0: step \"pay\" has rate_limit.key \"merchant_id\", which is not a path into the \
         task context like context.merchant_id"
    );
    assert_eq!(
        err("{key: context.merchant_id, per_second: 0, burst: 0}"),
        "template lim/payouts@1.0.0: step \"pay\" has rate_limit.per_second 0; it must be above 0; step \"pay\" has \
         rate_limit.burst 0; it must be from 1 to 1000"
    );
    assert_eq!(
        err("{key: context.merchant_id, per_second: -1.5, burst: 1001}"),
        "template lim/payouts@1.0.0: step \"pay\" has rate_limit.per_second -1.5; it must be above 0; step \"pay\" \
         has rate_limit.burst 1001; it must be from 1 to 1000"
    );
    let unknown = err("{key: context.merchant_id, per_minute: 3}");
    assert!(
        unknown.starts_with("template payouts.yml: ") && unknown.contains("unknown field `per_minute`"),
        "{unknown}"
    );
    let good = TaskTemplate::from_yaml(
        "namespace: lim\nname: payouts\nversion: 1.0.0\nsteps:\n\
         \x20 - {name: pay, handler: {callable: Payouts::Pay}, rate_limit: {key: context.m, per_second: 0.5}}\n",
        "payouts.yml",
    )
    .unwrap();
    let limit = good.steps[0].rate_limit.as_ref().unwrap();
    assert_eq!((limit.path(), limit.per_second, limit.burst()), (Some(vec!["m"]), 0.5, 1));
}
