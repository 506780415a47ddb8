//! The guest kernel: Debian's `linux-image-cloud-amd64`, fetched into a cache without
//! installing it on the host, or a kernel and modules directory given by the caller.

use std::fs::{self, File};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

use crate::error::{Result, VmImageError};
use crate::tools::{APT_CACHE, APT_GET, DEPMOD, DPKG_DEB};

/// Debian's metapackage that always depends on the current cloud kernel.
pub const CLOUD_KERNEL_METAPACKAGE: &str = "linux-image-cloud-amd64";

/// File whose presence marks a fully extracted kernel in the cache.
const COMPLETE_MARKER: &str = ".vessel-complete";

/// Where the guest kernel comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KernelSource {
    /// The kernel that `linux-image-cloud-amd64` currently depends on, downloaded with
    /// `apt-get download` and extracted under this cache directory (reused when present).
    DebianCloud {
        /// Cache directory; each kernel lands in `<cache_dir>/<version>/`.
        cache_dir: PathBuf,
    },
    /// A kernel image and its modules directory (`.../lib/modules/<version>`).
    Local {
        /// The compressed kernel (`vmlinuz-*`).
        vmlinuz: PathBuf,
        /// The modules directory; its name is the kernel version.
        modules_dir: PathBuf,
    },
}

impl KernelSource {
    /// Resolves the source to files on disk, downloading the Debian kernel if needed.
    pub fn resolve(&self) -> Result<Kernel> {
        match self {
            KernelSource::DebianCloud { cache_dir } => fetch_debian_cloud_kernel(cache_dir),
            KernelSource::Local {
                vmlinuz,
                modules_dir,
            } => Kernel::from_paths(vmlinuz, modules_dir),
        }
    }
}

/// A guest kernel on disk: the image to boot and the modules built for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kernel {
    /// The kernel image (bzImage) given to QEMU's `-kernel`.
    pub vmlinuz: PathBuf,
    /// `lib/modules/<version>`, holding `modules.dep` and `modules.builtin`.
    pub modules_dir: PathBuf,
    /// The kernel release, as `uname -r` prints it in the guest.
    pub version: String,
}

impl Kernel {
    /// A kernel from explicit paths; the version is the modules directory's name.
    pub fn from_paths(vmlinuz: &Path, modules_dir: &Path) -> Result<Kernel> {
        if !vmlinuz.is_file() {
            return Err(VmImageError::KernelIncomplete {
                path: vmlinuz.to_path_buf(),
                what: "kernel image (the file does not exist)".into(),
            });
        }
        let version = modules_dir
            .file_name()
            .and_then(|n| n.to_str())
            .filter(|n| !n.is_empty())
            .ok_or_else(|| VmImageError::KernelIncomplete {
                path: modules_dir.to_path_buf(),
                what: "kernel version in its name (expected lib/modules/<version>)".into(),
            })?
            .to_string();
        for required in ["modules.dep", "modules.builtin"] {
            if !modules_dir.join(required).is_file() {
                return Err(VmImageError::KernelIncomplete {
                    path: modules_dir.to_path_buf(),
                    what: format!("{required} (run `depmod -b ROOT {version}`, package kmod)"),
                });
            }
        }
        Ok(Kernel {
            vmlinuz: vmlinuz.to_path_buf(),
            modules_dir: modules_dir.to_path_buf(),
            version,
        })
    }

    /// The kernel unpacked from a Debian kernel package into `root`.
    fn from_package_root(root: &Path, version: &str) -> Result<Kernel> {
        let vmlinuz = root.join("boot").join(format!("vmlinuz-{version}"));
        let modules_dir =
            modules_dir_in(root, version).ok_or_else(|| VmImageError::KernelIncomplete {
                path: root.to_path_buf(),
                what: format!("lib/modules/{version}"),
            })?;
        Kernel::from_paths(&vmlinuz, &modules_dir)
    }
}

fn modules_dir_in(root: &Path, version: &str) -> Option<PathBuf> {
    ["lib/modules", "usr/lib/modules"]
        .iter()
        .map(|base| root.join(base).join(version))
        .find(|dir| dir.is_dir())
}

/// The package `linux-image-cloud-amd64` depends on now, e.g.
/// `linux-image-6.1.0-56-cloud-amd64`, from the local apt lists.
pub fn current_cloud_kernel_package() -> Result<String> {
    let output = APT_CACHE.run(["depends", CLOUD_KERNEL_METAPACKAGE], None)?;
    parse_depends(&String::from_utf8_lossy(&output.stdout)).ok_or(
        VmImageError::KernelPackageUnresolved {
            metapackage: CLOUD_KERNEL_METAPACKAGE,
        },
    )
}

fn parse_depends(text: &str) -> Option<String> {
    text.lines()
        .filter_map(|line| line.trim().trim_start_matches('|').strip_prefix("Depends:"))
        .map(str::trim)
        .find(|dep| dep.starts_with("linux-image-") && !dep.starts_with('<'))
        .map(str::to_string)
}

/// The kernel release a kernel package holds: `linux-image-6.1.0-56-cloud-amd64` (or its
/// `-unsigned` twin) → `6.1.0-56-cloud-amd64`.
fn package_kernel_version(package: &str) -> Option<&str> {
    let version = package.strip_prefix("linux-image-")?;
    let version = version.strip_suffix("-unsigned").unwrap_or(version);
    (!version.is_empty()).then_some(version)
}

/// Fetches the current Debian cloud kernel into `cache_dir` (without installing it) and
/// returns it; a kernel already extracted there is reused without touching the network.
/// When apt cannot name the current kernel (no package lists, no apt), the kernel extracted
/// last into the cache is used. Concurrent callers sharing a cache wait on a lock file.
pub fn fetch_debian_cloud_kernel(cache_dir: &Path) -> Result<Kernel> {
    let resolved = current_cloud_kernel_package().and_then(|package| {
        let version = package_kernel_version(&package)
            .ok_or(VmImageError::KernelPackageUnresolved {
                metapackage: CLOUD_KERNEL_METAPACKAGE,
            })?
            .to_string();
        Ok((package, version))
    });
    fs::create_dir_all(cache_dir).map_err(VmImageError::io("create", cache_dir))?;
    let lock_path = cache_dir.join(".lock");
    let lock_file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(VmImageError::io("open", &lock_path))?;
    let _lock =
        Flock::lock(lock_file, FlockArg::LockExclusive).map_err(|(_, errno)| VmImageError::Io {
            action: "lock",
            path: lock_path.clone(),
            source: errno.into(),
        })?;

    let (package, version) = match resolved {
        Ok(found) => found,
        Err(
            error @ (VmImageError::KernelPackageUnresolved { .. }
            | VmImageError::ToolMissing { .. }),
        ) => {
            let Some(version) = newest_cached(cache_dir) else {
                return Err(error);
            };
            tracing::warn!(%error, kernel = %version, "using the cached kernel");
            return Kernel::from_package_root(&cache_dir.join(&version), &version);
        }
        Err(error) => return Err(error),
    };
    let target = cache_dir.join(&version);
    if target.join(COMPLETE_MARKER).is_file() {
        tracing::debug!(kernel = %version, cache = %cache_dir.display(), "kernel found in cache");
        return Kernel::from_package_root(&target, &version);
    }
    tracing::info!(package = %package, cache = %cache_dir.display(), "downloading guest kernel");
    let work = cache_dir.join(format!(".download-{}", std::process::id()));
    remove_dir_if_exists(&work)?;
    remove_dir_if_exists(&target)?;
    fs::create_dir_all(&work).map_err(VmImageError::io("create", &work))?;
    let result = download_and_extract(&package, &version, &work, &target);
    remove_dir_if_exists(&work)?;
    result
}

/// The version extracted most recently into the cache, if any.
fn newest_cached(cache_dir: &Path) -> Option<String> {
    fs::read_dir(cache_dir)
        .ok()?
        .filter_map(|entry| entry.ok())
        .filter_map(|entry| {
            let modified = entry
                .path()
                .join(COMPLETE_MARKER)
                .metadata()
                .ok()?
                .modified()
                .ok()?;
            Some((modified, entry.file_name().to_str()?.to_string()))
        })
        .max()
        .map(|(_, version)| version)
}

fn download_and_extract(
    package: &str,
    version: &str,
    work: &Path,
    target: &Path,
) -> Result<Kernel> {
    APT_GET
        .run(["download", "-q", package], Some(work))
        .map_err(|error| match error {
            VmImageError::ToolFailed { stderr, .. } => VmImageError::KernelDownloadFailed {
                package: package.to_string(),
                stderr,
            },
            other => other,
        })?;
    let deb = fs::read_dir(work)
        .map_err(VmImageError::io("read", work))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .find(|path| path.extension().is_some_and(|ext| ext == "deb"))
        .ok_or_else(|| VmImageError::KernelIncomplete {
            path: work.to_path_buf(),
            what: format!(".deb file after `apt-get download {package}`"),
        })?;
    let root = work.join("root");
    DPKG_DEB.run(["-x".as_ref(), deb.as_os_str(), root.as_os_str()], None)?;
    // Debian's postinst runs depmod; the package itself ships no modules.dep.
    let modules_dir =
        modules_dir_in(&root, version).ok_or_else(|| VmImageError::KernelIncomplete {
            path: deb.clone(),
            what: format!("lib/modules/{version}"),
        })?;
    if !modules_dir.join("modules.dep").is_file() {
        DEPMOD.run(["-b".as_ref(), root.as_os_str(), version.as_ref()], None)?;
    }
    fs::rename(&root, target).map_err(VmImageError::io("move into the cache", target))?;
    let marker = target.join(COMPLETE_MARKER);
    fs::write(&marker, format!("{package}\n")).map_err(VmImageError::io("write", &marker))?;
    Kernel::from_package_root(target, version)
}

fn remove_dir_if_exists(dir: &Path) -> Result<()> {
    match fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(VmImageError::io("remove", dir)(e))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_apt_cache_depends() {
        let text = "linux-image-cloud-amd64\n  Depends: linux-image-6.1.0-56-cloud-amd64\n";
        assert_eq!(
            parse_depends(text).as_deref(),
            Some("linux-image-6.1.0-56-cloud-amd64")
        );
        let alt = "linux-image-cloud-amd64\n |Depends: linux-image-6.12.9-cloud-amd64-unsigned\n  Depends: <x>\n";
        assert_eq!(
            parse_depends(alt).as_deref(),
            Some("linux-image-6.12.9-cloud-amd64-unsigned")
        );
        assert_eq!(parse_depends("linux-image-cloud-amd64\n"), None);
    }

    #[test]
    fn kernel_version_from_package_name() {
        assert_eq!(
            package_kernel_version("linux-image-6.1.0-56-cloud-amd64"),
            Some("6.1.0-56-cloud-amd64")
        );
        assert_eq!(
            package_kernel_version("linux-image-6.12.9-cloud-amd64-unsigned"),
            Some("6.12.9-cloud-amd64")
        );
        assert_eq!(package_kernel_version("linux-headers-6.1"), None);
    }

    #[test]
    fn newest_cached_kernel_is_the_last_extracted() {
        let dir = std::env::temp_dir().join(format!("vessel-vmimage-cache-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        assert_eq!(newest_cached(&dir), None);
        for (version, age) in [
            ("6.1.0-9-cloud-amd64", 0),
            ("6.1.0-56-cloud-amd64", 100),
            ("6.1.0-7-cloud-amd64", 200),
        ] {
            let marker = dir.join(version).join(COMPLETE_MARKER);
            fs::create_dir_all(marker.parent().expect("parent")).expect("mkdir");
            fs::write(&marker, "x").expect("marker");
            let when = std::time::SystemTime::now() - std::time::Duration::from_secs(age);
            File::options()
                .write(true)
                .open(&marker)
                .expect("open")
                .set_modified(when)
                .expect("mtime");
        }
        fs::create_dir_all(dir.join("6.9.9-incomplete")).expect("mkdir");
        assert_eq!(newest_cached(&dir).as_deref(), Some("6.1.0-9-cloud-amd64"));
        fs::remove_dir_all(&dir).expect("cleanup");
    }
}
