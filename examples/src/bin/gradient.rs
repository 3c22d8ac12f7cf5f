//! `gradient`: one shard's step of softmax regression on handwritten digits, for a session's round.
//!
//! Reads the weights from stdin (the round's broadcast) and the shard from `/data/shard.bin` (or the file
//! named by its only argument), and writes the shard's summed loss and gradient to stdout, in the formats
//! of `distributivecom_examples::train`. Bad input prints a message on stderr and exits with status 2.

use std::io::{Read as _, Write as _};
use std::process::ExitCode;

use distributivecom_examples::train::{Gradient, decode_shard, decode_weights, gradient};

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("gradient: {message}");
            ExitCode::from(2)
        }
    }
}

fn run() -> Result<(), String> {
    let path = std::env::args().nth(1).unwrap_or_else(|| "/data/shard.bin".to_owned());
    let shard = std::fs::read(&path).map_err(|error| format!("cannot read the shard {path}: {error}"))?;
    let samples = decode_shard(&shard).map_err(|error| error.to_string())?;
    let mut broadcast = Vec::new();
    std::io::stdin().read_to_end(&mut broadcast).map_err(|error| format!("cannot read the weights: {error}"))?;
    let weights = decode_weights(&broadcast).map_err(|error| error.to_string())?;
    let answer: Gradient = gradient(&weights, &samples);
    std::io::stdout().write_all(&answer.encode()).map_err(|error| format!("cannot write the gradient: {error}"))
}
