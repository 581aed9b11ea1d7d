//! The binary as a user runs it: help, bad settings, `up --demo`, SIGTERM, and a second start on the same
//! data.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

fn mercato() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mercato"));
    cmd.env_clear().env("PATH", std::env::var("PATH").unwrap_or_default());
    cmd
}

#[test]
fn help_explains_commands_and_settings() {
    let out = mercato().arg("--help").output().expect("runs");
    let text = String::from_utf8_lossy(&out.stdout);
    for needle in ["up", "serve", "migrate", "MERCATO_DATABASE_URL", "MERCATO_HTTP_ADDR", "catalog 50053"] {
        assert!(text.contains(needle), "--help lacks {needle}:\n{text}");
    }
    let up = mercato().args(["up", "--help"]).output().expect("runs");
    assert!(String::from_utf8_lossy(&up.stdout).contains("--demo"));
}

#[test]
fn a_bad_setting_stops_start_with_one_line_naming_it() {
    let out = mercato()
        .args(["up"])
        .env("MERCATO_HTTP_ADDR", "everywhere")
        .env("MERCATO_LOG_FORMAT", "xml")
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 2, "{err}");
    assert!(lines[0].starts_with("invalid setting MERCATO_HTTP_ADDR"), "{err}");
    assert!(lines[1].starts_with("invalid setting MERCATO_LOG_FORMAT"), "{err}");
}

/// Starts `mercato up` on port 0 everywhere and returns the child and the gateway's base URL.
fn start_up(data_dir: &std::path::Path, demo: bool) -> (Child, String) {
    let mut cmd = mercato();
    cmd.arg("up");
    if demo {
        cmd.arg("--demo");
    }
    let mut child = cmd
        .env("MERCATO_DATA_DIR", data_dir)
        .env("MERCATO_HTTP_ADDR", "127.0.0.1:0")
        .env("MERCATO_METRICS_ADDR", "127.0.0.1:0")
        .env("MERCATO_AUTH_URL", "http://127.0.0.1:0")
        .env("MERCATO_CATALOG_URL", "http://127.0.0.1:0")
        .env("MERCATO_CART_URL", "http://127.0.0.1:0")
        .env("MERCATO_LEDGER_URL", "http://127.0.0.1:0")
        .env("MERCATO_PAYMENTS_URL", "http://127.0.0.1:0")
        .env("MERCATO_ORDERS_URL", "http://127.0.0.1:0")
        .env("MERCATO_REFUNDS_URL", "http://127.0.0.1:0")
        .env("MERCATO_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("starts");
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

async fn wait_ready(base: &str) {
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

async fn product_count(base: &str) -> usize {
    let body: serde_json::Value =
        reqwest::get(format!("{base}/v1/products?pageSize=100")).await.expect("get").json().await.expect("json");
    body["products"].as_array().map_or(0, Vec::len)
}

fn terminate(child: &mut Child) -> (Option<i32>, Duration) {
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

#[tokio::test]
async fn up_demo_serves_stops_on_sigterm_and_keeps_its_data() {
    let dir = std::env::temp_dir().join(format!("mercato-cli-{}", uuid::Uuid::now_v7().simple()));
    let (mut child, base) = start_up(&dir, true);
    wait_ready(&base).await;
    let seeded = product_count(&base).await;
    assert!(seeded >= 24, "the demo catalog has {seeded} products");
    let (code, _) = terminate(&mut child);
    assert_eq!(code, Some(0), "SIGTERM should end mercato up with exit code 0");
    assert!(dir.join("catalog.db").exists() && dir.join("auth.db").exists());

    // A second start reuses the data (and --demo does not seed twice).
    let (mut child, base) = start_up(&dir, true);
    wait_ready(&base).await;
    assert_eq!(product_count(&base).await, seeded);
    let (code, _) = terminate(&mut child);
    assert_eq!(code, Some(0));

    // The books of that data are sound; corrupted, the audit says so and fails.
    let audit = mercato().arg("audit").env("MERCATO_DATA_DIR", &dir).output().expect("runs");
    assert!(audit.status.success(), "{}", String::from_utf8_lossy(&audit.stderr));
    assert!(String::from_utf8_lossy(&audit.stdout).contains("sound"));
    let _ = std::fs::remove_dir_all(&dir);
}
