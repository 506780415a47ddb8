//! Instances whose init is systemd: how they are recognised, the signal that stops them, and
//! what their OCI spec gets beyond the default one (what `podman run --systemd=always` adds):
//! tmpfs on `/run`, `/run/lock` and `/tmp`, and a writable `/sys/fs/cgroup`. The runtime does
//! the rest for any container (see `docs/runtime.md`, "systemd as the init").

use oci_spec::runtime::{Mount, MountBuilder, Spec};

use crate::error::{Error, Result};

/// The image stop signal that marks a systemd init (`STOPSIGNAL SIGRTMIN+3` in Dockerfiles).
const SYSTEMD_STOP_SIGNAL: &str = "SIGRTMIN+3";

/// Shells that, run as the init with no `-c`, are interactive and end on SIGHUP (and ignore
/// SIGTERM).
const SHELLS: &[&str] = &["bash", "sh", "dash", "ash", "zsh", "ksh", "mksh"];

/// Whether `command` boots systemd: its program is named `systemd`, or it is the image's own
/// command and the image stops with SIGRTMIN+3 (the image declares a systemd init, as
/// Vessel's Debian image does with `/sbin/init`). A command named `init` alone is not enough:
/// busybox images run `/sbin/init` too.
pub fn is_systemd_init(command: &[String], image_command: &[String], image_stop: &str) -> bool {
    let program = command.first().map(|c| basename(c)).unwrap_or_default();
    program == "systemd"
        || (command == image_command && normalize_signal(image_stop) == SYSTEMD_STOP_SIGNAL)
}

/// The signal that asks the instance's init to stop: the image's for the image's own command;
/// SIGRTMIN+3 for another systemd; SIGHUP for an interactive shell (`/bin/bash -l`); else
/// SIGTERM.
pub fn stop_signal(command: &[String], image_command: &[String], image_stop: &str) -> i32 {
    if command == image_command {
        if let Some(sig) = super::signal_number(image_stop) {
            return sig;
        }
    }
    if is_systemd_init(command, image_command, image_stop) {
        return libc::SIGRTMIN() + 3;
    }
    let program = command.first().map(|c| basename(c)).unwrap_or_default();
    if SHELLS.contains(&program) && !command.iter().skip(1).any(|a| a == "-c") {
        return libc::SIGHUP;
    }
    libc::SIGTERM
}

/// Adds to `spec` what systemd needs and a default spec lacks: tmpfs on `/run`, `/run/lock`
/// and `/tmp` (systemd expects them, and may not mount them itself without CAP_SYS_ADMIN),
/// each starting with what the image has there; and `/sys/fs/cgroup` writable, so that systemd
/// can make its cgroups below the container's own (only directories the runtime delegated to
/// the container's root are writable to an unprivileged container).
pub fn apply(spec: &mut Spec) -> Result<()> {
    let mut mounts = spec.mounts().clone().unwrap_or_default();
    for m in mounts.iter_mut() {
        if m.destination() == std::path::Path::new("/sys/fs/cgroup") {
            let options = m.options().clone().unwrap_or_default();
            m.set_options(Some(writable(options)));
        }
    }
    let tmpfs = |dest: &str, mode: &str| -> Result<Mount> {
        MountBuilder::default()
            .destination(dest)
            .typ("tmpfs")
            .source("tmpfs")
            .options(
                ["rw", "rprivate", "nosuid", "nodev", mode, "tmpcopyup"]
                    .map(String::from)
                    .to_vec(),
            )
            .build()
            .map_err(|e| Error::internal(format!("{dest} mount: {e}")))
    };
    let own = ["/run", "/run/lock", "/tmp"];
    mounts.retain(|m| {
        !own.iter()
            .any(|d| m.destination() == std::path::Path::new(d))
    });
    mounts.push(tmpfs("/run", "mode=755")?);
    mounts.push(tmpfs("/run/lock", "mode=1777")?);
    mounts.push(tmpfs("/tmp", "mode=1777")?);
    spec.set_mounts(Some(mounts));
    Ok(())
}

/// Mount options with `ro` replaced by `rw`.
fn writable(options: Vec<String>) -> Vec<String> {
    let mut out: Vec<String> = options.into_iter().filter(|o| o != "ro").collect();
    if !out.iter().any(|o| o == "rw") {
        out.push("rw".into());
    }
    out
}

fn basename(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// `RTMIN+3`, `SIGRTMIN+3` and `37` (on Linux) all name the same signal.
fn normalize_signal(sig: &str) -> String {
    match super::signal_number(sig) {
        Some(n) if n == libc::SIGRTMIN() + 3 => SYSTEMD_STOP_SIGNAL.into(),
        _ => sig.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(args: &[&str]) -> Vec<String> {
        args.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn systemd_is_recognised_by_name_or_by_the_image() {
        let debian = cmd(&["/sbin/init"]);
        assert!(is_systemd_init(&debian, &debian, "SIGRTMIN+3"));
        assert!(is_systemd_init(&debian, &debian, "RTMIN+3"));
        assert!(is_systemd_init(&debian, &debian, "37"));
        // busybox init is /sbin/init too, but its image stops it with SIGUSR2.
        assert!(!is_systemd_init(&debian, &debian, "SIGUSR2"));
        // Another command than the image's is judged by its own name.
        assert!(is_systemd_init(
            &cmd(&["/lib/systemd/systemd", "--log-level=debug"]),
            &debian,
            "SIGUSR2"
        ));
        assert!(!is_systemd_init(
            &cmd(&["/bin/bash", "-l"]),
            &debian,
            "SIGRTMIN+3"
        ));
        assert!(!is_systemd_init(&[], &debian, "SIGRTMIN+3"));
    }

    #[test]
    fn stop_signals_fit_the_init() {
        let debian = cmd(&["/sbin/init"]);
        let rtmin3 = libc::SIGRTMIN() + 3;
        assert_eq!(stop_signal(&debian, &debian, "SIGRTMIN+3"), rtmin3);
        assert_eq!(stop_signal(&debian, &debian, "SIGUSR2"), libc::SIGUSR2);
        assert_eq!(
            stop_signal(&cmd(&["/lib/systemd/systemd"]), &debian, "SIGUSR2"),
            rtmin3
        );
        // The old shell init of the Debian image, asked for explicitly.
        assert_eq!(
            stop_signal(&cmd(&["/bin/bash", "-l"]), &debian, "SIGRTMIN+3"),
            libc::SIGHUP
        );
        assert_eq!(
            stop_signal(&cmd(&["sh"]), &debian, "SIGRTMIN+3"),
            libc::SIGHUP
        );
        assert_eq!(
            stop_signal(&cmd(&["sh", "-c", "sleep 1000"]), &debian, "SIGRTMIN+3"),
            libc::SIGTERM
        );
        assert_eq!(
            stop_signal(&cmd(&["httpd", "-f"]), &debian, "SIGRTMIN+3"),
            libc::SIGTERM
        );
        // An image signal that is no signal falls back to SIGTERM.
        assert_eq!(stop_signal(&debian, &debian, "SIGNOPE"), libc::SIGTERM);
    }

    #[test]
    fn the_spec_gets_tmpfs_and_a_writable_cgroup_mount() {
        let mut spec = vessel_container::spec::default_spec(&Default::default());
        apply(&mut spec).unwrap();
        apply(&mut spec).unwrap();
        let mounts = spec.mounts().clone().unwrap();
        let find = |d: &str| {
            mounts
                .iter()
                .filter(|m| m.destination() == std::path::Path::new(d))
                .collect::<Vec<_>>()
        };
        let cgroup = find("/sys/fs/cgroup");
        let opts = cgroup[0].options().clone().unwrap();
        assert!(opts.contains(&"rw".to_string()) && !opts.contains(&"ro".to_string()));
        for d in ["/run", "/run/lock", "/tmp"] {
            let m = find(d);
            assert_eq!(m.len(), 1, "{d} mounted once, also when applied twice");
            assert_eq!(m[0].typ().as_deref(), Some("tmpfs"));
            assert!(m[0]
                .options()
                .clone()
                .unwrap()
                .contains(&"tmpcopyup".into()));
        }
        // /run before /run/lock, or the second would be hidden.
        let pos = |d: &str| {
            mounts
                .iter()
                .position(|m| m.destination() == std::path::Path::new(d))
                .unwrap()
        };
        assert!(pos("/run") < pos("/run/lock"));
    }
}
