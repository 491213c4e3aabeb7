//! The one error type of the library. Each variant's message is a single line
//! that says what went wrong and what to do about it.
use thiserror::Error;

#[derive(Debug, Error)]
pub enum Error {
    #[error("not enough privileges: {0}; run as root, or grant CAP_BPF and CAP_PERFMON (CAP_SYS_ADMIN before 5.8)")]
    Privileges(String),

    #[error("kernel BTF unusable: {0}")]
    Btf(String),

    #[error(
        "this kernel's BTF lacks {0}; sockprobe cannot read sockets safely here (please report the kernel version)"
    )]
    Layout(String),

    #[error("cannot load sockprobe's eBPF object: {0}")]
    Load(String),

    #[error("required probe unavailable: {0}; run `sockprobe check` for details")]
    RequiredProbe(String),

    #[error("{0}")]
    Config(String),

    /// A daemon that `doctor` or `top` needs did not answer (usably).
    #[error("{0}")]
    Daemon(String),

    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Error {
        Error::Io { context: context.into(), source }
    }
}
