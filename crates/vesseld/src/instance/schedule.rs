//! Scheduled snapshots: `snapshots.schedule` (cron's five fields, minute hour day-of-month
//! month day-of-week, in UTC, or `@hourly`, `@daily`, `@weekly`, `@monthly`, `@yearly`) and
//! `snapshots.expiry` (how long a snapshot is kept: `30M`, `12H`, `7d`, `2w`, `1m`, `1y`,
//! combined as `1d 12H`), as Incus names them. Pure functions; the daemon's loop that uses
//! them is in `snapshot_schedule`.

use std::collections::BTreeSet;

/// A parsed schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    minutes: BTreeSet<u32>,
    hours: BTreeSet<u32>,
    days: BTreeSet<u32>,
    months: BTreeSet<u32>,
    weekdays: BTreeSet<u32>,
    /// Whether day-of-month and day-of-week were both restricted (cron then takes either).
    either_day: bool,
}

fn field(text: &str, lo: u32, hi: u32, what: &str) -> Result<BTreeSet<u32>, String> {
    let mut out = BTreeSet::new();
    for part in text.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => (
                r,
                s.parse::<u32>()
                    .ok()
                    .filter(|s| *s > 0)
                    .ok_or_else(|| format!("{what}: bad step {s:?}"))?,
            ),
            None => (part, 1),
        };
        let (a, b) = if range == "*" {
            (lo, hi)
        } else if let Some((a, b)) = range.split_once('-') {
            let p = |x: &str| {
                x.parse::<u32>()
                    .map_err(|_| format!("{what}: {x:?} is not a number"))
            };
            (p(a)?, p(b)?)
        } else {
            let a = range
                .parse::<u32>()
                .map_err(|_| format!("{what}: {range:?} is not a number"))?;
            (a, if part.contains('/') { hi } else { a })
        };
        if a < lo || b > hi || a > b {
            return Err(format!("{what}: {part:?} is outside {lo}-{hi}"));
        }
        out.extend((a..=b).step_by(step as usize));
    }
    Ok(out)
}

impl Schedule {
    /// Parses a schedule; the error says what is wrong.
    pub fn parse(text: &str) -> Result<Schedule, String> {
        let text = match text.trim() {
            "@hourly" => "0 * * * *",
            "@daily" | "@midnight" => "0 0 * * *",
            "@weekly" => "0 0 * * 0",
            "@monthly" => "0 0 1 * *",
            "@yearly" | "@annually" => "0 0 1 1 *",
            t => t,
        };
        let f: Vec<&str> = text.split_whitespace().collect();
        if f.len() != 5 {
            return Err(
                "give five fields, minute hour day-of-month month day-of-week (e.g. \
                 \"0 */6 * * *\"), or @hourly, @daily, @weekly, @monthly, @yearly"
                    .into(),
            );
        }
        let mut weekdays = field(f[4], 0, 7, "day of week")?;
        if weekdays.remove(&7) {
            weekdays.insert(0);
        }
        Ok(Schedule {
            minutes: field(f[0], 0, 59, "minute")?,
            hours: field(f[1], 0, 23, "hour")?,
            days: field(f[2], 1, 31, "day of month")?,
            months: field(f[3], 1, 12, "month")?,
            weekdays,
            either_day: f[2] != "*" && f[4] != "*",
        })
    }

    /// Whether the minute starting at `secs` (seconds since the epoch, UTC) is one of the
    /// schedule's.
    pub fn matches(&self, secs: i64) -> bool {
        let Ok(t) = time::OffsetDateTime::from_unix_timestamp(secs) else {
            return false;
        };
        let (minute, hour) = (u32::from(t.minute()), u32::from(t.hour()));
        let (month, day) = (u32::from(u8::from(t.month())), u32::from(t.day()));
        let weekday = u32::from(t.weekday().number_days_from_sunday());
        let dom = self.days.contains(&day);
        let dow = self.weekdays.contains(&weekday);
        let day_ok = if self.either_day {
            dom || dow
        } else {
            dom && dow
        };
        self.minutes.contains(&minute)
            && self.hours.contains(&hour)
            && self.months.contains(&month)
            && day_ok
    }
}

/// Seconds since the epoch, now.
pub fn now_secs() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// Seconds an expiry (`30M`, `12H`, `7d`, `2w`, `1m`, `1y`, or several: `1d 12H`) keeps a
/// snapshot; the error says what is wrong.
pub fn expiry_secs(text: &str) -> Result<i64, String> {
    let mut total: i64 = 0;
    let mut any = false;
    for tok in text.split_whitespace() {
        let (n, unit) = tok.split_at(tok.len() - tok.chars().last().map_or(0, char::len_utf8));
        let n: i64 = n
            .parse()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| format!("{tok:?}: give a count and a unit (e.g. 7d)"))?;
        let unit = match unit {
            "M" => 60,
            "H" => 3600,
            "d" => 86_400,
            "w" => 7 * 86_400,
            "m" => 30 * 86_400,
            "y" => 365 * 86_400,
            u => {
                return Err(format!(
                    "{tok:?}: unit {u:?} is none of M (minutes), H (hours), d, w, m (months), y"
                ))
            }
        };
        total = total.saturating_add(n.saturating_mul(unit));
        any = true;
    }
    if !any {
        return Err("give a duration, e.g. 7d or 1d 12H".into());
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-12-03 (a Thursday) at `h`:`m` UTC.
    fn at(h: i64, m: i64) -> i64 {
        1_796_256_000 + h * 3600 + m * 60
    }

    #[test]
    fn schedules_match_their_minutes() {
        assert_eq!(crate::clock::rfc3339(at(0, 0)), "2026-12-03T00:00:00Z");
        let hourly = Schedule::parse("@hourly").unwrap();
        assert!(hourly.matches(at(5, 0)) && hourly.matches(at(5, 0) + 59));
        assert!(!hourly.matches(at(5, 1)));
        let six = Schedule::parse("30 */6 * * *").unwrap();
        assert!(six.matches(at(0, 30)) && six.matches(at(18, 30)));
        assert!(!six.matches(at(3, 30)));
        let thursdays = Schedule::parse("0 12 * * 4").unwrap();
        assert!(thursdays.matches(at(12, 0)));
        assert!(!thursdays.matches(at(12, 0) + 86_400));
        let sunday7 = Schedule::parse("0 12 * * 7").unwrap();
        assert!(sunday7.matches(at(12, 0) + 3 * 86_400));
        // Day of month or of week when both are given, as cron does.
        let either = Schedule::parse("0 0 1 * 4").unwrap();
        assert!(either.matches(at(0, 0)));
        let list = Schedule::parse("0,15,45 1-2 3 12 *").unwrap();
        assert!(list.matches(at(2, 45)) && !list.matches(at(2, 30)));
        let every = Schedule::parse("* * * * *").unwrap();
        assert!(every.matches(at(7, 13)));
    }

    #[test]
    fn bad_schedules_say_why() {
        for (bad, says) in [
            ("", "five fields"),
            ("0 0 * *", "five fields"),
            ("60 * * * *", "minute"),
            ("* 24 * * *", "hour"),
            ("* * 0 * *", "day of month"),
            ("*/0 * * * *", "step"),
            ("a * * * *", "not a number"),
            ("5-1 * * * *", "outside"),
            ("@often", "five fields"),
        ] {
            let e = Schedule::parse(bad).unwrap_err();
            assert!(e.contains(says), "{bad:?}: {e}");
        }
    }

    #[test]
    fn expiries_add_up() {
        assert_eq!(expiry_secs("30M").unwrap(), 1800);
        assert_eq!(expiry_secs("1d 12H").unwrap(), 129_600);
        assert_eq!(expiry_secs("2w").unwrap(), 14 * 86_400);
        for bad in ["", "7", "d", "0d", "7x", "-1d"] {
            assert!(expiry_secs(bad).is_err(), "{bad:?}");
        }
    }
}
