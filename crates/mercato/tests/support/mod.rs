//! Running the `mercato` binary as a user would: a child process on port 0 everywhere, in a data dir of its own.

#![allow(dead_code, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The binary under test, with an empty environment but `PATH`.
pub fn mercato() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mercato"));
    cmd.env_clear().env("PATH", std::env::var("PATH").unwrap_or_default());
    cmd
}

/// A fresh data directory under the system's temporary directory.
pub fn data_dir(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("mercato-{name}-{}", uuid::Uuid::now_v7().simple()))
}

/// Starts `mercato up` (plus `args`) on port 0 everywhere with `env` added, and returns the child and the
/// gateway's base URL once it has printed that it is up.
pub fn start_up(data_dir: &std::path::Path, args: &[&str], env: &[(&str, &str)]) -> (Child, String) {
    let mut cmd = mercato();
    cmd.arg("up").args(args);
    // Every service on port 0, so that tests running side by side never meet on a default port.
    for (service, _) in platform::config::SERVICE_PORTS {
        cmd.env(format!("MERCATO_{}_URL", service.to_ascii_uppercase()), "http://127.0.0.1:0");
    }
    cmd.env("MERCATO_DATA_DIR", data_dir)
        .env("MERCATO_HTTP_ADDR", "127.0.0.1:0")
        .env("MERCATO_METRICS_ADDR", "127.0.0.1:0")
        .env("MERCATO_LOG", "warn");
    for (name, value) in env {
        cmd.env(name, value);
    }
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn().expect("starts");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut gateway = None;
    while Instant::now() < deadline {
        let Ok(line) = rx.recv_timeout(Duration::from_secs(1)) else { continue };
        if let Some(url) = line.trim().strip_prefix("gateway").map(str::trim) {
            gateway = Some(url.to_owned());
        }
        if line.contains("Ctrl-C") {
            break;
        }
    }
    (child, gateway.expect("up printed the gateway address"))
}

/// Waits until the gateway answers `/readyz` with 200.
pub async fn wait_ready(base: &str) {
    for _ in 0..400 {
        if let Ok(r) = reqwest::get(format!("{base}/readyz")).await
            && r.status().is_success()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("not ready");
}

/// Sends SIGTERM and waits (at most 20 s) for the exit: its code and how long it took.
pub fn terminate(child: &mut Child) -> (Option<i32>, Duration) {
    let started = Instant::now();
    let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().expect("kill");
    assert!(status.success());
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return (status.code(), started.elapsed());
        }
        if started.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            return (None, started.elapsed());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits (at most `within`) for the child to exit on its own; kills it and panics if it does not.
pub fn exited_within(child: &mut Child, within: Duration) -> ExitStatus {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        if started.elapsed() > within {
            let _ = child.kill();
            panic!("the process was still running after {within:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
