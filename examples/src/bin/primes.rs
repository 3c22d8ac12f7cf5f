//! `primes FROM TO`: counts the primes in `[FROM, TO)`; a CPU-bound example job and our CPU benchmark.
//!
//! Usage: `primes FROM TO`, or `primes` with "FROM TO" on stdin (handy when a job's chunks differ only in
//! their input). Prints exactly one line, `primes in [FROM, TO): COUNT`. Bad arguments print a message on
//! stderr and exit with status 2.

use std::io::Read as _;
use std::process::ExitCode;

use distributivecom_examples::primes::count_primes;

const USAGE: &str = "usage: primes FROM TO   (or: echo 'FROM TO' | primes)\n\
                     counts the primes p with FROM <= p < TO; FROM and TO are decimal u64 values";

fn main() -> ExitCode {
    let arguments: Vec<String> = std::env::args().skip(1).collect();
    if arguments.iter().any(|argument| argument == "-h" || argument == "--help") {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    match range_from(&arguments) {
        Ok((from, to)) => {
            println!("primes in [{from}, {to}): {}", count_primes(from, to));
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("primes: {message}\n{USAGE}");
            ExitCode::from(2)
        }
    }
}

/// Reads the range from the arguments, or from stdin when there are none.
fn range_from(arguments: &[String]) -> Result<(u64, u64), String> {
    if !arguments.is_empty() {
        return parse_range(arguments.iter().map(String::as_str));
    }
    let mut input = String::new();
    std::io::stdin().read_to_string(&mut input).map_err(|error| format!("cannot read stdin: {error}"))?;
    parse_range(input.split_whitespace())
}

/// Expects exactly two decimal `u64`s; `_` separators such as `1_000_000` are accepted.
fn parse_range<'a>(mut words: impl Iterator<Item = &'a str>) -> Result<(u64, u64), String> {
    let (Some(from), Some(to), None) = (words.next(), words.next(), words.next()) else {
        return Err("expected exactly two numbers, FROM and TO".into());
    };
    Ok((parse_bound("FROM", from)?, parse_bound("TO", to)?))
}

fn parse_bound(name: &str, text: &str) -> Result<u64, String> {
    let digits = text.replace('_', "");
    if digits.is_empty() || !digits.bytes().all(|byte| byte.is_ascii_digit()) {
        return Err(format!("{name} must be a non-negative decimal integer, got {text:?}"));
    }
    digits.parse().map_err(|_| format!("{name} is larger than {}, got {text:?}", u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_two_numbers() {
        assert_eq!(parse_range(["10", "1_000"].into_iter()), Ok((10, 1000)));
        assert_eq!(parse_range("  0\n18446744073709551615 \n".split_whitespace()), Ok((0, u64::MAX)));
    }

    #[test]
    fn rejects_bad_arguments() {
        assert!(parse_range(["10"].into_iter()).is_err());
        assert!(parse_range(["1", "2", "3"].into_iter()).is_err());
        assert!(parse_range(["-1", "2"].into_iter()).is_err());
        assert!(parse_range(["1e6", "2"].into_iter()).is_err());
        assert!(parse_range(["0", "18446744073709551616"].into_iter()).is_err());
        assert!(parse_range(["_", "2"].into_iter()).is_err());
    }
}
