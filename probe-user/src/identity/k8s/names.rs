//! What the watched objects name: containers (`/k8s/<ns>/<pod>/<container>`)
//! and remote addresses (`svc/<ns>/<service>`, `pod/<ns>/<pod>`,
//! `node/<name>`). Objects are trimmed to the fields used before they are
//! stored; the indexes are rebuilt from the stores, never patched, so an
//! address named by two objects always gets the same answer.
use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{
        Arc, RwLock,
        atomic::{AtomicU64, Ordering},
    },
};

use k8s_openapi::api::{
    core::v1::{ContainerStatus, Pod, PodIP, PodSpec, PodStatus, Service, ServiceSpec},
    discovery::v1::{Endpoint, EndpointSlice},
};
use kube::api::ObjectMeta;

/// Containers named: more than a node can run.
pub const MAX_CONTAINERS: usize = 16_384;
/// Addresses named: 100 000 endpoints and 10 000 Services fit twice; past
/// it, addresses stay `ip:port` (about 60 bytes an entry).
pub const MAX_ADDRESSES: usize = 262_144;
/// The label EndpointSlices carry: the Service they belong to.
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// The label deployments put on their pods (and in their ReplicaSets' names).
const POD_TEMPLATE_HASH: &str = "pod-template-hash";

/// `/k8s/pod-<uid>/<id12>` → `/k8s/<namespace>/<pod>/<container>`, and the
/// workload each container belongs to.
#[derive(Clone, Default)]
pub struct PodNames {
    map: Arc<RwLock<HashMap<String, Arc<Named>>>>,
    generation: Arc<AtomicU64>,
}

/// A container the API names, and its workload (`sockprobe_workload_info`).
#[derive(Debug, PartialEq, Eq)]
pub struct Named {
    /// The `container` label: `/k8s/<namespace>/<pod>/<container>`.
    pub label: String,
    pub namespace: String,
    pub pod: String,
    /// `Deployment`, `StatefulSet`, `DaemonSet`, `Job`, `ReplicaSet`, ... or
    /// `Pod` for a pod no controller owns.
    pub workload_kind: String,
    pub workload: String,
}

/// The workload of a pod: its controller, a ReplicaSet of a Deployment seen
/// as the Deployment (its name less the pod-template-hash).
fn workload_of(pod: &Pod) -> (String, String) {
    let name = pod.metadata.name.clone().unwrap_or_default();
    let Some(owner) = pod.metadata.owner_references.iter().flatten().find(|o| o.controller == Some(true)) else {
        return ("Pod".into(), name);
    };
    let hash = pod.metadata.labels.as_ref().and_then(|l| l.get(POD_TEMPLATE_HASH));
    if owner.kind == "ReplicaSet"
        && let Some(deployment) = hash.and_then(|h| owner.name.strip_suffix(h.as_str())?.strip_suffix('-'))
    {
        return ("Deployment".into(), deployment.to_string());
    }
    (owner.kind.clone(), owner.name.clone())
}

impl PodNames {
    /// The API's name for a cgroup-derived label, or the label itself.
    pub fn resolve(&self, label: &str) -> String {
        if !label.starts_with("/k8s/pod-") {
            return label.to_string();
        }
        self.map.read().unwrap().get(label).map(|n| n.label.clone()).unwrap_or_else(|| label.to_string())
    }

    /// Every container named, with its workload.
    pub fn all(&self) -> Vec<Arc<Named>> {
        self.map.read().unwrap().values().cloned().collect()
    }

    /// Bumped at every change of the mapping.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// How many containers are named.
    pub fn count(&self) -> usize {
        self.map.read().unwrap().len()
    }

    /// The containers of these pods, and only them.
    pub fn replace<'a>(&self, pods: impl IntoIterator<Item = &'a Pod>) {
        let mut map = HashMap::new();
        for pod in pods {
            let (Some(ns), Some(name), Some(uid)) = (&pod.metadata.namespace, &pod.metadata.name, &pod.metadata.uid)
            else {
                continue;
            };
            let Some(status) = &pod.status else { continue };
            let (workload_kind, workload) = workload_of(pod);
            let all =
                [&status.container_statuses, &status.init_container_statuses, &status.ephemeral_container_statuses];
            for c in all.into_iter().flatten().flatten() {
                // containerd://<64 hex>, cri-o://..., docker://...
                let Some(id) = c.container_id.as_deref().and_then(|i| i.split_once("://")).map(|(_, id)| id) else {
                    continue;
                };
                if id.len() < 12 || !id.is_char_boundary(12) || map.len() >= MAX_CONTAINERS {
                    continue;
                }
                let named = Named {
                    label: format!("/k8s/{ns}/{name}/{}", c.name),
                    namespace: ns.clone(),
                    pod: name.clone(),
                    workload_kind: workload_kind.clone(),
                    workload: workload.clone(),
                };
                map.insert(format!("/k8s/pod-{uid}/{}", &id[..12]), Arc::new(named));
            }
        }
        let mut current = self.map.write().unwrap();
        if *current != map {
            *current = map;
            self.generation.fetch_add(1, Ordering::AcqRel);
        }
    }
}

/// Remote addresses by the Kubernetes object they belong to. Readers see a
/// generation number: a change of it tells the aggregator to label new
/// connections afresh.
#[derive(Clone, Default)]
pub struct EndpointNames {
    inner: Arc<EndpointInner>,
}

#[derive(Default)]
struct EndpointInner {
    map: RwLock<Arc<HashMap<IpAddr, Arc<str>>>>,
    generation: AtomicU64,
}

impl EndpointNames {
    /// `svc/<ns>/<name>`, `pod/<ns>/<name>` or `node/<name>` (no port).
    pub fn name(&self, addr: &IpAddr) -> Option<Arc<str>> {
        self.inner.map.read().unwrap().get(addr).cloned()
    }

    /// Bumped at every change of the mapping.
    pub fn generation(&self) -> u64 {
        self.inner.generation.load(Ordering::Acquire)
    }

    pub fn len(&self) -> usize {
        self.inner.map.read().unwrap().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Installs a new mapping (unchanged: nothing happens).
    pub fn replace(&self, map: HashMap<IpAddr, Arc<str>>) {
        let mut current = self.inner.map.write().unwrap();
        if **current != map {
            *current = Arc::new(map);
            self.inner.generation.fetch_add(1, Ordering::AcqRel);
        }
    }
}

/// Which claim on an address wins: a Service's cluster IP over an address
/// of its endpoints, over a pod, over a node (a hostNetwork pod's address is
/// its node's).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Rank {
    Node,
    Pod,
    ServiceEndpoint,
    ClusterIp,
}

/// The address → name index of these objects. Between two claims of the
/// same rank the smaller name wins, so the answer never depends on order.
pub fn endpoint_index<'a>(
    services: impl IntoIterator<Item = &'a Service>,
    slices: impl IntoIterator<Item = &'a EndpointSlice>,
    pods: impl IntoIterator<Item = &'a Pod>,
) -> HashMap<IpAddr, Arc<str>> {
    let mut claims: HashMap<IpAddr, (Rank, Arc<str>)> = HashMap::new();
    let mut claim = |addr: &str, rank: Rank, name: &Arc<str>| {
        let Ok(addr) = addr.parse::<IpAddr>() else { return };
        let addr = addr.to_canonical();
        if !claims.contains_key(&addr) && claims.len() >= MAX_ADDRESSES {
            return;
        }
        let entry = claims.entry(addr).or_insert_with(|| (rank, name.clone()));
        if (rank, std::cmp::Reverse(name)) > (entry.0, std::cmp::Reverse(&entry.1)) {
            *entry = (rank, name.clone());
        }
    };
    for pod in pods {
        let (Some(spec), Some(status)) = (&pod.spec, &pod.status) else { continue };
        if let (Some(node), Some(host_ip)) = (&spec.node_name, &status.host_ip) {
            claim(host_ip, Rank::Node, &format!("node/{node}").into());
        }
        if spec.host_network == Some(true) {
            continue;
        }
        let (Some(ns), Some(name)) = (&pod.metadata.namespace, &pod.metadata.name) else { continue };
        let label: Arc<str> = format!("pod/{ns}/{name}").into();
        for ip in status.pod_ips.iter().flatten() {
            claim(&ip.ip, Rank::Pod, &label);
        }
        if let Some(ip) = &status.pod_ip {
            claim(ip, Rank::Pod, &label);
        }
    }
    for slice in slices {
        let service = slice.metadata.labels.as_ref().and_then(|l| l.get(SERVICE_NAME_LABEL));
        let (Some(ns), Some(service)) = (&slice.metadata.namespace, service) else { continue };
        let label: Arc<str> = format!("svc/{ns}/{service}").into();
        for address in slice.endpoints.iter().flat_map(|e| &e.addresses) {
            claim(address, Rank::ServiceEndpoint, &label);
        }
    }
    for service in services {
        let (Some(ns), Some(name), Some(spec)) = (&service.metadata.namespace, &service.metadata.name, &service.spec)
        else {
            continue;
        };
        let label: Arc<str> = format!("svc/{ns}/{name}").into();
        // "None" (headless) does not parse: no cluster IP.
        for ip in spec.cluster_ips.iter().flatten().chain(&spec.cluster_ip) {
            claim(ip, Rank::ClusterIp, &label);
        }
    }
    claims.into_iter().map(|(addr, (_, name))| (addr, name)).collect()
}

/// Only what names need: identity and the fields above. The rest of an
/// object (managed fields, annotations, specs) is dropped before it is
/// stored, so the stores hold tens of bytes per address.
fn trimmed_meta(m: &mut ObjectMeta, keep_label: Option<&str>) -> ObjectMeta {
    let labels = keep_label.and_then(|keep| {
        m.labels.take().map(|mut l| {
            l.retain(|k, _| k == keep);
            l
        })
    });
    ObjectMeta {
        name: m.name.take(),
        namespace: m.namespace.take(),
        uid: m.uid.take(),
        resource_version: m.resource_version.take(),
        labels,
        ..Default::default()
    }
}

pub fn trim_service(s: &mut Service) {
    s.metadata = trimmed_meta(&mut s.metadata, None);
    s.spec = s.spec.take().map(|spec| ServiceSpec {
        cluster_ip: spec.cluster_ip,
        cluster_ips: spec.cluster_ips,
        ..Default::default()
    });
    s.status = None;
}

pub fn trim_endpoint_slice(s: &mut EndpointSlice) {
    s.metadata = trimmed_meta(&mut s.metadata, Some(SERVICE_NAME_LABEL));
    // All addresses in one endpoint: a k8s-openapi Endpoint is ~300 bytes
    // even empty, 100 of them a slice.
    let addresses: Vec<String> = std::mem::take(&mut s.endpoints).into_iter().flat_map(|e| e.addresses).collect();
    s.endpoints = vec![Endpoint { addresses, ..Default::default() }];
    s.ports = None;
}

pub fn trim_pod(p: &mut Pod) {
    // Only the pod's controller: its workload (`workload_of`).
    let mut owners = p.metadata.owner_references.take();
    p.metadata = trimmed_meta(&mut p.metadata, Some(POD_TEMPLATE_HASH));
    if let Some(owners) = &mut owners {
        owners.retain(|o| o.controller == Some(true));
        for o in owners.iter_mut() {
            o.api_version.clear();
            o.uid.clear();
        }
    }
    p.metadata.owner_references = owners;
    p.spec = p.spec.take().map(|spec| PodSpec {
        node_name: spec.node_name,
        host_network: spec.host_network,
        containers: Vec::new(),
        ..Default::default()
    });
    p.status = p.status.take().map(|status| {
        let statuses = |v: Option<Vec<ContainerStatus>>| {
            v.map(|v| {
                v.into_iter()
                    .map(|c| ContainerStatus { name: c.name, container_id: c.container_id, ..Default::default() })
                    .collect()
            })
        };
        PodStatus {
            host_ip: status.host_ip,
            pod_ip: status.pod_ip,
            pod_ips: status.pod_ips.map(|ips| ips.into_iter().map(|ip| PodIP { ip: ip.ip }).collect()),
            container_statuses: statuses(status.container_statuses),
            init_container_statuses: statuses(status.init_container_statuses),
            ephemeral_container_statuses: statuses(status.ephemeral_container_statuses),
            ..Default::default()
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> T {
        serde_json::from_value(v).unwrap()
    }

    fn names(index: &HashMap<IpAddr, Arc<str>>, ip: &str) -> Option<String> {
        index.get(&ip.parse::<IpAddr>().unwrap()).map(|n| n.to_string())
    }

    #[test]
    fn cluster_ips_endpoints_pods_and_nodes_are_named_in_that_order() {
        let services: Vec<Service> = vec![
            json(serde_json::json!({"metadata": {"name": "web", "namespace": "shop"},
                "spec": {"clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10", "fd00::10"]}})),
            json(serde_json::json!({"metadata": {"name": "db", "namespace": "shop"}, "spec": {"clusterIP": "None"}})),
        ];
        let slices: Vec<EndpointSlice> = vec![
            json(serde_json::json!({"metadata": {"name": "web-x1", "namespace": "shop",
                "labels": {"kubernetes.io/service-name": "web"}}, "addressType": "IPv4",
                "endpoints": [{"addresses": ["10.244.1.5"]}, {"addresses": ["10.244.1.6"]}]})),
            // Two Services select one pod: the smaller name wins, whatever the order.
            json(serde_json::json!({"metadata": {"name": "aaa-1", "namespace": "shop",
                "labels": {"kubernetes.io/service-name": "aaa"}}, "addressType": "IPv4",
                "endpoints": [{"addresses": ["10.244.1.6"]}]})),
            json(serde_json::json!({"metadata": {"name": "db-1", "namespace": "shop",
                "labels": {"kubernetes.io/service-name": "db"}}, "addressType": "FQDN",
                "endpoints": [{"addresses": ["db.example.com"]}]})),
        ];
        let pods: Vec<Pod> = vec![
            json(serde_json::json!({"metadata": {"name": "web-1", "namespace": "shop"},
                "spec": {"nodeName": "node-1", "containers": []},
                "status": {"hostIP": "192.168.1.10", "podIP": "10.244.1.5", "podIPs": [{"ip": "10.244.1.5"}]}})),
            json(serde_json::json!({"metadata": {"name": "batch", "namespace": "jobs"},
                "spec": {"nodeName": "node-1", "containers": []},
                "status": {"hostIP": "192.168.1.10", "podIPs": [{"ip": "10.244.1.9"}]}})),
            json(serde_json::json!({"metadata": {"name": "kube-proxy", "namespace": "kube-system"},
                "spec": {"nodeName": "node-1", "hostNetwork": true, "containers": []},
                "status": {"hostIP": "192.168.1.10", "podIPs": [{"ip": "192.168.1.10"}]}})),
        ];
        for order in [false, true] {
            let slices: Vec<&EndpointSlice> =
                if order { slices.iter().rev().collect() } else { slices.iter().collect() };
            let index = endpoint_index(&services, slices, &pods);
            assert_eq!(names(&index, "10.96.0.10").as_deref(), Some("svc/shop/web"));
            assert_eq!(names(&index, "fd00::10").as_deref(), Some("svc/shop/web"));
            assert_eq!(names(&index, "10.244.1.5").as_deref(), Some("svc/shop/web"), "a Service's pod");
            assert_eq!(names(&index, "10.244.1.6").as_deref(), Some("svc/shop/aaa"));
            assert_eq!(names(&index, "10.244.1.9").as_deref(), Some("pod/jobs/batch"));
            assert_eq!(names(&index, "192.168.1.10").as_deref(), Some("node/node-1"));
            assert_eq!(index.len(), 6, "headless and FQDN add nothing: {index:?}");
        }
    }

    #[test]
    fn trimming_keeps_what_names_need() {
        let mut pod: Pod = json(serde_json::json!({
            "metadata": {"name": "p", "namespace": "n", "uid": "u", "annotations": {"big": "x"},
                "labels": {"app": "a"}, "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                "name": "p-5d", "uid": "r", "controller": true}]},
            "spec": {"nodeName": "node-1", "containers": [{"name": "c", "image": "i", "env": [{"name": "A", "value": "B"}]}]},
            "status": {"hostIP": "192.168.1.10", "podIPs": [{"ip": "10.244.1.5"}], "phase": "Running",
                "containerStatuses": [{"name": "c", "containerID": "containerd://0123456789abcdef", "image": "i",
                "imageID": "x", "ready": true, "restartCount": 3}]}}));
        let before = pod.clone();
        trim_pod(&mut pod);
        assert!(pod.metadata.annotations.is_none());
        assert!(pod.metadata.labels.as_ref().is_none_or(|l| !l.contains_key("app")));
        assert_eq!(pod.metadata.owner_references.as_ref().map(Vec::len), Some(1));
        assert!(pod.spec.as_ref().unwrap().containers.is_empty());
        assert_eq!(
            endpoint_index([], [], [&pod]),
            endpoint_index([], [], [&before]),
            "the index does not change with trimming"
        );
        let (full, small) = (PodNames::default(), PodNames::default());
        full.replace([&before]);
        small.replace([&pod]);
        assert_eq!(small.resolve("/k8s/pod-u/0123456789ab"), "/k8s/n/p/c");
        assert_eq!(full.resolve("/k8s/pod-u/0123456789ab"), small.resolve("/k8s/pod-u/0123456789ab"));
        // A pod as the API serves it: what is kept is a small part.
        let mut recorded: Pod = serde_json::from_str(include_str!("../../../tests/fixtures/k8s/pod.json")).unwrap();
        let full = serde_json::to_vec(&recorded).unwrap().len();
        trim_pod(&mut recorded);
        let kept = serde_json::to_vec(&recorded).unwrap().len();
        assert!(kept * 5 < full, "{kept} of {full} bytes kept");
        // Its ReplicaSet web-6c9f7d8b4 is Deployment web's, after trimming too.
        let named = PodNames::default();
        named.replace([&recorded]);
        let web = &named.all()[0];
        assert_eq!(
            (web.namespace.as_str(), web.workload_kind.as_str(), web.workload.as_str()),
            ("shop", "Deployment", "web")
        );
        assert_eq!(small.all()[0].workload_kind, "ReplicaSet", "no pod-template-hash: the ReplicaSet itself");
    }

    #[test]
    fn a_new_mapping_bumps_the_generation_an_equal_one_does_not() {
        let names = EndpointNames::default();
        let g = names.generation();
        let one: HashMap<IpAddr, Arc<str>> = [("10.0.0.1".parse().unwrap(), Arc::from("svc/a/b"))].into();
        names.replace(one.clone());
        assert_eq!(names.generation(), g + 1);
        names.replace(one);
        assert_eq!(names.generation(), g + 1);
        assert_eq!(names.name(&"10.0.0.1".parse().unwrap()).as_deref(), Some("svc/a/b"));
    }
}
