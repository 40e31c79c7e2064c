//! The admin API's bearer token: when it is required, how it is compared,
//! and that it is never printed.

use crate::config::AdminSettings;
use crate::ops::remote::Token;
use std::net::SocketAddr;

/// Shortest token accepted: a guessable token is no protection.
const MIN_TOKEN_BYTES: usize = 16;

/// Why the admin API may not start as configured.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// A bind other than loopback without a token.
    #[error("the admin API would listen on {bind}, which is not loopback, and ${var} is not set: anyone who can reach that address could command sagas. Set ${var} to a long random token (e.g. `export {var}=$(openssl rand -hex 32)`), or bind to 127.0.0.1 ([admin] bind in sagas.toml, or --admin-bind)")]
    TokenMissing {
        /// The address.
        bind: SocketAddr,
        /// The variable `[admin] token_env` names.
        var: String,
    },
    /// A token too short to be a secret.
    #[error("${var} holds a token of {len} bytes; use at least {MIN_TOKEN_BYTES} random bytes (e.g. `openssl rand -hex 32`)")]
    TokenTooShort {
        /// The variable `[admin] token_env` names.
        var: String,
        /// Its length.
        len: usize,
    },
}

/// The token the variable `[admin] token_env` names holds, if set.
/// A bind other than loopback requires one; a token that is set is
/// enforced on loopback too.
pub fn token_for(settings: &AdminSettings, bind: SocketAddr) -> Result<Option<Token>, AuthError> {
    token_from(
        std::env::var(&settings.token_env).ok(),
        &settings.token_env,
        bind,
    )
}

fn token_from(
    value: Option<String>,
    var: &str,
    bind: SocketAddr,
) -> Result<Option<Token>, AuthError> {
    match value.filter(|v| !v.is_empty()) {
        None if bind.ip().is_loopback() => Ok(None),
        None => Err(AuthError::TokenMissing {
            bind,
            var: var.to_owned(),
        }),
        Some(t) if t.len() < MIN_TOKEN_BYTES => Err(AuthError::TokenTooShort {
            var: var.to_owned(),
            len: t.len(),
        }),
        Some(t) => Ok(Some(Token::new(t))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_required_off_loopback_and_never_shown() {
        let lo: SocketAddr = "127.0.0.1:7070".parse().unwrap();
        let any: SocketAddr = "0.0.0.0:7070".parse().unwrap();
        assert!(token_from(None, "T", lo).unwrap().is_none());
        let err = token_from(None, "T", any).unwrap_err().to_string();
        assert!(err.contains("not loopback") && err.contains("$T"), "{err}");
        let err = token_from(Some("short".into()), "T", lo)
            .unwrap_err()
            .to_string();
        assert!(err.contains("at least 16"), "{err}");
        let secret = "s3cret-s3cret-s3cret";
        let token = token_from(Some(secret.into()), "T", any).unwrap().unwrap();
        assert!(!format!("{token:?}").contains(secret));
        assert!(token.admits(Some(format!("Bearer {secret}").as_bytes())));
        assert!(!token.admits(Some(b"Bearer s3cret-s3cret-s3creT")));
        assert!(!token.admits(Some(b"Bearer s3cret")));
        assert!(!token.admits(Some(secret.as_bytes())));
        assert!(!token.admits(None));
    }
}
