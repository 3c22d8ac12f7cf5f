//! `imgfilter`: applies filters to a binary PPM image, or writes a deterministic synthetic test image.
//!
//! Usage:
//! - `imgfilter -i IN.ppm -o OUT.ppm [-f FILTER]...` reads IN (binary PPM, P6, maxval 255), applies the
//!   filters in the order given (`grayscale`, `invert`, `blur`, `sepia`; `-f a,b` also works) and writes OUT.
//! - `imgfilter --make-test-image W H SEED -o OUT.ppm [-f FILTER]...` does the same starting from a synthetic
//!   W x H image derived from SEED, so a demo needs no image file.
//!
//! On success prints one line, `WIDTHxHEIGHT filters=NAME,NAME` (`filters=none` without filters).
//! Malformed input or I/O failures print a message on stderr and exit with status 1; bad arguments exit
//! with status 2.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use distributivecom_examples::ppm::{self, Filter, MAX_TEST_IMAGE_SIDE};

const USAGE: &str = "usage: imgfilter -i IN.ppm -o OUT.ppm [-f grayscale|invert|blur|sepia]...\n       \
                     imgfilter --make-test-image WIDTH HEIGHT SEED -o OUT.ppm [-f FILTER]...";

#[derive(Debug, PartialEq, Eq)]
enum Source {
    File(PathBuf),
    TestImage { width: usize, height: usize, seed: u64 },
}

#[derive(Debug, PartialEq, Eq)]
struct Options {
    source: Source,
    output: PathBuf,
    filters: Vec<Filter>,
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
            eprintln!("imgfilter: {message}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(&options) {
        Ok(summary) => {
            println!("{summary}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("imgfilter: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn parse_arguments(mut arguments: impl Iterator<Item = String>) -> Result<Parsed, String> {
    let mut input = None;
    let mut test_image = None;
    let mut output = None;
    let mut filters = Vec::new();
    while let Some(argument) = arguments.next() {
        let mut value = |what: &str| arguments.next().ok_or_else(|| format!("{argument} needs {what}"));
        match argument.as_str() {
            "-h" | "--help" => return Ok(Parsed::Help),
            "-i" => input = Some(PathBuf::from(value("a path")?)),
            "-o" => output = Some(PathBuf::from(value("a path")?)),
            "-f" => {
                for name in value("a filter name")?.split(',') {
                    filters.push(name.parse::<Filter>()?);
                }
            }
            "--make-test-image" => {
                let width = parse_side("WIDTH", &value("WIDTH HEIGHT SEED")?)?;
                let height = parse_side("HEIGHT", &value("WIDTH HEIGHT SEED")?)?;
                let seed = value("WIDTH HEIGHT SEED")?;
                let seed = seed.parse().map_err(|_| format!("SEED must be a u64, got {seed:?}"))?;
                test_image = Some(Source::TestImage { width, height, seed });
            }
            other => return Err(format!("unexpected argument {other:?}")),
        }
    }
    let source = match (input, test_image) {
        (Some(path), None) => Source::File(path),
        (None, Some(test_image)) => test_image,
        (Some(_), Some(_)) => return Err("give either -i or --make-test-image, not both".into()),
        (None, None) => return Err("missing -i IN.ppm (or --make-test-image)".into()),
    };
    let output = output.ok_or("missing -o OUT.ppm")?;
    Ok(Parsed::Run(Options { source, output, filters }))
}

fn parse_side(name: &str, text: &str) -> Result<usize, String> {
    text.parse()
        .ok()
        .filter(|side| (1..=MAX_TEST_IMAGE_SIDE).contains(side))
        .ok_or_else(|| format!("{name} must be an integer from 1 to {MAX_TEST_IMAGE_SIDE}, got {text:?}"))
}

/// Produces, filters and writes the image; returns the summary line for stdout.
fn run(options: &Options) -> anyhow::Result<String> {
    let mut image = match &options.source {
        Source::File(path) => {
            let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
            ppm::parse_ppm(&bytes).with_context(|| format!("{} is not a usable image", path.display()))?
        }
        Source::TestImage { width, height, seed } => ppm::test_image(*width, *height, *seed),
    };
    for filter in &options.filters {
        filter.apply(&mut image);
    }
    std::fs::write(&options.output, ppm::write_ppm(&image))
        .with_context(|| format!("cannot write {}", options.output.display()))?;
    let filter_names: Vec<&str> = options.filters.iter().map(|filter| filter.name()).collect();
    let filter_list = if filter_names.is_empty() { "none".to_string() } else { filter_names.join(",") };
    Ok(format!("{}x{} filters={filter_list}", image.width, image.height))
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
    fn filters_keep_their_order() {
        let options = parse(&["-i", "/data/in.ppm", "-f", "blur", "-o", "/data/out.ppm", "-f", "invert,sepia"]);
        assert_eq!(
            options,
            Ok(Options {
                source: Source::File("/data/in.ppm".into()),
                output: "/data/out.ppm".into(),
                filters: vec![Filter::Blur, Filter::Invert, Filter::Sepia],
            })
        );
    }

    #[test]
    fn test_image_mode() {
        let options = parse(&["--make-test-image", "64", "48", "7", "-o", "/data/in.ppm"]);
        assert_eq!(options.map(|options| options.source), Ok(Source::TestImage { width: 64, height: 48, seed: 7 }));
    }

    #[test]
    fn rejects_bad_arguments() {
        assert!(parse(&["-i", "a.ppm"]).is_err());
        assert!(parse(&["-o", "b.ppm"]).is_err());
        assert!(parse(&["-i", "a.ppm", "-o", "b.ppm", "-f", "sharpen"]).is_err());
        assert!(parse(&["-i", "a.ppm", "-o", "b.ppm", "--make-test-image", "1", "1", "1"]).is_err());
        assert!(parse(&["--make-test-image", "0", "1", "1", "-o", "b.ppm"]).is_err());
        assert!(parse(&["--make-test-image", "1", "1", "-o", "b.ppm"]).is_err());
        assert!(parse(&["-i", "a.ppm", "-o", "b.ppm", "extra"]).is_err());
        assert_eq!(parse(&["-h"]), Err("help".into()));
    }
}
