//! Attaching and detaching the program pair. Attaching works on a whole batch of interfaces at
//! once, one thread per interface and hook inside the interface's network namespace; detaching
//! runs on a thread that is already inside the namespace (see [`super::netns`]).
use std::{
    fs, io,
    os::fd::{AsFd as _, BorrowedFd},
    path::Path,
    sync::{Mutex, PoisonError},
};

use aya::{
    Ebpf,
    programs::{
        SchedClassifier, TcAttach, TcAttachType,
        links::{FdLink, PinnedLink},
        tc::{self, NlOptions},
    },
};
use multus_common::programs;

use super::{
    AttachMode,
    error::{DataplaneError, Result},
    netns,
    pins::{self, PinLayout},
    sys,
};

/// The two hooks, with their program and pin names.
pub(crate) const HOOKS: [(TcAttachType, &str, &str); 2] = [
    (TcAttachType::Ingress, programs::INGRESS, pins::INGRESS_LINK),
    (TcAttachType::Egress, programs::EGRESS, pins::EGRESS_LINK),
];

/// One interface of a batch, resolved: where it is and the attachment id it gets.
pub(crate) struct Target<'a> {
    pub netns: &'a Path,
    pub ifname: &'a str,
    pub ifindex: u32,
    pub id: u32,
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

/// The descriptor of a loaded program, shareable between threads.
fn program_fd<'a>(ebpf: &'a Ebpf, name: &'static str) -> Result<BorrowedFd<'a>> {
    let prog = ebpf.program(name).ok_or(DataplaneError::Program {
        name,
        source: Box::new(aya::programs::ProgramError::NotLoaded),
    })?;
    let fd = prog.fd().map_err(|e| DataplaneError::Program {
        name,
        source: Box::new(e),
    })?;
    Ok(fd.as_fd())
}

fn attach_err(
    program: &'static str,
    mode: AttachMode,
    target: &Target<'_>,
    source: Box<dyn std::error::Error + Send + Sync>,
) -> DataplaneError {
    DataplaneError::Attach {
        program,
        mode,
        ifname: target.ifname.to_owned(),
        netns: target.netns.to_owned(),
        source,
    }
}

/// Attaches both programs to every target, all hooks at once. TCX links are pinned under each
/// attachment's link directory (which must exist); netlink (clsact) filters stay in the kernel by
/// themselves. Returns the failures, one per hook that failed; hooks that succeeded stay
/// attached (the caller rolls the batch back as a whole).
pub(crate) fn attach_all(
    ebpf: &mut Ebpf,
    layout: &PinLayout,
    mode: AttachMode,
    targets: &[Target<'_>],
) -> Result<Vec<DataplaneError>> {
    let results = match mode {
        AttachMode::Tcx => {
            let ebpf = &*ebpf;
            let fds = [
                program_fd(ebpf, programs::INGRESS)?,
                program_fd(ebpf, programs::EGRESS)?,
            ];
            netns::run_each(targets.iter().flat_map(|target| {
                HOOKS.iter().zip(fds).map(move |((hook, name, dir), prog)| {
                    let job = move || attach_tcx(layout, target, *hook, name, dir, prog);
                    (target.netns, job)
                })
            }))
        }
        AttachMode::Clsact => {
            // aya's netlink attach takes `&mut`: the filters go in one at a time (the kernel
            // serialises them under RTNL anyway), the rest of each job runs in parallel.
            let ebpf = Mutex::new(ebpf);
            let ebpf = &ebpf;
            netns::run_each(targets.iter().flat_map(|target| {
                HOOKS.iter().map(move |(hook, name, _)| {
                    let job = move || attach_clsact(ebpf, target, *hook, name);
                    (target.netns, job)
                })
            }))
        }
    };
    Ok(results.into_iter().filter_map(Result::err).collect())
}

/// One TCX hook: create the link, pin it. A link that cannot be pinned is detached again when
/// its only descriptor closes.
fn attach_tcx(
    layout: &PinLayout,
    target: &Target<'_>,
    hook: TcAttachType,
    name: &'static str,
    dir: &str,
    prog: BorrowedFd<'_>,
) -> Result<()> {
    let ingress = hook == TcAttachType::Ingress;
    let link = sys::tcx_link_create(prog, target.ifindex, ingress)
        .map_err(|e| attach_err(name, AttachMode::Tcx, target, Box::new(e)))?;
    let path = layout.link(target.id, dir);
    sys::obj_pin(link.as_fd(), &path).map_err(|e| DataplaneError::Pin {
        path,
        source: Box::new(e),
    })?;
    // Closing our descriptor does not detach: the pin holds the link.
    Ok(())
}

/// One clsact hook: the qdisc (shared by both hooks), then a direct-action filter.
fn attach_clsact(
    ebpf: &Mutex<&mut Ebpf>,
    target: &Target<'_>,
    hook: TcAttachType,
    name: &'static str,
) -> Result<()> {
    // EEXIST when the qdisc is there already (the other hook's job may just have added it); a
    // real failure shows up in the attach below.
    let _ = tc::qdisc_add_clsact(target.ifindex);
    let mut ebpf = ebpf.lock().unwrap_or_else(PoisonError::into_inner);
    let prog = program(&mut ebpf, name)?;
    let how = TcAttach::Netlink {
        parent: hook.into(),
        options: NlOptions::default(),
    };
    let err = |e| attach_err(name, AttachMode::Clsact, target, Box::new(e));
    let link_id = prog.attach(target.ifindex, how).map_err(err)?;
    let link = prog.take_link(link_id).map_err(err)?;
    // Dropping a netlink link would remove the filter: leave it to the kernel, detach by name.
    std::mem::forget(link);
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
        AttachMode::Tcx => release(&layout.link(id, dir)),
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

/// Removes a link pin and detaches the link before returning. Missing is fine.
///
/// Removing the pin alone would leave the release to a kernel worker, which then holds RTNL
/// through an RCU grace period per TCX link while every netlink user on the node (the next
/// pod's delegates and attaches) waits behind it. Holding a descriptor across the unlink makes
/// ours the last reference, and closing it releases the link in this thread.
pub(crate) fn release(path: &Path) -> Result<()> {
    let link = match sys::obj_get(path) {
        Ok(link) => link,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(DataplaneError::io("opening link pin", path, e)),
    };
    match fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(DataplaneError::io("unpinning", path, e)),
    }
    drop(link);
    Ok(())
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
