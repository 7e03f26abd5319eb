//! A synchronous rtnetlink socket bound to a pod's network namespace.
//!
//! The socket is created on a short-lived thread that entered the namespace with `setns`; a
//! netlink socket stays bound to the namespace it was created in, so every request afterwards
//! acts there without touching any thread's namespace again. No async runtime is involved.
use std::{
    fs::File,
    net::IpAddr,
    os::fd::AsFd as _,
    path::{Path, PathBuf},
};

use netlink_packet_core::{
    NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage,
    NetlinkPayload,
};
use netlink_packet_route::{
    AddressFamily, RouteNetlinkMessage,
    link::{LinkAttribute, LinkMessage},
    route::{
        RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope,
        RouteType,
    },
};
use netlink_sys::{Socket, protocols::NETLINK_ROUTE};
use nix::sched::{CloneFlags, setns};

use crate::error::{Error, Result};

/// A route socket inside one network namespace.
pub struct RouteSocket {
    socket: Socket,
    seq: u32,
    netns: PathBuf,
}

/// A default route found in the main table.
#[derive(Debug, Clone)]
pub struct DefaultRoute {
    /// IPv4 or IPv6.
    pub family: AddressFamily,
    /// Outgoing interface index.
    pub oif: Option<u32>,
    /// Gateway.
    pub gateway: Option<IpAddr>,
    message: RouteMessage,
}

impl RouteSocket {
    /// Opens a route socket inside the namespace at `netns`.
    pub fn open(netns: &Path) -> Result<Self> {
        let file = File::open(netns).map_err(|e| Error::Netns {
            path: netns.to_owned(),
            reason: format!("cannot open: {e}"),
        })?;
        let socket = std::thread::scope(|scope| {
            scope
                .spawn(|| -> Result<Socket> {
                    setns(file.as_fd(), CloneFlags::CLONE_NEWNET).map_err(|e| Error::Netns {
                        path: netns.to_owned(),
                        reason: format!("setns: {e}"),
                    })?;
                    let mut socket = Socket::new(NETLINK_ROUTE).map_err(|e| Error::Netlink {
                        op: "socket".into(),
                        netns: netns.to_owned(),
                        reason: e.to_string(),
                    })?;
                    socket.bind_auto().map_err(|e| Error::Netlink {
                        op: "bind".into(),
                        netns: netns.to_owned(),
                        reason: e.to_string(),
                    })?;
                    // Kernel-side filtering of dumps; older kernels ignore it harmlessly.
                    let _ = socket.set_netlink_get_strict_chk(true);
                    Ok(socket)
                })
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })?;
        Ok(Self {
            socket,
            seq: 0,
            netns: netns.to_owned(),
        })
    }

    fn err(&self, op: &str, reason: impl std::fmt::Display) -> Error {
        Error::Netlink {
            op: op.to_owned(),
            netns: self.netns.clone(),
            reason: reason.to_string(),
        }
    }

    /// Sends one request and collects the replies until the ack or the end of the dump.
    fn request(
        &mut self,
        op: &str,
        message: RouteNetlinkMessage,
        flags: u16,
    ) -> Result<Vec<RouteNetlinkMessage>> {
        self.seq = self.seq.wrapping_add(1);
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | flags;
        header.sequence_number = self.seq;
        let mut msg = NetlinkMessage::new(header, NetlinkPayload::from(message));
        msg.finalize();
        let mut buf = vec![0u8; msg.buffer_len()];
        msg.serialize(&mut buf);
        self.socket
            .send(&buf, 0)
            .map_err(|e| self.err(op, format!("send: {e}")))?;
        let dump = flags & NLM_F_DUMP == NLM_F_DUMP;
        let mut out = Vec::new();
        loop {
            let (data, _) = self
                .socket
                .recv_from_full()
                .map_err(|e| self.err(op, format!("recv: {e}")))?;
            let mut offset = 0;
            while offset < data.len() {
                let reply = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&data[offset..])
                    .map_err(|e| self.err(op, format!("decoding the reply: {e}")))?;
                let len = reply.header.length as usize;
                if len == 0 {
                    return Err(self.err(op, "zero-length reply"));
                }
                offset += (len + 3) & !3;
                if reply.header.sequence_number != self.seq {
                    continue;
                }
                match reply.payload {
                    NetlinkPayload::Done(_) => return Ok(out),
                    NetlinkPayload::Error(e) => match e.code {
                        None => {
                            if !dump {
                                return Ok(out);
                            }
                        }
                        Some(code) => {
                            let errno = std::io::Error::from_raw_os_error(-code.get());
                            return Err(self.err(op, errno));
                        }
                    },
                    NetlinkPayload::InnerMessage(m) => {
                        out.push(m);
                    }
                    _ => {}
                }
            }
        }
    }

    /// Interface index and name of every link in the namespace.
    pub fn links(&mut self) -> Result<Vec<(u32, String)>> {
        let replies = self.request(
            "dump links",
            RouteNetlinkMessage::GetLink(LinkMessage::default()),
            NLM_F_DUMP,
        )?;
        Ok(replies
            .into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewLink(link) => {
                    let name = link.attributes.iter().find_map(|a| match a {
                        LinkAttribute::IfName(n) => Some(n.clone()),
                        _ => None,
                    })?;
                    Some((link.header.index, name))
                }
                _ => None,
            })
            .collect())
    }

    /// The index of interface `name`.
    pub fn link_index(&mut self, name: &str) -> Result<Option<u32>> {
        Ok(self
            .links()?
            .into_iter()
            .find(|(_, n)| n == name)
            .map(|(i, _)| i))
    }

    /// Every default route (0.0.0.0/0 and ::/0) of the main table.
    pub fn default_routes(&mut self) -> Result<Vec<DefaultRoute>> {
        let mut out = Vec::new();
        for family in [AddressFamily::Inet, AddressFamily::Inet6] {
            let mut req = RouteMessage::default();
            req.header.address_family = family;
            let replies = self.request(
                "dump routes",
                RouteNetlinkMessage::GetRoute(req),
                NLM_F_DUMP,
            )?;
            for m in replies {
                let RouteNetlinkMessage::NewRoute(route) = m else {
                    continue;
                };
                if route.header.destination_prefix_length != 0
                    || route.header.kind != RouteType::Unicast
                    || table_of(&route) != u32::from(RouteHeader::RT_TABLE_MAIN)
                {
                    continue;
                }
                let oif = route.attributes.iter().find_map(|a| match a {
                    RouteAttribute::Oif(i) => Some(*i),
                    _ => None,
                });
                let gateway = route.attributes.iter().find_map(|a| match a {
                    RouteAttribute::Gateway(RouteAddress::Inet(v4)) => Some(IpAddr::V4(*v4)),
                    RouteAttribute::Gateway(RouteAddress::Inet6(v6)) => Some(IpAddr::V6(*v6)),
                    _ => None,
                });
                out.push(DefaultRoute {
                    family,
                    oif,
                    gateway,
                    message: route,
                });
            }
        }
        Ok(out)
    }

    /// Deletes a route found by [`RouteSocket::default_routes`].
    pub fn delete_route(&mut self, route: &DefaultRoute) -> Result<()> {
        self.request(
            "delete default route",
            RouteNetlinkMessage::DelRoute(route.message.clone()),
            NLM_F_ACK,
        )
        .map(drop)
    }

    /// Adds a default route via `gateway` out of interface `oif`.
    pub fn add_default_route(&mut self, gateway: IpAddr, oif: u32) -> Result<()> {
        let mut route = RouteMessage::default();
        route.header.address_family = if gateway.is_ipv4() {
            AddressFamily::Inet
        } else {
            AddressFamily::Inet6
        };
        route.header.table = RouteHeader::RT_TABLE_MAIN;
        route.header.protocol = RouteProtocol::Boot;
        route.header.scope = RouteScope::Universe;
        route.header.kind = RouteType::Unicast;
        route
            .attributes
            .push(RouteAttribute::Gateway(gateway.into()));
        route.attributes.push(RouteAttribute::Oif(oif));
        self.request(
            "add default route",
            RouteNetlinkMessage::NewRoute(route),
            NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
        )
        .map(drop)
    }
}

fn table_of(route: &RouteMessage) -> u32 {
    route
        .attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Table(t) => Some(*t),
            _ => None,
        })
        .unwrap_or_else(|| u32::from(route.header.table))
}
