//! Building without booting: what a caller gets back when something is missing or wrong,
//! explicit kernels, and tamper detection.

mod support;

use std::fs;
use std::path::{Path, PathBuf};

use support::{kernel_cache, TempDir};
use vessel_vmimage::{
    build_vm_image, busybox_rootfs, fetch_debian_cloud_kernel, DiskFormat, Kernel, KernelSource,
    VmImage, VmImageError, VmImageKind, VmImageSpec, DEFAULT_BUSYBOX,
};

/// The Debian kernel from the shared cache, as an explicit kernel (no apt involved).
fn cached_kernel() -> Kernel {
    fetch_debian_cloud_kernel(&kernel_cache()).expect("fetch the Debian cloud kernel")
}

fn local(kernel: &Kernel) -> KernelSource {
    KernelSource::Local {
        vmlinuz: kernel.vmlinuz.clone(),
        modules_dir: kernel.modules_dir.clone(),
    }
}

#[test]
fn debian_kernel_is_cached_and_reused() {
    let first = cached_kernel();
    assert!(
        first.vmlinuz.starts_with(kernel_cache()),
        "{}",
        first.vmlinuz.display()
    );
    assert!(
        first.modules_dir.join("modules.dep").is_file(),
        "depmod ran on the extracted package"
    );
    assert!(first.version.ends_with("-cloud-amd64"), "{}", first.version);
    let again = cached_kernel();
    assert_eq!(first, again);
}

#[test]
fn explicit_kernel_builds_the_same_image_as_the_cache() {
    let kernel = cached_kernel();
    let dir = TempDir::new("local-kernel");
    let image = build_vm_image(
        &VmImageSpec::new(local(&kernel), VmImageKind::Initramfs),
        &dir.path().join("a"),
    )
    .expect("build with an explicit kernel");
    assert_eq!(image.manifest.kernel_version, kernel.version);
    assert_eq!(
        image.manifest.cmdline,
        "console=ttyS0 panic=-1 no_timer_check"
    );
    let names: Vec<&str> = image.manifest.files.keys().map(String::as_str).collect();
    assert_eq!(names, ["initrd.img", "vmlinuz"]);
    let mut listing: Vec<String> = fs::read_dir(&image.dir)
        .expect("list image")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    listing.sort();
    assert_eq!(listing, ["image.json", "initrd.img", "vmlinuz"]);
}

#[test]
fn explicit_kernel_without_modules_dep_says_how_to_make_one() {
    let dir = TempDir::new("no-dep");
    let vmlinuz = dir.path().join("vmlinuz");
    fs::write(&vmlinuz, b"not really a kernel").expect("write");
    let modules = dir.path().join("6.1.0-test");
    fs::create_dir(&modules).expect("mkdir");
    let err = Kernel::from_paths(&vmlinuz, &modules).expect_err("no modules.dep");
    assert!(
        err.to_string()
            .contains("modules.dep (run `depmod -b ROOT 6.1.0-test`, package kmod)"),
        "{err}"
    );
}

#[test]
fn tampered_image_fails_verification() {
    let kernel = cached_kernel();
    let dir = TempDir::new("tamper");
    let image = build_vm_image(
        &VmImageSpec::new(local(&kernel), VmImageKind::Initramfs),
        &dir.path().join("img"),
    )
    .expect("build");
    let opened = VmImage::open(&image.dir).expect("open");
    assert_eq!(opened, image);
    opened.verify().expect("untouched image verifies");
    let mut initrd = fs::read(image.initrd_path()).expect("read initrd");
    let last = initrd.len() - 1;
    initrd[last] ^= 0xff;
    fs::write(image.initrd_path(), &initrd).expect("write initrd");
    assert!(matches!(
        opened.verify(),
        Err(VmImageError::DigestMismatch { .. })
    ));
    fs::write(image.initrd_path(), b"short").expect("truncate initrd");
    assert!(matches!(
        VmImage::open(&image.dir),
        Err(VmImageError::DigestMismatch { .. })
    ));
}

#[test]
fn errors_name_what_is_missing() {
    let kernel = cached_kernel();
    let dir = TempDir::new("errors");
    let out = |name: &str| -> PathBuf { dir.path().join(name) };

    let mut spec = VmImageSpec::new(local(&kernel), VmImageKind::Initramfs);
    spec.busybox = out("no-busybox");
    let err = build_vm_image(&spec, &out("a")).expect_err("busybox missing");
    assert!(
        err.to_string()
            .ends_with("does not exist: install the Debian package busybox-static"),
        "{err}"
    );
    assert!(
        fs::read_dir(out("a")).expect("out dir").next().is_none(),
        "a failed build leaves nothing behind"
    );

    spec.busybox = PathBuf::from("/usr/bin/env"); // dynamically linked on Debian
    let err = build_vm_image(&spec, &out("b")).expect_err("dynamic busybox");
    assert!(
        err.to_string()
            .ends_with("is dynamically linked: install the Debian package busybox-static"),
        "{err}"
    );

    fs::write(out("b").join("stray"), b"x").expect("write");
    let err = build_vm_image(
        &VmImageSpec::new(local(&kernel), VmImageKind::Initramfs),
        &out("b"),
    )
    .expect_err("not empty");
    assert!(matches!(err, VmImageError::OutputNotEmpty { .. }), "{err}");

    let missing_root = VmImageKind::Disk {
        rootfs_dir: out("no-rootfs"),
        size: 64 << 20,
        format: DiskFormat::Raw,
    };
    let err = build_vm_image(&VmImageSpec::new(local(&kernel), missing_root), &out("c"))
        .expect_err("no rootfs");
    assert!(matches!(err, VmImageError::RootfsMissing { .. }), "{err}");

    let rootfs = out("rootfs");
    busybox_rootfs(&rootfs, Path::new(DEFAULT_BUSYBOX)).expect("busybox tree");
    let tiny = VmImageKind::Disk {
        rootfs_dir: rootfs,
        size: 1 << 20,
        format: DiskFormat::Raw,
    };
    let err =
        build_vm_image(&VmImageSpec::new(local(&kernel), tiny), &out("d")).expect_err("too small");
    assert!(
        err.to_string()
            .starts_with("disk size 1048576 bytes is too small: give at least"),
        "{err}"
    );
    assert!(
        fs::read_dir(out("d")).expect("out dir").next().is_none(),
        "no partial disk left behind"
    );
}
