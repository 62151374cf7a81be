//! A C ABI over rust-vmm's `virtio_queue::Queue` (device side of a split virtqueue), for the
//! conformance suite's ctypes adapter (`conformance/adapters/rust_vmm/adapter.py`).
//!
//! The queue code is the packaged crate, unmodified; this file only forwards calls. Every export
//! returns a status code (0 or a positive result, else one of the `E_*` codes) and writes a one-line
//! message into the caller's buffer; no panic crosses the FFI (`catch_unwind` around every body).
//!
//! Guest memory is the suite's buffer. vm-memory's `MmapRegion::build_raw` wants a page-aligned
//! pointer; a Python `bytearray` is not (malloc puts it 16 bytes into its mapping). For such a buffer
//! the shim maps a page-aligned shadow and copies the whole buffer in before, and out after, every
//! call: the calls are synchronous, so virtio-queue sees exactly the bytes it would see in place.

use std::cell::RefCell;
use std::num::Wrapping;
use std::panic::{self, AssertUnwindSafe};
use std::ptr;
use std::sync::atomic::Ordering;
use std::sync::Once;

use virtio_queue::{Queue, QueueOwnedT, QueueT};
use vm_memory::{GuestAddress, GuestMemoryMmap, GuestRegionMmap, MmapRegion};

/// Bumped when an export changes; the adapter refuses another version.
pub const ABI_VERSION: u32 = 1;

/// A `virtio_queue::Error`; the message starts with the variant's name.
pub const E_QUEUE: i32 = -1;
/// A panic inside virtio-queue or vm-memory (caught).
pub const E_PANIC: i32 = -2;
/// The caller's mistake (null handle, short buffer) or the host's (mmap failed).
pub const E_ARG: i32 = -3;

/// One descriptor of a popped chain, as virtio-queue yielded it.
#[repr(C)]
pub struct VqDesc {
    pub addr: u64,
    pub len: u32,
    pub flags: u16,
    pub next: u16,
}

pub struct Handle {
    mem: GuestMemoryMmap<()>,
    queue: Queue,
    host: *mut u8,
    size: usize,
    /// Null when vm-memory maps `host` itself; else our page-aligned copy of it.
    shadow: *mut u8,
}

impl Handle {
    fn sync_in(&self) {
        if !self.shadow.is_null() {
            // SAFETY: both ranges are `size` bytes, live for the handle's life, and disjoint.
            unsafe { ptr::copy_nonoverlapping(self.host, self.shadow, self.size) }
        }
    }

    fn sync_out(&self) {
        if !self.shadow.is_null() {
            // SAFETY: as in sync_in.
            unsafe { ptr::copy_nonoverlapping(self.shadow, self.host, self.size) }
        }
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        if !self.shadow.is_null() {
            // SAFETY: `shadow` came from our own mmap of `size` bytes; vm-memory does not own it.
            unsafe { libc::munmap(self.shadow.cast(), self.size) };
        }
    }
}

type Failure = (i32, String);

fn queue_error(e: virtio_queue::Error) -> Failure {
    (E_QUEUE, format!("{e:?}: {e}"))
}

fn arg_error(msg: impl Into<String>) -> Failure {
    (E_ARG, msg.into())
}

/// `GuestRegionMmap::new` returns a `Result` in vm-memory 0.16 and an `Option` in 0.18.
trait Checked<T> {
    fn checked(self, what: &str) -> Result<T, Failure>;
}

impl<T, E: std::fmt::Debug> Checked<T> for Result<T, E> {
    fn checked(self, what: &str) -> Result<T, Failure> {
        self.map_err(|e| arg_error(format!("{what}: {e:?}")))
    }
}

impl<T> Checked<T> for Option<T> {
    fn checked(self, what: &str) -> Result<T, Failure> {
        self.ok_or_else(|| arg_error(format!("{what}: refused")))
    }
}

thread_local! {
    static LAST_PANIC: RefCell<String> = const { RefCell::new(String::new()) };
}

/// Keep panic messages (with their location) for the caller instead of printing them.
fn quiet_panics() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        panic::set_hook(Box::new(|info| {
            let msg = info.to_string().replace('\n', " ");
            LAST_PANIC.with(|p| *p.borrow_mut() = msg);
        }))
    });
}

fn put_message(buf: *mut u8, cap: usize, msg: &str) {
    if buf.is_null() || cap == 0 {
        return;
    }
    let n = msg.len().min(cap - 1);
    // SAFETY: the caller passes a writable buffer of `cap` bytes.
    unsafe {
        ptr::copy_nonoverlapping(msg.as_ptr(), buf, n);
        *buf.add(n) = 0;
    }
}

/// Run `body`, turning an error or a panic into a status code and a message.
fn guard(err: *mut u8, cap: usize, body: impl FnOnce() -> Result<i32, Failure>) -> i32 {
    quiet_panics();
    match panic::catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(rc)) => rc,
        Ok(Err((code, msg))) => {
            put_message(err, cap, &msg);
            code
        }
        Err(_) => {
            let msg = LAST_PANIC.with(|p| p.borrow().clone());
            put_message(err, cap, &format!("panic: {msg}"));
            E_PANIC
        }
    }
}

/// The handle, memory copied in; the copy goes back out whatever `op` returns.
fn with_handle(h: *mut Handle, op: impl FnOnce(&mut Handle) -> Result<i32, Failure>) -> Result<i32, Failure> {
    // SAFETY: the adapter passes a handle from vq_new that it has not freed.
    let h = unsafe { h.as_mut() }.ok_or_else(|| arg_error("null handle"))?;
    h.sync_in();
    let out = op(h);
    h.sync_out();
    out
}

fn write_out<T>(out: *mut T, value: T) -> Result<(), Failure> {
    if out.is_null() {
        return Err(arg_error("null output pointer"));
    }
    // SAFETY: non-null and provided by the caller for this value.
    unsafe { out.write(value) };
    Ok(())
}

#[no_mangle]
pub extern "C" fn vq_abi_version() -> u32 {
    ABI_VERSION
}

/// The virtio-queue version this library was built against (set by the builder), NUL-terminated.
#[no_mangle]
pub extern "C" fn vq_crate_version(buf: *mut u8, cap: usize) -> i32 {
    put_message(buf, cap, option_env!("VQ_CRATE_VERSION").unwrap_or("unknown"));
    0
}

fn map_memory(host: *mut u8, size: usize, base: u64) -> Result<(GuestMemoryMmap<()>, *mut u8), Failure> {
    // SAFETY: sysconf has no side effects.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
    let prot = libc::PROT_READ | libc::PROT_WRITE;
    let (ptr, shadow) = if host as usize % page == 0 {
        (host, ptr::null_mut())
    } else {
        // SAFETY: a fresh private anonymous mapping; checked below.
        let p = unsafe {
            libc::mmap(ptr::null_mut(), size, prot, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1, 0)
        };
        if p == libc::MAP_FAILED {
            return Err(arg_error(format!("mmap of a {size}-byte shadow: {}", std::io::Error::last_os_error())));
        }
        (p.cast::<u8>(), p.cast::<u8>())
    };
    let unmap = |e: Failure| {
        if !shadow.is_null() {
            // SAFETY: our own mapping, not yet handed to anyone.
            unsafe { libc::munmap(shadow.cast(), size) };
        }
        e
    };
    // SAFETY: `ptr` and `size` describe memory that stays mapped for the handle's life: the
    // adapter keeps the suite's buffer alive, and the shadow is unmapped only in Handle::drop.
    let region = unsafe { MmapRegion::<()>::build_raw(ptr, size, prot, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS) }
        .checked("MmapRegion::build_raw")
        .map_err(unmap)?;
    let region = GuestRegionMmap::new(region, GuestAddress(base)).checked("GuestRegionMmap::new").map_err(unmap)?;
    let mem = GuestMemoryMmap::from_regions(vec![region]).checked("GuestMemoryMmap::from_regions").map_err(unmap)?;
    Ok((mem, shadow))
}

/// A queue of `queue_size` at the given guest-physical addresses over `size` bytes of memory at
/// `host` (guest-physical `base`), indices starting at `start_idx`. Writes the handle to `out`.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub extern "C" fn vq_new(host: *mut u8, size: u64, base: u64, queue_size: u16, desc: u64, avail: u64, used: u64,
                         event_idx: u8, start_idx: u16, out: *mut *mut Handle, err: *mut u8, cap: usize) -> i32 {
    guard(err, cap, || {
        if host.is_null() || size == 0 {
            return Err(arg_error("no guest memory"));
        }
        let size = usize::try_from(size).map_err(|_| arg_error("memory size"))?;
        let (mem, shadow) = map_memory(host, size, base)?;
        let mut h = Handle { mem, queue: Queue::new(queue_size).map_err(queue_error)?, host, size, shadow };
        h.sync_in();
        let q = &mut h.queue;
        q.try_set_size(queue_size).map_err(queue_error)?;
        q.try_set_desc_table_address(GuestAddress(desc)).map_err(queue_error)?;
        q.try_set_avail_ring_address(GuestAddress(avail)).map_err(queue_error)?;
        q.try_set_used_ring_address(GuestAddress(used)).map_err(queue_error)?;
        q.set_event_idx(event_idx != 0);
        q.set_next_avail(start_idx);
        q.set_next_used(start_idx);
        q.set_ready(true);
        if !q.is_valid(&h.mem) {
            return Err((E_QUEUE, "IsValid: Queue::is_valid() is false (a ring is outside guest memory)".into()));
        }
        write_out(out, Box::into_raw(Box::new(h)))?;
        Ok(0)
    })
}

#[no_mangle]
pub extern "C" fn vq_free(h: *mut Handle) {
    if !h.is_null() {
        let _ = panic::catch_unwind(AssertUnwindSafe(|| {
            // SAFETY: from vq_new, freed once (the adapter clears its pointer).
            drop(unsafe { Box::from_raw(h) })
        }));
    }
}

/// How many chains are available and not yet popped (`avail idx - next_avail`), after the check
/// `Queue::iter` makes (more than the queue size is `InvalidAvailRingIndex`).
#[no_mangle]
pub extern "C" fn vq_available(h: *mut Handle, out: *mut u32, err: *mut u8, cap: usize) -> i32 {
    guard(err, cap, || {
        with_handle(h, |h| {
            drop(h.queue.iter(&h.mem).map_err(queue_error)?);
            let idx = h.queue.avail_idx(&h.mem, Ordering::Acquire).map_err(queue_error)?;
            write_out(out, u32::from((idx - Wrapping(h.queue.next_avail())).0))?;
            Ok(0)
        })
    })
}

/// Pop the next chain: 0 if none is available, 1 with its head in `out_head`, its descriptors (as
/// the chain iterator yields them; indirect tables followed) in `descs`, their count in `out_n`, and
/// in `out_complete` whether the last one ended the chain (no NEXT flag): 0 means the iterator stopped
/// early, which is how virtio-queue reports a chain it refuses (it yields no error).
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub extern "C" fn vq_pop(h: *mut Handle, out_head: *mut u16, descs: *mut VqDesc, max: u32, out_n: *mut u32,
                         out_complete: *mut u8, err: *mut u8, cap: usize) -> i32 {
    guard(err, cap, || {
        with_handle(h, |h| {
            let chain = match h.queue.iter(&h.mem).map_err(queue_error)?.next() {
                Some(chain) => chain,
                None => return Ok(0),
            };
            write_out(out_head, chain.head_index())?;
            let (mut n, mut complete) = (0u32, false);
            for d in chain {
                if n >= max {
                    return Err(arg_error(format!("chain longer than the {max} descriptors the caller holds")));
                }
                let rec = VqDesc { addr: d.addr().0, len: d.len(), flags: d.flags(), next: d.next() };
                // SAFETY: `descs` holds `max` records and n < max.
                unsafe { descs.add(n as usize).write(rec) };
                n += 1;
                complete = !d.has_next();
            }
            write_out(out_n, n)?;
            write_out(out_complete, u8::from(complete))?;
            Ok(1)
        })
    })
}

#[no_mangle]
pub extern "C" fn vq_add_used(h: *mut Handle, head: u16, len: u32, err: *mut u8, cap: usize) -> i32 {
    guard(err, cap, || {
        with_handle(h, |h| {
            h.queue.add_used(&h.mem, head, len).map_err(queue_error)?;
            Ok(0)
        })
    })
}

/// `Queue::needs_notification`: 1 if the driver is to be notified now, else 0.
#[no_mangle]
pub extern "C" fn vq_needs_notification(h: *mut Handle, err: *mut u8, cap: usize) -> i32 {
    guard(err, cap, || with_handle(h, |h| h.queue.needs_notification(&h.mem).map(i32::from).map_err(queue_error)))
}

/// `enable_notification` (returns 1 if chains are already available) or `disable_notification` (0).
#[no_mangle]
pub extern "C" fn vq_set_notification(h: *mut Handle, enabled: u8, err: *mut u8, cap: usize) -> i32 {
    guard(err, cap, || {
        with_handle(h, |h| {
            if enabled != 0 {
                h.queue.enable_notification(&h.mem).map(i32::from).map_err(queue_error)
            } else {
                h.queue.disable_notification(&h.mem).map(|()| 0).map_err(queue_error)
            }
        })
    })
}

/// The queue's own indices: `next_avail` and `next_used`.
#[no_mangle]
pub extern "C" fn vq_state(h: *mut Handle, next_avail: *mut u16, next_used: *mut u16) -> i32 {
    guard(ptr::null_mut(), 0, || {
        // SAFETY: as in with_handle; no memory access, so no copy.
        let h = unsafe { h.as_ref() }.ok_or_else(|| arg_error("null handle"))?;
        write_out(next_avail, h.queue.next_avail())?;
        write_out(next_used, h.queue.next_used())?;
        Ok(0)
    })
}
