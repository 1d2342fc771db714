//! Hot swap under load: no request fails, each response comes from exactly one version, and new requests see
//! the new version as soon as the swap returns. Invalid components are refused while the old one serves.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::{Value, json};

use crate::common::*;

const TEXTS: [&str; 2] = ["A man is eating food.", "The stock market fell sharply today."];

/// Which build answered: +1 for the original, -1 for the negating build. Panics on a mixed response.
fn sign_of(body: &Value, reference: &[Vec<f32>]) -> i32 {
    let signs: Vec<i32> = vectors(body)
        .iter()
        .zip(reference)
        .map(|(v, r)| {
            let d = dot(v, r);
            assert!((d.abs() - 1.0).abs() < 1e-4, "vector matches neither version: {d}");
            if d > 0.0 { 1 } else { -1 }
        })
        .collect();
    assert!(signs.iter().all(|s| *s == signs[0]), "one response mixes versions: {signs:?}");
    signs[0]
}

async fn put(client: &reqwest::Client, url: &str, file: &str) -> (u16, Value) {
    let bytes = std::fs::read(component(file)).unwrap();
    let response = client.put(format!("{url}/admin/plugins/embed-minilm")).body(bytes).send().await.unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn swapping_under_load_drops_nothing_and_mixes_nothing() {
    let server = start("").await;
    let client = client();
    let url = server.url();
    let reference = embed(&client, &url, &TEXTS).await;
    let original_sha = server.wait_ready(Duration::from_secs(1)).await.unwrap().plugins.get("embed-minilm").unwrap().current().info.sha256[..12].to_string();

    let stop = Arc::new(AtomicBool::new(false));
    let loaders: Vec<_> = (0..4)
        .map(|_| {
            let (client, url, stop, reference) = (client.clone(), url.clone(), stop.clone(), reference.clone());
            tokio::spawn(async move {
                let mut seen: Vec<(i32, String)> = Vec::new();
                let mut failures = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let response = client
                        .post(format!("{url}/v1/embeddings"))
                        .json(&json!({"model": MODEL, "input": TEXTS}))
                        .send()
                        .await;
                    match response {
                        Ok(r) if r.status() == 200 => {
                            let version = r.headers()["x-omnihost-plugin-version"].to_str().unwrap().to_string();
                            let body: Value = r.json().await.unwrap();
                            seen.push((sign_of(&body, &reference), version));
                        }
                        Ok(r) => failures.push(format!("{}: {}", r.status(), r.text().await.unwrap_or_default())),
                        Err(e) => failures.push(e.to_string()),
                    }
                }
                (seen, failures)
            })
        })
        .collect();

    let mut negate_sha = String::new();
    for round in 0..10 {
        for (file, expected) in [("embed_minilm_negate.wasm", -1), ("embed_minilm.wasm", 1)] {
            let (status, body) = put(&client, &url, file).await;
            assert_eq!(status, 200, "round {round}, {file}: {body}");
            if expected == -1 {
                negate_sha = body["version"]["sha256"].as_str().unwrap()[..12].to_string();
            }
            let (status, after) = embed_raw(&client, &url, json!({"model": MODEL, "input": TEXTS})).await;
            assert_eq!(status, 200);
            assert_eq!(sign_of(&after, &reference), expected, "round {round}: a request after the swap saw the old version");
        }
    }
    stop.store(true, Ordering::Relaxed);
    let mut total = 0;
    let mut per_version: HashMap<String, i32> = HashMap::new();
    for loader in loaders {
        let (seen, failures) = loader.await.unwrap();
        assert!(failures.is_empty(), "requests failed during swaps: {failures:?}");
        total += seen.len();
        for (sign, version) in seen {
            let previous = per_version.insert(version.clone(), sign);
            assert!(previous.is_none_or(|p| p == sign), "version {version} answered with both signs");
        }
    }
    assert!(total >= 20, "only {total} requests completed during the swaps");
    assert_eq!(per_version.get(&original_sha), Some(&1), "{per_version:?}");
    if let Some(sign) = per_version.get(&negate_sha) {
        assert_eq!(*sign, -1);
    }
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_components_are_refused_and_rollback_restores_the_previous_version() {
    let server = start("").await;
    let client = client();
    let url = server.url();
    let reference = embed(&client, &url, &TEXTS).await;

    let (status, body) = put(&client, &url, "passthrough_stage.wasm").await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "invalid_component");
    assert!(body["error"]["message"].as_str().unwrap().contains("worker-adapter"), "{body}");

    let garbage = client.put(format!("{url}/admin/plugins/embed-minilm")).body(b"not wasm".to_vec()).send().await.unwrap();
    assert_eq!(garbage.status(), 400);
    let unknown = client.put(format!("{url}/admin/plugins/nope")).body(b"x".to_vec()).send().await.unwrap();
    assert_eq!(unknown.status(), 404);

    let (status, body) = embed_raw(&client, &url, json!({"model": MODEL, "input": TEXTS})).await;
    assert_eq!(status, 200);
    assert_eq!(sign_of(&body, &reference), 1, "the old version keeps serving after refused swaps");

    let nothing = client.post(format!("{url}/admin/plugins/embed-minilm/rollback")).send().await.unwrap();
    assert_eq!(nothing.status(), 409, "nothing to roll back to yet");

    let (status, _) = put(&client, &url, "embed_minilm_negate.wasm").await;
    assert_eq!(status, 200);
    let (_, body) = embed_raw(&client, &url, json!({"model": MODEL, "input": TEXTS})).await;
    assert_eq!(sign_of(&body, &reference), -1);

    let rollback = client.post(format!("{url}/admin/plugins/embed-minilm/rollback")).send().await.unwrap();
    assert_eq!(rollback.status(), 200);
    let (_, body) = embed_raw(&client, &url, json!({"model": MODEL, "input": TEXTS})).await;
    assert_eq!(sign_of(&body, &reference), 1, "rollback restores the original");

    let history: Value =
        client.get(format!("{url}/admin/plugins/embed-minilm/history")).send().await.unwrap().json().await.unwrap();
    let sources: Vec<&str> = history["history"].as_array().unwrap().iter().map(|v| v["source"].as_str().unwrap()).collect();
    assert_eq!(sources, ["config", "admin-api", "rollback"]);
    let list: Value = client.get(format!("{url}/admin/plugins")).send().await.unwrap().json().await.unwrap();
    assert_eq!(list["plugins"][0]["current"]["sha256"], history["history"][0]["sha256"]);
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_swaps_and_lists_plugins_of_a_running_server() {
    let binary = crate::common::bin();
    let server = start("").await;
    let run = |args: Vec<String>| {
        let binary = binary.clone();
        let url = server.url();
        async move {
            let out = tokio::process::Command::new(binary).args(["plugin", "--controller", &url]).args(args).output().await.unwrap();
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            String::from_utf8_lossy(&out.stdout).to_string()
        }
    };
    let negate = component("embed_minilm_negate.wasm").display().to_string();
    let swapped = run(vec!["swap".into(), "embed-minilm".into(), negate]).await;
    assert!(swapped.contains("embed-minilm now serves"), "{swapped}");
    assert!(swapped.contains("+negate"), "{swapped}");
    let listed = run(vec!["list".into()]).await;
    assert!(listed.contains("embed-minilm") && listed.contains("admin-api"), "{listed}");
    let rolled = run(vec!["rollback".into(), "embed-minilm".into()]).await;
    assert!(rolled.contains("embed-minilm now serves"), "{rolled}");
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stage_processor_slots_accept_only_stage_processors() {
    let extra = format!(
        "[[plugins]]\nname = \"stage\"\ncomponent = \"{}\"\nworld = \"stage-processor\"\n{}",
        component("passthrough_stage.wasm").display(),
        faulty_model("fresh", "fresh_instance_per_call = true", "")
    );
    let server = start(&extra).await;
    let client = client();
    let url = server.url();
    let list: Value = client.get(format!("{url}/admin/plugins")).send().await.unwrap().json().await.unwrap();
    let plugin = |name: &str| list["plugins"].as_array().unwrap().iter().find(|p| p["name"] == name).unwrap().clone();
    let stage = plugin("stage");
    assert_eq!(stage["world"], "stage-processor");
    assert!(stage["adapter"].is_null());
    // New versions take traffic with a full warm pool (4 by default); a fresh-instance plugin keeps none.
    assert_eq!(plugin("embed-minilm")["idle_instances"], 4);
    assert_eq!(plugin("stage")["idle_instances"], 4);
    assert_eq!(plugin("faulty")["idle_instances"], 0);
    let (status, body) = embed_raw(&client, &url, json!({"model": "fresh", "input": "abc"})).await;
    assert_eq!((status, body["data"][0]["embedding"].clone()), (200, json!([3.0])));

    let worker = std::fs::read(component("embed_minilm.wasm")).unwrap();
    let refused = client.put(format!("{url}/admin/plugins/stage")).body(worker).send().await.unwrap();
    assert_eq!(refused.status(), 400);
    let body: Value = refused.json().await.unwrap();
    assert!(body["error"]["message"].as_str().unwrap().contains("stage-processor"), "{body}");

    let same = std::fs::read(component("passthrough_stage.wasm")).unwrap();
    let accepted = client.put(format!("{url}/admin/plugins/stage")).body(same).send().await.unwrap();
    assert_eq!(accepted.status(), 200);
    server.stop().await.unwrap();
}
