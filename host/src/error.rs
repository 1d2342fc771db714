//! Error helpers every layer shares (kept out of `http` so that the registry and workers need nothing above them).

/// The full cause chain of an error on one line, each cause once: for logs, CLI messages and admin responses
/// (operators need the reason a swap failed).
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let next = s.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    #[derive(Debug, thiserror::Error)]
    #[error("loading the config")]
    struct Outer(#[source] Inner);

    #[derive(Debug, thiserror::Error)]
    #[error("reading omnihost.toml")]
    struct Inner(#[source] std::io::Error);

    #[test]
    fn every_cause_appears_once_in_order() {
        let e = Outer(Inner(std::io::Error::new(std::io::ErrorKind::NotFound, "no such file")));
        assert_eq!(super::chain(&e), "loading the config: reading omnihost.toml: no such file");
    }
}
