//! Generates the OpenAPI 3 document from [`crate::endpoints::ENDPOINTS`] and the wire types.

use utoipa::openapi::{
    content::ContentBuilder,
    path::{HttpMethod, OperationBuilder, ParameterBuilder, ParameterIn, PathItem},
    request_body::RequestBodyBuilder,
    response::{ResponseBuilder, ResponsesBuilder},
    schema::{ArrayBuilder, ObjectBuilder, Type},
    ComponentsBuilder, InfoBuilder, OpenApi, OpenApiBuilder, PathsBuilder, Ref, RefOr, Required,
    Schema,
};

use crate::auth::*;
use crate::backup::*;
use crate::cluster::*;
use crate::config::*;
use crate::endpoints::{Body, Endpoint, Method, ENDPOINTS};
use crate::network::*;
use crate::project::*;
use crate::storage::*;
use crate::types::*;

/// The OpenAPI document of the API, as checked in at `crates/vessel-api/openapi.json`.
pub fn document() -> OpenApi {
    let mut paths = PathsBuilder::new();
    for e in ENDPOINTS {
        paths = paths.path(e.path, PathItem::new(http_method(e.method), operation(e)));
    }
    let components = ComponentsBuilder::new()
        .schema_from::<ErrorResponse>()
        .schema_from::<ServerInfo>()
        .schema_from::<Project>()
        .schema_from::<ProjectUsage>()
        .schema_from::<ProjectCreate>()
        .schema_from::<ProjectUpdate>()
        .schema_from::<IdentityKind>()
        .schema_from::<Identity>()
        .schema_from::<TokenCreate>()
        .schema_from::<TokenCreated>()
        .schema_from::<CertificateTrust>()
        .schema_from::<AuditEntry>()
        .schema_from::<ServerConfig>()
        .schema_from::<HostInfo>()
        .schema_from::<InstanceType>()
        .schema_from::<InstanceStatus>()
        .schema_from::<Limits>()
        .schema_from::<IoThrottle>()
        .schema_from::<InstanceCreate>()
        .schema_from::<Instance>()
        .schema_from::<InstanceIdmap>()
        .schema_from::<InstanceState>()
        .schema_from::<InstanceHistory>()
        .schema_from::<HistoryPoint>()
        .schema_from::<ConsolidationPlan>()
        .schema_from::<ClusterInit>()
        .schema_from::<ClusterJoin>()
        .schema_from::<ReplicaCreate>()
        .schema_from::<ClusterTokenCreate>()
        .schema_from::<ClusterEvacuate>()
        .schema_from::<ClusterUpdate>()
        .schema_from::<ClusterToken>()
        .schema_from::<ClusterInfo>()
        .schema_from::<ClusterMember>()
        .schema_from::<ClusterMemberUsage>()
        .schema_from::<ClusterPlacement>()
        .schema_from::<InstanceSizing>()
        .schema_from::<ResourceSizing>()
        .schema_from::<VmDetails>()
        .schema_from::<InstanceNic>()
        .schema_from::<InstanceVolume>()
        .schema_from::<RootDisk>()
        .schema_from::<RootDiskResize>()
        .schema_from::<InstanceConfig>()
        .schema_from::<InstanceConfigPatch>()
        .schema_from::<ConfigEffect>()
        .schema_from::<ConfigKeyChange>()
        .schema_from::<InstanceConfigChange>()
        .schema_from::<VolumeDevice>()
        .schema_from::<Profile>()
        .schema_from::<ProfilePut>()
        .schema_from::<ProfileChange>()
        .schema_from::<ProfileApply>()
        .schema_from::<ProfileDevices>()
        .schema_from::<BackupCreate>()
        .schema_from::<BackupArchive>()
        .schema_from::<Backup>()
        .schema_from::<BackupRestore>()
        .schema_from::<BackupVerify>()
        .schema_from::<BackupPrune>()
        .schema_from::<BackupPruned>()
        .schema_from::<BackupGc>()
        .schema_from::<BackupGcReport>()
        .schema_from::<InstanceSnapshot>()
        .schema_from::<InstanceSnapshotCreate>()
        .schema_from::<InstanceSnapshotRestore>()
        .schema_from::<InstanceCopy>()
        .schema_from::<InstanceRename>()
        .schema_from::<InstanceMove>()
        .schema_from::<InstanceMigrate>()
        .schema_from::<MigrationIncoming>()
        .schema_from::<MigrationEnd>()
        .schema_from::<StateAction>()
        .schema_from::<StateChange>()
        .schema_from::<ExecRequest>()
        .schema_from::<FileInfo>()
        .schema_from::<FileEntry>()
        .schema_from::<FileKind>()
        .schema_from::<ImageSource>()
        .schema_from::<ImageBuild>()
        .schema_from::<VmLayout>()
        .schema_from::<ImagePull>()
        .schema_from::<ImageAlias>()
        .schema_from::<InstancePublish>()
        .schema_from::<ImageKind>()
        .schema_from::<Image>()
        .schema_from::<OperationStatus>()
        .schema_from::<Operation>()
        .schema_from::<EventKind>()
        .schema_from::<Event>()
        .schema_from::<PoolDriver>()
        .schema_from::<PoolCreate>()
        .schema_from::<StoragePool>()
        .schema_from::<PoolMember>()
        .schema_from::<ScrubResult>()
        .schema_from::<PoolStatus>()
        .schema_from::<PoolRepair>()
        .schema_from::<VolumeContent>()
        .schema_from::<VolumeCreate>()
        .schema_from::<VolumeAttachment>()
        .schema_from::<StorageVolume>()
        .schema_from::<VolumeUpdate>()
        .schema_from::<SnapshotCreate>()
        .schema_from::<VolumeRestore>()
        .schema_from::<VolumeAttach>()
        .schema_from::<ExportProtocol>()
        .schema_from::<ExportCreate>()
        .schema_from::<ExportUpdate>()
        .schema_from::<StorageExport>()
        .schema_from::<ExportCredentials>()
        .schema_from::<NetworkCreate>()
        .schema_from::<NetworkLease>()
        .schema_from::<NetworkForward>()
        .schema_from::<Network>()
        .schema_from::<NicAttach>()
        .schema_from::<NetworkAclSet>()
        .schema_from::<NetworkSegment>()
        .schema_from::<NicLimits>()
        .schema_from::<LbPortSpec>()
        .schema_from::<LbHealthCheckSpec>()
        .schema_from::<LbBackendStatus>()
        .schema_from::<NetworkLoadBalancer>()
        .schema_from::<AdminInit>()
        .schema_from::<AdminInitResult>()
        .build();
    OpenApiBuilder::new()
        .info(
            InfoBuilder::new()
                .title("Vessel REST API")
                .version(crate::API_VERSION)
                .description(Some(
                    "Served by vesseld on a unix socket (default /run/vessel/vessel.sock). \
                     Errors are JSON bodies of the ErrorResponse schema. exec and console \
                     upgrade the connection to the framed stream described in the \
                     vessel-api crate's `stream` module.",
                ))
                .build(),
        )
        .paths(paths.build())
        .components(Some(components))
        .build()
}

/// The document as pretty JSON with a trailing newline, exactly as checked in.
pub fn document_json() -> String {
    let mut s = serde_json::to_string_pretty(&document()).expect("OpenAPI document serializes");
    s.push('\n');
    s
}

fn http_method(m: Method) -> HttpMethod {
    match m {
        Method::Get => HttpMethod::Get,
        Method::Post => HttpMethod::Post,
        Method::Put => HttpMethod::Put,
        Method::Patch => HttpMethod::Patch,
        Method::Delete => HttpMethod::Delete,
    }
}

fn schema_ref(name: &str) -> RefOr<Schema> {
    RefOr::Ref(Ref::from_schema_name(name))
}

fn content_for(body: Body) -> Option<(&'static str, Option<RefOr<Schema>>)> {
    match body {
        Body::None | Body::Upgrade | Body::WebSocket => None,
        Body::Json(n) => Some(("application/json", Some(schema_ref(n)))),
        Body::JsonList(n) => Some((
            "application/json",
            Some(ArrayBuilder::new().items(schema_ref(n)).build().into()),
        )),
        Body::NdJson(n) => Some(("application/x-ndjson", Some(schema_ref(n)))),
        Body::Bytes => Some((
            "application/octet-stream",
            Some(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .build()
                    .into(),
            ),
        )),
        Body::Text => Some((
            "text/plain",
            Some(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .build()
                    .into(),
            ),
        )),
    }
}

fn operation(e: &Endpoint) -> utoipa::openapi::path::Operation {
    let mut op = OperationBuilder::new()
        .operation_id(Some(e.id))
        .summary(Some(e.summary))
        .description(Some(format!(
            "Needs the role `{}` ({} scope).",
            e.role,
            e.scope.as_str()
        )));
    for seg in e.path.split('/') {
        if let Some(name) = seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
            op = op.parameter(
                ParameterBuilder::new()
                    .name(name)
                    .parameter_in(ParameterIn::Path)
                    .required(Required::True)
                    .schema(Some(ObjectBuilder::new().schema_type(Type::String).build())),
            );
        }
    }
    if e.scope == crate::endpoints::Scope::Project {
        op = op.parameter(
            ParameterBuilder::new()
                .name(crate::project::PROJECT_QUERY)
                .parameter_in(ParameterIn::Query)
                .description(Some(
                    "the project (default: the caller's own; another only for admins)",
                ))
                .required(Required::False)
                .schema(Some(ObjectBuilder::new().schema_type(Type::String).build())),
        );
    }
    for q in e.query {
        op = op.parameter(
            ParameterBuilder::new()
                .name(q.name)
                .parameter_in(ParameterIn::Query)
                .description(Some(q.description))
                .required(if q.required {
                    Required::True
                } else {
                    Required::False
                })
                .schema(Some(ObjectBuilder::new().schema_type(Type::String).build())),
        );
    }
    if let Some((mime, schema)) = content_for(e.request) {
        let mut c = ContentBuilder::new();
        if let Some(s) = schema {
            c = c.schema(Some(s));
        }
        op = op.request_body(Some(
            RequestBodyBuilder::new()
                .content(mime, c.build())
                .required(Some(Required::True))
                .build(),
        ));
    }
    let mut ok = ResponseBuilder::new().description(match e.response {
        Body::Upgrade => "Switching protocols to vessel-stream/1",
        Body::WebSocket => "Switching protocols to a WebSocket",
        _ => "Success",
    });
    if let Some((mime, schema)) = content_for(e.response) {
        let mut c = ContentBuilder::new();
        if let Some(s) = schema {
            c = c.schema(Some(s));
        }
        ok = ok.content(mime, c.build());
    }
    let err = ResponseBuilder::new()
        .description("Error with a message saying what to do")
        .content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(schema_ref("ErrorResponse")))
                .build(),
        );
    op.responses(
        ResponsesBuilder::new()
            .response(e.status.to_string(), ok)
            .response("default", err),
    )
    .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The checked-in document must be what the code generates.
    #[test]
    fn checked_in_document_matches_code() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/openapi.json");
        let generated = document_json();
        if std::env::var_os("VESSEL_BLESS").is_some() {
            std::fs::write(path, &generated).expect("write openapi.json");
        }
        let checked_in = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            checked_in == generated,
            "crates/vessel-api/openapi.json is out of date with the code; regenerate it with \
             `VESSEL_BLESS=1 cargo test -p vessel-api` and commit the result"
        );
    }

    /// Every schema an endpoint names is defined in the components.
    #[test]
    fn endpoint_schemas_exist() {
        let doc = serde_json::to_value(document()).unwrap();
        let schemas = &doc["components"]["schemas"];
        for e in ENDPOINTS {
            for b in [e.request, e.response] {
                if let Body::Json(n) | Body::JsonList(n) | Body::NdJson(n) = b {
                    assert!(
                        schemas.get(n).is_some(),
                        "{} names missing schema {n}",
                        e.id
                    );
                }
            }
        }
    }
}
