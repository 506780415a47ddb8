//! `vessel plan -f` / `apply -f` / `destroy -f` on a stack's instances: from nothing, a
//! second apply that does nothing, a limit changed in place and an image change as a
//! replacement, `--prune` deleting only what the stack owns, an apply killed half-way that
//! the next one finishes, and a malformed stack refused with its line and field.

mod common;

use std::time::{Duration, Instant};

use common::Daemon;

fn stack(d: &Daemon, text: &str) -> String {
    let path = d.dir.join("stack.yaml");
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

fn created_at(d: &Daemon, name: &str) -> String {
    d.info(name)["created_at"].as_str().unwrap().to_string()
}

#[test]
fn a_stack_applies_converges_and_prunes_only_its_own() {
    let mut d = Daemon::start();
    d.busybox();
    // An instance the stack does not own, and a second image to change to.
    d.ok(&["launch", "busybox", "other", "--no-network"]);
    d.ok(&["create", "busybox", "base", "--no-network"]);
    d.ok(&["publish", "base", "--alias", "bb2"]);
    d.ok(&["delete", "base"]);
    let v1 = "name: shop\ninstances:\n  web:\n    image: busybox\n    limits: {cpu: 0.5, memory: 64MiB}\n    command: [sh, -c, 'sleep 100000']\n  db:\n    image: busybox\n    limits: {memory: 32MiB}\n    environment: {MODE: primary}\n";
    let f = stack(&d, v1);
    let plan = d.ok(&["plan", "-f", &f]);
    assert_eq!(plan.matches("create").count(), 2, "{plan}");
    assert!(
        d.fails(&["info", "web"]).contains("not found"),
        "plan changed nothing"
    );
    d.ok(&["apply", "-f", &f]);
    for n in ["web", "db"] {
        let i = d.info(n);
        assert_eq!(i["status"], "running", "{i}");
        assert_eq!(i["config"]["user.stack"], "shop", "{i}");
    }
    assert_eq!(d.info("web")["limits"]["memory"], 64 << 20);
    // Again: nothing to do.
    let again = d.ok(&["apply", "-f", &f]);
    assert!(again.contains("nothing to do"), "{again}");
    let (web_born, db_born) = (created_at(&d, "web"), created_at(&d, "db"));

    // A limit changes in place; an image change replaces.
    let v2 = v1
        .replace("memory: 64MiB", "memory: 96MiB")
        .replace("  db:\n    image: busybox", "  db:\n    image: bb2");
    let f = stack(&d, &v2);
    let plan = d.ok(&["plan", "-f", &f, "--format", "json"]);
    let steps: serde_json::Value = serde_json::from_str(&plan).unwrap();
    let action = |n: &str| {
        steps
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["kind"] == "instance" && s["name"] == n)
            .map(|s| s["action"].as_str().unwrap().to_string())
    };
    assert_eq!(action("web").as_deref(), Some("change in place"), "{plan}");
    assert_eq!(action("db").as_deref(), Some("replace"), "{plan}");
    d.ok(&["apply", "-f", &f]);
    assert_eq!(d.info("web")["limits"]["memory"], 96 << 20);
    assert_eq!(created_at(&d, "web"), web_born, "web was changed in place");
    assert_ne!(created_at(&d, "db"), db_born, "db was made anew");
    assert_eq!(d.info("db")["status"], "running");

    // Dropped from the stack: kept without --prune, deleted with it; `other` untouched.
    let v3 = v2.split("  db:").next().unwrap().to_string();
    let f = stack(&d, &v3);
    d.ok(&["apply", "-f", &f]);
    assert_eq!(d.info("db")["status"], "running");
    d.ok(&["apply", "-f", &f, "--prune"]);
    assert!(d.fails(&["info", "db"]).contains("not found"));
    assert_eq!(d.info("other")["status"], "running");

    // A stack may not take over what it did not make.
    let f = stack(&d, "name: shop\ninstances:\n  other:\n    image: busybox\n");
    let err = d.fails(&["apply", "-f", &f]);
    assert!(err.contains("not stack shop's"), "{err}");

    // Malformed: the line and the field, and nothing changed.
    let f = stack(&d, &v3.replace("    command:", "    comand:"));
    let err = d.fails(&["apply", "-f", &f]);
    assert!(
        err.contains("stack.yaml:6:") && err.contains("comand"),
        "{err}"
    );
    let f = stack(&d, &v3.replace("memory: 96MiB", "memory: lots"));
    let err = d.fails(&["plan", "-f", &f]);
    assert!(err.contains("instances.web.limits"), "{err}");
    assert_eq!(d.info("web")["limits"]["memory"], 96 << 20);

    // Killed half-way: the next apply finishes the work, with no instance twice. First the
    // state an apply killed after its first creation leaves (a1 made, tagged), made by hand
    // so that it is there whatever the timing; then a real SIGKILL of the CLI.
    let v4 = "name: shop\ninstances:\n  a1:\n    image: busybox\n  a2:\n    image: busybox\n  a3:\n    image: busybox\n  web:\n    image: busybox\n    limits: {cpu: 0.5, memory: 96MiB}\n    command: [sh, -c, 'sleep 100000']\n";
    let f = stack(&d, v4);
    d.ok(&[
        "launch",
        "busybox",
        "a1",
        "--no-network",
        "-c",
        "user.stack=shop",
    ]);
    let plan = d.ok(&["plan", "-f", &f]);
    assert_eq!(plan.matches("create").count(), 2, "{plan}");
    d.ok(&["apply", "-f", &f]);
    d.ok(&["destroy", "-f", &f]);
    let mut cli = d.spawn_vessel(&["apply", "-f", &f]);
    let deadline = Instant::now() + Duration::from_secs(60);
    let missing = |d: &Daemon| {
        let out = d.vessel(&["info", "a1"]);
        !out.status.success()
    };
    while missing(&d) {
        assert!(Instant::now() < deadline, "a1 never appeared");
        std::thread::sleep(Duration::from_millis(50));
    }
    // SAFETY: kill takes plain integers.
    unsafe { libc::kill(cli.id() as i32, libc::SIGKILL) };
    let _ = cli.wait();
    d.ok(&["apply", "-f", &f]);
    for n in ["a1", "a2", "a3", "web"] {
        assert_eq!(d.info(n)["status"], "running", "{n}");
    }
    let again = d.ok(&["apply", "-f", &f]);
    assert!(again.contains("nothing to do"), "{again}");

    // The daemon killed during an apply: after its restart the next apply finishes.
    d.ok(&["destroy", "-f", &f]);
    let mut cli = d.spawn_vessel(&["apply", "-f", &f]);
    let deadline = Instant::now() + Duration::from_secs(60);
    while missing(&d) {
        assert!(Instant::now() < deadline, "a1 never appeared");
        std::thread::sleep(Duration::from_millis(20));
    }
    d.kill(libc::SIGKILL);
    let _ = cli.wait();
    d.spawn();
    d.ok(&["apply", "-f", &f]);
    for n in ["a1", "a2", "a3", "web"] {
        assert_eq!(d.info(n)["status"], "running", "{n}");
    }

    // destroy: everything the stack owns, nothing else.
    d.ok(&["destroy", "-f", &f]);
    for n in ["a1", "a2", "a3", "web"] {
        assert!(d.fails(&["info", n]).contains("not found"), "{n}");
    }
    assert_eq!(d.info("other")["status"], "running");
    d.ok(&["delete", "other", "--force"]);
}

const SHOP: &str = r#"name: shop
pools:
  fast: {driver: raid, level: raid1, members: 2, size: 64MiB}
  files: {driver: dir}
volumes:
  disk: {pool: fast, size: 16MiB, type: block}
  data: {pool: files}
networks:
  front:
    subnet: 10.71.0.0/24
    forwards:
      - {listen_port: 8081, instance: web1, target_port: 80}
    balancers:
      www:
        address: 198.51.100.2
        ports: [{listen_port: 8080, target_port: 80}]
        backends: [web1, web2]
        health_check: {interval_ms: 300, timeout_ms: 200, rise: 1, fall: 1}
  back:
    subnet: 10.72.0.0/24
images:
  busybox: {build: busybox}
instances:
  web1:
    image: busybox
    limits: {memory: 64MiB}
    environment: {NAME: web1}
    networks: [front, back]
    command: [sh, -c, 'mkdir -p /www && echo $NAME > /www/index.html && exec httpd -f -p 80 -h /www']
  web2:
    image: busybox
    limits: {memory: 64MiB}
    environment: {NAME: web2}
    networks: [front, back]
    command: [sh, -c, 'mkdir -p /www && echo $NAME > /www/index.html && exec httpd -f -p 80 -h /www']
  db:
    image: busybox
    networks: [back]
    volumes: [{volume: data, path: /data}]
    snapshots: {schedule: '@daily', expiry: 7d}
    command: [sh, -c, 'sleep 100000']
"#;

fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("{e}: {s}"))
}

/// One HTTP GET from the sandbox's stand-in internet; the body, or "" when nothing
/// answered.
fn fetch(sb: &common::Sandbox, url: &str) -> String {
    let out = std::process::Command::new("ip")
        .args([
            "netns", "exec", &sb.wan, "timeout", "5", "busybox", "wget", "-q", "-O", "-", url,
        ])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The backends that answer through the balancer in 20 tries.
fn answering(d: &Daemon, sb: &common::Sandbox) -> std::collections::BTreeSet<String> {
    let mut seen = std::collections::BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        for _ in 0..20 {
            let got = fetch(sb, "http://198.51.100.2:8080/");
            if !got.is_empty() {
                seen.insert(got);
            }
        }
        let net = json(&d.ok(&["network", "info", "front", "--format", "json"]));
        let all_up = net["load_balancers"][0]["status"]
            .as_array()
            .is_some_and(|b| b.iter().all(|b| b["health"] == "up"));
        if all_up && !seen.is_empty() {
            let mut again = std::collections::BTreeSet::new();
            for _ in 0..20 {
                again.insert(fetch(sb, "http://198.51.100.2:8080/"));
            }
            return again;
        }
        seen.clear();
        std::thread::sleep(Duration::from_millis(300));
    }
    panic!(
        "the balancer's backends never came up:\n{}",
        d.ok(&["network", "info", "front"])
    );
}

/// Checks `text` (YAML) against docs/stack.schema.json with python3-jsonschema; the
/// validator's message when it fails.
fn schema_check(text: &str) -> Result<(), String> {
    let schema = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/stack.schema.json");
    let mut child = std::process::Command::new("/usr/bin/python3")
        .args([
            "-c",
            "import json, sys, yaml, jsonschema\n\
             schema = json.load(open(sys.argv[1]))\n\
             jsonschema.Draft202012Validator.check_schema(schema)\n\
             errors = list(jsonschema.Draft202012Validator(schema).iter_errors(yaml.safe_load(sys.stdin)))\n\
             for e in errors: print('/'.join(map(str, e.path)) + ': ' + e.message)\n\
             sys.exit(1 if errors else 0)",
            schema,
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("/usr/bin/python3 (apt-get install python3-jsonschema python3-yaml)");
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !err.contains("ModuleNotFoundError"),
        "python3-jsonschema or python3-yaml is missing: {err}"
    );
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("{}{err}", String::from_utf8_lossy(&out.stdout)))
    }
}

/// The names of the objects of one kind, as `vessel KIND list` shows them in JSON.
fn names(d: &Daemon, args: &[&str]) -> Vec<String> {
    let mut a = args.to_vec();
    a.extend(["--format", "json"]);
    let v = json(&d.ok(&a));
    let mut out: Vec<String> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["name"].as_str().unwrap().to_string())
        .collect();
    out.sort();
    out
}

#[test]
fn a_stack_of_networks_a_raid_pool_instances_and_a_balancer_converges() {
    let sb = common::Sandbox::new(1);
    let d = Daemon::start_in_netns(&sb.hosts[0]);
    // The published schema takes the stack, and a validator finds a misspelt field too.
    schema_check(SHOP).unwrap();
    let e =
        schema_check(&SHOP.replace("backends: [web1, web2]", "backend: [web1, web2]")).unwrap_err();
    assert!(e.contains("backend"), "{e}");
    let f = stack(&d, SHOP);

    // Things the stack does not own, which nothing it does may touch.
    d.ok(&["network", "create", "mine", "--subnet", "10.73.0.0/24"]);
    d.ok(&["storage", "pool", "create", "spare", "dir"]);
    d.ok(&["storage", "volume", "create", "spare", "keep"]);

    // The plan: every object, touching nothing.
    let plan = json(&d.ok(&["plan", "-f", &f, "--format", "json"]));
    let step = |p: &serde_json::Value, kind: &str, name: &str| {
        p.as_array()
            .unwrap()
            .iter()
            .find(|s| s["kind"] == kind && s["name"] == name)
            .map(|s| s["action"].as_str().unwrap().to_string())
    };
    for (kind, name) in [
        ("pool", "fast"),
        ("pool", "files"),
        ("volume", "fast/disk"),
        ("volume", "files/data"),
        ("network", "front"),
        ("network", "back"),
        ("image", "busybox"),
        ("instance", "web1"),
        ("instance", "web2"),
        ("instance", "db"),
        ("forward", "front/tcp/8081"),
        ("balancer", "front/www"),
    ] {
        assert_eq!(
            step(&plan, kind, name).as_deref(),
            Some("create"),
            "{kind} {name}: {plan}"
        );
    }
    assert!(d
        .fails(&["storage", "pool", "info", "fast"])
        .contains("not found"));
    assert_eq!(names(&d, &["network", "list"]), vec!["mine"]);

    // From nothing.
    let out = d.ok(&["apply", "-f", &f]);
    assert!(out.contains("step(s) applied"), "{out}");
    let pool = json(&d.ok(&["storage", "pool", "info", "fast", "--format", "json"]));
    assert_eq!(pool["level"], "raid1", "{pool}");
    assert_eq!(pool["config"]["user.stack"], "shop", "{pool}");
    for (pool, v) in [("fast", "disk"), ("files", "data")] {
        let vol = json(&d.ok(&["storage", "volume", "info", pool, v, "--format", "json"]));
        assert_eq!(vol["config"]["user.stack"], "shop", "{vol}");
    }
    for n in ["front", "back"] {
        let net = json(&d.ok(&["network", "info", n, "--format", "json"]));
        assert_eq!(net["config"]["user.stack"], "shop", "{net}");
    }
    for n in ["web1", "web2", "db"] {
        let i = d.info(n);
        assert_eq!(i["status"], "running", "{i}");
        assert_eq!(i["config"]["user.stack"], "shop", "{i}");
    }
    let db = d.info("db");
    assert_eq!(db["config"]["snapshots.schedule"], "@daily", "{db}");
    assert_eq!(db["config"]["snapshots.expiry"], "7d", "{db}");
    let (code, out) = d.sh("db", "echo kept > /data/proof && cat /data/proof");
    assert_eq!((code, out.as_str()), (0, "kept\n"));
    // Traffic: the balancer spreads over both, the forward reaches web1.
    let both: std::collections::BTreeSet<String> = ["web1".to_string(), "web2".to_string()].into();
    assert_eq!(answering(&d, &sb), both);
    assert_eq!(fetch(&sb, "http://198.51.100.2:8081/"), "web1");

    // Again: nothing to do.
    let again = d.ok(&["apply", "-f", &f]);
    assert!(again.contains("nothing to do"), "{again}");

    // A limit in place; another image replaces db, whose volume keeps its data.
    d.ok(&["create", "busybox", "base", "--no-network"]);
    d.ok(&["publish", "base", "--alias", "bb2"]);
    d.ok(&["delete", "base"]);
    let (web1_born, db_born) = (created_at(&d, "web1"), created_at(&d, "db"));
    let v2 = SHOP
        .replacen("limits: {memory: 64MiB}", "limits: {memory: 96MiB}", 1)
        .replace("  db:\n    image: busybox", "  db:\n    image: bb2")
        .replace(
            "    subnet: 10.71.0.0/24\n",
            "    subnet: 10.71.0.0/24\n    acl: 'allow ingress tcp port 80'\n",
        )
        .replace("size: 16MiB, type: block", "size: 24MiB, type: block");
    let f = stack(&d, &v2);
    let plan = json(&d.ok(&["plan", "-f", &f, "--format", "json"]));
    assert_eq!(plan.as_array().unwrap().len(), 4, "{plan}");
    assert_eq!(
        step(&plan, "network", "front").as_deref(),
        Some("change in place")
    );
    assert_eq!(
        step(&plan, "volume", "fast/disk").as_deref(),
        Some("change in place")
    );
    assert_eq!(
        step(&plan, "instance", "web1").as_deref(),
        Some("change in place")
    );
    assert_eq!(step(&plan, "instance", "db").as_deref(), Some("replace"));
    d.ok(&["apply", "-f", &f]);
    assert_eq!(d.info("web1")["limits"]["memory"], 96 << 20);
    let net = json(&d.ok(&["network", "info", "front", "--format", "json"]));
    assert!(
        net["acl"]
            .as_str()
            .unwrap()
            .contains("allow ingress tcp port 80"),
        "{net}"
    );
    let disk = json(&d.ok(&[
        "storage", "volume", "info", "fast", "disk", "--format", "json",
    ]));
    assert_eq!(disk["size_bytes"], 24 << 20, "{disk}");
    assert_eq!(created_at(&d, "web1"), web1_born);
    assert_ne!(created_at(&d, "db"), db_born);
    let (_, out) = d.sh("db", "cat /data/proof");
    assert_eq!(out, "kept\n", "the volume lost its data in the replacement");
    assert!(d.ok(&["apply", "-f", &f]).contains("nothing to do"));

    // web2 leaves the stack: kept without --prune; with it, deleted and out of the
    // balancer, and nothing else goes.
    let v3 = v2
        .replace("backends: [web1, web2]", "backends: [web1]")
        .replace(
            "  web2:\n    image: busybox\n    limits: {memory: 64MiB}\n    environment: {NAME: web2}\n    networks: [front, back]\n    command: [sh, -c, 'mkdir -p /www && echo $NAME > /www/index.html && exec httpd -f -p 80 -h /www']\n",
            "",
        );
    assert!(!v3.contains("web2"), "{v3}");
    let f = stack(&d, &v3);
    let plan = json(&d.ok(&["plan", "-f", &f, "--prune", "--format", "json"]));
    assert_eq!(
        step(&plan, "instance", "web2").as_deref(),
        Some("delete"),
        "{plan}"
    );
    assert_eq!(
        step(&plan, "balancer", "front/www").as_deref(),
        Some("replace"),
        "{plan}"
    );
    d.ok(&["apply", "-f", &f, "--prune"]);
    assert!(d.fails(&["info", "web2"]).contains("not found"));
    assert_eq!(answering(&d, &sb), ["web1".to_string()].into());
    assert_eq!(
        names(&d, &["network", "list"]),
        vec!["back", "front", "mine"]
    );
    assert!(names(&d, &["storage", "volume", "list", "spare"]).contains(&"keep".to_string()));

    // Malformed: the line and the field, and nothing changed.
    let before = (names(&d, &["list"]), names(&d, &["network", "list"]));
    let bad = v3.replace(
        "        ports: [{listen_port",
        "        port: [{listen_port",
    );
    let err = d.fails(&["apply", "-f", &stack(&d, &bad)]);
    assert!(
        err.contains("stack.yaml:17:") && err.contains("port"),
        "{err}"
    );
    let bad = v3.replace("backends: [web1]", "backends: [web1, nobody]");
    let err = d.fails(&["apply", "-f", &stack(&d, &bad)]);
    assert!(
        err.contains("stack.yaml:18: networks.front.balancers.www.backends: \"nobody\""),
        "{err}"
    );
    let bad = v3.replace("level: raid1", "level: raid5");
    let err = d.fails(&["apply", "-f", &stack(&d, &bad)]);
    assert!(err.contains("apply never replaces a pool"), "{err}");
    assert_eq!(
        (names(&d, &["list"]), names(&d, &["network", "list"])),
        before
    );

    // The CLI killed in the middle of making the instances: the next apply finishes.
    let f = stack(&d, &v3);
    d.ok(&["destroy", "-f", &f]);
    assert!(d
        .fails(&["storage", "pool", "info", "fast"])
        .contains("not found"));
    let mut cli = d.spawn_vessel(&["apply", "-f", &f]);
    let deadline = Instant::now() + Duration::from_secs(120);
    while !d.vessel(&["info", "web1"]).status.success()
        && !d.vessel(&["info", "db"]).status.success()
    {
        assert!(Instant::now() < deadline, "no instance appeared");
        std::thread::sleep(Duration::from_millis(50));
    }
    // SAFETY: kill takes plain integers.
    unsafe { libc::kill(cli.id() as i32, libc::SIGKILL) };
    let _ = cli.wait();
    d.ok(&["apply", "-f", &f]);
    for n in ["web1", "db"] {
        assert_eq!(d.info(n)["status"], "running", "{n}");
    }
    assert_eq!(answering(&d, &sb), ["web1".to_string()].into());
    assert!(d.ok(&["apply", "-f", &f]).contains("nothing to do"));

    // destroy: everything the stack owns, nothing else.
    let out = d.ok(&["destroy", "-f", &f]);
    assert!(out.contains("object(s) deleted"), "{out}");
    assert!(names(&d, &["list"]).is_empty());
    assert_eq!(names(&d, &["network", "list"]), vec!["mine"]);
    assert!(d
        .fails(&["storage", "pool", "info", "fast"])
        .contains("not found"));
    assert!(names(&d, &["storage", "volume", "list", "spare"]).contains(&"keep".to_string()));
    let again = d.ok(&["destroy", "-f", &f]);
    assert!(again.contains("0 object(s) deleted"), "{again}");
}

#[test]
fn a_stack_makes_its_project_and_lives_in_it() {
    let sb = common::Sandbox::new(1);
    let d = Daemon::start_in_netns(&sb.hosts[0]);
    d.busybox();
    d.ok(&["launch", "busybox", "app", "--no-network"]);
    let tenant = "name: tenant\nproject: acme\nprojects:\n  acme:\n    description: a customer\n    config: {features.images: false, limits.instances: 2}\nnetworks:\n  lan: {subnet: 10.74.0.0/24}\ninstances:\n  app:\n    image: busybox\n    networks: [lan]\n    command: [sleep, '100000']\n";
    let f = stack(&d, tenant);
    let plan = d.ok(&["plan", "-f", &f]);
    assert_eq!(plan.matches("create").count(), 3, "{plan}");
    d.ok(&["apply", "-f", &f]);
    let p = json(&d.ok(&["project", "info", "acme", "--format", "json"]));
    assert_eq!(p["config"]["user.stack"], "tenant", "{p}");
    assert_eq!(p["config"]["limits.instances"], "2", "{p}");
    let app = json(&d.ok(&["info", "app", "--project", "acme", "--format", "json"]));
    assert_eq!(app["status"], "running", "{app}");
    assert_eq!(app["nics"][0]["network"], "lan", "{app}");
    assert!(d.ok(&["apply", "-f", &f]).contains("nothing to do"));
    // default's app is another instance, untouched.
    assert!(d.info("app")["nics"].as_array().unwrap().is_empty());

    // A setting changes in place; a quota the stack outgrows stops the apply with the
    // daemon's reason, and what was made stays.
    let more = tenant.replace("limits.instances: 2", "limits.instances: 1")
        + "  app2:\n    image: busybox\n    command: [sleep, '100000']\n";
    let f = stack(&d, &more);
    let err = d.fails(&["apply", "-f", &f]);
    assert!(
        err.contains("create instance app2") && err.contains("limits.instances"),
        "{err}"
    );
    let p = json(&d.ok(&["project", "info", "acme", "--format", "json"]));
    assert_eq!(p["config"]["limits.instances"], "1", "{p}");
    let f = stack(
        &d,
        &more.replace("limits.instances: 1", "limits.instances: 3"),
    );
    d.ok(&["apply", "-f", &f]);
    assert_eq!(
        json(&d.ok(&["info", "app2", "--project", "acme", "--format", "json"]))["status"],
        "running"
    );

    // destroy: the project with everything in it; default's app stays.
    d.ok(&["destroy", "-f", &f]);
    assert!(d.fails(&["project", "info", "acme"]).contains("not found"));
    assert_eq!(d.info("app")["status"], "running");
    d.ok(&["delete", "app", "--force"]);
}
