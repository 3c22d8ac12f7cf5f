//! Embedding on other sites: the REST bodies of site keys (`POST /api/sites`, `GET /api/sites`), the
//! query of the embed frame (`GET /embed/frame`), a visitor's share (`/api/embed/share-codes`,
//! `/api/embed/shares`), and the rules both ends apply to what a site owner or a
//! host page may ask for, so that the account page, the server and the frame agree on them.
//!
//! A *site key* names a site that embeds `/embed.js`: its owner (who earns what its visitors' browsers
//! compute), a name shown to visitors, and the origins whose pages may frame the widget. See
//! `docs/embed.md`.

use serde::{Deserialize, Serialize};

/// The most characters of a site's name (shown to visitors in the consent widget).
pub const MAX_SITE_NAME_CHARS: usize = 100;
/// The most origins one site key lists.
pub const MAX_SITE_ORIGINS: usize = 16;
/// The most characters of one origin as typed (a DNS name has at most 253).
pub const MAX_ORIGIN_CHARS: usize = 300;
/// Every site key starts with this, so that one is easy to recognise.
pub const SITE_KEY_PREFIX: &str = "site_";
/// A site key's random part: 32 random bytes in base64url without padding.
pub const SITE_KEY_RANDOM_CHARS: usize = 43;

/// The CPU throttle of an embedded volunteer: the share of time its executor computes, in percent. A
/// host page may ask for less or more within these bounds (`data-throttle`), never more than the most.
pub const EMBED_DEFAULT_THROTTLE: u32 = 30;
pub const EMBED_MIN_THROTTLE: u32 = 10;
pub const EMBED_MAX_THROTTLE: u32 = 50;
/// Executor threads of an embedded volunteer (`data-threads`).
pub const EMBED_DEFAULT_THREADS: u32 = 1;
pub const EMBED_MAX_THREADS: u32 = 2;

/// `POST /api/sites`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SiteRequest {
    /// Shown to visitors as who earns ("Donating to <name>"): 1 to 100 characters.
    pub name: String,
    /// The origins whose pages may show the widget, such as `https://blog.example` (scheme, host and
    /// an optional port; no path): 1 to 16 of them.
    pub origins: Vec<String>,
}

/// A site key, as created or listed, with its statistics (kept as the site's visitors' work is paid,
/// never summed over history).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SiteInfo {
    /// The key, for `data-site`; public by nature (it is in the site's pages).
    pub key: String,
    pub name: String,
    /// Normalised: lowercase, without a default port or a trailing slash.
    pub origins: Vec<String>,
    /// The one line to paste into the site's pages.
    pub snippet: String,
    pub created_at_ms: u64,
    /// When it was revoked; a revoked key's widget shows a neutral message and computes nothing.
    pub revoked_at_ms: Option<u64>,
    /// Visitors who opted in (each browser that registered a volunteer identity for this site).
    pub visitors: u64,
    /// Validated replicas its visitors computed, their compute time (as they reported it, each capped by
    /// its job's time limit) and work units.
    pub validated_replicas: u64,
    pub compute_ms: u64,
    pub work_units: u64,
    /// What those replicas earned the site's owner.
    pub earned_millicredits: i64,
}

/// The share of a site's visitor's credits that goes to the visitor's own account once they take it
/// (`POST /api/embed/shares`), in percent of the volunteer side of each payment; the rest goes to the
/// site's owner. The visitor's part is rounded down, so the owner never gets less than half.
pub const VISITOR_SHARE_PERCENT: u32 = 50;
/// How long a share code lives: the visitor confirms it on a page the widget opens at once.
pub const SHARE_CODE_TTL_MS: u64 = 10 * 60 * 1000;
/// An identity gets a new share code at most this often (each is a write).
pub const SHARE_CODE_INTERVAL_MS: u64 = 5_000;
/// Share codes start with this, then [`SITE_KEY_RANDOM_CHARS`] random URL-safe characters.
pub const SHARE_CODE_PREFIX: &str = "share_";

/// `POST /api/embed/share-codes` (the widget, as its visitor's identity): a single-use code for the
/// page where the visitor, signed in on the coordinator's origin, takes their share.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ShareCode {
    pub code: String,
    /// After this (the server's clock) the code is refused; a new one replaces it before then too.
    pub expires_at_ms: u64,
    /// The site the identity volunteers for.
    pub site_name: String,
    /// [`VISITOR_SHARE_PERCENT`].
    pub share_percent: u32,
}

/// `POST /api/embed/shares`: the signed-in visitor takes their share of what the identity that issued
/// `code` earns from now on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ShareRequest {
    pub code: String,
}

/// What taking a share did (`POST /api/embed/shares`), or would do (`POST /api/embed/shares/preview`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ShareTaken {
    pub site_name: String,
    /// [`VISITOR_SHARE_PERCENT`]: this part of each validated replica's volunteer share goes to the caller.
    pub share_percent: u32,
}

/// Whether `text` has the shape of a share code (it may still be unknown, used or expired).
pub fn is_share_code(text: &str) -> bool {
    text.strip_prefix(SHARE_CODE_PREFIX).is_some_and(is_random_part)
}

/// Splits the volunteer side of a payment to a site's visitor who took their share: (the owner's, the
/// visitor's).
pub fn split_visitor_share(share: i64) -> (i64, i64) {
    let visitor = (i128::from(share.max(0)) * i128::from(VISITOR_SHARE_PERCENT) / 100) as i64;
    (share - visitor, visitor)
}

/// `GET /embed/frame`: what `embed.js` puts in the frame's URL. Every value is a string read leniently
/// (a host page's mistake gives the default, not an error page in the widget) and clamped to its bounds.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
#[cfg_attr(feature = "openapi", into_params(parameter_in = Query))]
pub struct FrameQuery {
    /// The site key.
    #[serde(default)]
    pub site: Option<String>,
    /// `data-throttle`: 10 to 50 (percent), default 30.
    #[serde(default)]
    pub throttle: Option<String>,
    /// `data-threads`: 1 or 2, default 1.
    #[serde(default)]
    pub threads: Option<String>,
    /// The host page's origin, as its script saw it: a page whose origin is not on the key's list gets
    /// the neutral message. (The browser enforces the list whatever this says, with `frame-ancestors`.)
    #[serde(default)]
    pub origin: Option<String>,
}

/// The throttle and threads an embedded volunteer runs with, within bounds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EmbedSettings {
    pub throttle_percent: u32,
    pub threads: u32,
}

impl EmbedSettings {
    /// Reads a host page's `data-throttle` and `data-threads`: a whole number is clamped to its bounds;
    /// anything else (missing, negative, not a number, absurdly long) gives the default.
    pub fn from_options(throttle: Option<&str>, threads: Option<&str>) -> EmbedSettings {
        EmbedSettings {
            throttle_percent: clamped(throttle, EMBED_MIN_THROTTLE, EMBED_MAX_THROTTLE, EMBED_DEFAULT_THROTTLE),
            threads: clamped(threads, 1, EMBED_MAX_THREADS, EMBED_DEFAULT_THREADS),
        }
    }
}

fn clamped(value: Option<&str>, min: u32, max: u32, default: u32) -> u32 {
    match value.map(str::trim) {
        Some(text) if !text.is_empty() && text.len() <= 10 && text.bytes().all(|byte| byte.is_ascii_digit()) => {
            text.parse::<u32>().map_or(max, |number| number.clamp(min, max))
        }
        _ => default,
    }
}

/// Whether `text` has the shape of a site key (it may still be unknown or revoked).
pub fn is_site_key(text: &str) -> bool {
    text.strip_prefix(SITE_KEY_PREFIX).is_some_and(is_random_part)
}

/// The random part of keys and codes: [`SITE_KEY_RANDOM_CHARS`] URL-safe base64 characters.
fn is_random_part(random: &str) -> bool {
    random.len() == SITE_KEY_RANDOM_CHARS
        && random.bytes().all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_')
}

/// Why a site's name is refused, if it is.
pub fn site_name_problem(name: &str) -> Option<String> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > MAX_SITE_NAME_CHARS {
        return Some(format!("a site's name has 1 to {MAX_SITE_NAME_CHARS} characters"));
    }
    if name.chars().any(char::is_control) {
        return Some("a site's name cannot contain control characters".to_owned());
    }
    None
}

/// The origins of a site key, normalised and without repeats, or why they are refused.
pub fn normalize_origins(origins: &[String]) -> Result<Vec<String>, String> {
    if origins.is_empty() || origins.len() > MAX_SITE_ORIGINS {
        return Err(format!("a site key lists 1 to {MAX_SITE_ORIGINS} origins"));
    }
    let mut normalized: Vec<String> = Vec::with_capacity(origins.len());
    for origin in origins {
        let origin = normalize_origin(origin)?;
        if !normalized.contains(&origin) {
            normalized.push(origin);
        }
    }
    Ok(normalized)
}

/// An origin as browsers serialise it (`scheme://host[:port]`, lowercase, without the scheme's default
/// port), from what a site owner typed; a trailing `/` is allowed and dropped. Anything else (a path, a
/// query, user information, a wildcard, a scheme other than http and https, a name that is not ASCII)
/// is refused with a message that says what to write. Only these characters reach a response header
/// (`frame-ancestors`), so nothing typed can add a directive there.
pub fn normalize_origin(typed: &str) -> Result<String, String> {
    let typed = typed.trim();
    let refuse = |why: &str| Err(format!("{typed:?} is not an origin: {why}; write it as https://blog.example"));
    if typed.chars().count() > MAX_ORIGIN_CHARS {
        return Err(format!("an origin has at most {MAX_ORIGIN_CHARS} characters"));
    }
    let Some((scheme, rest)) = typed.split_once("://") else {
        return refuse("it needs a scheme, http:// or https://");
    };
    let scheme = scheme.to_ascii_lowercase();
    let default_port = match scheme.as_str() {
        "https" => 443,
        "http" => 80,
        _ => return refuse("only http:// and https:// pages can embed the widget"),
    };
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    if authority.contains(['/', '?', '#']) {
        return refuse("an origin has no path, query or fragment");
    }
    if authority.contains('@') {
        return refuse("an origin has no user name or password");
    }
    if authority.contains('*') {
        return refuse("wildcards are not allowed; list each origin");
    }
    if !authority.is_ascii() {
        return refuse("write an internationalised name in its ASCII form (xn--...)");
    }
    let authority = authority.to_ascii_lowercase();
    // The port follows the last colon outside an IPv6 address's brackets.
    let (host, port) = match authority.rfind(':') {
        Some(colon) if !authority[colon..].contains(']') => (&authority[..colon], Some(&authority[colon + 1..])),
        _ => (authority.as_str(), None),
    };
    let host = if let Some(inside) = host.strip_prefix('[').and_then(|host| host.strip_suffix(']')) {
        match inside.parse::<std::net::Ipv6Addr>() {
            Ok(address) => format!("[{address}]"),
            Err(_) => return refuse("the IPv6 address in brackets is not valid"),
        }
    } else if is_ipv4_or_dns_name(host) {
        host.to_owned()
    } else {
        return refuse("the host name is not valid");
    };
    let port = match port {
        None => None,
        Some(digits) if !digits.is_empty() && digits.len() <= 5 && digits.bytes().all(|byte| byte.is_ascii_digit()) => {
            match digits.parse::<u16>() {
                Ok(0) | Err(_) => return refuse("the port is not between 1 and 65535"),
                Ok(port) if port == default_port => None,
                Ok(port) => Some(port),
            }
        }
        Some(_) => return refuse("the port is not between 1 and 65535"),
    };
    Ok(match port {
        Some(port) => format!("{scheme}://{host}:{port}"),
        None => format!("{scheme}://{host}"),
    })
}

/// An IPv4 address, or a DNS name in lowercase ASCII: dot-separated labels of letters, digits and inner
/// hyphens, the last not all digits (browsers read such a host as an IPv4 address).
fn is_ipv4_or_dns_name(host: &str) -> bool {
    if host.rsplit('.').next().is_some_and(|last| last.bytes().all(|byte| byte.is_ascii_digit())) {
        return host.parse::<std::net::Ipv4Addr>().is_ok();
    }
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.bytes().all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'-')
        })
}

/// The snippet a site pastes into its pages, for a server reached at `public_origin`.
pub fn snippet(public_origin: &str, key: &str) -> String {
    format!(r#"<script src="{public_origin}/embed.js" data-site="{key}" async></script>"#)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_visitors_share_never_exceeds_half_and_nothing_is_lost_in_the_split() {
        for share in [0, 1, 2, 3, 99, 100, 101, 9_000, i64::MAX] {
            let (owner, visitor) = split_visitor_share(share);
            assert_eq!(owner + visitor, share, "{share}");
            assert!(visitor <= owner && visitor >= 0, "{share}: {owner} {visitor}");
        }
        assert_eq!(split_visitor_share(101), (51, 50));
        assert!(is_share_code(&format!("{SHARE_CODE_PREFIX}{}", "a".repeat(SITE_KEY_RANDOM_CHARS))));
        assert!(!is_share_code(&format!("{SITE_KEY_PREFIX}{}", "a".repeat(SITE_KEY_RANDOM_CHARS))));
        assert!(!is_share_code("share_x"));
    }

    #[test]
    fn origins_are_normalised_as_browsers_serialise_them() {
        let cases = [
            ("https://blog.example", "https://blog.example"),
            ("  HTTPS://Blog.Example/ ", "https://blog.example"),
            ("https://blog.example:443", "https://blog.example"),
            ("http://blog.example:80", "http://blog.example"),
            ("http://127.0.0.1:8123", "http://127.0.0.1:8123"),
            ("http://localhost:3000", "http://localhost:3000"),
            ("https://[::1]:8443", "https://[::1]:8443"),
            ("https://[2001:DB8::1]", "https://[2001:db8::1]"),
            ("https://xn--bcher-kva.example", "https://xn--bcher-kva.example"),
        ];
        for (typed, expected) in cases {
            assert_eq!(normalize_origin(typed).as_deref(), Ok(expected), "{typed}");
        }
    }

    #[test]
    fn anything_but_an_origin_is_refused_with_what_to_write() {
        let refused = [
            "blog.example",
            "ftp://blog.example",
            "javascript://blog.example",
            "https://blog.example/path",
            "https://blog.example/?q",
            "https://blog.example#x",
            "https://user:pass@blog.example",
            "https://*.blog.example",
            "https://bücher.example",
            "https://blog..example",
            "https://-blog.example",
            "https://blog.example:0",
            "https://blog.example:65536",
            "https://blog.example:",
            "https://blog.example:8o",
            "https://[::1",
            "https://",
            "https://blog.example; script-src *",
            "https://blog example",
            "https://blog.example,https://evil.example",
            "https://999.1.1.1",
        ];
        for typed in refused {
            let problem = normalize_origin(typed).expect_err(typed);
            assert!(problem.contains("https://blog.example") || problem.contains("at most"), "{typed}: {problem}");
        }
        assert!(normalize_origin(&format!("https://{}.example", "a".repeat(400))).is_err());
    }

    #[test]
    fn a_key_lists_one_to_sixteen_origins_each_once() {
        assert!(normalize_origins(&[]).is_err());
        let many: Vec<String> = (0..17).map(|port| format!("http://localhost:{}", 1000 + port)).collect();
        assert!(normalize_origins(&many).is_err());
        let twice = ["https://a.example".to_owned(), "HTTPS://A.example/".to_owned(), "http://a.example".to_owned()];
        assert_eq!(normalize_origins(&twice).unwrap(), ["https://a.example", "http://a.example"]);
    }

    #[test]
    fn names_are_bounded() {
        assert_eq!(site_name_problem("My blog"), None);
        assert!(site_name_problem("  ").is_some());
        assert!(site_name_problem(&"x".repeat(MAX_SITE_NAME_CHARS + 1)).is_some());
        assert!(site_name_problem("a\u{0}b").is_some());
    }

    #[test]
    fn host_pages_cannot_ask_for_more_than_the_bounds() {
        let read = |throttle, threads| EmbedSettings::from_options(throttle, threads);
        assert_eq!(read(None, None), EmbedSettings { throttle_percent: 30, threads: 1 });
        assert_eq!(read(Some("45"), Some("2")), EmbedSettings { throttle_percent: 45, threads: 2 });
        assert_eq!(read(Some("100"), Some("64")), EmbedSettings { throttle_percent: 50, threads: 2 });
        assert_eq!(read(Some("99999999999999999999"), None).throttle_percent, 30);
        assert_eq!(read(Some("4294967296"), None).throttle_percent, 50);
        assert_eq!(read(Some("1"), Some("0")), EmbedSettings { throttle_percent: 10, threads: 1 });
        assert_eq!(read(Some("-5"), Some("two")), EmbedSettings { throttle_percent: 30, threads: 1 });
        assert_eq!(read(Some(""), Some("1.5")), EmbedSettings { throttle_percent: 30, threads: 1 });
    }

    #[test]
    fn keys_have_one_shape() {
        let key = format!("{SITE_KEY_PREFIX}{}", "a".repeat(SITE_KEY_RANDOM_CHARS));
        assert!(is_site_key(&key));
        assert!(!is_site_key(&key[..key.len() - 1]));
        assert!(!is_site_key(&format!("{SITE_KEY_PREFIX}{}", "a/".repeat(22))[..48]));
        assert!(!is_site_key("site_"));
        assert_eq!(
            snippet("https://compute.example", &key),
            format!(r#"<script src="https://compute.example/embed.js" data-site="{key}" async></script>"#)
        );
    }
}
