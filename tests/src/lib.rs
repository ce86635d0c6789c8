//! The fault suite's harness. Every server it hurts is its own: a
//! PostgreSQL cluster in a temporary folder on a free port, and a RabbitMQ
//! node of its own name and ports, so a developer's PostgreSQL and RabbitMQ
//! are never stopped, restarted or cut off. The processes are the real
//! ones: the `tasker-orchestrator` binary and Ruby workers run by
//! `rake tasker:worker`; the handler (`fixtures/boot.rb`) records every run
//! it starts, so duplicated runs are counted outside the engine.
//!
//! Run by `bin/test` (`cargo test --release -p tasker-faults`), as root on a
//! machine prepared by `bin/setup`. Counts scale with `FAULTS_WORKER_KILLS`
//! and `FAULTS_TASKS_PER_SECOND`.

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use tasker_core::{Config, Context, CreateTask, TaskerClient};
use uuid::Uuid;

/// The repository root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ is inside the repository").to_path_buf()
}

/// An environment variable as a number, else `default`.
pub fn env_count(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free local port").port()
}

fn is_root() -> bool {
    run_quiet(Command::new("id").arg("-u")).map(|out| out.trim() == "0").unwrap_or(false)
}

fn run_quiet(command: &mut Command) -> Result<String, String> {
    let out = command.output().map_err(|e| format!("{command:?}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{command:?} exited with {}: {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

fn run(command: &mut Command) -> String {
    run_quiet(command).unwrap_or_else(|e| panic!("{e}"))
}

/// A command run as `user` when this process is root (PostgreSQL refuses
/// to run as root; RabbitMQ's files belong to its user).
fn command_as(user: &str, program: &Path) -> Command {
    if is_root() {
        let mut command = Command::new("runuser");
        command.args(["-u", user, "--"]).arg(program);
        command
    } else {
        Command::new(program)
    }
}

fn chown(user: &str, dir: &Path) {
    if is_root() {
        run(Command::new("chown").args(["-R", user]).arg(dir));
    }
}

/// A PostgreSQL cluster of the suite's own (initdb in a temporary folder,
/// trust authentication, on a free port): its restarts and crashes touch
/// nobody else. Stopped and removed when dropped.
#[derive(Debug)]
pub struct Postgres {
    bin: PathBuf,
    dir: PathBuf,
    pub port: u16,
    listen: String,
}

impl Postgres {
    pub fn start() -> Self {
        Self::start_listening_on(&[], &[])
    }

    /// A cluster that also listens on `addresses` (a network namespace's
    /// host end) and trusts connections from `clients`.
    pub fn start_listening_on(addresses: &[&str], clients: &[&str]) -> Self {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .ok()
            .and_then(|dirs| {
                let mut found: Vec<PathBuf> =
                    dirs.flatten().map(|d| d.path().join("bin")).filter(|b| b.join("initdb").exists()).collect();
                found.sort_by_key(|b| b.parent().and_then(|v| v.file_name()?.to_str()?.parse::<u32>().ok()));
                found.pop()
            })
            .expect("no /usr/lib/postgresql/<major>/bin/initdb: install PostgreSQL (bin/setup does)");
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("tasker_faults_pg_{port}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temporary folder for the cluster");
        chown("postgres", &dir);
        let data = dir.join("data");
        run(command_as("postgres", &bin.join("initdb"))
            .args(["-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-instructions", "-D"])
            .arg(&data));
        let mut listen = vec!["127.0.0.1".to_owned()];
        listen.extend(addresses.iter().map(|a| (*a).to_owned()));
        let hba = data.join("pg_hba.conf");
        let mut rules = std::fs::read_to_string(&hba).expect("pg_hba.conf");
        for client in clients {
            rules.push_str(&format!("host all all {client}/32 trust\n"));
        }
        std::fs::write(&hba, rules).expect("pg_hba.conf");
        let cluster = Self { bin, dir, port, listen: listen.join(",") };
        cluster.pg_ctl(&["start"]);
        cluster
    }

    fn pg_ctl(&self, action: &[&str]) {
        let options = format!(
            "-p {} -k {} -c listen_addresses={} -c max_connections=200",
            self.port,
            self.dir.display(),
            self.listen
        );
        run(command_as("postgres", &self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(self.dir.join("data"))
            .arg("-l")
            .arg(self.dir.join("server.log"))
            .args(["-w", "-t", "60", "-o", &options])
            .args(action));
    }

    /// `pg_ctl restart -m fast` (clients disconnected, a checkpoint) or
    /// `-m immediate` (no checkpoint: a crash, recovered from the WAL).
    pub fn restart(&self, mode: &str) {
        self.pg_ctl(&["restart", "-m", mode]);
    }

    /// `pg_ctl stop -m fast`: clients disconnected, the server down until
    /// [`Postgres::start_again`].
    pub fn stop(&self) {
        self.pg_ctl(&["stop", "-m", "fast"]);
    }

    pub fn start_again(&self) {
        self.pg_ctl(&["start"]);
    }

    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    pub async fn create_database(&self, name: &str) -> String {
        let admin =
            sqlx::PgPool::connect(&self.url("postgres")).await.expect("the suite's cluster accepts connections");
        sqlx::query(&format!("CREATE DATABASE {name}")).execute(&admin).await.expect("create database");
        admin.close().await;
        self.url(name)
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ =
            run_quiet(command_as("postgres", &self.bin.join("pg_ctl")).arg("-D").arg(self.dir.join("data")).args([
                "-m",
                "immediate",
                "stop",
            ]));
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A RabbitMQ node of the suite's own (its own node name, ports, folders,
/// no plugins): closing its connections or restarting it leaves the
/// machine's broker alone. Stopped and removed when dropped.
#[derive(Debug)]
pub struct Rabbit {
    node: String,
    dir: PathBuf,
    pub port: u16,
}

impl Rabbit {
    pub fn start() -> Self {
        let server = Path::new("/usr/lib/rabbitmq/bin/rabbitmq-server");
        assert!(server.exists(), "no {}: install rabbitmq-server (bin/setup does)", server.display());
        let (port, dist_port) = (free_port(), free_port());
        let node = format!("tasker_faults_{port}@localhost");
        let dir = std::env::temp_dir().join(format!("tasker_faults_rabbit_{port}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("mnesia")).expect("temporary folder for the node");
        std::fs::create_dir_all(dir.join("log")).expect("temporary folder for the node");
        std::fs::write(dir.join("rabbitmq.conf"), format!("listeners.tcp.local = 127.0.0.1:{port}\n")).unwrap();
        std::fs::write(dir.join("enabled_plugins"), "[].\n").unwrap();
        std::fs::write(dir.join("rabbitmq-env.conf"), "").unwrap();
        chown("rabbitmq", &dir);
        let home = if is_root() { "/var/lib/rabbitmq".to_owned() } else { std::env::var("HOME").unwrap_or_default() };
        let mut command = command_as("rabbitmq", server);
        command
            .arg("-detached")
            .current_dir(&dir)
            .env("HOME", home)
            .env("RABBITMQ_NODENAME", &node)
            .env("RABBITMQ_NODE_PORT", port.to_string())
            .env("RABBITMQ_DIST_PORT", dist_port.to_string())
            .env("RABBITMQ_CONF_ENV_FILE", dir.join("rabbitmq-env.conf"))
            .env("RABBITMQ_CONFIG_FILE", dir.join("rabbitmq.conf"))
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", dir.join("enabled_plugins"))
            .env("RABBITMQ_MNESIA_BASE", dir.join("mnesia"))
            .env("RABBITMQ_LOG_BASE", dir.join("log"))
            .env("RABBITMQ_PID_FILE", dir.join("node.pid"))
            .env("ERL_EPMD_ADDRESS", "127.0.0.1")
            .env("ERL_FLAGS", "-kernel inet_dist_use_interface {127,0,0,1}");
        run(&mut command);
        let node = Self { node, dir, port };
        node.await_startup();
        node
    }

    /// A detached node registers with epmd a moment after it is started;
    /// until then `await_startup` fails at once, so it is asked again.
    fn await_startup(&self) {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            match run_quiet(Command::new("rabbitmqctl").args(["-n", &self.node, "await_startup", "--timeout", "60"])) {
                Ok(_) => return,
                Err(e) if Instant::now() > deadline => {
                    let log = std::fs::read_to_string(self.dir.join("log").join(format!("{}.log", self.node)));
                    panic!("RabbitMQ node {} did not start: {e}\nits log: {}", self.node, log.unwrap_or_default());
                }
                Err(_) => std::thread::sleep(Duration::from_millis(500)),
            }
        }
    }

    fn ctl(&self, args: &[&str]) -> String {
        run(Command::new("rabbitmqctl").args(["-n", &self.node]).args(args))
    }

    pub fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }

    /// Closes every client connection to this node, as a network blip or
    /// a broker failover would.
    pub fn close_connections(&self) {
        self.ctl(&["close_all_connections", "--global", "tasker fault suite: severing every connection"]);
    }

    /// Stops the broker application, stays down for `down`, starts it again.
    pub fn restart(&self, down: Duration) {
        self.ctl(&["stop_app"]);
        std::thread::sleep(down);
        self.ctl(&["start_app"]);
        self.await_startup();
    }
}

impl Drop for Rabbit {
    fn drop(&mut self) {
        let _ = run_quiet(Command::new("rabbitmqctl").args(["-n", &self.node, "stop"]));
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A worker "host" of its own: a network namespace joined to this one by a
/// veth pair (`10.231.<n>.2` inside, `10.231.<n>.1` here). Cutting the link
/// partitions it from everything here (PostgreSQL included) without
/// resetting its connections: packets are simply lost, as on a real
/// network, until the link is healed. Removed when dropped.
#[derive(Debug)]
pub struct Netns {
    name: String,
    host_if: String,
    pub host_ip: String,
    pub ns_ip: String,
}

impl Netns {
    pub fn create() -> Self {
        assert!(is_root(), "network namespaces need root: run the fault suite as root (bin/test does)");
        let n = free_port() % 250 + 1;
        let (name, host_if, ns_if) = (format!("tasker_faults_{n}"), format!("tfh{n}"), format!("tfn{n}"));
        let (host_ip, ns_ip) = (format!("10.231.{n}.1"), format!("10.231.{n}.2"));
        let _ = run_quiet(Command::new("ip").args(["netns", "del", &name]));
        let _ = run_quiet(Command::new("ip").args(["link", "del", &host_if]));
        run(Command::new("ip").args(["netns", "add", &name]));
        let ns = Self { name, host_if, host_ip, ns_ip };
        let name = ns.name.as_str();
        run(Command::new("ip").args(["link", "add", &ns.host_if, "type", "veth", "peer", "name", &ns_if]));
        run(Command::new("ip").args(["link", "set", &ns_if, "netns", name]));
        run(Command::new("ip").args(["addr", "add", &format!("{}/30", ns.host_ip), "dev", &ns.host_if]));
        run(Command::new("ip").args(["link", "set", &ns.host_if, "up"]));
        let ns_cidr = format!("{}/30", ns.ns_ip);
        for args in [
            ["addr", "add", ns_cidr.as_str(), "dev", ns_if.as_str()],
            ["link", "set", ns_if.as_str(), "up", ""],
            ["link", "set", "lo", "up", ""],
        ] {
            let args: Vec<&str> = args.into_iter().filter(|a| !a.is_empty()).collect();
            run(Command::new("ip").args(["netns", "exec", name, "ip"]).args(args));
        }
        ns
    }

    /// The link goes down: the namespace's packets are lost.
    pub fn cut(&self) {
        run(Command::new("ip").args(["link", "set", &self.host_if, "down"]));
    }

    pub fn heal(&self) {
        run(Command::new("ip").args(["link", "set", &self.host_if, "up"]));
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = run_quiet(Command::new("ip").args(["netns", "del", &self.name]));
        let _ = run_quiet(Command::new("ip").args(["link", "del", &self.host_if]));
    }
}

/// The messaging provider a deployment uses.
#[derive(Debug, Clone)]
pub enum Provider {
    Pgmq,
    RabbitMq(String),
}

/// One database with orchestrator and worker processes on it, and the
/// suite's own client to create tasks and read what happened.
pub struct Deployment {
    pub name: String,
    pub database_url: String,
    provider: Provider,
    pub ctx: Arc<Context>,
    pub client: TaskerClient,
    pub workers: Vec<Child>,
    pub orchestrators: Vec<Child>,
    logs: PathBuf,
    spawned: usize,
    pub tasks: Vec<Uuid>,
    next_shape: usize,
    /// Set on the processes spawned from now on.
    pub env: Vec<(String, String)>,
}

impl std::fmt::Debug for Deployment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deployment").field("name", &self.name).field("tasks", &self.tasks.len()).finish()
    }
}

/// Workers and orchestrators run with a 2 s visibility timeout, so a dead
/// claim is taken over within seconds.
pub const VISIBILITY_TIMEOUT_SECONDS: u32 = 2;

impl Deployment {
    /// A fresh database on `cluster`, migrated, with the suite's templates
    /// and the `fault_runs` table.
    pub async fn new(name: &str, cluster: &Postgres, provider: Provider) -> Self {
        let database_url = cluster.create_database(name).await;
        let mut explicit = json!({
            "database_url": database_url,
            "template_paths": [root().join("tests/fixtures/templates")],
            "messaging": {"visibility_timeout_seconds": VISIBILITY_TIMEOUT_SECONDS},
        });
        if let Provider::RabbitMq(url) = &provider {
            explicit["messaging"]["provider"] = json!("rabbitmq");
            explicit["messaging"]["rabbitmq_url"] = json!(url);
        }
        let config = Config::resolve(serde_json::Value::Null, explicit).expect("suite config is valid");
        let ctx = Context::connect(config).await.expect("the suite's own cluster and broker accept connections");
        ctx.migrate().await.expect("migrations run");
        ctx.register_templates().await.expect("the suite's templates register");
        sqlx::query(
            "CREATE TABLE fault_runs (id bigserial PRIMARY KEY, step_uuid uuid NOT NULL, pid integer NOT NULL, \
             created_at timestamptz NOT NULL DEFAULT clock_timestamp())",
        )
        .execute(ctx.pool())
        .await
        .expect("fault_runs table");
        let logs = root().join("target/faults").join(name);
        let _ = std::fs::remove_dir_all(&logs);
        std::fs::create_dir_all(&logs).expect("log folder");
        let client = TaskerClient::new(ctx.clone());
        Self {
            name: name.to_owned(),
            database_url,
            provider,
            ctx,
            client,
            workers: Vec::new(),
            orchestrators: Vec::new(),
            logs,
            spawned: 0,
            tasks: Vec::new(),
            next_shape: 0,
            env: Vec::new(),
        }
    }

    fn env(&self, command: &mut Command) {
        command
            .env("DATABASE_URL", &self.database_url)
            .env("TASKER_VISIBILITY_TIMEOUT_SECONDS", VISIBILITY_TIMEOUT_SECONDS.to_string())
            .env("TASKER_LOG", "tasker_core=warn")
            .env_remove("RABBITMQ_URL");
        match &self.provider {
            Provider::Pgmq => command.env("TASKER_MESSAGING_PROVIDER", "pgmq"),
            Provider::RabbitMq(url) => command.env("TASKER_MESSAGING_PROVIDER", "rabbitmq").env("RABBITMQ_URL", url),
        };
        command.envs(self.env.iter().map(|(k, v)| (k, v)));
    }

    /// Lines the processes of this deployment have logged so far.
    pub fn log_lines(&self) -> usize {
        std::fs::read_dir(&self.logs)
            .map(|files| {
                files.flatten().map(|f| std::fs::read_to_string(f.path()).map_or(0, |text| text.lines().count())).sum()
            })
            .unwrap_or(0)
    }

    /// The log lines of this deployment's processes, each with its file's name.
    pub fn log_text(&self) -> Vec<(String, String)> {
        let mut lines = Vec::new();
        for file in std::fs::read_dir(&self.logs).into_iter().flatten().flatten() {
            let name = file.file_name().to_string_lossy().into_owned();
            for line in std::fs::read_to_string(file.path()).unwrap_or_default().lines() {
                lines.push((name.clone(), line.to_owned()));
            }
        }
        lines
    }

    fn log(&mut self, what: &str) -> (Stdio, Stdio) {
        self.spawned += 1;
        let path = self.logs.join(format!("{}-{what}.log", self.spawned));
        let file = std::fs::File::create(&path).expect("log file");
        (Stdio::from(file.try_clone().expect("log file")), Stdio::from(file))
    }

    /// A Ruby worker process: `rake tasker:worker`, 4 threads.
    pub fn spawn_worker(&mut self) -> u32 {
        self.spawn_worker_in(None, Duration::from_millis(50))
    }

    /// A worker inside `netns` (reaching PostgreSQL at the namespace's
    /// host end), whose handler takes `step` to run.
    pub fn spawn_worker_in(&mut self, netns: Option<&Netns>, step: Duration) -> u32 {
        let root = root();
        let (out, err) = self.log("worker");
        let mut command = match netns {
            Some(ns) => {
                let mut command = Command::new("ip");
                command.args(["netns", "exec", &ns.name, "rake"]);
                command
            }
            None => Command::new("rake"),
        };
        command
            .args(["-f"])
            .arg(root.join("Rakefile"))
            .args(["tasker:worker", "NAMESPACES=faults", "CONCURRENCY=4"])
            .env("RUBYLIB", root.join("lib"))
            .env("TASKER_BOOT", root.join("tests/fixtures/boot.rb"))
            .env("FAULTS_STEP_SECONDS", step.as_secs_f64().to_string())
            .stdout(out)
            .stderr(err);
        self.env(&mut command);
        if let Some(ns) = netns {
            let url = self.database_url.replace("127.0.0.1", &ns.host_ip);
            command.env("DATABASE_URL", url);
        }
        let child = command.spawn().expect("rake runs (bin/setup installs it)");
        let pid = child.id();
        self.workers.push(child);
        pid
    }

    /// The `tasker-orchestrator` binary (built by bin/setup).
    pub fn spawn_orchestrator(&mut self) -> u32 {
        let binary = root().join("target/release/tasker-orchestrator");
        assert!(binary.exists(), "{} is not built: run bin/setup (cargo build --release)", binary.display());
        let (out, err) = self.log("orchestrator");
        let mut command = Command::new(binary);
        command.stdout(out).stderr(err);
        self.env(&mut command);
        let child = command.spawn().expect("tasker-orchestrator starts");
        let pid = child.id();
        self.orchestrators.push(child);
        pid
    }

    /// Creates one task, alternating linear and diamond, `n = 2`.
    pub async fn create_task(&mut self) -> tasker_core::Result<Uuid> {
        let shape = ["linear", "diamond"][self.next_shape % 2];
        let request = CreateTask::new("faults", shape, "1.0.0", json!({"n": 2}));
        let task = self.client.create_task(&request).await?.task_uuid;
        self.next_shape += 1;
        self.tasks.push(task);
        Ok(task)
    }

    /// Creates tasks at `per_second` for `duration`, retrying a creation
    /// that fails while a fault is on (the database is restarting, say).
    pub async fn stream(&mut self, per_second: u64, duration: Duration) {
        let every = Duration::from_secs_f64(1.0 / per_second.max(1) as f64);
        let until = Instant::now() + duration;
        while Instant::now() < until {
            let started = Instant::now();
            if let Err(e) = self.create_task().await {
                eprintln!("[{}] creating a task failed (a fault is on?): {e}", self.name);
            }
            tokio::time::sleep(every.saturating_sub(started.elapsed())).await;
        }
    }

    /// The latest handler run (id, step, pid), for timing kills mid-step.
    pub async fn latest_run(&self) -> Option<(i64, Uuid, i32)> {
        sqlx::query_as("SELECT id, step_uuid, pid FROM fault_runs ORDER BY id DESC LIMIT 1")
            .fetch_optional(self.ctx.pool())
            .await
            .ok()
            .flatten()
    }

    /// Waits until every task created is complete, or `within` passes;
    /// returns when the last one finished, measured from `since`.
    pub async fn drain(&self, since: Instant, within: Duration) -> Duration {
        let deadline = Instant::now() + within;
        loop {
            let open: Result<i64, _> = sqlx::query_scalar(
                "SELECT count(*) FROM tasker_tasks WHERE task_uuid = ANY ($1) AND status <> 'complete'",
            )
            .bind(&self.tasks)
            .fetch_one(self.ctx.pool())
            .await;
            if matches!(open, Ok(0)) || Instant::now() > deadline {
                return since.elapsed();
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Stops every process (SIGTERM, then SIGKILL after 20 s).
    pub fn stop_all(&mut self) {
        for mut child in self.workers.drain(..).chain(self.orchestrators.drain(..)) {
            let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
            let deadline = Instant::now() + Duration::from_secs(20);
            while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// What the run left: checked by the caller, reported in the table.
    pub async fn audit(&self) -> Audit {
        let pool = self.ctx.pool();
        let statuses: Vec<(String, i64)> = sqlx::query_as(
            "SELECT status, count(*) FROM tasker_tasks WHERE task_uuid = ANY ($1) GROUP BY status ORDER BY status",
        )
        .bind(&self.tasks)
        .fetch_all(pool)
        .await
        .unwrap();
        let results: Vec<(String, String, String, i64)> = sqlx::query_as(
            "SELECT name, status, coalesce(results::text, 'null'), count(*) FROM tasker_workflow_steps \
             WHERE task_uuid = ANY ($1) GROUP BY 1, 2, 3 ORDER BY 1, 2, 3",
        )
        .bind(&self.tasks)
        .fetch_all(pool)
        .await
        .unwrap();
        let (steps, applied_twice, never_applied): (i64, i64, i64) = sqlx::query_as(
            "SELECT count(*), count(*) FILTER (WHERE applied > 1), count(*) FILTER (WHERE applied = 0) FROM ( \
               SELECT s.step_uuid, (SELECT count(*) FROM tasker_workflow_step_transitions t \
                                     WHERE t.step_uuid = s.step_uuid AND t.to_state = 'complete' \
                                       AND NOT t.metadata ? 'late_result') AS applied \
                 FROM tasker_workflow_steps s WHERE s.task_uuid = ANY ($1)) per_step",
        )
        .bind(&self.tasks)
        .fetch_one(pool)
        .await
        .unwrap();
        let (runs, steps_run): (i64, i64) = sqlx::query_as(
            "SELECT count(*), count(DISTINCT r.step_uuid) FROM fault_runs r \
               JOIN tasker_workflow_steps s ON s.step_uuid = r.step_uuid WHERE s.task_uuid = ANY ($1)",
        )
        .bind(&self.tasks)
        .fetch_one(pool)
        .await
        .unwrap();
        let late: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM tasker_workflow_step_transitions t JOIN tasker_workflow_steps s USING (step_uuid) \
              WHERE s.task_uuid = ANY ($1) AND t.metadata ? 'late_result'",
        )
        .bind(&self.tasks)
        .fetch_one(pool)
        .await
        .unwrap_or(0);
        Audit {
            tasks: self.tasks.len() as i64,
            statuses: statuses.into_iter().collect(),
            results: results.into_iter().map(|(name, status, result, n)| ((name, status, result), n)).collect(),
            steps,
            applied_twice,
            never_applied,
            runs,
            steps_run,
            late,
        }
    }
}

impl Drop for Deployment {
    fn drop(&mut self) {
        self.stop_all();
    }
}

/// What a run left in the database.
#[derive(Debug)]
pub struct Audit {
    pub tasks: i64,
    /// Task status → count.
    pub statuses: BTreeMap<String, i64>,
    /// (step name, status, result) → count.
    pub results: BTreeMap<(String, String, String), i64>,
    pub steps: i64,
    /// Steps whose history has more than one, or no, applied result.
    pub applied_twice: i64,
    pub never_applied: i64,
    /// Handler runs recorded by the handler, and the steps they ran.
    pub runs: i64,
    pub steps_run: i64,
    /// Outcomes that arrived after their claim was taken over: kept in the
    /// history, not applied.
    pub late: i64,
}

impl Audit {
    pub fn lost(&self) -> i64 {
        self.tasks - self.statuses.get("complete").copied().unwrap_or(0)
    }

    /// Handler runs beyond one per step.
    pub fn duplicated_runs(&self) -> i64 {
        self.runs - self.steps_run
    }

    /// The exact end state: every task complete, every step complete once
    /// with its exact result (linear and diamond with n = 2), every step's
    /// handler run at least once.
    pub fn assert_exact(&self, fault: &str) {
        let half = |n: i64| (n + 1) / 2;
        let (linear, diamond) = (half(self.tasks), self.tasks / 2);
        let expected: BTreeMap<(String, String, String), i64> = [
            ("finish", "65536", diamond),
            ("left", "16", diamond),
            ("right", "16", diamond),
            ("start", "4", diamond),
            ("step_four", "65536", linear),
            ("step_one", "4", linear),
            ("step_three", "256", linear),
            ("step_two", "16", linear),
        ]
        .into_iter()
        .filter(|(_, _, n)| *n > 0)
        .map(|(name, result, n)| ((name.to_owned(), "complete".to_owned(), result.to_owned()), n))
        .collect();
        assert_eq!(self.lost(), 0, "{fault}: tasks lost: {:?}", self.statuses);
        assert_eq!(self.results, expected, "{fault}: step states and results");
        assert_eq!((self.applied_twice, self.never_applied), (0, 0), "{fault}: each step's result applied once");
        assert_eq!(self.steps_run, self.steps, "{fault}: every step's handler ran");
    }
}

/// One line of the table the suite prints (and appends to
/// `target/faults/table.md`).
pub fn report(fault: &str, times: u64, audit: &Audit, recover: Duration) {
    let line = format!(
        "| {fault} | {times} | {} | {} | {} | {} | {} | {} | {:.1} s |",
        audit.tasks,
        audit.steps,
        audit.duplicated_runs(),
        audit.late,
        audit.applied_twice,
        audit.lost(),
        recover.as_secs_f64()
    );
    println!("{line}");
    let table = root().join("target/faults/table.md");
    let _ = std::fs::create_dir_all(table.parent().unwrap());
    let mut text = std::fs::read_to_string(&table).unwrap_or_default();
    text.push_str(&line);
    text.push('\n');
    let _ = std::fs::write(&table, text);
}
