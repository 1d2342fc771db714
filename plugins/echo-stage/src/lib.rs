//! The Rust template of a pipeline stage processor (`pipeline-processor` world): stage 0 turns the request's
//! prompt into one item, a later stage passes its sources' items on in order. With config `prefix`, every text
//! gets that prefix, so a test can see which processor (and which version of it) built a stage's inputs.
//!
//! Copy this crate to start a processor: the logic goes in `process`, nothing is kept between calls (any pooled
//! instance may serve any call), and errors are `invalid-input` for the client's fault (HTTP 400) or `internal`.

use exports::omnihost::plugin::processor::{Guest, Item, PluginError, Request, Source};
use omnihost::plugin::config;

wit_bindgen::generate!({
    path: "../../wit/plugin",
    world: "pipeline-processor",
});

struct Component;

/// The marker that makes the fault-injection build misbehave: a test's way to hurt exactly one request.
#[cfg(feature = "fault-injection")]
fn inject_faults(request: &Request, sources: &[Source]) {
    let texts = request.prompt.iter().chain(sources.iter().flat_map(|s| s.outputs.iter().filter_map(|i| i.text.as_ref())));
    for text in texts {
        if text.contains("omnihost-fault:trap") {
            #[allow(clippy::panic)]
            {
                panic!("fault injected by the request");
            }
        }
        if text.contains("omnihost-fault:sleep") {
            std::thread::sleep(std::time::Duration::from_secs(3600));
        }
    }
}

impl Guest for Component {
    fn process(request: Request, sources: Vec<Source>) -> Result<Vec<Item>, PluginError> {
        #[cfg(feature = "fault-injection")]
        inject_faults(&request, &sources);
        let prefix = config::get("prefix").unwrap_or_default();
        let with_prefix = |text: Option<String>| text.map(|t| format!("{prefix}{t}"));
        if sources.is_empty() {
            let Some(prompt) = request.prompt else {
                return Err(PluginError::InvalidInput("this stage needs a text prompt".into()));
            };
            return Ok(vec![Item {
                text: with_prefix(Some(prompt)),
                token_ids: Vec::new(),
                tensors: request.inputs,
                json: None,
                finish_reason: None,
            }]);
        }
        // Tensor handles are passed back as they came: the host hands them on without a copy.
        Ok(sources
            .into_iter()
            .flat_map(|s| s.outputs)
            .map(|item| Item { text: with_prefix(item.text), ..item })
            .collect())
    }
}

export!(Component);
