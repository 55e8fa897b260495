//! Device health as the kernel reports it, for `/metrics` and `uag doctor`: SoC temperatures
//! (thermal zones: Raspberry Pi `cpu-thermal`, Jetson `CPU-therm`/`GPU-therm`), CPU
//! frequencies, the Raspberry Pi firmware's under-voltage and throttling flags, memory and CPU
//! pressure (PSI), available memory, and the free space of the data directory's filesystem.
//!
//! `/sys` and `/proc` are read under `[device] root` (default `/`), so tests feed fixtures and a
//! container can read a host mount. Whatever a board does not report is absent, never an error:
//! an x86 VM has no throttling flags, an old kernel no PSI.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeviceConfig {
    /// Where `sys/` and `proc/` are read from.
    pub root: PathBuf,
    /// `uag doctor` reports a problem above this SoC temperature.
    pub max_temperature_celsius: f64,
    /// `uag doctor` reports a problem below this much free space for the data directory.
    pub min_free_bytes: u64,
}

impl Default for DeviceConfig {
    fn default() -> Self {
        // 80 °C: the Pi 5 starts to throttle at 80-85 °C; 1 GiB: an ingest or a model fetch fits.
        Self { root: PathBuf::from("/"), max_temperature_celsius: 80.0, min_free_bytes: 1 << 30 }
    }
}

/// One thermal zone's reading.
#[derive(Debug, Clone, PartialEq)]
pub struct Temperature {
    /// `thermal_zone0`.
    pub zone: String,
    /// What the zone measures (`cpu-thermal`, `GPU-therm`, `x86_pkg_temp`).
    pub kind: String,
    pub celsius: f64,
}

/// The Raspberry Pi firmware's flags (`vcgencmd get_throttled`): now, and since boot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Throttling {
    pub raw: u32,
}

impl Throttling {
    /// Each condition's name and its bit; the same bit + 16 says it has occurred since boot.
    pub const CONDITIONS: [(&'static str, u32); 4] =
        [("under_voltage", 0), ("frequency_capped", 1), ("throttled", 2), ("soft_temperature_limit", 3)];

    pub fn now(self, bit: u32) -> bool {
        self.raw & (1 << bit) != 0
    }

    pub fn since_boot(self, bit: u32) -> bool {
        self.raw & (1 << (bit + 16)) != 0 || self.now(bit)
    }
}

/// Pressure stall information of one resource: the share of the last 10 s in which some (or
/// all, `full`) runnable tasks waited for it.
#[derive(Debug, Clone, PartialEq)]
pub struct Pressure {
    /// `cpu`, `memory` or `io`.
    pub resource: &'static str,
    pub some_avg10: f64,
    pub full_avg10: Option<f64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DiskSpace {
    pub path: PathBuf,
    /// Available to uag (not root's reserve).
    pub free_bytes: u64,
    pub size_bytes: u64,
}

/// One reading of everything this module knows how to read.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DeviceHealth {
    pub temperatures: Vec<Temperature>,
    /// `cpu0` -> current frequency in Hz.
    pub cpu_frequencies: Vec<(String, f64)>,
    pub throttling: Option<Throttling>,
    pub pressure: Vec<Pressure>,
    pub memory_available_bytes: Option<u64>,
    pub disk: Option<DiskSpace>,
}

impl DeviceHealth {
    /// The hottest zone, if any reports.
    pub fn hottest(&self) -> Option<&Temperature> {
        self.temperatures.iter().max_by(|a, b| a.celsius.total_cmp(&b.celsius))
    }
}

fn under(root: &Path, path: &str) -> PathBuf {
    root.join(path.trim_start_matches('/'))
}

fn read_trimmed(path: &Path) -> Option<String> {
    std::fs::read_to_string(path).ok().map(|s| s.trim().to_owned())
}

/// Directory entries whose name starts with `prefix`, sorted (zone and CPU order).
fn entries(dir: &Path, prefix: &str) -> Vec<(String, PathBuf)> {
    let mut out: Vec<(String, PathBuf)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.starts_with(prefix).then(|| (name, e.path()))
        })
        .collect();
    // cpu2 before cpu10.
    out.sort_by_key(|(name, _)| (name.len(), name.clone()));
    out
}

fn temperatures(root: &Path) -> Vec<Temperature> {
    entries(&under(root, "/sys/class/thermal"), "thermal_zone")
        .into_iter()
        .filter_map(|(zone, path)| {
            // Millidegrees Celsius; a zone that cannot be read right now (a sensor asleep) is skipped.
            let milli: f64 = read_trimmed(&path.join("temp"))?.parse().ok()?;
            let kind = read_trimmed(&path.join("type")).unwrap_or_else(|| zone.clone());
            Some(Temperature { zone, kind, celsius: milli / 1000.0 })
        })
        .collect()
}

fn cpu_frequencies(root: &Path) -> Vec<(String, f64)> {
    entries(&under(root, "/sys/devices/system/cpu"), "cpu")
        .into_iter()
        .filter(|(name, _)| name[3..].chars().all(|c| c.is_ascii_digit()) && name.len() > 3)
        .filter_map(|(cpu, path)| {
            let khz: f64 = read_trimmed(&path.join("cpufreq/scaling_cur_freq"))?.parse().ok()?;
            Some((cpu, khz * 1000.0))
        })
        .collect()
}

fn throttling(root: &Path) -> Option<Throttling> {
    // The firmware's flags, as `vcgencmd get_throttled` prints them (`0x50005`, or bare hex).
    if let Some(text) = read_trimmed(&under(root, "/sys/devices/platform/soc/soc:firmware/get_throttled")) {
        let hex = text.trim_start_matches("throttled=").trim_start_matches("0x");
        if let Ok(raw) = u32::from_str_radix(hex, 16) {
            return Some(Throttling { raw });
        }
    }
    // Kernels without that file still have the firmware's under-voltage alarm in hwmon.
    for (_, path) in entries(&under(root, "/sys/class/hwmon"), "hwmon") {
        if read_trimmed(&path.join("name")).as_deref() == Some("rpi_volt") {
            let alarm = read_trimmed(&path.join("in0_lcrit_alarm"))?;
            return Some(Throttling { raw: u32::from(alarm == "1") });
        }
    }
    None
}

fn avg10(line: &str) -> Option<f64> {
    line.split_whitespace().find_map(|field| field.strip_prefix("avg10=")).and_then(|v| v.parse().ok())
}

fn pressure(root: &Path) -> Vec<Pressure> {
    ["cpu", "memory", "io"]
        .into_iter()
        .filter_map(|resource| {
            let text = std::fs::read_to_string(under(root, &format!("/proc/pressure/{resource}"))).ok()?;
            let some = text.lines().find(|l| l.starts_with("some ")).and_then(avg10)?;
            let full = text.lines().find(|l| l.starts_with("full ")).and_then(avg10);
            Some(Pressure { resource, some_avg10: some, full_avg10: full })
        })
        .collect()
}

fn memory_available(root: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(under(root, "/proc/meminfo")).ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Free space of the filesystem holding `dir` (the real path, not under the root: it is
/// uag's own data directory). The nearest existing ancestor is measured before first start.
pub fn disk_space(dir: &Path) -> Option<DiskSpace> {
    let existing = dir.ancestors().find(|p| p.exists())?;
    let stats = rustix::fs::statvfs(existing).ok()?;
    Some(DiskSpace {
        path: dir.to_path_buf(),
        free_bytes: stats.f_bavail.saturating_mul(stats.f_frsize),
        size_bytes: stats.f_blocks.saturating_mul(stats.f_frsize),
    })
}

/// Reads everything once. Small in-memory files and one statvfs: well under a millisecond, but
/// file I/O all the same, so async callers run it on the blocking pool.
pub fn read(config: &DeviceConfig, data_dir: &Path) -> DeviceHealth {
    let root = &config.root;
    DeviceHealth {
        temperatures: temperatures(root),
        cpu_frequencies: cpu_frequencies(root),
        throttling: throttling(root),
        pressure: pressure(root),
        memory_available_bytes: memory_available(root),
        disk: disk_space(data_dir),
    }
}

/// Sets the device gauges of `/metrics` from one reading.
pub fn observe(metrics: &uag_core::metrics::Metrics, health: &DeviceHealth) {
    use uag_core::metrics::{CpuLabels, PressureLabels, ThermalLabels, ThrottlingLabels};
    for t in &health.temperatures {
        metrics.device_temperature.get_or_create(&ThermalLabels { zone: t.zone.clone(), kind: t.kind.clone() }).set(t.celsius);
    }
    for (cpu, hz) in &health.cpu_frequencies {
        metrics.device_cpu_frequency.get_or_create(&CpuLabels { cpu: cpu.clone() }).set(*hz);
    }
    if let Some(t) = health.throttling {
        for (condition, bit) in Throttling::CONDITIONS {
            for (when, on) in [("now", t.now(bit)), ("since_boot", t.since_boot(bit))] {
                let labels = ThrottlingLabels { condition: condition.to_owned(), when: when.to_owned() };
                metrics.device_throttling.get_or_create(&labels).set(i64::from(on));
            }
        }
    }
    for p in &health.pressure {
        let some = PressureLabels { resource: p.resource.to_owned(), kind: "some".to_owned() };
        metrics.device_pressure.get_or_create(&some).set(p.some_avg10 / 100.0);
        if let Some(full) = p.full_avg10 {
            metrics
                .device_pressure
                .get_or_create(&PressureLabels { resource: p.resource.to_owned(), kind: "full".to_owned() })
                .set(full / 100.0);
        }
    }
    let bytes = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
    if let Some(available) = health.memory_available_bytes {
        metrics.device_memory_available.set(bytes(available));
    }
    if let Some(disk) = &health.disk {
        metrics.device_disk_free.set(bytes(disk.free_bytes));
        metrics.device_disk_size.set(bytes(disk.size_bytes));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(root: &Path, path: &str, text: &str) {
        let p = under(root, path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    /// A Raspberry Pi 5 that has been under-voltage since boot and is throttled now.
    fn pi_fixture(root: &Path) {
        write(root, "/sys/class/thermal/thermal_zone0/type", "cpu-thermal\n");
        write(root, "/sys/class/thermal/thermal_zone0/temp", "81250\n");
        write(root, "/sys/devices/system/cpu/cpu0/cpufreq/scaling_cur_freq", "1500000\n");
        write(root, "/sys/devices/system/cpu/cpu10/cpufreq/scaling_cur_freq", "2400000\n");
        write(root, "/sys/devices/system/cpu/cpu2/cpufreq/scaling_cur_freq", "2400000\n");
        write(root, "/sys/devices/system/cpu/cpufreq/policy0/scaling_cur_freq", "1\n");
        write(root, "/sys/devices/platform/soc/soc:firmware/get_throttled", "50004\n");
        write(
            root,
            "/proc/pressure/cpu",
            "some avg10=12.50 avg60=3.00 avg300=1.00 total=123\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=0\n",
        );
        write(
            root,
            "/proc/pressure/memory",
            "some avg10=1.00 avg60=0.00 avg300=0.00 total=9\nfull avg10=0.50 avg60=0.00 avg300=0.00 total=3\n",
        );
        write(root, "/proc/meminfo", "MemTotal:        8000000 kB\nMemFree:          100000 kB\nMemAvailable:    2000000 kB\n");
    }

    #[test]
    fn a_pi_fixture_reads_back_every_value() {
        let dir = tempfile::tempdir().unwrap();
        pi_fixture(dir.path());
        let config = DeviceConfig { root: dir.path().to_path_buf(), ..DeviceConfig::default() };
        let h = read(&config, dir.path());
        assert_eq!(h.temperatures, [Temperature { zone: "thermal_zone0".into(), kind: "cpu-thermal".into(), celsius: 81.25 }]);
        let cpus: Vec<&str> = h.cpu_frequencies.iter().map(|(c, _)| c.as_str()).collect();
        assert_eq!(cpus, ["cpu0", "cpu2", "cpu10"], "numeric order, cpufreq/ itself is no CPU");
        assert_eq!(h.cpu_frequencies[0].1, 1.5e9);
        let t = h.throttling.unwrap();
        assert!(t.now(2) && !t.now(0), "throttled now, not under-voltage now");
        assert!(t.since_boot(0) && t.since_boot(2) && !t.since_boot(1));
        assert_eq!(h.pressure.len(), 2, "no io file, no io entry");
        assert_eq!((h.pressure[0].resource, h.pressure[0].some_avg10, h.pressure[0].full_avg10), ("cpu", 12.5, Some(0.0)));
        assert_eq!(h.memory_available_bytes, Some(2_000_000 * 1024));
        let disk = h.disk.unwrap();
        assert!(disk.size_bytes > 0 && disk.free_bytes <= disk.size_bytes, "{disk:?}");
    }

    #[test]
    fn the_hwmon_alarm_reports_under_voltage_without_the_firmware_file() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "/sys/class/hwmon/hwmon0/name", "cpu_thermal\n");
        write(dir.path(), "/sys/class/hwmon/hwmon1/name", "rpi_volt\n");
        write(dir.path(), "/sys/class/hwmon/hwmon1/in0_lcrit_alarm", "1\n");
        let t = throttling(dir.path()).unwrap();
        assert!(t.now(0) && !t.now(2));
    }

    #[test]
    fn a_board_that_reports_nothing_reads_as_empty_not_as_an_error() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "/sys/class/thermal/thermal_zone0/type", "acpitz\n");
        write(dir.path(), "/sys/class/thermal/thermal_zone0/temp", "not a number\n");
        let config = DeviceConfig { root: dir.path().to_path_buf(), ..DeviceConfig::default() };
        let h = read(&config, &dir.path().join("not/yet/created"));
        assert!(h.temperatures.is_empty() && h.cpu_frequencies.is_empty() && h.throttling.is_none() && h.pressure.is_empty());
        assert!(h.disk.is_some(), "the nearest existing ancestor is measured");
    }
}
