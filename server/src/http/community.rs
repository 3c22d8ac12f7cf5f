//! `GET /api/stats/history`: the public statistics page's figures: who is volunteering now, the work of
//! the last 30 days and the leaderboard.
//!
//! The live figures come from the coordinator's memory; the days and the leaderboard from rows the store
//! keeps as results are stored (`daily_totals`, `reputation`), read by index and remembered for two
//! seconds, so that a crowd on the page costs the database little.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::State;
use distributivecom_protocol::api::{CommunityStats, DayTotals, LeaderboardEntry};

use super::AppState;
use super::error::AppError;
use crate::clock::unix_ms;
use crate::format::utc_day;
use crate::store::accounts::{self, Leader};
use crate::store::writes::MS_PER_DAY;

/// Days the page shows, today included.
pub const HISTORY_DAYS: u64 = 30;
/// Places on the leaderboard.
pub const LEADERBOARD_PLACES: u32 = 20;
/// How long the days and the leaderboard are remembered.
const REMEMBER: Duration = Duration::from_secs(2);

/// The days and the leaderboard last read, and when.
#[derive(Debug, Default)]
pub struct HistoryCache {
    last: Mutex<Option<Remembered>>,
}

#[derive(Debug)]
struct Remembered {
    at: Instant,
    days: Vec<DayTotals>,
    leaderboard: Vec<LeaderboardEntry>,
}

/// The community's statistics: volunteers online now, each of the last 30 UTC days (oldest first, days
/// without work included), and the 20 volunteers with the most validated work units.
#[utoipa::path(
    get, path = "/api/stats/history", tag = "workers",
    responses((status = 200, description = "The statistics page's figures", body = CommunityStats))
)]
pub async fn history(State(state): State<AppState>) -> Result<Json<CommunityStats>, AppError> {
    let remembered = {
        let last = state.history.last.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        last.as_ref()
            .filter(|remembered| remembered.at.elapsed() < REMEMBER)
            .map(|remembered| (remembered.days.clone(), remembered.leaderboard.clone()))
    };
    let (days, leaderboard) = match remembered {
        Some(remembered) => remembered,
        None => {
            let today = unix_ms() / MS_PER_DAY;
            let first = today.saturating_sub(HISTORY_DAYS - 1);
            let (stored, leaders) = state
                .store
                .read(move |connection| {
                    Ok((
                        accounts::daily_totals(connection, first, today)?,
                        accounts::leaderboard(connection, LEADERBOARD_PLACES)?,
                    ))
                })
                .await?;
            let days = every_day(first, today, &stored);
            let leaderboard: Vec<LeaderboardEntry> =
                leaders.into_iter().enumerate().map(|(place, leader)| entry(place, leader)).collect();
            let remembered = Remembered { at: Instant::now(), days: days.clone(), leaderboard: leaderboard.clone() };
            *state.history.last.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(remembered);
            (days, leaderboard)
        }
    };
    let now = state.coordinator.stats();
    Ok(Json(CommunityStats {
        volunteers_online: now.workers,
        slots: now.slots,
        running_jobs: now.running_jobs,
        days,
        leaderboard,
    }))
}

/// Every day from `first` to `last`, with the stored totals of the days that had work and zeros for the
/// rest.
fn every_day(first: u64, last: u64, stored: &[accounts::DayTotals]) -> Vec<DayTotals> {
    let mut stored = stored.iter().peekable();
    (first..=last)
        .map(|day| {
            let totals = stored.next_if(|totals| totals.day == day);
            DayTotals {
                day: utc_day(day),
                chunks: totals.map_or(0, |totals| totals.chunks),
                work_units: totals.map_or(0, |totals| totals.work_units),
            }
        })
        .collect()
}

/// A leaderboard place, named by its account or as an anonymous identity.
fn entry(place: usize, leader: Leader) -> LeaderboardEntry {
    let name = leader.username.unwrap_or_else(|| {
        let identity = leader.volunteer.split_once(':').map_or(leader.volunteer.as_str(), |(_, id)| id);
        format!("anonymous {}", identity.chars().take(8).collect::<String>())
    });
    LeaderboardEntry {
        rank: place as u32 + 1,
        name,
        validated_replicas: leader.validated,
        work_units: leader.work_units,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_without_work_are_zeros_and_the_oldest_comes_first() {
        let stored = [
            accounts::DayTotals { day: 19_675, chunks: 3, work_units: 30 },
            accounts::DayTotals { day: 19_677, chunks: 1, work_units: 10 },
        ];
        let days = every_day(19_674, 19_677, &stored);
        let shown: Vec<(&str, u64, u64)> =
            days.iter().map(|day| (day.day.as_str(), day.chunks, day.work_units)).collect();
        assert_eq!(shown, [("2023-11-13", 0, 0), ("2023-11-14", 3, 30), ("2023-11-15", 0, 0), ("2023-11-16", 1, 10)]);
    }

    #[test]
    fn unclaimed_identities_are_anonymous_by_their_first_eight_characters() {
        let leader = |volunteer: &str, username: Option<&str>| Leader {
            volunteer: volunteer.to_owned(),
            username: username.map(str::to_owned),
            validated: 1,
            work_units: 2,
        };
        assert_eq!(entry(0, leader("volunteer:0123456789abcdef", None)).name, "anonymous 01234567");
        assert_eq!(entry(1, leader("volunteer:0123456789abcdef", Some("ada"))).name, "ada");
        assert_eq!(entry(2, leader("user:3", Some("bob"))).rank, 3);
    }
}
