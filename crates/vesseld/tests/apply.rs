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
            .find(|s| s["instance"] == n)
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
