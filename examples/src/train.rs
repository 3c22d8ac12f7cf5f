//! Softmax regression on handwritten digits, trained by full-batch gradient descent over shards: the logic
//! of the `gradient` program (one shard's gradient per round, on a volunteer) and of the coordinator's
//! loop in `distributivecom train`, which also runs it locally in one process to compare.
//!
//! Every number is `f32` and every transcendental function is `libm`'s, so that a gradient computed in
//! WebAssembly on a volunteer and one computed natively here are the same bits: a distributed run and a
//! local run with the same data and the same number of rounds give identical weights.
//!
//! Wire formats (little-endian):
//! - a shard: samples of [`SAMPLE_BYTES`] bytes, 64 pixels (0 to 16) then the label (0 to 9);
//! - the weights (the round's broadcast): [`PARAMETERS`] `f32`, class by class, 64 pixel weights then a bias;
//! - a shard's answer: the sample count (`u32`), the summed loss (`f32`), then the summed gradient
//!   ([`PARAMETERS`] `f32`).

use std::fmt;

pub const FEATURES: usize = 64;
pub const CLASSES: usize = 10;
/// Weights per class (the pixels and a bias), times the classes.
pub const PARAMETERS: usize = CLASSES * (FEATURES + 1);
pub const SAMPLE_BYTES: usize = FEATURES + 1;
/// The step size of gradient descent.
pub const LEARNING_RATE: f32 = 2.0;

/// One image and its digit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sample {
    pub pixels: [u8; FEATURES],
    pub label: u8,
}

/// Why data could not be read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DataError(pub String);

impl fmt::Display for DataError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.0)
    }
}

impl std::error::Error for DataError {}

/// Reads the CSV of `examples/data/digits.csv`: 64 pixels and the label per line.
pub fn parse_csv(text: &str) -> Result<Vec<Sample>, DataError> {
    let mut samples = Vec::new();
    for (number, line) in text.lines().enumerate().filter(|(_, line)| !line.trim().is_empty()) {
        let bad = |what: &str| DataError(format!("line {}: {what}", number + 1));
        let values: Vec<u8> = line
            .split(',')
            .map(|value| value.trim().parse::<u8>())
            .collect::<Result<_, _>>()
            .map_err(|error| bad(&error.to_string()))?;
        if values.len() != SAMPLE_BYTES {
            return Err(bad(&format!("{} values, not {SAMPLE_BYTES}", values.len())));
        }
        samples.push(decode_sample(&values).map_err(|DataError(message)| bad(&message))?);
    }
    Ok(samples)
}

fn decode_sample(bytes: &[u8]) -> Result<Sample, DataError> {
    let mut pixels = [0; FEATURES];
    pixels.copy_from_slice(&bytes[..FEATURES]);
    let label = bytes[FEATURES];
    if pixels.iter().any(|pixel| *pixel > 16) || usize::from(label) >= CLASSES {
        return Err(DataError("pixels go from 0 to 16 and labels from 0 to 9".to_owned()));
    }
    Ok(Sample { pixels, label })
}

pub fn encode_shard(samples: &[Sample]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(samples.len() * SAMPLE_BYTES);
    for sample in samples {
        bytes.extend_from_slice(&sample.pixels);
        bytes.push(sample.label);
    }
    bytes
}

pub fn decode_shard(bytes: &[u8]) -> Result<Vec<Sample>, DataError> {
    if !bytes.len().is_multiple_of(SAMPLE_BYTES) {
        return Err(DataError(format!("a shard is a multiple of {SAMPLE_BYTES} bytes, not {}", bytes.len())));
    }
    bytes.chunks_exact(SAMPLE_BYTES).map(decode_sample).collect()
}

pub fn encode_weights(weights: &[f32]) -> Vec<u8> {
    weights.iter().flat_map(|weight| weight.to_le_bytes()).collect()
}

pub fn decode_weights(bytes: &[u8]) -> Result<Vec<f32>, DataError> {
    if bytes.len() != PARAMETERS * 4 {
        return Err(DataError(format!(
            "the weights are {} bytes ({PARAMETERS} f32), not {}",
            PARAMETERS * 4,
            bytes.len()
        )));
    }
    Ok(floats(bytes))
}

fn floats(bytes: &[u8]) -> Vec<f32> {
    bytes.chunks_exact(4).map(|four| f32::from_le_bytes([four[0], four[1], four[2], four[3]])).collect()
}

/// One shard's contribution to a round: sums over its samples.
#[derive(Clone, Debug, PartialEq)]
pub struct Gradient {
    pub count: u32,
    pub loss: f32,
    pub gradient: Vec<f32>,
}

impl Gradient {
    pub fn encode(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(8 + self.gradient.len() * 4);
        bytes.extend_from_slice(&self.count.to_le_bytes());
        bytes.extend_from_slice(&self.loss.to_le_bytes());
        bytes.extend_from_slice(&encode_weights(&self.gradient));
        bytes
    }

    pub fn decode(bytes: &[u8]) -> Result<Gradient, DataError> {
        if bytes.len() != 8 + PARAMETERS * 4 {
            return Err(DataError(format!("a gradient is {} bytes, not {}", 8 + PARAMETERS * 4, bytes.len())));
        }
        Ok(Gradient {
            count: u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]),
            loss: f32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]),
            gradient: floats(&bytes[8..]),
        })
    }
}

/// The class probabilities the weights give a sample.
fn probabilities(weights: &[f32], sample: &Sample) -> [f32; CLASSES] {
    let mut logits = [0f32; CLASSES];
    for (class, logit) in logits.iter_mut().enumerate() {
        let row = &weights[class * (FEATURES + 1)..(class + 1) * (FEATURES + 1)];
        let mut sum = row[FEATURES];
        for (weight, pixel) in row.iter().zip(sample.pixels) {
            sum += weight * (f32::from(pixel) / 16.0);
        }
        *logit = sum;
    }
    let top = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut total = 0f32;
    for logit in &mut logits {
        *logit = libm::expf(*logit - top);
        total += *logit;
    }
    logits.map(|exponential| exponential / total)
}

/// The summed cross-entropy loss and its gradient over `samples`.
pub fn gradient(weights: &[f32], samples: &[Sample]) -> Gradient {
    let mut gradient = vec![0f32; PARAMETERS];
    let mut loss = 0f32;
    for sample in samples {
        let probabilities = probabilities(weights, sample);
        loss -= libm::logf(probabilities[usize::from(sample.label)].max(1e-30));
        for (class, probability) in probabilities.iter().enumerate() {
            let error = probability - if class == usize::from(sample.label) { 1.0 } else { 0.0 };
            let row = &mut gradient[class * (FEATURES + 1)..(class + 1) * (FEATURES + 1)];
            for (slot, pixel) in row.iter_mut().zip(sample.pixels) {
                *slot += error * (f32::from(pixel) / 16.0);
            }
            row[FEATURES] += error;
        }
    }
    Gradient { count: samples.len() as u32, loss, gradient }
}

/// One step of gradient descent from the shards' answers, summed in shard order. Returns the new weights
/// and the mean loss of the weights the answers were computed with.
pub fn step(weights: &[f32], answers: &[Gradient]) -> (Vec<f32>, f32) {
    let count: u32 = answers.iter().map(|answer| answer.count).sum();
    let mut total = vec![0f32; PARAMETERS];
    let mut loss = 0f32;
    for answer in answers {
        loss += answer.loss;
        for (sum, part) in total.iter_mut().zip(&answer.gradient) {
            *sum += part;
        }
    }
    let scale = LEARNING_RATE / count.max(1) as f32;
    let next = weights.iter().zip(&total).map(|(weight, sum)| weight - scale * sum).collect();
    (next, loss / count.max(1) as f32)
}

/// The share of samples the weights classify right.
pub fn accuracy(weights: &[f32], samples: &[Sample]) -> f32 {
    let right = samples
        .iter()
        .filter(|sample| {
            let probabilities = probabilities(weights, sample);
            let best = (0..CLASSES)
                .fold(0, |best, class| if probabilities[class] > probabilities[best] { class } else { best });
            best == usize::from(sample.label)
        })
        .count();
    right as f32 / samples.len().max(1) as f32
}

/// The training set (the first 80%) split into `shards` shards of nearly equal size, and the test set.
pub fn split(samples: &[Sample], shards: usize) -> (Vec<Vec<Sample>>, Vec<Sample>) {
    let training = samples.len() * 4 / 5;
    let (train, test) = samples.split_at(training);
    let shards = shards.clamp(1, train.len().max(1));
    let parts = (0..shards)
        .map(|index| train[index * train.len() / shards..(index + 1) * train.len() / shards].to_vec())
        .collect();
    (parts, test.to_vec())
}

/// Trains in one process, exactly as the distributed loop does: `rounds` steps from zero weights. Returns
/// the weights and each round's mean loss.
pub fn train_locally(shards: &[Vec<Sample>], rounds: u32) -> (Vec<f32>, Vec<f32>) {
    let mut weights = vec![0f32; PARAMETERS];
    let mut losses = Vec::new();
    for _ in 0..rounds {
        let answers: Vec<Gradient> = shards.iter().map(|shard| gradient(&weights, shard)).collect();
        let (next, loss) = step(&weights, &answers);
        weights = next;
        losses.push(loss);
    }
    (weights, losses)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples() -> Vec<Sample> {
        parse_csv(include_str!("../data/digits.csv")).unwrap()
    }

    #[test]
    fn the_bundled_data_reads_whole() {
        let samples = samples();
        assert_eq!(samples.len(), 1797);
        assert_eq!(decode_shard(&encode_shard(&samples)).unwrap(), samples);
        assert!(parse_csv("1,2,3").unwrap_err().0.contains("3 values"));
        assert!(decode_shard(&[0; 64]).is_err());
    }

    #[test]
    fn training_lowers_the_loss_and_learns_the_digits() {
        let (shards, test) = split(&samples(), 8);
        assert_eq!(shards.len(), 8);
        assert_eq!(shards.iter().map(Vec::len).sum::<usize>() + test.len(), 1797);
        let (weights, losses) = train_locally(&shards, 30);
        assert!(losses.windows(2).all(|pair| pair[1] < pair[0]), "{losses:?}");
        assert!((losses[0] - libm::logf(10.0)).abs() < 1e-4, "zero weights: every class at 1/10");
        assert!(accuracy(&weights, &test) > 0.85, "{}", accuracy(&weights, &test));
    }

    #[test]
    fn answers_survive_their_wire_format_and_sum_in_shard_order() {
        let (shards, _) = split(&samples(), 3);
        let weights = vec![0.01f32; PARAMETERS];
        let answers: Vec<Gradient> = shards.iter().map(|shard| gradient(&weights, shard)).collect();
        let decoded: Vec<Gradient> = answers.iter().map(|answer| Gradient::decode(&answer.encode()).unwrap()).collect();
        assert_eq!(decoded, answers);
        assert_eq!(decode_weights(&encode_weights(&weights)).unwrap(), weights);
        assert!(Gradient::decode(&[0; 3]).is_err());
    }
}
