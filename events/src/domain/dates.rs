//! Calendar arithmetic of the rules, on Japanese calendar dates.

use chrono::{Datelike, Months, NaiveDate};

/// The last day of `date`'s month.
pub fn month_end(date: NaiveDate) -> NaiveDate {
    let first = month_start(date);
    first
        .checked_add_months(Months::new(1))
        .and_then(|next| next.pred_opt())
        .expect("dates in the domain are far from chrono's limits")
}

/// The first day of `date`'s month.
pub fn month_start(date: NaiveDate) -> NaiveDate {
    date.with_day(1).expect("every month has a first day")
}

/// Whether `date` is the last day of its month.
pub fn is_month_end(date: NaiveDate) -> bool {
    month_end(date) == date
}

/// The last day of the month `months` after `date`'s month.
pub fn month_end_after(date: NaiveDate, months: u32) -> NaiveDate {
    month_end(
        month_start(date)
            .checked_add_months(Months::new(months))
            .expect("dates in the domain are far from chrono's limits"),
    )
}

/// The last day of a validity period of `months` months starting on `from`
/// (DOMAIN.md): when `from` is the 1st, `months` whole months; otherwise the
/// rest of `from`'s month plus `months` whole months. The result is always a
/// month end.
pub fn validity_until(from: NaiveDate, months: u32) -> NaiveDate {
    assert!(months > 0, "a validity period has at least one month");
    if from.day() == 1 {
        month_end_after(from, months - 1)
    } else {
        month_end_after(from, months)
    }
}

/// The number of months of the validity period `from..=until`, the inverse of
/// [`validity_until`]; `None` when `until` is not a month end or the period
/// is not a whole number of months counted that way.
pub fn validity_months(from: NaiveDate, until: NaiveDate) -> Option<u32> {
    if !is_month_end(until) || until < from {
        return None;
    }
    let month_index = |d: NaiveDate| d.year() * 12 + d.month0() as i32;
    let whole = month_index(until) - month_index(from);
    let months = if from.day() == 1 { whole + 1 } else { whole };
    u32::try_from(months).ok().filter(|&m| m > 0)
}

/// The fiscal year (年度) of `date`: April 1 to March 31, named by the
/// calendar year of its April.
pub fn fiscal_year(date: NaiveDate) -> i32 {
    if date.month() >= 4 {
        date.year()
    } else {
        date.year() - 1
    }
}

/// The first July 31 on or after `date`: the end of a copayment-ratio or
/// cost-limit certificate that starts on `date`.
pub fn next_july_31(date: NaiveDate) -> NaiveDate {
    let this_year = NaiveDate::from_ymd_opt(date.year(), 7, 31).expect("July has 31 days");
    if date <= this_year {
        this_year
    } else {
        NaiveDate::from_ymd_opt(date.year() + 1, 7, 31).expect("July has 31 days")
    }
}

/// Whether `date` is August 1, the start of the yearly certificates.
pub fn is_august_first(date: NaiveDate) -> bool {
    date.month() == 8 && date.day() == 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(y: i32, m: u32, day: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, day).unwrap()
    }

    #[test]
    fn validity_from_the_first_is_whole_months() {
        assert_eq!(validity_until(d(2026, 4, 1), 6), d(2026, 9, 30));
        assert_eq!(validity_until(d(2026, 4, 1), 12), d(2027, 3, 31));
        assert_eq!(validity_months(d(2026, 4, 1), d(2026, 9, 30)), Some(6));
    }

    #[test]
    fn validity_from_mid_month_adds_the_rest_of_the_month() {
        assert_eq!(validity_until(d(2026, 4, 15), 6), d(2026, 10, 31));
        assert_eq!(validity_until(d(2026, 8, 31), 6), d(2027, 2, 28));
        assert_eq!(validity_until(d(2027, 8, 31), 6), d(2028, 2, 29));
        assert_eq!(validity_months(d(2026, 4, 15), d(2026, 10, 31)), Some(6));
        assert_eq!(validity_months(d(2026, 4, 15), d(2026, 4, 30)), None);
        assert_eq!(validity_months(d(2026, 4, 15), d(2026, 10, 30)), None);
    }

    #[test]
    fn fiscal_year_starts_in_april() {
        assert_eq!(fiscal_year(d(2026, 3, 31)), 2025);
        assert_eq!(fiscal_year(d(2026, 4, 1)), 2026);
    }

    #[test]
    fn next_july_31_is_on_or_after() {
        assert_eq!(next_july_31(d(2026, 7, 31)), d(2026, 7, 31));
        assert_eq!(next_july_31(d(2026, 8, 1)), d(2027, 7, 31));
        assert_eq!(next_july_31(d(2026, 5, 10)), d(2026, 7, 31));
    }
}
