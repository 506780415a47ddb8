//! The list of REST endpoints. The OpenAPI document is generated from it and the daemon mounts
//! its routes from it, so the two cannot name different paths.

/// HTTP method of an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    /// GET
    Get,
    /// POST
    Post,
    /// PUT
    Put,
    /// PATCH
    Patch,
    /// DELETE
    Delete,
}

impl Method {
    /// Upper-case name as on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Get => "GET",
            Self::Post => "POST",
            Self::Put => "PUT",
            Self::Patch => "PATCH",
            Self::Delete => "DELETE",
        }
    }
}

/// Shape of a request or response body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body {
    /// No body.
    None,
    /// One JSON object of the named schema.
    Json(&'static str),
    /// A JSON array of the named schema.
    JsonList(&'static str),
    /// Raw bytes (`application/octet-stream`).
    Bytes,
    /// Plain text.
    Text,
    /// Newline-delimited JSON objects of the named schema, streamed.
    NdJson(&'static str),
    /// An upgraded connection carrying [`crate::stream`] frames.
    Upgrade,
    /// A WebSocket (for browsers); what its messages carry is in the endpoint's summary.
    /// Credentials may ride in the subprotocols: [`crate::WS_PROTOCOL`] and
    /// `vessel.token.TOKEN`.
    WebSocket,
}

/// One query parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Query {
    /// Name.
    pub name: &'static str,
    /// What it does.
    pub description: &'static str,
    /// Whether the request is invalid without it.
    pub required: bool,
}

/// `here`: a member asking another for the instances using its profiles.
const PROFILE_HERE: Query = Query {
    name: "here",
    description: "1: the instances of this member alone in `used_by` (what one member asks \
                  another)",
    required: false,
};

/// What an identity may do. Each role may do everything the roles before it may.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads its project: lists, details, state, events, operations.
    Viewer,
    /// A viewer that also uses its project's instances: exec, console, files, logs,
    /// start and stop.
    User,
    /// A user that also manages its project: instances, images, volumes, snapshots,
    /// networks, exports and backups, and reads its project's audit log.
    Operator,
    /// Everything, in every project, and the server itself: pools, identities, settings.
    Admin,
    /// Another member of the cluster speaking for itself (its own certificate, not a
    /// request it forwards for someone): what an administrator may, and the calls between
    /// members (a live move's). No identity or token is given this role.
    Member,
}

impl Role {
    /// Every role an identity or token may be given, weakest first ([`Role::Member`] is
    /// the cluster's members' own).
    pub const ALL: [Role; 4] = [Role::Viewer, Role::User, Role::Operator, Role::Admin];

    /// The name on the wire and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Viewer => "viewer",
            Self::User => "user",
            Self::Operator => "operator",
            Self::Admin => "admin",
            Self::Member => "member",
        }
    }

    /// The role named `s`, or an error that lists the roles there are.
    pub fn parse(s: &str) -> Result<Role, String> {
        Self::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| format!("no role {s:?}; the roles are viewer, user, operator and admin"))
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What an endpoint reaches: one project's objects, or the server as a whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    /// Objects of the caller's project; an identity bound to a project reaches no other.
    Project,
    /// The server itself (pools, identities, settings): shared by every project.
    Server,
}

impl Scope {
    /// The name in the OpenAPI document.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Project => "project",
            Self::Server => "server",
        }
    }
}

/// One REST endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Endpoint {
    /// Stable identifier, also the OpenAPI `operationId`.
    pub id: &'static str,
    /// HTTP method.
    pub method: Method,
    /// Path with `{param}` placeholders (the same syntax the daemon's router uses).
    pub path: &'static str,
    /// One-line summary.
    pub summary: &'static str,
    /// Query parameters.
    pub query: &'static [Query],
    /// Request body.
    pub request: Body,
    /// Success status code.
    pub status: u16,
    /// The weakest role that may call it (the unix socket is host root: every role).
    pub role: Role,
    /// What it reaches.
    pub scope: Scope,
    /// Success response body.
    pub response: Body,
}

/// Largest JSON request body any endpoint takes: every request fits many times over.
pub const MAX_JSON_BODY: usize = 1 << 20;
/// Largest body of an endpoint that takes none (what a client may send by mistake).
pub const MAX_EMPTY_BODY: usize = 64 << 10;

impl Endpoint {
    /// The most bytes the server reads of a request body for this endpoint before answering
    /// 413, or `None` for an upload that is streamed to disk and bounded by its handler.
    pub const fn max_body(&self) -> Option<usize> {
        match self.request {
            Body::Bytes => None,
            Body::Json(_) | Body::JsonList(_) | Body::NdJson(_) => Some(MAX_JSON_BODY),
            Body::None | Body::Text | Body::Upgrade | Body::WebSocket => Some(MAX_EMPTY_BODY),
        }
    }
}

const FORMAT_RECURSION: Query = Query {
    name: "recursion",
    description: "1 to include live state of every item",
    required: false,
};
const PLAN_HEADROOM: Query = Query {
    name: "headroom",
    description: "headroom above the p95 in percent (default 20)",
    required: false,
};
const PATH_QUERY: Query = Query {
    name: "path",
    description: "absolute path inside the instance",
    required: true,
};

/// Every endpoint of the API.
pub const ENDPOINTS: &[Endpoint] = &[
    Endpoint {
        id: "server_info",
        method: Method::Get,
        path: "/1.0",
        summary: "Daemon version and host facts",
        query: &[],
        request: Body::None,
        status: 200,
        role: Role::Viewer,
        scope: Scope::Server,
        response: Body::Json("ServerInfo"),
    },
    Endpoint {
        id: "instances_list",
        method: Method::Get,
        path: "/1.0/instances",
        summary: "List instances",
        query: &[
            FORMAT_RECURSION,
            Query {
                name: "all-projects",
                description: "1 for every project's instances, each with its project (admins)",
                required: false,
            },
        ],
        request: Body::None,
        status: 200,
        role: Role::Viewer,
        scope: Scope::Project,
        response: Body::JsonList("Instance"),
    },
    Endpoint {
        id: "instances_create",
        method: Method::Post,
        path: "/1.0/instances",
        summary: "Create (and by default start) an instance; returns an operation",
        query: &[Query {
            name: "target",
            description: "On a member of a cluster: the member to make it on (online); without \
                          it the scheduler chooses from its limits, its `cluster.group` and \
                          the members' room, by the cluster's policy",
            required: false,
        }],
        request: Body::Json("InstanceCreate"),
        status: 202,
        role: Role::Operator,
        scope: Scope::Project,
        response: Body::Json("Operation"),
    },
    Endpoint {
        id: "instance_get",
        method: Method::Get,
        path: "/1.0/instances/{name}",
        summary: "One instance with its live state",
        query: &[],
        request: Body::None,
        status: 200,
        role: Role::Viewer,
        scope: Scope::Project,
        response: Body::Json("Instance"),
    },
    Endpoint {
        id: "instance_delete",
        method: Method::Delete,
        path: "/1.0/instances/{name}",
        summary: "Delete an instance (running ones only with force=1); returns an operation",
        query: &[
            Query {
                name: "force",
                description: "1 to stop a running instance first",
                required: false,
            },
            Query {
                name: "volumes",
                description: "1 to delete the volumes attached to it too (refused for a \
                              volume another instance also has)",
                required: false,
            },
        ],
        request: Body::None,
        status: 202,
        role: Role::Operator,
        scope: Scope::Project,
        response: Body::Json("Operation"),
    },
    Endpoint {
        id: "instance_state_get",
        method: Method::Get,
        path: "/1.0/instances/{name}/state",
        summary: "Live cpu, memory and pids usage",
        query: &[],
        request: Body::None,
        status: 200,
        role: Role::Viewer,
        scope: Scope::Project,
        response: Body::Json("InstanceState"),
    },
    Endpoint {
        id: "instance_state_put",
        method: Method::Put,
        path: "/1.0/instances/{name}/state",
        summary: "Start, stop, restart, pause or resume; returns an operation",
        query: &[],
        request: Body::Json("StateChange"),
        status: 202,
        role: Role::User,
        scope: Scope::Project,
        response: Body::Json("Operation"),
    },
    Endpoint {
        id: "instance_exec",
        method: Method::Post,
        path: "/1.0/instances/{name}/exec",
        summary:
            "Run a command; the connection upgrades to a framed stream ending in its exit code",
        query: &[],
        request: Body::Json("ExecRequest"),
        status: 101,
        role: Role::User,
        scope: Scope::Project,
        response: Body::Upgrade,
    },
    Endpoint {
        id: "instance_console",
        method: Method::Get,
        path: "/1.0/instances/{name}/console",
        summary: "Attach to the console; the connection upgrades to a framed stream",
        query: &[],
        request: Body::None,
        status: 101,
        role: Role::User,
        scope: Scope::Project,
        response: Body::Upgrade,
    },
    Endpoint {
        id: "instance_history",
        method: Method::Get,
        path: "/1.0/instances/{name}/history",
        summary: "Recent cpu and memory use of an instance, sampled by the daemon (bounded; for graphs)",
        query: &[],
        request: Body::None,
        status: 200,
        role: Role::Viewer,
        scope: Scope::Project,
        response: Body::Json("InstanceHistory"),
    },
    Endpoint {
        id: "instance_exec_websocket",
        method: Method::Get,
        path: "/1.0/instances/{name}/exec/websocket",
        summary: "Exec over a WebSocket (browsers): the first message is the exec request's JSON, then binary messages of one stream frame each, both ways",
        query: &[],
        request: Body::None,
        status: 101,
        role: Role::User,
        scope: Scope::Project,
        response: Body::WebSocket,
    },
    Endpoint {
        id: "instance_console_websocket",
        method: Method::Get,
        path: "/1.0/instances/{name}/console/websocket",
        summary: "The console over a WebSocket (browsers): binary messages of one stream frame each, both ways",
        query: &[],
        request: Body::None,
        status: 101,
        role: Role::User,
        scope: Scope::Project,
        response: Body::WebSocket,
    },
    Endpoint {
        id: "instance_vnc_websocket",
        method: Method::Get,
        path: "/1.0/instances/{name}/vnc/websocket",
        summary: "A VM's display over a WebSocket (browsers, noVNC): binary messages of the raw VNC (RFB) stream",
        query: &[],
        request: Body::None,
        status: 101,
        role: Role::User,
        scope: Scope::Project,
        response: Body::WebSocket,
    },
    Endpoint {
        id: "instance_vnc",
        method: Method::Get,
        path: "/1.0/instances/{name}/vnc",
        summary: "A VM's display: the connection upgrades (Upgrade: vessel-raw/1) to its raw VNC (RFB) stream",
        query: &[],
        request: Body::None,
        status: 101,
        role: Role::User,
        scope: Scope::Project,
        response: Body::Upgrade,
    },
    Endpoint {
        id: "instance_logs",
        method: Method::Get,
        path: "/1.0/instances/{name}/logs",
        summary: "Console output recorded by the instance's monitor (or a VM's console)",
        query: &[
            Query {
                name: "tail",
                description: "only the last N lines",
                required: false,
            },
            Query {
                name: "follow",
                description: "1 to keep sending new output until the instance stops",
                required: false,
            },
        ],
        request: Body::None,
        status: 200,
        role: Role::User,
        scope: Scope::Project,
        response: Body::Text,
    },
    Endpoint {
        id: "instance_file_get",
        method: Method::Get,
        path: "/1.0/instances/{name}/files",
        summary: "Read a file inside the instance; on a directory, its entries as a JSON list of FileEntry (header X-Vessel-Type: directory)",
        query: &[PATH_QUERY],
        request: Body::None,
        status: 200,
        role: Role::User,
        scope: Scope::Project,
        response: Body::Bytes,
    },
    Endpoint {
        id: "instance_file_put",
        method: Method::Put,
        path: "/1.0/instances/{name}/files",
        summary: "Write a file inside the instance, or make a directory or a symbolic link (the body is the link's target)",
        query: &[
            PATH_QUERY,
            Query {
                name: "type",
                description: "file (default), directory or symlink",
                required: false,
            },
            Query {
                name: "parents",
                description: "1 to make missing parent directories (0755, owned by root)",
                required: false,
            },
            Query {
                name: "mode",
                description: "octal permission bits (default 0644)",
                required: false,
            },
            Query {
                name: "uid",
                description: "owner inside the instance (default 0)",
                required: false,
            },
            Query {
                name: "gid",
                description: "group inside the instance (default 0)",
                required: false,
            },
        ],
        request: Body::Bytes,
        status: 200,
        role: Role::User,
        scope: Scope::Project,
        response: Body::Json("FileInfo"),
    },
    Endpoint {
        id: "instance_root_disk",
        method: Method::Put,
        path: "/1.0/instances/{name}/root-disk",
        summary: "Change a container's root disk size (limits.disk); returns an operation",
        query: &[],
        request: Body::Json("RootDiskResize"),
        status: 202,
        role: Role::Operator,
        scope: Scope::Project,
        response: Body::Json("Operation"),
    },
    Endpoint {
        id: "instance_config_get",
        method: Method::Get,
        path: "/1.0/instances/{name}/config",
        summary: "An instance's configuration: limits, environment, boot and user keys",
        query: &[],
        request: Body::None,
        status: 200,
        role: Role::Viewer,
        scope: Scope::Project,
        response: Body::Json("InstanceConfig"),
    },
    Endpoint {
        id: "instance_config_update",
        method: Method::Patch,
        path: "/1.0/instances/{name}/config",
        summary: "Set and unset configuration keys; live where the instance allows, else at its \
                  next start (the answer says which, key by key)",
        query: &[],
        request: Body::Json("InstanceConfigPatch"),
        status: 200,
        role: Role::Operator,
        scope: Scope::Project,
        response: Body::Json("InstanceConfigChange"),
    },
    Endpoint {
        id: "instance_copy",
        method: Method::Post,
        path: "/1.0/instances/{name}/copy",
        summary: "Make a new instance as this one is now (a running one paused while its \
                  files are copied) or as one of its snapshots has it; returns an operation",
        query: &[],
        request: Body::Json("InstanceCopy"),
        status: 202,
        role: Role::Operator,
        scope: Scope::Project,
        response: Body::Json("Operation"),
    },
    Endpoint {
        id: "instance_rename",
        method: Method::Post,
        path: "/1.0/instances/{name}/rename",
        summary: "Give a stopped instance a new name, with its files, snapshots, volume \
                  attachments, NICs and DNS name; returns an operation",
        query: &[],
        request: Body::Json("InstanceRename"),
        status: 202,
        role: Role::Operator,
        scope: Scope::Project,
        response: Body::Json("Operation"),
    },
    Endpoint {
        id: "instance_move",
        method: Method::Post,
        path: "/1.0/instances/{name}/move",
        summary: "Move a stopped instance's root disk into a storage pool (from its own \
                  directory or another pool); returns an operation",
        query: &[],
        request: Body::Json("InstanceMove"),
        status: 202,
        role: Role::Operator,
        scope: Scope::Project,
        response: Body::Json("Operation"),
    },
    Endpoint {
        id: "instance_migrate",
        method: Method::Post,
        path: "/1.0/instances/{name}/migrate",
        summary: "Move an instance to another member of the cluster: a running VM live \
                  (disks mirrored, memory sent, a short pause), anything else cold (stopped \
                  if it runs, made there from its archive, started if it ran); removed \
                  here; returns an operation",
        query: &[],
        request: Body::Json("InstanceMigrate"),
        status: 202,
        role: Role::Operator,
        scope: Scope::Project,
        response: Body::Json("Operation"),
    },
    Endpoint {
        id: "instance_incoming",
        method: Method::Post,
        path: "/1.0/instances/{name}/incoming",
        summary: "Between members: makes the instance a VM \
                  moves live from another member, stopped, and starts its QEMU waiting for \
                  the state (memory, devices) and its disks",
        query: &[],
        request: Body::Json("MigrationIncoming"),
        status: 200,
        role: Role::Member,
        scope: Scope::Project,
        response: Body::None,
    },
    Endpoint {
        id: "instance_incoming_stream",
        method: Method::Get,
        path: "/1.0/instances/{name}/incoming/{stream}",
        summary: "Between members: the connection upgrades (Upgrade: vessel-raw/1) to the \
                  waiting QEMU's `state` (memory and devices) or `disks` (NBD) socket",
        query: &[],
        request: Body::None,
        status: 101,
        role: Role::Member,
        scope: Scope::Project,
        response: Body::Upgrade,
    },
    Endpoint {
        id: "instance_incoming_end",
        method: Method::Put,
        path: "/1.0/instances/{name}/incoming",
        summary: "Between members: the end of a live move here — the guest runs here (once \
                  the whole state is in), or the copy here goes",
        query: &[],
        request: Body::Json("MigrationEnd"),
        status: 200,
        role: Role::Member,
        scope: Scope::Project,
        response: Body::None,
    },
    Endpoint {
        id: "instance_export",
        method: Method::Get,
        path: "/1.0/instances/{name}/export",
        summary: "The instance as one portable archive: its record and data as a backup, \
                  with every chunk it names (a running instance is paused while read)",
        query: &[Query {
            name: "snapshots",
            description: "1: its snapshots too (copies of a container's files, a VM's disk \
                          snapshots; pool snapshots and saved VM state stay behind)",
            required: false,
        }],
        request: Body::None,
        status: 200,
        role: Role::Operator,
        scope: Scope::Project,
        response: Body::Bytes,
    },
    Endpoint {
        id: "archives_import",
        method: Method::Post,
        path: "/1.0/archives",
        summary: "Make an instance from an archive of `export` (the body), every entry and \
                  chunk checked before anything is made; returns an operation",
        query: &[
            Query {
                name: "name",
                description: "the new instance's name (default: the exported one's)",
                required: false,
            },
            Query {
                name: "start",
                description: "1 to start it once made",
                required: false,
            },
        ],
        request: Body::Bytes,
        status: 202,
        role: Role::Operator,
        scope: Scope::Project,
        response: Body::Json("Operation"),
    },
    Endpoint {
        id: "instance_snapshots_list",
        method: Method::Get,
        path: "/1.0/instances/{name}/snapshots",
        summary: "The instance's snapshots, oldest first",
        query: &[],
        request: Body::None,
        status: 200,
        role: Role::Viewer,
        scope: Scope::Project,
        response: Body::JsonList("InstanceSnapshot"),
    },
    Endpoint {
        id: "instance_snapshot_create",
        method: Method::Post,
        path: "/1.0/instances/{name}/snapshots",
        summary: "Snapshot the instance (a running container's cgroup frozen meanwhile; a \
                  running VM's memory and devices too with stateful); returns an operation",
        query: &[],
        request: Body::Json("InstanceSnapshotCreate"),
        status: 202,
        role: Role::Operator,
        scope: Scope::Project,
        response: Body::Json("Operation"),
    },
    Endpoint {
        id: "instance_snapshot_get",
        method: Method::Get,
        path: "/1.0/instances/{name}/snapshots/{snapshot}",
        summary: "One snapshot of the instance",
        query: &[],
        request: Body::None,
        status: 200,
        role: Role::Viewer,
        scope: Scope::Project,
        response: Body::Json("InstanceSnapshot"),
    },
    Endpoint {
        id: "instance_snapshot_delete",
        method: Method::Delete,
        path: "/1.0/instances/{name}/snapshots/{snapshot}",
        summary: "Delete a snapshot of the instance; returns an operation",
        query: &[],
        request: Body::None,
        status: 202,
        role: Role::Operator,
        scope: Scope::Project,
        response: Body::Json("Operation"),
    },
    Endpoint {
        id: "instance_snapshot_restore",
        method: Method::Post,
        path: "/1.0/instances/{name}/snapshots/{snapshot}/restore",
        summary: "Put the instance back as the snapshot has it (a running instance only with \
                  force, or into the running guest for a stateful snapshot); returns an \
                  operation",
        query: &[],
        request: Body::Json("InstanceSnapshotRestore"),
        status: 202,
        role: Role::Operator,
        scope: Scope::Project,
        response: Body::Json("Operation"),
    },
    Endpoint {
        id: "backups_list",
        method: Method::Get,
        path: "/1.0/backups",
        summary: "The project's backups (of one instance with ?instance=), oldest first",
        query: &[
            Query {
                name: "instance",
                description: "only this instance's backups",
                required: false,
            },
            Query {
                name: "store",
                description: "a backup store directory on the host (admins)",
                required: false,
            },
        ],
        request: Body::None,
        status: 200,
        role: Role::Viewer,
        scope: Scope::Project,
        response: Body::JsonList("Backup"),
    },
    Endpoint {
        id: "instance_backup",
        method: Method::Post,
        path: "/1.0/instances/{name}/backups",
        summary: "Back the instance up (a running one is paused while its files or disks are \
                  read; files unchanged since its last backup are not read again); returns \
                  an operation whose resources name the backup",
        query: &[],
        request: Body::Json("BackupCreate"),
        status: 202,
        role: Role::Operator,
        scope: Scope::Project,
        response: Body::Json("Operation"),
    },
    Endpoint {
        id: "backup_get",
        method: Method::Get,
        path: "/1.0/backups/{instance}/{id}",
        summary: "One backup",
        query: &[Query {
            name: "store",
            description: "a backup store directory on the host (admins)",
            required: false,
        }],
        request: Body::None,
        status: 200,
        role: Role::Viewer,
        scope: Scope::Project,
        response: Body::Json("Backup"),
    },
    Endpoint {
        id: "backup_delete",
        method: Method::Delete,
        path: "/1.0/backups/{instance}/{id}",
        summary: "Delete a backup (its chunks are freed by the next gc)",
        query: &[Query {
            name: "store",
            description: "a backup store directory on the host (admins)",
            required: false,
        }],
        request: Body::None,
        status: 200,
        role: Role::Operator,
        scope: Scope::Project,
        response: Body::Json("Backup"),
    },
    Endpoint {
        id: "backup_restore",
        method: Method::Post,
        path: "/1.0/backups/{instance}/{id}/restore",
        summary: "Make an instance from a backup, every chunk checked as it is read (nothing \
                  is left of a restore that fails); returns an operation",
        query: &[],
        request: Body::Json("BackupRestore"),
        status: 202,
        role: Role::Operator,
        scope: Scope::Project,
        response: Body::Json("Operation"),
    },
    Endpoint {
        id: "backup_export",
        method: Method::Get,
        path: "/1.0/backups/{instance}/{id}/export",
        summary: "A backup as one portable archive (its index and every chunk it names), \
                  which `POST /1.0/archives` makes an instance from on this or another host",
        query: &[Query {
            name: "store",
            description: "a backup store directory on the host (admins)",
            required: false,
        }],
        request: Body::None,
        status: 200,
        role: Role::Operator,
        scope: Scope::Project,
        response: Body::Bytes,
    },
    Endpoint {
        id: "backups_verify",
        method: Method::Post,
        path: "/1.0/backups/verify",
        summary: "Re-read and re-hash every chunk of the project's backups (or one \
                  instance's), marking the damaged ones; returns an operation",
        query: &[],
        request: Body::Json("BackupVerify"),
        status: 202,
        role: Role::Operator,
        scope: Scope::Project,
        response: Body::Json("Operation"),
    },
    Endpoint {
        id: "backups_prune",
        method: Method::Post,
        path: "/1.0/backups/prune",
        summary: "Delete an instance's backups a retention policy does not keep",
        query: &[],
        request: Body::Json("BackupPrune"),
        status: 200,
        role: Role::Operator,
        scope: Scope::Project,
        response: Body::Json("BackupPruned"),
    },
    Endpoint {
        id: "backups_gc",
        method: Method::Post,
        path: "/1.0/backups/gc",
        summary: "Free the chunks no backup names (safe beside backups being taken)",
        query: &[],
        request: Body::Json("BackupGc"),
        status: 200,
        role: Role::Admin,
        scope: Scope::Server,
        response: Body::Json("BackupGcReport"),
    },
    Endpoint {
        id: "profiles_list",
        method: Method::Get,
        path: "/1.0/profiles",
        summary: "The project's profiles, with the instances using each (in a cluster, on \
                  every member that answers)",
        query: &[PROFILE_HERE],
        request: Body::None,
        status: 200,
        role: Role::Viewer,
        scope: Scope::Project,
        response: Body::JsonList("Profile"),
    },
    Endpoint {
        id: "profiles_create",
        method: Method::Post,
        path: "/1.0/profiles",
        summary: "Make a profile: instance keys and networks, checked before it is kept",
        query: &[],
        request: Body::Json("Profile"),
        status: 201,
        role: Role::Operator,
        scope: Scope::Project,
        response: Body::Json("Profile"),
    },
    Endpoint {
        id: "profile_get",
        method: Method::Get,
        path: "/1.0/profiles/{name}",
        summary: "One profile, with the instances using it (in a cluster, on every member \
                  that answers)",
        query: &[PROFILE_HERE],
        request: Body::None,
        status: 200,
        role: Role::Viewer,
        scope: Scope::Project,
        response: Body::Json("Profile"),
    },
    Endpoint {
        id: "profile_put",
        method: Method::Put,
        path: "/1.0/profiles/{name}",
        summary: "Replace a profile's keys and networks; the keys reach every instance using \
                  it (live where the instance allows)",
        query: &[],
        request: Body::Json("ProfilePut"),
        status: 200,
        role: Role::Operator,
        scope: Scope::Project,
        response: Body::Json("ProfileChange"),
    },
    Endpoint {
        id: "profile_apply",
        method: Method::Post,
        path: "/1.0/profiles/{name}/apply",
        summary: "Between members: a change of the profile made on another member, taken by \
                  this member's instances using it",
        query: &[],
        request: Body::Json("ProfileApply"),
        status: 200,
        role: Role::Member,
        scope: Scope::Project,
        response: Body::Json("ProfileChange"),
    },
    Endpoint {
        id: "profile_delete",
        method: Method::Delete,
        path: "/1.0/profiles/{name}",
        summary: "Delete a profile no instance uses",
        query: &[],
        request: Body::None,
        status: 200,
        role: Role::Operator,
        scope: Scope::Project,
        response: Body::Json("Profile"),
    },
    Endpoint {
        id: "instance_publish",
        method: Method::Post,
        path: "/1.0/instances/{name}/publish",
        summary: "Turn a stopped instance into a new image; returns an operation",
        query: &[],
        request: Body::Json("InstancePublish"),
        status: 202,
        role: Role::Operator,
        scope: Scope::Project,
        response: Body::Json("Operation"),
    },
    Endpoint {
        id: "images_list",
        method: Method::Get,
        path: "/1.0/images",
        summary: "List images",
        query: &[],
        request: Body::None,
        status: 200,
        role: Role::Viewer,
        scope: Scope::Project,
        response: Body::JsonList("Image"),
    },
    Endpoint {
        id: "images_build",
        method: Method::Post,
        path: "/1.0/images",
        summary: "Build an image; returns an operation",
        query: &[],
        request: Body::Json("ImageBuild"),
        status: 202,
        role: Role::Operator,
        scope: Scope::Project,
        response: Body::Json("Operation"),
    },
    Endpoint {
        id: "image_alias_add",
        method: Method::Post,
        path: "/1.0/images/{image}/aliases",
        summary: "Give an image another alias",
        query: &[],
        request: Body::Json("ImageAlias"),
        status: 200,
        role: Role::Operator,
        scope: Scope::Project,
        response: Body::Json("Image"),
    },
    Endpoint {
        id: "image_alias_delete",
        method: Method::Delete,
        path: "/1.0/images/aliases/{alias}",
        summary: "Remove an alias (the image stays)",
        query: &[],
        request: Body::None,
        status: 200,
        role: Role::Operator,
        scope: Scope::Project,
        response: Body::Json("Image"),
    },
    Endpoint {
        id: "images_pull",
        method: Method::Post,
        path: "/1.0/images/pull",
        summary: "Pull an image from an OCI distribution registry; returns an operation",
        query: &[],
        request: Body::Json("ImagePull"),
        status: 202,
        role: Role::Operator,
        scope: Scope::Project,
        response: Body::Json("Operation"),
    },
    Endpoint {
        id: "images_import",
        method: Method::Post,
        path: "/1.0/images/import",
        summary: "Import an OCI layout, docker/podman save archive, qcow2, raw disk or ISO (the body); returns an operation",
        query: &[
            Query {
                name: "alias",
                description: "alias to give the image",
                required: false,
            },
            Query {
                name: "vm",
                description: "1 when the body is a raw disk image for a VM",
                required: false,
            },
        ],
        request: Body::Bytes,
        status: 202,
        role: Role::Operator,
        scope: Scope::Project,
        response: Body::Json("Operation"),
    },
    Endpoint {
        id: "image_export",
        method: Method::Get,
        path: "/1.0/images/{image}/export",
        summary: "The image as an OCI archive that podman load accepts (containers), or a bundle of its files (VMs)",
        query: &[],
        request: Body::None,
        status: 200,
        // Its every file (a published instance's included), as a file pull is a user's.
        role: Role::User,
        scope: Scope::Project,
        response: Body::Bytes,
    },
    Endpoint {
        id: "image_get",
        method: Method::Get,
        path: "/1.0/images/{image}",
        summary: "One image, by alias or fingerprint",
        query: &[],
        request: Body::None,
        status: 200,
        role: Role::Viewer,
        scope: Scope::Project,
        response: Body::Json("Image"),
    },
    Endpoint {
        id: "image_delete",
        method: Method::Delete,
        path: "/1.0/images/{image}",
        summary: "Delete an image no instance uses",
        query: &[],
        request: Body::None,
        status: 200,
        role: Role::Operator,
        scope: Scope::Project,
        response: Body::Json("Image"),
    },
    Endpoint {
        id: "operations_list",
        method: Method::Get,
        path: "/1.0/operations",
        summary: "List operations",
        query: &[],
        request: Body::None,
        status: 200,
        role: Role::Viewer,
        scope: Scope::Project,
        response: Body::JsonList("Operation"),
    },
    Endpoint {
        id: "operation_get",
        method: Method::Get,
        path: "/1.0/operations/{id}",
        summary: "One operation",
        query: &[],
        request: Body::None,
        status: 200,
        role: Role::Viewer,
        scope: Scope::Project,
        response: Body::Json("Operation"),
    },
    Endpoint {
        id: "operation_cancel",
        method: Method::Delete,
        path: "/1.0/operations/{id}",
        summary: "Cancel an operation that allows it",
        query: &[],
        request: Body::None,
        status: 200,
        role: Role::Operator,
        scope: Scope::Project,
        response: Body::Json("Operation"),
    },
    Endpoint {
        id: "operation_wait",
        method: Method::Get,
        path: "/1.0/operations/{id}/wait",
        summary: "Wait for an operation to end (or the timeout), then return it",
        query: &[Query {
            name: "timeout",
            description: "seconds to wait at most (default: until it ends)",
            required: false,
        }],
        request: Body::None,
        status: 200,
        role: Role::Viewer,
        scope: Scope::Project,
        response: Body::Json("Operation"),
    },
    Endpoint {
        id: "pools_list",
        method: Method::Get,
        path: "/1.0/storage/pools",
        summary: "List storage pools",
        query: &[],
        request: Body::None,
        status: 200,
        role: Role::Viewer,
        scope: Scope::Server,
        response: Body::JsonList("StoragePool"),
    },
    Endpoint {
        id: "pools_create",
        method: Method::Post,
        path: "/1.0/storage/pools",
        summary: "Create a storage pool (formats its sources); returns an operation",
        query: &[],
        request: Body::Json("PoolCreate"),
        status: 202,
        role: Role::Admin,
        scope: Scope::Server,
        response: Body::Json("Operation"),
    },
    Endpoint {
        id: "pool_get",
        method: Method::Get,
        path: "/1.0/storage/pools/{pool}",
        summary: "One storage pool with its capacity and usage",
        query: &[],
        request: Body::None,
        status: 200,
        role: Role::Viewer,
        scope: Scope::Server,
        response: Body::Json("StoragePool"),
    },
    Endpoint {
        id: "pool_delete",
        method: Method::Delete,
        path: "/1.0/storage/pools/{pool}",
        summary: "Delete an empty storage pool (files Vessel created for it are removed)",
        query: &[],
        request: Body::None,
        status: 200,
        role: Role::Admin,
        scope: Scope::Server,
        response: Body::Json("StoragePool"),
    },
    Endpoint {
        id: "pool_status",
        method: Method::Get,
        path: "/1.0/storage/pools/{pool}/status",
        summary: "Health of a pool: members, rebuild progress, last scrub",
        query: &[],
        request: Body::None,
        status: 200,
        role: Role::Viewer,
        scope: Scope::Server,
        response: Body::Json("PoolStatus"),
    },
    Endpoint {
        id: "pool_repair",
        method: Method::Post,
        path: "/1.0/storage/pools/{pool}/repair",
        summary: "Fail or replace a raid member, or scrub; returns an operation",
        query: &[],
        request: Body::Json("PoolRepair"),
        status: 202,
        role: Role::Admin,
        scope: Scope::Server,
        response: Body::Json("Operation"),
    },
    Endpoint {
        id: "volumes_list",
        method: Method::Get,
        path: "/1.0/storage/pools/{pool}/volumes",
        summary: "List the volumes of a pool",
        query: &[],
        request: Body::None,
        status: 200,
        role: Role::Viewer,
        scope: Scope::Project,
        response: Body::JsonList("StorageVolume"),
    },
    Endpoint {
        id: "volumes_create",
        method: Method::Post,
        path: "/1.0/storage/pools/{pool}/volumes",
        summary: "Create a volume, empty or cloned from a snapshot; returns an operation",
        query: &[],
        request: Body::Json("VolumeCreate"),
        status: 202,
        role: Role::Operator,
        scope: Scope::Project,
        response: Body::Json("Operation"),
    },
    Endpoint {
        id: "volume_get",
        method: Method::Get,
        path: "/1.0/storage/pools/{pool}/volumes/{name}",
        summary: "One volume with its usage, snapshots and attachments",
        query: &[],
        request: Body::None,
        status: 200,
        role: Role::Viewer,
        scope: Scope::Project,
        response: Body::Json("StorageVolume"),
    },
    Endpoint {
        id: "volume_update",
        method: Method::Patch,
        path: "/1.0/storage/pools/{pool}/volumes/{name}",
        summary: "Resize a volume",
        query: &[],
        request: Body::Json("VolumeUpdate"),
        status: 200,
        role: Role::Operator,
        scope: Scope::Project,
        response: Body::Json("StorageVolume"),
    },
    Endpoint {
        id: "volume_delete",
        method: Method::Delete,
        path: "/1.0/storage/pools/{pool}/volumes/{name}",
        summary: "Delete a detached, unexported volume and its snapshots",
        query: &[],
        request: Body::None,
        status: 200,
        role: Role::Operator,
        scope: Scope::Project,
        response: Body::Json("StorageVolume"),
    },
    Endpoint {
        id: "volume_snapshot",
        method: Method::Post,
        path: "/1.0/storage/pools/{pool}/volumes/{name}/snapshots",
        summary: "Take a read-only snapshot",
        query: &[],
        request: Body::Json("SnapshotCreate"),
        status: 200,
        role: Role::Operator,
        scope: Scope::Project,
        response: Body::Json("StorageVolume"),
    },
    Endpoint {
        id: "volume_snapshot_delete",
        method: Method::Delete,
        path: "/1.0/storage/pools/{pool}/volumes/{name}/snapshots/{snapshot}",
        summary: "Delete a snapshot",
        query: &[],
        request: Body::None,
        status: 200,
        role: Role::Operator,
        scope: Scope::Project,
        response: Body::Json("StorageVolume"),
    },
    Endpoint {
        id: "volume_restore",
        method: Method::Post,
        path: "/1.0/storage/pools/{pool}/volumes/{name}/restore",
        summary: "Roll a detached volume back to a snapshot",
        query: &[],
        request: Body::Json("VolumeRestore"),
        status: 200,
        role: Role::Operator,
        scope: Scope::Project,
        response: Body::Json("StorageVolume"),
    },
    Endpoint {
        id: "volume_attach",
        method: Method::Post,
        path: "/1.0/storage/pools/{pool}/volumes/{name}/attach",
        summary: "Attach to a stopped instance (a mount for containers, a disk for VMs)",
        query: &[],
        request: Body::Json("VolumeAttach"),
        status: 200,
        role: Role::Operator,
        scope: Scope::Project,
        response: Body::Json("StorageVolume"),
    },
    Endpoint {
        id: "volume_detach",
        method: Method::Post,
        path: "/1.0/storage/pools/{pool}/volumes/{name}/detach",
        summary: "Detach from a stopped instance",
        query: &[],
        request: Body::Json("VolumeAttach"),
        status: 200,
        role: Role::Operator,
        scope: Scope::Project,
        response: Body::Json("StorageVolume"),
    },
    Endpoint {
        id: "volume_import",
        method: Method::Post,
        path: "/1.0/storage/pools/{pool}/volumes/{name}/import",
        summary: "Write a disk image (raw or qcow2, the body) into a block volume; returns an operation",
        query: &[],
        request: Body::Bytes,
        status: 202,
        role: Role::Operator,
        scope: Scope::Project,
        response: Body::Json("Operation"),
    },
    Endpoint {
        id: "exports_list",
        method: Method::Get,
        path: "/1.0/storage/exports",
        summary: "List NBD and NFS exports",
        query: &[],
        request: Body::None,
        status: 200,
        role: Role::Viewer,
        scope: Scope::Project,
        response: Body::JsonList("StorageExport"),
    },
    Endpoint {
        id: "exports_create",
        method: Method::Post,
        path: "/1.0/storage/exports",
        summary: "Export a volume over NBD (block) or NFS (files)",
        query: &[],
        request: Body::Json("ExportCreate"),
        status: 201,
        role: Role::Operator,
        scope: Scope::Project,
        response: Body::Json("StorageExport"),
    },
    Endpoint {
        id: "export_update",
        method: Method::Patch,
        path: "/1.0/storage/exports/{name}",
        summary: "Change which client networks may use an export on TCP (NFS: from their next \
                  request; NBD: connections from elsewhere are closed)",
        query: &[],
        request: Body::Json("ExportUpdate"),
        status: 200,
        role: Role::Operator,
        scope: Scope::Project,
        response: Body::Json("StorageExport"),
    },
    Endpoint {
        id: "export_delete",
        method: Method::Delete,
        path: "/1.0/storage/exports/{name}",
        summary: "Stop serving an export (its NBD clients' connections close)",
        query: &[],
        request: Body::None,
        status: 200,
        role: Role::Operator,
        scope: Scope::Project,
        response: Body::Json("StorageExport"),
    },
    Endpoint {
        id: "export_credentials_create",
        method: Method::Post,
        path: "/1.0/storage/exports/{name}/credentials",
        summary: "Issue credentials for one more client of a TLS export: the CA certificate, \
                  a client certificate and its key (shown once)",
        query: &[],
        request: Body::None,
        status: 201,
        role: Role::Operator,
        scope: Scope::Project,
        response: Body::Json("ExportCredentials"),
    },
    Endpoint {
        id: "export_credentials_revoke",
        method: Method::Delete,
        path: "/1.0/storage/exports/{name}/credentials",
        summary: "Revoke every client credential of a TLS export (new connections need new \
                  ones; its clients' open connections are closed)",
        query: &[],
        request: Body::None,
        status: 200,
        role: Role::Operator,
        scope: Scope::Project,
        response: Body::Json("StorageExport"),
    },
    Endpoint {
        id: "networks_list",
        method: Method::Get,
        path: "/1.0/networks",
        summary: "List networks",
        query: &[],
        request: Body::None,
        status: 200,
        role: Role::Viewer,
        scope: Scope::Project,
        response: Body::JsonList("Network"),
    },
    Endpoint {
        id: "networks_create",
        method: Method::Post,
        path: "/1.0/networks",
        summary: "Create a network (bridge, NAT, DHCP/DNS; VXLAN overlay with a VNI)",
        query: &[],
        request: Body::Json("NetworkCreate"),
        status: 201,
        role: Role::Operator,
        scope: Scope::Project,
        response: Body::Json("Network"),
    },
    Endpoint {
        id: "network_get",
        method: Method::Get,
        path: "/1.0/networks/{name}",
        summary: "One network with its leases and forwards",
        query: &[],
        request: Body::None,
        status: 200,
        role: Role::Viewer,
        scope: Scope::Project,
        response: Body::Json("Network"),
    },
    Endpoint {
        id: "network_delete",
        method: Method::Delete,
        path: "/1.0/networks/{name}",
        summary: "Delete a network no instance uses",
        query: &[],
        request: Body::None,
        status: 200,
        role: Role::Operator,
        scope: Scope::Project,
        response: Body::Json("Network"),
    },
    Endpoint {
        id: "network_attach",
        method: Method::Post,
        path: "/1.0/networks/{name}/attach",
        summary: "Give an instance a NIC on the network (hot-plugged into a running container)",
        query: &[],
        request: Body::Json("NicAttach"),
        status: 200,
        role: Role::Operator,
        scope: Scope::Project,
        response: Body::Json("Network"),
    },
    Endpoint {
        id: "network_detach",
        method: Method::Post,
        path: "/1.0/networks/{name}/detach",
        summary: "Remove an instance's NIC (at once from a running container)",
        query: &[],
        request: Body::Json("NicAttach"),
        status: 200,
        role: Role::Operator,
        scope: Scope::Project,
        response: Body::Json("Network"),
    },
    Endpoint {
        id: "network_forward_add",
        method: Method::Post,
        path: "/1.0/networks/{name}/forwards",
        summary: "Publish a host port to an instance port",
        query: &[],
        request: Body::Json("NetworkForward"),
        status: 200,
        role: Role::Operator,
        scope: Scope::Project,
        response: Body::Json("Network"),
    },
    Endpoint {
        id: "network_forward_delete",
        method: Method::Delete,
        path: "/1.0/networks/{name}/forwards/{protocol}/{port}",
        summary: "Remove a published port",
        query: &[],
        request: Body::None,
        status: 200,
        role: Role::Operator,
        scope: Scope::Project,
        response: Body::Json("Network"),
    },
    Endpoint {
        id: "network_nic_limits",
        method: Method::Put,
        path: "/1.0/networks/{name}/nics/{instance}/limits",
        summary: "Change a NIC's bandwidth limits: the directions named (none lifts one), applied at once",
        query: &[],
        request: Body::Json("NicLimits"),
        status: 200,
        role: Role::Operator,
        scope: Scope::Project,
        response: Body::Json("Network"),
    },
    Endpoint {
        id: "network_lb_add",
        method: Method::Post,
        path: "/1.0/networks/{name}/load-balancers",
        summary: "Add an L4 load balancer over instances, with health checks",
        query: &[],
        request: Body::Json("NetworkLoadBalancer"),
        status: 200,
        role: Role::Operator,
        scope: Scope::Project,
        response: Body::Json("Network"),
    },
    Endpoint {
        id: "network_lb_delete",
        method: Method::Delete,
        path: "/1.0/networks/{name}/load-balancers/{lb}",
        summary: "Remove a load balancer",
        query: &[],
        request: Body::None,
        status: 200,
        role: Role::Operator,
        scope: Scope::Project,
        response: Body::Json("Network"),
    },
    Endpoint {
        id: "network_nic_acl_set",
        method: Method::Put,
        path: "/1.0/networks/{name}/nics/{instance}/acl",
        summary: "Replace one NIC's ACL rules, checked before the network's (atomically)",
        query: &[],
        request: Body::Json("NetworkAclSet"),
        status: 200,
        role: Role::Operator,
        scope: Scope::Project,
        response: Body::Json("Network"),
    },
    Endpoint {
        id: "network_acl_set",
        method: Method::Put,
        path: "/1.0/networks/{name}/acl",
        summary: "Replace the network's ACL rules (atomically; bad rules leave the old ones)",
        query: &[],
        request: Body::Json("NetworkAclSet"),
        status: 200,
        role: Role::Operator,
        scope: Scope::Project,
        response: Body::Json("Network"),
    },
    Endpoint {
        id: "admin_init",
        method: Method::Post,
        path: "/1.0/admin/init",
        summary: "Make the default network new instances get (idempotent; on a subnet no host route uses)",
        query: &[],
        request: Body::Json("AdminInit"),
        status: 200,
        role: Role::Admin,
        scope: Scope::Server,
        response: Body::Json("AdminInitResult"),
    },
    Endpoint {
        id: "events",
        method: Method::Get,
        path: "/1.0/events",
        summary: "Stream of lifecycle and operation events",
        query: &[],
        request: Body::None,
        status: 200,
        role: Role::Viewer,
        scope: Scope::Project,
        response: Body::NdJson("Event"),
    },
    Endpoint {
        id: "events_websocket",
        method: Method::Get,
        path: "/1.0/events/websocket",
        summary: "Lifecycle and operation events over a WebSocket (browsers): one text message of an event's JSON each",
        query: &[],
        request: Body::None,
        status: 101,
        role: Role::Viewer,
        scope: Scope::Project,
        response: Body::WebSocket,
    },
    Endpoint {
        id: "host_history",
        method: Method::Get,
        path: "/1.0/history/host",
        summary: "Recent use of the host itself (cpu time of all cores, memory in use, disk and network bytes), sampled with the instances' history",
        query: &[],
        request: Body::None,
        status: 200,
        role: Role::Admin,
        scope: Scope::Server,
        response: Body::Json("InstanceHistory"),
    },
    Endpoint {
        id: "plan_consolidate",
        method: Method::Get,
        path: "/1.0/plan/consolidate",
        summary: "Right sizes of the project's instances from their recorded cpu and memory use (p95 plus headroom, against their limits), each with a line that explains it",
        query: &[PLAN_HEADROOM],
        request: Body::None,
        status: 200,
        role: Role::Viewer,
        scope: Scope::Project,
        response: Body::Json("ConsolidationPlan"),
    },
    Endpoint {
        id: "cluster_get",
        method: Method::Get,
        path: "/1.0/cluster",
        summary: "This server's place in a cluster: its member name, the cluster, etcd, whether etcd answers",
        query: &[],
        request: Body::None,
        status: 200,
        role: Role::Admin,
        scope: Scope::Server,
        response: Body::Json("ClusterInfo"),
    },
    Endpoint {
        id: "cluster_update",
        method: Method::Patch,
        path: "/1.0/cluster",
        summary: "Change the cluster's settings (its placement policy); answers this \
                  server's place as `GET` does",
        query: &[],
        request: Body::Json("ClusterUpdate"),
        status: 200,
        role: Role::Admin,
        scope: Scope::Server,
        response: Body::Json("ClusterInfo"),
    },
    Endpoint {
        id: "cluster_replica_create",
        method: Method::Post,
        path: "/1.0/cluster/replicas",
        summary: "Between members: keep a far copy of a pool of the asking member (a file \
                  here, served to it over NBD through `GET /1.0/cluster/replicas/{name}/nbd`)",
        query: &[],
        request: Body::Json("ReplicaCreate"),
        status: 200,
        role: Role::Member,
        scope: Scope::Server,
        response: Body::None,
    },
    Endpoint {
        id: "cluster_replica_delete",
        method: Method::Delete,
        path: "/1.0/cluster/replicas/{name}",
        summary: "Between members: the far copy is no longer wanted (its pool was deleted)",
        query: &[],
        request: Body::None,
        status: 200,
        role: Role::Member,
        scope: Scope::Server,
        response: Body::None,
    },
    Endpoint {
        id: "cluster_replica_nbd",
        method: Method::Get,
        path: "/1.0/cluster/replicas/{name}/nbd",
        summary: "Between members: the connection upgrades (Upgrade: vessel-raw/1) to the \
                  NBD export of the far copy",
        query: &[],
        request: Body::None,
        status: 101,
        role: Role::Member,
        scope: Scope::Server,
        response: Body::Upgrade,
    },
    Endpoint {
        id: "cluster_init",
        method: Method::Post,
        path: "/1.0/cluster",
        summary: "Make a cluster on etcd with this server its first member",
        query: &[],
        request: Body::Json("ClusterInit"),
        status: 201,
        role: Role::Admin,
        scope: Scope::Server,
        response: Body::Json("ClusterInfo"),
    },
    Endpoint {
        id: "cluster_join",
        method: Method::Post,
        path: "/1.0/cluster/join",
        summary: "Join the cluster a single-use token is from",
        query: &[],
        request: Body::Json("ClusterJoin"),
        status: 200,
        role: Role::Admin,
        scope: Scope::Server,
        response: Body::Json("ClusterInfo"),
    },
    Endpoint {
        id: "cluster_tokens_create",
        method: Method::Post,
        path: "/1.0/cluster/tokens",
        summary: "A single-use join token for a new member; the token is in this answer only",
        query: &[],
        request: Body::Json("ClusterTokenCreate"),
        status: 201,
        role: Role::Admin,
        scope: Scope::Server,
        response: Body::Json("ClusterToken"),
    },
    Endpoint {
        id: "cluster_members_list",
        method: Method::Get,
        path: "/1.0/cluster/members",
        summary: "The members: address, state (online while their lease lives), capacity, usage, last heartbeat",
        query: &[],
        request: Body::None,
        status: 200,
        role: Role::Admin,
        scope: Scope::Server,
        response: Body::JsonList("ClusterMember"),
    },
    Endpoint {
        id: "cluster_placement",
        method: Method::Get,
        path: "/1.0/cluster/placement",
        summary: "The member the scheduler would choose for a new instance of the given size, from the members' capacity and what their instances ask for",
        query: &[
            Query {
                name: "cpu",
                description: "cores the instance asks for (default 0)",
                required: false,
            },
            Query {
                name: "memory",
                description: "memory it asks for, e.g. 512MiB (default 0)",
                required: false,
            },
            Query {
                name: "policy",
                description: "spread or binpack (default: the cluster's policy)",
                required: false,
            },
            Query {
                name: "group",
                description: "its placement group: no member holding one of the group is chosen",
                required: false,
            },
        ],
        request: Body::None,
        status: 200,
        role: Role::Admin,
        scope: Scope::Server,
        response: Body::Json("ClusterPlacement"),
    },
    Endpoint {
        id: "cluster_member_evacuate",
        method: Method::Post,
        path: "/1.0/cluster/members/{name}/evacuate",
        summary: "Evacuate a member: nothing new placed on it, each of its instances moved \
                  to another member (cold) or stopped; returns the member's operation",
        query: &[],
        request: Body::Json("ClusterEvacuate"),
        status: 202,
        role: Role::Admin,
        scope: Scope::Server,
        response: Body::Json("Operation"),
    },
    Endpoint {
        id: "cluster_member_restore",
        method: Method::Post,
        path: "/1.0/cluster/members/{name}/restore",
        summary: "End a member's evacuation: its instances brought back, those stopped in \
                  place started; returns the member's operation",
        query: &[],
        request: Body::None,
        status: 202,
        role: Role::Admin,
        scope: Scope::Server,
        response: Body::Json("Operation"),
    },
    Endpoint {
        id: "cluster_member_delete",
        method: Method::Delete,
        path: "/1.0/cluster/members/{name}",
        summary: "Remove a member (an online one only with force); answers the members left",
        query: &[Query {
            name: "force",
            description: "1 to remove an online member",
            required: false,
        }],
        request: Body::None,
        status: 200,
        role: Role::Admin,
        scope: Scope::Server,
        response: Body::JsonList("ClusterMember"),
    },
    Endpoint {
        id: "metrics",
        method: Method::Get,
        path: "/1.0/metrics",
        summary: "Metrics in the Prometheus text format: instances, projects, storage pools, the daemon's requests; the caller's projects only (every project for admins); cached for a few seconds",
        query: &[],
        request: Body::None,
        status: 200,
        role: Role::Viewer,
        scope: Scope::Server,
        response: Body::Text,
    },
    Endpoint {
        id: "auth_self",
        method: Method::Get,
        path: "/1.0/auth/self",
        summary: "The identity of the caller: name, kind, project and role",
        query: &[],
        request: Body::None,
        status: 200,
        role: Role::Viewer,
        scope: Scope::Server,
        response: Body::Json("Identity"),
    },
    Endpoint {
        id: "auth_identities_list",
        method: Method::Get,
        path: "/1.0/auth/identities",
        summary: "List identities (tokens and trusted client certificates)",
        query: &[],
        request: Body::None,
        status: 200,
        role: Role::Admin,
        scope: Scope::Server,
        response: Body::JsonList("Identity"),
    },
    Endpoint {
        id: "auth_tokens_create",
        method: Method::Post,
        path: "/1.0/auth/tokens",
        summary: "Create a bearer token identity; the token is in this answer only",
        query: &[],
        request: Body::Json("TokenCreate"),
        status: 201,
        role: Role::Admin,
        scope: Scope::Server,
        response: Body::Json("TokenCreated"),
    },
    Endpoint {
        id: "auth_certificates_add",
        method: Method::Post,
        path: "/1.0/auth/certificates",
        summary: "Trust a client certificate (mutual TLS) by its fingerprint",
        query: &[],
        request: Body::Json("CertificateTrust"),
        status: 201,
        role: Role::Admin,
        scope: Scope::Server,
        response: Body::Json("Identity"),
    },
    Endpoint {
        id: "auth_identity_delete",
        method: Method::Delete,
        path: "/1.0/auth/identities/{name}",
        summary: "Revoke an identity: its next request fails and its open streams close",
        query: &[],
        request: Body::None,
        status: 200,
        role: Role::Admin,
        scope: Scope::Server,
        response: Body::Json("Identity"),
    },
    Endpoint {
        id: "audit_list",
        method: Method::Get,
        path: "/1.0/audit",
        summary: "The audit log of changes, oldest first (operators see their project's)",
        query: &[
            Query {
                name: "project",
                description: "only this project's entries",
                required: false,
            },
            Query {
                name: "since",
                description: "only entries at or after this RFC 3339 time",
                required: false,
            },
            Query {
                name: "limit",
                description: "at most this many entries, the latest (default 1000)",
                required: false,
            },
        ],
        request: Body::None,
        status: 200,
        role: Role::Operator,
        scope: Scope::Project,
        response: Body::JsonList("AuditEntry"),
    },
    Endpoint {
        id: "config_get",
        method: Method::Get,
        path: "/1.0/config",
        summary: "The server's settings",
        query: &[],
        request: Body::None,
        status: 200,
        role: Role::Admin,
        scope: Scope::Server,
        response: Body::Json("ServerConfig"),
    },
    Endpoint {
        id: "config_set",
        method: Method::Patch,
        path: "/1.0/config",
        summary: "Change settings (e.g. core.https_address, applied at once); empty unsets",
        query: &[],
        request: Body::Json("ServerConfig"),
        status: 200,
        role: Role::Admin,
        scope: Scope::Server,
        response: Body::Json("ServerConfig"),
    },
    Endpoint {
        id: "projects_list",
        method: Method::Get,
        path: "/1.0/projects",
        summary: "List projects (an identity bound to a project sees its own)",
        query: &[FORMAT_RECURSION],
        request: Body::None,
        status: 200,
        role: Role::Viewer,
        scope: Scope::Server,
        response: Body::JsonList("Project"),
    },
    Endpoint {
        id: "projects_create",
        method: Method::Post,
        path: "/1.0/projects",
        summary: "Create a project, with its limits",
        query: &[],
        request: Body::Json("ProjectCreate"),
        status: 201,
        role: Role::Admin,
        scope: Scope::Server,
        response: Body::Json("Project"),
    },
    Endpoint {
        id: "project_get",
        method: Method::Get,
        path: "/1.0/projects/{name}",
        summary: "A project with its limits and what it uses of them",
        query: &[Query {
            name: "holds",
            description: "`1`: also what the project holds on this server that keeps it from \
                          being deleted (`holds`; in a cluster, a deletion asks every member)",
            required: false,
        }],
        request: Body::None,
        status: 200,
        role: Role::Viewer,
        scope: Scope::Server,
        response: Body::Json("Project"),
    },
    Endpoint {
        id: "project_update",
        method: Method::Patch,
        path: "/1.0/projects/{name}",
        summary: "Change a project's limits (lowering one below use blocks growth, stops nothing)",
        query: &[],
        request: Body::Json("ProjectUpdate"),
        status: 200,
        role: Role::Admin,
        scope: Scope::Server,
        response: Body::Json("Project"),
    },
    Endpoint {
        id: "project_delete",
        method: Method::Delete,
        path: "/1.0/projects/{name}",
        summary: "Delete an empty project",
        query: &[],
        request: Body::None,
        status: 200,
        role: Role::Admin,
        scope: Scope::Server,
        response: Body::Json("Project"),
    },
];

/// The endpoint with this id.
///
/// # Panics
/// Panics when no endpoint has the id: ids are compile-time constants, so that is a bug.
pub fn by_id(id: &str) -> &'static Endpoint {
    ENDPOINTS
        .iter()
        .find(|e| e.id == id)
        .unwrap_or_else(|| panic!("no endpoint with id {id}"))
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn ids_and_routes_are_unique() {
        let mut ids = HashSet::new();
        let mut routes = HashSet::new();
        for e in ENDPOINTS {
            assert!(ids.insert(e.id), "duplicate id {}", e.id);
            assert!(
                routes.insert((e.method, e.path)),
                "duplicate route {} {}",
                e.method.as_str(),
                e.path
            );
            assert!(e.path.starts_with("/1.0"), "{} is outside /1.0", e.path);
        }
    }

    /// The role table holds together: reading never needs more than changing the same thing,
    /// a viewer changes nothing, and the server as a whole is changed by admins only (and,
    /// between members, by the cluster's members).
    #[test]
    fn roles_fit_what_endpoints_do() {
        for e in ENDPOINTS {
            if e.method != Method::Get {
                assert!(
                    e.role >= Role::User,
                    "{} changes state but a viewer may call it",
                    e.id
                );
            }
            if e.method != Method::Get && e.scope == Scope::Server {
                assert!(e.role >= Role::Admin, "{} changes the server", e.id);
            }
        }
        assert_eq!(by_id("instance_exec").role, Role::User);
        assert_eq!(by_id("instances_create").role, Role::Operator);
        assert_eq!(by_id("auth_tokens_create").role, Role::Admin);
        assert_eq!(Role::parse("operator"), Ok(Role::Operator));
        assert!(Role::parse("root")
            .unwrap_err()
            .contains("viewer, user, operator and admin"));
    }
}
