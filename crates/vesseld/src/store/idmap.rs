//! Host id ranges of unprivileged containers: which range an isolated container gets.

use super::IdPool;

/// The lowest free range of `pool.size` ids above the shared range `[shared_base,
/// shared_base + size)`, aligned to `size` from `shared_base`, overlapping none of `used`
/// (`(first, count)` pairs, which may be anywhere) and ending below `u32::MAX` (the kernel's
/// "no id").
pub(crate) fn pick_range(used: &[(u32, u32)], pool: IdPool) -> Option<u32> {
    let size = u64::from(pool.size.max(1));
    let overlaps = |start: u64| {
        used.iter().any(|&(b, n)| {
            let (b, n) = (u64::from(b), u64::from(n));
            start < b + n && b < start + size
        })
    };
    let mut start = u64::from(pool.shared_base) + size;
    while start + size <= u64::from(u32::MAX) {
        if !overlaps(start) {
            return u32::try_from(start).ok();
        }
        start += size;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const POOL: IdPool = IdPool {
        shared_base: 1_000_000,
        size: 65_536,
    };

    #[test]
    fn ranges_stack_above_the_shared_one_and_fill_holes() {
        let r = |k: u32| POOL.shared_base + k * POOL.size;
        assert_eq!(pick_range(&[], POOL), Some(r(1)));
        assert_eq!(pick_range(&[(r(0), POOL.size)], POOL), Some(r(1)));
        let used = [(r(1), POOL.size), (r(3), POOL.size)];
        assert_eq!(
            pick_range(&used, POOL),
            Some(r(2)),
            "a freed range is reused"
        );
        // A range recorded under another base, straddling two slots, blocks both.
        let odd = [(r(1) + 100, POOL.size)];
        assert_eq!(pick_range(&odd, POOL), Some(r(3)));
    }

    #[test]
    fn ranges_end_below_the_invalid_id() {
        let pool = IdPool {
            shared_base: u32::MAX - 3 * 65_536,
            size: 65_536,
        };
        let first = pick_range(&[], pool).unwrap();
        assert_eq!(first, pool.shared_base + 65_536);
        let last = pick_range(&[(first, 65_536)], pool).unwrap();
        assert_eq!(
            u64::from(last) + 65_536,
            u64::from(u32::MAX),
            "ends at u32::MAX - 1"
        );
        // The next range would hold u32::MAX, the kernel's "no id".
        assert_eq!(pick_range(&[(first, 65_536), (last, 65_536)], pool), None);
    }
}
