//! Numbers, durations, credits and dates as the web app shows them.

use distributivecom_protocol::api::Pricing;

/// Millicredits in one credit: the server counts in millicredits so that no amount is ever fractional.
const MILLICREDITS_PER_CREDIT: u64 = 1000;

/// "950 ms", "12.4 s", "3 min 05 s", "2 h 07 min".
pub fn duration_ms(milliseconds: u64) -> String {
    let seconds = milliseconds / 1000;
    match milliseconds {
        0..1_000 => format!("{milliseconds} ms"),
        1_000..60_000 => format!("{:.1} s", milliseconds as f64 / 1000.0),
        60_000..3_600_000 => format!("{} min {:02} s", seconds / 60, seconds % 60),
        _ => format!("{} h {:02} min", seconds / 3600, seconds % 3600 / 60),
    }
}

/// "987", "12,345", "1,234,567".
pub fn count(value: u64) -> String {
    let digits = value.to_string();
    let mut grouped = String::with_capacity(digits.len() + digits.len() / 3);
    for (index, digit) in digits.chars().enumerate() {
        if index > 0 && (digits.len() - index).is_multiple_of(3) {
            grouped.push(',');
        }
        grouped.push(digit);
    }
    grouped
}

/// "900 B", "12.3 KiB", "4.0 MiB", "1.50 GiB".
pub fn bytes(value: u64) -> String {
    const KIB: f64 = 1024.0;
    let value_f = value as f64;
    match value {
        0..1024 => format!("{value} B"),
        1024..1_048_576 => format!("{:.1} KiB", value_f / KIB),
        1_048_576..1_073_741_824 => format!("{:.1} MiB", value_f / (KIB * KIB)),
        _ => format!("{:.2} GiB", value_f / (KIB * KIB * KIB)),
    }
}

/// "12.345 credits", "-0.500 credits": always three decimals, so amounts line up and none is rounded away.
pub fn credits(millicredits: i64) -> String {
    format!("{} credits", credit_amount(millicredits))
}

/// A ledger amount with its direction: "+12.345" came in, "-0.500" went out.
pub fn signed_credits(millicredits: i64) -> String {
    if millicredits > 0 { format!("+{}", credit_amount(millicredits)) } else { credit_amount(millicredits) }
}

/// "12.345", "-0.500", "0.000".
fn credit_amount(millicredits: i64) -> String {
    // `unsigned_abs` keeps `i64::MIN` representable; negating it would overflow.
    let magnitude = millicredits.unsigned_abs();
    let sign = if millicredits < 0 { "-" } else { "" };
    format!("{sign}{}.{:03}", magnitude / MILLICREDITS_PER_CREDIT, magnitude % MILLICREDITS_PER_CREDIT)
}

/// Whole credits without decimals ("100") and others without trailing zeros ("0.5"), for prose.
fn credits_in_prose(millicredits: i64) -> String {
    let amount = credit_amount(millicredits);
    let trimmed = amount.trim_end_matches('0').trim_end_matches('.');
    let unit = if millicredits.unsigned_abs() == MILLICREDITS_PER_CREDIT { "credit" } else { "credits" };
    format!("{trimmed} {unit}")
}

fn plural(count: u64, singular: &str, plural: &str) -> String {
    format!("{count} {}", if count == 1 { singular } else { plural })
}

/// The pricing formula in words, for the account page.
pub fn pricing(pricing: &Pricing) -> String {
    let rate = pricing.millicredits_per_million_work_units;
    let volunteer_share = pricing.volunteer_share_percent.min(100);
    let rate = if rate == 1 { "1 millicredit".to_owned() } else { format!("{} millicredits", count(rate)) };
    format!(
        "A validated replica costs {rate} per million work units (one work unit is one WebAssembly \
         instruction); volunteers receive {volunteer_share}%, the platform's {}% fee is burned. New accounts \
         start with {}. By default each chunk runs on {}, and a result is accepted once {} of them agree.",
        100 - volunteer_share,
        credits_in_prose(pricing.starter_grant_millicredits),
        plural(u64::from(pricing.default_replicas), "volunteer", "volunteers"),
        pricing.default_quorum,
    )
}

/// "2023-11-14 22:13 UTC": UTC rather than the visitor's zone, so that the same entry reads the same
/// everywhere (and in support requests).
pub fn date_time_utc(milliseconds_since_epoch: u64) -> String {
    let seconds = milliseconds_since_epoch / 1000;
    let days = seconds / 86_400;
    let seconds_of_day = seconds % 86_400;
    let (year, month, day) = civil_from_days(days);
    format!("{year:04}-{month:02}-{day:02} {:02}:{:02} UTC", seconds_of_day / 3600, seconds_of_day % 3600 / 60)
}

/// The proleptic Gregorian date of a day counted from 1970-01-01 (Howard Hinnant's `civil_from_days`,
/// restricted to days after the epoch).
fn civil_from_days(days_since_epoch: u64) -> (u64, u64, u64) {
    // Shift the epoch to 0000-03-01 so that leap days fall at the end of a (March-based) year.
    let days = days_since_epoch + 719_468;
    let era = days / 146_097;
    let day_of_era = days % 146_097;
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 { month_from_march + 3 } else { month_from_march - 9 };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

/// What a ledger entry refers to: "job 12, chunk 3", "job 12" or "—".
pub fn job_and_chunk(job: Option<u64>, chunk: Option<u32>) -> String {
    match (job, chunk) {
        (Some(job), Some(chunk)) => format!("job {job}, chunk {chunk}"),
        (Some(job), None) => format!("job {job}"),
        (None, _) => "—".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_naturally() {
        assert_eq!(duration_ms(950), "950 ms");
        assert_eq!(duration_ms(12_400), "12.4 s");
        assert_eq!(duration_ms(185_000), "3 min 05 s");
        assert_eq!(duration_ms(7_620_000), "2 h 07 min");
    }

    #[test]
    fn sizes_read_in_binary_units() {
        assert_eq!(bytes(900), "900 B");
        assert_eq!(bytes(12_595), "12.3 KiB");
        assert_eq!(bytes(4 << 20), "4.0 MiB");
        assert_eq!(bytes(3 << 29), "1.50 GiB");
    }

    #[test]
    fn counts_are_grouped_by_thousands() {
        assert_eq!(count(0), "0");
        assert_eq!(count(987), "987");
        assert_eq!(count(12_345), "12,345");
        assert_eq!(count(1_234_567), "1,234,567");
    }

    #[test]
    fn credits_have_three_decimals() {
        assert_eq!(credits(12_345), "12.345 credits");
        assert_eq!(credits(0), "0.000 credits");
        assert_eq!(credits(100_000), "100.000 credits");
        assert_eq!(credits(-500), "-0.500 credits");
        assert_eq!(credits(7), "0.007 credits");
        assert_eq!(credits(i64::MIN), "-9223372036854775.808 credits");
    }

    #[test]
    fn ledger_amounts_show_their_direction() {
        assert_eq!(signed_credits(1_500), "+1.500");
        assert_eq!(signed_credits(-20), "-0.020");
        assert_eq!(signed_credits(0), "0.000");
    }

    #[test]
    fn pricing_reads_as_a_sentence() {
        let pricing = Pricing {
            millicredits_per_million_work_units: 1,
            volunteer_share_percent: 90,
            starter_grant_millicredits: 100_000,
            default_replicas: 2,
            default_quorum: 2,
        };
        assert_eq!(
            super::pricing(&pricing),
            "A validated replica costs 1 millicredit per million work units (one work unit is one WebAssembly \
             instruction); volunteers receive 90%, the platform's 10% fee is burned. New accounts start with 100 \
             credits. By default each chunk runs on 2 volunteers, and a result is accepted once 2 of them agree."
        );
        let other =
            Pricing { millicredits_per_million_work_units: 2_500, starter_grant_millicredits: 1_000, ..pricing };
        let sentence = super::pricing(&other);
        assert!(sentence.contains("costs 2,500 millicredits per million"), "{sentence}");
        assert!(sentence.contains("start with 1 credit."), "{sentence}");
        let fractional = Pricing { starter_grant_millicredits: 2_500, ..pricing };
        assert!(super::pricing(&fractional).contains("start with 2.5 credits."));
    }

    #[test]
    fn dates_are_utc_calendar_dates() {
        assert_eq!(date_time_utc(0), "1970-01-01 00:00 UTC");
        assert_eq!(date_time_utc(1_700_000_000_000), "2023-11-14 22:13 UTC");
        // 2000 and 2024 are leap years; 2100 is not.
        assert_eq!(date_time_utc(951_782_400_000), "2000-02-29 00:00 UTC");
        assert_eq!(date_time_utc(1_709_251_199_000), "2024-02-29 23:59 UTC");
        assert_eq!(date_time_utc(4_107_542_400_000), "2100-03-01 00:00 UTC");
    }

    #[test]
    fn ledger_references_name_job_and_chunk() {
        assert_eq!(job_and_chunk(Some(12), Some(3)), "job 12, chunk 3");
        assert_eq!(job_and_chunk(Some(12), None), "job 12");
        assert_eq!(job_and_chunk(None, None), "—");
    }
}
