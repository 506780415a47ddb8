//! Portmapper version 2 (RFC 1833): tells clients which port MOUNT and NFS listen on.
//! It knows only this server's programs; SET and UNSET are refused.

use crate::xdr::{Decoder, Encoder, XdrError};

/// Portmapper program number.
pub const PROGRAM: u32 = 100000;
/// Portmapper version served.
pub const VERSION: u32 = 2;
/// `IPPROTO_TCP` as the portmapper spells it.
const PROT_TCP: u32 = 6;

/// Programs this server registers: (program, version, port).
pub(crate) fn mappings(nfs_port: u16, portmap_port: Option<u16>) -> Vec<(u32, u32, u32)> {
    let mut m = Vec::new();
    if let Some(p) = portmap_port {
        m.push((PROGRAM, VERSION, u32::from(p)));
    }
    m.push((
        crate::mount::PROGRAM,
        crate::mount::VERSION,
        u32::from(nfs_port),
    ));
    m.push((
        crate::nfs::PROGRAM,
        crate::nfs::VERSION,
        u32::from(nfs_port),
    ));
    m
}

/// Answer one portmapper call; `Ok(None)` for an unknown procedure.
pub(crate) fn dispatch(
    map: &[(u32, u32, u32)],
    proc_: u32,
    d: &mut Decoder<'_>,
    e: &mut Encoder,
) -> Result<Option<()>, XdrError> {
    match proc_ {
        0 => {}
        1 | 2 => {
            // SET / UNSET: nobody else registers with this portmapper.
            let _ = (d.u32()?, d.u32()?, d.u32()?, d.u32()?);
            e.bool(false);
        }
        3 => {
            let (prog, vers, prot, _port) = (d.u32()?, d.u32()?, d.u32()?, d.u32()?);
            let port = map
                .iter()
                .find(|(p, v, _)| *p == prog && *v == vers && prot == PROT_TCP)
                .map_or(0, |(_, _, port)| *port);
            e.u32(port);
        }
        4 => {
            for (prog, vers, port) in map {
                e.bool(true).u32(*prog).u32(*vers).u32(PROT_TCP).u32(*port);
            }
            e.bool(false);
        }
        _ => return Ok(None),
    }
    Ok(Some(()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn getport_answers_tcp_only_and_known_programs_only() {
        let map = mappings(2049, Some(111));
        let ask = |prog, vers, prot| {
            let mut a = Encoder::new();
            a.u32(prog).u32(vers).u32(prot).u32(0);
            let mut out = Encoder::new();
            dispatch(&map, 3, &mut Decoder::new(a.as_bytes()), &mut out).expect("getport");
            Decoder::new(out.as_bytes()).u32().expect("port")
        };
        assert_eq!(ask(100003, 3, 6), 2049);
        assert_eq!(ask(100005, 3, 6), 2049);
        assert_eq!(ask(100003, 3, 17), 0);
        assert_eq!(ask(100003, 4, 6), 0);
        assert_eq!(ask(100021, 4, 6), 0);
        let mut out = Encoder::new();
        assert!(matches!(
            dispatch(&map, 3, &mut Decoder::new(&[0, 0]), &mut out),
            Err(XdrError::Truncated)
        ));
    }
}
