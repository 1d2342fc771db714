//! A controller reached over HTTP, as a [`Registry`]: worker hosts register and heartbeat through it, API
//! servers look instances up through it. It speaks the controller's DB-GPT wire shapes.

use std::time::Duration;

use serde_json::Value;

use super::wire::{self, instance_from_answer, instance_to_request};
use super::{Instance, InstanceId, Query, Registry, RegistryError, Sweep};
use crate::config::Secret;

pub struct RemoteRegistry {
    base: String,
    token: Option<Secret>,
    client: reqwest::Client,
}

impl RemoteRegistry {
    /// `base` is the controller's URL, e.g. `http://10.0.0.5:8000`; `token` its admin token, if it has one.
    pub fn new(base: &str, token: Option<Secret>) -> Result<Self, RegistryError> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .connect_timeout(Duration::from_secs(3))
            .pool_max_idle_per_host(32)
            .build()
            .map_err(|source| RegistryError::Unreachable { url: base.to_string(), source })?;
        Ok(Self { base: base.trim_end_matches('/').to_string(), token, client })
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    async fn call(&self, request: reqwest::RequestBuilder) -> Result<Value, RegistryError> {
        let request = match &self.token {
            Some(t) => request.bearer_auth(t.expose()),
            None => request,
        };
        let url = self.base.clone();
        let response = request.send().await.map_err(|source| RegistryError::Unreachable { url: url.clone(), source })?;
        let status = response.status();
        let body: Value = response.json().await.map_err(|source| RegistryError::Unreachable { url: url.clone(), source })?;
        if !status.is_success() {
            let message = body["error"]["message"].as_str().unwrap_or("(no message)").to_string();
            return Err(RegistryError::Refused { url, status: status.as_u16(), message });
        }
        Ok(body)
    }
}

#[async_trait::async_trait]
impl Registry for RemoteRegistry {
    async fn register(&self, instance: &Instance) -> Result<bool, RegistryError> {
        let body = instance_to_request(instance);
        let answer = self.call(self.client.post(format!("{}/api/controller/models", self.base)).json(&body)).await?;
        Ok(answer.as_bool().unwrap_or(false))
    }

    async fn deregister(&self, id: &InstanceId, remove: bool) -> Result<bool, RegistryError> {
        let port = id.port.to_string();
        let query = [
            ("model_name", id.key()),
            ("host", id.host.clone()),
            ("port", port),
            ("remove_from_registry", remove.to_string()),
        ];
        let answer = self.call(self.client.delete(format!("{}/api/controller/models", self.base)).query(&query)).await?;
        Ok(answer.as_bool().unwrap_or(false))
    }

    async fn list(&self, query: &Query) -> Result<Vec<Instance>, RegistryError> {
        let mut params: Vec<(&str, String)> = vec![("healthy_only", query.healthy_only.to_string())];
        match (&query.model_name, query.worker_type) {
            (Some(name), Some(t)) => params.push(("model_name", format!("{name}@{}", t.name()))),
            (Some(name), None) => params.push(("model_name", name.clone())),
            (None, _) => {}
        }
        let answer = self.call(self.client.get(format!("{}/api/controller/models", self.base)).query(&params)).await?;
        let items = answer.as_array().cloned().unwrap_or_default();
        let mut instances = items
            .iter()
            .map(instance_from_answer)
            .collect::<Result<Vec<_>, wire::WireError>>()
            .map_err(|source| RegistryError::BadAnswer { url: self.base.clone(), source })?;
        instances.retain(|i| query.matches(i));
        Ok(instances)
    }

    async fn heartbeat(&self, instance: &Instance) -> Result<bool, RegistryError> {
        let body = instance_to_request(instance);
        let answer = self.call(self.client.post(format!("{}/api/controller/heartbeat", self.base)).json(&body)).await?;
        Ok(answer.as_bool().unwrap_or(false))
    }

    /// Sweeping is the controller's job.
    async fn sweep(&self, _timeout: Duration, _evict_after: Duration) -> Result<Sweep, RegistryError> {
        Ok(Sweep::default())
    }

    async fn lead(&self) -> Result<bool, RegistryError> {
        Ok(false)
    }

    fn store(&self) -> &'static str {
        "remote"
    }
}
