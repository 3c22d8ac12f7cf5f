//! What a job submitted from the web becomes: its chunks, made from uploaded files, from the lines of a
//! text box or from a JSONL chunk file, and what it may cost. Pure, so the host tests check every rule;
//! the New job page (`submit`) shows the plan and sends it.

use distributivecom_protocol::api::{ChunkRequest, JobStatus};

/// Input files larger than this go up as blobs (`POST /api/blobs`) rather than inline in the job, as
/// the CLI does with its default `--blob-threshold-kib`.
pub const BLOB_THRESHOLD_BYTES: u64 = 1024 * 1024;

/// How many planned chunks the page previews.
pub const PREVIEW_CHUNKS: usize = 5;

/// Where an uploaded input file goes in its chunk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Placement {
    /// The program reads it on stdin.
    Stdin,
    /// It is placed at `/data/<name>`; `name` may use the placeholders, e.g. `{file}`.
    Data { name: String },
}

/// An uploaded input file, as the plan sees it: its name and size (the bytes are read at submission).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InputFile {
    pub name: String,
    pub size: u64,
}

/// One chunk to submit: the request, and the uploaded file that still has to be put into it.
#[derive(Clone, Debug, PartialEq)]
pub struct PlannedChunk {
    pub request: ChunkRequest,
    /// The input file (by its index among the uploaded files) and where it goes.
    pub file: Option<(usize, FileTarget)>,
}

/// Where a planned chunk's input file goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FileTarget {
    Stdin,
    /// A path relative to `/data`.
    Data(String),
}

/// Splits an arguments template into arguments: on white space, with `"double quotes"` around an
/// argument that holds spaces.
pub fn split_template(template: &str) -> Result<Vec<String>, String> {
    let mut arguments = Vec::new();
    let mut current = String::new();
    let mut in_argument = false;
    let mut quoted = false;
    for character in template.chars() {
        match character {
            '"' => {
                quoted = !quoted;
                in_argument = true;
            }
            c if c.is_whitespace() && !quoted => {
                if in_argument {
                    arguments.push(std::mem::take(&mut current));
                    in_argument = false;
                }
            }
            c => {
                current.push(c);
                in_argument = true;
            }
        }
    }
    if quoted {
        return Err("The arguments template has an opening \" without a closing one.".to_owned());
    }
    if in_argument {
        arguments.push(current);
    }
    Ok(arguments)
}

/// Replaces each `{name}` of `variables` in `text`.
fn fill(text: &str, variables: &[(&str, &str)]) -> String {
    variables.iter().fold(text.to_owned(), |text, (name, value)| text.replace(&format!("{{{name}}}"), value))
}

/// The file name without its last extension: `photo.ppm` → `photo`.
fn stem(name: &str) -> &str {
    match name.rfind('.') {
        Some(0) | None => name,
        Some(dot) => &name[..dot],
    }
}

/// A path under `/data` as the server will accept it: relative, no `.` or `..`, no empty parts.
pub fn data_path_problem(path: &str) -> Option<String> {
    if path.is_empty() {
        return Some("Name the file the program reads under /data.".to_owned());
    }
    if path.starts_with('/') || path.split('/').any(|part| part.is_empty() || part == "." || part == "..") {
        return Some(format!("\"{path}\" is not a plain path under /data: use a name like in.ppm or dir/in.ppm."));
    }
    None
}

fn too_many(chunks: usize, max_chunks: u32) -> Option<String> {
    (chunks > max_chunks as usize)
        .then(|| format!("That makes {chunks} chunks; the server takes at most {max_chunks} in one job."))
}

/// One chunk per uploaded file. The template may use `{file}` (the file's name), `{stem}` (without its
/// extension), `{path}` (where it is under `/data`) and `{index}` (the chunk's number, from 0).
pub fn plan_files(
    files: &[InputFile],
    placement: &Placement,
    template: &str,
    max_chunks: u32,
) -> Result<Vec<PlannedChunk>, String> {
    if files.is_empty() {
        return Err("Choose one or more input files: each becomes a chunk.".to_owned());
    }
    if let Some(problem) = too_many(files.len(), max_chunks) {
        return Err(problem);
    }
    let arguments = split_template(template)?;
    files
        .iter()
        .enumerate()
        .map(|(index, file)| {
            let index_text = index.to_string();
            let base = [("file", file.name.as_str()), ("stem", stem(&file.name)), ("index", index_text.as_str())];
            let (target, path) = match placement {
                Placement::Stdin => (FileTarget::Stdin, String::new()),
                Placement::Data { name } => {
                    let path = fill(name.trim(), &base);
                    if let Some(problem) = data_path_problem(&path) {
                        return Err(problem);
                    }
                    (FileTarget::Data(path.clone()), format!("/data/{path}"))
                }
            };
            let mut variables = base.to_vec();
            variables.push(("path", path.as_str()));
            let args = arguments.iter().map(|argument| fill(argument, &variables)).collect();
            Ok(PlannedChunk { request: ChunkRequest { args, ..ChunkRequest::default() }, file: Some((index, target)) })
        })
        .collect()
}

/// One chunk per non-empty line. The template may use `{line}` (the whole line, as one argument) and
/// `{index}`.
pub fn plan_lines(text: &str, template: &str, max_chunks: u32) -> Result<Vec<PlannedChunk>, String> {
    let lines: Vec<&str> =
        text.lines().map(|line| line.trim_end_matches('\r')).filter(|line| !line.trim().is_empty()).collect();
    if lines.is_empty() {
        return Err("Type one input per line: each line becomes a chunk.".to_owned());
    }
    if let Some(problem) = too_many(lines.len(), max_chunks) {
        return Err(problem);
    }
    let arguments = split_template(template)?;
    if !arguments.iter().any(|argument| argument.contains("{line}")) {
        return Err("The arguments template must use {line} somewhere, or every chunk would be the same.".to_owned());
    }
    Ok(lines
        .iter()
        .enumerate()
        .map(|(index, line)| {
            let index_text = index.to_string();
            let variables = [("line", *line), ("index", index_text.as_str())];
            let args = arguments.iter().map(|argument| fill(argument, &variables)).collect();
            PlannedChunk { request: ChunkRequest { args, ..ChunkRequest::default() }, file: None }
        })
        .collect())
}

/// One chunk per non-empty line of a JSONL chunk file in the CLI's format (`{"args": [...], "stdin":
/// base64, "files": {...}}`).
pub fn plan_jsonl(text: &str, max_chunks: u32) -> Result<Vec<PlannedChunk>, String> {
    let mut chunks = Vec::new();
    for (number, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let request: ChunkRequest =
            serde_json::from_str(line).map_err(|error| format!("Line {} of the chunk file: {error}", number + 1))?;
        chunks.push(PlannedChunk { request, file: None });
        if let Some(problem) = too_many(chunks.len(), max_chunks) {
            return Err(problem);
        }
    }
    if chunks.is_empty() {
        return Err("The chunk file has no chunks: one JSON object per line.".to_owned());
    }
    Ok(chunks)
}

/// A planned chunk in words for the preview: its arguments, and where its file goes.
pub fn describe(chunk: &PlannedChunk, files: &[InputFile]) -> String {
    let args = chunk
        .request
        .args
        .iter()
        .map(
            |argument| {
                if argument.contains(char::is_whitespace) { format!("\"{argument}\"") } else { argument.clone() }
            },
        )
        .collect::<Vec<_>>()
        .join(" ");
    let args = if args.is_empty() { "(no arguments)".to_owned() } else { args };
    let file = chunk.file.as_ref().and_then(|(index, target)| {
        let name = &files.get(*index)?.name;
        Some(match target {
            FileTarget::Stdin => format!(" < {name}"),
            FileTarget::Data(path) => format!("  [{name} → /data/{path}]"),
        })
    });
    let inline = (!chunk.request.files.is_empty())
        .then(|| format!("  [files: {}]", chunk.request.files.keys().cloned().collect::<Vec<_>>().join(", ")));
    format!("{args}{}{}", file.unwrap_or_default(), inline.unwrap_or_default())
}

/// Bytes the job's request will carry inline: every input file not over the blob threshold, in base64,
/// plus the arguments and a little JSON per chunk. Compared with the server's limit before any upload.
pub fn inline_request_bytes(chunks: &[PlannedChunk], files: &[InputFile]) -> u64 {
    chunks
        .iter()
        .map(|chunk| {
            let file = chunk
                .file
                .as_ref()
                .and_then(|(index, _)| files.get(*index))
                .filter(|file| file.size <= BLOB_THRESHOLD_BYTES)
                .map_or(0, |file| file.size);
            let own = chunk.request.inline_bytes();
            let args: usize = chunk.request.args.iter().map(|argument| argument.len() + 3).sum();
            (file + own).div_ceil(3) * 4 + args as u64 + 64
        })
        .sum()
}

/// What a job may cost, in millicredits: `maximum` if every chunk used its whole work-unit limit on every
/// replica the quorum pays; `expected` from what the caller's earlier jobs with the same program paid
/// per chunk, when there are any.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Estimate {
    pub expected: Option<i64>,
    pub maximum: i64,
}

/// The price of one validated replica that used `work_units`: `ceil(work_units × rate / 1,000,000)`.
pub fn replica_price(work_units: u64, millicredits_per_million_work_units: u64) -> i64 {
    let price = (work_units as u128 * millicredits_per_million_work_units as u128).div_ceil(1_000_000);
    i64::try_from(price).unwrap_or(i64::MAX)
}

pub fn estimate(
    chunks: usize,
    quorum: u32,
    max_work_units: u64,
    millicredits_per_million_work_units: u64,
    history_per_chunk: Option<i64>,
) -> Estimate {
    let chunks = chunks as i64;
    let per_chunk = replica_price(max_work_units, millicredits_per_million_work_units).saturating_mul(quorum as i64);
    Estimate {
        expected: history_per_chunk.map(|per_chunk| per_chunk.saturating_mul(chunks)),
        maximum: per_chunk.saturating_mul(chunks),
    }
}

/// What earlier jobs with `module` paid per finished chunk, rounded up; `None` without such jobs.
pub fn history_per_chunk(jobs: &[JobStatus], module: &str) -> Option<i64> {
    let (spent, chunks) = jobs.iter().filter(|job| job.module == module && job.finished_chunks() > 0).fold(
        (0i64, 0i64),
        |(spent, chunks), job| {
            (spent.saturating_add(job.spent_millicredits), chunks + i64::from(job.finished_chunks()))
        },
    );
    (chunks > 0).then(|| (spent + chunks - 1) / chunks)
}

/// Credits typed by a person ("12", "0.5", "1,000.25") as millicredits; `None` for an empty field.
pub fn parse_credits(text: &str) -> Result<Option<i64>, String> {
    let text = text.trim().replace(',', "");
    if text.is_empty() {
        return Ok(None);
    }
    let invalid = || format!("\"{text}\" is not an amount of credits: use a number like 25 or 2.5.");
    let (whole, fraction) = text.split_once('.').unwrap_or((&text, ""));
    if whole.is_empty() && fraction.is_empty()
        || !whole.chars().all(|c| c.is_ascii_digit())
        || !fraction.chars().all(|c| c.is_ascii_digit())
    {
        return Err(invalid());
    }
    if fraction.len() > 3 {
        return Err(format!("\"{text}\" has more than three decimals; a millicredit (0.001) is the smallest amount."));
    }
    let whole: i64 = if whole.is_empty() { 0 } else { whole.parse().map_err(|_| invalid())? };
    let fraction: i64 = format!("{fraction:0<3}").parse().map_err(|_| invalid())?;
    let millicredits = whole.checked_mul(1000).and_then(|whole| whole.checked_add(fraction)).ok_or_else(invalid)?;
    if millicredits == 0 {
        return Err("A budget must be more than 0 credits.".to_owned());
    }
    Ok(Some(millicredits))
}

/// A whole number typed in a limit field, times `unit` (e.g. seconds to milliseconds), at most
/// `maximum`; `None` for an empty field.
pub fn parse_limit(text: &str, what: &str, unit: u64, maximum: u64) -> Result<Option<u64>, String> {
    let text = text.trim().replace(',', "");
    if text.is_empty() {
        return Ok(None);
    }
    let value: u64 = text.parse().map_err(|_| format!("{what}: \"{text}\" is not a whole number."))?;
    let scaled = value.checked_mul(unit).filter(|scaled| *scaled > 0 && *scaled <= maximum);
    scaled.map(Some).ok_or_else(|| format!("{what} must be between 1 and {}.", maximum / unit.max(1)))
}

#[cfg(test)]
mod tests {
    use distributivecom_protocol::api::{FileInput, JobState};

    use super::*;

    fn files(names: &[(&str, u64)]) -> Vec<InputFile> {
        names.iter().map(|(name, size)| InputFile { name: (*name).to_owned(), size: *size }).collect()
    }

    #[test]
    fn templates_split_on_spaces_and_keep_quoted_arguments_whole() {
        assert_eq!(split_template("  -t {line}  -o /data/out.wav ").unwrap(), ["-t", "{line}", "-o", "/data/out.wav"]);
        assert_eq!(split_template(r#"--title "a b" "" x"#).unwrap(), ["--title", "a b", "", "x"]);
        assert_eq!(split_template("").unwrap(), Vec::<String>::new());
        assert!(split_template(r#"-t "open"#).unwrap_err().contains("without a closing"));
    }

    #[test]
    fn each_file_becomes_a_chunk_with_its_name_in_the_arguments() {
        let inputs = files(&[("cat.ppm", 10), ("dog.photo.ppm", 20)]);
        let placement = Placement::Data { name: "in/{file}".to_owned() };
        let planned = plan_files(&inputs, &placement, "-i {path} -o /data/{stem}.out -n {index}", 100).unwrap();
        assert_eq!(planned.len(), 2);
        assert_eq!(planned[1].request.args, ["-i", "/data/in/dog.photo.ppm", "-o", "/data/dog.photo.out", "-n", "1"]);
        assert_eq!(planned[1].file, Some((1, FileTarget::Data("in/dog.photo.ppm".to_owned()))));
        assert_eq!(
            describe(&planned[0], &inputs),
            "-i /data/in/cat.ppm -o /data/cat.out -n 0  [cat.ppm → /data/in/cat.ppm]"
        );

        let on_stdin = plan_files(&inputs, &Placement::Stdin, "--count", 100).unwrap();
        assert_eq!(on_stdin[0].file, Some((0, FileTarget::Stdin)));
        assert_eq!(describe(&on_stdin[0], &inputs), "--count < cat.ppm");
    }

    #[test]
    fn bad_file_plans_are_refused_with_what_to_do() {
        let inputs = files(&[("a.txt", 1), ("b.txt", 1), ("c.txt", 1)]);
        assert!(plan_files(&[], &Placement::Stdin, "", 10).unwrap_err().contains("Choose one or more"));
        assert!(plan_files(&inputs, &Placement::Stdin, "", 2).unwrap_err().contains("at most 2"));
        for bad in ["../x", "/etc/passwd", "", "a//b", "./x"] {
            let placement = Placement::Data { name: bad.to_owned() };
            assert!(plan_files(&inputs, &placement, "", 10).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn each_line_becomes_a_chunk_and_the_line_stays_one_argument() {
        let planned = plan_lines("hello world\r\n\n  \nsecond\n", "-t {line} -o /data/out.wav", 10).unwrap();
        let args: Vec<_> = planned.iter().map(|chunk| chunk.request.args.clone()).collect();
        assert_eq!(
            args,
            [vec!["-t", "hello world", "-o", "/data/out.wav"], vec!["-t", "second", "-o", "/data/out.wav"]]
        );
        assert!(plan_lines("a\nb", "-x", 10).unwrap_err().contains("{line}"));
        assert!(plan_lines(" \n", "{line}", 10).unwrap_err().contains("one input per line"));
        assert!(plan_lines("a\nb\nc", "{line}", 2).unwrap_err().contains("3 chunks"));
    }

    #[test]
    fn a_jsonl_file_is_read_in_the_clis_format_and_errors_name_the_line() {
        let planned =
            plan_jsonl("{\"args\": [\"1\"]}\n\n{\"args\": [\"2\"], \"files\": {\"a\": \"aGk=\"}}\n", 10).unwrap();
        assert_eq!(planned.len(), 2);
        assert_eq!(planned[1].request.files["a"], FileInput::Inline("hi".into()));
        assert_eq!(describe(&planned[1], &[]), "2  [files: a]");
        assert!(plan_jsonl("{\"args\": []}\n{\"argz\": 1}", 10).unwrap_err().starts_with("Line 2 of the chunk file"));
        assert!(plan_jsonl("\n", 10).unwrap_err().contains("no chunks"));
    }

    #[test]
    fn large_files_leave_the_inline_size_and_small_ones_count_in_base64() {
        let inputs = files(&[("small", 300), ("large", BLOB_THRESHOLD_BYTES + 1)]);
        let planned = plan_files(&inputs, &Placement::Stdin, "", 10).unwrap();
        assert_eq!(inline_request_bytes(&planned[..1], &inputs), 400 + 64);
        assert_eq!(inline_request_bytes(&planned[1..], &inputs), 64);
    }

    #[test]
    fn credits_and_limits_are_read_as_people_type_them() {
        assert_eq!(parse_credits(""), Ok(None));
        assert_eq!(parse_credits(" 12 "), Ok(Some(12_000)));
        assert_eq!(parse_credits("1,000.25"), Ok(Some(1_000_250)));
        assert_eq!(parse_credits(".5"), Ok(Some(500)));
        assert!(parse_credits("0").unwrap_err().contains("more than 0"));
        assert!(parse_credits("1.2345").unwrap_err().contains("three decimals"));
        for bad in ["-1", "abc", "1.2.3", ".", "99999999999999999999"] {
            assert!(parse_credits(bad).is_err(), "{bad:?} was accepted");
        }
        assert_eq!(parse_limit("", "Time", 1000, 10_000), Ok(None));
        assert_eq!(parse_limit("5", "Time", 1000, 10_000), Ok(Some(5000)));
        assert_eq!(parse_limit("11", "Time", 1000, 10_000).unwrap_err(), "Time must be between 1 and 10.");
        assert!(parse_limit("0", "Time", 1000, 10_000).is_err());
        assert!(parse_limit("1e3", "Time", 1, 10_000).unwrap_err().contains("not a whole number"));
    }

    #[test]
    fn the_estimate_spans_earlier_jobs_cost_and_the_worst_case() {
        assert_eq!(replica_price(1, 1), 1);
        assert_eq!(replica_price(2_000_000, 3), 6);
        assert_eq!(replica_price(u64::MAX, u64::MAX), i64::MAX);
        assert_eq!(estimate(10, 2, 50_000_000_000, 1, Some(7)), Estimate { expected: Some(70), maximum: 1_000_000 });
        assert_eq!(estimate(10, 2, 50_000_000_000, 1, None).expected, None);

        let job = |module: &str, spent, succeeded| JobStatus {
            id: 1,
            name: String::new(),
            module: module.to_owned(),
            state: JobState::Succeeded,
            created_at_ms: 0,
            finished_at_ms: None,
            chunks: succeeded,
            succeeded,
            failed: 0,
            running: 0,
            pending: 0,
            budget_millicredits: 0,
            spent_millicredits: spent,
            replicas: 2,
            quorum: 2,
            stop_reason: None,
            waiting_reason: None,
            escrowed_millicredits: 0,
            volunteers: 0,
        };
        let jobs = [job("a", 10, 4), job("a", 1, 1), job("b", 1000, 1), job("a", 0, 0)];
        assert_eq!(history_per_chunk(&jobs, "a"), Some(3));
        assert_eq!(history_per_chunk(&jobs, "c"), None);
    }
}
