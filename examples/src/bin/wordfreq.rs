//! `wordfreq`: counts words case-insensitively in stdin and in files, and prints the most frequent ones.
//!
//! Usage: `wordfreq [-n N] [-o JSON_PATH] [FILE]...`. Stdin is always read first (it may be empty), then each
//! FILE in order. Prints the top N words (default 10) as `COUNT\tWORD` lines, by count descending and then
//! word ascending. With `-o`, also writes the whole table as
//! `{"total": T, "distinct": D, "words": {"word": count, ...}}` (keys sorted) to JSON_PATH.
//! Bad arguments exit with status 2; unreadable inputs or an unwritable output exit with status 1.

use std::io::{Read as _, Write as _};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use distributivecom_examples::words::WordCounts;

const USAGE: &str = "usage: wordfreq [-n N] [-o JSON_PATH] [FILE]...\n\
                     reads stdin and then each FILE, prints the N (default 10) most frequent words as COUNT<TAB>WORD";

#[derive(Debug, PartialEq, Eq)]
struct Options {
    top: usize,
    json_path: Option<PathBuf>,
    files: Vec<PathBuf>,
}

enum Parsed {
    Run(Options),
    Help,
}

fn main() -> ExitCode {
    let options = match parse_arguments(std::env::args().skip(1)) {
        Ok(Parsed::Run(options)) => options,
        Ok(Parsed::Help) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("wordfreq: {message}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(&options) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("wordfreq: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn parse_arguments(mut arguments: impl Iterator<Item = String>) -> Result<Parsed, String> {
    let mut options = Options { top: 10, json_path: None, files: Vec::new() };
    let mut only_files = false;
    while let Some(argument) = arguments.next() {
        match argument.as_str() {
            _ if only_files => options.files.push(argument.into()),
            "-h" | "--help" => return Ok(Parsed::Help),
            "--" => only_files = true,
            "-n" => {
                let value = arguments.next().ok_or("-n needs a number")?;
                options.top = value.parse().map_err(|_| format!("-n needs a non-negative integer, got {value:?}"))?;
            }
            "-o" => options.json_path = Some(arguments.next().ok_or("-o needs a path")?.into()),
            option if option.starts_with('-') && option != "-" => {
                return Err(format!("unknown option {option:?}"));
            }
            _ => options.files.push(argument.into()),
        }
    }
    Ok(Parsed::Run(options))
}

fn run(options: &Options) -> anyhow::Result<()> {
    let mut counts = WordCounts::new();
    let mut input = Vec::new();
    std::io::stdin().read_to_end(&mut input).context("cannot read stdin")?;
    counts.add_text(&String::from_utf8_lossy(&input));
    for path in &options.files {
        // Invalid UTF-8 becomes U+FFFD, which is not a word character, so it only splits words.
        let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        counts.add_text(&String::from_utf8_lossy(&bytes));
    }

    let mut stdout = std::io::BufWriter::new(std::io::stdout().lock());
    for (word, count) in counts.top(options.top) {
        writeln!(stdout, "{count}\t{word}").context("cannot write stdout")?;
    }
    stdout.flush().context("cannot write stdout")?;

    if let Some(json_path) = &options.json_path {
        std::fs::write(json_path, counts.to_json()).with_context(|| format!("cannot write {}", json_path.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(arguments: &[&str]) -> Result<Options, String> {
        match parse_arguments(arguments.iter().map(|argument| argument.to_string()))? {
            Parsed::Run(options) => Ok(options),
            Parsed::Help => Err("help".into()),
        }
    }

    #[test]
    fn defaults_and_options() {
        assert_eq!(parse(&[]), Ok(Options { top: 10, json_path: None, files: vec![] }));
        assert_eq!(
            parse(&["/data/a.txt", "-n", "3", "-o", "/data/freq.json", "--", "-n"]),
            Ok(Options {
                top: 3,
                json_path: Some("/data/freq.json".into()),
                files: vec!["/data/a.txt".into(), "-n".into()],
            })
        );
    }

    #[test]
    fn rejects_bad_arguments() {
        assert!(parse(&["-n"]).is_err());
        assert!(parse(&["-n", "x"]).is_err());
        assert!(parse(&["-n", "-1"]).is_err());
        assert!(parse(&["-o"]).is_err());
        assert!(parse(&["--top"]).is_err());
        assert_eq!(parse(&["--help"]), Err("help".into()));
    }
}
