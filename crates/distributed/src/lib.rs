//! Data-parallel training on torch.distributed's own process groups (docs/distributed.md).
//!
//! A thin C++ shim (shim/) builds `c10d::TCPStore` for the rendezvous and `ProcessGroupGloo`
//! (CPU) or `ProcessGroupNCCL` (CUDA, where libtorch has it) on top; Rust sees a
//! [`ProcessGroup`] with all-reduce, broadcast and barrier over tch tensors, used in place.
//!
//! - [`Launch`]: who this process is, read from torchrun's variables (`RANK`, `WORLD_SIZE`,
//!   `LOCAL_RANK`, `MASTER_ADDR`, `MASTER_PORT`), so multi-node runs start the same way as
//!   local ones;
//! - [`ProcessGroup`]: the collectives, failing with a [`DistError`] that names the rank, the
//!   operation and, when a peer died, the rank that was lost;
//! - [`GradientBuckets`]: gradients averaged through a few flat buffers instead of one call per
//!   tensor.
//!
//! Which samples a rank reads is the loader's business (`glassbox_data::Shard`).

mod ffi;
mod launch;

use std::ffi::{CStr, CString, c_char, c_void};
use std::fmt;
use std::time::{Duration, Instant};

use tch::{Device, Kind, Tensor};

pub use launch::{Launch, LaunchError, free_port};

/// The collective that failed, for messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operation {
    Rendezvous,
    ProcessGroup,
    AllReduce,
    Broadcast,
    Barrier,
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Rendezvous => "rendezvous",
            Self::ProcessGroup => "process-group setup",
            Self::AllReduce => "all-reduce",
            Self::Broadcast => "broadcast",
            Self::Barrier => "barrier",
        })
    }
}

/// Everything a process group can fail with; each names this process's rank.
#[derive(Debug, thiserror::Error)]
pub enum DistError {
    #[error(
        "rank {rank}: port {port} on {addr} is in use; set MASTER_PORT (or --master-port) to a \
         free port"
    )]
    PortInUse {
        rank: usize,
        addr: String,
        port: u16,
    },
    #[error("rank {rank}: {operation} with {addr}:{port} failed: {message}")]
    Rendezvous {
        rank: usize,
        operation: Operation,
        addr: String,
        port: u16,
        message: String,
    },
    #[error(
        "rank {rank}: {operation} failed because rank {} stopped responding ({message})",
        list(lost)
    )]
    PeerLost {
        rank: usize,
        operation: Operation,
        lost: Vec<usize>,
        message: String,
    },
    #[error(
        "rank {rank}: {operation} failed and rank 0, which hosts the rendezvous store, is \
         unreachable; rank 0 was lost ({message})"
    )]
    StoreLost {
        rank: usize,
        operation: Operation,
        message: String,
    },
    #[error("rank {rank}: {operation} failed: {message}")]
    Collective {
        rank: usize,
        operation: Operation,
        message: String,
    },
    #[error("rank {rank}: {what}")]
    Usage { rank: usize, what: String },
}

fn list(ranks: &[usize]) -> String {
    let names: Vec<String> = ranks.iter().map(|r| r.to_string()).collect();
    names.join(" and ")
}

/// Which torch.distributed backend carries the collectives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// CPU tensors, over TCP.
    Gloo,
    /// CUDA tensors, over NVLink/InfiniBand/TCP as NCCL chooses.
    Nccl,
}

impl Backend {
    /// NCCL for CUDA devices, Gloo otherwise (torch's own default pairing).
    pub fn for_device(device: Device) -> Self {
        match device {
            Device::Cuda(_) => Self::Nccl,
            _ => Self::Gloo,
        }
    }

    /// Whether this build's libtorch (and shim) has NCCL.
    pub fn nccl_available() -> bool {
        unsafe { ffi::gb_has_nccl() != 0 }
    }
}

/// Takes the shim's message (if any) and frees it.
fn take(error: *mut c_char) -> Option<String> {
    if error.is_null() {
        return None;
    }
    let text = unsafe { CStr::from_ptr(error) }
        .to_string_lossy()
        .trim()
        .to_string();
    unsafe { ffi::gb_free_error(error) };
    Some(text)
}

fn c_string(rank: usize, what: &str, value: &str) -> Result<CString, DistError> {
    CString::new(value).map_err(|_| DistError::Usage {
        rank,
        what: format!("{what} {value:?} contains a NUL byte"),
    })
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX).max(1)
}

/// A process group joined by every rank of a [`Launch`]; dropping it leaves the group.
pub struct ProcessGroup {
    store: *mut ffi::Store,
    group: *mut ffi::Group,
    rank: usize,
    world: usize,
    backend: Backend,
    timeout: Duration,
    /// How many failures this rank has diagnosed, so that survivors of one failure meet under
    /// the same store keys.
    failures: std::cell::Cell<usize>,
}

// The shim's objects are thread-safe C++ objects owned by this handle.
unsafe impl Send for ProcessGroup {}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        unsafe {
            ffi::gb_group_free(self.group);
            ffi::gb_store_free(self.store);
        }
    }
}

impl fmt::Debug for ProcessGroup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProcessGroup")
            .field("rank", &self.rank)
            .field("world", &self.world)
            .field("backend", &self.backend)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl ProcessGroup {
    /// Meets the other ranks at `MASTER_ADDR:MASTER_PORT` (rank 0 hosts the store) and builds
    /// the group. Every operation, the rendezvous included, gives up after `timeout`.
    ///
    /// Gloo binds to `GLOO_SOCKET_IFNAME` when set, to the master address when that is a
    /// loopback address, else to the address this machine's hostname resolves to, as
    /// torch.distributed does.
    pub fn new(launch: &Launch, backend: Backend, timeout: Duration) -> Result<Self, DistError> {
        let rank = launch.rank;
        let world = launch.world_size;
        let host = c_string(rank, "MASTER_ADDR", &launch.master_addr)?;
        let mut store = std::ptr::null_mut();
        let error = unsafe {
            ffi::gb_store_new(
                host.as_ptr(),
                launch.master_port,
                i32::from(rank == 0),
                world as i32,
                millis(timeout),
                &mut store,
            )
        };
        if let Some(message) = take(error) {
            let lower = message.to_lowercase();
            if rank == 0
                && (lower.contains("eaddrinuse") || lower.contains("address already in use"))
            {
                return Err(DistError::PortInUse {
                    rank,
                    addr: launch.master_addr.clone(),
                    port: launch.master_port,
                });
            }
            return Err(DistError::Rendezvous {
                rank,
                operation: Operation::Rendezvous,
                addr: launch.master_addr.clone(),
                port: launch.master_port,
                message: first_line(&message),
            });
        }
        let mut group = std::ptr::null_mut();
        let error = match backend {
            Backend::Gloo => {
                let interface = std::env::var("GLOO_SOCKET_IFNAME").unwrap_or_default();
                let hostname = if interface.is_empty() && launch.is_loopback() {
                    launch.master_addr.clone()
                } else {
                    String::new()
                };
                let interface = c_string(rank, "GLOO_SOCKET_IFNAME", &interface)?;
                let hostname = c_string(rank, "MASTER_ADDR", &hostname)?;
                unsafe {
                    ffi::gb_group_new_gloo(
                        store,
                        rank as i32,
                        world as i32,
                        millis(timeout),
                        hostname.as_ptr(),
                        interface.as_ptr(),
                        &mut group,
                    )
                }
            }
            Backend::Nccl => unsafe {
                ffi::gb_group_new_nccl(
                    store,
                    rank as i32,
                    world as i32,
                    millis(timeout),
                    &mut group,
                )
            },
        };
        if let Some(message) = take(error) {
            unsafe { ffi::gb_store_free(store) };
            return Err(DistError::Rendezvous {
                rank,
                operation: Operation::ProcessGroup,
                addr: launch.master_addr.clone(),
                port: launch.master_port,
                message: first_line(&message),
            });
        }
        Ok(Self {
            store,
            group,
            rank,
            world,
            backend,
            timeout,
            failures: std::cell::Cell::new(0),
        })
    }

    pub fn rank(&self) -> usize {
        self.rank
    }

    pub fn world_size(&self) -> usize {
        self.world
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Sums each tensor over the ranks, in place. Each tensor travels as its own collective;
    /// they are all started before any is waited on.
    pub fn all_reduce_sum(&self, tensors: &[&Tensor]) -> Result<(), DistError> {
        self.check(tensors, Operation::AllReduce)?;
        let pointers = pointers(tensors);
        let error = unsafe {
            ffi::gb_all_reduce_sum(
                self.group,
                pointers.as_ptr(),
                pointers.len(),
                millis(self.timeout),
            )
        };
        self.outcome(error, Operation::AllReduce)
    }

    /// Averages each tensor over the ranks, in place (a sum, then a division by the world size:
    /// Gloo has no average).
    pub fn all_reduce_mean(&self, tensors: &[&Tensor]) -> Result<(), DistError> {
        self.all_reduce_sum(tensors)?;
        let scale = 1.0 / self.world as f64;
        tch::no_grad(|| {
            for t in tensors {
                let mut t = (*t).shallow_clone();
                let _ = t.g_mul_scalar_(scale);
            }
        });
        Ok(())
    }

    /// Copies `root`'s tensors into every other rank's, in place.
    pub fn broadcast(&self, tensors: &[&Tensor], root: usize) -> Result<(), DistError> {
        if root >= self.world {
            return Err(DistError::Usage {
                rank: self.rank,
                what: format!("broadcast root {root} is not a rank of {}", self.world),
            });
        }
        self.check(tensors, Operation::Broadcast)?;
        let pointers = pointers(tensors);
        let error = unsafe {
            ffi::gb_broadcast(
                self.group,
                pointers.as_ptr(),
                pointers.len(),
                root as i32,
                millis(self.timeout),
            )
        };
        self.outcome(error, Operation::Broadcast)
    }

    /// Waits until every rank has arrived.
    pub fn barrier(&self) -> Result<(), DistError> {
        let error = unsafe { ffi::gb_barrier(self.group, millis(self.timeout)) };
        self.outcome(error, Operation::Barrier)
    }

    /// Collectives read and write tensors in place: they must be contiguous and on the
    /// backend's device.
    fn check(&self, tensors: &[&Tensor], operation: Operation) -> Result<(), DistError> {
        for (i, t) in tensors.iter().enumerate() {
            let device_ok = match self.backend {
                Backend::Gloo => t.device() == Device::Cpu,
                Backend::Nccl => matches!(t.device(), Device::Cuda(_)),
            };
            if !device_ok || !t.is_contiguous() {
                return Err(DistError::Usage {
                    rank: self.rank,
                    what: format!(
                        "{operation}: tensor {i} must be contiguous and on the {:?} backend's \
                         device, not {:?}",
                        self.backend,
                        t.device()
                    ),
                });
            }
        }
        Ok(())
    }

    fn outcome(&self, error: *mut c_char, operation: Operation) -> Result<(), DistError> {
        match take(error) {
            None => Ok(()),
            Some(message) => Err(self.diagnose(operation, first_line(&message))),
        }
    }

    /// After a failed collective: every surviving rank posts itself in the store and waits a
    /// little for the others; the ranks that never post are the lost ones. When the store itself
    /// is gone, rank 0 (its host) was lost.
    fn diagnose(&self, operation: Operation, message: String) -> DistError {
        let round = self.failures.get();
        self.failures.set(round + 1);
        let key = |r: usize| format!("glassbox/alive/{round}/{r}");
        let rank = self.rank;
        let store_lost = |message: String| DistError::StoreLost {
            rank,
            operation,
            message,
        };
        let Ok(mine) = CString::new(key(rank)) else {
            return store_lost(message);
        };
        let error = unsafe { ffi::gb_store_set(self.store, mine.as_ptr(), [1u8].as_ptr(), 1) };
        if take(error).is_some() {
            return store_lost(message);
        }
        let deadline = Instant::now() + self.timeout.min(Duration::from_secs(5));
        let mut waiting: Vec<usize> = (0..self.world).filter(|&r| r != rank).collect();
        while !waiting.is_empty() {
            let mut still = Vec::new();
            for &r in &waiting {
                let Ok(other) = CString::new(key(r)) else {
                    continue;
                };
                let mut present = 0;
                let error =
                    unsafe { ffi::gb_store_check(self.store, other.as_ptr(), &mut present) };
                if take(error).is_some() {
                    return store_lost(message);
                }
                if present == 0 {
                    still.push(r);
                }
            }
            waiting = still;
            if waiting.is_empty() || Instant::now() >= deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        if waiting.is_empty() {
            DistError::Collective {
                rank,
                operation,
                message,
            }
        } else {
            DistError::PeerLost {
                rank,
                operation,
                lost: waiting,
                message,
            }
        }
    }
}

fn pointers(tensors: &[&Tensor]) -> Vec<*mut c_void> {
    tensors.iter().map(|t| t.as_ptr() as *mut c_void).collect()
}

/// c10d messages can run to several lines (source locations, hints); one is enough here.
fn first_line(message: &str) -> String {
    message
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("no message")
        .to_string()
}

/// Gradients averaged over the ranks through a few flat buffers (DDP's buckets): each bucket
/// gathers consecutive parameters' gradients up to a size cap, travels as one all-reduce, and is
/// copied back. One collective per tensor would pay the per-call latency hundreds of times.
#[derive(Debug)]
pub struct GradientBuckets {
    /// Parameter indices per bucket.
    buckets: Vec<Vec<usize>>,
    kind: Kind,
}

impl GradientBuckets {
    /// DDP's default cap: 25 MiB per bucket.
    pub const DEFAULT_BYTES: usize = 25 << 20;

    /// Groups `parameters` (in order) into buckets of at most `bucket_bytes` each (a larger
    /// tensor gets a bucket of its own). All parameters must share one floating kind.
    pub fn new(parameters: &[Tensor], bucket_bytes: usize) -> Self {
        let kind = parameters.first().map_or(Kind::Float, |p| p.kind());
        let element = kind.elt_size_in_bytes().max(1);
        let mut buckets: Vec<Vec<usize>> = Vec::new();
        let mut current = Vec::new();
        let mut bytes = 0usize;
        for (i, p) in parameters.iter().enumerate() {
            let size = p.numel() * element;
            if !current.is_empty() && bytes + size > bucket_bytes {
                buckets.push(std::mem::take(&mut current));
                bytes = 0;
            }
            current.push(i);
            bytes += size;
        }
        if !current.is_empty() {
            buckets.push(current);
        }
        Self { buckets, kind }
    }

    /// How many all-reduce calls one step makes.
    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }

    /// Averages the parameters' gradients over the ranks, in place. A parameter without a
    /// gradient on this rank contributes zeros (and gets the average of the others). `extra`
    /// values (e.g. a stop flag, the loss) ride along in the last bucket and come back averaged.
    pub fn all_reduce_mean(
        &self,
        group: &ProcessGroup,
        parameters: &[Tensor],
        extra: &[f64],
    ) -> Result<Vec<f64>, DistError> {
        let device = parameters.first().map_or(Device::Cpu, |p| p.device());
        // A parameter this rank's forward did not reach has no gradient yet; a zero one lets it
        // take the others' average, as DDP's `find_unused_parameters` does.
        let missing: Vec<&Tensor> = parameters.iter().filter(|p| !p.grad().defined()).collect();
        if !missing.is_empty() {
            let zero = missing
                .iter()
                .map(|p| p.sum(p.kind()) * 0.0)
                .reduce(|a, b| a + b)
                .expect("missing is not empty");
            zero.backward();
        }
        let flats = tch::no_grad(|| {
            let mut flats = Vec::with_capacity(self.buckets.len());
            for (b, bucket) in self.buckets.iter().enumerate() {
                let mut pieces: Vec<Tensor> = bucket
                    .iter()
                    .map(|&i| parameters[i].grad().reshape([-1]).to_kind(self.kind))
                    .collect();
                if b + 1 == self.buckets.len() && !extra.is_empty() {
                    pieces.push(Tensor::from_slice(extra).to_kind(self.kind).to(device));
                }
                flats.push(Tensor::cat(&pieces, 0));
            }
            if self.buckets.is_empty() && !extra.is_empty() {
                flats.push(Tensor::from_slice(extra).to_kind(self.kind).to(device));
            }
            flats
        });
        let refs: Vec<&Tensor> = flats.iter().collect();
        group.all_reduce_mean(&refs)?;
        tch::no_grad(|| {
            for (bucket, flat) in self.buckets.iter().zip(&flats) {
                let mut offset = 0i64;
                for &i in bucket {
                    let p = &parameters[i];
                    let n = p.numel() as i64;
                    let averaged = flat.narrow(0, offset, n).view_as(p);
                    p.grad().copy_(&averaged);
                    offset += n;
                }
            }
        });
        let values = match flats.last() {
            Some(flat) if !extra.is_empty() => {
                let n = extra.len() as i64;
                let tail = flat.narrow(0, flat.size()[0] - n, n);
                Vec::<f64>::try_from(tail.to_kind(Kind::Double)).unwrap_or_default()
            }
            _ => Vec::new(),
        };
        Ok(values)
    }
}
