//! The SDK's rewarded-ads methods against a real server on a loopback port: a sponsor's campaign, an
//! administrator's approval, an anonymous volunteer's view refused while too early and paid once the
//! server's clock says the minimum view time passed, the sponsor's counts, and the refund at the end.

use std::time::Duration;

use distributivecom_client::{Client, ClientError};
use distributivecom_protocol::Bytes;
use distributivecom_protocol::api::{CampaignRequest, CampaignStatus, CampaignsQuery, CreativeKind, CreativeRequest};
use distributivecom_server::ServerConfig;

#[tokio::test]
async fn a_sponsor_an_administrator_and_a_volunteer_go_through_a_campaign_with_the_sdk() {
    let directory = tempfile::tempdir().unwrap();
    let config = ServerConfig {
        listen: ([127, 0, 0, 1], 0).into(),
        data_dir: directory.path().join("data"),
        ..ServerConfig::default()
    };
    let server = distributivecom_server::start(config).await.unwrap();
    let base = format!("http://{}", server.address());
    let admin_token = std::fs::read_to_string(server.admin_token_file().unwrap()).unwrap();
    let admin = Client::new(&base).unwrap().with_token(admin_token.trim());

    let png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR".to_vec();
    let request = CampaignRequest {
        name: "Spring sale".to_owned(),
        creative: CreativeRequest::Uploaded {
            kind: CreativeKind::Image,
            mime: "image/png".to_owned(),
            data: Bytes(png.clone()),
        },
        budget_millicredits: 5_000,
        reward_millicredits: 2_000,
        min_view_ms: 1_000,
        daily_cap_per_viewer: 1,
    };
    let campaign = admin.create_campaign(&request).await.unwrap();
    assert_eq!((campaign.status, campaign.escrowed_millicredits), (CampaignStatus::Pending, 5_000));
    let pending = admin.campaigns(CampaignsQuery { pending: Some(true), ..CampaignsQuery::default() }).await.unwrap();
    assert_eq!(pending.iter().map(|campaign| campaign.id).collect::<Vec<_>>(), [campaign.id]);
    assert_eq!(admin.approve_campaign(campaign.id).await.unwrap().status, CampaignStatus::Approved);

    // The creative is served from the server's origin, byte for byte.
    let creative = reqwest::get(format!("{base}{}", campaign.creative.url)).await.unwrap();
    assert_eq!(creative.headers()["content-type"], "image/png");
    assert_eq!(creative.bytes().await.unwrap().to_vec(), png);

    let anonymous = Client::new(&base).unwrap();
    let volunteer = anonymous.register_volunteer().await.unwrap();
    let view = anonymous.start_ad_view_as(&volunteer, None).await.unwrap();
    assert_eq!((view.campaign, view.reward_millicredits, view.min_view_ms), (campaign.id, 2_000, 1_000));
    let early = anonymous.complete_ad_view_as(&volunteer, &view.token).await.unwrap_err();
    assert!(matches!(&early, ClientError::Api { status: 425, message } if message.contains("too early")), "{early}");
    // The server's own clock decides: wait out the minimum view time, with room to spare.
    tokio::time::sleep(Duration::from_millis(view.min_view_ms + 200)).await;
    let paid = anonymous.complete_ad_view_as(&volunteer, &view.token).await.unwrap();
    assert_eq!(paid.credited_millicredits, 2_000);
    let replayed = anonymous.complete_ad_view_as(&volunteer, &view.token).await.unwrap_err();
    assert_eq!(replayed.status(), Some(409), "{replayed}");
    assert_eq!(anonymous.volunteer_info(&volunteer).await.unwrap().balance_millicredits, 2_000);

    let seen = admin.campaigns(CampaignsQuery::default()).await.unwrap();
    assert_eq!((seen[0].impressions, seen[0].completed_views, seen[0].spent_millicredits), (1, 1, 2_000));
    let ended = admin.end_campaign(campaign.id).await.unwrap();
    assert_eq!((ended.status, ended.refunded_millicredits), (CampaignStatus::Ended, 3_000));
    server.stop();
}
