//! The New job page (`/submit`): a program (uploaded and checked at once, or one uploaded before), the
//! inputs (one chunk per file, per line, or per line of a JSONL chunk file), limits, replication and a
//! budget with a price estimate, then the upload with progress. A failure keeps everything entered.

use distributivecom_protocol::api::{
    AccountInfo, BlobInfo, FileInput, JobCreated, JobRequest, JobStatus, LimitsRequest, ModuleInfo, ModuleSummary,
    Pricing, ReplicationRequest, ServerLimits,
};
use leptos::prelude::*;
use leptos::task::spawn_local_scoped_with_cancellation;
use leptos_router::NavigateOptions;
use leptos_router::hooks::use_navigate;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;
use web_sys::File;

use crate::api::{self, ApiError, UploadBody};
use crate::field::TextField;
use crate::format;
use crate::plan::{self, FileTarget, InputFile, Placement, PlannedChunk};
use crate::session::{Session, require_sign_in};

/// How the chunks are made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Files,
    Lines,
    Jsonl,
}

/// The program the job will run.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Program {
    sha256: String,
    name: String,
    size: u64,
}

/// The form's limits, replication and budget, read and checked.
#[derive(Clone, Debug, PartialEq)]
struct Settings {
    limits: LimitsRequest,
    replication: Option<ReplicationRequest>,
    /// The quorum the job will have: how many replicas of each chunk are paid.
    quorum: u32,
    /// The work-unit limit each chunk will have.
    max_work_units: u64,
    budget: Option<i64>,
}

#[component]
pub fn SubmitPage() -> impl IntoView {
    let session = Session::get();
    require_sign_in(session, "/submit");
    view! {
        <main class="wide">
            <h1>"New job"</h1>
            <Show
                when=move || session.user().is_some()
                fallback=|| view! { <p class="lead">"Loading…"</p> }
            >
                <SubmitForm />
            </Show>
        </main>
    }
}

/// What the page loads from the server: `None` until it answers.
#[derive(Clone, Copy)]
struct Loaded {
    limits: RwSignal<Option<ServerLimits>>,
    pricing: RwSignal<Option<Pricing>>,
    account: RwSignal<Option<AccountInfo>>,
    modules: RwSignal<Vec<ModuleSummary>>,
    jobs: RwSignal<Vec<JobStatus>>,
}

fn load<T>(path: &'static str, target: impl Fn(T) + 'static, error: RwSignal<Option<String>>)
where
    T: serde::de::DeserializeOwned + 'static,
{
    spawn_local_scoped_with_cancellation(async move {
        match api::get_json::<T>(path).await {
            Ok(value) => target(value),
            Err(failure) => error.set(Some(failure.message)),
        }
    });
}

/// Files dropped on a drop zone, or `None` when the drop carried none.
fn dropped_files(event: &web_sys::DragEvent) -> Option<Vec<File>> {
    event.prevent_default();
    let list = event.data_transfer()?.files()?;
    Some((0..list.length()).filter_map(|index| list.get(index)).collect())
}

/// The files chosen in an `<input type="file">`.
fn chosen_files(event: &web_sys::Event) -> Vec<File> {
    let Some(input) = event.target().and_then(|target| target.dyn_into::<web_sys::HtmlInputElement>().ok()) else {
        return Vec::new();
    };
    let Some(list) = input.files() else { return Vec::new() };
    (0..list.length()).filter_map(|index| list.get(index)).collect()
}

async fn read_bytes(file: &File) -> Result<Vec<u8>, String> {
    let buffer = JsFuture::from(file.array_buffer()).await.map_err(|_| format!("Could not read {}.", file.name()))?;
    Ok(js_sys::Uint8Array::new(&buffer).to_vec())
}

async fn read_text(file: &File) -> Result<String, String> {
    let text = JsFuture::from(file.text()).await.map_err(|_| format!("Could not read {}.", file.name()))?;
    text.as_string().ok_or_else(|| format!("{} is not text.", file.name()))
}

#[component]
fn SubmitForm() -> impl IntoView {
    let session = Session::get();
    let navigate = use_navigate();
    let load_error = RwSignal::new(None::<String>);
    let loaded = Loaded {
        limits: RwSignal::new(None),
        pricing: RwSignal::new(None),
        account: RwSignal::new(None),
        modules: RwSignal::new(Vec::new()),
        jobs: RwSignal::new(Vec::new()),
    };
    load("/api/limits", move |value| loaded.limits.set(Some(value)), load_error);
    load("/api/pricing", move |value| loaded.pricing.set(Some(value)), load_error);
    load("/api/account", move |value| loaded.account.set(Some(value)), load_error);
    load("/api/modules", move |value| loaded.modules.set(value), load_error);
    load("/api/jobs", move |value| loaded.jobs.set(value), load_error);

    // The program.
    let program = RwSignal::new(None::<Program>);
    let program_error = RwSignal::new(None::<String>);
    let program_progress = RwSignal::new(None::<f64>);

    let upload_program = move |file: File| {
        program_error.set(None);
        if let Some(limits) = loaded.limits.get_untracked()
            && file.size() as u64 > limits.max_module_bytes
        {
            program_error.set(Some(format!(
                "{} is {}; the server takes programs up to {}.",
                file.name(),
                format::bytes(file.size() as u64),
                format::bytes(limits.max_module_bytes)
            )));
            return;
        }
        program_progress.set(Some(0.0));
        let csrf_token = session.csrf_token();
        spawn_local_scoped_with_cancellation(async move {
            let name = file.name();
            let path = format!("/api/modules?name={}", js_sys::encode_uri_component(&name));
            let answer = api::upload(
                &path,
                UploadBody::Blob(&file),
                "application/wasm",
                csrf_token.as_deref(),
                move |sent, total| program_progress.set(Some(sent / total.max(1.0))),
            )
            .await;
            program_progress.set(None);
            match answer.and_then(|text| {
                serde_json::from_str::<ModuleInfo>(&text)
                    .map_err(|_| ApiError { status: 0, message: "The server's answer could not be read.".to_owned() })
            }) {
                Ok(info) => {
                    program.set(Some(Program { sha256: info.sha256, name, size: info.size }));
                    load("/api/modules", move |value| loaded.modules.set(value), load_error);
                }
                Err(failure) => program_error.set(Some(failure.message)),
            }
        });
    };

    // The inputs.
    let mode = RwSignal::new(Mode::Files);
    let files = RwSignal::new_local(Vec::<File>::new());
    let to_stdin = RwSignal::new(false);
    let data_name = RwSignal::new("{file}".to_owned());
    let files_template = RwSignal::new(String::new());
    let lines = RwSignal::new(String::new());
    let lines_template = RwSignal::new("{line}".to_owned());
    let jsonl = RwSignal::new(String::new());

    let input_files = move || {
        files.with(|files| {
            files.iter().map(|file| InputFile { name: file.name(), size: file.size() as u64 }).collect::<Vec<_>>()
        })
    };
    let max_chunks = move || loaded.limits.with(|limits| limits.as_ref().map_or(u32::MAX, |l| l.max_chunks_per_job));
    let planned = Memo::new(move |_| -> Result<Vec<PlannedChunk>, String> {
        match mode.get() {
            Mode::Files => {
                let placement =
                    if to_stdin.get() { Placement::Stdin } else { Placement::Data { name: data_name.get() } };
                plan::plan_files(&input_files(), &placement, &files_template.get(), max_chunks())
            }
            Mode::Lines => plan::plan_lines(&lines.get(), &lines_template.get(), max_chunks()),
            Mode::Jsonl => plan::plan_jsonl(&jsonl.get(), max_chunks()),
        }
    });
    let chunk_count = move || planned.with(|plan| plan.as_ref().map_or(0, Vec::len));
    let inline_bytes = move || {
        planned.with(|plan| plan.as_ref().map_or(0, |chunks| plan::inline_request_bytes(chunks, &input_files())))
    };
    let size_problem = move || {
        let limit = loaded.limits.with(|limits| limits.as_ref().map(|limits| limits.max_job_request_bytes))?;
        let size = inline_bytes();
        (size > limit).then(|| {
            format!(
                "The inputs that travel inside the job come to about {}, more than the server's limit of {} per \
                 job. Use fewer or smaller inputs, or split them over several jobs.",
                format::bytes(size),
                format::bytes(limit)
            )
        })
    };

    // Limits, replication, budget.
    let job_name = RwSignal::new(String::new());
    let time_limit = RwSignal::new(String::new());
    let memory_limit = RwSignal::new(String::new());
    let work_limit = RwSignal::new(String::new());
    let replicas = RwSignal::new(String::new());
    let quorum = RwSignal::new(String::new());
    let budget = RwSignal::new(String::new());

    let settings = Memo::new(move |_| -> Result<Settings, String> {
        let Some(server) = loaded.limits.get() else { return Err("Loading the server's limits…".to_owned()) };
        let defaults =
            loaded.pricing.with(|pricing| pricing.as_ref().map_or((2, 2), |p| (p.default_replicas, p.default_quorum)));
        let max = server.max_limits;
        let limits = LimitsRequest {
            time_limit_ms: plan::parse_limit(
                &time_limit.get(),
                "The time limit (seconds)",
                1000,
                max.time_limit_ms.unwrap_or(u64::MAX),
            )?,
            memory_limit_bytes: plan::parse_limit(
                &memory_limit.get(),
                "The memory limit (MiB)",
                1 << 20,
                max.memory_limit_bytes.unwrap_or(u64::MAX),
            )?,
            max_work_units: plan::parse_limit(
                &work_limit.get(),
                "The work-unit limit",
                1,
                max.max_work_units.unwrap_or(u64::MAX),
            )?,
            ..LimitsRequest::default()
        };
        let max_replicas = u64::from(server.max_replicas);
        let replicas = plan::parse_limit(&replicas.get(), "Replicas", 1, max_replicas)?;
        let quorum = plan::parse_limit(&quorum.get(), "Quorum", 1, max_replicas)?;
        let replication = match (replicas, quorum) {
            (None, None) => None,
            (replicas, quorum) => {
                let replicas = replicas.map_or(defaults.0, |value| value as u32);
                let quorum = quorum.map_or(defaults.1.min(replicas), |value| value as u32);
                if quorum > replicas {
                    return Err(format!("The quorum ({quorum}) cannot be more than the replicas ({replicas})."));
                }
                Some(ReplicationRequest { replicas, quorum })
            }
        };
        let max_work_units = limits.max_work_units.or(server.default_limits.max_work_units).unwrap_or(0);
        Ok(Settings {
            limits,
            quorum: replication.map_or(defaults.1, |replication| replication.quorum),
            replication,
            max_work_units,
            budget: plan::parse_credits(&budget.get())?,
        })
    });

    // The estimate and the escrow.
    let estimate = move || {
        let pricing = loaded.pricing.get()?;
        let settings = settings.with(|settings| settings.as_ref().ok().map(|s| (s.quorum, s.max_work_units)))?;
        let history = program.with(|program| {
            program.as_ref().and_then(|program| loaded.jobs.with(|jobs| plan::history_per_chunk(jobs, &program.sha256)))
        });
        (chunk_count() > 0).then(|| {
            plan::estimate(chunk_count(), settings.0, settings.1, pricing.millicredits_per_million_work_units, history)
        })
    };
    let escrow = move || {
        let balance = loaded.account.with(|account| account.as_ref().map(|account| account.balance_millicredits))?;
        let maximum = estimate()?.maximum;
        let chosen = settings.with(|settings| settings.as_ref().ok().and_then(|settings| settings.budget));
        Some((chosen.unwrap_or(maximum.min(balance)), balance, chosen.is_some()))
    };
    let cannot_afford = move || escrow().is_some_and(|(escrow, balance, _)| escrow > balance || balance <= 0);

    // Submitting.
    let submitting = RwSignal::new(false);
    let submit_status = RwSignal::new(None::<String>);
    let submit_progress = RwSignal::new(None::<f64>);
    let submit_error = RwSignal::new(None::<String>);
    let needs_credits = RwSignal::new(false);

    let submit = move |event: web_sys::SubmitEvent| {
        event.prevent_default();
        if submitting.get_untracked() {
            return;
        }
        submit_error.set(None);
        needs_credits.set(false);
        let fail = move |message: String| {
            submit_error.set(Some(message));
            submitting.set(false);
            submit_progress.set(None);
            submit_status.set(None);
        };
        let Some(program) = program.get_untracked() else {
            return fail("Choose a program first.".to_owned());
        };
        let chunks = match planned.get_untracked() {
            Ok(chunks) => chunks,
            Err(problem) => return fail(problem),
        };
        let Settings { limits, replication, budget, .. } = match settings.get_untracked() {
            Ok(settings) => settings,
            Err(problem) => return fail(problem),
        };
        if let Some(problem) = size_problem() {
            return fail(problem);
        }
        if cannot_afford() {
            needs_credits.set(true);
            return fail("Your balance cannot cover this job's budget.".to_owned());
        }
        let name = Some(job_name.get_untracked().trim().to_owned()).filter(|name| !name.is_empty());
        let chosen_files = files.get_untracked();
        let csrf_token = session.csrf_token();
        let navigate = navigate.clone();
        submitting.set(true);
        spawn_local_scoped_with_cancellation(async move {
            // Every input file once: large ones as blobs, the rest inline.
            let mut contents: Vec<Option<FileInput>> = vec![None; chosen_files.len()];
            let mut requests = Vec::with_capacity(chunks.len());
            for chunk in chunks {
                let PlannedChunk { mut request, file } = chunk;
                if let Some((index, target)) = file {
                    let Some(source) = chosen_files.get(index) else {
                        return fail("An input file went missing.".to_owned());
                    };
                    if contents[index].is_none() {
                        let input = if source.size() as u64 > plan::BLOB_THRESHOLD_BYTES {
                            submit_status.set(Some(format!("Uploading {}…", source.name())));
                            let answer = api::upload(
                                "/api/blobs",
                                UploadBody::Blob(source),
                                "application/octet-stream",
                                csrf_token.as_deref(),
                                move |sent, total| submit_progress.set(Some(sent / total.max(1.0))),
                            )
                            .await;
                            match answer.map(|text| serde_json::from_str::<BlobInfo>(&text)) {
                                Ok(Ok(info)) => FileInput::Blob { blob: info.sha256 },
                                Ok(Err(_)) => return fail("The server's answer could not be read.".to_owned()),
                                Err(failure) => return fail(format!("{}: {}", source.name(), failure.message)),
                            }
                        } else {
                            submit_status.set(Some(format!("Reading {}…", source.name())));
                            match read_bytes(source).await {
                                Ok(bytes) => FileInput::Inline(bytes.into()),
                                Err(problem) => return fail(problem),
                            }
                        };
                        contents[index] = Some(input);
                    }
                    let input = contents[index].clone().expect("filled above");
                    match (target, input) {
                        (FileTarget::Stdin, FileInput::Inline(bytes)) => request.stdin = bytes,
                        (FileTarget::Stdin, FileInput::Blob { .. }) => {
                            return fail(format!(
                                "{} is larger than {}: the program must read it from /data rather than stdin.",
                                source.name(),
                                format::bytes(plan::BLOB_THRESHOLD_BYTES)
                            ));
                        }
                        (FileTarget::Data(path), input) => {
                            request.files.insert(path, input);
                        }
                    }
                }
                requests.push(request);
            }
            let request = JobRequest {
                module: program.sha256.clone(),
                name,
                program_name: Some(program.name.clone()),
                chunks: requests,
                limits,
                budget_millicredits: budget,
                replication,
                ..JobRequest::default()
            };
            let Ok(body) = serde_json::to_string(&request) else {
                return fail("The job could not be encoded.".to_owned());
            };
            submit_status.set(Some(format!("Sending the job ({})…", format::bytes(body.len() as u64))));
            submit_progress.set(Some(0.0));
            let answer = api::upload(
                "/api/jobs",
                UploadBody::Text(&body),
                "application/json",
                csrf_token.as_deref(),
                move |sent, total| submit_progress.set(Some(sent / total.max(1.0))),
            )
            .await;
            match answer.map(|text| serde_json::from_str::<JobCreated>(&text)) {
                Ok(Ok(created)) => {
                    submitting.set(false);
                    navigate(&format!("/jobs/{}", created.id), NavigateOptions::default());
                }
                Ok(Err(_)) => fail("The server's answer could not be read.".to_owned()),
                Err(failure) => {
                    if failure.status == 402 {
                        needs_credits.set(true);
                    }
                    if failure.is_unauthorized() {
                        session.signed_out();
                    }
                    fail(failure.message)
                }
            }
        });
    };

    let module_options = move || {
        loaded
            .modules
            .get()
            .into_iter()
            .map(|module| {
                let label = format!(
                    "{} ({}, {}, uploaded {})",
                    module.name.clone().unwrap_or_else(|| "program".to_owned()),
                    &module.sha256[..12.min(module.sha256.len())],
                    format::bytes(module.size),
                    format::date_time_utc(module.uploaded_at_ms)
                );
                view! { <option value=module.sha256.clone()>{label}</option> }
            })
            .collect_view()
    };
    let pick_module = move |event: web_sys::Event| {
        let sha256 = event_target_value(&event);
        let chosen =
            loaded.modules.with_untracked(|modules| modules.iter().find(|module| module.sha256 == sha256).cloned());
        program_error.set(None);
        program.set(chosen.map(|module| Program {
            sha256: module.sha256,
            name: module.name.unwrap_or_else(|| "program.wasm".to_owned()),
            size: module.size,
        }));
    };

    let preview = move || {
        planned.with(|plan| match plan {
            Ok(chunks) => {
                let files = input_files();
                let items = chunks
                    .iter()
                    .take(plan::PREVIEW_CHUNKS)
                    .enumerate()
                    .map(|(index, chunk)| view! { <li><code>{format!("{index}: {}", plan::describe(chunk, &files))}</code></li> })
                    .collect_view();
                let more = chunks.len().saturating_sub(plan::PREVIEW_CHUNKS);
                view! {
                    <p id="chunk-count" class="summary">
                        {format!("This makes {}.", if chunks.len() == 1 { "1 chunk".to_owned() } else { format!("{} chunks", format::count(chunks.len() as u64)) })}
                    </p>
                    <ol id="chunk-preview" class="preview">{items}</ol>
                    {(more > 0).then(|| view! { <p class="aside">{format!("…and {} more.", format::count(more as u64))}</p> })}
                }
                .into_any()
            }
            Err(problem) => view! { <p id="plan-problem" class="hint">{problem.clone()}</p> }.into_any(),
        })
    };

    let default_of = move |pick: fn(&ServerLimits) -> String| {
        move || loaded.limits.with(|limits| limits.as_ref().map(pick).unwrap_or_default())
    };
    let limit_note = move || {
        loaded.limits.get().map(|limits| {
            format!(
                "Files up to {} travel inside the job, at most {} in all (the server's limit per job); larger \
                 files are uploaded separately first, up to {} each. At most {} chunks.",
                format::bytes(plan::BLOB_THRESHOLD_BYTES),
                format::bytes(limits.max_job_request_bytes),
                format::bytes(limits.max_blob_bytes),
                format::count(u64::from(limits.max_chunks_per_job))
            )
        })
    };

    view! {
        <p class="lead">
            "Run your program, compiled to WebAssembly (WASI), over many inputs on volunteers' machines. Each "
            "input becomes a chunk; you pay only for the work that validates."
        </p>
        <Show when=move || load_error.get().is_some()>
            <p id="load-error" class="error" role="alert">{move || load_error.get().unwrap_or_default()}</p>
        </Show>
        <form class="submit-form" on:submit=submit novalidate=true>
            <section class="panel" aria-labelledby="program-heading">
                <h2 id="program-heading">"1. Program"</h2>
                <label
                    class="dropzone"
                    for="program-file"
                    on:dragover=|event: web_sys::DragEvent| event.prevent_default()
                    on:drop=move |event: web_sys::DragEvent| {
                        if let Some(file) = dropped_files(&event).and_then(|files| files.into_iter().next()) {
                            upload_program(file);
                        }
                    }
                >
                    <span>"Choose a " <code>".wasm"</code> " file, or drop it here"</span>
                    <input
                        id="program-file"
                        type="file"
                        accept=".wasm,application/wasm"
                        on:change=move |event| {
                            if let Some(file) = chosen_files(&event).into_iter().next() {
                                upload_program(file);
                            }
                        }
                    />
                </label>
                <Show when=move || program_progress.get().is_some()>
                    <label class="progress">
                        "Uploading and checking the program"
                        <progress id="program-progress" max="1" value=move || program_progress.get().unwrap_or(0.0)></progress>
                    </label>
                </Show>
                <Show when=move || program_error.get().is_some()>
                    <p id="program-error" class="error" role="alert">{move || program_error.get().unwrap_or_default()}</p>
                </Show>
                <Show when=move || !loaded.modules.with(Vec::is_empty)>
                    <label class="field">
                        "Or a program you uploaded before"
                        <select id="program-select" on:change=pick_module>
                            <option value="" selected=move || program.with(Option::is_none)>"—"</option>
                            {module_options}
                        </select>
                    </label>
                </Show>
                <p id="program-chosen" class="chosen" aria-live="polite">
                    {move || match program.get() {
                        Some(program) => format!(
                            "Ready: {} ({}), a valid WASI program.",
                            program.name,
                            format::bytes(program.size)
                        ),
                        None => "No program chosen yet.".to_owned(),
                    }}
                </p>
            </section>

            <section class="panel" aria-labelledby="inputs-heading">
                <h2 id="inputs-heading">"2. Inputs"</h2>
                <fieldset class="choices">
                    <legend>"Make one chunk per"</legend>
                    <label><input id="mode-files" type="radio" name="mode" prop:checked=move || mode.get() == Mode::Files on:change=move |_| mode.set(Mode::Files) />"uploaded file"</label>
                    <label><input id="mode-lines" type="radio" name="mode" prop:checked=move || mode.get() == Mode::Lines on:change=move |_| mode.set(Mode::Lines) />"line of text"</label>
                    <label><input id="mode-jsonl" type="radio" name="mode" prop:checked=move || mode.get() == Mode::Jsonl on:change=move |_| mode.set(Mode::Jsonl) />"line of a JSONL chunk file"</label>
                </fieldset>
                <p class="aside" id="size-limits">{limit_note}</p>

                <Show when=move || mode.get() == Mode::Files>
                    <label
                        class="dropzone"
                        for="input-files"
                        on:dragover=|event: web_sys::DragEvent| event.prevent_default()
                        on:drop=move |event: web_sys::DragEvent| {
                            if let Some(dropped) = dropped_files(&event) {
                                files.set(dropped);
                            }
                        }
                    >
                        <span>"Choose input files, or drop them here"</span>
                        <input id="input-files" type="file" multiple=true on:change=move |event| files.set(chosen_files(&event)) />
                    </label>
                    <p id="files-chosen" class="aside">
                        {move || {
                            let infos = input_files();
                            let total: u64 = infos.iter().map(|file| file.size).sum();
                            if infos.is_empty() { "No input files chosen.".to_owned() } else {
                                format!("{} files, {} in all.", infos.len(), format::bytes(total))
                            }
                        }}
                    </p>
                    <fieldset class="choices">
                        <legend>"The program gets each file"</legend>
                        <label><input id="place-data" type="radio" name="placement" prop:checked=move || !to_stdin.get() on:change=move |_| to_stdin.set(false) />"as a file under /data"</label>
                        <label><input id="place-stdin" type="radio" name="placement" prop:checked=move || to_stdin.get() on:change=move |_| to_stdin.set(true) />"on stdin"</label>
                    </fieldset>
                    <Show when=move || !to_stdin.get()>
                        <TextField id="data-name" label="File name under /data ({file} is the uploaded file's name)" value=data_name />
                    </Show>
                    <TextField id="files-template" label="Arguments ({path}: the file under /data, {file}, {stem}: its name without extension, {index}: the chunk's number)" value=files_template placeholder="-i {path} -o /data/out.ppm" />
                </Show>

                <Show when=move || mode.get() == Mode::Lines>
                    <label class="field">
                        "One input per line"
                        <textarea id="lines" rows="6" prop:value=move || lines.get() on:input=move |event| lines.set(event_target_value(&event))></textarea>
                    </label>
                    <TextField id="lines-template" label="Arguments ({line}: the line, as one argument; {index}: the chunk's number)" value=lines_template placeholder="-t {line} -o /data/out.wav" />
                </Show>

                <Show when=move || mode.get() == Mode::Jsonl>
                    <label class="field">
                        "A JSONL chunk file, as the CLI reads it"
                        <input
                            id="jsonl-file"
                            type="file"
                            accept=".jsonl,.json,.txt,application/jsonl"
                            on:change=move |event| {
                                if let Some(file) = chosen_files(&event).into_iter().next() {
                                    spawn_local_scoped_with_cancellation(async move {
                                        match read_text(&file).await {
                                            Ok(text) => jsonl.set(text),
                                            Err(problem) => submit_error.set(Some(problem)),
                                        }
                                    });
                                }
                            }
                        />
                    </label>
                    <label class="field">
                        "…or paste its lines"
                        <textarea id="jsonl-text" rows="6" placeholder=r#"{"args": ["0", "1000"]}"# prop:value=move || jsonl.get() on:input=move |event| jsonl.set(event_target_value(&event))></textarea>
                    </label>
                </Show>
                <div class="plan" aria-live="polite">{preview}</div>
                <Show when=move || size_problem().is_some()>
                    <p id="size-problem" class="error" role="alert">{move || size_problem().unwrap_or_default()}</p>
                </Show>
            </section>

            <section class="panel" aria-labelledby="limits-heading">
                <h2 id="limits-heading">"3. Limits and payment"</h2>
                <div class="grid-fields">
                    <TextField id="job-name" label="Job name (optional)" value=job_name maxlength=200 />
                    <TextField id="time-limit" label="Time limit per chunk, seconds" value=time_limit inputmode="numeric" placeholder=Signal::derive(default_of(|l| l.default_limits.time_limit_ms.map(|ms| (ms / 1000).to_string()).unwrap_or_default())) />
                    <TextField id="memory-limit" label="Memory per chunk, MiB" value=memory_limit inputmode="numeric" placeholder=Signal::derive(default_of(|l| l.default_limits.memory_limit_bytes.map(|b| (b >> 20).to_string()).unwrap_or_default())) />
                    <TextField id="work-limit" label="Work units per chunk, at most" value=work_limit inputmode="numeric" placeholder=Signal::derive(default_of(|l| l.default_limits.max_work_units.map(|w| w.to_string()).unwrap_or_default())) />
                    <TextField id="replicas" label="Replicas per chunk" value=replicas inputmode="numeric" placeholder=Signal::derive(move || loaded.pricing.with(|p| p.as_ref().map(|p| p.default_replicas.to_string()).unwrap_or_default())) />
                    <TextField id="quorum" label="Quorum (replicas that must agree)" value=quorum inputmode="numeric" placeholder=Signal::derive(move || loaded.pricing.with(|p| p.as_ref().map(|p| p.default_quorum.to_string()).unwrap_or_default())) />
                    <TextField id="budget" label="Budget, credits (empty: the most the job can cost, or your balance if lower)" value=budget inputmode="decimal" />
                </div>
                <p class="aside">"Empty fields take the defaults shown. A replication of 1 with a quorum of 1 runs only on your own workers."</p>
                <Show when=move || settings.with(|settings| settings.as_ref().is_err_and(|problem| !problem.starts_with("Loading")))>
                    <p id="settings-problem" class="error" role="alert">{move || settings.with(|settings| settings.as_ref().err().cloned().unwrap_or_default())}</p>
                </Show>
                <dl class="estimate">
                    <dt>"Price estimate"</dt>
                    <dd id="estimate">
                        {move || match estimate() {
                            None => "Choose a program and inputs to see it.".to_owned(),
                            Some(estimate) => match estimate.expected {
                                Some(expected) => format!(
                                    "about {} (from your earlier jobs with this program), at most {}",
                                    format::credits(expected),
                                    format::credits(estimate.maximum)
                                ),
                                None => format!(
                                    "at most {} (every chunk using its whole work-unit limit); most jobs cost far less",
                                    format::credits(estimate.maximum)
                                ),
                            },
                        }}
                    </dd>
                    <dt>"Held in escrow now"</dt>
                    <dd id="escrow">{move || escrow().map(|(escrow, _, _)| format::credits(escrow)).unwrap_or_else(|| "—".to_owned())}</dd>
                    <dt>"Your balance after that"</dt>
                    <dd id="balance-after">
                        {move || match (escrow(), loaded.account.get()) {
                            (Some((escrow, balance, _)), _) => format::credits(balance.saturating_sub(escrow)),
                            (None, Some(account)) => format::credits(account.balance_millicredits),
                            (None, None) => "—".to_owned(),
                        }}
                    </dd>
                </dl>
                <p class="aside">"What the job does not spend is refunded when it ends."</p>
                <Show when=move || cannot_afford() || needs_credits.get()>
                    <p id="balance-warning" class="notice" role="alert">
                        "Your balance cannot cover this budget. Lower the budget, or "
                        <a href="/donate">"earn credits by donating compute"</a>
                        " (a browser tab is enough)."
                    </p>
                </Show>
            </section>

            <div class="controls">
                <button id="submit-job" class="primary" type="submit" prop:disabled=move || submitting.get()>"Submit the job"</button>
            </div>
            <Show when=move || submit_status.get().is_some()>
                <label class="progress" aria-live="polite">
                    <span id="submit-status">{move || submit_status.get().unwrap_or_default()}</span>
                    <progress id="submit-progress" max="1" value=move || submit_progress.get().unwrap_or(0.0)></progress>
                </label>
            </Show>
            <Show when=move || submit_error.get().is_some()>
                <p id="submit-error" class="error" role="alert">{move || submit_error.get().unwrap_or_default()}</p>
            </Show>
        </form>
    }
}
