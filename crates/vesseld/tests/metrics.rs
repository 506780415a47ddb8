//! `GET /1.0/metrics` scraped by Debian's real Prometheus over HTTPS with a bearer token, a
//! PromQL query over what it scraped, the project scoping of what each identity sees, and
//! the instances' history.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{free_port, Daemon};

/// `curl` over HTTPS with a bearer token: (status, content type, body).
fn get(d: &Daemon, port: u16, token: &str, path: &str) -> (u16, String, String) {
    let out = Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "20",
            "-o",
            "-",
            "-w",
            "\n%{http_code} %{content_type}",
        ])
        .arg("--cacert")
        .arg(d.root().join("server.crt"))
        .arg("-H")
        .arg(format!("Authorization: Bearer {token}"))
        .arg(format!("https://127.0.0.1:{port}{path}"))
        .stdin(Stdio::null())
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, tail) = text.rsplit_once('\n').unwrap_or(("", &text));
    let (code, ctype) = tail.split_once(' ').unwrap_or((tail, ""));
    (
        code.parse().unwrap_or(0),
        ctype.to_string(),
        body.to_string(),
    )
}

/// Debian's prometheus on a loopback port, killed and its data removed on drop.
struct Prometheus {
    child: Child,
    port: u16,
    dir: std::path::PathBuf,
}

impl Prometheus {
    fn start(dir: &std::path::Path, config: &str) -> Self {
        let bin = "/usr/bin/prometheus";
        assert!(
            std::path::Path::new(bin).exists(),
            "{bin} missing: install Debian's prometheus (scripts/debian-packages.txt)"
        );
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join("prometheus.yml"), config).unwrap();
        let port = free_port();
        let log = std::fs::File::create(dir.join("prometheus.log")).unwrap();
        let child = Command::new(bin)
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start prometheus");
        Prometheus {
            child,
            port,
            dir: dir.to_path_buf(),
        }
    }

    /// The result vector of an instant PromQL query.
    fn query(&self, q: &str) -> Vec<serde_json::Value> {
        let out = Command::new("curl")
            .args(["-sS", "--max-time", "10", "-G"])
            .arg(format!("http://127.0.0.1:{}/api/v1/query", self.port))
            .arg("--data-urlencode")
            .arg(format!("query={q}"))
            .output()
            .expect("curl");
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        v["data"]["result"].as_array().cloned().unwrap_or_default()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn prometheus_scrapes_each_identity_its_own_projects() {
    let (d, port) = Daemon::start_https();
    d.busybox();
    d.ok(&[
        "project",
        "create",
        "beta",
        "-c",
        "features.images=false",
        "-c",
        "limits.instances=5",
    ]);
    // `busy` burns cpu in default; `quiet` idles in beta.
    d.ok(&[
        "launch",
        "busybox",
        "busy",
        "--",
        "sh",
        "-c",
        "while :; do :; done",
    ]);
    d.ok(&["launch", "busybox", "quiet", "--project", "beta"]);
    let admin = d.token("scraper", "default", "admin");
    let beta = d.token("beta-viewer", "beta", "viewer");

    // The text as each identity sees it: a reading serves scrapes for a few seconds, so the
    // new instances show within that.
    let deadline = Instant::now() + Duration::from_secs(10);
    let (code, ctype, all) = loop {
        let (code, ctype, all) = get(&d, port, &admin, "/1.0/metrics");
        if code != 200 || (all.contains("busy") && all.contains("quiet")) {
            break (code, ctype, all);
        }
        assert!(
            Instant::now() < deadline,
            "the instances do not show:\n{all}"
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(code, 200, "{all}");
    assert!(ctype.starts_with("text/plain; version=0.0.4"), "{ctype}");
    for needle in [
        r#"vessel_cpu_seconds_total{name="busy",project="default",type="container"}"#,
        r#"vessel_memory_usage_bytes{name="quiet",project="beta",type="container"}"#,
        r#"vessel_procs_total{name="busy""#,
        r#"vessel_project_limit{project="beta",resource="instances"} 5"#,
        r#"vessel_project_usage{project="beta",resource="instances"} 1"#,
        "vessel_api_request_duration_seconds_bucket{",
    ] {
        assert!(all.contains(needle), "{needle} missing from:\n{all}");
    }
    let (code, _, mine) = get(&d, port, &beta, "/1.0/metrics");
    assert_eq!(code, 200, "{mine}");
    assert!(mine.contains(r#"name="quiet",project="beta""#), "{mine}");
    assert!(
        !mine.contains("busy") && !mine.contains(r#"project="default""#),
        "{mine}"
    );
    assert!(
        !mine.contains("vessel_api_request"),
        "the daemon's own figures are admins': {mine}"
    );
    let (code, _, body) = get(&d, port, "vessel_0000", "/1.0/metrics");
    assert_eq!(code, 401, "{body}");

    // Prometheus scrapes both ways; PromQL over the admin's scrape finds busy's cpu time.
    let dir = d.dir.join("prometheus");
    let cert = d.root().join("server.crt");
    let job = |name: &str, token: &str| {
        format!(
            "  - job_name: {name}\n    scheme: https\n    metrics_path: /1.0/metrics\n    \
             authorization:\n      credentials: {token}\n    tls_config:\n      ca_file: {}\n    \
             static_configs:\n      - targets: ['127.0.0.1:{port}']\n",
            cert.display()
        )
    };
    let config = format!(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n{}{}",
        job("admin", &admin),
        job("beta", &beta)
    );
    let prom = Prometheus::start(&dir, &config);
    let deadline = Instant::now() + Duration::from_secs(60);
    let cpu = loop {
        let r = prom.query(r#"vessel_cpu_seconds_total{job="admin",name="busy"}"#);
        let v = r
            .first()
            .and_then(|s| s["value"][1].as_str())
            .and_then(|s| s.parse::<f64>().ok());
        if let Some(v) = v.filter(|v| *v >= 1.0) {
            break v;
        }
        assert!(
            Instant::now() < deadline,
            "no cpu time of busy scraped in 60 s: {r:?}\n{}",
            prom.log()
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    // The scrapes are live readings (each at most a few seconds old): busy's time goes on
    // at about a core.
    let rate = loop {
        let r = prom.query(r#"rate(vessel_cpu_seconds_total{job="admin",name="busy"}[20s])"#);
        let v = r
            .first()
            .and_then(|s| s["value"][1].as_str())
            .and_then(|s| s.parse::<f64>().ok());
        if let Some(v) = v.filter(|v| *v > 0.3) {
            break v;
        }
        assert!(
            Instant::now() < deadline,
            "busy spins a core, its rate stays {v:?} (after {cpu} s)"
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    assert!(rate < 2.5, "2 cores here, the rate is {rate}");
    let up = prom.query(r#"up{job="beta"}"#);
    assert_eq!(
        up.first().map(|s| s["value"][1].clone()),
        Some("1".into()),
        "{up:?}"
    );
    let theirs = prom.query(r#"vessel_cpu_seconds_total{job="beta"}"#);
    assert!(
        theirs.iter().all(|s| s["metric"]["project"] == "beta") && !theirs.is_empty(),
        "beta's scrape holds beta's instances only: {theirs:?}"
    );
}

#[test]
fn history_keeps_recent_cpu_and_memory_of_an_instance() {
    let d = Daemon::start();
    d.busybox();
    d.ok(&[
        "launch",
        "busybox",
        "h1",
        "--",
        "sh",
        "-c",
        "while :; do :; done",
    ]);
    let deadline = Instant::now() + Duration::from_secs(40);
    let points = loop {
        let (code, body) = common::http(&d.socket, "GET", "/1.0/instances/h1/history", None);
        assert_eq!(code, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["interval_seconds"], 10);
        let points = v["points"].as_array().cloned().unwrap_or_default();
        if points.len() >= 2 {
            break points;
        }
        assert!(
            Instant::now() < deadline,
            "fewer than 2 points in 40 s: {body}"
        );
        std::thread::sleep(Duration::from_secs(1));
    };
    let (a, b) = (&points[points.len() - 2], &points[points.len() - 1]);
    let dt = b["time"].as_i64().unwrap() - a["time"].as_i64().unwrap();
    let dcpu = b["cpu_seconds"].as_f64().unwrap() - a["cpu_seconds"].as_f64().unwrap();
    assert!(dt >= 5, "samples {dt} s apart");
    assert!(
        dcpu > 0.2 * dt as f64,
        "a spinning instance used {dcpu} s of cpu in {dt} s"
    );
    assert!(b["memory_bytes"].as_u64().unwrap() > 0);
    let (code, body) = common::http(&d.socket, "GET", "/1.0/instances/nope/history", None);
    assert_eq!(code, 404, "{body}");
}
