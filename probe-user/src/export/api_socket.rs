//! The Unix socket that serves every page, the per-process API included:
//! its file mode is the access control (0600: root; 0660 with a group), as
//! for the sockets of containerd or the Docker daemon, so an unprivileged
//! local user cannot read every process's pids, endpoints and languages
//! the way `ss -tp` would not show them either.
use std::{
    os::unix::fs::{PermissionsExt, chown},
    path::Path,
};

use tokio::net::UnixListener;

use crate::error::Error;

/// Binds `path` (its directory created if missing, 0755), replacing a stale
/// socket left by a daemon that died, refusing one a live daemon serves.
pub fn bind(path: &Path, group: Option<u32>) -> Result<UnixListener, Error> {
    let what = |e| Error::io(format!("cannot serve the API on {} (see --web.api-socket)", path.display()), e);
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty() && !d.exists()) {
        std::fs::create_dir_all(dir).map_err(what)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).map_err(what)?;
    }
    if std::os::unix::net::UnixStream::connect(path).is_ok() {
        return Err(Error::Config(format!(
            "another sockprobe serves {} (stop it, or give this one another --web.api-socket)",
            path.display()
        )));
    }
    match std::fs::symlink_metadata(path) {
        Ok(m) if std::os::unix::fs::FileTypeExt::is_socket(&m.file_type()) => {
            std::fs::remove_file(path).map_err(what)?
        }
        Ok(_) => {
            return Err(Error::Config(format!(
                "{} exists and is not a socket: remove it, or give another --web.api-socket",
                path.display()
            )));
        }
        Err(_) => {}
    }
    // Bound under a umask that leaves it to us, then narrowed before anyone
    // is served (the accept loop starts later).
    let listener = UnixListener::bind(path).map_err(what)?;
    let mode = if group.is_some() { 0o660 } else { 0o600 };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(what)?;
    if let Some(gid) = group {
        chown(path, None, Some(gid)).map_err(what)?;
    }
    Ok(listener)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn bound_private_stale_replaced_live_refused() {
        let dir = std::env::temp_dir().join(format!("sockprobe-api-{}", std::process::id()));
        let path = dir.join("sub/api.sock");
        let first = bind(&path, None).expect("bind");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let again = bind(&path, None).expect_err("a live daemon's socket is refused").to_string();
        assert!(again.contains("another sockprobe serves"), "{again}");
        drop(first);
        bind(&path, None).expect("a stale socket is replaced");
        std::fs::remove_file(&path).unwrap();
        std::fs::write(&path, "x").unwrap();
        let not = bind(&path, None).expect_err("a file is not replaced").to_string();
        assert!(not.contains("not a socket"), "{not}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
