//! Who may review the monitor's alerts: security officers and auditors, each holding a bearer
//! token made by `medfl officer-token` for one hospital.
//!
//! A token is 256 random bits, shown once. The hospital's `monitor/officers` file keeps, per
//! line, `name role expires-at-ms sha256(token)`: a stolen file holds no usable token, and a
//! slow password hash (argon2) would add nothing for a secret this long while letting anyone
//! who can reach the port spend the monitor's CPU on every guess. Tokens are per hospital
//! (its own file), so an officer of one hospital cannot act in another's monitor.
//!
//! Roles: an **auditor** reads (alerts, the alert stream); an **officer** also acts
//! (acknowledges alerts, lifts blocks). Every action is logged before it takes effect.

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use axum::http::{HeaderMap, StatusCode, header};

/// What a token lets its holder do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum OfficerRole {
    /// Reads alerts and the alert stream.
    Auditor,
    /// Also acknowledges alerts and lifts blocks.
    Officer,
}

impl OfficerRole {
    /// The role's name in the officers file and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            OfficerRole::Auditor => "auditor",
            OfficerRole::Officer => "officer",
        }
    }

    /// Parses a role name.
    pub fn parse(s: &str) -> Option<OfficerRole> {
        match s {
            "auditor" => Some(OfficerRole::Auditor),
            "officer" => Some(OfficerRole::Officer),
            _ => None,
        }
    }
}

/// The file of token hashes of the hospital whose folder is `member_dir`.
pub fn officers_file(member_dir: &Path) -> PathBuf {
    member_dir.join("monitor").join("officers")
}

/// Makes a token for `name` with `role`, valid until `expires_ms`, records its hash, and
/// returns the token (shown once).
pub fn add_officer(
    member_dir: &Path,
    name: &str,
    role: OfficerRole,
    expires_ms: u64,
) -> Result<String> {
    if name.is_empty()
        || name.len() > 64
        || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    {
        bail!("an officer's name is 1 to 64 letters, digits and '-'");
    }
    let mut secret = [0u8; 32];
    rand::Rng::fill_bytes(&mut rand::rng(), &mut secret);
    let token = hex::encode(secret);
    let path = officers_file(member_dir);
    let mut text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e.into()),
    };
    text.push_str(&format!(
        "{name} {} {expires_ms} {}\n",
        role.as_str(),
        token_hash(&token)
    ));
    std::fs::create_dir_all(path.parent().unwrap_or(member_dir))?;
    crate::model_store::write_atomic(&path, text.as_bytes())?;
    Ok(token)
}

fn token_hash(token: &str) -> String {
    medfl_ledger::Hash::of_bytes(token.as_bytes()).to_string()
}

/// Who a request's bearer token belongs to, checked against the role it needs.
///
/// # Errors
/// `401` for a missing, unknown or expired token; `403` for a role below `needs`.
pub fn authorize(
    member_dir: &Path,
    headers: &HeaderMap,
    needs: OfficerRole,
    now_ms: u64,
) -> Result<String, (StatusCode, String)> {
    let unauthorized = |why: &str| (StatusCode::UNAUTHORIZED, why.to_owned());
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.strip_prefix("Bearer "))
        .ok_or_else(|| unauthorized("a security officer's token is needed"))?;
    let hash = token_hash(token.trim());
    let text = std::fs::read_to_string(officers_file(member_dir)).unwrap_or_default();
    let (name, role, expires) = text
        .lines()
        .find_map(|line| {
            let mut f = line.split(' ');
            let (name, role, expires, h) = (f.next()?, f.next()?, f.next()?, f.next()?);
            (h == hash).then(|| {
                (
                    name.to_owned(),
                    OfficerRole::parse(role),
                    expires.parse::<u64>().ok(),
                )
            })
        })
        .ok_or_else(|| unauthorized("a security officer's token is needed"))?;
    let (Some(role), Some(expires)) = (role, expires) else {
        return Err(unauthorized(
            "the token's entry in the officers file is malformed",
        ));
    };
    if now_ms >= expires {
        return Err(unauthorized("the token has expired; make a new one"));
    }
    if role < needs {
        return Err((
            StatusCode::FORBIDDEN,
            format!(
                "{name} is an {}; this needs an {}",
                role.as_str(),
                needs.as_str()
            ),
        ));
    }
    Ok(name)
}
