//! Profile changes a cluster member may have missed (it was stopped, or cut off from etcd,
//! or an instance was failed over to it from a member that was): noted in the member's own
//! store (`store::PROFILE_MISSED`) and applied from there, as a change of the profile is.

use std::collections::HashMap;

use super::profiles::apply;
use super::scope::ProjectScope;
use super::App;
use crate::error::Result;
use crate::profile;

/// How often the notes of missed profile changes are looked at.
const CATCH_UP_EVERY: std::time::Duration = std::time::Duration::from_secs(2);
/// The longest wait before a missed change that could not be applied is tried again.
const CATCH_UP_BACKOFF: std::time::Duration = std::time::Duration::from_secs(300);

/// Brings this member's instances up to the profile changes they may have missed, noted
/// in the store (`ProfileService::note_missed`): by the store when it reads etcd's profiles
/// again after this member was not watching (stopped, or cut off from etcd), and by a
/// failover (its instance was made with what its old member had). One that cannot be
/// applied yet is tried again, less and less often; a note outlives a restart.
pub(crate) async fn keep_catching_up(app: App) {
    use std::time::{Duration, Instant};
    // Per profile: when to try again and the wait after that.
    let mut later = HashMap::<String, (Instant, Duration)>::new();
    loop {
        tokio::time::sleep(CATCH_UP_EVERY).await;
        let missed = match app.profiles.missed() {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e.message, "the notes of missed profile changes not read");
                continue;
            }
        };
        later.retain(|name, _| missed.contains_key(name));
        for (name, m) in missed {
            if later.get(&name).is_some_and(|(at, _)| Instant::now() < *at) {
                continue;
            }
            match catch_up(&app, &name, &m).await {
                Ok(()) => {
                    later.remove(&name);
                }
                Err(e) => {
                    let wait = later
                        .get(&name)
                        .map_or(CATCH_UP_EVERY, |(_, w)| (*w * 2).min(CATCH_UP_BACKOFF));
                    if e.kind == crate::error::ErrorKind::Unavailable {
                        tracing::info!(profile = %name, reason = %e.message, "a missed profile change not applied yet; trying again");
                    } else {
                        tracing::warn!(profile = %name, error = %e.message, retry_in_s = wait.as_secs(), "a missed profile change not applied to the instances here; trying again");
                    }
                    later.insert(name, (Instant::now() + wait, wait));
                }
            }
        }
    }
}

/// Brings this member's instances using profile `name` (qualified) from what `m` says
/// they may have had to what the cluster holds now, as a change does: under the profile's
/// cluster lock (once this member is connected), read from etcd; the notes go under the
/// lock (a later note stays). Instances a change reached meanwhile have nothing left to
/// take; an instance that cannot take it keeps what it had and is named, as in a change.
async fn catch_up(app: &App, name: &str, m: &profile::Missed) -> Result<()> {
    let _serial = app.cluster.lock(&format!("profile/{name}")).await?;
    // Deleted meanwhile: no instance uses it.
    if let Some(now) = app.cluster.profile_now(name).await? {
        let scope = ProjectScope(crate::project::split(name).0.to_string());
        let c = apply(app, &scope, name, &m.before, now.into(), false).await?;
        let changed: Vec<&String> = c
            .instances
            .iter()
            .filter(|(_, ch)| !ch.is_empty())
            .map(|(n, _)| n)
            .collect();
        if c.errors.is_empty() {
            tracing::info!(profile = %name, instances = ?changed, "a profile change made while this member was away: its instances here took it");
        } else {
            tracing::warn!(profile = %name, instances = ?changed, errors = ?c.errors, "a profile change made while this member was away: the instances named in errors did not take it and keep what they had");
        }
    }
    app.profiles.caught_up(&m.notes)
}
