//! Blobs in an S3-compatible store: moto's S3 server, run by `MERCATO_TEST_MOTO_PYTHON` (a python with
//! `moto[server]`) on a free port, with a bucket made for the test. Skipped when that is unset, except under CI.
#![allow(clippy::expect_used, clippy::panic)]

use std::process::{Child, Command};
use std::time::Duration;

use bytes::Bytes;
use platform::Settings;
use platform::blob::Blobs;

const BUCKET: &str = "mercato-test";

/// The python with moto; `None` (skip) when unset, except under CI.
fn moto_python() -> Option<String> {
    platform::testkit::test_setting(
        "MERCATO_TEST_MOTO_PYTHON",
        "S3",
        "a python with moto[server], e.g. python3 -m venv /var/tmp/mercato-tools/s3-venv && \
         /var/tmp/mercato-tools/s3-venv/bin/pip install 'moto[server]'",
    )
}

/// moto's S3 server, killed on drop.
struct Moto {
    child: Child,
    python: String,
    url: String,
}

impl Moto {
    async fn start(python: &str) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
        let child = Command::new(python)
            .args(["-m", "moto.server", "-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("moto starts");
        let moto = Self { child, python: python.to_owned(), url: format!("http://127.0.0.1:{port}") };
        for _ in 0..200 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
                return moto;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("moto did not listen on {port}");
    }

    /// Runs `op` ("make-bucket" or "get") on the server with boto3 (moto's own dependency), straight, not through
    /// the code under test: the object's bytes for "get", or None when there is no such object.
    fn s3(&self, op: &str, bucket: &str, key: &str) -> Option<Vec<u8>> {
        const SCRIPT: &str = r#"
import sys, boto3
op, url, bucket, key = sys.argv[1:5]
s3 = boto3.client("s3", endpoint_url=url, aws_access_key_id="test", aws_secret_access_key="test",
                  region_name="us-east-1")
if op == "make-bucket":
    s3.create_bucket(Bucket=bucket)
else:
    try:
        sys.stdout.buffer.write(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    except s3.exceptions.NoSuchKey:
        sys.exit(3)
"#;
        let output =
            Command::new(&self.python).args(["-c", SCRIPT, op, &self.url, bucket, key]).output().expect("python runs");
        match output.status.code() {
            Some(0) => Some(output.stdout),
            Some(3) => None,
            _ => panic!("{op} {bucket}/{key}: {}", String::from_utf8_lossy(&output.stderr)),
        }
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn blobs_in_a_bucket_are_shared_by_replicas_and_kept_apart_by_service() {
    let Some(python) = moto_python() else { return };
    let moto = Moto::start(&python).await;
    moto.s3("make-bucket", BUCKET, "");
    let settings = Settings::from_vars(
        [
            ("MERCATO_S3_BUCKET", BUCKET),
            ("MERCATO_S3_ENDPOINT", moto.url.as_str()),
            ("MERCATO_S3_REGION", "us-east-1"),
            ("MERCATO_S3_ACCESS_KEY_ID", "test"),
            ("MERCATO_S3_SECRET_ACCESS_KEY", "test"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned())),
    )
    .expect("settings");
    let replica_a = Blobs::open(&settings, "catalog").expect("open");
    let replica_b = Blobs::open(&settings, "catalog").expect("open");
    let support = Blobs::open(&settings, "support").expect("open");
    assert_eq!(replica_a.backend(), "s3");

    replica_a.put("products/p1/i1", Bytes::from_static(b"\x89PNG...")).await.expect("put");
    assert_eq!(replica_b.get("products/p1/i1").await.expect("get"), Some(Bytes::from_static(b"\x89PNG...")));
    assert_eq!(support.get("products/p1/i1").await.expect("get"), None, "each service has its own prefix");
    // In the bucket, under the service's name.
    assert_eq!(moto.s3("get", BUCKET, "catalog/products/p1/i1"), Some(b"\x89PNG...".to_vec()));

    replica_b.delete("products/p1/i1").await.expect("delete");
    replica_b.delete("products/p1/i1").await.expect("deleting again is fine");
    assert_eq!(replica_a.get("products/p1/i1").await.expect("get"), None);
    assert_eq!(moto.s3("get", BUCKET, "catalog/products/p1/i1"), None);

    // Sweeping orphans lists the service's own keys, relative to its prefix, and leaves other services' alone.
    replica_a.put("products/p2/orphan", Bytes::from_static(b"x")).await.expect("put");
    replica_a.put("products/p2/kept", Bytes::from_static(b"x")).await.expect("put");
    support.put("products/p2/orphan", Bytes::from_static(b"x")).await.expect("put");
    let later = platform::time::now_micros() + 60_000_000;
    let swept = replica_b.sweep_orphans("products", later, |key| key == "products/p2/kept").await.expect("sweep");
    assert_eq!(swept, 1);
    assert_eq!(moto.s3("get", BUCKET, "catalog/products/p2/orphan"), None);
    assert!(moto.s3("get", BUCKET, "catalog/products/p2/kept").is_some());
    assert!(moto.s3("get", BUCKET, "support/products/p2/orphan").is_some(), "another service's blob");

    // A bucket that does not exist is an error, not an empty store.
    let missing = Settings::from_vars(
        [("MERCATO_S3_BUCKET", "no-such-bucket"), ("MERCATO_S3_ENDPOINT", moto.url.as_str())]
            .into_iter()
            .chain([("MERCATO_S3_ACCESS_KEY_ID", "test"), ("MERCATO_S3_SECRET_ACCESS_KEY", "test")])
            .map(|(k, v)| (k.to_owned(), v.to_owned())),
    )
    .expect("settings");
    let nowhere = Blobs::open(&missing, "catalog").expect("open");
    assert!(nowhere.put("k", Bytes::from_static(b"x")).await.is_err(), "no bucket, no blob");
}
