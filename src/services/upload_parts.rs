//! The rules of a multipart upload's parts, without I/O (`uploads.rs` applies them): which part
//! numbers a browser may ask URLs for, how long a part URL lives, each part's exact size under
//! the plan, and whether what the store holds is the whole upload — every part `1..=part_count`,
//! each with its planned size — before snapgate completes it.

use chrono::{DateTime, Duration, Utc};

use crate::domain::Violation;
use crate::oss::multipart::StoredPart;
use crate::store::MultipartPlan;

/// Part URLs asked for in one call, at most (a client asks again as it goes).
pub const MAX_PART_NUMBERS: usize = 100;
/// A part URL lives this long at most (never past the browser token or the intent).
pub const PART_URL_TTL_S: i64 = 15 * 60;
/// Problems listed in one answer, at most (the `detail` tells how many there are).
pub const MAX_LISTED_PROBLEMS: usize = 100;

/// The exact size of part `n` (1-based) of an object of `size` bytes under `plan`: `part_size`,
/// except the last, which holds the rest.
pub fn part_len(plan: &MultipartPlan, size: u64, n: u32) -> u64 {
    let start = u64::from(n - 1) * plan.part_size;
    size.saturating_sub(start).min(plan.part_size)
}

/// Until when a part URL made `now` may be used: 15 minutes, the browser token's expiry, the
/// intent's or the signing credential's, whichever comes first.
pub fn part_url_expiry(
    now: DateTime<Utc>,
    token_expires_at: DateTime<Utc>,
    intent_expires_at: DateTime<Utc>,
    credential_expires_at: Option<DateTime<Utc>>,
) -> DateTime<Utc> {
    let mut until = (now + Duration::seconds(PART_URL_TTL_S))
        .min(token_expires_at)
        .min(intent_expires_at);
    if let Some(c) = credential_expires_at {
        until = until.min(c);
    }
    until
}

/// The part numbers of one request for URLs: 1 to [`MAX_PART_NUMBERS`] of them, each within
/// `1..=part_count`. Every problem is listed.
pub fn check_part_numbers(numbers: &[u64], part_count: u32) -> Result<Vec<u32>, Vec<Violation>> {
    let mut errors = Vec::new();
    if numbers.is_empty() || numbers.len() > MAX_PART_NUMBERS {
        errors.push(Violation {
            field: "/part_numbers".into(),
            code: "out_of_range".into(),
            message: format!("ask for 1 to {MAX_PART_NUMBERS} parts at a time"),
        });
    }
    for (i, &n) in numbers.iter().enumerate() {
        if !(1..=u64::from(part_count)).contains(&n) {
            errors.push(Violation {
                field: format!("/part_numbers/{i}"),
                code: "out_of_range".into(),
                message: format!("part numbers run from 1 to {part_count} for this upload"),
            });
        }
    }
    if errors.is_empty() {
        Ok(numbers.iter().map(|&n| n as u32).collect())
    } else {
        errors.truncate(MAX_LISTED_PROBLEMS);
        Err(errors)
    }
}

/// Why the stored parts are not yet the whole upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PartsProblem {
    /// These part numbers are not stored (ascending, all of them).
    Missing(Vec<u32>),
    /// These parts are stored with another size: `(number, stored, planned)`.
    Sizes(Vec<(u32, u64, u64)>),
}

/// The parts to complete the upload with, `1..=part_count` in order, if the store holds every
/// one with its planned size. Parts numbered beyond the plan are left out (snapgate signs none,
/// so none can be there; if one were, it is not part of the object).
pub fn whole_upload(
    plan: &MultipartPlan,
    size: u64,
    stored: &[StoredPart],
) -> Result<Vec<StoredPart>, PartsProblem> {
    let mut by_number: Vec<Option<&StoredPart>> = vec![None; plan.part_count as usize];
    for p in stored {
        if (1..=plan.part_count).contains(&p.number) {
            by_number[p.number as usize - 1] = Some(p);
        }
    }
    let missing: Vec<u32> = (1..=plan.part_count)
        .filter(|n| by_number[*n as usize - 1].is_none())
        .collect();
    if !missing.is_empty() {
        return Err(PartsProblem::Missing(missing));
    }
    let parts: Vec<StoredPart> = by_number.into_iter().flatten().cloned().collect();
    let wrong: Vec<(u32, u64, u64)> = parts
        .iter()
        .filter_map(|p| {
            let want = part_len(plan, size, p.number);
            (p.size != want).then_some((p.number, p.size, want))
        })
        .collect();
    if !wrong.is_empty() {
        return Err(PartsProblem::Sizes(wrong));
    }
    Ok(parts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(part_size: u64, part_count: u32) -> MultipartPlan {
        MultipartPlan {
            oss_upload_id: "U".into(),
            part_size,
            part_count,
        }
    }

    fn part(number: u32, size: u64) -> StoredPart {
        StoredPart {
            number,
            etag: format!("E{number}"),
            size,
        }
    }

    #[test]
    fn parts_are_full_but_the_last() {
        let p = plan(10, 3);
        assert_eq!(
            (
                part_len(&p, 25, 1),
                part_len(&p, 25, 2),
                part_len(&p, 25, 3)
            ),
            (10, 10, 5)
        );
        assert_eq!(part_len(&p, 30, 3), 10);
    }

    #[test]
    fn part_numbers_are_bounded_and_every_bad_one_is_named() {
        assert_eq!(check_part_numbers(&[1, 3, 2], 3), Ok(vec![1, 3, 2]));
        let e = check_part_numbers(&[0, 2, 4], 3).unwrap_err();
        let fields: Vec<&str> = e.iter().map(|v| v.field.as_str()).collect();
        assert_eq!(fields, ["/part_numbers/0", "/part_numbers/2"]);
        assert!(check_part_numbers(&[], 3).is_err());
        let many: Vec<u64> = (1..=101).collect();
        assert_eq!(check_part_numbers(&many, 200).unwrap_err().len(), 1);
    }

    #[test]
    fn the_whole_upload_needs_every_part_with_its_size() {
        let p = plan(10, 3);
        let all = [part(3, 5), part(1, 10), part(2, 10)];
        let got = whole_upload(&p, 25, &all).unwrap();
        assert_eq!(got.iter().map(|x| x.number).collect::<Vec<_>>(), [1, 2, 3]);
        assert_eq!(
            whole_upload(&p, 25, &[part(2, 10)]),
            Err(PartsProblem::Missing(vec![1, 3]))
        );
        assert_eq!(
            whole_upload(&p, 25, &[part(1, 10), part(2, 9), part(3, 5)]),
            Err(PartsProblem::Sizes(vec![(2, 9, 10)]))
        );
    }

    #[test]
    fn a_part_url_never_outlives_the_token_the_intent_or_the_credential() {
        let now = Utc::now();
        let far = now + Duration::hours(5);
        assert_eq!(
            part_url_expiry(now, far, far, None),
            now + Duration::minutes(15)
        );
        let soon = now + Duration::minutes(3);
        assert_eq!(part_url_expiry(now, soon, far, None), soon);
        assert_eq!(part_url_expiry(now, far, soon, None), soon);
        assert_eq!(part_url_expiry(now, far, far, Some(soon)), soon);
    }
}
