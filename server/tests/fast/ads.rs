//! Rewarded ads over HTTP, in process: a campaign's budget goes into escrow and comes out only as
//! rewards for views the server's own clock and records verify, or as the refund of its rest; every
//! refused completion (forged, another viewer's, replayed, early, expired, over the cap, budget spent)
//! says why and moves nothing; and every number and size a sponsor sends is bounded. The ads' clock is
//! the TestApp's manual one, moved by hand: nothing here sleeps.

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};

use crate::support::*;

const VAST: &str = include_str!("../fixtures/vast4-inline.xml");
const WRAPPER: &str = include_str!("../fixtures/vast4-wrapper.xml");

/// The start of a PNG file: the signature and an IHDR chunk's header.
fn png() -> Vec<u8> {
    b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01\x08\x06\0\0\0".to_vec()
}

fn image_campaign(budget: i64, reward: i64, min_view_ms: u64, cap: u32) -> Value {
    json!({
        "name": "Spring sale",
        "creative": { "kind": "image", "mime": "image/png", "data": STANDARD.encode(png()) },
        "budget_millicredits": budget,
        "reward_millicredits": reward,
        "min_view_ms": min_view_ms,
        "daily_cap_per_viewer": cap,
    })
}

/// Creates a campaign as the token's account and returns its id.
async fn create(app: &TestApp, token: &str, body: Value) -> u64 {
    let answer = app.post("/api/campaigns").token(token).json(body).send().await;
    assert_eq!(answer.status, 201, "{}", String::from_utf8_lossy(&answer.body));
    assert_eq!(answer.json()["status"], "pending");
    answer.json()["id"].as_u64().unwrap()
}

/// Creates and approves a campaign; returns its id.
async fn running(app: &TestApp, token: &str, body: Value) -> u64 {
    let id = create(app, token, body).await;
    let approved = app.admin("POST", &format!("/api/campaigns/{id}/approve")).send().await;
    assert_eq!(approved.status, 200, "{}", String::from_utf8_lossy(&approved.body));
    assert_eq!(approved.json()["status"], "approved");
    id
}

/// Starts a view as `auth` (a full Authorization header value) and returns the answer.
async fn start(app: &TestApp, auth: &str, body: Value) -> Answer {
    app.post("/api/ad-views").header("authorization", auth).json(body).send().await
}

/// Starts a view that must be issued; returns its token.
async fn token_for(app: &TestApp, auth: &str, campaign: u64) -> String {
    let answer = start(app, auth, json!({ "campaign": campaign })).await;
    assert_eq!(answer.status, 201, "{}", String::from_utf8_lossy(&answer.body));
    answer.json()["token"].as_str().unwrap().to_owned()
}

async fn complete(app: &TestApp, auth: &str, token: &str) -> Answer {
    app.post(&format!("/api/ad-views/{token}/complete")).header("authorization", auth).send().await
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

async fn balance(app: &TestApp, token: &str) -> i64 {
    app.get("/api/account").token(token).send().await.json()["balance_millicredits"].as_i64().unwrap()
}

/// Every kept balance and how many ledger entries there are: what a refusal must leave as it was.
fn money(app: &TestApp) -> (BTreeMap<String, i64>, i64) {
    let connection = rusqlite::Connection::open(app.database()).unwrap();
    let mut statement = connection.prepare("SELECT account, balance FROM ledger_accounts").unwrap();
    let balances = statement
        .query_map([], |row| Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let entries = connection.query_row("SELECT COUNT(*) FROM ledger", [], |row| row.get(0)).unwrap();
    (balances, entries)
}

/// The ledger sums to zero, nothing is overdrawn, and the kept balances are the entries' sums.
fn assert_conserved(app: &TestApp) {
    let connection = rusqlite::Connection::open(app.database()).unwrap();
    let totals = distributivecom_server::store::ledger::totals(&connection).unwrap();
    assert!(totals.conserved(), "{totals:?}");
    assert_eq!(distributivecom_server::store::ledger::audit(&connection).unwrap(), vec![]);
}

async fn campaign(app: &TestApp, token: &str, id: u64) -> Value {
    let list = app.get("/api/campaigns").token(token).send().await;
    assert_eq!(list.status, 200);
    list.json().as_array().unwrap().iter().find(|campaign| campaign["id"] == id).cloned().unwrap()
}

#[tokio::test]
async fn a_campaign_pays_verified_views_from_its_escrow_and_refunds_the_rest_when_it_ends() {
    let app = TestApp::new().start().await;
    let sponsor = app.user_token("sponsor").await;
    let viewer = app.user_token("viewer").await;
    let start_balance = balance(&app, &sponsor).await;

    let id = create(&app, &sponsor, image_campaign(10_000, 1_000, 5_000, 2)).await;
    assert_eq!(balance(&app, &sponsor).await, start_balance - 10_000, "the budget left the balance at once");
    let account = app.get("/api/account").token(&sponsor).send().await.json();
    assert_eq!(account["escrowed_millicredits"], 10_000, "and is held in the campaign's escrow");
    // Pending: nobody is shown it, and its creative is its sponsor's and the administrators' to see.
    assert_eq!(start(&app, &bearer(&viewer), json!({})).await.status, 404);
    assert_eq!(app.get(&format!("/api/campaigns/{id}/creative")).send().await.status, 404);
    assert_eq!(app.get(&format!("/api/campaigns/{id}/creative")).token(&sponsor).send().await.status, 200);
    let not_admin = app.post(&format!("/api/campaigns/{id}/approve")).token(&viewer).send().await;
    assert_eq!((not_admin.status, not_admin.error()), (403, "only administrators approve campaigns".to_owned()));
    let pending = app.admin("GET", "/api/campaigns?pending=true").send().await.json();
    assert_eq!(pending.as_array().unwrap().iter().map(|campaign| campaign["id"].clone()).collect::<Vec<_>>(), [id]);
    let approved = app.admin("POST", &format!("/api/campaigns/{id}/approve")).send().await;
    assert_eq!(approved.json()["status"], "approved");

    // Running: its creative is served from this origin to anyone, as exactly what it is.
    let creative = app.get(&format!("/api/campaigns/{id}/creative")).send().await;
    assert_eq!(creative.status, 200);
    assert_eq!(creative.body, png());
    assert_eq!(creative.header("content-type").as_deref(), Some("image/png"));
    assert_eq!(creative.header("x-content-type-options").as_deref(), Some("nosniff"));

    // A signed-in viewer: the server's clock decides when the view may be completed.
    let started = start(&app, &bearer(&viewer), json!({})).await;
    assert_eq!(started.status, 201, "{}", String::from_utf8_lossy(&started.body));
    let view = started.json();
    assert_eq!(view["campaign"], id);
    assert_eq!(view["creative_url"], format!("/api/campaigns/{id}/creative"));
    assert_eq!((view["min_view_ms"].as_u64(), view["reward_millicredits"].as_i64()), (Some(5_000), Some(1_000)));
    let token = view["token"].as_str().unwrap();
    assert!(token.starts_with("av_") && token.len() >= 3 + 43, "at least 256 random bits: {token}");
    app.clock.advance(5_000);
    let completed = complete(&app, &bearer(&viewer), token).await;
    assert_eq!(completed.status, 200, "{}", String::from_utf8_lossy(&completed.body));
    assert_eq!(completed.json()["credited_millicredits"], 1_000);
    assert_eq!(balance(&app, &viewer).await, start_balance + 1_000);
    let ledger = app.get("/api/account/ledger").token(&viewer).send().await.json();
    let reward = &ledger["entries"][0];
    assert_eq!((reward["kind"].as_str(), reward["amount_millicredits"].as_i64()), (Some("ad_reward"), Some(1_000)));
    assert_eq!(reward["memo"], format!("a completed view of campaign {id} (Spring sale)"));

    // A web session watches too, with its CSRF token on the writes.
    let (cookie, csrf) = app.sign_up("browser").await;
    let without = app.post("/api/ad-views").header("cookie", &cookie).send().await;
    assert_eq!(without.status, 403, "{}", without.error());
    let with = app.post("/api/ad-views").header("cookie", &cookie).header("x-csrf-token", &csrf).send().await;
    assert_eq!(with.status, 201, "no body: any campaign");
    let token = with.json()["token"].as_str().unwrap().to_owned();
    app.clock.advance(5_000);
    let completion = app
        .post(&format!("/api/ad-views/{token}/complete"))
        .header("cookie", &cookie)
        .header("x-csrf-token", &csrf)
        .send()
        .await;
    assert_eq!(completion.status, 200);

    // An anonymous volunteer identity earns into its own ledger account, as its volunteering does.
    let identity = app.post("/api/volunteers").send().await.json();
    let volunteer = format!("Volunteer {}:{}", identity["id"].as_str().unwrap(), identity["secret"].as_str().unwrap());
    let token = token_for(&app, &volunteer, id).await;
    app.clock.advance(6_000);
    assert_eq!(complete(&app, &volunteer, &token).await.status, 200);
    let me = app.get("/api/volunteers/me").header("authorization", &volunteer).send().await.json();
    assert_eq!(me["balance_millicredits"], 1_000);
    let forged = format!("Volunteer {}:wrong", identity["id"].as_str().unwrap());
    assert_eq!(start(&app, &forged, json!({})).await.status, 401);

    // The sponsor sees impressions, completed views and spending; ending refunds the rest.
    let seen = campaign(&app, &sponsor, id).await;
    assert_eq!(seen["impressions"], 3);
    assert_eq!(seen["completed_views"], 3);
    assert_eq!(seen["spent_millicredits"], 3_000);
    assert_eq!(seen["escrowed_millicredits"], 7_000);
    assert_eq!(seen["creative"]["source"], "image");
    let ended = app.post(&format!("/api/campaigns/{id}/end")).token(&sponsor).send().await;
    assert_eq!(ended.status, 200);
    let ended = ended.json();
    assert_eq!((ended["status"].as_str(), ended["refunded_millicredits"].as_i64()), (Some("ended"), Some(7_000)));
    assert_eq!(ended["escrowed_millicredits"], 0);
    assert_eq!(balance(&app, &sponsor).await, start_balance - 3_000, "only the three rewards were spent");
    let again = app.post(&format!("/api/campaigns/{id}/end")).token(&sponsor).send().await;
    assert_eq!(again.status, 409, "{}", again.error());
    assert_eq!(app.get(&format!("/api/campaigns/{id}/creative")).send().await.status, 404, "no longer public");
    let deleted = app.get(&format!("/api/campaigns/{id}/creative")).token(&sponsor).send().await;
    assert_eq!(deleted.status, 404, "a finished campaign's creative is deleted");
    assert!(deleted.error().contains("deleted when it ended"), "{}", deleted.error());
    let connection = rusqlite::Connection::open(app.database()).unwrap();
    let kept: i64 = connection.query_row("SELECT COUNT(*) FROM campaign_creatives", [], |row| row.get(0)).unwrap();
    assert_eq!(kept, 0);
    let gone = start(&app, &bearer(&viewer), json!({ "campaign": id })).await;
    assert_eq!(gone.status, 410, "{}", gone.error());
    assert_conserved(&app);
}

#[tokio::test]
async fn forged_replayed_early_expired_over_cap_and_other_viewers_completions_move_nothing() {
    let app = TestApp::new().start().await;
    let sponsor = app.user_token("sponsor").await;
    let (viewer, other) = (bearer(&app.user_token("viewer").await), bearer(&app.user_token("other").await));
    let id = running(&app, &sponsor, image_campaign(50_000, 1_000, 10_000, 1)).await;

    let token = token_for(&app, &viewer, id).await;
    let before = money(&app);
    let refusals: Vec<(String, Answer)> = vec![
        ("forged".into(), complete(&app, &viewer, "av_Zm9yZ2VkLXRva2VuLXRoYXQtd2FzLW5ldmVyLWlzc3VlZA").await),
        ("not ours".into(), complete(&app, &viewer, &"x".repeat(300)).await),
        ("another viewer's".into(), complete(&app, &other, &token).await),
        ("early".into(), complete(&app, &viewer, &token).await),
    ];
    let expected = [
        (404, "unknown ad view token"),
        (404, "unknown ad view token"),
        (404, "unknown ad view token"),
        (425, "too early: 10000 ms of the campaign's minimum view time remain"),
    ];
    for ((what, answer), (status, message)) in refusals.iter().zip(expected) {
        assert_eq!(answer.status, status, "{what}: {}", answer.error());
        assert!(answer.error().contains(message), "{what}: {}", answer.error());
        assert_eq!(money(&app), before, "{what} moved nothing");
    }
    assert_eq!(refusals[3].1.header("retry-after").as_deref(), Some("10"));
    app.clock.advance(9_999);
    let still_early = complete(&app, &viewer, &token).await;
    assert_eq!((still_early.status, still_early.error().contains("1 ms")), (425, true), "{}", still_early.error());

    // A second token opened before the first pays is refused by the cap of one view a day.
    let second = token_for(&app, &viewer, id).await;
    app.clock.advance(1);
    assert_eq!(complete(&app, &viewer, &token).await.status, 200);
    let paid = money(&app);
    assert_ne!(paid, before);
    let replayed = complete(&app, &viewer, &token).await;
    assert_eq!(
        (replayed.status, replayed.error()),
        (409, "this ad view was completed already: each token pays once".to_owned())
    );
    app.clock.advance(10_000);
    let capped = complete(&app, &viewer, &second).await;
    assert_eq!(capped.status, 429, "{}", capped.error());
    assert!(capped.error().contains("daily cap"), "{}", capped.error());
    assert!(capped.header("retry-after").unwrap().parse::<u64>().unwrap() <= 86_400);
    let capped_start = start(&app, &viewer, json!({ "campaign": id })).await;
    assert_eq!(capped_start.status, 429, "the cap also stops new views: {}", capped_start.error());
    assert_eq!(start(&app, &viewer, json!({})).await.status, 404, "no other campaign to show");
    assert_eq!(money(&app), paid, "the replay and the capped completion moved nothing");

    // An expired token is gone, even for its own viewer; a new UTC day lifts the cap.
    let other_token = token_for(&app, &other, id).await;
    app.clock.advance(app.config.ad_view_ttl_ms);
    let expired = complete(&app, &other, &other_token).await;
    assert_eq!(expired.status, 410, "{}", expired.error());
    assert!(expired.error().contains("expired"), "{}", expired.error());
    assert_eq!(money(&app), paid);
    app.clock.advance(24 * 3600 * 1000);
    let tomorrow = token_for(&app, &viewer, id).await;
    app.clock.advance(10_000);
    assert_eq!(complete(&app, &viewer, &tomorrow).await.status, 200);
    assert_conserved(&app);
}

#[tokio::test]
async fn a_campaign_whose_budget_runs_out_stops_and_refunds_its_rest() {
    let app = TestApp::new().start().await;
    let sponsor = app.user_token("sponsor").await;
    let start_balance = balance(&app, &sponsor).await;
    let id = running(&app, &sponsor, image_campaign(2_500, 1_000, 1_000, 5)).await;
    let mut viewers = Vec::new();
    for name in ["a", "b", "c"] {
        viewers.push(bearer(&app.user_token(&format!("viewer-{name}")).await));
    }
    // Three views are open at once, but the escrow pays two.
    let mut tokens = Vec::new();
    for viewer in &viewers {
        tokens.push(token_for(&app, viewer, id).await);
    }
    app.clock.advance(1_000);
    assert_eq!(complete(&app, &viewers[0], &tokens[0]).await.status, 200);
    assert_eq!(campaign(&app, &sponsor, id).await["status"], "approved", "1,500 still pays one more");
    assert_eq!(complete(&app, &viewers[1], &tokens[1]).await.status, 200);
    let exhausted = campaign(&app, &sponsor, id).await;
    assert_eq!(exhausted["status"], "exhausted", "500 cannot pay a reward of 1,000");
    assert_eq!(
        (exhausted["refunded_millicredits"].as_i64(), exhausted["escrowed_millicredits"].as_i64()),
        (Some(500), Some(0))
    );
    assert_eq!(balance(&app, &sponsor).await, start_balance - 2_000);

    let before = money(&app);
    let late = complete(&app, &viewers[2], &tokens[2]).await;
    assert_eq!(late.status, 410, "{}", late.error());
    assert!(late.error().contains("budget"), "{}", late.error());
    assert_eq!(money(&app), before, "the third view moved nothing");
    assert_eq!(start(&app, &viewers[2], json!({})).await.status, 404, "nothing left to show");
    assert_eq!(app.post(&format!("/api/campaigns/{id}/end")).token(&sponsor).send().await.status, 409);
    assert_conserved(&app);
}

#[tokio::test]
async fn a_viewer_holds_a_few_open_views_and_never_watches_its_own_campaign() {
    let app = TestApp::new().start().await;
    let sponsor = app.user_token("sponsor").await;
    let viewer = bearer(&app.user_token("viewer").await);
    let id = running(&app, &sponsor, image_campaign(50_000, 100, 1_000, 100)).await;
    for _ in 0..app.config.max_open_ad_views_per_viewer {
        token_for(&app, &viewer, id).await;
    }
    let more = start(&app, &viewer, json!({})).await;
    assert_eq!(more.status, 429, "{}", more.error());
    assert!(more.error().contains("ad views open"), "{}", more.error());
    assert_eq!(more.header("retry-after").as_deref(), Some(&*(app.config.ad_view_ttl_ms / 1000).to_string()));
    app.clock.advance(app.config.ad_view_ttl_ms);
    assert_eq!(start(&app, &viewer, json!({})).await.status, 201, "expired views are no longer open");
    assert_eq!(campaign(&app, &sponsor, id).await["impressions"], 5);

    let own = start(&app, &bearer(&sponsor), json!({ "campaign": id })).await;
    assert_eq!(own.status, 409, "{}", own.error());
    assert_eq!(start(&app, &bearer(&sponsor), json!({})).await.status, 404, "the only campaign is the sponsor's own");
    let unknown = start(&app, &viewer, json!({ "campaign": 999 })).await;
    assert_eq!(unknown.status, 404);
    assert_eq!(start(&app, &viewer, json!({ "campaign": -1 })).await.status, 400);
    assert_eq!(start(&app, &viewer, json!({ "campain": 1 })).await.status, 400, "unknown fields are refused");
    let anonymous = app.post("/api/ad-views").send().await;
    assert_eq!(anonymous.status, 401);
    assert!(anonymous.error().contains("Volunteer <id>:<secret>"), "{}", anonymous.error());
}

#[tokio::test]
async fn a_campaign_request_is_bounded_in_every_number_and_size() {
    let app = TestApp::new()
        .with(|config| {
            config.max_creative_bytes = 1024;
            config.max_open_campaigns_per_sponsor = 2;
        })
        .start()
        .await;
    let sponsor = app.user_token("sponsor").await;
    let before = money(&app);
    let with = |edit: &dyn Fn(&mut Value)| {
        let mut body = image_campaign(10_000, 1_000, 5_000, 2);
        edit(&mut body);
        body
    };
    let cases: Vec<(Value, u16, &str)> = vec![
        (with(&|body| body["name"] = json!("  ")), 400, "a campaign's name has 1 to 100 characters"),
        (with(&|body| body["name"] = json!("n".repeat(101))), 400, "a campaign's name has 1 to 100 characters"),
        (with(&|body| body["name"] = json!("tab\there")), 400, "control characters"),
        (with(&|body| body["budget_millicredits"] = json!(0)), 400, "budget_millicredits is 0"),
        (with(&|body| body["budget_millicredits"] = json!(i64::MAX)), 400, "budget_millicredits is"),
        (with(&|body| body["reward_millicredits"] = json!(10_001)), 400, "reward_millicredits is 10001"),
        (with(&|body| body["reward_millicredits"] = json!(0)), 400, "reward_millicredits is 0"),
        (with(&|body| body["min_view_ms"] = json!(999)), 400, "min_view_ms is 999"),
        (with(&|body| body["min_view_ms"] = json!(600_001)), 400, "min_view_ms is 600001"),
        (with(&|body| body["min_view_ms"] = json!(-1)), 400, "could not read the campaign request"),
        (with(&|body| body["daily_cap_per_viewer"] = json!(0)), 400, "daily_cap_per_viewer is 0"),
        (with(&|body| body["daily_cap_per_viewer"] = json!(101)), 400, "daily_cap_per_viewer is 101"),
        (with(&|body| body["extra"] = json!(1)), 400, "unknown field `extra`"),
        (with(&|body| body["creative"]["vast"] = json!(VAST)), 400, "a creative is either"),
        (with(&|body| body["budget_millicredits"] = json!(100_001)), 402, "your balance is 100.000 credits"),
        (with(&|body| body["creative"]["data"] = json!(STANDARD.encode([7u8; 1025]))), 413, "the creative is 1.0 KiB"),
        (with(&|body| body["creative"]["mime"] = json!("image/svg+xml")), 422, "not \"image/svg+xml\""),
        (with(&|body| body["creative"]["mime"] = json!("image/jpeg")), 422, "is not image/jpeg"),
        (with(&|body| body["creative"]["kind"] = json!("video")), 422, "not a creative of kind video"),
        (
            json!({ "name": "v", "creative": { "vast": WRAPPER }, "budget_millicredits": 10_000, "reward_millicredits": 1_000,
                 "min_view_ms": 20_000, "daily_cap_per_viewer": 1 }),
            422,
            "<Wrapper>",
        ),
        (
            json!({ "name": "v", "creative": { "vast": VAST.replace("<MediaFile ", "<Other ").replace("</MediaFile>", "</Other>") },
                 "budget_millicredits": 10_000, "reward_millicredits": 1_000, "min_view_ms": 20_000, "daily_cap_per_viewer": 1 }),
            422,
            "has no <MediaFiles><MediaFile>",
        ),
        (
            json!({ "name": "v", "creative": { "vast": "<VAST version=\"4.0\"><Ad>" }, "budget_millicredits": 10_000,
                 "reward_millicredits": 1_000, "min_view_ms": 20_000, "daily_cap_per_viewer": 1 }),
            422,
            "not well-formed XML",
        ),
        (
            json!({ "name": "v", "creative": { "vast": VAST }, "budget_millicredits": 10_000, "reward_millicredits": 1_000,
                 "min_view_ms": 15_000, "daily_cap_per_viewer": 1 }),
            422,
            "shorter than the VAST creative's <Duration> of 15500 ms",
        ),
    ];
    for (body, status, message) in cases {
        let answer = app.post("/api/campaigns").token(&sponsor).json(body.clone()).send().await;
        assert_eq!(answer.status, status, "{body:.200}: {}", answer.error());
        assert!(answer.error().contains(message), "{message:?} not in {:?}", answer.error());
    }
    assert_eq!(money(&app), before, "no refusal escrowed anything");
    let not_json = app.post("/api/campaigns").token(&sponsor).body(b"{}".to_vec()).send().await;
    assert_eq!(not_json.status, 415);
    let declared = app
        .post("/api/campaigns")
        .token(&sponsor)
        .header("content-type", "application/json")
        .header("content-length", "999999999")
        .send()
        .await;
    assert_eq!(declared.status, 413, "refused from the header alone: {}", declared.error());

    // A VAST creative: the viewer's browser plays its MediaFile; the server keeps no copy of it.
    let vast = json!({ "name": "Tulips", "creative": { "vast": VAST }, "budget_millicredits": 10_000,
                       "reward_millicredits": 1_000, "min_view_ms": 15_500, "daily_cap_per_viewer": 1 });
    let created = app.post("/api/campaigns").token(&sponsor).json(vast.clone()).send().await;
    assert_eq!(created.status, 201, "{}", String::from_utf8_lossy(&created.body));
    let creative = &created.json()["creative"];
    assert_eq!(creative["source"], "vast");
    assert_eq!(creative["mime"], "video/mp4");
    assert_eq!(creative["url"], "https://media.example.com/ads/spring-sale-1280x720.mp4");
    assert_eq!(creative["duration_ms"], 15_500);
    assert_eq!(creative["impression_urls"].as_array().unwrap().len(), 2);
    let id = created.json()["id"].as_u64().unwrap();
    let served = app.get(&format!("/api/campaigns/{id}/creative")).token(&sponsor).send().await;
    assert_eq!(served.status, 404, "{}", served.error());
    app.admin("POST", &format!("/api/campaigns/{id}/approve")).send().await;
    let viewer = bearer(&app.user_token("viewer").await);
    let view = start(&app, &viewer, json!({})).await.json();
    assert_eq!(view["creative_url"], "https://media.example.com/ads/spring-sale-1280x720.mp4");
    assert_eq!(view["creative_mime"], "video/mp4");

    // Two open campaigns are this server's most per sponsor.
    create(&app, &sponsor, image_campaign(1_000, 1_000, 1_000, 1)).await;
    let third = app.post("/api/campaigns").token(&sponsor).json(image_campaign(1_000, 1_000, 1_000, 1)).send().await;
    assert_eq!(third.status, 429, "{}", third.error());
    assert_conserved(&app);
}

#[tokio::test]
async fn only_administrators_approve_and_list_pending_campaigns_and_only_sponsors_end_theirs() {
    let app = TestApp::new().start().await;
    let sponsor = app.user_token("sponsor").await;
    let stranger = app.user_token("stranger").await;
    let id = create(&app, &sponsor, image_campaign(5_000, 1_000, 1_000, 1)).await;
    assert_eq!(app.post(&format!("/api/campaigns/{id}/approve")).token(&sponsor).send().await.status, 403);
    assert_eq!(app.get("/api/campaigns?pending=true").token(&sponsor).send().await.status, 403);
    assert_eq!(app.admin("POST", "/api/campaigns/999/approve").send().await.status, 404);
    assert_eq!(app.get(&format!("/api/campaigns/{id}/creative")).token(&stranger).send().await.status, 404);
    assert_eq!(app.admin("GET", &format!("/api/campaigns/{id}/creative")).send().await.status, 200);
    assert_eq!(app.get("/api/campaigns").token(&stranger).send().await.json(), json!([]), "a sponsor's own only");

    let before = money(&app);
    let others = app.post(&format!("/api/campaigns/{id}/end")).token(&stranger).send().await;
    assert_eq!((others.status, others.error()), (404, format!("you have no campaign {id}")));
    assert_eq!(money(&app), before);
    assert_eq!(app.admin("POST", &format!("/api/campaigns/{id}/approve")).send().await.status, 200);
    let twice = app.admin("POST", &format!("/api/campaigns/{id}/approve")).send().await;
    assert_eq!(twice.status, 409, "{}", twice.error());
    // An administrator may stop any campaign; its sponsor gets the rest.
    let stopped = app.admin("POST", &format!("/api/campaigns/{id}/end")).send().await;
    assert_eq!((stopped.status, stopped.json()["refunded_millicredits"].as_i64()), (200, Some(5_000)));
    assert_eq!(balance(&app, &sponsor).await, app.config.starter_grant_millicredits);
    assert_eq!(app.get("/api/campaigns?before=x").token(&sponsor).send().await.status, 400);
    assert_conserved(&app);
}

#[tokio::test]
async fn the_openapi_document_describes_the_ads_endpoints_and_bodies() {
    let app = TestApp::new().start().await;
    let document = app.get("/api/openapi.json").send().await.json();
    for path in [
        "/api/campaigns",
        "/api/campaigns/{id}/approve",
        "/api/campaigns/{id}/end",
        "/api/campaigns/{id}/creative",
        "/api/ad-views",
        "/api/ad-views/{token}/complete",
    ] {
        assert!(document["paths"][path].is_object(), "{path} is not in the OpenAPI document");
    }
    let complete = &document["paths"]["/api/ad-views/{token}/complete"]["post"]["responses"];
    for status in ["200", "404", "409", "410", "425", "429"] {
        assert!(complete[status].is_object(), "completion's {status} is not described");
    }
    for schema in ["CampaignRequest", "CreativeRequest", "CampaignInfo", "AdViewStarted", "AdViewCompleted"] {
        assert!(document["components"]["schemas"][schema].is_object(), "{schema} is not described");
    }
}
