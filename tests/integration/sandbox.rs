//! A plugin that traps, loops forever or allocates without bound fails only its own request, with a typed
//! error, while concurrent good requests succeed and the host keeps serving.

use serde_json::{Value, json};

use crate::common::*;

fn faulty_config() -> String {
    faulty_model("faulty", "timeout_ms = 1000, memory_mib = 64", "")
}

async fn fault_beside_good_traffic(trigger: &str, status: u16, code: &str) {
    let server = start(&faulty_config()).await;
    let client = client();
    let url = server.url();
    let reference = embed(&client, &url, &["A man is eating food."]).await.remove(0);

    let bad = {
        let (client, url) = (client.clone(), url.clone());
        let trigger = trigger.to_string();
        tokio::spawn(async move { embed_raw(&client, &url, json!({"model": "faulty", "input": trigger})).await })
    };
    let good = (0..16).map(|_| {
        let (client, url) = (client.clone(), url.clone());
        async move { embed_raw(&client, &url, json!({"model": MODEL, "input": "A man is eating food."})).await }
    });
    for (got, body) in futures::future::join_all(good).await {
        assert_eq!(got, 200, "good request failed beside `{trigger}`: {body}");
        let v = vectors(&body).remove(0);
        assert!((dot(&v, &reference) - 1.0).abs() < 1e-4);
    }
    let (got, body): (u16, Value) = bad.await.unwrap();
    assert_eq!(got, status, "`{trigger}` -> {body}");
    assert_eq!(body["error"]["code"], code, "`{trigger}` -> {body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("faulty"), "{body}");

    // The faulty plugin itself recovers: its broken instance was discarded, a fresh one serves.
    let (got, body) = embed_raw(&client, &url, json!({"model": "faulty", "input": "hello"})).await;
    assert_eq!(got, 200, "{body}");
    assert_eq!(body["data"][0]["embedding"], json!([5.0]));
    let (got, _) = embed_raw(&client, &url, json!({"model": MODEL, "input": "still serving"})).await;
    assert_eq!(got, 200);
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trapping_plugin_fails_only_its_request() {
    fault_beside_good_traffic("trap", 500, "plugin_trap").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_looping_plugin_is_stopped_at_its_deadline() {
    fault_beside_good_traffic("loop", 504, "plugin_timeout").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_memory_hungry_plugin_hits_its_cap() {
    fault_beside_good_traffic("alloc", 500, "plugin_memory_limit").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_typed_plugin_error_is_a_400_and_keeps_the_instance() {
    let server = start(&faulty_config()).await;
    let client = client();
    let (got, body) = embed_raw(&client, &server.url(), json!({"model": "faulty", "input": "reject"})).await;
    assert_eq!(got, 400, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("rejects"), "{body}");
    let (got, _) = embed_raw(&client, &server.url(), json!({"model": "faulty", "input": "fine"})).await;
    assert_eq!(got, 200);
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fuel_limit_stops_a_loop_and_spares_plugins_without_one() {
    let server = start(&faulty_model("faulty", "timeout_ms = 20000, fuel = 50000000", "")).await;
    let client = client();
    let (got, body) = embed_raw(&client, &server.url(), json!({"model": "faulty", "input": "loop"})).await;
    assert_eq!(got, 500, "{body}");
    assert_eq!(body["error"]["code"], "plugin_out_of_fuel", "{body}");
    let (got, _) = embed_raw(&client, &server.url(), json!({"model": "faulty", "input": "fine"})).await;
    assert_eq!(got, 200);
    // The embedding plugin has no fuel limit: metering being on for the engine must not starve it.
    let v = embed(&client, &server.url(), &["A man is eating food."]).await;
    assert_eq!(v[0].len(), 384);
    server.stop().await.unwrap();
}

/// WIT 0.1.1 and 0.1.2 added interfaces; components built for 0.1.0 must still load and serve unchanged.
/// The `faulty` fixture is built against a frozen copy of the 0.1.0 contract, and the host names 0.1.2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_component_built_for_wit_0_1_0_is_served_by_a_0_1_2_host() {
    let fixture = std::fs::read(component("faulty.wasm")).unwrap();
    let contains = |needle: &str| fixture.windows(needle.len()).any(|w| w == needle.as_bytes());
    assert!(contains("omnihost:plugin/worker@0.1.0"), "the fixture is a 0.1.0 component");
    assert!(!contains("@0.1.1") && !contains("@0.1.2"), "the fixture must name no later version");
    let contract = std::fs::read_to_string(root().join("wit/plugin/plugin.wit")).unwrap();
    assert!(contract.contains("package omnihost:plugin@0.1.2;"), "the host's contract is 0.1.2");

    let server = start(&faulty_config()).await;
    let (status, body) = embed_raw(&client(), &server.url(), json!({"model": "faulty", "input": "hello"})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"][0]["embedding"], json!([5.0]));
    server.stop().await.unwrap();
}

/// The value of the sample of `name` whose labels include every one of `labels` (0 when there is none).
fn sample(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter(|l| labels.iter().all(|want| l.contains(want)))
        .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()))
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_move_when_requests_are_served_and_plugins_trap() {
    let server = start(&faulty_config()).await;
    let (client, url) = (client(), server.url());
    let scrape = async || client.get(format!("{url}/metrics")).send().await.unwrap().text().await.unwrap();
    // The recorder is shared by every server in this process: compare before and after, not absolute values.
    let before = scrape().await;
    for _ in 0..3 {
        embed(&client, &url, &["A man is eating food."]).await;
    }
    let (status, _) = embed_raw(&client, &url, json!({"model": "faulty", "input": "trap"})).await;
    assert_eq!(status, 500);
    let (status, _) = embed_raw(&client, &url, json!({"model": "nobody", "input": "x"})).await;
    assert_eq!(status, 404);
    let after = scrape().await;
    let moved = |name: &str, labels: &[&str]| sample(&after, name, labels) - sample(&before, name, labels);
    let route = "route=\"/v1/embeddings\"";
    assert_eq!(moved("omnihost_http_requests_total", &[route, "status=\"200\""]), 3.0, "{after}");
    assert_eq!(moved("omnihost_http_requests_total", &[route, "status=\"500\""]), 1.0, "{after}");
    assert_eq!(moved("omnihost_http_requests_total", &[route, "status=\"404\""]), 1.0, "{after}");
    assert_eq!(moved("omnihost_model_requests_total", &[&format!("model=\"{MODEL}\""), "outcome=\"ok\""]), 3.0);
    assert_eq!(moved("omnihost_model_requests_total", &["model=\"faulty\"", "outcome=\"plugin_trap\""]), 1.0);
    assert_eq!(moved("omnihost_plugin_calls_total", &["plugin=\"faulty\"", "outcome=\"trap\""]), 1.0, "{after}");
    assert!(moved("omnihost_plugin_calls_total", &["plugin=\"embed-minilm\"", "outcome=\"ok\""]) >= 3.0);
    assert!(moved("omnihost_tokens_total", &[&format!("model=\"{MODEL}\""), "direction=\"in\""]) >= 3.0 * 7.0);
    assert!(moved("omnihost_batch_size_count", &[&format!("model=\"{MODEL}\"")]) >= 1.0, "{after}");
    assert!(moved("omnihost_plugin_call_duration_seconds_count", &["plugin=\"faulty\""]) >= 1.0);
    // The process and the build are there, in Prometheus's text format.
    assert!(sample(&after, "process_resident_memory_bytes", &[]) > 1e6, "{after}");
    assert!(after.contains("# TYPE omnihost_http_requests_total counter"), "{after}");
    assert_eq!(sample(&after, "omnihost_build_info", &[]), 1.0);
    server.stop().await.unwrap();
}
