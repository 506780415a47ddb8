//! Vessel's virtual-machine engine: QEMU command lines, QMP, lifecycle and the guest agent's host side.
