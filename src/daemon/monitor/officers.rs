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

/// Whether `name` is a valid officer's name.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// Makes a token for `name` with `role`, valid until `expires_ms`, records its hash (replacing
/// any earlier token of `name`, which stops working), and returns the token (shown once).
pub fn add_officer(
    member_dir: &Path,
    name: &str,
    role: OfficerRole,
    expires_ms: u64,
) -> Result<String> {
    if !valid_name(name) {
        bail!("an officer's name is 1 to 64 letters, digits and '-'");
    }
    let mut secret = [0u8; 32];
    rand::Rng::fill_bytes(&mut rand::rng(), &mut secret);
    let token = hex::encode(secret);
    let mut text = others(member_dir, name)?;
    text.push_str(&format!(
        "{name} {} {expires_ms} {}\n",
        role.as_str(),
        token_hash(&token)
    ));
    write(member_dir, &text)?;
    Ok(token)
}

/// Revokes every token of `name`; returns how many there were.
pub fn revoke_officer(member_dir: &Path, name: &str) -> Result<usize> {
    let all = read(member_dir)?;
    let (theirs, kept): (Vec<&str>, Vec<&str>) =
        all.lines().partition(|l| l.split(' ').next() == Some(name));
    let kept: String = kept.iter().map(|l| format!("{l}\n")).collect();
    write(member_dir, &kept)?;
    Ok(theirs.len())
}

/// The officers file's text (empty when there is none yet).
fn read(member_dir: &Path) -> Result<String> {
    match std::fs::read_to_string(officers_file(member_dir)) {
        Ok(t) => Ok(t),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
        Err(e) => Err(e.into()),
    }
}

/// The officers file's lines for everyone but `name`.
fn others(member_dir: &Path, name: &str) -> Result<String> {
    Ok(read(member_dir)?
        .lines()
        .filter(|l| l.split(' ').next() != Some(name))
        .map(|l| format!("{l}\n"))
        .collect())
}

fn write(member_dir: &Path, text: &str) -> Result<()> {
    let path = officers_file(member_dir);
    std::fs::create_dir_all(path.parent().unwrap_or(member_dir))?;
    crate::model_store::write_atomic(&path, text.as_bytes())?;
    Ok(())
}

fn token_hash(token: &str) -> String {
    medfl_ledger::Hash::of_bytes(token.as_bytes()).to_string()
}

/// The bearer token `headers` carry, if any (checked before anything else is done).
pub fn bearer(headers: &HeaderMap) -> Option<String> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.strip_prefix("Bearer "))
        .map(|t| t.trim().to_owned())
        .filter(|t| t.len() == 64 && t.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// An officer a token belongs to: their name, role and when the token expires.
#[derive(Clone, Debug)]
pub struct Officer {
    /// Their name.
    pub name: String,
    /// What their token lets them do.
    pub role: OfficerRole,
    /// When the token stops working, in ms since the epoch.
    pub expires_ms: u64,
}

/// Who `token` belongs to, checked against the role it needs.
///
/// # Errors
/// `401` for an unknown or expired token; `403` for a role below `needs`; `503` when the
/// officers file cannot be read.
pub fn authorize(
    member_dir: &Path,
    token: &str,
    needs: OfficerRole,
    now_ms: u64,
) -> Result<Officer, (StatusCode, String)> {
    let unauthorized = |why: &str| (StatusCode::UNAUTHORIZED, why.to_owned());
    let hash = token_hash(token);
    let text = read(member_dir).map_err(|e| {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the officers file cannot be read: {e}"),
        )
    })?;
    // Exactly `name role expires hash`, the name valid: anything else matches no token.
    let entry = text.lines().find_map(|line| {
        let f: Vec<&str> = line.split(' ').collect();
        let [name, role, expires, h] = f[..] else {
            return None;
        };
        (h == hash && valid_name(name)).then(|| {
            (
                name.to_owned(),
                OfficerRole::parse(role),
                expires.parse::<u64>().ok(),
            )
        })
    });
    let Some((name, Some(role), Some(expires_ms))) = entry else {
        return Err(unauthorized("a valid security officer's token is needed"));
    };
    if now_ms >= expires_ms {
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
    Ok(Officer {
        name,
        role,
        expires_ms,
    })
}
