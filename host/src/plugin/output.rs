//! A plugin's stdout and stderr, turned into log lines attributed to the plugin instead of raw bytes on the
//! host's own streams.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};

/// A line longer than this is logged in pieces, so a plugin cannot grow the host's buffer without bound.
const MAX_LINE: usize = 8 << 10;

/// Where a plugin's output goes: the log, one event per line, tagged with the plugin and stream.
#[derive(Clone, Debug)]
pub struct PluginOutput {
    plugin: Arc<str>,
    stream: &'static str,
}

impl PluginOutput {
    pub fn new(plugin: &str, stream: &'static str) -> Self {
        Self { plugin: plugin.into(), stream }
    }
}

impl IsTerminal for PluginOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for PluginOutput {
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(LineWriter { out: self.clone(), buffer: Vec::new() })
    }
}

struct LineWriter {
    out: PluginOutput,
    buffer: Vec<u8>,
}

impl LineWriter {
    fn emit(&mut self, upto: usize) {
        let line: Vec<u8> = self.buffer.drain(..upto).collect();
        let text = String::from_utf8_lossy(&line);
        let text = text.trim_end_matches(['\n', '\r']);
        if !text.is_empty() {
            tracing::warn!(target: "plugin", plugin = %self.out.plugin, stream = self.out.stream, "{text}");
        }
    }
}

impl AsyncWrite for LineWriter {
    fn poll_write(mut self: Pin<&mut Self>, _: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        self.buffer.extend_from_slice(buf);
        while let Some(end) = self.buffer.iter().position(|b| *b == b'\n') {
            self.emit(end + 1);
        }
        if self.buffer.len() >= MAX_LINE {
            let len = self.buffer.len();
            self.emit(len);
        }
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let len = self.buffer.len();
        self.emit(len);
        Poll::Ready(Ok(()))
    }
}
