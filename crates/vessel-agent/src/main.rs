//! Vessel's guest agent: runs commands inside a VM over the `org.vessel.agent` virtio-serial port.
fn main() {}
