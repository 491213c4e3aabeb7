//! The `container` label from a cgroup path (docs/metrics.md, "container").

/// The `container` label for a cgroup path (see docs/metrics.md, "container").
pub fn container_of(path: &str) -> String {
    if path.is_empty() || path == "/" {
        return String::new();
    }
    // Some runtimes join components with ':' (`...pod<uid>.slice:cri-containerd:<id>`).
    let parts: Vec<&str> = path.split(['/', ':']).filter(|p| !p.is_empty()).collect();
    // Kubernetes: a pod<uid> component, then the container's scope or id.
    if let Some(i) = parts.iter().position(|p| pod_uid(p).is_some()) {
        let uid = pod_uid(parts[i]).unwrap_or_default();
        let id = parts[i + 1..].iter().find_map(|c| container_id(c)).unwrap_or_default();
        return if id.is_empty() { format!("/k8s/pod-{uid}") } else { format!("/k8s/pod-{uid}/{}", &id[..12]) };
    }
    // Docker and other runtimes outside Kubernetes.
    for (i, p) in parts.iter().enumerate() {
        if let Some(id) = container_id(p) {
            let is_docker = p.starts_with("docker-") || parts.get(i.wrapping_sub(1)) == Some(&"docker");
            let runtime = if is_docker { "docker" } else { runtime_of(p) };
            return format!("/{runtime}/{}", &id[..12]);
        }
    }
    // systemd: cut below the unit (a service's own sub-cgroups are the service).
    let dirs: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    if let Some(i) = dirs.iter().position(|p| p.ends_with(".service") || p.ends_with(".scope")) {
        return format!("/{}", dirs[..=i].join("/"));
    }
    format!("/{}", dirs.join("/"))
}

fn runtime_of(component: &str) -> &'static str {
    if component.starts_with("cri-containerd-") {
        "containerd"
    } else if component.starts_with("crio-") {
        "crio"
    } else if component.starts_with("libpod-") {
        "podman"
    } else {
        "container"
    }
}

/// `kubepods-burstable-pod1b2c..._slice` / `pod1b2c-...` → the pod UID with dashes.
fn pod_uid(component: &str) -> Option<String> {
    let c = component.strip_suffix(".slice").unwrap_or(component);
    let start = c.rfind("pod")?;
    if start > 0 && !c[..start].ends_with('-') {
        return None;
    }
    let uid = c[start + 3..].replace('_', "-");
    let ok = uid.len() == 36 && uid.chars().all(|ch| ch.is_ascii_hexdigit() || ch == '-');
    ok.then_some(uid)
}

/// A 64-hex container id inside `docker-<id>.scope`, `cri-containerd-<id>.scope`,
/// `crio-<id>.scope`, `libpod-<id>.scope` or a bare `<id>`.
fn container_id(component: &str) -> Option<String> {
    let c = component.strip_suffix(".scope").unwrap_or(component);
    let id = c.rsplit('-').next()?;
    (id.len() == 64 && id.chars().all(|ch| ch.is_ascii_hexdigit())).then(|| id.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn containers() {
        assert_eq!(container_of("/"), "");
        assert_eq!(container_of("/system.slice/nginx.service"), "/system.slice/nginx.service");
        assert_eq!(container_of("/system.slice/nginx.service/worker"), "/system.slice/nginx.service");
        assert_eq!(container_of(&format!("/system.slice/docker-{ID}.scope")), "/docker/0123456789ab");
        assert_eq!(container_of(&format!("/docker/{ID}")), "/docker/0123456789ab");
        assert_eq!(
            container_of(&format!(
                "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1b2c3d4e_0000_1111_2222_333344445555.slice/cri-containerd-{ID}.scope"
            )),
            "/k8s/pod-1b2c3d4e-0000-1111-2222-333344445555/0123456789ab"
        );
        assert_eq!(
            container_of(&format!("/kubepods/besteffort/pod1b2c3d4e-0000-1111-2222-333344445555/{ID}")),
            "/k8s/pod-1b2c3d4e-0000-1111-2222-333344445555/0123456789ab"
        );
        assert_eq!(container_of(&format!("/machine.slice/libpod-{ID}.scope")), "/podman/0123456789ab");
        assert_eq!(
            container_of(&format!(
                "/kubepods.slice/kubepods-pod1b2c3d4e_0000_1111_2222_333344445555.slice/crio-{ID}.scope"
            )),
            "/k8s/pod-1b2c3d4e-0000-1111-2222-333344445555/0123456789ab"
        );
        assert_eq!(
            container_of(&format!(
                "/system.slice/containerd.service/kubepods-besteffort-pod1b2c3d4e_0000_1111_2222_333344445555.slice:cri-containerd:{ID}"
            )),
            "/k8s/pod-1b2c3d4e-0000-1111-2222-333344445555/0123456789ab"
        );
        assert_eq!(
            container_of("/user.slice/user-0.slice/session-3.scope"),
            "/user.slice/user-0.slice/session-3.scope"
        );
        assert_eq!(container_of("/process_api/abc"), "/process_api/abc");
    }
}
