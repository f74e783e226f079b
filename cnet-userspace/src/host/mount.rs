//! Mounts through mount(2)/umount2(2).
use std::{ffi::CString, path::Path};

use super::HostError;

fn cstr(p: &Path) -> Result<CString, HostError> {
    CString::new(p.as_os_str().as_encoded_bytes())
        .map_err(|e| HostError::io(format!("path {}", p.display()), std::io::Error::other(e)))
}

/// `mount -t FSTYPE SOURCE TARGET` with `flags`.
pub fn mount(
    source: &str,
    target: &Path,
    fstype: Option<&str>,
    flags: libc::c_ulong,
) -> Result<(), HostError> {
    let src = CString::new(source)
        .map_err(|e| HostError::io(format!("mount source {source:?}"), std::io::Error::other(e)))?;
    let tgt = cstr(target)?;
    let fs = fstype
        .map(|f| CString::new(f).map_err(|e| HostError::io("fstype", std::io::Error::other(e))))
        .transpose()?;
    // SAFETY: valid NUL-terminated strings (or null) that outlive the call.
    let rc = unsafe {
        libc::mount(
            src.as_ptr(),
            tgt.as_ptr(),
            fs.as_ref().map_or(std::ptr::null(), |f| f.as_ptr()),
            flags,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(HostError::io(
            format!("mounting {source} on {}", target.display()),
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}

/// `umount -l TARGET` (detached: busy mounts go once unused).
pub fn umount_detach(target: &Path) -> Result<(), HostError> {
    umount2(target, libc::MNT_DETACH)
}

/// `umount TARGET`.
pub fn umount(target: &Path) -> Result<(), HostError> {
    umount2(target, 0)
}

fn umount2(target: &Path, flags: libc::c_int) -> Result<(), HostError> {
    let tgt = cstr(target)?;
    // SAFETY: a valid NUL-terminated path.
    if unsafe { libc::umount2(tgt.as_ptr(), flags) } != 0 {
        return Err(HostError::io(
            format!("unmounting {}", target.display()),
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}
