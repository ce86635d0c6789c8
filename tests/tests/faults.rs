//! Real processes under faults: Ruby workers (`rake tasker:worker`) and
//! `tasker-orchestrator` binaries run a steady stream of linear and diamond
//! tasks while workers are killed mid-step, the orchestrator is killed, and
//! the suite's own PostgreSQL and RabbitMQ are restarted or cut off. After
//! each: every task complete, every step's result applied exactly once and
//! exact, duplicated handler runs counted. One fault at a time (the tests
//! take a lock), each on a cluster and database of its own.

use std::process::Child;
use std::time::{Duration, Instant};

use tasker_core::ErrorKind;
use tasker_faults::{
    env_count, free_port, report, Deployment, Netns, Postgres, Provider, Rabbit, VISIBILITY_TIMEOUT_SECONDS,
};

/// The scenarios share two cores with the rest of bin/test: one at a time.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn tasks_per_second() -> u64 {
    env_count("FAULTS_TASKS_PER_SECOND", 10)
}

/// How long every task may take to finish once the faults are over.
const DRAIN: Duration = Duration::from_secs(120);

/// `kill -9` one of `processes`, reaped and taken off the list.
fn sigkill(processes: &mut Vec<Child>, pid: u32) {
    let status = std::process::Command::new("kill").args(["-KILL", &pid.to_string()]).status().expect("kill runs");
    assert!(status.success(), "kill -KILL {pid}");
    let index = processes.iter().position(|c| c.id() == pid).expect("a process of this deployment");
    processes.remove(index).wait().expect("reaped");
}

/// Waits for a handler run newer than `after` by one of `pids`; returns its
/// id and pid (the process is then mid-step: each run takes 50 ms).
async fn fresh_run(d: &Deployment, after: i64, pids: &[u32], within: Duration) -> (i64, u32) {
    let deadline = Instant::now() + within;
    loop {
        if let Some((id, _, pid)) = d.latest_run().await {
            let pid = u32::try_from(pid).unwrap_or(0);
            if id > after && pids.contains(&pid) {
                return (id, pid);
            }
        }
        assert!(Instant::now() < deadline, "[{}] no handler ran for {within:?}: are the workers up?", d.name);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn finish(d: &mut Deployment, fault: &str, times: u64, last_fault: Instant) {
    let recover = d.drain(last_fault, DRAIN).await;
    d.stop_all();
    let audit = d.audit().await;
    report(fault, times, &audit, recover);
    audit.assert_exact(fault);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_killed_mid_step() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let cluster = Postgres::start();
    let mut d = Deployment::new("worker_kills", &cluster, Provider::Pgmq).await;
    d.spawn_orchestrator();
    d.spawn_worker();
    d.spawn_worker();
    let kills = env_count("FAULTS_WORKER_KILLS", 10);
    let mut last_run = 0;
    let mut last_fault = Instant::now();
    for _ in 0..kills {
        d.stream(tasks_per_second(), Duration::from_millis(700)).await;
        let pids: Vec<u32> = d.workers.iter().map(Child::id).collect();
        let (run, pid) = fresh_run(&d, last_run, &pids, Duration::from_secs(60)).await;
        sigkill(&mut d.workers, pid);
        last_fault = Instant::now();
        last_run = run;
        d.spawn_worker();
    }
    finish(&mut d, "worker SIGKILL mid-step", kills, last_fault).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orchestrator_killed() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let cluster = Postgres::start();
    let mut d = Deployment::new("orchestrator_kill", &cluster, Provider::Pgmq).await;
    let orchestrator = d.spawn_orchestrator();
    d.spawn_worker();
    d.spawn_worker();
    d.stream(tasks_per_second(), Duration::from_secs(3)).await;
    // The orchestrator dies, and with it a worker mid-step: the steps that
    // worker held wait for the sweep of the orchestrator started after.
    let pids: Vec<u32> = d.workers.iter().map(Child::id).collect();
    let (_, worker) = fresh_run(&d, 0, &pids, Duration::from_secs(60)).await;
    sigkill(&mut d.orchestrators, orchestrator);
    sigkill(&mut d.workers, worker);
    let last_fault = Instant::now();
    d.stream(tasks_per_second(), Duration::from_secs(2)).await;
    d.spawn_orchestrator();
    d.spawn_worker();
    d.stream(tasks_per_second(), Duration::from_secs(2)).await;
    finish(&mut d, "orchestrator SIGKILL (with a worker)", 1, last_fault).await;
}

async fn postgres_restart(mode: &'static str) {
    let _serial = ONE_AT_A_TIME.lock().await;
    let cluster = std::sync::Arc::new(Postgres::start());
    let mut d = Deployment::new(&format!("postgres_{mode}"), &cluster, Provider::Pgmq).await;
    d.spawn_orchestrator();
    d.spawn_worker();
    d.spawn_worker();
    d.stream(tasks_per_second(), Duration::from_secs(3)).await;
    let restart = {
        let cluster = cluster.clone();
        tokio::task::spawn_blocking(move || cluster.restart(mode))
    };
    d.stream(tasks_per_second(), Duration::from_secs(3)).await;
    restart.await.expect("pg_ctl restart");
    let last_fault = Instant::now();
    d.stream(tasks_per_second(), Duration::from_secs(1)).await;
    finish(&mut d, &format!("PostgreSQL restart -m {mode}"), 1, last_fault).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restarted_fast() {
    postgres_restart("fast").await;
}

/// A crash: no checkpoint, asynchronous commits (claims, sweeps) lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_crashed_and_restarted() {
    postgres_restart("immediate").await;
}

async fn rabbitmq_fault(name: &str, fault: &str, hurt: impl FnOnce(&Rabbit) + Send + 'static) {
    let _serial = ONE_AT_A_TIME.lock().await;
    let cluster = Postgres::start();
    let rabbit = std::sync::Arc::new(Rabbit::start());
    let mut d = Deployment::new(name, &cluster, Provider::RabbitMq(rabbit.url())).await;
    d.spawn_orchestrator();
    d.spawn_worker();
    d.spawn_worker();
    d.stream(tasks_per_second(), Duration::from_secs(3)).await;
    let hurting = {
        let rabbit = rabbit.clone();
        tokio::task::spawn_blocking(move || hurt(&rabbit))
    };
    d.stream(tasks_per_second(), Duration::from_secs(3)).await;
    hurting.await.expect("rabbitmqctl");
    let last_fault = Instant::now();
    d.stream(tasks_per_second(), Duration::from_secs(1)).await;
    finish(&mut d, fault, 1, last_fault).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_connections_closed() {
    rabbitmq_fault("rabbitmq_severed", "RabbitMQ connections closed", Rabbit::close_connections).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_restarted() {
    rabbitmq_fault("rabbitmq_restart", "RabbitMQ broker restart (2 s down)", |rabbit| {
        rabbit.restart(Duration::from_secs(2));
    })
    .await;
}

/// A worker "host" in a network namespace loses PostgreSQL mid-step for
/// three visibility timeouts, then gets it back. Its steps are taken over
/// meanwhile; the results it reports after healing are fenced: kept in the
/// history as late results, never applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_partitioned_from_postgres() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let netns = Netns::create();
    let cluster = Postgres::start_listening_on(&[&netns.host_ip], &[&netns.ns_ip]);
    let mut d = Deployment::new("partition", &cluster, Provider::Pgmq).await;
    d.spawn_orchestrator();
    d.spawn_worker();
    // Slow steps, so the cut lands while one runs.
    let partitioned = d.spawn_worker_in(Some(&netns), Duration::from_millis(1500));
    d.stream(tasks_per_second(), Duration::from_secs(3)).await;
    fresh_run(&d, 0, &[partitioned], Duration::from_secs(60)).await;
    netns.cut();
    let cut_for = Duration::from_secs(3 * u64::from(VISIBILITY_TIMEOUT_SECONDS));
    d.stream(tasks_per_second(), cut_for).await;
    netns.heal();
    let last_fault = Instant::now();
    d.stream(tasks_per_second(), Duration::from_secs(2)).await;
    let recover = d.drain(last_fault, DRAIN).await;
    // The partitioned worker's outcomes arrive once its connections come
    // back (TCP retransmits): give them a moment before stopping it.
    let deadline = Instant::now() + Duration::from_secs(30);
    while d.audit().await.late == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    d.stop_all();
    let audit = d.audit().await;
    report("worker partitioned from PostgreSQL mid-step (3 x visibility timeout)", 1, &audit, recover);
    audit.assert_exact("partition");
    assert!(audit.late >= 1, "the partitioned worker's result was recorded as late history: {audit:?}");
}

/// `GET http://127.0.0.1:<port><path>`: the status line and the body.
fn http_get(port: u16, path: &str) -> Option<(String, String)> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(15))).ok()?;
    write!(stream, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    Some((head.lines().next()?.to_owned(), body.to_owned()))
}

/// The samples of `metric` in a Prometheus text exposition: (labels, value).
fn samples(text: &str, metric: &str) -> Vec<(String, f64)> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (name, value) = line.rsplit_once(' ')?;
            let (bare, labels) = name.split_once('{').map_or((name, ""), |(n, l)| (n, l.trim_end_matches('}')));
            if bare != metric {
                return None;
            }
            Some((labels.to_owned(), value.parse().ok()?))
        })
        .collect()
}

/// How long PostgreSQL stays down.
const OUTAGE: Duration = Duration::from_secs(20);

/// At most this many attempts by one loop over one outage and its
/// recovery: with waits of at least 50, 100, 200, 400, 800, 1600, then 2500
/// ms (half of 100 ms doubling to 5 s), 15 attempts take more than 25 s.
const MAX_RETRIES_PER_LOOP: f64 = 15.0;

/// PostgreSQL stopped for 20 s while tasks stream in: every loop of every
/// process backs off instead of spinning, logs once when it loses the
/// database and once when it has it back, readiness fails meanwhile, the
/// suite's own `create_task` fails fast with `Unavailable` once its circuit
/// breaker is open, and everything resumes by itself: every task completes,
/// each step's result applied once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_down_for_20_seconds() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let cluster = std::sync::Arc::new(Postgres::start());
    let mut d = Deployment::new("postgres_outage", &cluster, Provider::Pgmq).await;
    let spawns: [fn(&mut Deployment) -> u32; 3] =
        [Deployment::spawn_orchestrator, Deployment::spawn_worker, Deployment::spawn_worker];
    let mut ports = Vec::new();
    for spawn in spawns {
        let port = free_port();
        d.env = vec![("TASKER_METRICS_PORT".to_owned(), port.to_string())];
        spawn(&mut d);
        ports.push(port);
    }
    d.env.clear();
    d.stream(tasks_per_second(), Duration::from_secs(3)).await;
    // Every process serves its endpoints and is ready before the outage.
    let deadline = Instant::now() + Duration::from_secs(60);
    for &port in &ports {
        while http_get(port, "/health/ready").map(|(status, _)| status) != Some("HTTP/1.1 200 OK".to_owned()) {
            assert!(Instant::now() < deadline, "[{}] the process on port {port} never became ready", d.name);
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let lines_before = d.log_lines();

    let stopping = cluster.clone();
    tokio::task::spawn_blocking(move || stopping.stop()).await.expect("pg_ctl stop");
    let down_at = Instant::now();
    let (mut unavailable, mut other_errors, mut slowest_unavailable) = (0, 0, Duration::ZERO);
    // Each process's readiness, halfway through the outage (each probe
    // waits up to 2 s for the database): beside the creations below.
    let probed: Vec<u16> = ports.clone();
    let readiness = tokio::spawn(async move {
        tokio::time::sleep(OUTAGE / 2).await;
        tokio::task::spawn_blocking(move || probed.iter().map(|&port| http_get(port, "/health/ready")).collect())
            .await
            .expect("readiness probes")
    });
    while down_at.elapsed() < OUTAGE {
        let started = Instant::now();
        match d.create_task().await {
            Ok(task) => panic!("task {task} created while PostgreSQL was down"),
            Err(e) if e.kind() == ErrorKind::Unavailable => {
                unavailable += 1;
                slowest_unavailable = slowest_unavailable.max(started.elapsed());
            }
            Err(e) => {
                eprintln!("[{}] before the breaker opened: {e}", d.name);
                other_errors += 1;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let readiness_during: Vec<Option<(String, String)>> = readiness.await.expect("readiness probes");
    let starting = cluster.clone();
    tokio::task::spawn_blocking(move || starting.start_again()).await.expect("pg_ctl start");
    let up_at = Instant::now();

    // The suite's own breaker closes by itself once its probe gets through.
    loop {
        match d.create_task().await {
            Ok(_) => break,
            Err(e) => {
                assert!(up_at.elapsed() < Duration::from_secs(10), "create_task still fails after restart: {e}")
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let closed_after = up_at.elapsed();
    d.stream(tasks_per_second(), Duration::from_secs(2)).await;
    let recover = d.drain(up_at, DRAIN).await;
    // Every process is ready again, by itself.
    let deadline = Instant::now() + Duration::from_secs(30);
    for &port in &ports {
        while http_get(port, "/health/ready").map(|(status, _)| status) != Some("HTTP/1.1 200 OK".to_owned()) {
            assert!(Instant::now() < deadline, "[{}] the process on port {port} is not ready again", d.name);
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let mut retries = Vec::new();
    for &port in &ports {
        let (_, text) = http_get(port, "/metrics").expect("/metrics answers");
        retries.push(samples(&text, "tasker_outage_retries_total"));
    }
    d.stop_all();
    let lines_after = d.log_lines();
    let logs = d.log_text();
    let audit = d.audit().await;
    report("PostgreSQL stopped for 20 s", 1, &audit, recover);
    let attempts: f64 = retries.iter().flatten().map(|(_, n)| n).sum();
    println!(
        "[{}] outage: {unavailable} creations refused at once (slowest {slowest_unavailable:?}), {other_errors} \
         failed before the breaker opened; breaker closed {closed_after:?} after the restart; {attempts} loop attempts \
         in all: {retries:?}; {} log lines during the outage and recovery",
        d.name,
        lines_after - lines_before
    );
    for line in logs.iter().filter(|(_, line)| line.contains("WARN") || line.contains("ERROR")) {
        println!("  {}: {}", line.0, line.1);
    }

    audit.assert_exact("PostgreSQL stopped for 20 s");
    // Callers failed fast while the breaker was open.
    // The first call meets the outage and waits for the pool (up to its
    // 10 s acquire timeout); every later one is refused at once.
    assert!(unavailable >= 50, "most creations were refused at once: {unavailable} of {}", unavailable + other_errors);
    assert!(other_errors <= 2, "at most the calls that met the outage first waited for it: {other_errors}");
    assert!(
        slowest_unavailable < Duration::from_millis(50),
        "an open breaker answers at once: {slowest_unavailable:?}"
    );
    // Readiness failed during the outage, in every process.
    for answer in &readiness_during {
        let (status, body) = answer.as_ref().expect("the operations endpoint answers during the outage");
        assert_eq!(status, "HTTP/1.1 503 Service Unavailable", "{body}");
        let health: serde_json::Value = serde_json::from_str(body).expect("health is JSON");
        assert_eq!(health["database"]["ok"], false, "{body}");
    }
    assert_eq!(readiness_during.len(), ports.len());
    // Every loop backed off: a bounded number of attempts each, and the
    // orchestrator's and the workers' loops did notice the outage.
    for (port, samples) in ports.iter().zip(&retries) {
        assert!(!samples.is_empty(), "process on port {port} reports tasker_outage_retries_total");
        for (labels, n) in samples {
            assert!(*n <= MAX_RETRIES_PER_LOOP, "port {port}: {labels} made {n} attempts in one outage");
        }
    }
    let noticed = |i: usize, name: &str| retries[i].iter().any(|(l, n)| l.contains(name) && *n >= 1.0);
    assert!(noticed(0, "\"sweeper\""), "the orchestrator's sweeper backed off: {:?}", retries[0]);
    assert!(noticed(1, "\"worker_dispatcher\"") && noticed(2, "\"worker_dispatcher\""), "{retries:?}");
    // Bounded logging: per process, a line per loop per state change (at
    // most 8 loops, 2 changes), 2 for its breaker and 2 for stopping, where
    // one line per attempt would have been hundreds.
    let lines = lines_after - lines_before;
    assert!(lines <= 3 * (8 * 2 + 2 + 2), "{lines} log lines during the outage and recovery");
    // Logged once per state change: each loop that lost the database says
    // so once and says once that it has it back.
    for file in logs.iter().map(|(f, _)| f).collect::<std::collections::BTreeSet<_>>() {
        let count = |what: &str| logs.iter().filter(|(f, l)| f == file && l.contains(what)).count();
        let (lost, resumed) = (count("lost a dependency"), count("resumed"));
        assert_eq!(lost, resumed, "{file}: each outage a loop logged ended once");
        assert!(lost <= 8, "{file}: one line per loop, not per attempt ({lost})");
        assert!(
            count("circuit breaker opened") <= 1 && count("circuit breaker closed") == count("circuit breaker opened")
        );
    }
}
