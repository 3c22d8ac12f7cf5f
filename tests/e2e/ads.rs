//! Rewarded ads in headless Chromium, the whole flow as people meet it: a sponsor creates a campaign on
//! the account page with an image, an administrator approves it, an anonymous visitor watches it on the
//! donate page and is paid from the campaign's escrow only after the server's own clock agrees, and the
//! sponsor sees the view and the spend. Screenshots of the ad being watched and of the sponsor's page.

use std::time::Duration;

use distributivecom_cli::chromium::Chromium;
use distributivecom_protocol::api::{CampaignStatus, CampaignsQuery, VolunteerCredential};

use crate::support::*;

/// A valid PNG of `width` × `height` pixels of one colour: zlib "stored" blocks, so no compressor is
/// needed, with the CRC-32 and Adler-32 the format asks for.
fn png(width: u32, height: u32, rgb: [u8; 3]) -> Vec<u8> {
    fn crc32(bytes: &[u8]) -> u32 {
        let mut crc = !0u32;
        for byte in bytes {
            crc ^= u32::from(*byte);
            for _ in 0..8 {
                crc = if crc & 1 == 1 { (crc >> 1) ^ 0xedb8_8320 } else { crc >> 1 };
            }
        }
        !crc
    }
    fn chunk(png: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
        png.extend_from_slice(&(data.len() as u32).to_be_bytes());
        let mut body = kind.to_vec();
        body.extend_from_slice(data);
        png.extend_from_slice(&body);
        png.extend_from_slice(&crc32(&body).to_be_bytes());
    }
    let mut raw = Vec::new();
    for _ in 0..height {
        // Each row: its filter type (0, none), then its pixels.
        raw.extend(std::iter::once(0).chain(std::iter::repeat_n(rgb, width as usize).flatten()));
    }
    let mut zlib = vec![0x78, 0x01];
    let blocks: Vec<&[u8]> = raw.chunks(65_535).collect();
    for (index, block) in blocks.iter().enumerate() {
        zlib.push(u8::from(index + 1 == blocks.len()));
        zlib.extend_from_slice(&(block.len() as u16).to_le_bytes());
        zlib.extend_from_slice(&(!(block.len() as u16)).to_le_bytes());
        zlib.extend_from_slice(block);
    }
    let (mut a, mut b) = (1u32, 0u32);
    for byte in &raw {
        a = (a + u32::from(*byte)) % 65_521;
        b = (b + a) % 65_521;
    }
    zlib.extend_from_slice(&((b << 16) | a).to_be_bytes());

    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut header = Vec::new();
    header.extend_from_slice(&width.to_be_bytes());
    header.extend_from_slice(&height.to_be_bytes());
    header.extend_from_slice(&[8, 2, 0, 0, 0]);
    chunk(&mut png, b"IHDR", &header);
    chunk(&mut png, b"IDAT", &zlib);
    chunk(&mut png, b"IEND", &[]);
    png
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sponsor_creates_a_campaign_on_the_web_and_a_visitor_is_paid_for_watching_it() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), &[]);
    let admin = server.client();
    let browser = Chromium::start().await.unwrap();
    let tab = browser.open_donate_page(&server.url).await.unwrap();

    // The sponsor signs up and creates a campaign on the account page with an image.
    browser.visit(&tab, &format!("{}/signup", server.url), "username").await.unwrap();
    browser.type_into(&tab, "username", "sponsor").await.unwrap();
    browser.type_into(&tab, "password", "a sponsor's passphrase").await.unwrap();
    browser.click(&tab, "submit").await.unwrap();
    browser.wait_for(&tab, "campaign-name").await.unwrap();
    let creative = dir.path().join("creative.png");
    std::fs::write(&creative, png(300, 120, [47, 111, 219])).unwrap();
    browser.type_into(&tab, "campaign-name", "Blue square").await.unwrap();
    browser.choose_files(&tab, "campaign-file", &[&creative]).await.unwrap();
    browser.type_into(&tab, "campaign-budget", "1").await.unwrap();
    browser.type_into(&tab, "campaign-reward", "0.4").await.unwrap();
    browser.type_into(&tab, "campaign-seconds", "1").await.unwrap();
    browser.type_into(&tab, "campaign-cap", "1").await.unwrap();
    browser.click(&tab, "create-campaign").await.unwrap();
    eventually("the campaign to be listed", Duration::from_secs(10), || async {
        browser
            .text(&tab, "campaigns")
            .await
            .is_ok_and(|text| text.contains("#1 Blue square") && text.contains("waiting for approval"))
    })
    .await;
    eventually("the budget to be held in escrow", Duration::from_secs(10), || async {
        browser.text(&tab, "escrowed").await.is_ok_and(|text| text == "1.000 credits")
    })
    .await;

    // Nobody sees it before an administrator approves it.
    let visitor = server.anonymous_client().register_volunteer().await.unwrap();
    assert!(server.anonymous_client().start_ad_view_as(&visitor, None).await.is_err(), "a pending campaign was shown");
    let pending = admin.campaigns(CampaignsQuery { pending: Some(true), ..CampaignsQuery::default() }).await.unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(admin.approve_campaign(pending[0].id).await.unwrap().status, CampaignStatus::Approved);
    browser.click(&tab, "logout").await.unwrap();
    browser.wait_for(&tab, "login-link").await.unwrap();

    // An anonymous visitor watches it on the donate page: the time counts while it is seen, and the
    // credit arrives once the minimum has passed.
    browser.visit(&tab, &format!("{}/donate", server.url), "watch-ad").await.unwrap();
    browser.click(&tab, "watch-ad").await.unwrap();
    browser.wait_for(&tab, "ad-creative").await.unwrap();
    eventually("the creative to show", Duration::from_secs(10), || async {
        browser
            .run_script(
                &tab,
                "const image = document.getElementById('ad-creative'); return image ? image.naturalWidth : 0;",
            )
            .await
            .is_ok_and(|width| width == 300)
    })
    .await;
    browser.screenshot(&tab, &workspace_root().join("docs/screenshots/ad-watching.png")).await.unwrap();
    browser.wait_for(&tab, "ad-credited").await.unwrap();
    assert_eq!(browser.text(&tab, "ad-credited").await.unwrap(), "Thank you: 0.400 credits credited.");
    browser.screenshot(&tab, &workspace_root().join("docs/screenshots/ad-credited.png")).await.unwrap();
    let saved = browser.run_script(&tab, "return localStorage.getItem('distributivecom.volunteer');").await.unwrap();
    let identity: VolunteerCredential =
        serde_json::from_str(saved.as_str().expect("the page registered an identity")).unwrap();
    assert_eq!(server.anonymous_client().volunteer_info(&identity).await.unwrap().balance_millicredits, 400);

    // The daily cap of one view: a second view is refused with the server's reason, and pays nothing.
    browser.click(&tab, "watch-ad").await.unwrap();
    browser.wait_for(&tab, "ad-error").await.unwrap();
    let refusal = browser.text(&tab, "ad-error").await.unwrap();
    assert!(!refusal.is_empty(), "a refusal says why");
    assert_eq!(server.anonymous_client().volunteer_info(&identity).await.unwrap().balance_millicredits, 400);

    // The sponsor sees the impression, the view and the spend; ending the campaign refunds the rest.
    browser.visit(&tab, &format!("{}/login", server.url), "username").await.unwrap();
    browser.type_into(&tab, "username", "sponsor").await.unwrap();
    browser.type_into(&tab, "password", "a sponsor's passphrase").await.unwrap();
    browser.click(&tab, "submit").await.unwrap();
    browser.wait_for(&tab, "campaigns").await.unwrap();
    eventually("the view to be counted", Duration::from_secs(10), || async {
        let row = browser.run_script(&tab, "const row = document.querySelector('#campaigns tbody tr'); return row ? Array.from(row.cells).map(cell => cell.textContent) : [];").await;
        row.is_ok_and(|row| row.as_array().is_some_and(|cells| cells.len() >= 6 && cells[1] == "showing" && cells[3] == "1" && cells[4] == "0.400 credits" && cells[5] == "0.600 credits"))
    })
    .await;
    browser.run_script(&tab, "document.getElementById('campaigns-heading').scrollIntoView();").await.unwrap();
    browser.screenshot(&tab, &workspace_root().join("docs/screenshots/ad-campaigns.png")).await.unwrap();
    browser.click(&tab, "end-campaign-1").await.unwrap();
    let ended = async {
        for _ in 0..100 {
            let listed = browser.text(&tab, "campaigns").await.unwrap_or_default();
            let escrowed = browser.text(&tab, "escrowed").await.unwrap_or_default();
            if listed.contains("ended") && escrowed == "0.000 credits" {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let error = browser
            .run_script(&tab, "const e = document.getElementById('campaign-error'); return e ? e.textContent : null;")
            .await;
        Err(format!(
            "{:?} / {:?} / {error:?}",
            browser.text(&tab, "campaigns").await,
            browser.text(&tab, "escrowed").await
        ))
    };
    ended.await.expect("ending the campaign refunds the rest of its escrow");
    assert_ledger_conserved(&server.database());
}
