//! Bad input gets one clear line and a non-zero exit; `check` tells the truth.
mod support;

use std::process::{Command, Output};

use support::*;

fn sockprobe(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(SOCKPROBE).args(args).envs(env.iter().copied()).output().expect("run sockprobe")
}

fn one_line_error(out: &Output, code: i32, needle: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "exit code; stderr: {stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "expected one line, got: {stderr}");
    assert!(stderr.contains(needle), "{needle:?} not in: {stderr}");
    assert!(out.stdout.is_empty(), "nothing on stdout: {}", String::from_utf8_lossy(&out.stdout));
}

#[test]
fn unknown_flag_is_a_usage_error() {
    one_line_error(&sockprobe(&["trace", "--bogus"], &[]), 2, "'--bogus'");
}

#[test]
fn unknown_event_name_lists_the_allowed_ones() {
    one_line_error(&sockprobe(&["trace", "--event", "close,nope"], &[]), 2, "allowed are open, close, unread_close");
}

#[test]
fn non_numeric_pid_is_a_usage_error() {
    one_line_error(&sockprobe(&["trace", "--pid", "abc"], &[]), 2, "--pid");
}

#[test]
fn help_teaches() {
    let out = sockprobe(&["trace", "--help"], &[]);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in ["--pid", "--comm", "--event", "unread_close"] {
        assert!(help.contains(flag), "{flag} missing from help:\n{help}");
    }
}

/// Without privileges: one line naming what is missing, nothing attached.
#[test]
fn without_privileges_trace_refuses_in_one_line() {
    let out = if unsafe { libc::geteuid() } == 0 {
        Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all", SOCKPROBE, "trace"])
            .output()
            .expect("setpriv (util-linux)")
    } else {
        sockprobe(&["trace"], &[])
    };
    one_line_error(&out, 1, "not enough privileges");
}

#[test]
fn missing_btf_is_explained() {
    if !is_root() {
        return;
    }
    let out = sockprobe(&["trace"], &[("SOCKPROBE_BTF_FILE", "/nonexistent/vmlinux")]);
    one_line_error(&out, 1, "CONFIG_DEBUG_INFO_BTF");
}

#[test]
fn privileged_check_reports_every_probe() {
    if !is_root() {
        return;
    }
    let out = sockprobe(&["check"], &[]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "check failed:\n{text}{}", String::from_utf8_lossy(&out.stderr));
    let line = |hook: &str| {
        text.lines().find(|l| l.contains(hook)).unwrap_or_else(|| panic!("{hook} not reported:\n{text}")).to_string()
    };
    assert!(line("tp_btf/inet_sock_set_state").contains("attached"), "{text}");
    // Fallbacks are tried and reported either way, never fatal.
    let reported = |l: String| l.contains("unavailable:") || l.contains("available (standby") || l.contains("attached");
    assert!(reported(line("fentry/tcp_close")), "{text}");
    // A kernel without kprobes (like CI's) must say so, not fail.
    if !std::path::Path::new("/sys/bus/event_source/devices/kprobe").exists() {
        assert!(line("kprobe/tcp_close").contains("unavailable: kprobe/tcp_close: kprobes not supported"), "{text}");
    }
    assert!(text.contains("result       ok"), "{text}");
}
