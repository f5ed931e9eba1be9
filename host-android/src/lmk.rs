//! The low-memory killer's thresholds. lmkd (or the older in-kernel driver)
//! kills every process whose `oom_score_adj` is at least a level's `adj`
//! once free memory falls below that level's `minfree`. So memory is
//! usable by this process only down to the `minfree` of the highest level
//! at or below its own adj.

/// lmkd's defaults, used when the device's table cannot be read (modern
/// Android keeps it in properties that SELinux hides from apps): pages, and
/// the `oom_score_adj` of each level.
pub const DEFAULT_MINFREE: &str = "18432,23040,27648,32256,55296,80640";
pub const DEFAULT_ADJ: &str = "0,100,200,250,900,950";

/// The adj planned for: a Termux session that the user switches away from
/// keeps running as a perceptible foreground service (200), so a plan made
/// while it was in front (0) must still hold then.
pub const PLANNED_ADJ: i32 = 200;

/// `(adj, minfree bytes)` per level, ascending by adj.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Levels(Vec<(i32, u64)>);

impl Levels {
    /// Parses the driver's comma-separated tables. Adj values all at most 17
    /// are the old `oom_adj` scale, converted as the kernel does (×1000/17).
    pub fn parse(minfree: &str, adj: &str, page_size: u64) -> Option<Self> {
        let numbers = |s: &str| -> Option<Vec<i64>> { s.trim().split(',').map(|v| v.trim().parse().ok()).collect() };
        let (pages, adjs) = (numbers(minfree)?, numbers(adj)?);
        if pages.is_empty() || pages.len() != adjs.len() || pages.iter().any(|&p| p < 0) {
            return None;
        }
        let old_scale = adjs.iter().all(|&a| a <= 17);
        let mut levels: Vec<(i32, u64)> = adjs
            .iter()
            .zip(&pages)
            .map(|(&a, &p)| {
                let adj = if old_scale { a * 1000 / 17 } else { a };
                (adj.clamp(-1000, 1000) as i32, (p as u64).saturating_mul(page_size))
            })
            .collect();
        levels.sort_unstable();
        Some(Self(levels))
    }

    /// The device's table from the in-kernel driver, or lmkd's defaults.
    pub fn read() -> Self {
        let page = rustix::param::page_size() as u64;
        let sys = |name: &str| std::fs::read_to_string(format!("/sys/module/lowmemorykiller/parameters/{name}")).ok();
        sys("minfree")
            .zip(sys("adj"))
            .and_then(|(m, a)| Self::parse(&m, &a, page))
            .or_else(|| Self::parse(DEFAULT_MINFREE, DEFAULT_ADJ, page))
            .expect("the default lmk table parses")
    }

    /// Bytes that must stay free for a process at `adj` not to be killed.
    pub fn headroom(&self, adj: i32) -> u64 {
        self.0.iter().filter(|(level, _)| *level <= adj).map(|&(_, bytes)| bytes).max().unwrap_or(0)
    }
}

/// The adj to plan for: this process's own when negative (system daemons,
/// never killed), else at least [`PLANNED_ADJ`].
pub fn our_adj() -> i32 {
    let own = std::fs::read_to_string("/proc/self/oom_score_adj").ok().and_then(|s| s.trim().parse::<i32>().ok());
    match own {
        Some(a) if a < 0 => a,
        Some(a) => a.max(PLANNED_ADJ),
        None => PLANNED_ADJ,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headroom_is_the_threshold_of_the_highest_level_at_or_below_our_adj() {
        let l = Levels::parse(DEFAULT_MINFREE, DEFAULT_ADJ, 4096).unwrap();
        assert_eq!(l.headroom(0), 18432 * 4096);
        assert_eq!(l.headroom(200), 27648 * 4096);
        assert_eq!(l.headroom(249), 27648 * 4096);
        assert_eq!(l.headroom(900), 55296 * 4096);
        assert_eq!(l.headroom(1000), 80640 * 4096);
        assert_eq!(l.headroom(-1000), 0, "a process below every level is never killed");
    }

    #[test]
    fn old_oom_adj_scale_is_converted() {
        let l = Levels::parse("1536,2048,4096", "0,1,15", 4096).unwrap();
        assert_eq!(l.headroom(58), 2048 * 4096, "oom_adj 1 is oom_score_adj 58");
        assert_eq!(l.headroom(57), 1536 * 4096);
    }

    #[test]
    fn malformed_tables_are_refused() {
        assert_eq!(Levels::parse("1,2", "0", 4096), None);
        assert_eq!(Levels::parse("1,x", "0,1", 4096), None);
        assert_eq!(Levels::parse("", "", 4096), None);
        assert_eq!(Levels::parse("-5", "0", 4096), None);
    }

    #[test]
    fn android_rule_keeps_the_killer_headroom_free_on_this_machine() {
        use prima_host::os::Os;
        let linux = prima_host_linux::Linux.memory().unwrap();
        let android = crate::Android.memory().unwrap();
        let headroom = Levels::read().headroom(our_adj());
        assert!(headroom >= 18432 * 4096, "{headroom}");
        assert!(android.available <= linux.available, "android {android:?} linux {linux:?}");
        if linux.cgroup_limit.is_none() {
            // Both read the same moving figure; allow it 64 MiB of drift.
            let expected = linux.available.saturating_sub(headroom);
            assert!(android.available.abs_diff(expected) < 64 << 20, "android {android:?} linux {linux:?}");
        }
    }
}
