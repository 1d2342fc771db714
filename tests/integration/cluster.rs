//! The cluster as operators run it: real `omnihost` processes on loopback (controller, worker hosts, API
//! server), killed with SIGKILL and restarted; the controller's routes with and without the admin token.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::{self, MODEL, bin};

/// A port free a moment ago, for what must be told its port before it starts (a PostgreSQL server, an address
/// nobody listens on). omnihost processes are started on port 0 instead and report the port they bound.
pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A running `omnihost` process, killed when dropped.
pub(crate) struct Proc {
    pub(crate) child: Child,
    pub(crate) url: String,
    port: u16,
    args: Vec<String>,
    log: PathBuf,
    /// The network namespace it runs in (fault tests), or the test's own.
    netns: Option<String>,
}

impl Proc {
    fn spawn(dir: &Path, name: &str, port: u16, args: &[&str]) -> Proc {
        Proc::spawn_in(dir, name, None, "127.0.0.1", port, args)
    }

    /// Starts `omnihost ARGS --listen HOST:PORT`, inside `netns` when given (then with `ip netns exec`). With port 0
    /// the process binds a free port itself, which [`Proc::ready`] reads from its log: no other process can take
    /// the port between choosing and binding it.
    pub(crate) fn spawn_in(dir: &Path, name: &str, netns: Option<&str>, host: &str, port: u16, args: &[&str]) -> Proc {
        let log = dir.join(format!("{name}.log"));
        let mut all: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        all.extend(["--listen".to_string(), format!("{host}:{port}")]);
        let mut cmd = match netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(bin());
                c
            }
            None => Command::new(bin()),
        };
        let child = cmd
            .args(&all)
            .env_remove("OMNIHOST_ADMIN_TOKEN")
            .env("RUST_LOG", "info,wasmtime=warn,cranelift=warn")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Proc { child, url: format!("http://{host}:{port}"), port, args: all, log, netns: netns.map(str::to_string) }
    }

    pub(crate) async fn ready(mut self) -> Proc {
        let client = common::client();
        let started = Instant::now();
        loop {
            if self.port == 0 {
                self.learn_port();
            }
            if self.port != 0
                && let Ok(r) = client.get(format!("{}/health/ready", self.url)).send().await
                && r.status().is_success()
            {
                return self;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("omnihost {:?} exited with {status}:\n{}", self.args, std::fs::read_to_string(&self.log).unwrap_or_default());
            }
            assert!(started.elapsed() < Duration::from_secs(300), "{:?} never became ready", self.args);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The address the process logged it listens on, once it has.
    fn learn_port(&mut self) {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let Some(addr) = log.split("listening on http://").nth(1).and_then(|rest| rest.split_whitespace().next()) else { return };
        if let Some(port) = addr.rsplit_once(':').and_then(|(_, p)| p.parse().ok()) {
            self.port = port;
            self.url = format!("http://{addr}");
        }
    }

    /// SIGKILL (`ip netns exec` execs the program, so the pid is omnihost's own).
    pub(crate) fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts the same command again (same address, same files).
    pub(crate) fn restart(&mut self, dir: &Path, name: &str) -> Proc {
        self.kill();
        let args: Vec<&str> = self.args.iter().map(String::as_str).take(self.args.len() - 2).collect();
        let host = self.url.trim_start_matches("http://").rsplit_once(':').map_or("127.0.0.1", |(h, _)| h).to_string();
        Proc::spawn_in(dir, name, self.netns.as_deref(), &host, self.port, &args)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

pub(crate) fn scratch(name: &str) -> PathBuf {
    let dir = common::root().join("target/omnihost-test-cache/cluster").join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A worker host config: the MiniLM embedder, fast heartbeats, its own started-models file.
fn worker_config(dir: &Path, name: &str) -> PathBuf {
    let text = common::config_text(
        "",
        &format!(
            "[cluster]\nheartbeat_interval_ms = 250\nlookup_cache_ms = 200\nstate_file = \"{}\"\n",
            dir.join(format!("{name}-models.json")).display()
        ),
    );
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

fn controller_config(dir: &Path, store: &str) -> PathBuf {
    let text = format!(
        "[server]\ndata_dir = \"{}\"\n[registry]\nstore = \"{store}\"\nsweep_interval_ms = 250\nheartbeat_timeout_ms = 1000\n",
        dir.display()
    );
    let path = dir.join(format!("controller-{store}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

async fn instances(controller: &str, key: &str) -> Vec<Value> {
    let r = common::client().get(format!("{controller}/api/controller/models")).query(&[("model_name", key)]).send().await.unwrap();
    assert_eq!(r.status(), 200);
    r.json::<Vec<Value>>().await.unwrap()
}

async fn healthy_ports(controller: &str, key: &str) -> Vec<u64> {
    let mut ports: Vec<u64> =
        instances(controller, key).await.iter().filter(|i| i["healthy"] == true).map(|i| i["port"].as_u64().unwrap()).collect();
    ports.sort();
    ports
}

pub(crate) async fn wait_for(what: &str, limit: Duration, mut check: impl AsyncFnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !check().await {
        assert!(started.elapsed() < limit, "{what} did not happen within {limit:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_worker_turns_unhealthy_requests_go_to_the_other_and_nothing_is_lost_on_restarts() {
    let dir = scratch("workers");
    let client = common::client();
    let cconf = controller_config(&dir, "sqlite");
    let mut controller = Proc::spawn(&dir, "controller", 0, &["controller", "--config", cconf.to_str().unwrap()]).ready().await;
    let curl = controller.url.clone();
    let w1conf = worker_config(&dir, "w1");
    let w2conf = worker_config(&dir, "w2");
    let worker = |conf: &PathBuf, name: &str| {
        Proc::spawn(&dir, name, 0, &["worker", "--config", conf.to_str().unwrap(), "--controller", &curl])
    };
    let (w1, w2) = (worker(&w1conf, "w1"), worker(&w2conf, "w2"));
    let (mut w1, mut w2) = (w1.ready().await, w2.ready().await);
    let (w1port, w2port) = (w1.port, w2.port);
    let api = Proc::spawn(&dir, "api", 0, &["api", "--config", cconf.to_str().unwrap(), "--controller", &curl]).ready().await;
    let key = format!("{MODEL}@text2vec");
    let both = {
        let mut p = vec![u64::from(w1port), u64::from(w2port)];
        p.sort();
        p
    };
    assert_eq!(healthy_ports(&curl, &key).await, both, "both workers registered");
    let reference = common::embed(&client, &api.url, &["A man is eating food."]).await;

    // Kill -9 one worker: requests keep succeeding through the other, and it turns unhealthy in time.
    w1.kill();
    for _ in 0..10 {
        let v = common::embed(&client, &api.url, &["A man is eating food."]).await;
        assert!(common::dot(&v[0], &reference[0]) > 0.9999);
    }
    let took = wait_for("the killed worker turning unhealthy", Duration::from_millis(1000 + 250 + 1500), async || {
        healthy_ports(&curl, &key).await == vec![u64::from(w2port)]
    })
    .await;
    eprintln!("killed worker marked unhealthy after {took:?}");
    let (status, _) = common::embed_raw(&client, &api.url, json!({"model": MODEL, "input": "still here"})).await;
    assert_eq!(status, 200);

    // Restart it: healthy again.
    let restarted = w1.restart(&dir, "w1b").ready().await;
    wait_for("the restarted worker being healthy", Duration::from_secs(5), async || healthy_ports(&curl, &key).await == both).await;

    // Start a second model at run time on worker 2 with the model CLI, then restart worker 2: it comes back.
    let out = Command::new(bin())
        .args(["model", "start", "minilm-copy", "--worker-type", "text2vec", "--plugin", "embed-minilm", "--worker", &w2.url])
        .args(["--controller", &curl, "--param", "max_batch=8"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let again = Command::new(bin())
        .args(["model", "start", "minilm-copy", "--plugin", "embed-minilm", "--worker", &w2.url, "--controller", &curl])
        .output()
        .unwrap();
    assert!(!again.status.success(), "starting a running model twice is an error");
    assert!(String::from_utf8_lossy(&again.stderr).contains("already running"), "{}", String::from_utf8_lossy(&again.stderr));
    let w2 = w2.restart(&dir, "w2b").ready().await;
    let (status, body) = common::embed_raw(&client, &api.url, json!({"model": "minilm-copy", "input": "hello"})).await;
    assert_eq!(status, 200, "the model started at run time is served again after its host restarted: {body}");

    // Restart the controller on its SQLite file: nothing registered is lost, even before any heartbeat.
    controller.kill();
    let controller = controller.restart(&dir, "controller-b").ready().await;
    let listed = instances(&curl, &key).await;
    assert_eq!(listed.len(), 2, "registered instances survive a controller restart: {listed:?}");
    assert_eq!(instances(&curl, "minilm-copy@text2vec").await.len(), 1);

    // The model CLI lists them in a table.
    let out = Command::new(bin()).args(["model", "list", "--controller", &curl]).output().unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && table.contains("HEALTHY") && table.contains("minilm-copy") && table.contains(&w2port.to_string()), "{table}");

    // Stopping the copy through the CLI takes it out of service.
    let out = Command::new(bin()).args(["model", "stop", "minilm-copy", "--controller", &curl]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let (status, body) = common::embed_raw(&client, &api.url, json!({"model": "minilm-copy", "input": "hello"})).await;
    assert!(status == 503 || status == 404, "{status} {body}");
    drop((restarted, w2, api, controller));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_every_instance_is_gone_the_api_says_which_model_has_none_left() {
    let dir = scratch("none-left");
    let client = common::client();
    let cconf = controller_config(&dir, "memory");
    let controller = Proc::spawn(&dir, "controller", 0, &["controller", "--config", cconf.to_str().unwrap()]).ready().await;
    let api = Proc::spawn(&dir, "api", 0, &["api", "--config", cconf.to_str().unwrap(), "--controller", &controller.url])
        .ready()
        .await;
    // An instance that registered and then went away (nothing listens on its port).
    let body = json!({"model_name": "ghost@text2vec", "host": "127.0.0.1", "port": free_port()});
    let r = client.post(format!("{}/api/controller/models", controller.url)).json(&body).send().await.unwrap();
    assert_eq!(r.json::<Value>().await.unwrap(), json!(true));
    let (status, body) = common::embed_raw(&client, &api.url, json!({"model": "ghost", "input": "x"})).await;
    assert_eq!(status, 503, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("ghost"), "{body}");
    let (status, _) = common::embed_raw(&client, &api.url, json!({"model": "never-registered", "input": "x"})).await;
    assert_eq!(status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_controllers_on_one_postgres_sweep_one_at_a_time_and_the_survivor_takes_over() {
    let dir = scratch("leaders");
    let db = crate::registry::postgres_database().await;
    let url = db.url.clone();
    let cconf = controller_config(&dir, "postgres");
    let spawn = |name: &str| {
        Proc::spawn(&dir, name, 0, &["controller", "--config", cconf.to_str().unwrap(), "--registry-url", &url])
    };
    let (a, b) = (spawn("a").ready().await, spawn("b").ready().await);
    let client = common::client();
    let leader = async |p: &Proc| -> bool {
        let r: Value = client.get(format!("{}/health/ready", p.url)).send().await.unwrap().json().await.unwrap();
        r["sweeper"]["leader"] == true
    };
    tokio::time::sleep(Duration::from_millis(600)).await;
    for _ in 0..10 {
        let (la, lb) = (leader(&a).await, leader(&b).await);
        assert!(la ^ lb, "exactly one controller sweeps (a: {la}, b: {lb})");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (mut dead, survivor) = if leader(&a).await { (a, b) } else { (b, a) };
    dead.kill();
    let took = wait_for("the other controller taking over", Duration::from_millis(250 + 1000), async || leader(&survivor).await).await;
    eprintln!("the surviving controller led after {took:?}");
    // And it really sweeps: an instance that stops heartbeating turns unhealthy.
    let body = json!({"model_name": "m@llm", "host": "10.9.9.9", "port": 1});
    client.post(format!("{}/api/controller/models", survivor.url)).json(&body).send().await.unwrap();
    wait_for("the survivor sweeping", Duration::from_millis(1000 + 250 + 1000), async || {
        instances(&survivor.url, "m@llm").await.first().is_some_and(|i| i["healthy"] == false)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controller_and_worker_routes_check_the_token_and_the_bodies() {
    let server = common::start_with(&common::config_text("admin_token = \"s3cret\"", "")).await;
    let url = server.url();
    let client = common::client();
    let instance = json!({"model_name": "m@text2vec", "host": "10.0.0.1", "port": 8000});
    for route in ["/api/controller/models", "/api/controller/heartbeat"] {
        let r = client.post(format!("{url}{route}")).json(&instance).send().await.unwrap();
        assert_eq!(r.status(), 401, "{route} without a token");
        let r = client.post(format!("{url}{route}")).bearer_auth("wrong").json(&instance).send().await.unwrap();
        assert_eq!(r.status(), 401, "{route} with a wrong token");
        let r = client.post(format!("{url}{route}")).bearer_auth("s3cret").json(&instance).send().await.unwrap();
        assert_eq!(r.status(), 200, "{route} with the token");
        assert_eq!(r.json::<Value>().await.unwrap(), json!(true));
    }
    for (method, route) in [("GET", "/api/controller/models"), ("GET", "/api/health"), ("POST", "/api/worker/apply"), ("GET", "/api/worker/models/supports")] {
        let r = client.request(method.parse().unwrap(), format!("{url}{route}")).send().await.unwrap();
        assert_eq!(r.status(), 401, "{method} {route} without a token");
    }
    let r = client.get(format!("{url}/api/health")).bearer_auth("s3cret").send().await.unwrap();
    assert_eq!(r.json::<Value>().await.unwrap(), json!({"status": "ok"}));
    let listed: Vec<Value> = client
        .get(format!("{url}/api/controller/models?model_name=m@text2vec&healthy_only=true"))
        .bearer_auth("s3cret")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["model_name"], "m@text2vec");
    let keys: Vec<&str> = listed[0].as_object().unwrap().keys().map(String::as_str).collect();
    for field in ["host", "port", "weight", "check_healthy", "healthy", "enabled", "prompt_template", "last_heartbeat"] {
        assert!(keys.contains(&field), "DB-GPT's field {field} is in {keys:?}");
    }
    assert!(omnihost::time::parse_rfc3339_ms(listed[0]["last_heartbeat"].as_str().unwrap()).is_some());

    let bad = [
        (json!({"host": "h", "port": 1}), 422, "model_name"),
        (json!({"model_name": "m@llm", "port": 1}), 422, "host"),
        (json!({"model_name": "m@llm", "host": "h"}), 422, "port"),
        (json!({"model_name": "a@b@llm", "host": "h", "port": 1}), 400, "model_name"),
        (json!({"model_name": "m@llm", "host": "h", "port": 70000}), 400, "port"),
        (json!({"model_name": "m@llm", "host": "  ", "port": 1}), 400, "host"),
        (json!({"model_name": "m@gpu", "host": "h", "port": 1}), 400, "model_name"),
    ];
    for (body, status, field) in bad {
        let r = client.post(format!("{url}/api/controller/models")).bearer_auth("s3cret").json(&body).send().await.unwrap();
        assert_eq!(r.status().as_u16(), status, "{body}");
        let answer: Value = r.json().await.unwrap();
        assert_eq!(answer["error"]["param"], field, "{body} -> {answer}");
    }
    let r = client.post(format!("{url}/api/controller/models")).bearer_auth("s3cret").body("{not json").send().await.unwrap();
    assert_eq!(r.status(), 400);
    let r = client
        .delete(format!("{url}/api/controller/models?model_name=m@text2vec&host=10.0.0.1&port=8000&remove_from_registry=true"))
        .bearer_auth("s3cret")
        .send()
        .await
        .unwrap();
    assert_eq!(r.json::<Value>().await.unwrap(), json!(true));
    server.stop().await.unwrap();
}

#[tokio::test]
async fn without_a_token_the_process_refuses_to_listen_beyond_loopback() {
    let out = Command::new(bin())
        .args(["controller", "--listen", "0.0.0.0:0", "--config", "/dev/null"])
        .env_remove("OMNIHOST_ADMIN_TOKEN")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("admin token") && stderr.contains("loopback"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_server_routes_chat_to_the_worker_host_that_serves_the_llm() {
    let dir = scratch("chat");
    let client = common::client();
    let cconf = controller_config(&dir, "sqlite");
    let controller = Proc::spawn(&dir, "controller", 0, &["controller", "--config", cconf.to_str().unwrap()]).ready().await;
    let curl = controller.url.clone();
    let scripted = format!(
        "[[plugins]]\nname = \"scripted\"\ncomponent = \"{}\"\nconfig = {{ deltas = '[\"Hello\", \" world.\"]' }}\n\n\
         [[models]]\nname = \"scripted-en\"\nworker_type = \"llm\"\nplugin = \"scripted\"\n\n\
         [cluster]\nheartbeat_interval_ms = 250\nlookup_cache_ms = 200\nstate_file = \"{}\"\n",
        common::component("scripted_llm.wasm").display(),
        dir.join("w-models.json").display()
    );
    let wconf = dir.join("worker.toml");
    std::fs::write(&wconf, common::config_text("", &scripted)).unwrap();
    let worker =
        Proc::spawn(&dir, "worker", 0, &["worker", "--config", wconf.to_str().unwrap(), "--controller", &curl]).ready().await;
    let wport = worker.port;
    let api = Proc::spawn(&dir, "api", 0, &["api", "--config", cconf.to_str().unwrap(), "--controller", &curl]).ready().await;
    wait_for("the LLM registering", Duration::from_secs(5), async || healthy_ports(&curl, "scripted-en@llm").await == vec![u64::from(wport)]).await;

    // `model list` shows the LLM worker.
    let out = Command::new(bin()).args(["model", "list", "--controller", &curl]).output().unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.lines().any(|l| l.contains("scripted-en") && l.contains("llm")), "{table}");

    // Not streamed, then streamed, through the API server.
    let body = json!({"model": "scripted-en", "messages": [{"role": "user", "content": "hi"}]});
    let whole: Value = client.post(format!("{}/v1/chat/completions", api.url)).json(&body).send().await.unwrap().json().await.unwrap();
    assert_eq!(whole["choices"][0]["message"]["content"], "Hello world.", "{whole}");
    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    let response = client.post(format!("{}/v1/chat/completions", api.url)).json(&streamed).send().await.unwrap();
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let events = crate::generation::sse_events(response, None).await;
    let text: String = events.iter().filter_map(|e| e["choices"][0]["delta"]["content"].as_str()).collect();
    assert_eq!(text, "Hello world.");
    assert_eq!(events.last(), Some(&Value::Null), "[DONE] arrives through the API server");
    // A bad parameter is the worker's 400, passed through.
    let mut bad = body.clone();
    bad["temperature"] = json!(5);
    let response = client.post(format!("{}/v1/chat/completions", api.url)).json(&bad).send().await.unwrap();
    assert_eq!(response.status(), 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_controller_starts_from_an_empty_folder_and_sigterm_lets_a_stream_finish_then_deregisters() {
    let dir = scratch("sigterm");
    let empty = dir.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    // `serve` without a config, away from a checkout, says what it needs in one line and no backtrace.
    let mut serve = tokio::process::Command::new(bin());
    serve.arg("serve").current_dir(&empty).env_remove("OMNIHOST_CONFIG").env("RUST_BACKTRACE", "1").kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(60), serve.output()).await.expect("`serve` without a config exits").unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.starts_with("error: no config file") && stderr.contains("--config"), "{stderr}");
    assert!(!stderr.contains("backtrace"), "{stderr}");

    // The controller needs no config at all: defaults, with its registry under ./.omnihost of an empty folder.
    let mut controller = Command::new(bin());
    controller
        .args(["controller", "--listen", "127.0.0.1:0"])
        .current_dir(&empty)
        .env_remove("OMNIHOST_CONFIG")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("controller.log")).unwrap());
    let controller = Proc { child: controller.spawn().unwrap(), url: String::new(), port: 0, args: vec![], log: dir.join("controller.log"), netns: None }
        .ready()
        .await;
    assert!(empty.join(".omnihost").is_dir(), "the controller keeps its registry under the folder it runs in");

    // A worker host serving a slow scripted LLM: 20 deltas, 100 ms apart.
    let deltas: Vec<String> = (0..20).map(|i| format!("\"w{i} \"")).collect();
    let scripted = crate::pipelines::scripted(&[("slow", &format!("[{}]", deltas.join(",")), 100)]);
    let wconf = dir.join("worker.toml");
    std::fs::write(&wconf, common::config_text("shutdown_grace_ms = 20000", &scripted)).unwrap();
    let mut worker = Proc::spawn(&dir, "worker", 0, &["worker", "--config", wconf.to_str().unwrap(), "--controller", &controller.url]).ready().await;
    let wport = worker.port;
    wait_for("the LLM registering", Duration::from_secs(10), async || healthy_ports(&controller.url, "slow@llm").await == vec![u64::from(wport)]).await;

    // SIGTERM once the stream has started: the stream still ends whole, new connections are refused meanwhile,
    // the process exits 0 and its instance is down in the controller at once (not after a heartbeat timeout).
    let client = common::client();
    let body = json!({"model": "slow", "messages": [{"role": "user", "content": "go"}], "stream": true});
    let mut response = client.post(format!("{}/v1/chat/completions", worker.url)).json(&body).send().await.unwrap();
    let first = response.chunk().await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&first).starts_with("data: "));
    let status = Command::new("kill").args(["-TERM", &worker.child.id().to_string()]).status().unwrap();
    assert!(status.success());
    // Meanwhile, a new client is turned away (polled, for at most the stream's own length).
    let probe = {
        let url = format!("{}/health/live", worker.url);
        tokio::spawn(async move {
            let client = common::client();
            for _ in 0..40 {
                if client.get(&url).send().await.is_err() {
                    return true;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            false
        })
    };
    let mut rest = first.to_vec();
    while let Some(chunk) = response.chunk().await.unwrap() {
        rest.extend_from_slice(&chunk);
    }
    let text = String::from_utf8_lossy(&rest);
    assert!(text.contains("w19 ") && text.trim_end().ends_with("data: [DONE]"), "the stream was cut: {text}");
    assert!(probe.await.unwrap(), "new connections were still accepted during the shutdown");
    // Polled, so a worker that never exits fails the test (and is killed on drop) instead of hanging it.
    let mut status = None;
    wait_for("the worker exiting", Duration::from_secs(30), async || {
        status = worker.child.try_wait().unwrap();
        status.is_some()
    })
    .await;
    assert!(status.is_some_and(|s| s.success()), "the worker did not exit 0 after SIGTERM: {status:?}");
    // Deregistered (kept, marked down) by the worker itself: the controller's sweeper would take 15 s.
    wait_for("the worker deregistering", Duration::from_secs(3), async || healthy_ports(&controller.url, "slow@llm").await.is_empty()).await;
}
