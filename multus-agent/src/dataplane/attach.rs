//! Attaching and detaching the program pair on one interface. Every function here runs on a
//! thread that is already inside the interface's network namespace (see [`super::netns`]).
use std::{fs, io, path::Path};

use aya::{
    Ebpf,
    programs::{
        LinkOrder, SchedClassifier, TcAttach, TcAttachType,
        links::{FdLink, PinnedLink},
        tc::{self, NlOptions},
    },
};
use multus_common::programs;

use super::{
    AttachMode,
    error::{DataplaneError, Result},
    pins::PinLayout,
};

/// The two hooks, with their program and pin names.
pub(crate) const HOOKS: [(TcAttachType, &str, &str); 2] = [
    (TcAttachType::Ingress, programs::INGRESS, "ingress"),
    (TcAttachType::Egress, programs::EGRESS, "egress"),
];

/// What the attach functions need to name the interface in errors.
pub(crate) struct Target<'a> {
    pub netns: &'a Path,
    pub ifname: &'a str,
    pub ifindex: u32,
}

pub(crate) fn program<'a>(
    ebpf: &'a mut Ebpf,
    name: &'static str,
) -> Result<&'a mut SchedClassifier> {
    let prog = ebpf.program_mut(name).ok_or(DataplaneError::Program {
        name,
        source: Box::new(aya::programs::ProgramError::NotLoaded),
    })?;
    prog.try_into().map_err(|e| DataplaneError::Program {
        name,
        source: Box::new(e),
    })
}

/// Attaches both programs. TCX links are pinned under the attachment's link directory; netlink
/// (clsact) filters stay in the kernel by themselves. On failure, what was attached is removed.
pub(crate) fn attach_pair(
    ebpf: &mut Ebpf,
    layout: &PinLayout,
    id: u32,
    mode: AttachMode,
    target: &Target<'_>,
) -> Result<()> {
    if mode == AttachMode::Clsact {
        // EEXIST when the qdisc is there already; a real failure shows up in the attach below.
        let _ = tc::qdisc_add_clsact(target.ifindex);
    }
    for (done, (hook, name, dir)) in HOOKS.iter().enumerate() {
        if let Err(e) = attach_one(ebpf, layout, id, mode, target, *hook, name, dir) {
            for (hook, name, dir) in &HOOKS[..done] {
                let _ = detach_one(layout, id, mode, target.ifindex, *hook, name, dir);
            }
            return Err(e);
        }
    }
    Ok(())
}

#[allow(
    clippy::too_many_arguments,
    reason = "internal helper called from one place"
)]
fn attach_one(
    ebpf: &mut Ebpf,
    layout: &PinLayout,
    id: u32,
    mode: AttachMode,
    target: &Target<'_>,
    hook: TcAttachType,
    name: &'static str,
    dir: &str,
) -> Result<()> {
    let attach_err = |source: Box<dyn std::error::Error + Send + Sync>| DataplaneError::Attach {
        program: name,
        mode,
        ifname: target.ifname.to_owned(),
        netns: target.netns.to_owned(),
        source,
    };
    let prog = program(ebpf, name)?;
    let how = match mode {
        AttachMode::Tcx => TcAttach::Tcx {
            attach_type: hook,
            order: LinkOrder::default(),
        },
        AttachMode::Clsact => TcAttach::Netlink {
            parent: hook.into(),
            options: NlOptions::default(),
        },
    };
    let link_id = prog
        .attach(target.ifindex, how)
        .map_err(|e| attach_err(Box::new(e)))?;
    let link = prog
        .take_link(link_id)
        .map_err(|e| attach_err(Box::new(e)))?;
    match mode {
        AttachMode::Tcx => {
            let path = layout.link(id, dir);
            let fd_link: FdLink = link.try_into().map_err(|e| attach_err(Box::new(e)))?;
            // Closing our fd after pinning does not detach: the pin holds the link.
            fd_link.pin(&path).map_err(|e| DataplaneError::Pin {
                path,
                source: Box::new(e),
            })?;
        }
        // Dropping a netlink link would remove the filter: leave it to the kernel, detach by name.
        AttachMode::Clsact => std::mem::forget(link),
    }
    Ok(())
}

/// Detaches both programs; keeps going on errors and returns them all.
pub(crate) fn detach_pair(
    layout: &PinLayout,
    id: u32,
    mode: AttachMode,
    ifindex: u32,
) -> Vec<DataplaneError> {
    HOOKS
        .iter()
        .filter_map(|(hook, name, dir)| {
            detach_one(layout, id, mode, ifindex, *hook, name, dir).err()
        })
        .collect()
}

fn detach_one(
    layout: &PinLayout,
    id: u32,
    mode: AttachMode,
    ifindex: u32,
    hook: TcAttachType,
    name: &'static str,
    dir: &str,
) -> Result<()> {
    match mode {
        AttachMode::Tcx => unpin(&layout.link(id, dir)),
        AttachMode::Clsact => match tc::qdisc_detach_program(ifindex, hook.into(), name) {
            Ok(()) => Ok(()),
            Err(tc::TcError::IoError(e)) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(DataplaneError::Attach {
                program: name,
                mode,
                ifname: format!("ifindex {ifindex}"),
                netns: layout.root().to_owned(),
                source: Box::new(e),
            }),
        },
    }
}

/// Removes a link pin; the kernel detaches the link once nothing holds it. Missing is fine.
pub(crate) fn unpin(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(DataplaneError::io("unpinning", path, e)),
    }
}

/// Swaps the freshly loaded program into an existing pinned TCX link (atomic: no packet sees a
/// gap). Returns `Ok(false)` when there is no pin.
pub(crate) fn adopt_link(ebpf: &mut Ebpf, path: &Path, name: &'static str) -> Result<bool> {
    let pinned = match PinnedLink::from_pin(path) {
        Ok(pinned) => pinned,
        Err(aya::programs::links::LinkError::SyscallError(e))
            if e.io_error.kind() == io::ErrorKind::NotFound =>
        {
            return Ok(false);
        }
        Err(e) => {
            return Err(DataplaneError::Pin {
                path: path.to_owned(),
                source: Box::new(e),
            });
        }
    };
    let pin_err = |e: Box<dyn std::error::Error + Send + Sync>| DataplaneError::Pin {
        path: path.to_owned(),
        source: e,
    };
    let link = FdLink::from(pinned)
        .try_into()
        .map_err(|e: aya::programs::links::LinkError| pin_err(Box::new(e)))?;
    let prog = program(ebpf, name)?;
    let link_id = prog
        .attach_to_link(link)
        .map_err(|e| pin_err(Box::new(e)))?;
    // Drop our handle without detaching: the pin keeps the link alive.
    let link = prog.take_link(link_id).map_err(|e| pin_err(Box::new(e)))?;
    let fd_link: FdLink = link
        .try_into()
        .map_err(|e: aya::programs::links::LinkError| pin_err(Box::new(e)))?;
    drop(fd_link);
    Ok(true)
}
