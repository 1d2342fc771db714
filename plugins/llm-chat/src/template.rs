//! Renders a model's own Jinja chat template (the `chat_template` of its config) the way Hugging Face's
//! `apply_chat_template` does, so the prompt the decoder sees is the one the model was trained on.

use std::collections::BTreeMap;

use minijinja::syntax::SyntaxConfig;
use minijinja::value::Value;
use minijinja::{Environment, Error, ErrorKind};

/// Template name inside the environment; only one template is ever added.
const NAME: &str = "chat";

/// A compiled chat template. Compiling costs far more than rendering, so it is built once per instance.
pub struct ChatTemplate {
    env: Environment<'static>,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ChatTemplate")
    }
}

impl ChatTemplate {
    /// Compiles `source`. Fails on a syntax error.
    pub fn new(source: String) -> Result<Self, Error> {
        let mut env = Environment::new();
        // transformers compiles chat templates with trim_blocks and lstrip_blocks; without them the block tags'
        // newlines and indentation leak into the prompt.
        env.set_syntax(SyntaxConfig::builder().trim_blocks(true).lstrip_blocks(true).build()?);
        // Templates call Python string methods (`message['content'].strip()`), which Jinja2 allows.
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        // transformers provides this so a template can refuse a conversation it cannot render.
        env.add_function("raise_exception", |message: String| -> Result<Value, Error> {
            Err(Error::new(ErrorKind::InvalidOperation, message))
        });
        env.add_template_owned(NAME, source)?;
        Ok(Self { env })
    }

    /// Renders `messages` (role, content) with the generation prompt appended, as a chat request needs.
    pub fn render(&self, messages: &[(&str, &str)], bos_token: &str, eos_token: &str) -> Result<String, Error> {
        let messages: Vec<Value> = messages
            .iter()
            .map(|(role, content)| {
                let mut m = BTreeMap::new();
                m.insert("role", Value::from(*role));
                m.insert("content", Value::from(*content));
                Value::from(m)
            })
            .collect();
        let mut ctx = BTreeMap::new();
        ctx.insert("messages", Value::from(messages));
        ctx.insert("add_generation_prompt", Value::from(true));
        ctx.insert("bos_token", Value::from(bos_token));
        ctx.insert("eos_token", Value::from(eos_token));
        self.env.get_template(NAME)?.render(Value::from(ctx))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SmolLM2-Instruct's template, verbatim from its tokenizer_config.json.
    pub const SMOLLM2: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

    #[test]
    fn renders_chatml_with_generation_prompt() {
        let t = ChatTemplate::new(SMOLLM2.to_string()).unwrap();
        let out = t.render(&[("system", "Be brief."), ("user", "Hi")], "<|im_start|>", "<|im_end|>").unwrap();
        assert_eq!(
            out,
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
        );
    }

    #[test]
    fn default_system_prompt_when_none_given() {
        let t = ChatTemplate::new(SMOLLM2.to_string()).unwrap();
        let out = t.render(&[("user", "Hi")], "", "").unwrap();
        assert!(out.starts_with("<|im_start|>system\nYou are a helpful AI assistant named SmolLM"));
        assert!(out.ends_with("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"));
    }

    #[test]
    fn raise_exception_and_python_methods() {
        let src = "{% for m in messages %}{% if m.role == 'tool' %}{{ raise_exception('no tools') }}{% endif %}\
                   {{ bos_token }}{{ m.content.strip() }}{{ eos_token }}\n{% endfor %}";
        let t = ChatTemplate::new(src.to_string()).unwrap();
        assert_eq!(t.render(&[("user", "  hi  ")], "<s>", "</s>").unwrap(), "<s>hi</s>\n");
        let err = t.render(&[("tool", "x")], "", "").unwrap_err();
        assert!(err.to_string().contains("no tools"), "{err}");
    }

    #[test]
    fn syntax_error_is_reported() {
        assert!(ChatTemplate::new("{% for %}".to_string()).is_err());
    }
}
