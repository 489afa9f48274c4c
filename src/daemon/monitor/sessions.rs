//! Browser sessions of security officers and auditors: the hospital console's login.
//!
//! An officer signs in once with their token (`POST /v1/session`); the monitor answers with a
//! session cookie (`HttpOnly`: no script reads it; `SameSite=Strict`: no other site's page
//! sends it; `Secure` over TLS) and a CSRF token the page sends back in `X-CSRF-Token` with
//! every write. The cookie names a session kept only in the monitor's memory, which holds the
//! officer's token: every request through it is authorized afresh from the officers file, so a
//! revoked token ends its sessions at once, and a session never outlives its token.
//!
//! A write through a session is refused unless it carries the session's CSRF token and, when
//! the browser says where the request comes from (`Origin`, `Sec-Fetch-Site`), it comes from
//! this origin. Every request through a session must name the monitor by an IP address,
//! `localhost` or a name the hospital lists (`[monitor] console_hosts`): a page elsewhere
//! that rebinds its own name to the monitor's address gets no session to use. Scripts
//! calling the API with `Authorization: Bearer` hold no ambient credential, so those checks
//! do not apply to them.
//!
//! One token holds [`MAX_PER_TOKEN`] sessions at most (its oldest is closed for a new one),
//! and when [`MAX_SESSIONS`] are open the oldest is closed: no holder of one token can lock
//! the others out. Over TLS the cookie is `__Host-medfl_session` (sent only over TLS, path
//! `/`, no `Domain`); a request carrying the cookie twice is refused (one of the two would be
//! planted). Cookies ignore ports, so another service on the monitor's host name receives the
//! cookie and can replace it: the console needs a host name no other web service answers on.

use std::collections::HashMap;
use std::sync::Mutex;

use axum::http::{HeaderMap, HeaderValue, header};

/// The session cookie's name over plain HTTP.
pub(super) const COOKIE: &str = "medfl_session";
/// Its name over TLS: the `__Host-` prefix binds it to this host and path `/`, `Secure`.
pub(super) const TLS_COOKIE: &str = "__Host-medfl_session";
/// The header a page sends its CSRF token in.
pub(super) const CSRF_HEADER: &str = "x-csrf-token";
/// Longest a session lasts (a working shift), if its token lasts as long.
pub(super) const SESSION_MS: u64 = 12 * 60 * 60 * 1000;
/// Most sessions open at once: a login flood cannot grow the monitor's memory.
pub(super) const MAX_SESSIONS: usize = 1024;
/// Most sessions one token holds at once (an officer's browsers).
pub(super) const MAX_PER_TOKEN: usize = 4;

/// One signed-in browser.
#[derive(Clone)]
pub(super) struct Session {
    /// The officer's token (kept here, never sent to the browser again).
    pub(super) token: String,
    /// The CSRF token the page must send with writes.
    pub(super) csrf: String,
    /// When the session ends, in ms since the epoch.
    pub(super) expires_ms: u64,
    /// When it was opened (the oldest is closed first).
    opened_ms: u64,
}

/// The open sessions, keyed by the SHA-256 of their cookie value (a lookup's timing then
/// tells nothing about the secret).
pub(super) struct Sessions {
    open: Mutex<HashMap<String, Session>>,
    /// Whether cookies are marked `Secure` (the monitor speaks TLS).
    secure: bool,
    /// DNS names (lowercase, with the port unless 80 or 443) the console may be reached by.
    hosts: Vec<String>,
}

fn random_hex() -> String {
    let mut bytes = [0u8; 32];
    rand::Rng::fill_bytes(&mut rand::rng(), &mut bytes);
    hex::encode(bytes)
}

fn digest(s: &str) -> String {
    medfl_ledger::Hash::of_bytes(s.as_bytes()).to_string()
}

impl Sessions {
    /// No sessions yet; cookies marked `Secure` if `secure`; the console reachable by IP
    /// address, `localhost` and the DNS names `hosts`.
    pub(super) fn new(secure: bool, hosts: Vec<String>) -> Sessions {
        Sessions {
            open: Mutex::new(HashMap::new()),
            secure,
            hosts,
        }
    }

    /// The cookie's name: `__Host-` prefixed over TLS.
    fn cookie_name(&self) -> &'static str {
        if self.secure { TLS_COOKIE } else { COOKIE }
    }

    /// Opens a session for `token` (already authorized, valid until `token_expires_ms`);
    /// returns its cookie value and the session. The token's oldest session is closed if it
    /// holds [`MAX_PER_TOKEN`], and the oldest of all if [`MAX_SESSIONS`] are open.
    pub(super) fn open(
        &self,
        token: String,
        token_expires_ms: u64,
        now_ms: u64,
    ) -> (String, Session) {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        open.retain(|_, s| s.expires_ms > now_ms);
        let oldest = |open: &HashMap<String, Session>, mine: bool| {
            open.iter()
                .filter(|(_, s)| !mine || s.token == token)
                .min_by_key(|(_, s)| s.opened_ms)
                .map(|(k, _)| k.clone())
        };
        if open.values().filter(|s| s.token == token).count() >= MAX_PER_TOKEN
            && let Some(k) = oldest(&open, true)
        {
            open.remove(&k);
        }
        if open.len() >= MAX_SESSIONS
            && let Some(k) = oldest(&open, false)
        {
            open.remove(&k);
        }
        let id = random_hex();
        let session = Session {
            token,
            csrf: random_hex(),
            expires_ms: token_expires_ms.min(now_ms.saturating_add(SESSION_MS)),
            opened_ms: now_ms,
        };
        open.insert(digest(&id), session.clone());
        (id, session)
    }

    /// Whether a signed-in browser's request names the monitor by an allowed host: an IP
    /// address (a rebinding attack needs a DNS name of its own), `localhost`, or a listed name.
    pub(super) fn host_allowed(&self, headers: &HeaderMap) -> bool {
        let Some(host) = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .map(str::to_ascii_lowercase)
        else {
            return false;
        };
        if host.parse::<std::net::SocketAddr>().is_ok()
            || host.parse::<std::net::IpAddr>().is_ok()
            || host == "localhost"
            || host
                .strip_prefix("localhost:")
                .is_some_and(|p| p.parse::<u16>().is_ok())
        {
            return true;
        }
        self.hosts.contains(&host)
    }

    /// The session the request's cookie names, if it is open.
    pub(super) fn of(&self, headers: &HeaderMap, now_ms: u64) -> Option<(String, Session)> {
        let id = cookie(headers, self.cookie_name())?;
        let open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let s = open.get(&digest(&id)).filter(|s| s.expires_ms > now_ms)?;
        Some((id, s.clone()))
    }

    /// The open session with cookie value `id`.
    pub(super) fn of_id(&self, id: &str) -> Option<Session> {
        let open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        open.get(&digest(id)).cloned()
    }

    /// Whether the session with cookie value `id` is still open.
    pub(super) fn is_open(&self, id: &str, now_ms: u64) -> bool {
        let open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        open.get(&digest(id)).is_some_and(|s| s.expires_ms > now_ms)
    }

    /// Closes the session with cookie value `id`.
    pub(super) fn close(&self, id: &str) {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        open.remove(&digest(id));
    }

    /// The `Set-Cookie` value that opens session `id` until `expires_ms`.
    pub(super) fn set_cookie(&self, id: &str, now_ms: u64, expires_ms: u64) -> HeaderValue {
        let max_age = expires_ms.saturating_sub(now_ms) / 1000;
        let secure = if self.secure { "; Secure" } else { "" };
        // The id is hex: always a valid header value.
        HeaderValue::from_str(&format!(
            "{}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}",
            self.cookie_name()
        ))
        .unwrap_or_else(|_| HeaderValue::from_static(""))
    }

    /// The `Set-Cookie` value that ends the session in the browser.
    pub(super) fn clear_cookie(&self) -> HeaderValue {
        if self.secure {
            HeaderValue::from_static(
                "__Host-medfl_session=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0; Secure",
            )
        } else {
            HeaderValue::from_static("medfl_session=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0")
        }
    }
}

/// The session cookie's value, if the request carries exactly one, well formed. Two are
/// refused: a sibling service on the host (cookies ignore ports) may have planted one, and the
/// browser would send the planted one first.
fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    let mut values = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .filter(|(n, _)| *n == name)
        .map(|(_, value)| value);
    let value = values.next()?;
    if values.next().is_some() {
        return None;
    }
    Some(value.to_owned()).filter(|v| v.len() == 64 && v.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Whether a browser request comes from the monitor's own pages: its `Origin`, when sent,
/// names the host it was sent to, and its `Sec-Fetch-Site`, when sent, says `same-origin`.
pub(super) fn same_origin(headers: &HeaderMap) -> bool {
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    let origin_ok = match headers.get(header::ORIGIN) {
        None => true,
        Some(o) => {
            let o = o.to_str().unwrap_or("");
            let authority = o
                .strip_prefix("https://")
                .or_else(|| o.strip_prefix("http://"));
            authority.is_some() && authority == host
        }
    };
    let site_ok = headers
        .get("sec-fetch-site")
        .is_none_or(|s| s.as_bytes() == b"same-origin");
    origin_ok && site_ok
}

/// Whether a request was sent by a web page: browsers mark every one with `Origin` (on a
/// POST) or `Sec-Fetch-Site`; EHRs, syslog relays and scripts send neither. The intake takes
/// no access from a page at all, its own origin included: after a DNS rebinding another
/// site's page *is* the monitor's origin to the browser, so only refusing pages stops it.
pub(super) fn sent_by_a_page(headers: &HeaderMap) -> bool {
    headers.contains_key(header::ORIGIN) || headers.contains_key("sec-fetch-site")
}

/// Whether `sent` is the session's CSRF token (compared as digests: the comparison's timing
/// tells an attacker nothing about the token).
pub(super) fn csrf_matches(session: &Session, sent: Option<&HeaderValue>) -> bool {
    sent.and_then(|v| v.to_str().ok())
        .is_some_and(|v| digest(v) == digest(&session.csrf))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn a_session_is_found_by_its_cookie_and_ends_with_its_token() {
        let sessions = Sessions::new(false, vec![]);
        let (id, s) = sessions.open("t".repeat(64), 5_000, 1_000);
        assert_eq!(s.expires_ms, 5_000, "never outlives its token");
        let h = headers(&[("cookie", &format!("theme=dark; {COOKIE}={id}"))]);
        assert_eq!(sessions.of(&h, 2_000).unwrap().1.token, "t".repeat(64));
        assert!(sessions.of(&h, 5_000).is_none(), "expired with its token");
        let forged = headers(&[("cookie", &format!("{COOKIE}={}", "0".repeat(64)))]);
        assert!(sessions.of(&forged, 2_000).is_none());
        sessions.close(&id);
        assert!(sessions.of(&h, 2_000).is_none(), "closed");
    }

    #[test]
    fn the_cookie_is_http_only_and_same_site_strict_and_secure_over_tls() {
        let plain = Sessions::new(false, vec![]).set_cookie("ab", 0, 60_000);
        let plain = plain.to_str().unwrap();
        assert!(
            plain.contains("HttpOnly") && plain.contains("SameSite=Strict"),
            "{plain}"
        );
        assert!(
            plain.contains("Max-Age=60") && !plain.contains("Secure"),
            "{plain}"
        );
        let tls = Sessions::new(true, vec![]).set_cookie("ab", 0, 60_000);
        let tls = tls.to_str().unwrap();
        assert!(
            tls.starts_with("__Host-medfl_session=ab;") && tls.ends_with("; Secure"),
            "{tls}"
        );
    }

    #[test]
    fn a_page_is_told_from_an_ehr() {
        assert!(!sent_by_a_page(&headers(&[
            ("host", "m:1"),
            ("content-type", "application/json")
        ])));
        assert!(
            sent_by_a_page(&headers(&[("origin", "http://m:1")])),
            "even its own origin"
        );
        assert!(sent_by_a_page(&headers(&[(
            "sec-fetch-site",
            "same-origin"
        )])));
    }

    #[test]
    fn a_cross_site_request_is_not_same_origin() {
        let ok = headers(&[("host", "monitor:8088"), ("origin", "http://monitor:8088")]);
        assert!(same_origin(&ok));
        assert!(
            same_origin(&headers(&[("host", "monitor:8088")])),
            "no Origin sent"
        );
        for bad in [
            headers(&[("host", "monitor:8088"), ("origin", "http://evil.example")]),
            headers(&[("host", "monitor:8088"), ("origin", "null")]),
            headers(&[("host", "monitor:8088"), ("sec-fetch-site", "cross-site")]),
            headers(&[("host", "monitor:8088"), ("sec-fetch-site", "same-site")]),
        ] {
            assert!(!same_origin(&bad), "{bad:?}");
        }
    }

    #[test]
    fn one_token_holds_a_few_sessions_and_cannot_lock_out_the_others() {
        let sessions = Sessions::new(false, vec![]);
        let mut flood = Vec::new();
        for t in 0..2 * MAX_SESSIONS as u64 {
            flood.push(sessions.open("auditor".into(), u64::MAX, t).0);
        }
        let open = |id: &str| sessions.is_open(id, 0);
        assert_eq!(flood.iter().filter(|id| open(id)).count(), MAX_PER_TOKEN);
        assert!(open(flood.last().unwrap()), "the newest stays");
        let (officer, _) = sessions.open("officer".into(), u64::MAX, 10_000);
        assert!(open(&officer));
        // With the table full of distinct tokens, the oldest goes, never the newcomer.
        for t in 0..MAX_SESSIONS as u64 {
            sessions.open(format!("t{t}"), u64::MAX, 20_000 + t);
        }
        let (last, _) = sessions.open("latecomer".into(), u64::MAX, 90_000);
        assert!(open(&last));
    }

    #[test]
    fn a_cookie_sent_twice_is_refused() {
        let sessions = Sessions::new(false, vec![]);
        let (id, _) = sessions.open("t".into(), u64::MAX, 0);
        let twice = headers(&[(
            "cookie",
            &format!("{COOKIE}={}; {COOKIE}={id}", "a".repeat(64)),
        )]);
        assert!(sessions.of(&twice, 1).is_none());
        let once = headers(&[("cookie", &format!("{COOKIE}={id}"))]);
        assert!(sessions.of(&once, 1).is_some());
        // Over TLS only the __Host- cookie counts.
        let tls = Sessions::new(true, vec![]);
        let (id, _) = tls.open("t".into(), u64::MAX, 0);
        assert!(
            tls.of(&headers(&[("cookie", &format!("{COOKIE}={id}"))]), 1)
                .is_none()
        );
        assert!(
            tls.of(&headers(&[("cookie", &format!("{TLS_COOKIE}={id}"))]), 1)
                .is_some()
        );
    }

    #[test]
    fn signed_in_requests_name_the_monitor_by_address_or_a_listed_name() {
        let sessions = Sessions::new(false, vec!["monitor.hospital.example:8088".into()]);
        for ok in [
            "127.0.0.1:8088",
            "[::1]:8088",
            "10.0.0.5",
            "localhost:8088",
            "Monitor.Hospital.Example:8088",
        ] {
            assert!(sessions.host_allowed(&headers(&[("host", ok)])), "{ok}");
        }
        for bad in [
            "evil.example:8088",
            "monitor.hospital.example:9",
            "localhost.evil:8088",
        ] {
            assert!(!sessions.host_allowed(&headers(&[("host", bad)])), "{bad}");
        }
        assert!(!sessions.host_allowed(&HeaderMap::new()));
    }
}
