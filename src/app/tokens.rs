//! The tokens `floodgate serve` needs before it answers anyone: the admin token and the metrics
//! token, taken from configuration or the data directory, or generated and shown once.

use std::path::Path;

use super::AppError;
use crate::api::Tokens;
use crate::config::{ADMIN_TOKEN_FILE, METRICS_TOKEN_FILE, ServeConfig};
use crate::redact::SecretString;

/// The admin token: from configuration, else from the data directory, else newly generated,
/// saved (owner-only) and printed once so the zero-config start is still locked.
pub(super) fn resolve_tokens(cfg: &ServeConfig) -> Result<Tokens, AppError> {
    let admin = match &cfg.admin_token {
        Some(token) => token.expose().to_owned(),
        None => load_or_generate_token(&cfg.data_dir.join(ADMIN_TOKEN_FILE), &ADMIN)?,
    };
    let metrics_file = cfg
        .metrics_token_file
        .clone()
        .unwrap_or_else(|| cfg.data_dir.join(METRICS_TOKEN_FILE));
    let metrics = load_or_generate_token(&metrics_file, &METRICS)?;
    let submit = cfg.submit_token.as_ref().map(SecretString::expose);
    Ok(Tokens::new(&admin, submit).with_metrics(&metrics))
}

/// A kind of token floodgate generates when none is saved.
struct Generated {
    prefix: &'static str,
    what: &'static str,
    usage: &'static str,
}

const ADMIN: Generated = Generated {
    prefix: "fgadm_",
    what: "an admin token",
    usage: "Clients read it from there by default; pass it as `authorization: Bearer <token>`.",
};
const METRICS: Generated = Generated {
    prefix: "fgmet_",
    what: "a read-only metrics token",
    usage: "It opens /metrics and the dashboard (with the admin token), as `Authorization: Bearer <token>`.",
};

/// The token saved in `path` (made owner-only), or a new one, saved owner-only and printed once.
fn load_or_generate_token(path: &Path, kind: &Generated) -> Result<String, AppError> {
    let saved = crate::private_files::read_or_create(path, || {
        format!("{}{}", kind.prefix, hex(&rand::random::<[u8; 24]>()))
    })
    .map_err(|source| AppError::TokenFile {
        path: path.to_owned(),
        source,
    })?;
    if saved.created {
        println!(
            "Generated {} (saved to {}):\n\n    {}\n",
            kind.what,
            path.display(),
            saved.content
        );
        println!("{}", kind.usage);
    }
    Ok(saved.content)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
