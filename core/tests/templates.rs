//! Templates that change: a registration that changes a template (new
//! content or a new version) is announced, and every process that cached
//! the old one drops it; one that changes nothing is not announced.

mod common;

use std::time::Duration;

use serde_json::json;
use sqlx::postgres::PgListener;
use tasker_core::{TaskTemplate, TaskerClient};

fn template(namespace: &str, version: &str, greeting: &str) -> TaskTemplate {
    let yaml = format!(
        "namespace: {namespace}\nname: greetings\nversion: {version}\nsteps:\n\
         \x20 - {{name: greet, handler: {{callable: Greet, initialization: {{greeting: {greeting}}}}}}}\n"
    );
    TaskTemplate::from_yaml(&yaml, "greetings.yml").expect("template is valid")
}

async fn next_announcement(listener: &mut PgListener, within: Duration) -> Option<String> {
    tokio::time::timeout(within, listener.recv()).await.ok().map(|n| n.expect("LISTEN works").payload().to_owned())
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
    assert_eq!(next_announcement(&mut listener, Duration::from_secs(5)).await, Some(format!("{ns}/greetings@1.0.0")));
    let client = TaskerClient::new(running.clone());
    assert_eq!(client.handler_config(&ns, "greetings", "1.0.0", "greet").await.unwrap(), json!({"greeting": "hej"}));

    // The same content again changes nothing and announces nothing.
    assert!(!operator.register_template(template(&ns, "1.0.0", "hej")).await.unwrap());
    assert_eq!(next_announcement(&mut listener, Duration::from_millis(500)).await, None);

    // New content: announced, and the running process reads it next time.
    assert!(operator.register_template(template(&ns, "1.0.0", "hola")).await.unwrap());
    assert_eq!(next_announcement(&mut listener, Duration::from_secs(5)).await, Some(format!("{ns}/greetings@1.0.0")));
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
    assert_eq!(next_announcement(&mut listener, Duration::from_secs(5)).await, Some(format!("{ns}/greetings@1.1.0")));
    assert_eq!(client.handler_config(&ns, "greetings", "1.1.0", "greet").await.unwrap(), json!({"greeting": "hi"}));
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
