//! A running VM's resources changed in place: a disk whose image grew is resized under the
//! guest (which sees the new capacity at once, as virtio-blk reports a config change).

use std::path::Path;

use crate::error::Result;
use crate::qmp::{BlockResize, QueryBlock};
use crate::vm::RunningVm;

impl RunningVm {
    /// Tells QEMU that the image at `path` (a raw file a disk of this VM reads) is now `size`
    /// bytes, so that the guest's disk grows; `false` when no disk of the VM reads that file
    /// (for instance one served over NBD, whose size QEMU learns at its next connection).
    pub fn grow_disk(&self, path: &Path, size: u64) -> Result<bool> {
        let want = path.to_string_lossy();
        let node = self
            .qmp()
            .execute(&QueryBlock)?
            .into_iter()
            .filter_map(|b| b.inserted)
            .find(|i| i.file == want)
            .and_then(|i| i.node_name);
        let Some(node_name) = node else {
            return Ok(false);
        };
        self.qmp().execute(&BlockResize { node_name, size })?;
        tracing::info!(vm = %self.name, file = %want, size, "disk grown");
        Ok(true)
    }
}
