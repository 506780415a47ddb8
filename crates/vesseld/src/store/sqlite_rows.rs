//! Rows of the SQLite store's `instances` table: how an instance is written and read back,
//! and the pick of a free isolated id range.

use rusqlite::{params, Connection};
use vessel_api::{Instance, InstanceIdmap, InstanceStatus, InstanceType};

use super::idmap::pick_range;
use super::{decode, encode, IdPool, Result, StoreError};

/// Instance fields kept as one JSON column.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub(super) struct InstanceMeta {
    #[serde(default)]
    pub(super) ssh_keys: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) storage: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) last_exit_reason: Option<String>,
    /// `boot.*` and `user.*` keys.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub(super) config: std::collections::BTreeMap<String, String>,
    /// The profiles the instance was made with.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(super) profiles: Vec<String>,
    /// The keys set on the instance itself.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub(super) own_config: std::collections::BTreeMap<String, String>,
    /// The networks and volumes its profiles gave it.
    #[serde(default, skip_serializing_if = "vessel_api::ProfileDevices::is_empty")]
    pub(super) from_profiles: vessel_api::ProfileDevices,
}

/// The lowest free isolated range of `pool`, given every range recorded on `conn` (call it
/// in an IMMEDIATE transaction that also records the range).
pub(super) fn free_range(conn: &Connection, pool: IdPool) -> Result<InstanceIdmap> {
    let used: Vec<(u32, u32)> = {
        let mut stmt = conn.prepare(
            "SELECT idmap_base, idmap_size FROM instances
             WHERE idmap_base IS NOT NULL AND idmap_size IS NOT NULL",
        )?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, u32>(0)?, r.get::<_, u32>(1)?)))?;
        rows.collect::<std::result::Result<_, _>>()?
    };
    let host_base = pick_range(&used, pool).ok_or_else(|| {
        StoreError::Exhausted(format!(
            "every host id range of {} ids above {} is taken",
            pool.size, pool.shared_base
        ))
    })?;
    Ok(InstanceIdmap {
        host_base,
        size: pool.size,
        isolated: true,
    })
}

/// Inserts an instance row (with its id range, if any) on `conn`.
pub(super) fn insert_instance(conn: &Connection, i: &Instance) -> Result<()> {
    let limits = encode("instances.limits", &i.limits)?;
    let command = encode("instances.command", &i.command)?;
    let environment = encode("instances.environment", &i.environment)?;
    let meta = encode(
        "instances.meta",
        &InstanceMeta {
            ssh_keys: i.ssh_keys.clone(),
            storage: i.storage.clone(),
            last_exit_reason: i.last_exit_reason.clone(),
            config: i.config.clone(),
            profiles: i.profiles.clone(),
            own_config: i.own_config.clone(),
            from_profiles: i.from_profiles.clone(),
        },
    )?;
    conn.execute(
        &format!(
            "INSERT INTO instances ({INSTANCE_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
        ),
        params![
            i.name,
            type_str(i.instance_type),
            i.status.as_str(),
            i.image,
            i.privileged,
            limits,
            command,
            environment,
            i.created_at,
            i.last_exit_code,
            i.error,
            meta,
            i.idmap.map(|m| m.host_base),
            i.idmap.map(|m| m.size),
            i.idmap.is_some_and(|m| m.isolated),
        ],
    )
    .map_err(|e| match e {
        rusqlite::Error::SqliteFailure(f, _)
            if f.code == rusqlite::ErrorCode::ConstraintViolation =>
        {
            StoreError::Exists(format!("instance {:?}", i.name))
        }
        e => e.into(),
    })?;
    Ok(())
}

pub(super) fn status_from(s: &str) -> Result<InstanceStatus> {
    decode("instances.status", &format!("\"{s}\""))
}

pub(super) fn type_str(t: InstanceType) -> &'static str {
    match t {
        InstanceType::Container => "container",
        InstanceType::Vm => "vm",
    }
}

pub(super) const INSTANCE_COLUMNS: &str =
    "name, type, status, image, privileged, limits, command, \
                                environment, created_at, last_exit_code, error, meta, \
                                idmap_base, idmap_size, idmap_isolated";

pub(super) fn instance_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<[Option<String>; 15]> {
    let mut out: [Option<String>; 15] = Default::default();
    for (i, slot) in out.iter_mut().enumerate() {
        *slot = match r.get_ref(i)? {
            rusqlite::types::ValueRef::Null => None,
            rusqlite::types::ValueRef::Integer(n) => Some(n.to_string()),
            rusqlite::types::ValueRef::Text(t) => Some(String::from_utf8_lossy(t).into_owned()),
            _ => None,
        };
    }
    Ok(out)
}

pub(super) fn instance_from_cols(c: [Option<String>; 15]) -> Result<Instance> {
    let [name, ty, status, image, privileged, limits, command, environment, created_at, code, error, meta, idmap_base, idmap_size, idmap_isolated] =
        c;
    let s = |v: Option<String>| v.unwrap_or_default();
    let meta = meta
        .map(|m| decode::<InstanceMeta>("instances.meta", &m))
        .transpose()?
        .unwrap_or_default();
    Ok(Instance {
        project: None,
        name: s(name),
        instance_type: if ty.as_deref() == Some("vm") {
            InstanceType::Vm
        } else {
            InstanceType::Container
        },
        status: status_from(&s(status))?,
        image: s(image),
        privileged: privileged.as_deref() == Some("1"),
        idmap: match (
            idmap_base.and_then(|b| b.parse().ok()),
            idmap_size.and_then(|n| n.parse().ok()),
        ) {
            (Some(host_base), Some(size)) => Some(InstanceIdmap {
                host_base,
                size,
                isolated: idmap_isolated.as_deref() == Some("1"),
            }),
            _ => None,
        },
        limits: decode("instances.limits", &s(limits))?,
        command: decode("instances.command", &s(command))?,
        environment: decode("instances.environment", &s(environment))?,
        config: meta.config,
        profiles: meta.profiles,
        own_config: meta.own_config,
        from_profiles: meta.from_profiles,
        ssh_keys: meta.ssh_keys,
        storage: meta.storage,
        created_at: s(created_at),
        last_exit_code: code.and_then(|c| c.parse().ok()),
        last_exit_reason: meta.last_exit_reason,
        error,
        state: None,
        vm: None,
        nics: Vec::new(),
        volumes: Vec::new(),
        root_disk: None,
        location: None,
    })
}
