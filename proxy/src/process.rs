//! Facts about this process and host for INFO, read from `/proc` where Redis would call
//! the C library: memory in use, CPU time, the operating system's name. Each read is a few
//! small file reads, done only when INFO asks.

use std::sync::OnceLock;

/// Resident memory of this process in bytes (`VmRSS`), or 0 where `/proc` is missing.
pub fn rss_bytes() -> u64 {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return 0;
    };
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kb| kb.parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// CPU time used by this process as (user, system) seconds, or zeros where `/proc` is
/// missing. Ticks are assumed to be 1/100 s, the value of `USER_HZ` on every Linux ABI.
pub fn cpu_seconds() -> (f64, f64) {
    const TICKS_PER_SEC: f64 = 100.0;
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return (0.0, 0.0);
    };
    // The command name in parentheses may hold spaces: count fields after its last ')'.
    let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
        return (0.0, 0.0);
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After ')' come field 3 (state) onwards: utime is field 14, stime field 15.
    let tick = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
            / TICKS_PER_SEC
    };
    (tick(11), tick(12))
}

/// The operating system as Redis's INFO shows it: kernel name, release and machine, e.g.
/// `Linux 6.1.0 x86_64`.
pub fn os_name() -> &'static str {
    static OS: OnceLock<String> = OnceLock::new();
    OS.get_or_init(|| {
        let read = |path: &str| {
            std::fs::read_to_string(path)
                .map(|s| s.trim().to_string())
                .ok()
        };
        let name =
            read("/proc/sys/kernel/ostype").unwrap_or_else(|| std::env::consts::OS.to_string());
        let release = read("/proc/sys/kernel/osrelease").unwrap_or_default();
        [name, release, std::env::consts::ARCH.to_string()]
            .iter()
            .filter(|s| !s.is_empty())
            .cloned()
            .collect::<Vec<_>>()
            .join(" ")
    })
}

/// The absolute path of the running executable, as Redis's `executable` field.
pub fn executable() -> &'static str {
    static EXE: OnceLock<String> = OnceLock::new();
    EXE.get_or_init(|| {
        std::env::current_exe()
            .map(|p| p.display().to_string())
            .unwrap_or_default()
    })
}

/// Raises this process's soft limit on open files to at least `want` (up to the hard limit),
/// as Redis does for `maxclients`: a server that may hold 10,000 clients must be allowed that
/// many sockets. Returns the limit in force afterwards.
pub fn raise_open_files_limit(want: u64) -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit with a valid resource and a pointer to a live rlimit.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return 0;
    }
    if limit.rlim_cur >= want {
        return limit.rlim_cur;
    }
    let raised = libc::rlimit {
        rlim_cur: want.min(limit.rlim_max),
        rlim_max: limit.rlim_max,
    };
    // SAFETY: as above.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
        return limit.rlim_cur;
    }
    raised.rlim_cur
}

/// A byte count as Redis's `bytesToHuman` writes it: `512B`, `1.50K`, `2.00M`, `1.00G`…
pub fn bytes_to_human(n: u64) -> String {
    if n < 1024 {
        return format!("{n}B");
    }
    for (i, unit) in ["K", "M", "G", "T", "P"].iter().enumerate() {
        let size = 1u64 << (10 * (i + 1));
        if n < size << 10 {
            return format!("{:.2}{unit}", n as f64 / size as f64);
        }
    }
    format!("{n}B")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_sizes_as_redis() {
        assert_eq!(bytes_to_human(0), "0B");
        assert_eq!(bytes_to_human(1023), "1023B");
        assert_eq!(bytes_to_human(1024), "1.00K");
        assert_eq!(bytes_to_human(1_213_248), "1.16M");
        assert_eq!(bytes_to_human(7_213_056), "6.88M");
        assert_eq!(bytes_to_human(3 << 30), "3.00G");
        assert_eq!(bytes_to_human(5 << 40), "5.00T");
        assert_eq!(bytes_to_human(7 << 50), "7.00P");
    }

    #[test]
    fn process_facts_are_readable() {
        assert!(rss_bytes() > 0);
        let (user, sys) = cpu_seconds();
        assert!(user >= 0.0 && sys >= 0.0);
        assert!(os_name().ends_with(std::env::consts::ARCH));
        assert!(!executable().is_empty());
    }
}
