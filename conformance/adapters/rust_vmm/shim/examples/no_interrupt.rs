//! Standalone reproducer (virtio-queue and vm-memory only, no shim, no suite): without
//! VIRTIO_F_EVENT_IDX, `Queue::needs_notification()` returns true even though the driver set
//! VRING_AVAIL_F_NO_INTERRUPT in the available ring's flags. Virtio 1.2/1.3 §2.7.7.2: "If flags is 1,
//! the device SHOULD NOT send a notification" (the suite's SPLIT-DEV-9). virtio-queue's source says
//! so itself ("The VRING_AVAIL_F_NO_INTERRUPT flag isn't supported yet").
//!
//! Exit status 1 when the deviation shows, 0 when needs_notification() honours the flag.

use virtio_queue::{Queue, QueueOwnedT, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

const DESC: u64 = 0x1000;
const AVAIL: u64 = 0x2000;
const USED: u64 = 0x3000;
const BUFFER: u64 = 0x8000;
const VRING_AVAIL_F_NO_INTERRUPT: u16 = 1;

fn main() {
    let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x10000)]).expect("guest memory");
    let mut q = Queue::new(8).expect("queue");
    q.try_set_desc_table_address(GuestAddress(DESC)).unwrap();
    q.try_set_avail_ring_address(GuestAddress(AVAIL)).unwrap();
    q.try_set_used_ring_address(GuestAddress(USED)).unwrap();
    q.set_event_idx(false);
    q.set_ready(true);
    assert!(q.is_valid(&mem));

    // The driver: one 16-byte device-readable buffer as descriptor 0, made available, and it asks
    // for no used buffer notifications.
    mem.write_obj(BUFFER, GuestAddress(DESC)).unwrap(); // addr
    mem.write_obj(16u32, GuestAddress(DESC + 8)).unwrap(); // len
    mem.write_obj(0u16, GuestAddress(DESC + 12)).unwrap(); // flags
    mem.write_obj(VRING_AVAIL_F_NO_INTERRUPT, GuestAddress(AVAIL)).unwrap(); // avail flags
    mem.write_obj(0u16, GuestAddress(AVAIL + 4)).unwrap(); // ring[0] = head 0
    mem.write_obj(1u16, GuestAddress(AVAIL + 2)).unwrap(); // avail idx = 1

    // The device: pop the chain, return it, ask whether to notify.
    let head = q.iter(&mem).unwrap().next().expect("a chain").head_index();
    q.add_used(&mem, head, 0).unwrap();
    let notify = q.needs_notification(&mem).unwrap();
    let flags: u16 = mem.read_obj(GuestAddress(AVAIL)).unwrap();
    println!("virtio-queue {}: avail flags {flags:#x} (VRING_AVAIL_F_NO_INTERRUPT), no EVENT_IDX, one used buffer: \
              needs_notification() = {notify}", option_env!("VQ_CRATE_VERSION").unwrap_or("?"));
    if notify {
        println!("DEVIATION: the device would notify although the driver suppressed notifications (SPLIT-DEV-9)");
        std::process::exit(1);
    }
    println!("ok: the flag is honoured");
}
