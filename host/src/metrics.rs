//! Prometheus metrics: one process-wide recorder (the `metrics` facade), what each layer counts, and the text
//! `GET /metrics` answers with.
//!
//! Counted where it happens (HTTP requests, plugin calls, batches, tokens, streams, heartbeats); read at scrape
//! time from the state that already keeps it (registry instances by health, the sweeper's passes and
//! leadership, pipeline stages, the process itself). Names follow Prometheus conventions: `omnihost_` prefix,
//! base units (`_seconds`, `_bytes`), `_total` on counters.

use std::sync::OnceLock;
use std::time::Duration;

use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Latency buckets, seconds: 100 µs (a plugin hop) to a minute (a long generation).
const SECONDS: &[f64] = &[0.0001, 0.0005, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];
/// Batch sizes, texts per plugin call.
const SIZES: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0];

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the recorder once per process (several in-process servers share it); `None` when another
/// recorder was installed first by the program embedding omnihost.
pub fn install() -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS)
                .and_then(|b| b.set_buckets_for_metric(Matcher::Full("omnihost_batch_size".into()), SIZES));
            let recorder = match builder {
                Ok(b) => b.build_recorder(),
                Err(e) => {
                    tracing::warn!(error = %e, "metrics buckets rejected; histograms become summaries");
                    PrometheusBuilder::new().build_recorder()
                }
            };
            let handle = recorder.handle();
            match metrics::set_global_recorder(recorder) {
                Ok(()) => {
                    describe();
                    Some(handle)
                }
                Err(_) => {
                    tracing::warn!("another metrics recorder is installed; GET /metrics shows only omnihost's own gauges");
                    None
                }
            }
        })
        .as_ref()
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_counter!("omnihost_http_requests_total", "HTTP requests answered, by route, method and status code");
    describe_histogram!("omnihost_http_request_duration_seconds", "Time to the response's head, by route and method");
    describe_counter!("omnihost_model_requests_total", "Requests a served model took, by model, operation and outcome (ok or the error)");
    describe_histogram!("omnihost_batch_size", "Texts per embedding plugin call");
    describe_histogram!("omnihost_model_queue_seconds", "Time a request waited for its batch to start");
    describe_histogram!("omnihost_model_compute_seconds", "Time a batch's plugin call took (tokenising, ONNX Runtime, pooling)");
    describe_counter!("omnihost_tokens_total", "Tokens in (prompts, embedded texts) and out (generated), by model");
    describe_gauge!("omnihost_streams_running", "Generations in progress, by model");
    describe_counter!("omnihost_plugin_calls_total", "Plugin calls by plugin, version and outcome (ok, trap, timeout, memory_limit, out_of_fuel)");
    describe_histogram!("omnihost_plugin_call_duration_seconds", "Plugin call latency by plugin and version");
    describe_counter!("omnihost_plugin_fuel_used_total", "Fuel plugin calls used, when fuel metering is on");
    describe_counter!("omnihost_registry_heartbeats_total", "Heartbeats the controller accepted");
}

/// An HTTP request answered.
pub fn http_request(route: &str, method: &str, status: u16, elapsed: Duration) {
    let (route, method) = (route.to_string(), method.to_string());
    counter!("omnihost_http_requests_total", "route" => route.clone(), "method" => method.clone(), "status" => status.to_string())
        .increment(1);
    histogram!("omnihost_http_request_duration_seconds", "route" => route, "method" => method).record(elapsed.as_secs_f64());
}

/// A request a served model took, and how it ended (`ok`, or the error's kind).
pub fn model_request(model: &str, operation: &'static str, outcome: &'static str) {
    counter!("omnihost_model_requests_total", "model" => model.to_string(), "operation" => operation, "outcome" => outcome)
        .increment(1);
}


/// One embedding batch: its size, how long its oldest request waited and how long the plugin call took.
pub fn batch(model: &str, texts: usize, queued: Duration, computing: Duration) {
    let model = model.to_string();
    histogram!("omnihost_batch_size", "model" => model.clone()).record(texts as f64);
    histogram!("omnihost_model_queue_seconds", "model" => model.clone()).record(queued.as_secs_f64());
    histogram!("omnihost_model_compute_seconds", "model" => model).record(computing.as_secs_f64());
}

pub fn tokens(model: &str, direction: &'static str, n: u64) {
    counter!("omnihost_tokens_total", "model" => model.to_string(), "direction" => direction).increment(n);
}

/// A generation started (+1) or ended (-1).
pub fn streams(model: &str, delta: f64) {
    gauge!("omnihost_streams_running", "model" => model.to_string()).increment(delta);
}

/// One call into a plugin.
pub fn plugin_call(plugin: &str, version: &str, outcome: &'static str, elapsed: Duration, fuel: Option<u64>) {
    let (plugin, version) = (plugin.to_string(), version.to_string());
    counter!("omnihost_plugin_calls_total", "plugin" => plugin.clone(), "version" => version.clone(), "outcome" => outcome)
        .increment(1);
    histogram!("omnihost_plugin_call_duration_seconds", "plugin" => plugin.clone(), "version" => version.clone())
        .record(elapsed.as_secs_f64());
    if let Some(fuel) = fuel {
        counter!("omnihost_plugin_fuel_used_total", "plugin" => plugin, "version" => version).increment(fuel);
    }
}

pub fn heartbeats(n: u64) {
    counter!("omnihost_registry_heartbeats_total").increment(n);
}

/// Gauges read at scrape time, appended to the recorder's text.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Registry instances by health (healthy, unhealthy), when this process keeps a registry.
    pub instances: Option<(u64, u64)>,
    /// The sweeper's passes, instances marked unhealthy and evicted, and whether it leads.
    pub sweeper: Option<(u64, u64, u64, bool)>,
    pub stages: Vec<StageSample>,
    /// Each local model's embedding requests waiting in its queue and batches its plugin is computing, read at
    /// scrape time: a gauge set on events would go stale while the batcher waits for a free slot.
    pub queues: Vec<(String, usize, usize)>,
}

/// A pipeline stage's counters since the pipeline loaded.
#[derive(Debug)]
pub struct StageSample {
    pub pipeline: String,
    pub stage_id: u32,
    pub runs: u64,
    pub failures: u64,
    pub processor_seconds: f64,
    pub engine_seconds: f64,
}

/// A Prometheus label value: backslashes and quotes escaped.
fn escape(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"")
}

/// The whole `/metrics` text: the recorder's metrics, then the scrape-time gauges and the process's own.
pub fn render(snapshot: &Snapshot) -> String {
    use std::fmt::Write as _;
    let mut out = install().map(PrometheusHandle::render).unwrap_or_default();
    let mut metric = |name: &str, kind: &str, help: &str, samples: &[(String, f64)]| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (labels, value) in samples {
            let _ = writeln!(out, "{name}{labels} {value}");
        }
    };
    metric("omnihost_build_info", "gauge", "The omnihost build running", &[(format!("{{version=\"{}\"}}", env!("CARGO_PKG_VERSION")), 1.0)]);
    if let Some((healthy, unhealthy)) = snapshot.instances {
        let samples = [("{health=\"healthy\"}".to_string(), healthy as f64), ("{health=\"unhealthy\"}".to_string(), unhealthy as f64)];
        metric("omnihost_registry_instances", "gauge", "Registered model instances by health", &samples);
    }
    if let Some((passes, marked, evicted, leader)) = snapshot.sweeper {
        metric("omnihost_registry_sweeps_total", "counter", "Health sweeps this controller ran as leader", &[(String::new(), passes as f64)]);
        metric("omnihost_registry_marked_unhealthy_total", "counter", "Instances the sweeper marked unhealthy", &[(String::new(), marked as f64)]);
        metric("omnihost_registry_evicted_total", "counter", "Instances the sweeper removed", &[(String::new(), evicted as f64)]);
        metric("omnihost_registry_sweeper_leader", "gauge", "1 while this controller leads the sweeping", &[(String::new(), f64::from(u8::from(leader)))]);
    }
    if !snapshot.queues.is_empty() {
        let label = |model: &str| format!("{{model=\"{}\"}}", escape(model));
        let depth: Vec<(String, f64)> = snapshot.queues.iter().map(|(m, depth, _)| (label(m), *depth as f64)).collect();
        metric("omnihost_model_queue_depth", "gauge", "Embedding requests waiting in a model's queue", &depth);
        let running: Vec<(String, f64)> = snapshot.queues.iter().map(|(m, _, running)| (label(m), *running as f64)).collect();
        metric("omnihost_model_batches_running", "gauge", "Embedding batches a model's plugin is computing", &running);
    }
    if !snapshot.stages.is_empty() {
        let label = |s: &StageSample| {
            format!("{{pipeline=\"{}\",stage=\"{}\"}}", escape(&s.pipeline), s.stage_id)
        };
        let pick = |f: fn(&StageSample) -> f64| -> Vec<(String, f64)> { snapshot.stages.iter().map(|s| (label(s), f(s))).collect() };
        metric("omnihost_pipeline_stage_runs_total", "counter", "Processor and engine runs of a pipeline stage", &pick(|s| s.runs as f64));
        metric("omnihost_pipeline_stage_failures_total", "counter", "Runs of a pipeline stage that failed", &pick(|s| s.failures as f64));
        metric("omnihost_pipeline_stage_processor_seconds_total", "counter", "Time in a stage's processor", &pick(|s| s.processor_seconds));
        metric("omnihost_pipeline_stage_engine_seconds_total", "counter", "Time in a stage's engine", &pick(|s| s.engine_seconds));
    }
    process(&mut metric);
    out
}

/// The standard `process_*` metrics, from /proc (Linux).
fn process(metric: &mut impl FnMut(&str, &str, &str, &[(String, f64)])) {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else { return };
    // Fields after the command name, which is in parentheses and may hold spaces.
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else { return };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok());
    let ticks = rustix::param::clock_ticks_per_second() as f64;
    let page = rustix::param::page_size() as f64;
    // `rest` starts at field 3 (state): utime is field 14, stime 15, starttime 22, rss 24.
    if let (Some(utime), Some(stime)) = (field(11), field(12)) {
        metric("process_cpu_seconds_total", "counter", "CPU time used by the process", &[(String::new(), (utime + stime) / ticks)]);
    }
    if let Some(rss) = field(21) {
        metric("process_resident_memory_bytes", "gauge", "Resident memory of the process", &[(String::new(), rss * page)]);
    }
    if let (Some(start), Ok(uptime)) = (field(19), std::fs::read_to_string("/proc/uptime")) {
        let up: f64 = uptime.split_whitespace().next().and_then(|u| u.parse().ok()).unwrap_or(0.0);
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0);
        metric("process_start_time_seconds", "gauge", "When the process started, Unix time", &[(String::new(), now - up + start / ticks)]);
    }
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        metric("process_open_fds", "gauge", "Open file descriptors", &[(String::new(), fds.count() as f64)]);
    }
}
