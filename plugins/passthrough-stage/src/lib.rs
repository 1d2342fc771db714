//! Stage processor that forwards every source stage's text, token ids and tensors to the next stage unchanged:
//! the behaviour of a stage without a processor, as a component, and the simplest template for writing one.

use exports::omnihost::plugin::stage::{EngineInput, Guest, PluginError, Request, StageOutput};

wit_bindgen::generate!({
    path: "../../wit/plugin",
    world: "stage-processor",
});

struct Component;

impl Guest for Component {
    fn process_inputs(sources: Vec<StageOutput>, _request: Request) -> Result<Vec<EngineInput>, PluginError> {
        if sources.is_empty() {
            return Err(PluginError::InvalidInput("no source stage produced output".into()));
        }
        Ok(sources
            .into_iter()
            .map(|s| EngineInput {
                prompt: s.text,
                token_ids: if s.token_ids.is_empty() { None } else { Some(s.token_ids) },
                tensors: s.tensors,
                extras: vec![("source-stage".into(), s.stage_id.to_string())],
            })
            .collect())
    }
}

export!(Component);
