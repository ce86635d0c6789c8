//! Real processes under faults: Ruby workers (`rake tasker:worker`) and
//! `tasker-orchestrator` binaries run a steady stream of linear and diamond
//! tasks while workers are killed mid-step, the orchestrator is killed, and
//! the suite's own PostgreSQL and RabbitMQ are restarted or cut off. After
//! each: every task complete, every step's result applied exactly once and
//! exact, duplicated handler runs counted. One fault at a time (the tests
//! take a lock), each on a cluster and database of its own.

use std::process::Child;
use std::time::{Duration, Instant};

use tasker_faults::{env_count, report, Deployment, Netns, Postgres, Provider, Rabbit, VISIBILITY_TIMEOUT_SECONDS};

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
