//! A TCP relay to the test API server listening inside another network namespace: TLS stays
//! end to end between the client and the server (unlike [`super::FaultProxy`], which ends it),
//! so a client there sees the real server, connection reuse included. For benches.
use std::{net::SocketAddr, path::Path, thread::JoinHandle};

use tokio::{
    net::{TcpListener, TcpStream},
    sync::oneshot,
};

use super::proxy::bind_in_netns;

/// A running relay; stopped when dropped.
#[derive(Debug)]
pub struct TcpRelay {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl TcpRelay {
    /// Relays a free 127.0.0.1 port of the namespace at `netns` to `upstream`.
    #[track_caller]
    pub fn start_in_netns(upstream: SocketAddr, netns: &Path) -> Self {
        let listener = bind_in_netns(netns)
            .unwrap_or_else(|e| panic!("binding the relay in {}: {e}", netns.display()));
        let addr = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("the relay's address: {e}"));
        let (stop, mut stopped) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("tcp-relay".to_owned())
            .spawn(move || {
                let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                else {
                    return;
                };
                runtime.block_on(async move {
                    let Ok(listener) = TcpListener::from_std(listener) else {
                        return;
                    };
                    loop {
                        let mut inbound = tokio::select! {
                            _ = &mut stopped => return,
                            accepted = listener.accept() => match accepted {
                                Ok((stream, _)) => stream,
                                Err(_) => continue,
                            },
                        };
                        tokio::spawn(async move {
                            // Without TCP_NODELAY the relay's own writes would wait out
                            // delayed ACKs and add up to 40 ms per request.
                            let _ = inbound.set_nodelay(true);
                            if let Ok(mut outbound) = TcpStream::connect(upstream).await {
                                let _ = outbound.set_nodelay(true);
                                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound)
                                    .await;
                            }
                        });
                    }
                });
            })
            .unwrap_or_else(|e| panic!("spawning the relay thread: {e}"));
        Self {
            addr,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// `https://127.0.0.1:PORT`, for a kubeconfig's `server` (the server's certificate names
    /// 127.0.0.1).
    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }
}

impl Drop for TcpRelay {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
