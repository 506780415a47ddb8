use super::*;
use crate::store::SqliteStore;

fn service() -> (AuthService, Arc<dyn Store>, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!("vessel-auth-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.join("db")).unwrap());
    (AuthService::new(store.clone()), store, dir)
}

fn remote(n: u8) -> Peer {
    Peer::Remote {
        addr: IpAddr::from([192, 0, 2, n]),
        certificate: None,
    }
}

fn token(name: &str, role: &str, expires: Option<&str>) -> TokenCreate {
    TokenCreate {
        name: name.into(),
        project: None,
        role: role.into(),
        expires: expires.map(Into::into),
    }
}

#[test]
fn a_token_authenticates_until_revoked_and_only_its_hash_is_stored() {
    let (auth, store, dir) = service();
    let made = auth.create_token(&token("ci", "operator", None)).unwrap();
    assert!(made.token.starts_with("vessel_") && made.token.len() == 7 + 64);
    let header = format!("Bearer {}", made.token);
    let caller = auth
        .authenticate(&remote(1), Some(header.as_bytes()))
        .unwrap();
    assert_eq!((caller.name.as_str(), caller.role), ("ci", Role::Operator));
    assert_eq!(caller.project, "default");
    let kept = store.object_list("identity").unwrap();
    assert!(
        !kept[0].1.contains(&made.token[7..]),
        "the token itself was stored"
    );
    // A daemon restarted over the same store knows it.
    let again = AuthService::new(store.clone());
    again
        .authenticate(&remote(1), Some(header.as_bytes()))
        .unwrap();
    auth.revoke("ci").unwrap();
    assert!(!auth.still_valid(&caller));
    assert!(matches!(
        auth.authenticate(&remote(1), Some(header.as_bytes())),
        Err(Denied::Unauthenticated(_))
    ));
    assert!(store.object_list("identity").unwrap().is_empty());
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn bad_credentials_are_refused_alike() {
    let (auth, _, dir) = service();
    auth.create_token(&token("a", "viewer", None)).unwrap();
    for h in [
        &b"Bearer vessel_00"[..],
        b"Basic dXNlcjpwYXNz",
        b"Bearer ",
        b"Bearer",
        b"\xff\xfe",
    ] {
        match auth.authenticate(&remote(2), Some(h)) {
            Err(Denied::Unauthenticated(m)) => assert!(!m.is_empty()),
            other => panic!("{h:?}: {other:?}"),
        }
    }
    assert!(matches!(
        auth.authenticate(&remote(2), None),
        Err(Denied::Unauthenticated(_))
    ));
    assert_eq!(
        auth.authenticate(&Peer::Local, None).unwrap(),
        Caller::host_root()
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn failures_from_one_address_are_held_back() {
    let (auth, _, dir) = service();
    let made = auth.create_token(&token("a", "viewer", None)).unwrap();
    for _ in 0..limit::MAX_FAILURES {
        let _ = auth.authenticate(&remote(3), Some(b"Bearer nope"));
    }
    let good = format!("Bearer {}", made.token);
    assert!(matches!(
        auth.authenticate(&remote(3), Some(good.as_bytes())),
        Err(Denied::TooMany(_))
    ));
    auth.authenticate(&remote(4), Some(good.as_bytes()))
        .unwrap();
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn an_expired_identity_is_refused_with_the_reason() {
    let (auth, store, dir) = service();
    let made = auth
        .create_token(&token("short", "user", Some("1s")))
        .unwrap();
    let header = format!("Bearer {}", made.token);
    let caller = auth
        .authenticate(&remote(5), Some(header.as_bytes()))
        .unwrap();
    std::thread::sleep(Duration::from_millis(1100));
    assert!(!auth.still_valid(&caller));
    match auth.authenticate(&remote(5), Some(header.as_bytes())) {
        Err(Denied::Unauthenticated(m)) => assert!(m.contains("expired"), "{m}"),
        other => panic!("{other:?}"),
    }
    drop(store);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn bad_requests_change_nothing() {
    let (auth, store, dir) = service();
    let mut wrong_project = token("p", "viewer", None);
    wrong_project.project = Some("else.where".into());
    let cases = [
        (token("r", "superuser", None), "no role"),
        (token("l", "viewer", Some("soon")), "does not parse"),
        (token("l", "viewer", Some("0d")), "does not parse"),
        (token("Bad Name", "viewer", None), "identity"),
        (token(HOST_ROOT, "viewer", None), "unix socket"),
        (wrong_project, "invalid project name"),
    ];
    for (req, says) in cases {
        let e = auth.create_token(&req).unwrap_err();
        assert!(e.message.contains(says), "{}: {}", req.name, e.message);
    }
    auth.create_token(&token("dup", "viewer", None)).unwrap();
    assert_eq!(
        auth.create_token(&token("dup", "admin", None))
            .unwrap_err()
            .kind,
        crate::error::ErrorKind::Conflict
    );
    assert_eq!(store.object_list("identity").unwrap().len(), 1);
    assert_eq!(auth.list()[0].role, Role::Viewer);
    let e = auth.revoke("nobody").unwrap_err();
    assert_eq!(e.kind, crate::error::ErrorKind::NotFound);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_trusted_certificate_authenticates_by_fingerprint() {
    let (auth, _, dir) = service();
    let made = rcgen::generate_simple_self_signed(vec!["client".into()]).unwrap();
    let trust = CertificateTrust {
        name: "laptop".into(),
        certificate: made.cert.pem(),
        project: None,
        role: "user".into(),
        expires: None,
    };
    let id = auth.trust_certificate(&trust).unwrap();
    let fp = tls::fingerprint(made.cert.der());
    assert_eq!(id.fingerprint.as_deref(), Some(fp.as_str()));
    let peer = Peer::Remote {
        addr: IpAddr::from([192, 0, 2, 9]),
        certificate: Some(fp),
    };
    assert_eq!(auth.authenticate(&peer, None).unwrap().role, Role::User);
    let again = CertificateTrust {
        name: "laptop2".into(),
        ..trust
    };
    assert_eq!(
        auth.trust_certificate(&again).unwrap_err().kind,
        crate::error::ErrorKind::Conflict
    );
    let stranger = Peer::Remote {
        addr: IpAddr::from([192, 0, 2, 9]),
        certificate: Some("00".repeat(32)),
    };
    assert!(auth.authenticate(&stranger, None).is_err());
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn open_streams_end_when_their_identity_is_revoked() {
    let (auth, _, dir) = service();
    let made = auth.create_token(&token("s", "user", None)).unwrap();
    let header = format!("Bearer {}", made.token);
    let caller = auth
        .authenticate(&remote(6), Some(header.as_bytes()))
        .unwrap();
    let watch = tokio::spawn({
        let auth = auth.clone();
        async move { auth.until_invalid(caller).await }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!watch.is_finished());
    let t = Instant::now();
    auth.revoke("s").unwrap();
    tokio::time::timeout(Duration::from_secs(3), watch)
        .await
        .unwrap()
        .unwrap();
    assert!(
        t.elapsed() < Duration::from_millis(500),
        "revocation wakes streams at once"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn lifetimes_parse() {
    assert_eq!(parse_lifetime("30d").unwrap(), time::Duration::days(30));
    assert_eq!(parse_lifetime("90s").unwrap(), time::Duration::seconds(90));
    for bad in ["", "d", "-1d", "1y", "1.5h", "99999999999d"] {
        assert!(parse_lifetime(bad).is_err(), "{bad}");
    }
}
