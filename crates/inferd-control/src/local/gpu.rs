//! GPUs of this machine, handed to replicas whole and never shared: a
//! replica that asks for N gets N devices of its own through
//! `CUDA_VISIBLE_DEVICES`, or waits.

use std::collections::BTreeMap;
use std::path::Path;

/// The devices the local backend may hand out, and who holds each.
#[derive(Clone, Debug, Default)]
pub struct Gpus {
    devices: Vec<String>,
    holders: BTreeMap<String, String>,
}

impl Gpus {
    /// A configured list of device ids (as `CUDA_VISIBLE_DEVICES` takes them).
    pub fn new(devices: Vec<String>) -> Gpus {
        let mut seen = std::collections::BTreeSet::new();
        let devices = devices
            .into_iter()
            .map(|d| d.trim().to_owned())
            .filter(|d| !d.is_empty() && seen.insert(d.clone()))
            .collect();
        Gpus {
            devices,
            holders: BTreeMap::new(),
        }
    }

    /// The NVIDIA devices the driver lists (`/proc/driver/nvidia/gpus/*`),
    /// numbered as CUDA numbers them; none without the driver.
    pub fn detect() -> Gpus {
        Gpus::detect_in(Path::new("/proc/driver/nvidia/gpus"))
    }

    fn detect_in(dir: &Path) -> Gpus {
        let count = std::fs::read_dir(dir).map_or(0, |d| d.filter_map(Result::ok).count());
        Gpus::new((0..count).map(|i| i.to_string()).collect())
    }

    pub fn total(&self) -> usize {
        self.devices.len()
    }

    pub fn free(&self) -> usize {
        self.devices.len() - self.holders.len()
    }

    /// `n` free devices for `owner`, or `None` (nothing taken) when fewer
    /// are free.
    pub fn allocate(&mut self, n: u32, owner: &str) -> Option<Vec<String>> {
        let n = usize::try_from(n).ok()?;
        let free: Vec<String> = self
            .devices
            .iter()
            .filter(|d| !self.holders.contains_key(*d))
            .take(n)
            .cloned()
            .collect();
        if free.len() < n {
            return None;
        }
        for d in &free {
            self.holders.insert(d.clone(), owner.to_owned());
        }
        Some(free)
    }

    /// Gives back every device `owner` holds.
    pub fn release(&mut self, owner: &str) {
        self.holders.retain(|_, h| h != owner);
    }

    /// Who holds which device.
    pub fn holders(&self) -> &BTreeMap<String, String> {
        &self.holders
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_over_commits_and_frees_on_release() {
        let mut g = Gpus::new(vec!["0".into(), "1".into(), "2".into(), "1".into()]);
        assert_eq!(g.total(), 3);
        assert_eq!(g.allocate(2, "a"), Some(vec!["0".into(), "1".into()]));
        assert_eq!(g.allocate(2, "b"), None);
        assert_eq!(g.free(), 1);
        assert_eq!(g.allocate(1, "b"), Some(vec!["2".into()]));
        g.release("a");
        assert_eq!(g.allocate(2, "c"), Some(vec!["0".into(), "1".into()]));
        assert_eq!(g.allocate(0, "d"), Some(vec![]));
    }

    #[test]
    fn detection_counts_driver_entries() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(Gpus::detect_in(&dir.path().join("absent")).total(), 0);
        for bus in ["0000:01:00.0", "0000:02:00.0"] {
            std::fs::create_dir(dir.path().join(bus)).expect("mkdir");
        }
        let g = Gpus::detect_in(dir.path());
        assert_eq!(g.allocate_view(), vec!["0".to_owned(), "1".to_owned()]);
    }

    impl Gpus {
        fn allocate_view(&self) -> Vec<String> {
            self.devices.clone()
        }
    }
}
