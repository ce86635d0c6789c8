//! Traces across processes: a task created here with a W3C traceparent is
//! run by a Ruby worker process (`rake tasker:worker`); both export their
//! spans over OTLP/HTTP to a receiver in this test, which decodes each
//! `ExportTraceServiceRequest`. One trace covers the creation and all four
//! steps, each step with its handler's run and its outcome's statement.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use prost::Message;
use serde_json::json;
use tasker_core::{CreateTask, TaskTemplate, TaskerClient};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// One span as the receiver got it.
#[derive(Debug, Clone)]
struct Received {
    service: String,
    name: String,
    trace_id: String,
    span_id: String,
    parent_span_id: String,
    attributes: HashMap<String, String>,
}

type Spans = Arc<Mutex<Vec<Received>>>;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Reads one HTTP request (head and Content-Length body), decodes it as an
/// OTLP trace export and answers 200.
async fn serve(mut stream: TcpStream, spans: Spans, paths: Arc<Mutex<Vec<String>>>) {
    let mut data = Vec::new();
    let mut buf = [0u8; 8192];
    let head_end = loop {
        if let Some(i) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => data.extend_from_slice(&buf[..n]),
        }
    };
    let head = String::from_utf8_lossy(&data[..head_end]).into_owned();
    let length: usize = head
        .lines()
        .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse().unwrap()))
        .expect("the exporter sends a Content-Length");
    while data.len() < head_end + length {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => data.extend_from_slice(&buf[..n]),
        }
    }
    paths.lock().unwrap().push(head.lines().next().unwrap_or_default().to_owned());
    let request = ExportTraceServiceRequest::decode(&data[head_end..head_end + length]).expect("an OTLP trace export");
    let mut got = Vec::new();
    for resource_spans in request.resource_spans {
        let service = resource_spans
            .resource
            .iter()
            .flat_map(|r| r.attributes.iter())
            .find(|a| a.key == "service.name")
            .and_then(|a| a.value.as_ref()?.value.clone())
            .map(|v| match v {
                AnyValue::StringValue(s) => s,
                other => format!("{other:?}"),
            })
            .unwrap_or_default();
        for span in resource_spans.scope_spans.into_iter().flat_map(|s| s.spans) {
            let attributes = span
                .attributes
                .iter()
                .filter_map(|a| {
                    let value = match a.value.as_ref()?.value.clone()? {
                        AnyValue::StringValue(s) => s,
                        AnyValue::IntValue(i) => i.to_string(),
                        AnyValue::BoolValue(b) => b.to_string(),
                        other => format!("{other:?}"),
                    };
                    Some((a.key.clone(), value))
                })
                .collect();
            got.push(Received {
                service: service.clone(),
                name: span.name,
                trace_id: hex(&span.trace_id),
                span_id: hex(&span.span_id),
                parent_span_id: hex(&span.parent_span_id),
                attributes,
            });
        }
    }
    spans.lock().unwrap().extend(got);
    let _ = stream
        .write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/x-protobuf\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_covers_the_creation_and_every_step_run_by_another_process() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let spans: Spans = Arc::default();
    let paths: Arc<Mutex<Vec<String>>> = Arc::default();
    let (received, requested) = (spans.clone(), paths.clone());
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(serve(stream, received.clone(), requested.clone()));
        }
    });
    // This process exports its spans (the creation) as tasker-test-client.
    std::env::set_var("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint);
    std::env::set_var("OTEL_SERVICE_NAME", "tasker-test-client");
    std::env::set_var("OTEL_BSP_SCHEDULE_DELAY", "100");
    let layer = tasker_core::otlp_layer().expect("the exporter builds").expect("an endpoint is configured");
    tracing_subscriber::registry().with(layer).init();

    let overrides = common::one_deployment(json!({"messaging": {"provider": "pgmq"}}));
    let ctx = common::context_with(overrides).await;
    let namespace = common::unique_namespace("traced");
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf();
    let yaml = std::fs::read_to_string(root.join("examples/templates/linear_workflow.yaml"))
        .unwrap()
        .replace("namespace: examples", &format!("namespace: {namespace}"));
    ctx.register_template(TaskTemplate::from_yaml(&yaml, "linear_workflow.yaml").unwrap()).await.unwrap();

    let mut worker = std::process::Command::new("rake")
        .arg("-f")
        .arg(root.join("Rakefile"))
        .args(["tasker:worker", &format!("NAMESPACES={namespace}"), "CONCURRENCY=2"])
        .env("RUBYLIB", root.join("lib"))
        .env("TASKER_BOOT", root.join("core/tests/fixtures/traces_boot.rb"))
        .env("DATABASE_URL", &ctx.config().database_url)
        .env("TASKER_MESSAGING_PROVIDER", "pgmq")
        .env("TASKER_QUEUE_PREFIX", &ctx.config().messaging.queue_prefix)
        .env("OTEL_SERVICE_NAME", "tasker-test-worker")
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("rake runs (bin/setup installs it)");

    let trace_id = &uuid::Uuid::now_v7().simple().to_string();
    let caller_span = &uuid::Uuid::now_v7().simple().to_string()[16..];
    let traceparent = format!("00-{trace_id}-{caller_span}-01");
    let client = TaskerClient::new(ctx.clone());
    let mut request = CreateTask::new(&namespace, "linear_workflow", "1.0.0", json!({"n": 2}));
    request.traceparent = Some(traceparent.clone());
    let task = client.create_task(&request).await.expect("created");
    assert_eq!(task.traceparent.as_deref(), Some(traceparent.as_str()), "stored with the task");
    tasker_core::flush_traces();
    let status = client.wait_for_task(task.task_uuid, Duration::from_secs(60)).await;

    // Spans of the task's trace until the four steps' are all in (the
    // worker exports every 100 ms).
    let task_uuid = task.task_uuid.to_string();
    let deadline = Instant::now() + Duration::from_secs(30);
    let traced = loop {
        let traced: Vec<Received> = spans.lock().unwrap().iter().filter(|s| &s.trace_id == trace_id).cloned().collect();
        let count = |name: &str| traced.iter().filter(|s| s.name == name).count();
        if (count("create_task"), count("step"), count("run_handler"), count("record_outcome")) == (1, 4, 4, 4)
            || Instant::now() > deadline
        {
            break traced;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let _ = std::process::Command::new("kill").args(["-TERM", &worker.id().to_string()]).status();
    let exited = worker.wait().expect("the worker exits");

    assert_eq!(status.expect("the task finished").status, "complete");
    assert!(exited.success(), "the worker stopped cleanly: {exited:?}");
    let names: BTreeMap<(&str, &str), usize> = traced.iter().fold(BTreeMap::new(), |mut m, s| {
        *m.entry((s.service.as_str(), s.name.as_str())).or_default() += 1;
        m
    });
    let expected: BTreeMap<(&str, &str), usize> = [
        (("tasker-test-client", "create_task"), 1),
        (("tasker-test-worker", "record_outcome"), 4),
        (("tasker-test-worker", "run_handler"), 4),
        (("tasker-test-worker", "step"), 4),
    ]
    .into_iter()
    .collect();
    let clients: Vec<Received> =
        spans.lock().unwrap().iter().filter(|s| s.service == "tasker-test-client").cloned().collect();
    assert_eq!(names, expected, "the trace's spans (the client's, in any trace: {clients:#?})");
    assert!(paths.lock().unwrap().iter().all(|p| p == "POST /v1/traces HTTP/1.1"), "{:?}", paths.lock().unwrap());

    // The creation and every step are children of the caller's span.
    let create = traced.iter().find(|s| s.name == "create_task").unwrap();
    assert_eq!(create.parent_span_id, caller_span);
    assert_eq!(create.attributes.get("task_uuid"), Some(&task_uuid));
    assert_eq!(create.attributes.get("correlation_id"), Some(&task.correlation_id.to_string()));
    let steps: Vec<&Received> = traced.iter().filter(|s| s.name == "step").collect();
    let mut step_names: Vec<&str> = steps.iter().map(|s| s.attributes["step"].as_str()).collect();
    step_names.sort_unstable();
    assert_eq!(step_names, ["square_four", "square_one", "square_three", "square_two"]);
    for step in &steps {
        assert_eq!(step.parent_span_id, caller_span, "{step:?}");
        assert_eq!(step.attributes.get("task_uuid"), Some(&task_uuid));
        assert_eq!(step.attributes.get("correlation_id"), Some(&task.correlation_id.to_string()));
        assert_eq!(step.attributes.get("namespace"), Some(&namespace));
        assert_eq!(step.attributes.get("state").map(String::as_str), Some("complete"));
        // Its handler's run and its outcome's statement are its children.
        for child in ["run_handler", "record_outcome"] {
            let children: Vec<&Received> =
                traced.iter().filter(|s| s.name == child && s.parent_span_id == step.span_id).collect();
            assert_eq!(children.len(), 1, "{child} of {step:?}");
            assert_eq!(children[0].attributes.get("step_uuid"), step.attributes.get("step_uuid"));
        }
    }
    let step_uuids: std::collections::BTreeSet<&String> = steps.iter().map(|s| &s.attributes["step_uuid"]).collect();
    assert_eq!(step_uuids.len(), 4, "four distinct steps");
}
