//! Where the stock lives: the Redis URL (which may hold a password) and the
//! key prefix, and how the URL is shown (never with its password).

/// Where and under which key prefix the stock lives.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisStockConfig {
    /// `redis://[:password@]host:port[/db]` (read from the variable named by
    /// `[redis] url_env`).
    pub url: String,
    /// Prepended to every key; default `sagaflow:`. Tests use a random one.
    pub key_prefix: String,
}

impl RedisStockConfig {
    /// The default prefix `sagaflow:` at `url`.
    pub fn new(url: impl Into<String>) -> Self {
        RedisStockConfig {
            url: url.into(),
            key_prefix: "sagaflow:".into(),
        }
    }
}

/// The password never shows: `{:?}` masks it as logs and errors print
/// it (`[redis] url_env` holds a secret).
impl std::fmt::Debug for RedisStockConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStockConfig")
            .field("url", &mask_password(&self.url))
            .field("key_prefix", &self.key_prefix)
            .finish()
    }
}

/// `redis://user:secret@host` -> `redis://user:***@host`.
pub(super) fn mask_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    match rest.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{scheme}://{user}:***@{host}")
        }
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_password() {
        let config = RedisStockConfig::new("redis://app:hunter2-secret@redis.internal:6379/0");
        let shown = format!("{config:?}");
        assert!(!shown.contains("hunter2-secret"), "{shown}");
        assert!(
            shown.contains("redis://app:***@redis.internal:6379/0"),
            "{shown}"
        );
    }
}
