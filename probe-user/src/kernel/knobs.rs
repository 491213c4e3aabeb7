//! The development knobs: `SOCKPROBE_*` environment variables, read once at
//! start-up (`main`) into one value that travels with the probe settings.
//! Nothing below reads the environment. Listed in docs/development.md,
//! "Environment knobs"; none is part of the contract.
use std::path::PathBuf;

use super::{btf::Btf, probe_table::TurnSource};

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DevKnobs {
    /// `SOCKPROBE_BTF_FILE`: the kernel BTF to read instead of
    /// `/sys/kernel/btf/vmlinux` (diagnosis, and the missing-BTF test).
    pub btf_file: Option<PathBuf>,
    /// `SOCKPROBE_SKIP_HOOKS=fentry,fexit`: hook kinds not tried, to exercise
    /// the fallbacks on kernels that would not choose them (kernel matrix).
    pub skip_hooks: Vec<String>,
    /// `SOCKPROBE_LOAD_ONLY=1`: BTF-typed programs loaded and verified but
    /// not attached (the bench's paired phase attaches them by id).
    pub load_only: bool,
    /// `SOCKPROBE_TURNS=sends|receives`: where exchanges are counted,
    /// instead of what the kernel's BTF decides.
    pub turns: Option<TurnSource>,
}

impl DevKnobs {
    /// The knobs this process was started with.
    pub fn from_env() -> DevKnobs {
        Self::from_vars(|name| std::env::var(name).ok())
    }

    /// The knobs from a lookup of variables by name (`from_env`, tests).
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> DevKnobs {
        DevKnobs {
            btf_file: var("SOCKPROBE_BTF_FILE").filter(|v| !v.is_empty()).map(PathBuf::from),
            skip_hooks: var("SOCKPROBE_SKIP_HOOKS")
                .map(|list| list.split(',').map(str::trim).filter(|k| !k.is_empty()).map(String::from).collect())
                .unwrap_or_default(),
            load_only: var("SOCKPROBE_LOAD_ONLY").is_some_and(|v| v == "1"),
            turns: match var("SOCKPROBE_TURNS").as_deref() {
                Some("receives") => Some(TurnSource::Receives),
                Some("sends") => Some(TurnSource::Sends),
                _ => None,
            },
        }
    }

    /// Where the kernel's BTF is read from.
    pub fn btf_path(&self) -> PathBuf {
        self.btf_file.clone().unwrap_or_else(|| Btf::VMLINUX.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn knobs_from_variables() {
        let none = DevKnobs::from_vars(|_| None);
        assert_eq!(none, DevKnobs::default());
        assert_eq!(none.btf_path(), PathBuf::from(Btf::VMLINUX));
        let set = DevKnobs::from_vars(|name| {
            let value = match name {
                "SOCKPROBE_BTF_FILE" => "/nowhere",
                "SOCKPROBE_SKIP_HOOKS" => " fentry, fexit ,",
                "SOCKPROBE_LOAD_ONLY" => "1",
                "SOCKPROBE_TURNS" => "receives",
                _ => return None,
            };
            Some(value.to_string())
        });
        assert_eq!(set.btf_path(), PathBuf::from("/nowhere"));
        assert_eq!(set.skip_hooks, ["fentry", "fexit"]);
        assert!(set.load_only);
        assert_eq!(set.turns, Some(TurnSource::Receives));
        assert!(!DevKnobs::from_vars(|n| (n == "SOCKPROBE_LOAD_ONLY").then(|| "yes".into())).load_only);
    }
}
