//! Capabilities: the bounding set is reduced while the process is still privileged, the other
//! sets are set after switching to the container user.

use std::str::FromStr;

use caps::{CapSet, Capability, CapsHashSet};
use oci_spec::runtime::{Capabilities, LinuxCapabilities};

use crate::error::{Error, Result};

/// Translates an OCI capability set, dropping capabilities the running kernel does not know
/// (a profile written for a newer kernel should still work).
fn to_caps(set: Option<&Capabilities>) -> Result<CapsHashSet> {
    let supported = caps::runtime::thread_all_supported();
    let mut out = CapsHashSet::new();
    for cap in set.into_iter().flatten() {
        let name = format!("CAP_{cap}");
        let c = Capability::from_str(&name)
            .map_err(|e| Error::Capabilities(format!("unknown capability {name}: {e}")))?;
        if supported.contains(&c) {
            out.insert(c);
        } else {
            tracing::debug!(capability = %name, "not supported by this kernel; skipped");
        }
    }
    Ok(out)
}

fn caps_err(what: &'static str) -> impl FnOnce(caps::errors::CapsError) -> Error {
    move |e| Error::Capabilities(format!("{what}: {e}"))
}

/// Drops every capability not in `caps.bounding` from the bounding set (needs CAP_SETPCAP, so
/// this runs before switching user).
pub(crate) fn limit_bounding(caps: &LinuxCapabilities) -> Result<()> {
    let keep = to_caps(caps.bounding().as_ref())?;
    for cap in caps::runtime::thread_all_supported() {
        if !keep.contains(&cap) {
            caps::drop(None, CapSet::Bounding, cap).map_err(caps_err("drop from bounding set"))?;
        }
    }
    Ok(())
}

/// Sets the permitted, inheritable, effective and ambient sets to exactly what the spec lists.
pub(crate) fn apply(caps: &LinuxCapabilities) -> Result<()> {
    let permitted = to_caps(caps.permitted().as_ref())?;
    let effective = to_caps(caps.effective().as_ref())?;
    let inheritable = to_caps(caps.inheritable().as_ref())?;
    let ambient = to_caps(caps.ambient().as_ref())?;
    // Order matters: the effective set must stay a subset of the permitted set, and the
    // ambient set of permitted ∩ inheritable.
    caps::set(None, CapSet::Inheritable, &inheritable).map_err(caps_err("set inheritable"))?;
    caps::set(
        None,
        CapSet::Effective,
        &effective.intersection(&permitted).copied().collect(),
    )
    .map_err(caps_err("set effective"))?;
    caps::set(None, CapSet::Permitted, &permitted).map_err(caps_err("set permitted"))?;
    caps::set(None, CapSet::Effective, &effective).map_err(caps_err("set effective"))?;
    caps::clear(None, CapSet::Ambient).map_err(caps_err("clear ambient"))?;
    for cap in ambient {
        if permitted.contains(&cap) && inheritable.contains(&cap) {
            caps::raise(None, CapSet::Ambient, cap).map_err(caps_err("raise ambient"))?;
        } else {
            tracing::warn!(capability = %cap, "ambient capability not permitted and inheritable; skipped");
        }
    }
    Ok(())
}

/// Drops every capability (for processes whose spec has no `capabilities`).
pub(crate) fn none() -> LinuxCapabilities {
    let empty = Capabilities::new();
    oci_spec::runtime::LinuxCapabilitiesBuilder::default()
        .bounding(empty.clone())
        .effective(empty.clone())
        .inheritable(empty.clone())
        .permitted(empty.clone())
        .ambient(empty)
        .build()
        .unwrap_or_default()
}
