//! Resolves [`KernelLayout`] (offsets, enum values) from the running kernel's
//! BTF, so nothing about kernel structures is compiled into sockprobe.
use probe_common::{Field, KernelLayout, REASON_UNKNOWN, TcpStates};

use super::btf::Btf;
use crate::error::Error;

fn field(btf: &Btf, strukt: &str, path: &[&str]) -> Option<Field> {
    let loc = btf.member(strukt, path)?;
    let offset = loc.bit_offset / 8;
    let shift = (loc.bit_offset % 8) as u16;
    if loc.is_bitfield && (shift as u32).saturating_add(loc.bits) > 16 {
        return None; // our 16-bit window cannot hold it
    }
    Some(Field { offset, shift, bits: loc.bits as u16 })
}

fn required(btf: &Btf, strukt: &str, path: &[&str]) -> Result<Field, Error> {
    field(btf, strukt, path).ok_or_else(|| Error::Layout(format!("struct {strukt}.{}", path.join("."))))
}

fn enum_required(btf: &Btf, name: &str) -> Result<u32, Error> {
    btf.enum_value(name).map(|v| v as u32).ok_or_else(|| Error::Layout(format!("enumerator {name}")))
}

pub fn resolve(btf: &Btf) -> Result<KernelLayout, Error> {
    let sk = |name: &str| required(btf, "sock", &["__sk_common", name]);
    let state = |name: &str| enum_required(btf, name);
    Ok(KernelLayout {
        skc_family: sk("skc_family")?,
        skc_state: sk("skc_state")?,
        skc_daddr: sk("skc_daddr")?,
        skc_rcv_saddr: sk("skc_rcv_saddr")?,
        skc_dport: sk("skc_dport")?,
        skc_num: field(btf, "sock", &["__sk_common", "skc_num"]).unwrap_or(Field::MISSING),
        skc_v6_daddr: sk("skc_v6_daddr")?,
        skc_v6_rcv_saddr: sk("skc_v6_rcv_saddr")?,
        sk_protocol: required(btf, "sock", &["sk_protocol"])?,
        sk_shutdown: required(btf, "sock", &["sk_shutdown"])?,
        sk_ack_backlog: field(btf, "sock", &["sk_ack_backlog"]).unwrap_or(Field::MISSING),
        sk_max_ack_backlog: field(btf, "sock", &["sk_max_ack_backlog"]).unwrap_or(Field::MISSING),
        sk_drops: field(btf, "sock", &["sk_drops"]).unwrap_or(Field::MISSING),
        sk_err: field(btf, "sock", &["sk_err"]).unwrap_or(Field::MISSING),
        skb_cb: field(btf, "sk_buff", &["cb"]).unwrap_or(Field::MISSING),
        tcp_skb_gso_segs: field(btf, "tcp_skb_cb", &["tcp_gso_segs"]).unwrap_or(Field::MISSING),
        // Before 5.15 sock_cgroup_data was a packed union: no fallback cgroup there.
        sk_cgroup: field(btf, "sock", &["sk_cgrp_data", "cgroup"]).unwrap_or(Field::MISSING),
        cgroup_kn: field(btf, "cgroup", &["kn"]).unwrap_or(Field::MISSING),
        kernfs_node_id: field(btf, "kernfs_node", &["id"]).unwrap_or(Field::MISSING),
        sk_net: field(btf, "sock", &["__sk_common", "skc_net", "net"]).unwrap_or(Field::MISSING),
        net_ns_inum: field(btf, "net", &["ns", "inum"]).unwrap_or(Field::MISSING),
        skc_cookie: field(btf, "sock", &["__sk_common", "skc_cookie"]).unwrap_or(Field::MISSING),
        inet_sport: required(btf, "inet_sock", &["inet_sport"])?,
        icsk_accept_head: field(btf, "inet_connection_sock", &["icsk_accept_queue", "rskq_accept_head"])
            .unwrap_or(Field::MISSING),
        request_sock_next: field(btf, "request_sock", &["dl_next"]).unwrap_or(Field::MISSING),
        request_sock_sk: field(btf, "request_sock", &["sk"]).unwrap_or(Field::MISSING),
        socket_sk: field(btf, "socket", &["sk"]).unwrap_or(Field::MISSING),
        tcp_rcv_nxt: required(btf, "tcp_sock", &["rcv_nxt"])?,
        tcp_copied_seq: required(btf, "tcp_sock", &["copied_seq"])?,
        tcp_data_segs_out: required(btf, "tcp_sock", &["data_segs_out"])?,
        tcp_data_segs_in: required(btf, "tcp_sock", &["data_segs_in"])?,
        tcp_snd_nxt: required(btf, "tcp_sock", &["snd_nxt"])?,
        task_group_leader: field(btf, "task_struct", &["group_leader"]).unwrap_or(Field::MISSING),
        task_comm: required(btf, "task_struct", &["comm"])?,
        task_tgid: field(btf, "task_struct", &["tgid"]).unwrap_or(Field::MISSING),
        task_cgroups: field(btf, "task_struct", &["cgroups"]).unwrap_or(Field::MISSING),
        css_set_dfl_cgrp: field(btf, "css_set", &["dfl_cgrp"]).unwrap_or(Field::MISSING),
        states: TcpStates {
            established: state("TCP_ESTABLISHED")?,
            syn_sent: state("TCP_SYN_SENT")?,
            syn_recv: state("TCP_SYN_RECV")?,
            fin_wait1: state("TCP_FIN_WAIT1")?,
            fin_wait2: state("TCP_FIN_WAIT2")?,
            time_wait: state("TCP_TIME_WAIT")?,
            close: state("TCP_CLOSE")?,
            close_wait: state("TCP_CLOSE_WAIT")?,
            last_ack: state("TCP_LAST_ACK")?,
            listen: state("TCP_LISTEN")?,
            closing: state("TCP_CLOSING")?,
        },
        rst_abort_on_close: btf
            .enum_value("SK_RST_REASON_TCP_ABORT_ON_CLOSE")
            .map(|v| v as u32)
            .unwrap_or(REASON_UNKNOWN),
        ipproto_tcp: enum_required(btf, "IPPROTO_TCP")?,
    })
}

/// Names of `enum sk_rst_reason` values, as the `reason` label spells them.
#[derive(Debug, Clone, Default)]
pub struct ResetReasons {
    names: Vec<(u32, String)>,
}

impl ResetReasons {
    pub fn from_btf(btf: &Btf) -> ResetReasons {
        let names = btf
            .enum_values("sk_rst_reason")
            .unwrap_or_default()
            .into_iter()
            .filter_map(|(n, v)| {
                let short = n.strip_prefix("SK_RST_REASON_")?;
                Some((v as u32, reason_label(short)))
            })
            .collect();
        ResetReasons { names }
    }

    pub fn name(&self, value: u32) -> String {
        if value == REASON_UNKNOWN {
            return "unknown".into();
        }
        self.names
            .iter()
            .find(|(v, _)| *v == value)
            .map(|(_, n)| n.clone())
            .unwrap_or_else(|| format!("reason_{value}"))
    }
}

/// `TCP_ABORT_ON_CLOSE` → `abort_on_close` (the kernel prefixes only some of
/// the abort reasons with `TCP_`; the label treats them alike), `TCP_STATE` →
/// `tcp_state`.
fn reason_label(enumerator: &str) -> String {
    let lower = enumerator.to_ascii_lowercase();
    match lower.strip_prefix("tcp_") {
        Some(rest) if rest.starts_with("abort_on_") => rest.to_string(),
        _ => lower,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reason_labels() {
        assert_eq!(reason_label("TCP_ABORT_ON_CLOSE"), "abort_on_close");
        assert_eq!(reason_label("ABORT_ON_LINGER"), "abort_on_linger");
        assert_eq!(reason_label("TCP_STATE"), "tcp_state");
        assert_eq!(reason_label("NOT_SPECIFIED"), "not_specified");
    }

    #[test]
    fn unknown_reasons() {
        let r = ResetReasons { names: vec![(11, "abort_on_close".into())] };
        assert_eq!(r.name(11), "abort_on_close");
        assert_eq!(r.name(99), "reason_99");
        assert_eq!(r.name(REASON_UNKNOWN), "unknown");
    }
}
