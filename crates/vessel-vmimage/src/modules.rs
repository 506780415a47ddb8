//! Which kernel modules go into the initramfs, in which order, resolved from the kernel's own
//! `modules.dep` and `modules.builtin` rather than from a hard-coded list of files.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use crate::error::{Result, VmImageError};
use crate::kernel::Kernel;
use crate::tools::{XZ, ZSTD};

/// Modules without which a guest cannot boot or talk to the host (block, network, console).
pub const REQUIRED_MODULES: &[&str] = &[
    "virtio_pci",
    "virtio_blk",
    "virtio_net",
    "virtio_console",
    "ext4",
];

/// Modules loaded when this kernel has them: the rest of virtio, vsock, failover, ext4's helpers,
/// virtio-mmio (microvm) and the ACPI power button with its input events.
pub const OPTIONAL_MODULES: &[&str] = &[
    "virtio",
    "virtio_ring",
    "virtio_pci_legacy_dev",
    "virtio_pci_modern_dev",
    "virtio_mmio",
    "virtio_rng",
    "virtio_balloon",
    "virtio_mem",
    "vmw_vsock_virtio_transport",
    "failover",
    "net_failover",
    "jbd2",
    "mbcache",
    "crc16",
    "crc32c_generic",
    "button",
    "evdev",
];

/// A kernel's module index: `modules.dep` and `modules.builtin`.
#[derive(Debug)]
pub(crate) struct ModuleIndex {
    /// Module name → (path relative to the modules directory, dependency names).
    deps: BTreeMap<String, (String, Vec<String>)>,
    builtin: BTreeSet<String>,
}

/// One module file to put into the initramfs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ModuleFile {
    /// Path relative to `lib/modules/<version>/`, always ending in `.ko`.
    pub relative: String,
    /// The file on the host (may be compressed).
    pub source: PathBuf,
}

/// `kernel/drivers/char/hw_random/virtio-rng.ko.xz` → `virtio_rng`.
pub(crate) fn module_name(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    let stem = file.split(".ko").next().unwrap_or(file);
    stem.replace('-', "_")
}

/// `foo.ko.xz` → `foo.ko`: modules are stored uncompressed so busybox insmod loads them.
fn uncompressed_path(path: &str) -> String {
    match path.find(".ko") {
        Some(i) => format!("{}.ko", &path[..i]),
        None => path.to_string(),
    }
}

impl ModuleIndex {
    /// Reads the index of `kernel`.
    pub fn load(kernel: &Kernel) -> Result<ModuleIndex> {
        let dep_path = kernel.modules_dir.join("modules.dep");
        let dep = fs::read_to_string(&dep_path).map_err(VmImageError::io("read", &dep_path))?;
        let builtin_path = kernel.modules_dir.join("modules.builtin");
        let builtin =
            fs::read_to_string(&builtin_path).map_err(VmImageError::io("read", &builtin_path))?;
        Ok(ModuleIndex::parse(&dep, &builtin))
    }

    fn parse(dep: &str, builtin: &str) -> ModuleIndex {
        let mut deps = BTreeMap::new();
        for line in dep.lines() {
            let Some((module, rest)) = line.split_once(':') else {
                continue;
            };
            let module = module.trim();
            if module.is_empty() {
                continue;
            }
            let needs = rest.split_whitespace().map(module_name).collect();
            deps.insert(module_name(module), (module.to_string(), needs));
        }
        let builtin = builtin
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(module_name)
            .collect();
        ModuleIndex { deps, builtin }
    }

    /// Whether `name` is compiled into the kernel.
    pub fn is_builtin(&self, name: &str) -> bool {
        self.builtin.contains(name)
    }

    /// The modules to load for `wanted` (plus their dependencies), dependencies first.
    /// Names neither built in nor shipped are returned separately.
    pub fn load_order<'a>(
        &self,
        wanted: impl IntoIterator<Item = &'a str>,
    ) -> (Vec<String>, Vec<String>) {
        let mut order = Vec::new();
        let mut seen = BTreeSet::new();
        let mut unknown = Vec::new();
        for name in wanted {
            let name = name.replace('-', "_");
            if self.is_builtin(&name) {
                continue;
            }
            if !self.deps.contains_key(&name) {
                unknown.push(name);
                continue;
            }
            self.visit(&name, &mut seen, &mut order);
        }
        (order, unknown)
    }

    /// Depth-first, dependencies before dependants; `seen` also breaks (invalid) cycles.
    fn visit(&self, name: &str, seen: &mut BTreeSet<String>, order: &mut Vec<String>) {
        if !seen.insert(name.to_string()) {
            return;
        }
        if let Some((_, needs)) = self.deps.get(name) {
            for dep in needs {
                self.visit(dep, seen, order);
            }
            order.push(name.to_string());
        }
    }

    /// The relative path of a module named in [`ModuleIndex::load_order`].
    pub fn path_of(&self, name: &str) -> Option<&str> {
        self.deps.get(name).map(|(path, _)| path.as_str())
    }
}

/// The modules of a kernel that go into the initramfs.
#[derive(Debug, Clone)]
pub(crate) struct GuestModules {
    /// Module files in load order (dependencies first).
    pub files: Vec<ModuleFile>,
    /// `modules.dep` restricted to those files, so busybox `modprobe` works in the guest.
    pub modules_dep: String,
}

/// The module files the guest needs for `kernel`, in load order. Fails when a module of
/// [`REQUIRED_MODULES`] is neither built in nor shipped; a missing optional one is logged.
pub(crate) fn guest_modules(kernel: &Kernel) -> Result<GuestModules> {
    let index = ModuleIndex::load(kernel)?;
    let wanted = REQUIRED_MODULES.iter().chain(OPTIONAL_MODULES).copied();
    let (order, unknown) = index.load_order(wanted);
    for name in unknown {
        if REQUIRED_MODULES.contains(&name.as_str()) {
            return Err(VmImageError::ModuleMissing {
                module: name,
                kernel_version: kernel.version.clone(),
            });
        }
        tracing::debug!(module = %name, kernel = %kernel.version, "optional module not available");
    }
    let mut files = Vec::with_capacity(order.len());
    let mut modules_dep = String::new();
    for name in order {
        let Some((relative, needs)) = index.deps.get(&name) else {
            continue;
        };
        let source = kernel.modules_dir.join(relative);
        if !source.is_file() {
            return Err(VmImageError::ModuleFileMissing {
                path: source,
                kernel_version: kernel.version.clone(),
            });
        }
        let relative = uncompressed_path(relative);
        modules_dep.push_str(&relative);
        modules_dep.push(':');
        for dep in needs.iter().filter_map(|dep| index.path_of(dep)) {
            modules_dep.push(' ');
            modules_dep.push_str(&uncompressed_path(dep));
        }
        modules_dep.push('\n');
        files.push(ModuleFile { relative, source });
    }
    Ok(GuestModules { files, modules_dep })
}

/// The contents of a module file, decompressed if the kernel ships it compressed.
pub(crate) fn read_module(source: &Path) -> Result<Vec<u8>> {
    let name = source.to_string_lossy();
    if name.ends_with(".ko.gz") {
        let file = fs::File::open(source).map_err(VmImageError::io("open", source))?;
        let mut data = Vec::new();
        flate2::read::GzDecoder::new(file)
            .read_to_end(&mut data)
            .map_err(VmImageError::io("decompress", source))?;
        return Ok(data);
    }
    let tool = if name.ends_with(".ko.xz") {
        XZ
    } else if name.ends_with(".ko.zst") {
        ZSTD
    } else {
        return fs::read(source).map_err(VmImageError::io("read", source));
    };
    Ok(tool.run(["-dc".as_ref(), source.as_os_str()], None)?.stdout)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEP: &str = "\
kernel/drivers/net/virtio_net.ko: kernel/drivers/net/net_failover.ko kernel/net/core/failover.ko
kernel/drivers/net/net_failover.ko: kernel/net/core/failover.ko
kernel/net/core/failover.ko:
kernel/drivers/char/hw_random/virtio-rng.ko.xz:
kernel/drivers/block/virtio_blk.ko:
";
    const BUILTIN: &str = "kernel/fs/ext4/ext4.ko\nkernel/drivers/virtio/virtio.ko\n";

    #[test]
    fn names_are_normalised() {
        assert_eq!(
            module_name("kernel/drivers/char/hw_random/virtio-rng.ko.xz"),
            "virtio_rng"
        );
        assert_eq!(
            uncompressed_path("kernel/a/virtio-rng.ko.xz"),
            "kernel/a/virtio-rng.ko"
        );
    }

    #[test]
    fn dependencies_come_first_builtins_are_skipped() {
        let index = ModuleIndex::parse(DEP, BUILTIN);
        let (order, unknown) = index.load_order([
            "virtio_net",
            "ext4",
            "virtio",
            "virtio-rng",
            "virtio_blk",
            "nope",
        ]);
        assert_eq!(
            order,
            [
                "failover",
                "net_failover",
                "virtio_net",
                "virtio_rng",
                "virtio_blk"
            ]
        );
        assert_eq!(unknown, ["nope"]);
        assert!(index.is_builtin("ext4"));
    }
}
