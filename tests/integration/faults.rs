//! The fault suite. Real hosts: a controller on PostgreSQL, two worker hosts and an API server, each in a
//! network namespace of its own joined by a bridge (iproute2), while clients keep sending requests; and
//! plugins that answer wrongly, trap or sleep past their deadline. For each fault: only the requests it touched
//! may fail, with a clear error; nothing registered is lost; the hosts keep serving. Each test prints a table of
//! faults, requests sent, requests failed, and the time to notice and to recover.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::cluster::{Proc, free_port, scratch, wait_for};
use crate::common::{self, MODEL};

const TOKEN: &str = "fault-suite-token";

/// A bridge in the test's namespace and one namespace per host, joined to it by a veth pair. Removed on drop.
struct Net {
    tag: String,
    subnet: String,
    hosts: Vec<&'static str>,
}

impl Net {
    fn ip(args: &[&str]) -> Result<(), String> {
        let out = Command::new("ip").args(args).stdin(Stdio::null()).output().map_err(|e| format!("ip: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!("ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()))
        }
    }

    /// Builds the network, or says why it cannot be built here (no iproute2, no CAP_NET_ADMIN).
    fn new(hosts: &[&'static str]) -> Result<Net, String> {
        let pid = std::process::id();
        let net = Net { tag: format!("oh{:x}", pid & 0xfffff), subnet: format!("10.231.{}", pid % 250), hosts: Vec::new() };
        let bridge = net.bridge();
        Net::ip(&["link", "add", &bridge, "type", "bridge"])?;
        let mut net = net;
        Net::ip(&["addr", "add", &format!("{}.1/24", net.subnet), "dev", &bridge])?;
        Net::ip(&["link", "set", &bridge, "up"])?;
        for (i, host) in hosts.iter().enumerate() {
            let ns = net.ns(host);
            Net::ip(&["netns", "add", &ns])?;
            net.hosts.push(host);
            let (outer, inner) = (net.outer(host), format!("{}{host}n", net.tag));
            Net::ip(&["link", "add", &outer, "type", "veth", "peer", "name", &inner, "netns", &ns])?;
            Net::ip(&["link", "set", &outer, "master", &bridge, "up"])?;
            Net::ip(&["-n", &ns, "addr", "add", &format!("{}.{}/24", net.subnet, 10 + i), "dev", &inner])?;
            Net::ip(&["-n", &ns, "link", "set", &inner, "up"])?;
            Net::ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        }
        Ok(net)
    }

    fn bridge(&self) -> String {
        format!("{}br", self.tag)
    }

    fn ns(&self, host: &str) -> String {
        format!("{}-{host}", self.tag)
    }

    /// The veth end on the bridge's side: taking it down cuts the host off.
    fn outer(&self, host: &str) -> String {
        format!("{}{host}r", self.tag)
    }

    fn addr(&self, host: &str) -> String {
        let i = self.hosts.iter().position(|h| *h == host).unwrap();
        format!("{}.{}", self.subnet, 10 + i)
    }

    fn gateway(&self) -> String {
        format!("{}.1", self.subnet)
    }

    fn link(&self, host: &str, up: bool) {
        Net::ip(&["link", "set", &self.outer(host), if up { "up" } else { "down" }]).unwrap();
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for host in &self.hosts {
            let _ = Net::ip(&["netns", "del", &self.ns(host)]);
            let _ = Net::ip(&["link", "del", &self.outer(host)]);
        }
        let _ = Net::ip(&["link", "del", &self.bridge()]);
    }
}

/// A PostgreSQL server of this test's own (the suite restarts it), listening on the bridge. Stopped on drop.
struct Postgres {
    bin: PathBuf,
    data: PathBuf,
    port: u16,
    listen: String,
    as_postgres_user: bool,
}

impl Postgres {
    /// Initialises a cluster under the system's temporary folder (the `postgres` user must reach it, which a
    /// checkout under a private home may not allow) and starts it.
    fn start(listen: &str) -> Result<Postgres, String> {
        let dir = std::env::temp_dir().join(format!("omnihost-faults-pg-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .map_err(|e| format!("/usr/lib/postgresql: {e}"))?
            .flatten()
            .map(|e| e.path().join("bin"))
            .filter(|p| p.join("initdb").is_file())
            .max()
            .ok_or("no initdb under /usr/lib/postgresql")?;
        let as_postgres_user = Command::new("id").arg("-u").output().is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
        let data = dir;
        std::fs::create_dir_all(&data).map_err(|e| e.to_string())?;
        if as_postgres_user {
            Command::new("chown").args(["-R", "postgres:postgres"]).arg(&data).status().map_err(|e| e.to_string())?;
        }
        let pg = Postgres { bin, data, port: free_port(), listen: listen.to_string(), as_postgres_user };
        pg.run("initdb", &["-U", "omnihost", "--auth=trust", "--no-sync", "-E", "UTF8", "-D", &pg.db()])?;
        // initdb trusts loopback only; the controllers connect from their namespaces on the bridge.
        let hba = std::path::Path::new(&pg.db()).join("pg_hba.conf");
        let mut rules = std::fs::read_to_string(&hba).map_err(|e| format!("{}: {e}", hba.display()))?;
        rules.push_str(&format!("host all all {listen}/24 trust\n"));
        std::fs::write(&hba, rules).map_err(|e| format!("{}: {e}", hba.display()))?;
        pg.ctl("start")?;
        Ok(pg)
    }

    fn db(&self) -> String {
        self.data.join("db").display().to_string()
    }

    fn run(&self, program: &str, args: &[&str]) -> Result<(), String> {
        let path = self.bin.join(program);
        let mut cmd = if self.as_postgres_user {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(path);
            c
        } else {
            Command::new(path)
        };
        let out = cmd.args(args).stdin(Stdio::null()).output().map_err(|e| format!("{program}: {e}"))?;
        if out.status.success() { Ok(()) } else { Err(format!("{program}: {}", String::from_utf8_lossy(&out.stderr))) }
    }

    fn ctl(&self, action: &str) -> Result<(), String> {
        let options = format!("-p {} -k {} -c listen_addresses={} -c max_connections=200", self.port, self.data.display(), self.listen);
        let log = self.data.join("log").display().to_string();
        self.run("pg_ctl", &["-w", "-t", "60", "-D", &self.db(), "-l", &log, "-m", "fast", "-o", &options, action])
    }

    fn url(&self) -> String {
        format!("postgres://omnihost@{}:{}/postgres", self.listen, self.port)
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = self.run("pg_ctl", &["-D", &self.db(), "-m", "immediate", "stop"]);
        let _ = std::fs::remove_dir_all(&self.data);
    }
}

/// Clients sending embedding requests in a loop until stopped; a failure is kept with its status and body.
struct Load {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    failures: Arc<std::sync::Mutex<Vec<(u16, String)>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(url: &str, model: &str, clients: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let failures = Arc::new(std::sync::Mutex::new(Vec::new()));
        let tasks = (0..clients)
            .map(|c| {
                let (url, model, stop, sent, failures) = (url.to_string(), model.to_string(), stop.clone(), sent.clone(), failures.clone());
                tokio::spawn(async move {
                    let client = common::client();
                    // Bounded: a load that is never stopped ends by itself after ten minutes.
                    let until = Instant::now() + Duration::from_secs(600);
                    let mut i = 0u64;
                    while !stop.load(Ordering::Relaxed) && Instant::now() < until {
                        i += 1;
                        let body = json!({"model": model, "input": format!("client {c} sentence {i}")});
                        let answer = client.post(format!("{url}/v1/embeddings")).json(&body).send().await;
                        sent.fetch_add(1, Ordering::Relaxed);
                        let failure = match answer {
                            Ok(r) if r.status().is_success() => None,
                            Ok(r) => Some((r.status().as_u16(), r.text().await.unwrap_or_default())),
                            Err(e) => Some((0, e.to_string())),
                        };
                        if let Some(f) = failure {
                            failures.lock().unwrap().push(f);
                        }
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                })
            })
            .collect();
        Load { stop, sent, failures, tasks }
    }

    /// Waits until `n` more requests have been sent (the load is running, or has run through the fault).
    async fn more(&self, n: u64) {
        let target = self.sent.load(Ordering::Relaxed) + n;
        wait_for("the clients sending requests", Duration::from_secs(60), async || self.sent.load(Ordering::Relaxed) >= target).await;
    }

    async fn finish(self) -> (u64, Vec<(u16, String)>) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.await.unwrap();
        }
        let failures = self.failures.lock().unwrap().clone();
        (self.sent.load(Ordering::Relaxed), failures)
    }
}

/// One line of the suite's table.
struct Row {
    fault: String,
    sent: u64,
    failed: usize,
    noticed: Option<Duration>,
    recovered: Option<Duration>,
}

fn print_table(title: &str, rows: &[Row]) {
    let ms = |d: Option<Duration>| d.map_or("-".to_string(), |d| format!("{} ms", d.as_millis()));
    eprintln!("\n{title}");
    eprintln!("{:<48} {:>9} {:>7} {:>10} {:>10}", "fault", "requests", "failed", "noticed", "recovered");
    for r in rows {
        eprintln!("{:<48} {:>9} {:>7} {:>10} {:>10}", r.fault, r.sent, r.failed, ms(r.noticed), ms(r.recovered));
    }
}

async fn healthy(controller: &str, key: &str) -> Vec<String> {
    let Ok(r) = common::client()
        .get(format!("{controller}/api/controller/models"))
        .query(&[("model_name", key)])
        .bearer_auth(TOKEN)
        .timeout(Duration::from_secs(2))
        .send()
        .await
    else {
        return vec!["(controller unreachable)".into()];
    };
    let Ok(list) = r.json::<Vec<Value>>().await else { return vec!["(no answer)".into()] };
    let mut hosts: Vec<String> = list.iter().filter(|i| i["healthy"] == true).map(|i| i["host"].as_str().unwrap_or_default().to_string()).collect();
    hosts.sort();
    hosts
}

async fn count_instances(controller: &str) -> Option<(usize, usize)> {
    let r = common::client().get(format!("{controller}/api/controller/models")).bearer_auth(TOKEN).timeout(Duration::from_secs(2)).send().await.ok()?;
    let list: Vec<Value> = r.json().await.ok()?;
    Some((list.len(), list.iter().filter(|i| i["healthy"] == true).count()))
}

async fn leads(controller: &str) -> bool {
    let Ok(r) = common::client().get(format!("{controller}/health/ready")).timeout(Duration::from_secs(2)).send().await else { return false };
    r.json::<Value>().await.is_ok_and(|v| v["sweeper"]["leader"] == true)
}

/// Asserts a fault's failures are few and each one a clear OpenAI-shaped error, never a dropped connection.
fn check_failures(fault: &str, failures: &[(u16, String)], allowed: usize) {
    assert!(failures.len() <= allowed, "{fault}: {} requests failed (at most {allowed} may): {failures:?}", failures.len());
    for (status, body) in failures {
        let parsed: Value = serde_json::from_str(body).unwrap_or(Value::Null);
        assert!(*status >= 400 && parsed["error"]["message"].is_string(), "{fault}: a failure without a clear error: {status} {body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_cut_off_killed_and_a_restarted_database_lose_no_instance_and_fail_no_request() {
    let net = match Net::new(&["c", "w1", "w2", "a"]) {
        Ok(net) => net,
        Err(why) => {
            eprintln!("SKIPPED: the fault suite needs network namespaces (root, iproute2): {why}");
            return;
        }
    };
    let dir = scratch("faults");
    let pg = Postgres::start(&net.gateway()).expect("a PostgreSQL server of the suite's own");
    let client = common::client();
    let key = format!("{MODEL}@text2vec");
    let port = 8000;
    let controller_url = format!("http://{}:{port}", net.addr("c"));

    let cconf = dir.join("controller.toml");
    let controller_text = format!(
        "[server]\ndata_dir = \"{}\"\n[registry]\nstore = \"postgres\"\nsweep_interval_ms = 250\nheartbeat_timeout_ms = 1500\n",
        dir.display()
    );
    std::fs::write(&cconf, controller_text).unwrap();
    let worker_conf = |name: &str| {
        let extra = format!(
            "[cluster]\nheartbeat_interval_ms = 250\nstate_file = \"{}\"\n",
            dir.join(format!("{name}-models.json")).display()
        );
        let path = dir.join(format!("{name}.toml"));
        std::fs::write(&path, common::config_text("", &extra)).unwrap();
        path
    };
    let aconf = dir.join("api.toml");
    std::fs::write(&aconf, format!("[server]\ndata_dir = \"{}\"\n[cluster]\nlookup_cache_ms = 200\nforward_timeout_ms = 3000\n", dir.display())).unwrap();

    let spawn = |host: &'static str, args: Vec<String>| {
        let mut all = args;
        all.extend(["--admin-token".to_string(), TOKEN.to_string()]);
        let args: Vec<&str> = all.iter().map(String::as_str).collect();
        Proc::spawn_in(&dir, host, Some(&net.ns(host)), &net.addr(host), port, &args)
    };
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    let cpath = cconf.display().to_string();
    let mut controller = spawn("c", s(&["controller", "--config", &cpath, "--registry-url", &pg.url()])).ready().await;
    let (w1conf, w2conf) = (worker_conf("w1").display().to_string(), worker_conf("w2").display().to_string());
    let w1 = spawn("w1", s(&["worker", "--config", &w1conf, "--controller", &controller_url]));
    let w2 = spawn("w2", s(&["worker", "--config", &w2conf, "--controller", &controller_url]));
    let (w1, mut w2) = (w1.ready().await, w2.ready().await);
    let api = spawn("a", s(&["api", "--config", &aconf.display().to_string(), "--controller", &controller_url])).ready().await;
    let both = {
        let mut v = vec![net.addr("w1"), net.addr("w2")];
        v.sort();
        v
    };
    wait_for("both workers registering", Duration::from_secs(20), async || healthy(&controller_url, &key).await == both).await;
    let reference = common::embed(&client, &api.url, &["A man is eating food."]).await;
    let notice_limit = Duration::from_millis(1500 + 250 + 1500);
    let mut rows = Vec::new();

    // 1. A worker host cut off the network while clients send requests.
    let load = Load::start(&api.url, MODEL, 2);
    load.more(10).await;
    net.link("w1", false);
    let noticed = wait_for("the cut-off worker turning unhealthy", notice_limit, async || {
        healthy(&controller_url, &key).await == vec![net.addr("w2")]
    })
    .await;
    load.more(20).await;
    net.link("w1", true);
    let recovered = wait_for("the worker healthy again once its link is back", Duration::from_secs(10), async || {
        healthy(&controller_url, &key).await == both
    })
    .await;
    let (sent, failures) = load.finish().await;
    check_failures("worker cut off", &failures, 0);
    rows.push(Row { fault: "worker host cut off the network".into(), sent, failed: failures.len(), noticed: Some(noticed), recovered: Some(recovered) });

    // 2. A worker host killed with SIGKILL, then started again.
    let load = Load::start(&api.url, MODEL, 2);
    load.more(10).await;
    w2.kill();
    let noticed = wait_for("the killed worker turning unhealthy", notice_limit, async || {
        healthy(&controller_url, &key).await == vec![net.addr("w1")]
    })
    .await;
    let started = Instant::now();
    let w2b = w2.restart(&dir, "w2b").ready().await;
    wait_for("the restarted worker healthy", Duration::from_secs(10), async || healthy(&controller_url, &key).await == both).await;
    let recovered = started.elapsed();
    let (sent, failures) = load.finish().await;
    check_failures("worker killed", &failures, 0);
    rows.push(Row { fault: "worker host killed (SIGKILL) and restarted".into(), sent, failed: failures.len(), noticed: Some(noticed), recovered: Some(recovered) });

    // 3. The controller killed: the API server keeps routing with what it knows; the registry loses nothing.
    let before = count_instances(&controller_url).await.unwrap();
    let load = Load::start(&api.url, MODEL, 2);
    load.more(10).await;
    controller.kill();
    // Served while no controller runs: past the API server's lookup cache, so from its last lookup.
    load.more(40).await;
    let started = Instant::now();
    let controller2 = controller.restart(&dir, "c2").ready().await;
    wait_for("both workers healthy in the restarted controller", Duration::from_secs(10), async || {
        healthy(&controller_url, &key).await == both
    })
    .await;
    let recovered = started.elapsed();
    let (sent, failures) = load.finish().await;
    check_failures("controller killed", &failures, 0);
    let after = count_instances(&controller_url).await.unwrap();
    assert_eq!(after.0, before.0, "the restarted controller lost instances: {before:?} -> {after:?}");
    rows.push(Row { fault: "controller killed (SIGKILL) and restarted".into(), sent, failed: failures.len(), noticed: None, recovered: Some(recovered) });

    // 4. PostgreSQL restarted under heartbeat load (300 more instances heartbeating every 250 ms).
    let stop = Arc::new(AtomicBool::new(false));
    let beats = {
        let (url, stop) = (controller_url.clone(), stop.clone());
        tokio::spawn(async move {
            let client = common::client();
            let until = Instant::now() + Duration::from_secs(300);
            while !stop.load(Ordering::Relaxed) && Instant::now() < until {
                let round = (0..300).map(|i| {
                    let body = json!({"model_name": format!("beat{}@text2vec", i % 30), "host": format!("10.77.{}.1", i / 30), "port": 9000 + i});
                    client.post(format!("{url}/api/controller/heartbeat")).bearer_auth(TOKEN).json(&body).timeout(Duration::from_secs(5)).send()
                });
                futures::future::join_all(round).await;
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        })
    };
    wait_for("the synthetic instances registering", Duration::from_secs(20), async || {
        count_instances(&controller_url).await.is_some_and(|(all, _)| all >= before.0 + 300)
    })
    .await;
    let registered = count_instances(&controller_url).await.unwrap().0;
    let load = Load::start(&api.url, MODEL, 2);
    load.more(10).await;
    let started = Instant::now();
    pg.ctl("restart").expect("PostgreSQL restarts");
    wait_for("every instance healthy and the sweeper led again", Duration::from_secs(30), async || {
        count_instances(&controller_url).await.is_some_and(|(all, healthy)| all == registered && healthy == registered)
            && leads(&controller_url).await
    })
    .await;
    let recovered = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    beats.await.unwrap();
    let (sent, failures) = load.finish().await;
    check_failures("database restarted", &failures, 0);
    rows.push(Row { fault: "PostgreSQL restarted under heartbeat load".into(), sent, failed: failures.len(), noticed: None, recovered: Some(recovered) });

    // After all of it the answers are still the model's.
    let again = common::embed(&client, &api.url, &["A man is eating food."]).await;
    assert!(common::dot(&again[0], &reference[0]) > 0.9999);
    print_table("fault suite: hosts in network namespaces (controller on PostgreSQL, 2 workers, API server)", &rows);
    drop((api, w1, w2b, controller2));
    drop(pg);
    drop(net);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_answering_wrongly_trapping_or_sleeping_fails_only_its_own_requests() {
    let faulty = common::faulty_model("faulty", "timeout_ms = 1000, memory_mib = 64", "max_batch = 4");
    let server = common::start(&faulty).await;
    let url = server.url();
    let client = common::client();
    let load = Load::start(&url, MODEL, 2);
    let mut rows = Vec::new();
    let faults = [
        ("too-many", "plugin_bad_output", "results for"),
        ("too-few", "plugin_bad_output", "results for"),
        ("wrong-size", "plugin_bad_output", "dimensions"),
        ("nan", "plugin_bad_output", "finite"),
        ("huge", "plugin_bad_output", "dimensions"),
        ("bad-utf8", "plugin_trap", "faulty"),
        ("trap", "plugin_trap", "trapped"),
        ("sleep", "plugin_timeout", "time limit"),
    ];
    for (text, code, says) in faults {
        let started = Instant::now();
        // Three at once: each fails alone, with its own clear error.
        let answers = futures::future::join_all((0..3).map(|_| common::embed_raw(&client, &url, json!({"model": "faulty", "input": text})))).await;
        for (status, body) in &answers {
            assert!(*status >= 500, "{text}: {status} {body}");
            assert_eq!(body["error"]["code"], code, "{text}: {body}");
            let message = body["error"]["message"].as_str().unwrap();
            assert!(message.contains(says), "{text}: {message}");
        }
        // The same model serves a good request right after.
        let (status, body) = common::embed_raw(&client, &url, json!({"model": "faulty", "input": "fine"})).await;
        assert_eq!((status, &body["data"][0]["embedding"]), (200, &json!([4.0])), "{text}: {body}");
        rows.push(Row { fault: format!("plugin: `{text}` -> {code}"), sent: 4, failed: 3, noticed: Some(started.elapsed()), recovered: None });
    }
    let (sent, failures) = load.finish().await;
    check_failures("the healthy model beside the faulty plugin", &failures, 0);
    rows.push(Row { fault: format!("{MODEL} served meanwhile"), sent, failed: failures.len(), noticed: None, recovered: None });
    print_table("fault suite: plugins (3 bad requests per fault, then a good one)", &rows);
    server.stop().await.unwrap();
}
