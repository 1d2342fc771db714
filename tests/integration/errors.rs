//! Bad requests get OpenAI-shaped errors with honest statuses, and lose nothing else.

use serde_json::{Value, json};

use crate::common::*;

async fn post(client: &reqwest::Client, url: &str, body: impl Into<reqwest::Body>) -> (u16, Value) {
    let response = client
        .post(format!("{url}/v1/embeddings"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

fn message(body: &Value) -> &str {
    body["error"]["message"].as_str().unwrap_or_else(|| panic!("no error message in {body}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_are_400_with_a_reason() {
    let server = start_with(&config_text("max_inputs_per_request = 4\nbody_limit = 2048", "")).await;
    let client = client();
    let url = server.url();

    let (status, body) = post(&client, &url, "{\"model\": ").await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["type"], "invalid_request_error");
    assert!(message(&body).contains("not valid JSON"), "{body}");

    let cases = [
        (json!({"model": MODEL, "input": ""}), "input", "empty"),
        (json!({"model": MODEL, "input": []}), "input", "empty"),
        (json!({"model": MODEL, "input": ["ok", 3]}), "input", "input[1]"),
        (json!({"model": MODEL, "input": ["ok", {"a": 1}]}), "input", "input[1]"),
        (json!({"model": MODEL, "input": ["a", "b", "c", "d", "e"]}), "input", "at most 4"),
        (json!({"model": MODEL}), "input", "Missing"),
        (json!({"input": "hello"}), "model", "Missing"),
        (json!({"model": MODEL, "input": "x", "encoding_format": "int8"}), "encoding_format", "base64"),
        (json!({"model": MODEL, "input": "x", "truncate": "yes"}), "truncate", "boolean"),
    ];
    for (request, param, needle) in cases {
        let (status, body) = post(&client, &url, request.to_string()).await;
        assert_eq!(status, 400, "{request} -> {body}");
        assert_eq!(body["error"]["param"], param, "{request} -> {body}");
        assert!(message(&body).contains(needle), "{request} -> {body}");
    }

    let (status, body) = post(&client, &url, json!({"model": "nope", "input": "x"}).to_string()).await;
    assert_eq!(status, 404);
    assert_eq!(body["error"]["code"], "model_not_found");

    let huge = json!({"model": MODEL, "input": "x".repeat(4096)}).to_string();
    let (status, body) = post(&client, &url, huge).await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(body["error"]["code"], "request_too_large");

    // After all of that, the server still serves.
    let v = embed(&client, &url, &["still here"]).await;
    assert_eq!(v[0].len(), 384);
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_keys_guard_v1_and_the_admin_token_guards_admin() {
    let server =
        start_with(&config_text("api_keys = [\"sk-test-1\", \"sk-test-2\"]\nadmin_token = \"admin-secret\"", "")).await;
    let client = client();
    let url = server.url();
    let request = json!({"model": MODEL, "input": "hello"});

    let missing = client.post(format!("{url}/v1/embeddings")).json(&request).send().await.unwrap();
    assert_eq!(missing.status(), 401);
    let body: Value = missing.json().await.unwrap();
    assert_eq!(body["error"]["code"], "invalid_api_key");
    let wrong = client.post(format!("{url}/v1/embeddings")).bearer_auth("sk-wrong").json(&request).send().await.unwrap();
    assert_eq!(wrong.status(), 401);
    let right = client.post(format!("{url}/v1/embeddings")).bearer_auth("sk-test-2").json(&request).send().await.unwrap();
    assert_eq!(right.status(), 200);
    let models = client.get(format!("{url}/api/v1/models")).send().await.unwrap();
    assert_eq!(models.status(), 401, "the /api/v1 alias is guarded too");

    let admin = client.get(format!("{url}/admin/plugins")).send().await.unwrap();
    assert_eq!(admin.status(), 401);
    let admin = client.get(format!("{url}/admin/plugins")).bearer_auth("sk-test-1").send().await.unwrap();
    assert_eq!(admin.status(), 401, "an API key is not an admin token");
    let admin = client.get(format!("{url}/admin/plugins")).bearer_auth("admin-secret").send().await.unwrap();
    assert_eq!(admin.status(), 200);

    let live = client.get(format!("{url}/health/live")).send().await.unwrap();
    assert_eq!(live.status(), 200, "health needs no key");
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_is_429_and_queued_requests_still_complete() {
    let extra = faulty_model("slow", "timeout_ms = 3000, max_concurrency = 1", "queue_capacity = 1");
    let server = start(&extra).await;
    let client = client();
    let url = server.url();
    let send = |text: &'static str| {
        let client = client.clone();
        let url = url.clone();
        tokio::spawn(async move { embed_raw(&client, &url, json!({"model": "slow", "input": text})).await })
    };
    // Each request is sent once the one before is where it should be (computing, then queued), as `/metrics`
    // shows: the order is what the test is about.
    let limit = std::time::Duration::from_secs(10);
    let busy = send("loop");
    crate::cluster::wait_for("the looping request computing", limit, async || {
        model_gauge(&client, &url, "omnihost_model_batches_running", "slow").await == 1.0
    })
    .await;
    let queued = send("queued");
    crate::cluster::wait_for("the second request queued", limit, async || {
        model_gauge(&client, &url, "omnihost_model_queue_depth", "slow").await == 1.0
    })
    .await;
    let (status, body) = embed_raw(&client, &url, json!({"model": "slow", "input": "refused"})).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"]["code"], "rate_limit_exceeded");
    let (status, body) = busy.await.unwrap();
    assert_eq!(status, 504, "{body}");
    let (status, body) = queued.await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"][0]["embedding"], json!([6.0]));
    server.stop().await.unwrap();
}
