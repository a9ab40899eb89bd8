//! Who this process is in a data-parallel run, from torchrun's environment variables.

use std::net::{IpAddr, Ipv4Addr, TcpListener, ToSocketAddrs};

/// Bad launch variables, each named with its value.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error("{name}={value:?} is not a whole number{expected}")]
    NotANumber {
        name: &'static str,
        value: String,
        expected: &'static str,
    },
    #[error("RANK={rank} is not below WORLD_SIZE={world_size}")]
    RankOutOfRange { rank: usize, world_size: usize },
    #[error(
        "{name} is set but {missing} is not; set RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT together"
    )]
    Incomplete {
        name: &'static str,
        missing: &'static str,
    },
    #[error("cannot find a free port on {addr}: {message}")]
    NoFreePort { addr: String, message: String },
}

/// This process's place in a data-parallel run: torchrun's `RANK`, `WORLD_SIZE`, `LOCAL_RANK`,
/// `LOCAL_WORLD_SIZE`, `MASTER_ADDR` and `MASTER_PORT`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Launch {
    /// 0 ..= world_size - 1; rank 0 hosts the rendezvous store and alone writes files.
    pub rank: usize,
    pub world_size: usize,
    /// The rank among the processes of this machine (picks the GPU).
    pub local_rank: usize,
    /// Processes on this machine (torchrun's `LOCAL_WORLD_SIZE`; defaults to the world size),
    /// which share its cores.
    pub local_world_size: usize,
    pub master_addr: String,
    pub master_port: u16,
}

impl Launch {
    /// torchrun's default port.
    pub const DEFAULT_PORT: u16 = 29500;

    /// Reads the variables; `None` when `WORLD_SIZE` and `RANK` are both unset (a plain,
    /// single-process run). `MASTER_ADDR` defaults to 127.0.0.1, `MASTER_PORT` to 29500 and
    /// `LOCAL_RANK` to `RANK`, as torchrun's.
    pub fn from_env() -> Result<Option<Self>, LaunchError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// [`Launch::from_env`] over any variable lookup.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Option<Self>, LaunchError> {
        let number =
            |name: &'static str, expected: &'static str| -> Result<Option<u64>, LaunchError> {
                get(name)
                    .map(|v| {
                        v.trim()
                            .parse::<u64>()
                            .map_err(|_| LaunchError::NotANumber {
                                name,
                                value: v.clone(),
                                expected,
                            })
                    })
                    .transpose()
            };
        let world = number("WORLD_SIZE", " of at least 1")?;
        let rank = number("RANK", "")?;
        let (world, rank) = match (world, rank) {
            (None, None) => return Ok(None),
            (Some(_), None) => {
                return Err(LaunchError::Incomplete {
                    name: "WORLD_SIZE",
                    missing: "RANK",
                });
            }
            (None, Some(_)) => {
                return Err(LaunchError::Incomplete {
                    name: "RANK",
                    missing: "WORLD_SIZE",
                });
            }
            (Some(w), Some(r)) => (w as usize, r as usize),
        };
        if world == 0 {
            return Err(LaunchError::NotANumber {
                name: "WORLD_SIZE",
                value: "0".into(),
                expected: " of at least 1",
            });
        }
        if rank >= world {
            return Err(LaunchError::RankOutOfRange {
                rank,
                world_size: world,
            });
        }
        let port = match number("MASTER_PORT", " between 1 and 65535")? {
            None => Self::DEFAULT_PORT,
            Some(p) if (1..=65535).contains(&p) => p as u16,
            Some(p) => {
                return Err(LaunchError::NotANumber {
                    name: "MASTER_PORT",
                    value: p.to_string(),
                    expected: " between 1 and 65535",
                });
            }
        };
        Ok(Some(Launch {
            rank,
            world_size: world,
            local_rank: number("LOCAL_RANK", "")?.map_or(rank, |r| r as usize),
            local_world_size: number("LOCAL_WORLD_SIZE", "")?
                .map_or(world, |n| (n as usize).max(1)),
            master_addr: get("MASTER_ADDR").unwrap_or_else(|| "127.0.0.1".into()),
            master_port: port,
        }))
    }

    /// Rank `rank` of `world_size` processes on this machine, meeting at 127.0.0.1:`port`.
    pub fn local(rank: usize, world_size: usize, port: u16) -> Self {
        Launch {
            rank,
            world_size,
            local_rank: rank,
            local_world_size: world_size,
            master_addr: "127.0.0.1".into(),
            master_port: port,
        }
    }

    /// The variables that make a child process this rank (what a launcher sets).
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("RANK", self.rank.to_string()),
            ("WORLD_SIZE", self.world_size.to_string()),
            ("LOCAL_RANK", self.local_rank.to_string()),
            ("LOCAL_WORLD_SIZE", self.local_world_size.to_string()),
            ("MASTER_ADDR", self.master_addr.clone()),
            ("MASTER_PORT", self.master_port.to_string()),
        ]
    }

    /// Whether the master address is this machine's loopback (every rank is local).
    pub fn is_loopback(&self) -> bool {
        if self.master_addr == "localhost" {
            return true;
        }
        self.master_addr
            .parse::<IpAddr>()
            .map(|ip| ip.is_loopback())
            .unwrap_or(false)
    }

    /// Whether this rank writes files (checkpoints, logs, reports).
    pub fn is_writer(&self) -> bool {
        self.rank == 0
    }
}

/// A port that was free on `addr` a moment ago (the OS picks it); launchers use it when no
/// `MASTER_PORT` is given, so that concurrent local runs do not collide.
pub fn free_port(addr: &str) -> Result<u16, LaunchError> {
    let fail = |message: String| LaunchError::NoFreePort {
        addr: addr.to_string(),
        message,
    };
    let socket = (addr, 0)
        .to_socket_addrs()
        .map_err(|e| fail(e.to_string()))?
        .next()
        .unwrap_or((Ipv4Addr::LOCALHOST, 0).into());
    let listener = TcpListener::bind(socket).map_err(|e| fail(e.to_string()))?;
    let port = listener
        .local_addr()
        .map_err(|e| fail(e.to_string()))?
        .port();
    Ok(port)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn launch(vars: &[(&str, &str)]) -> Result<Option<Launch>, LaunchError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Launch::from_lookup(|name| map.get(name).cloned())
    }

    #[test]
    fn no_variables_is_a_single_process_run() {
        assert_eq!(launch(&[]).unwrap(), None);
    }

    #[test]
    fn torchrun_defaults_fill_the_address_port_and_local_rank() {
        let l = launch(&[("RANK", "1"), ("WORLD_SIZE", "2")])
            .unwrap()
            .unwrap();
        assert_eq!(l, Launch::local(1, 2, Launch::DEFAULT_PORT));
        assert!(l.is_loopback());
        assert!(!l.is_writer());
        let env: HashMap<_, _> = l.env().into_iter().collect();
        assert_eq!(env["RANK"], "1");
        assert_eq!(env["MASTER_PORT"], "29500");
    }

    #[test]
    fn bad_variables_are_named_with_their_value() {
        let cases: [(&[(&str, &str)], &str); 5] = [
            (&[("RANK", "x"), ("WORLD_SIZE", "2")], "RANK=\"x\""),
            (&[("RANK", "0"), ("WORLD_SIZE", "0")], "WORLD_SIZE=\"0\""),
            (
                &[("RANK", "2"), ("WORLD_SIZE", "2")],
                "RANK=2 is not below WORLD_SIZE=2",
            ),
            (&[("WORLD_SIZE", "2")], "RANK is not"),
            (
                &[("RANK", "0"), ("WORLD_SIZE", "2"), ("MASTER_PORT", "70000")],
                "MASTER_PORT=\"70000\"",
            ),
        ];
        for (vars, expected) in cases {
            let err = launch(vars).unwrap_err().to_string();
            assert!(err.contains(expected), "{err} lacks {expected}");
        }
    }

    #[test]
    fn a_remote_master_is_not_loopback() {
        let l = launch(&[
            ("RANK", "0"),
            ("WORLD_SIZE", "2"),
            ("MASTER_ADDR", "10.0.0.7"),
        ])
        .unwrap()
        .unwrap();
        assert!(!l.is_loopback());
    }
}
