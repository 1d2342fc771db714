//! The model's `config.json` as the converter writes it: the facts the adapter needs that tokenizer.json lacks.

use serde::Deserialize;

/// Fields of config.json. Unknown fields are ignored so the converter can add more without breaking this.
#[derive(Debug, Clone, Deserialize)]
pub struct ModelConfig {
    /// Longest sequence, prompt and completion together.
    pub context_length: u32,
    /// Length of a logits row; may exceed the tokenizer's vocabulary (padded embedding matrices).
    pub vocab_size: u32,
    /// Any of these ends the generation with `stop`.
    pub eos_token_ids: Vec<u32>,
    /// Only used to give the template its `bos_token` string.
    #[serde(default)]
    pub bos_token_id: Option<u32>,
    /// Jinja source, rendered for chat requests.
    pub chat_template: String,
    /// Shown in metadata and logs.
    #[serde(default)]
    pub model_name: String,
}

impl ModelConfig {
    pub fn from_json(text: &str) -> Result<Self, String> {
        let config: Self = serde_json::from_str(text).map_err(|e| e.to_string())?;
        if config.context_length < 2 || config.vocab_size == 0 {
            return Err(format!(
                "context_length {} and vocab_size {} must both be positive (context at least 2)",
                config.context_length, config.vocab_size
            ));
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_ignores_unknown_fields() {
        let c = ModelConfig::from_json(
            r#"{"context_length": 8192, "vocab_size": 49152, "eos_token_ids": [2], "bos_token_id": 1,
                "chat_template": "x", "model_name": "m", "hidden_size": 576}"#,
        )
        .unwrap();
        assert_eq!((c.context_length, c.vocab_size, c.eos_token_ids, c.bos_token_id), (8192, 49152, vec![2], Some(1)));
    }

    #[test]
    fn rejects_missing_and_zero_fields() {
        assert!(ModelConfig::from_json(r#"{"vocab_size": 5}"#).is_err());
        assert!(
            ModelConfig::from_json(
                r#"{"context_length": 0, "vocab_size": 5, "eos_token_ids": [], "chat_template": ""}"#
            )
            .is_err()
        );
    }
}
