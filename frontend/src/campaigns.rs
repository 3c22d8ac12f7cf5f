//! Rewarded-ad campaigns, the sponsor's side (a section of the account page): create one from an image
//! or video file or a VAST 4 document, with its budget moved into escrow; see each campaign's
//! impressions, completed views and spend; end it for a refund. Administrators also approve the
//! campaigns waiting for them.

use distributivecom_protocol::Bytes;
use distributivecom_protocol::api::{CampaignInfo, CampaignRequest, CampaignStatus, CreativeKind, CreativeRequest};
use leptos::prelude::*;
use leptos::task::spawn_local_scoped_with_cancellation;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;

use crate::api;
use crate::field::TextField;
use crate::format;
use crate::plan;
use crate::session::Session;

fn status_word(status: CampaignStatus) -> &'static str {
    match status {
        CampaignStatus::Pending => "waiting for approval",
        CampaignStatus::Approved => "showing",
        CampaignStatus::Ended => "ended",
        CampaignStatus::Exhausted => "budget spent",
    }
}

#[component]
pub fn Campaigns(#[prop(into)] changed: Callback<()>) -> impl IntoView {
    let session = Session::get();
    let is_admin = move || session.user().is_some_and(|user| user.is_admin);
    let campaigns = RwSignal::new(Vec::<CampaignInfo>::new());
    let pending = RwSignal::new(Vec::<CampaignInfo>::new());
    let error = RwSignal::new(None::<String>);
    let reload = move || {
        spawn_local_scoped_with_cancellation(async move {
            match api::get_json::<Vec<CampaignInfo>>("/api/campaigns").await {
                Ok(list) => campaigns.set(list),
                Err(failure) => error.set(Some(failure.message)),
            }
            if is_admin() {
                match api::get_json::<Vec<CampaignInfo>>("/api/campaigns?pending=true").await {
                    Ok(list) => pending.set(list),
                    Err(failure) => error.set(Some(failure.message)),
                }
            }
        });
    };
    reload();

    // The form.
    let name = RwSignal::new(String::new());
    let file = RwSignal::new_local(None::<web_sys::File>);
    let vast = RwSignal::new(String::new());
    let budget = RwSignal::new(String::new());
    let reward = RwSignal::new(String::new());
    let seconds = RwSignal::new("15".to_owned());
    let cap = RwSignal::new("3".to_owned());
    let creating = RwSignal::new(false);

    let create = move |event: web_sys::SubmitEvent| {
        event.prevent_default();
        error.set(None);
        let read = || -> Result<(i64, i64, u64, u32), String> {
            let budget = plan::parse_credits(&budget.get_untracked())?.ok_or("Give the campaign a budget.")?;
            let reward = plan::parse_credits(&reward.get_untracked())?.ok_or("Say what one view earns.")?;
            let seconds = plan::parse_limit(&seconds.get_untracked(), "The view time (seconds)", 1000, 600_000)?
                .ok_or("Say how long a view lasts.")?;
            let cap = plan::parse_limit(&cap.get_untracked(), "The daily cap per viewer", 1, 100)?
                .ok_or("Say how many views a viewer may be paid for a day.")?;
            Ok((budget, reward, seconds, cap as u32))
        };
        let (budget, reward, min_view_ms, cap) = match read() {
            Ok(values) => values,
            Err(problem) => return error.set(Some(problem)),
        };
        let chosen = file.get_untracked();
        let vast_text = vast.get_untracked();
        let csrf_token = session.csrf_token();
        creating.set(true);
        spawn_local_scoped_with_cancellation(async move {
            let creative = match (chosen, vast_text.trim()) {
                (Some(file), _) => {
                    let mime = file.type_();
                    let kind = if mime.starts_with("video/") { CreativeKind::Video } else { CreativeKind::Image };
                    match JsFuture::from(file.array_buffer()).await {
                        Ok(buffer) => CreativeRequest::Uploaded {
                            kind,
                            mime,
                            data: Bytes(js_sys::Uint8Array::new(&buffer).to_vec()),
                        },
                        Err(_) => {
                            error.set(Some("The creative could not be read.".to_owned()));
                            creating.set(false);
                            return;
                        }
                    }
                }
                (None, "") => {
                    error.set(Some("Choose an image or video, or paste a VAST document.".to_owned()));
                    creating.set(false);
                    return;
                }
                (None, text) => CreativeRequest::Vast { vast: text.to_owned() },
            };
            let request = CampaignRequest {
                name: name.get_untracked().trim().to_owned(),
                creative,
                budget_millicredits: budget,
                reward_millicredits: reward,
                min_view_ms,
                daily_cap_per_viewer: cap,
            };
            match api::post_json::<_, CampaignInfo>("/api/campaigns", &request, csrf_token.as_deref()).await {
                Ok(_) => {
                    name.set(String::new());
                    reload();
                    changed.run(());
                }
                Err(failure) => error.set(Some(failure.message)),
            }
            creating.set(false);
        });
    };
    let act = move |path: String| {
        let csrf_token = session.csrf_token();
        spawn_local_scoped_with_cancellation(async move {
            match api::post_for_json::<CampaignInfo>(&path, csrf_token.as_deref()).await {
                Ok(_) => {
                    reload();
                    changed.run(());
                }
                Err(failure) => error.set(Some(failure.message)),
            }
        });
    };

    let rows = move || {
        campaigns
            .get()
            .into_iter()
            .map(|campaign| {
                let id = campaign.id;
                let open = matches!(campaign.status, CampaignStatus::Pending | CampaignStatus::Approved);
                view! {
                    <tr>
                        <td>{format!("#{id} {}", campaign.name)}</td>
                        <td>{status_word(campaign.status)}</td>
                        <td class="amount">{format::count(campaign.impressions)}</td>
                        <td class="amount">{format::count(campaign.completed_views)}</td>
                        <td class="amount">{format::credits(campaign.spent_millicredits)}</td>
                        <td class="amount">{format::credits(campaign.escrowed_millicredits)}</td>
                        <td>{open.then(|| view! {
                            <button id=format!("end-campaign-{id}") on:click=move |_| act(format!("/api/campaigns/{id}/end"))>"End and refund"</button>
                        })}</td>
                    </tr>
                }
            })
            .collect_view()
    };
    let waiting = move || {
        pending
            .get()
            .into_iter()
            .map(|campaign| {
                let id = campaign.id;
                view! {
                    <li>
                        {format!("#{id} {} by {}: {} per view, {} s, budget {} ", campaign.name, campaign.sponsor,
                            format::credits(campaign.reward_millicredits), campaign.min_view_ms / 1000, format::credits(campaign.budget_millicredits))}
                        <a href=campaign.creative.url.clone() rel="external noopener" target="_blank">"see the creative"</a>
                        " "
                        <button id=format!("approve-campaign-{id}") on:click=move |_| act(format!("/api/campaigns/{id}/approve"))>"Approve"</button>
                    </li>
                }
            })
            .collect_view()
    };
    view! {
        <section class="panel" aria-labelledby="campaigns-heading">
            <h2 id="campaigns-heading">"Sponsor: rewarded-ad campaigns"</h2>
            <p class="aside">
                "Viewers earn credits for watching your ad; each completed view is paid from the campaign's "
                "budget, held in escrow. An administrator approves the creative before it shows. Ending a "
                "campaign refunds what is left."
            </p>
            <Show when=move || error.get().is_some()>
                <p id="campaign-error" class="error" role="alert">{move || error.get().unwrap_or_default()}</p>
            </Show>
            <form class="grid-fields" on:submit=create>
                <TextField id="campaign-name" label="Campaign name" value=name maxlength=100 />
                <label class="field">"Image or video"
                    <input id="campaign-file" type="file" accept="image/png,image/jpeg,image/gif,image/webp,video/mp4,video/webm" on:change=move |event: web_sys::Event| {
                        let chosen = event.target().and_then(|target| target.dyn_into::<web_sys::HtmlInputElement>().ok()).and_then(|input| input.files()).and_then(|files| files.get(0));
                        file.set(chosen);
                    } />
                </label>
                <label class="field">"…or a VAST 4 document"<textarea id="campaign-vast" rows="3" prop:value=move || vast.get() on:input=move |event| vast.set(event_target_value(&event))></textarea></label>
                <TextField id="campaign-budget" label="Budget, credits" value=budget inputmode="decimal" />
                <TextField id="campaign-reward" label="Reward per view, credits" value=reward inputmode="decimal" />
                <TextField id="campaign-seconds" label="View time, seconds" value=seconds inputmode="numeric" />
                <TextField id="campaign-cap" label="Paid views per viewer a day" value=cap inputmode="numeric" />
                <div class="controls"><button id="create-campaign" class="primary" type="submit" prop:disabled=move || creating.get()>"Create the campaign"</button></div>
            </form>
            <div class="table-scroll">
                <table id="campaigns" class="data">
                    <caption class="visually-hidden">"Your campaigns"</caption>
                    <thead><tr><th scope="col">"Campaign"</th><th scope="col">"Status"</th><th scope="col" class="amount">"Impressions"</th><th scope="col" class="amount">"Views"</th><th scope="col" class="amount">"Spent"</th><th scope="col" class="amount">"In escrow"</th><th scope="col"></th></tr></thead>
                    <tbody>{rows}</tbody>
                </table>
            </div>
            <Show when=is_admin>
                <h3>"Waiting for your approval"</h3>
                <ul id="pending-campaigns">{waiting}</ul>
            </Show>
        </section>
    }
}
