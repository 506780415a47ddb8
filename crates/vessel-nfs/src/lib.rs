//! Vessel's user-space NFSv3 server (NAS-like file export of a filesystem volume).
