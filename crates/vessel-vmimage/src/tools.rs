//! Host programs this crate drives, each with the Debian package that provides it.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use crate::error::{Result, VmImageError};

/// A host program and its Debian package.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Tool {
    pub name: &'static str,
    pub package: &'static str,
}

pub(crate) const APT_CACHE: Tool = Tool {
    name: "apt-cache",
    package: "apt",
};
pub(crate) const APT_GET: Tool = Tool {
    name: "apt-get",
    package: "apt",
};
pub(crate) const DPKG_DEB: Tool = Tool {
    name: "dpkg-deb",
    package: "dpkg",
};
pub(crate) const DEPMOD: Tool = Tool {
    name: "depmod",
    package: "kmod",
};
pub(crate) const MKFS_EXT4: Tool = Tool {
    name: "mkfs.ext4",
    package: "e2fsprogs",
};
pub(crate) const QEMU_IMG: Tool = Tool {
    name: "qemu-img",
    package: "qemu-utils",
};
pub(crate) const CP: Tool = Tool {
    name: "cp",
    package: "coreutils",
};
pub(crate) const XZ: Tool = Tool {
    name: "xz",
    package: "xz-utils",
};
pub(crate) const ZSTD: Tool = Tool {
    name: "zstd",
    package: "zstd",
};

/// Directories searched after `PATH`: a daemon's PATH may lack the sbin directories where
/// mkfs.ext4 and depmod live.
const FALLBACK_DIRS: [&str; 4] = ["/usr/sbin", "/sbin", "/usr/bin", "/bin"];

impl Tool {
    /// The program's path, or an error naming its package.
    pub fn find(&self) -> Result<PathBuf> {
        let path_var = std::env::var_os("PATH").unwrap_or_default();
        std::env::split_paths(&path_var)
            .chain(FALLBACK_DIRS.iter().map(PathBuf::from))
            .map(|dir| dir.join(self.name))
            .find(|candidate| is_executable(candidate))
            .ok_or(VmImageError::ToolMissing {
                tool: self.name,
                package: self.package,
            })
    }

    /// A command for this program, with a C locale so its output can be parsed.
    pub fn command(&self) -> Result<Command> {
        let mut command = Command::new(self.find()?);
        command.env("LC_ALL", "C").stdin(Stdio::null());
        Ok(command)
    }

    /// Runs the program with `args` and returns its output, or its stderr as an error.
    pub fn run<I, S>(&self, args: I, cwd: Option<&Path>) -> Result<Output>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut command = self.command()?;
        command.args(args);
        if let Some(dir) = cwd {
            command.current_dir(dir);
        }
        run_command(*self, &mut command)
    }
}

/// Runs `command` to completion; a non-zero exit becomes [`VmImageError::ToolFailed`].
pub(crate) fn run_command(tool: Tool, command: &mut Command) -> Result<Output> {
    let line = describe(command);
    tracing::debug!(command = %line, "running");
    let output = command.output().map_err(|source| match source.kind() {
        std::io::ErrorKind::NotFound => VmImageError::ToolMissing {
            tool: tool.name,
            package: tool.package,
        },
        _ => VmImageError::Io {
            action: "run",
            path: PathBuf::from(tool.name),
            source,
        },
    })?;
    if !output.status.success() {
        return Err(VmImageError::ToolFailed {
            command: line,
            status: output.status,
            stderr: tail(&output.stderr),
        });
    }
    Ok(output)
}

fn describe(command: &Command) -> String {
    let mut line = command.get_program().to_string_lossy().into_owned();
    for arg in command.get_args() {
        line.push(' ');
        line.push_str(&arg.to_string_lossy());
    }
    line
}

/// The last few lines of a program's error output, for messages.
fn tail(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let start = lines.len().saturating_sub(6);
    lines[start..].join("; ")
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_tool_names_its_package() {
        let tool = Tool {
            name: "vessel-no-such-tool",
            package: "vessel-no-such-package",
        };
        let err = tool.find().expect_err("tool must be missing");
        assert_eq!(
            err.to_string(),
            "`vessel-no-such-tool` was not found: install the Debian package vessel-no-such-package"
        );
    }

    #[test]
    fn failure_carries_stderr() {
        let sh = Tool {
            name: "sh",
            package: "dash",
        };
        let err = sh
            .run(["-c", "echo boom >&2; exit 3"], None)
            .expect_err("must fail");
        let text = err.to_string();
        assert!(
            text.contains("boom") && text.contains("exit status: 3"),
            "{text}"
        );
    }
}
