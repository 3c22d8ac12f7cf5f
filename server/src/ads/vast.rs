//! Reading an IAB VAST document: the InLine linear ad's `MediaFile` (URL and type), its `Duration` and
//! its `Impression` URLs. Nothing else of VAST is used, and nothing is fetched: a `Wrapper`, which only
//! points to another document, is refused, and the `MediaFile` is played by the viewer's browser.
//!
//! Accepted: a `<VAST version="4.x">` (or 3.x, whose InLine linear ads read the same) whose first `<Ad>`
//! with an `<InLine>` has a `<Creative>` with a `<Linear>` that has a `<Duration>` and at least one
//! progressive `<MediaFile>` of a type browsers play. Everything else is refused with a message that
//! names what is missing. The XML is parsed without DTDs (so without entity expansion) and within a node
//! budget, after its size was bounded.

use roxmltree::{Document, Node, ParsingOptions};

use crate::format::human_bytes;

/// The largest VAST document accepted (real ones are a few KiB).
pub const MAX_VAST_BYTES: usize = 256 * 1024;
/// XML nodes parsed at most, so that a document of tiny elements cannot take much memory.
const MAX_NODES: u32 = 20_000;
/// `<Impression>` URLs kept at most.
pub const MAX_IMPRESSION_URLS: usize = 16;
/// The longest URL accepted (MediaFile or Impression).
pub const MAX_URL_CHARS: usize = 2048;
/// The media types of a `<MediaFile>` that browsers play in a `<video>` element.
pub const PLAYABLE_TYPES: &[&str] = &["video/mp4", "video/webm", "video/ogg"];

/// What a campaign keeps of a VAST creative.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VastCreative {
    /// The `MediaFile` the viewer's browser plays (http or https).
    pub media_url: String,
    /// Its `type`, one of [`PLAYABLE_TYPES`].
    pub mime: String,
    /// The `<Duration>` of the linear creative.
    pub duration_ms: u64,
    /// The `<Impression>` URLs of the InLine ad, for the player to request as VAST says.
    pub impression_urls: Vec<String>,
}

/// Why a VAST document was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum VastError {
    #[error("the VAST document is {}, more than the limit of {}", human_bytes(*size as u64), human_bytes(MAX_VAST_BYTES as u64))]
    TooLarge { size: usize },
    #[error("the VAST document is not well-formed XML: {0}")]
    Malformed(String),
    /// Well-formed, but not an InLine linear ad this server can show; the message names what is missing.
    #[error("{0}")]
    Unusable(String),
}

fn unusable(message: impl Into<String>) -> VastError {
    VastError::Unusable(message.into())
}

/// Reads the InLine linear ad of a VAST document.
pub fn parse(document: &str) -> Result<VastCreative, VastError> {
    if document.len() > MAX_VAST_BYTES {
        return Err(VastError::TooLarge { size: document.len() });
    }
    let options = ParsingOptions { allow_dtd: false, nodes_limit: MAX_NODES, ..ParsingOptions::default() };
    let document =
        Document::parse_with_options(document, options).map_err(|error| VastError::Malformed(error.to_string()))?;
    let root = document.root_element();
    if root.tag_name().name() != "VAST" {
        return Err(unusable(format!("the document's root element is <{}>, not <VAST>", root.tag_name().name())));
    }
    match root.attribute("version") {
        None => return Err(unusable("the <VAST> element has no version attribute; send a VAST 4 document")),
        Some(version) if !(version.starts_with("4") || version.starts_with("3")) => {
            return Err(unusable(format!("VAST version {version:?} is not supported; send a VAST 4 document")));
        }
        Some(_) => {}
    }
    let ads: Vec<Node<'_, '_>> = children(root, "Ad").collect();
    if ads.is_empty() {
        return Err(unusable("the VAST document has no <Ad> (an empty VAST answer has no ad to show)"));
    }
    let Some(inline) = ads.iter().find_map(|ad| child(*ad, "InLine")) else {
        if ads.iter().any(|ad| child(*ad, "Wrapper").is_some()) {
            return Err(unusable(
                "the <Ad> is a <Wrapper>, which only points to another VAST document; this server fetches \
                 nothing, so send the InLine document the wrapper points to",
            ));
        }
        return Err(unusable("the <Ad> has no <InLine>"));
    };
    let Some(linear) = child(inline, "Creatives")
        .into_iter()
        .flat_map(|creatives| children(creatives, "Creative"))
        .find_map(|creative| child(creative, "Linear"))
    else {
        return Err(unusable(
            "the <InLine> has no <Creatives><Creative><Linear> (only linear video ads are supported, not \
             companion or non-linear ones)",
        ));
    };
    let Some(duration) = child(linear, "Duration") else {
        return Err(unusable("the <Linear> creative has no <Duration>"));
    };
    let duration_ms = parse_duration(&text(duration))?;
    let media_files: Vec<Node<'_, '_>> =
        child(linear, "MediaFiles").into_iter().flat_map(|files| children(files, "MediaFile")).collect();
    if media_files.is_empty() {
        return Err(unusable("the <Linear> creative has no <MediaFiles><MediaFile>"));
    }
    let playable = media_files.iter().find(|file| {
        let media_type = file.attribute("type").unwrap_or_default().trim().to_ascii_lowercase();
        let progressive = file.attribute("delivery").is_none_or(|delivery| delivery.trim() == "progressive");
        let scripted = file.attribute("apiFramework").is_some();
        PLAYABLE_TYPES.contains(&media_type.as_str()) && progressive && !scripted
    });
    let Some(media_file) = playable else {
        let found: Vec<String> = media_files
            .iter()
            .map(|file| {
                format!(
                    "{} ({})",
                    file.attribute("type").unwrap_or("no type"),
                    file.attribute("delivery").unwrap_or("no delivery")
                )
            })
            .collect();
        return Err(unusable(format!(
            "no <MediaFile> is a progressive video of a type browsers play ({}); found: {}",
            PLAYABLE_TYPES.join(", "),
            found.join(", ")
        )));
    };
    let media_url = checked_url(&text(*media_file), "the <MediaFile>")?;
    let mime = media_file.attribute("type").unwrap_or_default().trim().to_ascii_lowercase();
    let mut impression_urls = Vec::new();
    for impression in children(inline, "Impression") {
        let url = text(impression);
        // VAST allows an empty <Impression> (an ad server's placeholder): it names nothing to request.
        if url.is_empty() {
            continue;
        }
        if impression_urls.len() == MAX_IMPRESSION_URLS {
            return Err(unusable(format!("the <InLine> has more than {MAX_IMPRESSION_URLS} <Impression> URLs")));
        }
        impression_urls.push(checked_url(&url, "an <Impression>")?);
    }
    Ok(VastCreative { media_url, mime, duration_ms, impression_urls })
}

/// The element children of `node` with the local name `name` (any namespace: VAST 4 documents may
/// carry `xmlns="http://www.iab.com/VAST"`, older ones none).
fn children<'a, 'input>(node: Node<'a, 'input>, name: &'static str) -> impl Iterator<Item = Node<'a, 'input>> {
    node.children().filter(move |child| child.is_element() && child.tag_name().name() == name)
}

fn child<'a, 'input>(node: Node<'a, 'input>, name: &'static str) -> Option<Node<'a, 'input>> {
    children(node, name).next()
}

/// An element's text (CDATA included), trimmed.
fn text(node: Node<'_, '_>) -> String {
    node.children()
        .filter(|child| child.is_text())
        .filter_map(|child| child.text())
        .collect::<String>()
        .trim()
        .to_owned()
}

/// An absolute http(s) URL of bounded length, without spaces or control characters.
fn checked_url(url: &str, what: &str) -> Result<String, VastError> {
    if url.is_empty() {
        return Err(unusable(format!("{what} has no URL")));
    }
    if url.chars().count() > MAX_URL_CHARS {
        return Err(unusable(format!("{what}'s URL is longer than {MAX_URL_CHARS} characters")));
    }
    let lower = url.to_ascii_lowercase();
    let rest = lower.strip_prefix("https://").or_else(|| lower.strip_prefix("http://"));
    let host_present = rest.is_some_and(|rest| rest.split(['/', '?', '#']).next().is_some_and(|host| !host.is_empty()));
    if !host_present || url.chars().any(|character| character.is_whitespace() || character.is_control()) {
        return Err(unusable(format!("{what}'s URL {url:?} is not an absolute http or https URL")));
    }
    Ok(url.to_owned())
}

/// `HH:MM:SS` or `HH:MM:SS.mmm` in milliseconds.
pub fn parse_duration(text: &str) -> Result<u64, VastError> {
    let refuse = || unusable(format!("the <Duration> {text:?} is not HH:MM:SS or HH:MM:SS.mmm"));
    let (clock, fraction) = match text.split_once('.') {
        Some((clock, fraction)) => (clock, Some(fraction)),
        None => (text, None),
    };
    let parts: Vec<&str> = clock.split(':').collect();
    let [hours, minutes, seconds] = parts[..] else {
        return Err(refuse());
    };
    let number = |part: &str, digits: std::ops::RangeInclusive<usize>, below: u64| -> Result<u64, VastError> {
        if !digits.contains(&part.len()) || !part.bytes().all(|byte| byte.is_ascii_digit()) {
            return Err(refuse());
        }
        let value: u64 = part.parse().map_err(|_| refuse())?;
        if value >= below { Err(refuse()) } else { Ok(value) }
    };
    let milliseconds = match fraction {
        None => 0,
        Some(fraction) => {
            // ".5" is half a second, ".250" a quarter.
            let value = number(fraction, 1..=3, 1000)?;
            value * 10u64.pow(3 - fraction.len() as u32)
        }
    };
    let hours = number(hours, 1..=2, 100)?;
    let minutes = number(minutes, 2..=2, 60)?;
    let seconds = number(seconds, 2..=2, 60)?;
    Ok(((hours * 60 + minutes) * 60 + seconds) * 1000 + milliseconds)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIXTURE: &str = include_str!("../../tests/fixtures/vast4-inline.xml");
    const WRAPPER: &str = include_str!("../../tests/fixtures/vast4-wrapper.xml");

    #[test]
    fn the_vast_4_fixture_gives_its_media_file_duration_and_impressions() {
        let creative = parse(FIXTURE).unwrap();
        assert_eq!(
            creative,
            VastCreative {
                media_url: "https://media.example.com/ads/spring-sale-1280x720.mp4".to_owned(),
                mime: "video/mp4".to_owned(),
                duration_ms: 15_500,
                impression_urls: vec![
                    "https://track.example.com/impression?ad=spring-sale&cb=[CACHEBUSTING]".to_owned(),
                    "https://other-tracker.example.net/pixel.gif".to_owned(),
                ],
            }
        );
    }

    #[test]
    fn a_wrapper_is_refused_because_nothing_is_fetched() {
        let error = parse(WRAPPER).unwrap_err().to_string();
        assert!(error.contains("<Wrapper>") && error.contains("fetches nothing"), "{error}");
    }

    #[test]
    fn what_is_missing_is_named() {
        let without = |element: &str| {
            let start = FIXTURE.find(&format!("<{element}")).unwrap();
            let end_tag = format!("</{element}>");
            let end = FIXTURE.find(&end_tag).unwrap() + end_tag.len();
            format!("{}{}", &FIXTURE[..start], &FIXTURE[end..])
        };
        for (document, expected) in [
            (without("MediaFiles"), "has no <MediaFiles><MediaFile>"),
            (without("Duration"), "has no <Duration>"),
            (without("Creatives"), "has no <Creatives><Creative><Linear>"),
            (FIXTURE.replace("00:00:15.500", "15 seconds"), "is not HH:MM:SS"),
            (FIXTURE.replace("type=\"video/mp4\"", "type=\"application/javascript\""), "found: video/webm (streaming)"),
            (
                FIXTURE.replace("https://media.example.com", "javascript:alert(1)//"),
                "not an absolute http or https URL",
            ),
            (FIXTURE.replace("version=\"4.2\"", "version=\"2.0\""), "VAST version \"2.0\" is not supported"),
            ("<VAST version=\"4.0\"></VAST>".to_owned(), "has no <Ad>"),
            ("<VMAP/>".to_owned(), "root element is <VMAP>"),
            ("<VAST version=\"4.0\"><Ad><InLine>".to_owned(), "not well-formed XML"),
            ("<!DOCTYPE VAST [<!ENTITY a \"b\">]><VAST version=\"4.0\"/>".to_owned(), "not well-formed XML"),
        ] {
            let error = parse(&document).unwrap_err().to_string();
            assert!(error.contains(expected), "expected {expected:?}, got {error:?}");
        }
        let huge = format!("<VAST version=\"4.0\">{}</VAST>", " ".repeat(MAX_VAST_BYTES));
        assert!(matches!(parse(&huge), Err(VastError::TooLarge { .. })));
    }

    #[test]
    fn durations_are_hours_minutes_seconds_and_milliseconds() {
        assert_eq!(parse_duration("00:00:15"), Ok(15_000));
        assert_eq!(parse_duration("00:01:02.250"), Ok(62_250));
        assert_eq!(parse_duration("01:00:00.5"), Ok(3_600_500));
        for bad in ["", "15", "00:15", "00:60:00", "00:00:60", "00:00:1", "00:00:01.", "00:00:01.1234", "-1:00:00"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }
}
