//! The project a request is about, and the translation between the names a client of that
//! project uses and the qualified names the services keep (`project::qualify`). Handlers of
//! project-scoped endpoints qualify every name they pass on and show only their project's
//! objects, with the project taken off every name.

use vessel_api::{Event, Instance, Operation, DEFAULT_PROJECT};

use crate::error::Error;
use crate::project;

/// The project of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectScope(pub String);

impl ProjectScope {
    /// The project's name.
    pub fn name(&self) -> &str {
        &self.0
    }

    /// Whether it is `default`.
    pub fn is_default(&self) -> bool {
        self.0 == DEFAULT_PROJECT
    }

    /// The qualified name of this project's `name`. A client's name has no '.': only a
    /// qualified name has one, so a name with one (`acme.web` from a client of `default`)
    /// could otherwise reach into another project.
    pub fn q(&self, name: &str) -> Result<String, Error> {
        if name.contains('.') {
            return Err(Error::invalid(format!(
                "invalid name {:?}: names have no '.' (to reach another project's objects, \
                 give its project: --project NAME)",
                crate::error::truncated(name, crate::name::MAX_NAME + 1)
            )));
        }
        Ok(project::qualify(&self.0, name))
    }

    /// This project's name of `qualified`, if it is this project's.
    pub fn own(&self, qualified: &str) -> Option<String> {
        project::within(&self.0, qualified).map(str::to_string)
    }

    /// Text with this project's qualified names shown as the project's clients name them.
    pub fn text(&self, s: &str) -> String {
        if self.is_default() {
            s.to_string()
        } else {
            s.replace(&format!("{}.", self.0), "")
        }
    }

    /// A service error as this project's clients see it.
    pub fn error(&self, mut e: Error) -> Error {
        e.message = self.text(&e.message);
        e
    }

    /// An instance of this project as its clients see it.
    pub fn instance(&self, mut i: Instance) -> Instance {
        i.name = self.own(&i.name).unwrap_or(i.name);
        i.project = Some(self.0.clone());
        i.error = i.error.as_deref().map(|e| self.text(e));
        for nic in &mut i.nics {
            nic.network = self
                .own(&nic.network)
                .unwrap_or_else(|| nic.network.clone());
        }
        for v in &mut i.volumes {
            v.volume = self.own(&v.volume).unwrap_or_else(|| v.volume.clone());
        }
        i
    }

    /// A network of this project as its clients see it.
    pub fn network(&self, mut n: vessel_api::Network) -> vessel_api::Network {
        let own = |s: &mut String| {
            if let Some(o) = self.own(s) {
                *s = o;
            }
        };
        own(&mut n.name);
        for l in &mut n.leases {
            own(&mut l.instance);
        }
        for f in &mut n.forwards {
            own(&mut f.instance);
        }
        for lb in &mut n.load_balancers {
            lb.backends.iter_mut().for_each(own);
            for st in &mut lb.status {
                own(&mut st.instance);
            }
        }
        n.error = n.error.as_deref().map(|e| self.text(e));
        n
    }

    /// A volume of this project as its clients see it.
    pub fn volume(&self, mut v: vessel_api::StorageVolume) -> vessel_api::StorageVolume {
        v.name = self.own(&v.name).unwrap_or(v.name);
        v.source = v.source.map(|s| self.own(&s).unwrap_or(s));
        for a in &mut v.attached_to {
            a.instance = self.own(&a.instance).unwrap_or_else(|| a.instance.clone());
        }
        v
    }

    /// An export of this project as its clients see it: named as they name it; its URI
    /// keeps the name its protocol serves it under.
    pub fn export(&self, mut e: vessel_api::StorageExport) -> vessel_api::StorageExport {
        e.name = self.own(&e.name).unwrap_or(e.name);
        e.volume = self.own(&e.volume).unwrap_or(e.volume);
        e.error = e.error.as_deref().map(|m| self.text(m));
        e
    }

    /// The project an API path belongs to: the one its `?project=` names (images), else that
    /// of the object it names (an instance, network, volume, export, or the instance whose
    /// backup it is), else `default`.
    fn of_path(path: &str) -> &str {
        let (path, query) = path.split_once('?').unwrap_or((path, ""));
        if let Some(p) = query.split('&').find_map(|kv| {
            kv.strip_prefix(vessel_api::PROJECT_QUERY)?
                .strip_prefix('=')
        }) {
            return p;
        }
        let segs: Vec<&str> = path.split('/').collect();
        segs.windows(2)
            .find(|w| {
                matches!(
                    w[0],
                    "instances" | "networks" | "volumes" | "exports" | "backups"
                )
            })
            .map(|w| project::split(w[1]).0)
            .unwrap_or(DEFAULT_PROJECT)
    }

    /// Whether an operation is this project's (by the objects it works on).
    pub fn owns_operation(&self, op: &Operation) -> bool {
        let p = op
            .resources
            .iter()
            .map(|r| Self::of_path(r))
            .find(|p| *p != DEFAULT_PROJECT)
            .unwrap_or(DEFAULT_PROJECT);
        p == self.0
    }

    /// An operation of this project as its clients see it.
    pub fn operation(&self, mut op: Operation) -> Operation {
        if self.is_default() {
            return op;
        }
        op.description = self.text(&op.description);
        op.resources = op.resources.iter().map(|r| self.text(r)).collect();
        op.error = op.error.as_deref().map(|e| self.text(e));
        op
    }

    /// An event as this project's clients see it, if it is theirs.
    pub fn event(&self, mut ev: Event) -> Option<Event> {
        if let Some(op) = ev.operation.take() {
            if !self.owns_operation(&op) {
                return None;
            }
            ev.operation = Some(self.operation(op));
        }
        if let Some(src) = ev.source.take() {
            if Self::of_path(&src) != self.0 {
                return None;
            }
            ev.source = Some(self.text(&src));
        }
        Some(ev)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_text_of_a_project() {
        let acme = ProjectScope("acme".into());
        let default = ProjectScope(DEFAULT_PROJECT.into());
        assert_eq!(ProjectScope::of_path("/1.0/instances/acme.web"), "acme");
        assert_eq!(ProjectScope::of_path("/1.0/instances/web/exec"), "default");
        assert_eq!(ProjectScope::of_path("/1.0/images"), "default");
        assert_eq!(
            ProjectScope::of_path("/1.0/images/aliases/app:1.2"),
            "default"
        );
        assert_eq!(ProjectScope::of_path("/1.0/images/ab?project=acme"), "acme");
        assert_eq!(ProjectScope::of_path("/1.0/images?project=acme"), "acme");
        assert_eq!(ProjectScope::of_path("/1.0/backups/acme.web/b1"), "acme");
        assert_eq!(ProjectScope::of_path("/1.0/backups/web/b1"), "default");
        assert_eq!(ProjectScope::of_path("/1.0/backups?project=acme"), "acme");
        assert_eq!(
            acme.text("instance \"acme.web\" not found"),
            "instance \"web\" not found"
        );
        assert_eq!(
            default.text("instance \"acme.web\""),
            "instance \"acme.web\""
        );
        assert_eq!(acme.q("web").unwrap(), "acme.web");
        assert_eq!(default.q("web").unwrap(), "web");
        // A client's name with a '.' is refused: from default it would be another project's.
        for scope in [&default, &acme] {
            let e = scope.q("acme.web").unwrap_err();
            assert!(e.message.contains("names have no '.'"), "{}", e.message);
        }
        assert_eq!(acme.own("acme.web").as_deref(), Some("web"));
        assert_eq!(acme.own("web"), None);
        assert_eq!(default.own("acme.web"), None);
    }
}
